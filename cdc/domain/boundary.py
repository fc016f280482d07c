"""Transaction boundary and heartbeat events (``events.transactions``, ``events.heartbeats``; both off by default).

With ``events.transactions: true`` every source transaction that carries published change events is
framed on the events exchange by a BEGIN event (routing key :data:`TXN_BEGIN_KEY`) before its first
change and an END event (:data:`TXN_END_KEY`) after its last, holding the number of change events
published, in total and per entity and source table. Every change event of it then also carries
``txn.entity_index`` (its order among the transaction's events of its entity). A consumer that
counts the distinct event ids with ``txn.id`` equal to the END's ``id`` knows when it has the
whole transaction.

With ``events.heartbeats.enabled`` the reader publishes a heartbeat (:data:`HEARTBEAT_KEY`) every
``interval_s``, whether or not any table changes: the source position the reader has read up to and
the time. Their routing keys have three words, so no ``<entity>.<op>`` binding (``*.c``,
``member.*``) matches them: sinks and existing subscriptions never receive them; bind
``cdc.transaction.*``, ``cdc.heartbeat.*`` or ``cdc.#``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

TXN_BEGIN_KEY = "cdc.transaction.begin"
TXN_END_KEY = "cdc.transaction.end"
HEARTBEAT_KEY = "cdc.heartbeat.reader"
BOUNDARY_KEYS = (TXN_BEGIN_KEY, TXN_END_KEY, HEARTBEAT_KEY)


class Position(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    file: str = Field(description="Binlog file.")
    pos: int = Field(description="Position in that file.")
    gtid: str | None = Field(None, description="GTID position (set) after the last complete transaction read, if GTIDs are on.")


class CollectionCount(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    entity: str
    db: str = Field(description="Source database of the entity's events in this transaction.")
    table: str = Field(description="Source table of the entity's events in this transaction.")
    event_count: int = Field(ge=0, description="Change events of this entity (from this table) published in the transaction.")


class TransactionEvent(BaseModel):
    """A source transaction's BEGIN (before its first change event) or END (after its last)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(1, description="Format version.")
    kind: Literal["transaction"] = "transaction"
    status: Literal["BEGIN", "END"]
    id: str = Field(description="The source transaction id, as in every change event's txn.id: its GTID, or file:pos "
                    "of its first event.")
    source: str = Field(description="Configured name of the source database.")
    server_id: int
    gtid: str | None = Field(None, description="GTID of the transaction, if GTIDs are on.")
    position: Position = Field(description="BEGIN: where the transaction's first change is; END: the position just "
                               "after the transaction (what the checkpoint moves to once confirmed).")
    source_ts_ms: int = Field(description="Commit time at the source, ms since the epoch (UTC).")
    event_count: int | None = Field(None, ge=0, description="END: change events published with this txn.id; null on BEGIN.")
    data_collections: list[CollectionCount] | None = Field(
        None, description="END: the count per entity and source table; null on BEGIN.")
    ts_ms: int = Field(description="When the reader emitted it, ms since the epoch.")

    @property
    def routing_key(self) -> str:
        return TXN_BEGIN_KEY if self.status == "BEGIN" else TXN_END_KEY


class HeartbeatEvent(BaseModel):
    """The reader is alive and has read the source up to ``position`` (published every events.heartbeats.interval_s)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(1, description="Format version.")
    kind: Literal["heartbeat"] = "heartbeat"
    id: str = Field(description="Unique id of this heartbeat: <source>:heartbeat:<ts_ms>.")
    source: str = Field(description="Configured name of the source database.")
    server_id: int
    position: Position = Field(description="The source position the reader has received everything up to.")
    source_ts_ms: int | None = Field(None, description="Commit time of the last transaction read, ms since the epoch; "
                                     "null before the first.")
    ts_ms: int = Field(description="When the reader emitted it, ms since the epoch.")

    @property
    def routing_key(self) -> str:
        return HEARTBEAT_KEY


BoundaryEvent = TransactionEvent | HeartbeatEvent
_BOUNDARY: TypeAdapter[Any] = TypeAdapter(TransactionEvent | HeartbeatEvent)


def is_boundary(routing_key: str) -> bool:
    """Whether a message with this routing key is a transaction boundary or a heartbeat, not a change event."""
    return routing_key in BOUNDARY_KEYS


def decode_boundary(body: bytes) -> TransactionEvent | HeartbeatEvent:
    """Parse a transaction boundary or heartbeat message (by its ``kind``); raises pydantic.ValidationError."""
    import orjson

    kind = orjson.loads(body).get("kind")
    if kind == "heartbeat":
        return HeartbeatEvent.model_validate_json(body)
    return TransactionEvent.model_validate_json(body)


def transaction_event(status: str, txn_id: str, source: str, server_id: int, gtid: str | None, position: dict[str, Any],
                      source_ts_ms: int, ts_ms: int, counts: dict[tuple[str, str, str], int] | None = None) -> dict[str, Any]:
    """A BEGIN or END event as a plain dict (``counts``: (entity, db, table) -> events, for END)."""
    body: dict[str, Any] = {
        "v": 1, "kind": "transaction", "status": status, "id": txn_id, "source": source, "server_id": server_id,
        "gtid": gtid, "position": position, "source_ts_ms": source_ts_ms, "event_count": None, "data_collections": None,
        "ts_ms": ts_ms,
    }
    if counts is not None:
        body["event_count"] = sum(counts.values())
        body["data_collections"] = [{"entity": e, "db": d, "table": t, "event_count": n}
                                    for (e, d, t), n in sorted(counts.items())]
    return body


def heartbeat_event(source: str, server_id: int, position: dict[str, Any], source_ts_ms: int | None,
                    ts_ms: int) -> dict[str, Any]:
    return {"v": 1, "kind": "heartbeat", "id": f"{source}:heartbeat:{ts_ms}", "source": source, "server_id": server_id,
            "position": position, "source_ts_ms": source_ts_ms, "ts_ms": ts_ms}
