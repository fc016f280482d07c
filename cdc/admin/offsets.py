"""Show and move positions: the source's checkpoint and each sink's replay start.

Source (``--source``): moves the reader's checkpoint to a GTID set, a ``FILE:POS``, the first
transaction at or after a timestamp (searched in the binlog), the oldest binlog or the head.
Every target is checked against the server first (see :mod:`cdc.admin.binlog_time`).

Sink (``--sink NAME``): a sink consumes its queue, which cannot be rewound; its history is in the
event-log stream. Setting a sink's offset records where the next ``cdc replay --sink NAME``
starts in that stream: a timestamp, a stream offset, ``first`` (``--earliest``), or a binlog
``FILE:POS`` (events older than it are skipped). ``--latest`` clears it (nothing to replay).
The sink's own offset (its high-water mark, kept by the sink) is not lowered: the replay
re-applies history under it.

Both refuse while a running process holds the position's lease (see :mod:`cdc.state.lease`), and
every change is written to the audit table (who, when, from, to, reason).

Coordinated move of the source (``--via-daemon``, ``POST /api/offsets``): instead of stopping the
reader, the operator writes a position request to the state store; the running reader claims it at
a transaction boundary, waits for the broker to confirm what it published, checkpoints, resolves
the target against the server, saves it as the checkpoint, audits it (who = the requester) and
resumes streaming from there (:meth:`cdc.reader.pipeline.ReaderPipeline.apply_position_request`). The
request ends ``done`` (with from and to) or ``failed`` (with the reason); the CLI waits for it.
For a sink (``--sink NAME --via-daemon``) the running daemon whose worker owns the sink runs the
replay itself, from the requested start in the event log, beside the worker (versions make that
safe), audits it and reports the result (:func:`run_sink_request`). ``cdc replay --sink NAME --from T``
does the same from the operator's machine.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from cdc.admin import LeaseHeld, NoReader, PositionError, sink_config
from cdc.admin.positions import iso, parse_file_pos, parse_stream_offset, parse_timestamp
from cdc.domain.envelope import make_version, utc_now
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import Settings
from cdc.state.lease import Leases, reader_lease, sink_lease
from cdc.state.store import StateStore


@dataclass(frozen=True)
class Target:
    """What the operator asked for: exactly one of these."""

    gtid: str | None = None
    position: str | None = None
    timestamp: str | None = None
    offset: str | None = None
    earliest: bool = False
    latest: bool = False

    def chosen(self) -> dict[str, Any]:
        picked = {k: v for k, v in asdict(self).items() if v not in (None, False)}
        if len(picked) != 1:
            options = "--gtid, --position, --timestamp, --offset, --earliest or --latest"
            raise PositionError(f"give exactly one of {options}" + (f" (got {', '.join(picked)})" if picked else ""))
        return picked


@dataclass(frozen=True)
class Change:
    target: str  # source:<name> or sink:<name>
    before: str | None
    after: str | None
    detail: str = ""

    @property
    def changes(self) -> bool:
        return self.before != self.after


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# --------------------------------------------------------------------------- source


def source_target(settings: Settings, target: Target) -> Checkpoint:
    from cdc.admin.binlog_time import BinlogSearch
    from cdc.source.binlog_stream import BinlogReader

    kind, value = next(iter(target.chosen().items()))
    if kind == "offset":
        raise PositionError("--offset is an event-log offset and applies to sinks only; for the source use "
                            "--gtid, --position, --timestamp, --earliest or --latest")
    search = BinlogSearch(BinlogReader(settings.source))
    if kind == "gtid":
        return search.at_gtid(value)
    if kind == "position":
        return search.at(parse_file_pos(value))
    if kind == "timestamp":
        return search.at_time(parse_timestamp(value))
    return search.earliest() if kind == "earliest" else search.latest()


def plan_source(settings: Settings, state: StateStore, target: Target) -> tuple[Change, Checkpoint]:
    source = settings.source.name
    current = state.load_checkpoint(source)
    new = source_target(settings, target)
    if settings.source.resume_by == "gtid" and new.gtid is None and current is not None and current.gtid:
        detail = "no GTID at that position: the reader resumes by file:position from there"
    else:
        detail = f"the reader resumes {'by GTID' if settings.source.resume_by == 'gtid' and new.gtid else 'by file:position'}"
    return Change(f"source:{source}", current.describe() if current else None, new.describe(), detail), new


def apply_source(settings: Settings, state: StateStore, change: Change, checkpoint: Checkpoint, reason: str = "") -> None:
    refuse_if_owned(state, [reader_lease(settings.source.name)], "the reader", f"source {settings.source.name!r}",
                    _source_coordinated())
    # The operator chose where the sinks' history goes on (after a renumbered binlog: rebuilt sinks), so the
    # highest position published before no longer bounds the new positions (reader.check_available).
    state.save_published(settings.source.name, None)
    state.save_checkpoint(settings.source.name, checkpoint)
    state.record_audit(who(), change.target, change.before, change.after, reason or "cdc offsets set")


# --------------------------------------------------------------------------- sinks


def sink_start(target: Target) -> str | None:
    """The replay start recorded for a sink: ``timestamp:<ms>``, ``offset:<n>``, ``first``, ``version:<v>``, or None."""
    kind, value = next(iter(target.chosen().items()))
    if kind == "gtid":
        raise PositionError("a sink cannot be set to a GTID: its history is the event log, addressed by --timestamp, "
                            "--offset, --position FILE:POS or --earliest")
    if kind == "timestamp":
        return f"timestamp:{int(parse_timestamp(value).timestamp() * 1000)}"
    if kind == "offset":
        return f"offset:{parse_stream_offset(value)}"
    if kind == "position":
        where = parse_file_pos(value)
        return f"version:{make_version(where.file, where.pos, 0)}"
    return "first" if kind == "earliest" else None


def describe_start(start: str | None) -> str | None:
    if start is None:
        return None
    kind, _, value = start.partition(":")
    if kind == "timestamp":
        return f"event log from {iso(int(value))}"
    if kind == "offset":
        return f"event log from offset {value}"
    if kind == "version":
        v = int(value)
        return f"event log from binlog position {v >> 32}:{v & 0xFFFFFFFF} (version {v})"
    return "event log from its first event"


def plan_sink(settings: Settings, state: StateStore, sink: str, target: Target) -> tuple[Change, str | None]:
    sink_config(settings, sink)
    start = sink_start(target)
    before = describe_start(state.load_sink_rewind(sink))
    detail = f"then run `cdc replay --sink {sink}` to re-apply it" if start else "nothing left to replay"
    return Change(f"sink:{sink}", before, describe_start(start), detail), start


def apply_sink(settings: Settings, state: StateStore, sink: str, change: Change, start: str | None, reason: str = "") -> None:
    refuse_if_owned(state, sink_leases(settings, sink), "its worker", f"sink {sink!r}", _sink_coordinated(sink))
    state.save_sink_rewind(sink, start)
    state.record_audit(who(), change.target, change.before, change.after, reason or "cdc offsets set")


def sink_leases(settings: Settings, sink: str) -> list[str]:
    config = sink_config(settings, sink)
    count = max(settings.worker.count, config.shards, 1)
    return [sink_lease(sink)] + [sink_lease(sink, i, count) for i in range(count)] if count > 1 else [sink_lease(sink)]


def refuse_if_owned(state: StateStore, names: list[str], role: str, what: str, coordinated: str = "") -> None:
    leases = Leases(state)
    for name in names:
        holder = leases.holder(name)
        if holder is not None:
            raise LeaseHeld(
                f"{what} is owned by a running process: lease {name} is held by {holder.describe()}. "
                f"Stop {role} there (SIGTERM; or run the daemon without that role, e.g. `cdc run --role sinks`), "
                "then repeat this command" + (f"; or {coordinated}" if coordinated else "") + "; nothing was changed")


def _source_coordinated() -> str:
    return ("let the running daemon move it: repeat the command with --via-daemon (or POST /api/offsets), "
            "the reader applies it at a transaction boundary and resumes from there")


def _sink_coordinated(sink: str) -> str:
    return ("let the daemon running the worker replay the sink from there: repeat the command with --via-daemon; "
            f"or replay it yourself while the worker runs: `cdc replay --sink {sink} --from T` (versions make both safe)")


# --------------------------------------------------------------------------- requests to the running reader

REQUEST_OPEN = ("requested", "applying")


def request_spec(target: Target) -> dict[str, Any]:
    """The target as stored in a position request, checked for syntax; a relative time is made absolute now."""
    kind, value = next(iter(target.chosen().items()))
    if kind == "offset":
        raise PositionError("--offset is an event-log offset and applies to sinks only; for the source use "
                            "--gtid, --position, --timestamp, --earliest or --latest")
    if kind == "timestamp":
        return {"timestamp": parse_timestamp(value).isoformat()}
    if kind == "position":
        parse_file_pos(value)
    return {kind: value}


def target_from_spec(spec: dict[str, Any]) -> Target:
    return Target(**spec)


def describe_spec(spec: dict[str, Any]) -> str:
    kind, value = next(iter(spec.items()))
    return kind if value is True else f"{kind} {value}"


def request_source_move(settings: Settings, state: StateStore, target: Target, requester: str, reason: str) -> int:
    """Queue a move of the source checkpoint for the running reader; the request's id. NoReader without one."""
    spec = request_spec(target)
    if Leases(state).holder(reader_lease(settings.source.name)) is None:
        raise NoReader(f"no running reader owns source {settings.source.name!r}, so nobody would apply the request: "
                       "run the same command without --via-daemon to move the checkpoint directly")
    return state.position_request_create(f"source:{settings.source.name}", json.dumps(spec), requester, reason)


