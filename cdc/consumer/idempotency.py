"""Skipping versions already handled: the highest version seen per (entity, key).

The rule every sink follows, offered to consumers: an event whose version is not above the highest
one recorded for its key is a redelivery, a replay or a stale reordering, and is skipped. Record
only after the handler succeeded. A handler that writes to its own database gets effectively-once
by calling ``seen``/``record`` on a store in that same database and transaction.

A truncate (op ``t``) is recorded under the key ``""`` (its ``key_str``): it is the entity's floor,
and ``seen`` is then true for every key of the entity at a lower version too, so an older event
redelivered after a TRUNCATE or DROP TABLE is skipped rather than handed to the handler again.

The store holds one row per key ever seen (tens of bytes each); a namespace keeps subscriptions apart.
"""

from __future__ import annotations

import threading
from typing import Protocol

import sqlalchemy as sa

from cdc.state.store import create_tables

ENTITY_FLOOR = ""  # the key a truncate is recorded under (ChangeEvent.key_str of a null key)


class IdempotencyStore(Protocol):
    def seen(self, entity: str, key: str, version: int) -> bool:
        """True if ``version`` is not above the highest version recorded for this key, or is below the
        entity's newest truncate recorded."""

    def record(self, entity: str, key: str, version: int) -> None:
        """Remember ``version`` for this key (keeping the highest)."""


class MemoryIdempotencyStore:
    """Per process: enough to drop duplicates within one run (e.g. the overlap of a replay and the queue)."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def seen(self, entity: str, key: str, version: int) -> bool:
        return (self._versions.get((entity, key), -1) >= version
                or self._versions.get((entity, ENTITY_FLOOR), -1) > version)

    def record(self, entity: str, key: str, version: int) -> None:
        with self._lock:
            if self._versions.get((entity, key), -1) < version:
                self._versions[(entity, key)] = version

    def clear(self) -> None:
        self._versions.clear()


_metadata = sa.MetaData()
_seen = sa.Table(
    "cdc_consumer_seen", _metadata,
    sa.Column("namespace", sa.String(200), primary_key=True),
    sa.Column("entity", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(500), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)


class SqlIdempotencyStore:
    """Durable, through SQLAlchemy: a SQLite file or PostgreSQL (``postgresql+psycopg://...``)."""

    def __init__(self, url: str, namespace: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        self.namespace = namespace
        self._engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        create_tables(_metadata, self._engine)  # safe when several consumers start on a new store at once
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise ValueError(f"SqlIdempotencyStore supports SQLite and PostgreSQL URLs, not {dialect}")
        self._insert = insert

    def seen(self, entity: str, key: str, version: int) -> bool:
        query = sa.select(_seen.c.key, _seen.c.version).where(
            _seen.c.namespace == self.namespace, _seen.c.entity == entity, _seen.c.key.in_([key, ENTITY_FLOOR]))
        with self._engine.connect() as conn:
            stored = dict(conn.execute(query).all())
        return stored.get(key, -1) >= version or stored.get(ENTITY_FLOOR, -1) > version

    def record(self, entity: str, key: str, version: int) -> None:
        stmt = self._insert(_seen).values(namespace=self.namespace, entity=entity, key=key, version=version)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_seen.c.namespace, _seen.c.entity, _seen.c.key],
            set_={"version": stmt.excluded.version},
            where=_seen.c.version < stmt.excluded.version,
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def clear(self) -> None:
        """Forget every version of this namespace: the next replay is handled again."""
        with self._engine.begin() as conn:
            conn.execute(sa.delete(_seen).where(_seen.c.namespace == self.namespace))

    def close(self) -> None:
        self._engine.dispose()
