"""The reader's side of a position request (ReaderPipeline.apply_position_request), without I/O:
drain first, then move, audit in the requester's name and report; a target the server refuses
fails the request and leaves the checkpoint; an unconfirmed backlog puts the request back."""

from __future__ import annotations

import pytest
from fakes import make_pipeline

from cdc.admin import PositionError
from cdc.admin import offsets as ops
from cdc.domain.errors import TransientError
from cdc.domain.positions import Checkpoint
from cdc.reader.pipeline import ReaderPipeline
from cdc.state.store import MemoryStateStore

OLD, NEW = Checkpoint(file="bin.000002", pos=900), Checkpoint(file="bin.000001", pos=4)


class FakePublisher:
    """Stands in for the run's publisher: whether what was published is confirmed before the request."""

    def __init__(self, confirms: bool = True) -> None:
        self.confirms = confirms
        self.flushed = 0

    def flush(self, timeout: float) -> bool:
        self.flushed += 1
        return self.confirms


def pipeline(state: MemoryStateStore, publisher: FakePublisher) -> ReaderPipeline:
    """Through the real constructor (tests/unit/fakes.py), the reader at OLD, as between two transactions."""
    state.save_checkpoint("s", OLD)
    p = make_pipeline(state=state, request_poll_s=0.0)
    p.publisher = publisher  # the current run's publisher, as _run_once sets it
    p.read_position, p.owner = OLD, "reader-1"
    return p


def request(state: MemoryStateStore) -> dict:
    state.position_request_create("source:s", '{"earliest": true}', "ops@host", "re-read")
    return state.position_request_list("source:s", ("requested",))[0]


def test_applied_after_draining_and_audited_in_the_requesters_name(monkeypatch):
    monkeypatch.setattr(ops, "source_target", lambda settings, target: NEW)
    state, publisher = MemoryStateStore(), FakePublisher()
    p = pipeline(state, publisher)
    req = request(state)
    assert p._pending_position_request()["id"] == req["id"]
    p.apply_position_request(req)
    assert publisher.flushed == 1 and p.confirmed == NEW and state.load_checkpoint("s") == NEW
    row = state.position_request_get(req["id"])
    assert (row["status"], row["from_value"], row["to_value"], row["applied_by"]) == ("done", OLD.describe(), NEW.describe(), "reader-1")
    audit = state.audit_log(1)[0]
    assert audit["who"] == "ops@host" and audit["reason"].startswith("re-read") and audit["to_value"] == NEW.describe()


def test_a_refused_target_fails_the_request_and_keeps_the_position(monkeypatch):
    def refuse(settings, target):
        raise PositionError("binlog bin.000009 is not on the server")

    monkeypatch.setattr(ops, "source_target", refuse)
    state = MemoryStateStore()
    p = pipeline(state, FakePublisher())
    req = request(state)
    p.apply_position_request(req)
    row = state.position_request_get(req["id"])
    assert (row["status"], row["error_kind"]) == ("failed", "position") and "not on the server" in row["error"]
    assert p.confirmed == OLD and state.audit == []


def test_an_unconfirmed_backlog_puts_the_request_back(monkeypatch):
    monkeypatch.setattr(ops, "source_target", lambda settings, target: NEW)
    state = MemoryStateStore()
    p = pipeline(state, FakePublisher(confirms=False))
    req = request(state)
    with pytest.raises(TransientError):
        p.apply_position_request(req)
    assert state.position_request_get(req["id"])["status"] == "requested" and p.confirmed == OLD


def test_a_fenced_reader_or_a_cancelled_request_changes_nothing(monkeypatch):
    monkeypatch.setattr(ops, "source_target", lambda settings, target: NEW)
    state = MemoryStateStore()
    p = pipeline(state, FakePublisher())
    req = request(state)
    p.guard = lambda: False
    p.apply_position_request(req)
    assert state.position_request_get(req["id"])["status"] == "requested" and p.confirmed == OLD
    p.guard = None
    state.position_request_transition(req["id"], "requested", "cancelled")
    p.apply_position_request(req)
    assert state.position_request_get(req["id"])["status"] == "cancelled" and p.confirmed == OLD


def test_the_end_of_what_was_published_is_saved_with_the_checkpoint_and_forgotten_when_the_operator_moves_it(monkeypatch):
    """Published but unconfirmed events may be at the sinks: their end, above the checkpoint, bounds the positions
    a server may send next (reader.check_available / transactions). The operator's move resets that bound."""
    monkeypatch.setattr(ops, "source_target", lambda settings, target: NEW)
    state = MemoryStateStore()
    p = pipeline(state, FakePublisher())
    p.published = Checkpoint(file="bin.000002", pos=5000, gtid="0-1-77")
    p.confirmed = Checkpoint(file="bin.000002", pos=1200, gtid="0-1-70")
    p.persist()
    assert state.load_published("s") == p.published and state.load_checkpoint("s") == p.confirmed
    p.apply_position_request(request(state))
    assert state.load_checkpoint("s") == NEW and state.load_published("s") is None and p.published is None


def test_moving_the_checkpoint_from_the_command_line_forgets_the_end_of_what_was_published():
    from cdc.runtime.config import Settings

    state = MemoryStateStore()
    state.save_published("legacy", Checkpoint(file="bin.000002", pos=5000))
    change = ops.Change("source:legacy", OLD.describe(), NEW.describe())
    ops.apply_source(Settings(), state, change, NEW)
    assert state.load_checkpoint("legacy") == NEW and state.load_published("legacy") is None