def request_sink_replay(settings: Settings, state: StateStore, sink: str, target: Target, requester: str, reason: str) -> int:
    """Queue a replay of ``sink`` from ``target`` for the daemon running its worker; the request's id."""
    start = sink_start(target)
    if start is None:
        raise PositionError("--latest leaves nothing to replay; give where the replay starts: --timestamp, --offset, "
                            "--position FILE:POS or --earliest")
    leases = Leases(state)
    if all(leases.holder(name) is None for name in sink_leases(settings, sink)):
        raise NoReader(f"no running worker owns sink {sink!r}, so nobody would apply the request: run the same command "
                       f"without --via-daemon (then `cdc replay --sink {sink}`), or `cdc replay --sink {sink} --from T`")
    return state.position_request_create(f"sink:{sink}", json.dumps({"start": start}), requester, reason)


def run_sink_request(settings: Settings, state: StateStore, sink: str, request: dict, build, owner: str) -> None:
    """In the daemon running ``sink``'s worker: claim the request, replay the sink from its start, audit, report.

    ``build()`` returns a new, unopened sink adapter (its own connections, beside the worker's)."""
    from cdc.admin.replay import replay

    rid = request["id"]
    if not state.position_request_transition(rid, "requested", "applying", applied_by=owner):
        return  # another worker of the sink took it, or it was cancelled
    start = json.loads(request["spec"])["start"]
    try:
        target = build()
        target.open()
        try:
            result = replay(settings, target, start)
        finally:
            target.close()
    except Exception as exc:  # noqa: BLE001 - any failure is the request's, reported to its requester
        state.position_request_transition(rid, "applying", "failed", error=str(exc) or exc.__class__.__name__,
                                          error_kind="position" if isinstance(exc, PositionError) else "failed",
                                          from_value=describe_start(start), finished_at=utc_now())
        return
    done = (f"replayed to event-log offset {result.last_offset}: {result.read} read, {result.applied} applied, "
            f"{result.rejected} dead-lettered" if result.read else "nothing to replay")
    state.record_audit(request["who"], f"sink:{sink}", describe_start(start), done,
                       (request["reason"] or "cdc offsets set") + f" (replayed by the running worker {owner})")
    state.position_request_transition(rid, "applying", "done", from_value=describe_start(start), to_value=done,
                                      finished_at=utc_now())


