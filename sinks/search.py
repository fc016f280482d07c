"""The search sink: canonical entities as documents in OpenSearch (or Elasticsearch), via ``_bulk``.

One concrete index per entity, ``<prefix>-<entity>-v1``, written through the alias
``<prefix>-<entity>`` (a reindex into ``-v2`` swaps the alias without downtime); the mapping is
derived from the entity schema (see :mod:`cdc.sinks.search_mapping`). Document id: the key string.

Every write is an ``index`` with ``version_type=external`` and the event's version: the target
keeps the highest version per document and answers 409 to an older one, which counts as applied.
Deletes are versioned soft-deletes: a tombstone document ``{"_cdc_deleted": true, ...}`` with the
delete's version. A real delete would lose that version after ``index.gc_deletes`` (60 s), and a
late, older insert would then resurrect the row. Searches filter on ``_cdc_deleted: false``.

A truncate (op ``t`` at version V: TRUNCATE or DROP TABLE at the source) writes the entity's floor,
the document ``__cdc_truncate_floor__`` (a tombstone with version V, external versioning keeps the
highest), then deletes by query the documents with ``_cdc_version`` below V. Every batch leaves out
the events below the floor it knows; after its bulk it reads the floor again, and if another worker
(another shard's) raised it meanwhile, deletes below the new floor too: whichever of the two writes
comes last, the documents below the floor are gone.

The offset goes to the state store (``state_url``) after the bulk request succeeded.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, SecretStr

from cdc.domain.entity_schema import EntitySchema
from cdc.domain.envelope import ChangeEvent, now_ms
from cdc.domain.errors import ConfigError, TerminalError, TransientError
from cdc.domain.positions import SinkOffset
from cdc.domain.redact import redact_url
from cdc.runtime.tls import client_context, split_url
from cdc.sinks.base import Rejection, Sink, SinkConfig, SinkContext, newest_per_key, offset_of, register_sink, split_truncates
from cdc.sinks.errors import ErrorTable, Rule
from cdc.sinks.search_mapping import (
    DELETED_FIELD,
    VERSION_FIELD,
    IndexSpec,
    Outcome,
    bulk_payload,
    classify_item,
    index_body,
    projected_fields,
)

log = logging.getLogger("cdc.sinks.search")

FLOOR_ID = "__cdc_truncate_floor__"  # the document holding an index's truncate floor (its version)


class SearchSinkConfig(SinkConfig):
    type: Literal["search"] = "search"
    url: SecretStr = Field(
        description="http(s)://[user:password@]host:9200; https verifies the server against the system store, or "
        "?tls_ca=/ca.pem[&tls_cert=...&tls_key=...][&tls_verify=require|verify-ca|verify-identity]."
    )
    index_prefix: str = "cdc"
    indices: dict[str, IndexSpec] = Field(default_factory=dict, description="Entity -> projection, mappings, settings.")
    state_url: str | None = Field(None, description="State store holding this sink's offset (default: state.url); "
                                  "PostgreSQL TLS as in state.url (sslmode, sslrootcert, ...).")
    request_timeout_s: float = Field(30, gt=0)
    max_retries: int = Field(5, ge=0, description="Retries of throttled (429/5xx) bulk items, and of a batch before errors are logged.")


@dataclass(frozen=True)
class _Index:
    schema: EntitySchema
    alias: str
    concrete: str
    fields: tuple[str, ...]
    body: dict[str, Any]


@dataclass(frozen=True)
class _Write:
    event: ChangeEvent
    index: str
    payload: bytes


class SearchSink(Sink):
    def __init__(self, name: str, config: SearchSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self._client: Any = None
        self._store: Any = None
        self._indices: dict[str, _Index] = {}
        self._floors: dict[str, int] = {}  # entity -> the truncate floor last read or written
        self._safe_url, self._client_args, self._password = _parse_url(config.url.get_secret_value())
        self._secrets = [self._password] if self._password else []

    # lifecycle

    def open(self) -> None:
        from opensearchpy import OpenSearch

        from cdc.state import open_state_store

        indices = {s.name: self._layout(s) for s in self._consumed_entities()}
        if self._client is None:
            self._client = OpenSearch(**self._client_args, timeout=self.config.request_timeout_s, max_retries=0)
        if self._store is None:
            self._store = open_state_store(self.config.state_url or "sqlite:///var/cdc-state.db",
                                           f"sinks.{self.name}.state_url (state.url by default)")
        for index in indices.values():
            self._ensure_index(index)
        self._indices = indices
        log.info("search sink %s open on %s, %d indices", self.name, self._safe_url, len(indices))

    def _consumed_entities(self) -> list[EntitySchema]:
        known = self.context.entities
        if "*" in self.config.entities:
            return list(known.values())
        unknown = [e for e in self.config.entities if e not in known]
        if unknown:
            raise ConfigError(f"sink {self.name!r} consumes entities {unknown} that no mapping defines")
        return [known[e] for e in self.config.entities]

    def _layout(self, schema: EntitySchema) -> _Index:
        spec = self.config.indices.get(schema.name, IndexSpec())
        alias = (spec.alias or f"{self.config.index_prefix}-{schema.name}").lower()
        return _Index(schema, alias, f"{alias}-v1", tuple(projected_fields(schema, spec)), index_body(schema, spec, alias))

    def _ensure_index(self, index: _Index) -> None:
        from opensearchpy.exceptions import RequestError

        indices = self._client.indices
        with self._translate(f"creating index {index.concrete} and alias {index.alias}"):
            if not indices.exists_alias(name=index.alias):
                # exists() answers for an alias too: another process (a second worker, an operator's
                # command) may have created the index and its alias since the line above.
                if indices.exists(index=index.alias) and not indices.exists_alias(name=index.alias):
                    raise TerminalError(
                        f"search sink {self.name!r}: {index.alias} is an index, not an alias (auto-created by a write?); "
                        "delete it or reindex it into a versioned index behind an alias"
                    )
                try:
                    indices.create(index=index.concrete, body=index.body)
                    return
                except RequestError as err:
                    if err.error != "resource_already_exists_exception":
                        raise
                    indices.put_alias(index=index.concrete, name=index.alias)
            self._check_write_index(index)
            self._add_missing_fields(index)

    def _check_write_index(self, index: _Index) -> None:
        behind = self._client.indices.get_alias(name=index.alias)
        writable = [i for i, a in behind.items() if a["aliases"][index.alias].get("is_write_index")]
        if len(behind) > 1 and not writable:
            raise TerminalError(
                f"search sink {self.name!r}: alias {index.alias} points to {sorted(behind)} without a write index; "
                "point it at one index (or mark one is_write_index) to finish the reindex"
            )

    def _add_missing_fields(self, index: _Index) -> None:
        """Fields the entity gained since the index was created (existing fields are left as they are)."""
        current = self._client.indices.get_mapping(index=index.alias)
        mapped = {f for m in current.values() for f in m.get("mappings", {}).get("properties", {})}
        wanted = index.body["mappings"]["properties"]
        missing = {f: m for f, m in wanted.items() if f not in mapped}
        if missing:
            self._client.indices.put_mapping(index=index.alias, body={"properties": missing})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # applying

    def apply(self, events: Sequence[ChangeEvent]) -> list[Rejection]:
        if not events:
            return []
        if self._client is None:
            raise TerminalError(f"search sink {self.name!r}: apply() before open()")
        truncates, _ = split_truncates(events)
        newest = newest_per_key(events)
        rejections: list[Rejection] = []
        writes: list[_Write] = []
        for entity, truncate in truncates.items():
            if entity not in self._indices:
                rejections.append(Rejection(truncate, f"entity {entity!r} is not consumed by search sink {self.name!r}"))
            else:
                self._truncate(self._indices[entity], truncate)
        for event in newest:
            index = self._indices.get(event.entity)
            if index is None:
                rejections.append(Rejection(event, f"entity {event.entity!r} is not consumed by search sink {self.name!r}"))
                continue
            if event.version < self._floor(event.entity):
                continue  # removed by a truncate applied already
            try:
                writes.append(_Write(event, index.alias, bulk_payload(event, index.alias, index.fields)))
            except TypeError as err:
                rejections.append(Rejection(event, f"{event.entity} key {event.key_str}: {err}"))
        if writes:
            rejections += self._bulk(writes)
            for entity in {w.event.entity for w in writes}:
                known = self._floors[entity]
                if self._floor(entity, fresh=True) > known:  # another worker truncated while this bulk ran
                    self._delete_below(self._indices[entity], self._floors[entity])
        self._save_offset(offset_of(events, now_ms()))
        return rejections

    def _floor(self, entity: str, fresh: bool = False) -> int:
        """The entity's truncate floor (0 without one): from memory, or read from the index (``fresh``)."""
        if fresh or entity not in self._floors:
            from opensearchpy.exceptions import NotFoundError

            alias = self._indices[entity].alias
            with self._translate(f"reading the truncate floor of {alias}"):
                try:
                    found = self._client.get(index=alias, id=FLOOR_ID)
                except NotFoundError:
                    found = {}
            self._floors[entity] = max(self._floors.get(entity, 0), int(found.get("_version", 0)))
        return self._floors[entity]

    def _truncate(self, index: _Index, event: ChangeEvent) -> None:
        """The floor first (no older write lands from then on), then the documents below it. Deleted again
        on a redelivery: a worker that died between the two leaves nothing behind."""
        from opensearchpy.exceptions import ConflictError

        with self._translate(f"writing the truncate floor of {index.alias}"):
            try:
                self._client.index(index=index.alias, id=FLOOR_ID, version=event.version, version_type="external",
                                   body={VERSION_FIELD: event.version, DELETED_FIELD: True})
            except ConflictError:
                pass  # the floor is at this version already, or at a newer truncate's
        if self._floor(event.entity, fresh=True) > event.version:
            return  # a newer truncate is applied: it deletes more than this one would
        deleted = self._delete_below(index, event.version)
        log.info("search sink %s: truncate of %s at version %s applied, %d documents deleted", self.name,
                 event.entity, event.version, deleted, extra={"entity": event.entity})

    def _delete_below(self, index: _Index, version: int) -> int:
        query = {"query": {"range": {VERSION_FIELD: {"lt": version}}}}
        with self._translate(f"deleting the documents of {index.alias} below version {version}"):
            self._client.indices.refresh(index=index.alias)  # the search behind the delete sees every write made
            response = self._client.delete_by_query(index=index.alias, body=query, conflicts="proceed", refresh=True)
        failures = response.get("failures") or []
        if failures:
            raise TransientError(f"search sink {self.name!r}: deleting below version {version} in {index.alias} failed "
                                 f"for {len(failures)} documents ({str(failures[0])[:200]}); retrying")
        return int(response.get("deleted", 0))

    def _bulk(self, writes: list[_Write]) -> list[Rejection]:
        rejections: list[Rejection] = []
        pending = writes
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(min(0.1 * 2**attempt, 5.0))
            with self._translate(f"writing a bulk of {len(pending)} documents"):
                response = self._client.bulk(body=b"".join(w.payload for w in pending), require_alias=True)
            if not response.get("errors"):
                return rejections
            retry: list[tuple[_Write, str]] = []
            for write, item in zip(pending, response["items"]):
                outcome, detail = classify_item(item)
                if outcome is Outcome.RETRY:
                    retry.append((write, detail))
                elif outcome is Outcome.MISSING_INDEX:
                    raise TerminalError(f"search sink {self.name!r}: alias {write.index} is missing ({detail}); restart the sink to recreate it")
                elif outcome is Outcome.REJECTED:
                    e = write.event
                    reason = f"{e.entity} key {e.key_str}: index {write.index} refused the document: {detail}"
                    rejections.append(Rejection(e, reason))
            if not retry:
                return rejections
            log.warning("search sink %s: %d documents throttled, retrying (%s)", self.name, len(retry), retry[0][1])
            pending = [w for w, _ in retry]
        raise TransientError(f"search sink {self.name!r}: {len(pending)} documents still failing after {self.config.max_retries} retries: {retry[0][1]}")

    def _save_offset(self, offset: SinkOffset | None) -> None:
        if offset is None:
            return
        current = self._store.load_sink_offset(self.name)
        if current is None or offset.version > current.version:
            self._store.save_sink_offset(self.name, offset)

    # reading, resetting

    def read_offset(self) -> SinkOffset | None:
        offset = self._store.load_sink_offset(self.name)
        return None if offset is None or offset.version == 0 else offset

    def fetch_rows(self, entity: str) -> dict[str, dict[str, Any]]:
        """Live (not deleted) documents of an entity, keyed by document id, without the sink's fields."""
        from opensearchpy.helpers import scan

        alias = self._indices[entity].alias
        query = {"query": {"bool": {"must_not": {"term": {DELETED_FIELD: True}}}}}
        with self._translate(f"reading {alias}"):
            self._client.indices.refresh(index=alias)
            hits = list(scan(self._client, index=alias, query=query, size=1000))
        return {h["_id"]: {k: v for k, v in h["_source"].items() if not k.startswith("_cdc_")} for h in hits}

    def reset(self) -> None:
        """Delete this sink's indices (every index behind its aliases) and its offset; recreate them empty."""
        from opensearchpy.exceptions import NotFoundError

        with self._translate("resetting"):
            for index in self._indices.values():
                try:
                    behind = list(self._client.indices.get_alias(name=index.alias))
                except NotFoundError:
                    behind = []
                for name in {*behind, index.concrete}:
                    self._client.indices.delete(index=name, ignore_unavailable=True)
        delete = getattr(self._store, "delete_sink_offset", None)
        if delete is not None:
            delete(self.name)
        else:  # the StateStore port has no delete: a zero offset reads as none
            self._store.save_sink_offset(self.name, SinkOffset(version=0, file="", pos=0, ts_ms=0))
        self._floors.clear()
        self.open()

    # errors

    def _translate(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """Client exceptions -> TransientError / TerminalError, with the password never in the message."""
        return _errors().translate(f"search sink {self.name!r} ({self._safe_url}) {doing}", self._secrets, sink=self.name)


@functools.cache
def _errors() -> ErrorTable:
    from opensearchpy import exceptions as ex

    def transient(exc: BaseException, fields: dict[str, Any]) -> bool:
        status = fields["status"]
        return isinstance(exc, ex.ConnectionError) or not isinstance(status, int) or status == 429 or status >= 500

    return ErrorTable(
        catch=ex.TransportError,
        rules=[
            Rule((ex.AuthenticationException, ex.AuthorizationException), TerminalError,
                 "{doing}: {status} {detail}: the credentials in sinks.{sink}.url are refused or lack privileges"),
            Rule(ex.SSLError, TerminalError, "{doing}: TLS failed: {detail}"),
            Rule(transient, TransientError),
            Rule(ex.TransportError, TerminalError, "{doing}: {status} {detail}"),
        ],
        detail=str,
        fields=lambda exc: {"status": getattr(exc, "status_code", None)},
    )


def _parse_url(url: str) -> tuple[str, dict[str, Any], str]:
    """(URL without password, OpenSearch client arguments, password)."""
    url, tls = split_url(url, "https", "search sink url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("search sink url must look like http(s)://[user:password@]host:9200")
    try:
        port = parts.port or 9200
    except ValueError as err:
        raise ConfigError(f"search sink url has a bad port ({err})") from None
    host: dict[str, Any] = {"host": parts.hostname, "port": port, "scheme": parts.scheme}
    if parts.path not in ("", "/"):
        host["url_prefix"] = parts.path
    args: dict[str, Any] = {"hosts": [host], "use_ssl": parts.scheme == "https"}
    if tls is not None:
        args["ssl_context"] = client_context(tls, "search sink url", in_url=True)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if user:
        args["http_auth"] = (user, password)
    userinfo = parts.netloc.rpartition("@")[0].partition(":")[0]
    auth = f"{userinfo}:{quote(password, safe='')}@" if user else ""
    return redact_url(f"{parts.scheme}://{auth}{parts.hostname}:{port}{parts.path.rstrip('/')}"), args, password


def _factory(name: str, config: SinkConfig, context: SinkContext) -> SearchSink:
    assert isinstance(config, SearchSinkConfig)
    return SearchSink(name, config, context)


register_sink("search", SearchSinkConfig, _factory)
