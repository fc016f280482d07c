"""The canonical change event: one per row change.

A message carries one event (a JSON object), or, with ``broker.batch_events`` > 1, several
consecutive events of one transaction with the same routing key (a JSON array, header
``x-cdc-count``). Downstream consumers parse either with :func:`decode_many`::

    events = decode_many(body)   # [ChangeEvent, ...]; one element for a single event

Two fields carry the delivery guarantees:

``id``
    Deterministic and globally unique: ``<source>:<binlog file>:<event pos>:<row>:<entity>``.
    Re-reading the same binlog yields the same id, so it serves for dedupe.

``version``
    A 63-bit integer, strictly increasing along the source's binlog and the same on
    every re-read (see :func:`make_version`). Every sink keeps the highest version
    applied per key and ignores older ones, which makes redelivery, replay and
    reordering harmless.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
import time
from enum import Enum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

MAX_VERSION = 2**63 - 1
_FILE_SEQ_LIMIT = 2**31
_POS_LIMIT = 2**32


KEY_TEXT = (
    "Its text form (header x-cdc-key, cache keys, search ids; cdc.domain.envelope.key_string): one field's value as text; "
    "several fields' values as text in the order of the field names, each with '\\' and '|' escaped by a '\\', joined "
    "by '|' (parse_key_string inverts it). A key field marked pii: hash holds the hash, as in the row.")


class Op(str, Enum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"
    TRUNCATE = "t"  # TRUNCATE TABLE, DROP TABLE, CREATE OR REPLACE TABLE: every row of the entity up to here is gone


class SourceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Configured name of the source database.")
    server_id: int = Field(description="server_id of the MySQL/MariaDB server that wrote the binlog.")
    gtid: str | None = Field(None, description="GTID of the source transaction, if GTIDs are on.")
    file: str = Field(description="Binlog file holding the row event.")
    pos: int = Field(description="Start position of the rows event in that file; on a truncate (op t), the position "
                     "just after the statement.")
    row: int = Field(description="Index of the row within the rows event.")
    db: str
    table: str
    ts_ms: int = Field(description="Commit time at the source, milliseconds since the epoch (UTC).")
    snapshot: bool = False
    statement: str | None = Field(
        None, description="On a truncate (op t): the source statement (TRUNCATE TABLE, DROP TABLE, CREATE OR REPLACE "
        "TABLE) as the binlog holds it; absent on row changes.")


class TxnInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Source transaction id: its GTID, or file:pos of its first event.")
    index: int = Field(description="Position of this event within the transaction, from 0.")
    last: bool = Field(description="True on the transaction's last event.")
    entity_index: int | None = Field(
        None, description="With events.transactions on: the position of this event among the transaction's published "
        "events of its entity, from 0 (absent otherwise). The transaction's END event (routing key cdc.transaction.end) "
        "holds the counts.")


class ChangeEvent(BaseModel):
    """One row change of one canonical entity, or (``op`` ``t``) the removal of all its rows.

    A truncate has ``key``, ``before`` and ``after`` null: every row of the entity with a lower
    version is gone, and a write with a lower version arriving later must be ignored; writes with a
    higher version apply as usual."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = Field(1, description="Envelope format version.")
    id: str
    version: int = Field(gt=0, le=MAX_VERSION)
    op: Op
    entity: str
    key: dict[str, Any] | None = Field(description="The entity key; null on a truncate (op t), which concerns every key. " + KEY_TEXT)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source: SourceInfo
    txn: TxnInfo | None = None
    ts_ms: int = Field(description="When the reader emitted the event, ms since the epoch.")

    @model_validator(mode="after")
    def _key_null_exactly_on_truncates(self) -> ChangeEvent:
        if self.op is Op.TRUNCATE:
            if self.key is not None or self.before is not None or self.after is not None:
                raise ValueError("a truncate event (op t) has key, before and after null")
        elif self.key is None:
            raise ValueError(f"an event with op {self.op.value!r} needs a key (only a truncate, op t, has key null)")
        return self

    @property
    def is_truncate(self) -> bool:
        return self.op is Op.TRUNCATE

    @property
    def routing_key(self) -> str:
        return routing_key(self.entity, self.op.value)

    @property
    def key_str(self) -> str:
        return key_string(self.key)


def binlog_file_seq(file: str) -> int:
    """The numeric suffix of a binlog file name: ``mysql-bin.000042`` -> 42."""
    try:
        seq = int(file.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"binlog file name {file!r} has no numeric suffix (expected e.g. mysql-bin.000042)") from None
    if not 0 <= seq < _FILE_SEQ_LIMIT:
        raise ValueError(f"binlog file sequence {seq} of {file!r} is out of range")
    return seq


def make_version(file: str, event_pos: int, row: int) -> int:
    """Version of the ``row``-th row of the rows event starting at ``event_pos`` in ``file``.

    ``(file sequence << 32) | (event_pos + row)``. Every row image takes at least one byte
    of its event, so ``event_pos + row`` stays below the next event's start: versions are
    strictly increasing along the binlog, across file rotation, and identical on re-read.
    """
    offset = event_pos + row
    if not 0 <= offset < _POS_LIMIT:
        raise ValueError(f"binlog position {event_pos}+{row} does not fit 32 bits")
    return (binlog_file_seq(file) << 32) | offset