def wait_for_request(state: StateStore, request_id: int, timeout_s: float, poll_s: float = 0.2) -> dict:
    """Wait until the reader finished the request; on time-out cancel it if it was not claimed yet.

    Returns the request's row; its ``status`` is ``done``, ``failed``, ``cancelled`` (timed out before the
    reader took it) or ``applying`` (timed out while the reader applies it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = state.position_request_get(request_id)
        if row["status"] not in REQUEST_OPEN:
            return row
        if time.monotonic() >= deadline:
            state.position_request_transition(request_id, "requested", "cancelled", finished_at=utc_now(),
                                              error=f"not applied within {timeout_s:g}s; cancelled by the requester")
            return state.position_request_get(request_id)  # cancelled, or applying/finished: the reader had taken it
        time.sleep(poll_s)


# --------------------------------------------------------------------------- show


def show(settings: Settings, state: StateStore, sink_offsets: dict[str, Any]) -> dict[str, Any]:
    """Current positions and their owners; ``sink_offsets`` maps sink -> SinkOffset or an error string."""
    leases = Leases(state)
    source = settings.source.name
    checkpoint = state.load_checkpoint(source)
    owner = leases.holder(reader_lease(source))
    out: dict[str, Any] = {"source": {
        "name": source, "checkpoint": checkpoint.model_dump() if checkpoint else None,
        "owner": owner.owner if owner else None,
        "requests": [{k: r[k] for k in ("id", "who", "reason", "status", "applied_by")} | {"to": describe_spec(json.loads(r["spec"]))}
                     for r in state.position_request_list(f"source:{source}", REQUEST_OPEN)]}, "sinks": {}}
    for name in settings.sinks:
        offset = sink_offsets.get(name)
        owners = [h.owner for h in (leases.holder(n) for n in sink_leases(settings, name)) if h]
        out["sinks"][name] = {
            "offset": offset.model_dump() if hasattr(offset, "model_dump") else None,
            "error": offset if isinstance(offset, str) else None,
            "replay_from": describe_start(state.load_sink_rewind(name)),
            "owners": owners,
        }
    return out
