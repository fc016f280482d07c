"""The offset store port and its two adapters (SQL and in-memory)."""

from __future__ import annotations

import abc
import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from cdc.domain.envelope import utc_now
from cdc.domain.errors import ConfigError, TransientError
from cdc.domain.positions import Checkpoint, SinkOffset
from cdc.domain.redact import redact_url
from cdc.runtime.tls import check_postgres_url

log = logging.getLogger("cdc.state")

T = TypeVar("T")

metadata = sa.MetaData()

source_checkpoints = sa.Table(
    "cdc_source_checkpoints",
    metadata,
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("file", sa.String(255), nullable=False),
    sa.Column("pos", sa.BigInteger, nullable=False),
    sa.Column("gtid", sa.Text),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

source_published = sa.Table(  # the end of the last transaction the reader published (cdc.reader.pipeline): >= the checkpoint
    "cdc_source_published",
    metadata,
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("file", sa.String(255), nullable=False),
    sa.Column("pos", sa.BigInteger, nullable=False),
    sa.Column("gtid", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

sink_offsets = sa.Table(
    "cdc_state_sink_offsets",
    metadata,
    sa.Column("sink", sa.String(200), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("file", sa.String(255), nullable=False),
    sa.Column("pos", sa.BigInteger, nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("applied_ms", sa.BigInteger, nullable=False),
)

offset_audit = sa.Table(
    "cdc_offset_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("from_value", sa.Text),
    sa.Column("to_value", sa.Text),
    sa.Column("reason", sa.Text),
)


sink_rewinds = sa.Table(  # where the next `cdc replay --sink` starts in the event log (see cdc.admin.offsets)
    "cdc_sink_rewinds",
    metadata,
    sa.Column("sink", sa.String(200), primary_key=True),
    sa.Column("start", sa.String(255), nullable=False),
)

snapshots = sa.Table(
    "cdc_snapshots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("db", sa.String(200), nullable=False),
    sa.Column("tbl", sa.String(200), nullable=False),
    sa.Column("where_clause", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("last_key", sa.Text),
    sa.Column("rows_done", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_total", sa.BigInteger),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
)

position_requests = sa.Table(  # an operator asks the running reader to move its checkpoint (cdc.admin.offsets)
    "cdc_position_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(255), nullable=False),  # source:<name>
    sa.Column("spec", sa.Text, nullable=False),  # JSON: {"timestamp": ...} / {"gtid": ...} / {"position": ...} / {"earliest": true}
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),  # requested | applying | done | failed | cancelled
    sa.Column("from_value", sa.Text),
    sa.Column("to_value", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("error_kind", sa.String(20)),  # position (not usable: exit 5) | failed (exit 1)
    sa.Column("applied_by", sa.String(255)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

leases = sa.Table(
    "cdc_leases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # epoch seconds
    sa.Column("acquired_at", sa.Float, nullable=False),
)

POSITION_REQUEST_FIELDS = ("id", "target", "spec", "who", "reason", "status", "from_value", "to_value", "error",
                           "error_kind", "applied_by", "created_at", "finished_at")

SNAPSHOT_FIELDS = ("id", "source", "db", "tbl", "where_clause", "status", "last_key", "rows_done", "rows_total",
                   "created_at", "started_at", "updated_at", "finished_at", "error")


class StateStore(abc.ABC):
    """Where the reader's checkpoint and the sinks' offsets live.

    ``save_checkpoint`` is durable when it returns: a reader restarted afterwards resumes
    from that checkpoint. Implementations are safe to call from several threads.
    """

    @abc.abstractmethod
    def load_checkpoint(self, source: str) -> Checkpoint | None: ...

    @abc.abstractmethod
    def save_checkpoint(self, source: str, checkpoint: Checkpoint) -> None: ...

    @abc.abstractmethod
    def save_checkpoint_with_snapshots(self, source: str, checkpoint: Checkpoint,
                                       planned: list[tuple[str, str, str | None, int | None]],
                                       supersede: str | None = None) -> list[int]:
        """Save ``checkpoint`` and create one snapshot request per ``(db, tbl, where_clause, rows_total)`` of
        ``planned``, all or nothing (one transaction): a start-up that dies before this returns leaves neither,
        so the next start plans its snapshots again instead of streaming on from a checkpoint without them.
        ``supersede``: first cancel the source's unfinished snapshots with that error. The new ids, in order."""

    @abc.abstractmethod
    def load_published(self, source: str) -> Checkpoint | None:
        """The end of the last transaction the reader published (its events' versions lie below it), or None."""

    @abc.abstractmethod
    def save_published(self, source: str, end: Checkpoint | None) -> None:
        """Record it; None forgets it (the operator moved the checkpoint: cdc offsets)."""

    @abc.abstractmethod
    def load_sink_offset(self, sink: str) -> SinkOffset | None: ...

    @abc.abstractmethod
    def save_sink_offset(self, sink: str, offset: SinkOffset) -> None: ...

    @abc.abstractmethod
    def delete_sink_offset(self, sink: str) -> None: ...

    # A sink's pending rewind: the event-log position `cdc replay` re-applies it from (cdc.admin.offsets).
    @abc.abstractmethod
    def load_sink_rewind(self, sink: str) -> str | None: ...

    @abc.abstractmethod
    def save_sink_rewind(self, sink: str, start: str | None) -> None:
        """Record ``start`` (None clears it)."""

    @abc.abstractmethod
    def record_audit(self, who: str, target: str, from_value: str | None, to_value: str | None, reason: str = "") -> None: ...

    @abc.abstractmethod
    def audit_log(self, limit: int = 100) -> list[dict]: ...

    # Snapshots: one row per table snapshot, its status and progress (see cdc.snapshot).
    @abc.abstractmethod
    def snapshot_create(self, source: str, db: str, tbl: str, where_clause: str | None, rows_total: int | None) -> int: ...

    @abc.abstractmethod
    def snapshot_update(self, snapshot_id: int, **fields) -> None: ...

    @abc.abstractmethod
    def snapshot_list(self, source: str | None = None, statuses: tuple[str, ...] | None = None) -> list[dict]: ...

    # Position requests: the operator asks the running reader to move its checkpoint; the reader
    # claims one (requested -> applying), applies it at a transaction boundary, and finishes it.
    @abc.abstractmethod
    def position_request_create(self, target: str, spec: str, who: str, reason: str = "") -> int: ...

    @abc.abstractmethod
    def position_request_get(self, request_id: int) -> dict | None: ...

    @abc.abstractmethod
    def position_request_list(self, target: str | None = None, statuses: tuple[str, ...] | None = None) -> list[dict]: ...

    @abc.abstractmethod
    def position_request_transition(self, request_id: int, from_status: str, to_status: str, **fields) -> bool:
        """Set ``status`` (and ``fields``) only if it is still ``from_status``; False if it was not."""

    # Leases: at most one live owner per name (the active reader of a source, say). A lease not
    # renewed within its ttl expires and another owner may take it.
    @abc.abstractmethod
    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew ``name`` for ``ttl_s`` seconds; False while another owner holds it."""

    @abc.abstractmethod
    def release_lease(self, name: str, owner: str) -> None: ...

    @abc.abstractmethod
    def lease_holder(self, name: str) -> dict | None:
        """``{"owner", "expires_at", "acquired_at"}`` of the live lease, or None."""

    def close(self) -> None:
        pass


class MemoryStateStore(StateStore):
    """In-memory store for unit tests."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, Checkpoint] = {}
        self.published: dict[str, Checkpoint | None] = {}
        self.offsets: dict[str, SinkOffset] = {}
        self.audit: list[dict] = []

    def load_checkpoint(self, source: str) -> Checkpoint | None:
        return self.checkpoints.get(source)

    def save_checkpoint(self, source: str, checkpoint: Checkpoint) -> None:
        self.checkpoints[source] = checkpoint

    def save_checkpoint_with_snapshots(self, source, checkpoint, planned, supersede=None):
        if supersede is not None:
            for snap in self.snapshot_list(source, ("requested", "running")):
                self.snapshot_update(snap["id"], status="cancelled", error=supersede)
        ids = [self.snapshot_create(source, db, tbl, where, total) for db, tbl, where, total in planned]
        self.checkpoints[source] = checkpoint
        return ids

    def load_published(self, source: str) -> Checkpoint | None:
        return self.published.get(source)

    def save_published(self, source: str, end: Checkpoint | None) -> None:
        self.published[source] = end

    def load_sink_offset(self, sink: str) -> SinkOffset | None:
        return self.offsets.get(sink)

    def save_sink_offset(self, sink: str, offset: SinkOffset) -> None:
        self.offsets[sink] = offset

    def delete_sink_offset(self, sink: str) -> None:
        self.offsets.pop(sink, None)

    def load_sink_rewind(self, sink):
        return getattr(self, "_rewinds", {}).get(sink)

    def save_sink_rewind(self, sink, start):
        self._rewinds = getattr(self, "_rewinds", {})
        if start is None:
            self._rewinds.pop(sink, None)
        else:
            self._rewinds[sink] = start

    def record_audit(self, who, target, from_value, to_value, reason=""):
        self.audit.append(dict(at=utc_now(), who=who, target=target, from_value=from_value, to_value=to_value, reason=reason))

    def audit_log(self, limit: int = 100) -> list[dict]:
        return list(reversed(self.audit))[:limit]

    def position_request_create(self, target, spec, who, reason=""):
        self._requests = getattr(self, "_requests", [])
        row = dict.fromkeys(POSITION_REQUEST_FIELDS)
        row.update(id=len(self._requests) + 1, target=target, spec=spec, who=who, reason=reason, status="requested",
                   created_at=utc_now())
        self._requests.append(row)
        return row["id"]

    def position_request_get(self, request_id):
        rows = getattr(self, "_requests", [])
        return dict(rows[request_id - 1]) if 0 < request_id <= len(rows) else None

    def position_request_list(self, target=None, statuses=None):
        return [dict(r) for r in getattr(self, "_requests", [])
                if (target is None or r["target"] == target) and (statuses is None or r["status"] in statuses)]

    def position_request_transition(self, request_id, from_status, to_status, **fields):
        row = getattr(self, "_requests", [])[request_id - 1]
        if row["status"] != from_status:
            return False
        row.update(fields, status=to_status)
        return True

    def acquire_lease(self, name, owner, ttl_s):
        self._leases = getattr(self, "_leases", {})
        now = time.time()
        held = self._leases.get(name)
        if held and held["owner"] != owner and held["expires_at"] > now:
            return False
        acquired = held["acquired_at"] if held and held["owner"] == owner else now
        self._leases[name] = dict(owner=owner, expires_at=now + ttl_s, acquired_at=acquired)
        return True

    def release_lease(self, name, owner):
        held = getattr(self, "_leases", {}).get(name)
        if held and held["owner"] == owner:
            del self._leases[name]

    def lease_holder(self, name):
        held = getattr(self, "_leases", {}).get(name)
        return dict(held) if held and held["expires_at"] > time.time() else None

    def snapshot_create(self, source, db, tbl, where_clause, rows_total):
        self._snapshots = getattr(self, "_snapshots", [])
        row = dict.fromkeys(SNAPSHOT_FIELDS)
        row.update(id=len(self._snapshots) + 1, source=source, db=db, tbl=tbl, where_clause=where_clause,
                   status="requested", rows_done=0, rows_total=rows_total, created_at=utc_now())
        self._snapshots.append(row)
        return row["id"]

    def snapshot_update(self, snapshot_id, **fields):
        self._snapshots[snapshot_id - 1].update(fields, updated_at=utc_now())

    def snapshot_list(self, source=None, statuses=None):
        return [dict(r) for r in getattr(self, "_snapshots", [])
                if (source is None or r["source"] == source) and (statuses is None or r["status"] in statuses)]


_NOT_LOST = ("certificate verify failed", "password authentication failed", "no pg_hba.conf entry")


def lost_connection(exc: BaseException) -> bool:
    """A failure that a later attempt may not meet: the server restarting or unreachable, a connection cut
    (psycopg's OperationalError, AdminShutdown included), SQLite busy. A refused statement is not one, nor
    a certificate the client refuses or a refused password: retrying cannot change those."""
    if any(text in str(exc) for text in _NOT_LOST):
        return False
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def _retried(method: Callable[..., T]) -> Callable[..., T]:
    """A store method whose lost connection is retried (see :meth:`SqlStateStore.retrying`)."""

    @functools.wraps(method)
    def run(self: SqlStateStore, *args: Any, **kwargs: Any) -> T:
        return self.retrying(method.__name__, method, self, *args, **kwargs)

    return run


def create_tables(tables: sa.MetaData, engine: sa.engine.Engine) -> None:
    """``tables.create_all``, safe when several processes start on a new store at once (the daemon and
    a ``cdc snapshot start``, say): PostgreSQL lets both pass the existence check, and the second CREATE
    fails with a unique violation on pg_type or "already exists". Then the tables exist: check again."""
    for attempt in range(5):
        try:
            tables.create_all(engine)
            return
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
            text = str(exc.orig) if exc.orig is not None else str(exc)
            if attempt == 4 or ("already exists" not in text and "pg_type_typname_nsp_index" not in text):
                raise


class SqlStateStore(StateStore):
    """SQLAlchemy Core store: a SQLite file by default, PostgreSQL in production.

    A lost connection (PostgreSQL restarting, a failover, the network) is retried with backoff for up to
    ``retry_s`` seconds, then raised as TransientError, never as the driver's exception: the roles treat
    it as transient (the reader reopens its stream from the checkpoint, a sink worker retries the batch),
    so the daemon never stops for it. Every write is safe to repeat: the upserts (checkpoint, offsets,
    snapshot progress) write the same values again; an insert repeated because its commit was
    acknowledged but the answer lost (rare) is a duplicate audit row or snapshot request, harmless.
    Leases are not retried here (their callers retry on their own clock, within the lease's ttl)."""

    def __init__(self, url: str, retry_s: float = 20.0) -> None:
        check_postgres_url(url, "state store url")
        parsed = make_url(url)
        self._where = redact_url(parsed.render_as_string(hide_password=False))
        self.retry_s = retry_s
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._engine = sa.create_engine(parsed, future=True, pool_pre_ping=True)
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._lock = threading.Lock()
        self.retrying("create tables", create_tables, metadata, self._engine)

    def retrying(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried with backoff while it fails for a lost connection, for up to
        ``retry_s`` seconds; then TransientError naming the store (without its password) and the cause."""
        retrying = Retrying(retry=retry_if_exception(lost_connection), stop=stop_after_delay(self.retry_s),
                            wait=wait_exponential(multiplier=0.05, min=0.05, max=2.0), before_sleep=self._log_retry,
                            reraise=True)
        try:
            return retrying(fn, *args, **kwargs)
        except sa.exc.DBAPIError as exc:
            if not lost_connection(exc):
                raise
            raise TransientError(f"state store {self._where}: {what}: {_cause(exc)} (retried for {self.retry_s:.0f}s; "
                                 "retrying later)") from None

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("state store %s: %s (attempt %d); retrying in %.2fs", self._where, _cause(exc), state.attempt_number,
                    state.upcoming_sleep)

    @_retried
    def load_checkpoint(self, source: str) -> Checkpoint | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(source_checkpoints).where(source_checkpoints.c.source == source)).mappings().first()
        if row is None:
            return None
        return Checkpoint(file=row["file"], pos=row["pos"], gtid=row["gtid"], ts_ms=row["ts_ms"])

    @_retried
    def save_checkpoint(self, source: str, checkpoint: Checkpoint) -> None:
        values = dict(file=checkpoint.file, pos=checkpoint.pos, gtid=checkpoint.gtid, ts_ms=checkpoint.ts_ms, updated_at=utc_now())
        self._upsert(source_checkpoints, source_checkpoints.c.source, source, values)

    @_retried
    def save_checkpoint_with_snapshots(self, source, checkpoint, planned, supersede=None):
        now = utc_now()
        values = dict(file=checkpoint.file, pos=checkpoint.pos, gtid=checkpoint.gtid, ts_ms=checkpoint.ts_ms, updated_at=now)
        with self._lock, self._engine.begin() as conn:  # one transaction: all of it, or none of it
            if supersede is not None:
                conn.execute(snapshots.update().where(snapshots.c.source == source,
                                                      snapshots.c.status.in_(("requested", "running")))
                             .values(status="cancelled", error=supersede, updated_at=now))
            ids = [int(conn.execute(snapshots.insert().values(
                source=source, db=db, tbl=tbl, where_clause=where, status="requested", rows_done=0, rows_total=total,
                created_at=now)).inserted_primary_key[0]) for db, tbl, where, total in planned]
            key = source_checkpoints.c.source
            if not conn.execute(source_checkpoints.update().where(key == source).values(**values)).rowcount:
                conn.execute(source_checkpoints.insert().values(source=source, **values))
        return ids

    @_retried
    def load_published(self, source: str) -> Checkpoint | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(source_published).where(source_published.c.source == source)).mappings().first()
        return None if row is None else Checkpoint(file=row["file"], pos=row["pos"], gtid=row["gtid"])

    @_retried
    def save_published(self, source: str, end: Checkpoint | None) -> None:
        if end is None:
            with self._lock, self._engine.begin() as conn:
                conn.execute(source_published.delete().where(source_published.c.source == source))
            return
        values = dict(file=end.file, pos=end.pos, gtid=end.gtid, updated_at=utc_now())
        self._upsert(source_published, source_published.c.source, source, values)

    @_retried
    def load_sink_offset(self, sink: str) -> SinkOffset | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(sink_offsets).where(sink_offsets.c.sink == sink)).mappings().first()
        if row is None:
            return None
        return SinkOffset(**{k: row[k] for k in ("version", "file", "pos", "ts_ms", "applied_ms")})

    @_retried
    def save_sink_offset(self, sink: str, offset: SinkOffset) -> None:
        self._upsert(sink_offsets, sink_offsets.c.sink, sink, offset.model_dump())

    @_retried
    def delete_sink_offset(self, sink: str) -> None:
        with self._lock, self._engine.begin() as conn:
            conn.execute(sink_offsets.delete().where(sink_offsets.c.sink == sink))

    @_retried
    def load_sink_rewind(self, sink):
        with self._engine.connect() as conn:
            return conn.execute(sa.select(sink_rewinds.c.start).where(sink_rewinds.c.sink == sink)).scalar()

    @_retried
    def save_sink_rewind(self, sink, start):
        if start is None:
            with self._lock, self._engine.begin() as conn:
                conn.execute(sink_rewinds.delete().where(sink_rewinds.c.sink == sink))
        else:
            self._upsert(sink_rewinds, sink_rewinds.c.sink, sink, {"start": start})

    @_retried
    def record_audit(self, who, target, from_value, to_value, reason=""):
        with self._engine.begin() as conn:
            conn.execute(offset_audit.insert().values(at=utc_now(), who=who, target=target, from_value=from_value, to_value=to_value, reason=reason))

    @_retried
    def audit_log(self, limit: int = 100) -> list[dict]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(offset_audit).order_by(offset_audit.c.id.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def acquire_lease(self, name, owner, ttl_s):
        now = time.time()
        with self._lock, self._engine.begin() as conn:
            taken = conn.execute(
                leases.update()
                .where(leases.c.name == name, sa.or_(leases.c.owner == owner, leases.c.expires_at < now))
                .values(owner=owner, expires_at=now + ttl_s,
                        acquired_at=sa.case((leases.c.owner == owner, leases.c.acquired_at), else_=now))
            ).rowcount
            if taken:
                return True
            try:
                with conn.begin_nested():
                    conn.execute(leases.insert().values(name=name, owner=owner, expires_at=now + ttl_s, acquired_at=now))
                return True
            except sa.exc.IntegrityError:
                return False  # held by another owner

    def release_lease(self, name, owner):
        with self._lock, self._engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.owner == owner))

    def lease_holder(self, name):
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == name, leases.c.expires_at > time.time())).mappings().first()
        return {k: row[k] for k in ("owner", "expires_at", "acquired_at")} if row else None

    @_retried
    def position_request_create(self, target, spec, who, reason=""):
        with self._engine.begin() as conn:
            result = conn.execute(position_requests.insert().values(
                target=target, spec=spec, who=who, reason=reason, status="requested", created_at=utc_now()))
            return int(result.inserted_primary_key[0])

    @_retried
    def position_request_get(self, request_id):
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(position_requests).where(position_requests.c.id == request_id)).mappings().first()
        return {k: row[k] for k in POSITION_REQUEST_FIELDS} if row else None

    @_retried
    def position_request_list(self, target=None, statuses=None):
        rows = self._listed(position_requests, position_requests.c.target, target, statuses)
        return [{k: r[k] for k in POSITION_REQUEST_FIELDS} for r in rows]

    @_retried
    def position_request_transition(self, request_id, from_status, to_status, **fields):
        with self._lock, self._engine.begin() as conn:
            return bool(conn.execute(position_requests.update().where(
                position_requests.c.id == request_id, position_requests.c.status == from_status,
            ).values(**fields, status=to_status)).rowcount)

    @_retried
    def snapshot_create(self, source, db, tbl, where_clause, rows_total):
        with self._engine.begin() as conn:
            result = conn.execute(snapshots.insert().values(
                source=source, db=db, tbl=tbl, where_clause=where_clause, status="requested", rows_done=0,
                rows_total=rows_total, created_at=utc_now()))
            return int(result.inserted_primary_key[0])

    @_retried
    def snapshot_update(self, snapshot_id, **fields):
        with self._engine.begin() as conn:
            conn.execute(snapshots.update().where(snapshots.c.id == snapshot_id).values(**fields, updated_at=utc_now()))

    @_retried
    def snapshot_list(self, source=None, statuses=None):
        return [dict(r) for r in self._listed(snapshots, snapshots.c.source, source, statuses)]

    def _listed(self, table, owner_column, owner, statuses) -> list:
        """Rows of a request table (snapshots, position requests) in id order, of one owner and statuses if given."""
        query = sa.select(table).order_by(table.c.id)
        if owner is not None:
            query = query.where(owner_column == owner)
        if statuses is not None:
            query = query.where(table.c.status.in_(statuses))
        with self._engine.connect() as conn:
            return conn.execute(query).mappings().all()

    def close(self) -> None:
        self._engine.dispose()

    def _upsert(self, table: sa.Table, key_col: sa.Column, key: str, values: dict) -> None:
        with self._lock, self._engine.begin() as conn:
            updated = conn.execute(table.update().where(key_col == key).values(**values)).rowcount
            if not updated:
                conn.execute(table.insert().values({key_col.name: key, **values}))


def _cause(exc: BaseException | None) -> str:
    """The driver's first line (no SQL, no parameters, no URL), with its class."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()




_URL_EXAMPLE = ("e.g. sqlite:///var/cdc-state.db, or postgresql://user@host/db with the password in the environment "
                "(CDC_STATE__URL)")


def check_state_url(url: str, setting: str = "state.url") -> None:
    """ConfigError naming ``setting`` for a URL the store cannot use. The URL itself is never echoed: a
    malformed one may hold its password anywhere (a password without its host reads as the port)."""
    if url == "memory://":
        return
    try:
        parsed = make_url(url)
        check_postgres_url(url, setting)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        raise ConfigError(f"{setting} is not a database URL that can be read (its scheme, host or port is "
                          f"malformed); use {_URL_EXAMPLE}") from None
    try:
        parsed.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise ConfigError(f"{setting}: no database driver {parsed.drivername!r} is installed; use {_URL_EXAMPLE}") from None


def open_state_store(url: str, setting: str = "state.url") -> StateStore:
    """``setting``: the configuration key ``url`` comes from, named in errors."""
    if url == "memory://":
        return MemoryStateStore()
    check_state_url(url, setting)
    return SqlStateStore(url)
