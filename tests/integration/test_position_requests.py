"""Position requests in the SQLite state store: the reader claims one at most once, the requester's
wait ends with the reader's answer, and a request nobody took is cancelled on time-out."""

from __future__ import annotations

import threading
import time

from cdc.admin.offsets import Target, request_spec, target_from_spec, wait_for_request
from cdc.state.store import SqlStateStore


def test_claim_once_finish_and_wait(tmp_path):
    state = SqlStateStore(f"sqlite:///{tmp_path}/state.db")
    rid = state.position_request_create("source:s", '{"latest": true}', "ops@host", "why")
    assert [r["id"] for r in state.position_request_list("source:s", ("requested",))] == [rid]
    assert state.position_request_transition(rid, "requested", "applying", applied_by="reader-1")
    assert not state.position_request_transition(rid, "requested", "applying", applied_by="reader-2")  # taken

    def reader() -> None:
        time.sleep(0.3)
        state.position_request_transition(rid, "applying", "done", from_value="a:4", to_value="b:4")

    threading.Thread(target=reader).start()
    row = wait_for_request(state, rid, timeout_s=10, poll_s=0.05)
    assert (row["status"], row["from_value"], row["to_value"], row["applied_by"]) == ("done", "a:4", "b:4", "reader-1")
    state.close()


def test_a_request_nobody_takes_is_cancelled_on_time_out(tmp_path):
    state = SqlStateStore(f"sqlite:///{tmp_path}/state.db")
    rid = state.position_request_create("source:s", '{"latest": true}', "ops@host")
    row = wait_for_request(state, rid, timeout_s=0.3, poll_s=0.05)
    assert row["status"] == "cancelled" and "not applied within" in row["error"]
    assert not state.position_request_transition(rid, "requested", "applying")  # a reader can no longer take it
    state.close()


def test_a_relative_time_is_made_absolute_when_requested():
    spec = request_spec(Target(timestamp="-1h"))
    assert spec["timestamp"].endswith("+00:00") and target_from_spec(spec).timestamp == spec["timestamp"]
    assert request_spec(Target(earliest=True)) == {"earliest": True}