def version_position(version: int) -> tuple[int, int]:
    """Inverse of :func:`make_version`: ``(file sequence, event_pos + row)``."""
    return version >> 32, version & (_POS_LIMIT - 1)


def truncate_version(file: str, end_pos: int) -> int:
    """Version of a statement (TRUNCATE, DROP TABLE) whose binlog event ends at ``end_pos`` in ``file``.

    One below the version a row at ``end_pos`` would have: every row event before the statement ends
    at or before its start (its versions are lower), every row event after it starts at or after
    ``end_pos`` (its versions are higher), so the truncate sorts between them on every re-read."""
    return make_version(file, end_pos, 0) - 1


def make_id(source: str, file: str, event_pos: int, row: int, entity: str) -> str:
    return f"{source}:{file}:{event_pos}:{row}:{entity}"


def routing_key(entity: str, op: str) -> str:
    return f"{entity}.{op}"


KEY_SEPARATOR = "|"
_KEY_ESCAPE = "\\"


def key_string(key: dict[str, Any] | None) -> str:
    """The text form of a key ("" for a truncate's null key): the ``x-cdc-key`` and ``X-CDC-Key``
    headers, cache keys, search document ids, the slot of a key in a batch and in the idempotency stores.

    One field: its value as text (``str``), exactly. Several fields: the values as text in the order of
    the field names, each with ``\\`` and ``|`` escaped by a ``\\``, joined by ``|``: distinct keys of an
    entity always have distinct texts, and :func:`parse_key_string` gives the parts back."""
    if not key:
        return ""
    if len(key) == 1:
        return str(next(iter(key.values())))
    return join_key_parts([str(key[k]) for k in sorted(key)])


def join_key_parts(parts: list[str] | tuple[str, ...]) -> str:
    """The key text of the parts of a key (its fields' values as text, in the order of the field names)."""
    if len(parts) == 1:
        return parts[0]
    return KEY_SEPARATOR.join(
        p.replace(_KEY_ESCAPE, _KEY_ESCAPE * 2).replace(KEY_SEPARATOR, _KEY_ESCAPE + KEY_SEPARATOR) for p in parts)


def split_key_parts(text: str, count: int) -> list[str]:
    """The inverse of :func:`join_key_parts` for a key of ``count`` fields; ValueError for a text that
    no key of that many fields gives."""
    if count == 1:
        return [text]
    parts: list[str] = []
    part: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == _KEY_ESCAPE:
            nxt = next(chars, None)
            if nxt not in (_KEY_ESCAPE, KEY_SEPARATOR):
                raise ValueError(f"key text {text!r}: a backslash must escape a backslash or a '|'")
            part.append(nxt)
        elif ch == KEY_SEPARATOR:
            parts.append("".join(part))
            part = []
        else:
            part.append(ch)
    parts.append("".join(part))
    if len(parts) != count:
        raise ValueError(f"key text {text!r} has {len(parts)} parts, not {count}")
    return parts


def parse_key_string(text: str, fields: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Field -> value as text of the key text ``text`` of an entity whose key has ``fields``: the exact
    inverse of :func:`key_string` (whose values are text: ``str`` of each). ValueError if it cannot be one."""
    names = sorted(fields)
    return dict(zip(names, split_key_parts(text, len(names))))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime (state-store and audit timestamps)."""
    return dt.datetime.now(dt.UTC)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.timedelta):
        return _format_timedelta(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__} in a change event")


def _format_timedelta(value: dt.timedelta) -> str:
    micros = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{micros:06d}" if micros else text


_OPTS = orjson.OPT_NON_STR_KEYS


def encode(event: dict[str, Any] | ChangeEvent) -> bytes:
    """Serialise an event (model or plain dict of the same shape) to JSON bytes."""
    if isinstance(event, ChangeEvent):
        event = event.model_dump(mode="json")
    return orjson.dumps(event, default=_default, option=_OPTS)


def decode(body: bytes) -> ChangeEvent:
    """Parse and validate one message body; raises ``pydantic.ValidationError`` or ``ValueError``."""
    return ChangeEvent.model_validate_json(body)


_EVENT_LIST = TypeAdapter(list[ChangeEvent])


_ARRAY_START = re.compile(rb"[ \t\r\n]*\[")


def is_batch(body: bytes) -> bool:
    """Whether a message body holds several events (a JSON array) rather than one (an object).
    Called for every message: looks at the first bytes only, without copying the body."""
    return _ARRAY_START.match(body) is not None


def decode_many(body: bytes) -> list[ChangeEvent]:
    """The events of one message body, single or batch; raises ``pydantic.ValidationError`` or ``ValueError``."""
    if is_batch(body):
        events = _EVENT_LIST.validate_json(body)
        if not events:
            raise ValueError("an empty batch of events")
        return events
    return [ChangeEvent.model_validate_json(body)]


def split_batch(body: bytes) -> list[bytes]:
    """The JSON of each element of a batch body, one body per event (for dead-lettering one event alone).

    Raises ``ValueError`` if the body is not a JSON array."""
    items = orjson.loads(body)
    if not isinstance(items, list):
        raise ValueError("not a batch of events (a JSON array)")
    return [orjson.dumps(item) for item in items]


def batch_body(bodies: list[bytes]) -> bytes:
    """One batch body from the JSON bodies of single events (no re-encoding)."""
    return b"[" + b",".join(bodies) + b"]"
