"""The cache sink: canonical rows as Redis values that plain applications read.

Keys, with ``P`` the configured ``key_prefix``:

``<value key>``
    From the entity's template in ``keys`` (default ``{prefix}:{entity}:{key}``; ``{key}`` is the key
    string of :func:`cdc.domain.envelope.key_string`, each key field is also available by name). A JSON string
    (``format: json``, ``GET``) or a hash of field -> JSON-encoded value (``format: hash``, ``HGETALL``).
``P:__v__:<value key>``
    The version of the newest event applied to that value key: ``<19-digit zero-padded version>:<entity>:<key>``.
    A companion key rather than a hash field, so the value stays exactly the row for plain readers and the
    JSON format can carry a version at all. It never expires, a deleted key's (its tombstone) included,
    even when the value does (``ttl_s``): an expired tombstone would let a late replay of an older write
    (a dead letter replayed a week later) bring the deleted row back. Each costs about 100 bytes.
``P:__truncated__:<entity>``
    The entity's floor: the 19-digit version of the newest truncate (op ``t``: TRUNCATE or DROP TABLE at
    the source) applied. The script writes no event below it; applying a truncate raises it first,
    then removes the value and version keys of the entity below it (SCAN, 1,000 keys a script call).
``P:__offsets__``
    Hash, sink name -> ``<19-digit version> <SinkOffset JSON>``.

A batch is one EVALSHA of one Lua script: for each newest event per key it compares the stored version
with the event's as fixed-width strings (Lua numbers are doubles, exact only to 2^53), writes when newer,
then moves the offset forward. ``mode: invalidate`` (cache-aside) never writes values: a newer event
deletes the value key and records its version; an older or repeated event changes nothing, so it cannot
evict a value the application loaded after the newer change.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import string
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, field_validator

from cdc.domain.envelope import ChangeEvent, Op, now_ms
from cdc.domain.errors import ConfigError, TerminalError, TransientError
from cdc.domain.positions import SinkOffset
from cdc.domain.redact import redact_url, url_secrets
from cdc.runtime.tls import redis_arguments
from cdc.sinks.base import Rejection, Sink, SinkConfig, SinkContext, newest_per_key, offset_of, register_sink, split_truncates
from cdc.sinks.errors import ErrorTable, Rule

log = logging.getLogger("cdc.sinks.cache")

DEFAULT_KEY = "{prefix}:{entity}:{key}"
_WIDTH = 19  # digits of 2**63 - 1

# KEYS: offsets hash, then (version key, value key, entity floor key) per event.
# ARGV: sink, offset stamp or '', then per event: stamp, kind (j json | h hash | x remove value),
#       value ttl ms, version ttl ms, n, n payload items.
# Returns {index, error} pairs for events whose version key could not be read.
_SCRIPT = """
local failed = {}
local a = 3
local floors = {}
for k = 2, #KEYS, 3 do
  local vkey, key, fkey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local stamp, kind = ARGV[a], ARGV[a + 1]
  local ttl, vttl, n = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if floors[fkey] == nil then floors[fkey] = redis.call('GET', fkey) or '' end
  local cur = redis.pcall('GET', vkey)
  if type(cur) == 'table' and cur.err then
    failed[#failed + 1] = (k + 1) / 3
    failed[#failed + 1] = cur.err
  elseif (not cur or string.sub(cur, 1, 19) < string.sub(stamp, 1, 19)) and floors[fkey] <= string.sub(stamp, 1, 19) then
    if kind == 'j' then
      if ttl > 0 then redis.call('SET', key, ARGV[a + 5], 'PX', ttl) else redis.call('SET', key, ARGV[a + 5]) end
    else
      redis.call('DEL', key)
      if kind == 'h' and n > 0 then
        for i = a + 5, a + 4 + n, 400 do  -- unpack() is limited by Lua's stack
          redis.call('HSET', key, unpack(ARGV, i, math.min(i + 399, a + 4 + n)))
        end
        if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
      end
    end
    if vttl > 0 then redis.call('SET', vkey, stamp, 'PX', vttl) else redis.call('SET', vkey, stamp) end
  end
  a = a + 5 + n
end
local offset = ARGV[2]
if offset ~= '' then
  local cur = redis.call('HGET', KEYS[1], ARGV[1])
  if not cur or string.sub(cur, 1, 19) < string.sub(offset, 1, 19) then redis.call('HSET', KEYS[1], ARGV[1], offset) end
end
return failed
"""

# KEYS: the entity's floor key. ARGV: the truncate's 19-digit version. Raises the floor; returns the floor now.
_RAISE_FLOOR = """
local cur = redis.call('GET', KEYS[1])
if not cur or cur < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1] end
return cur
"""

# KEYS: version keys. ARGV: entity, 19-digit truncate version, length of the version-key prefix.
# Removes, for each version key of that entity below the version, its value key and itself.
_SWEEP = """
local tag = ':' .. ARGV[1] .. ':'
local plen = tonumber(ARGV[3])
local removed = 0
for _, vkey in ipairs(KEYS) do
  local cur = redis.call('GET', vkey)
  if cur and string.sub(cur, 20, 19 + #tag) == tag and string.sub(cur, 1, 19) < ARGV[2] then
    redis.call('UNLINK', string.sub(vkey, plen + 1), vkey)
    removed = removed + 1
  end
end
return removed
"""


class CacheSinkConfig(SinkConfig):
    type: Literal["cache"] = "cache"
    url: SecretStr = Field(
        description="redis://[:password@]host:port/db, or with TLS rediss://...?tls_ca=/ca.pem[&tls_cert=...&tls_key=...]"
        "[&tls_verify=require|verify-ca|verify-identity] (default verify-identity)."
    )
    key_prefix: str = Field("cdc", min_length=1)
    keys: dict[str, str] = Field(default_factory=dict, description=f"Entity -> value key template (default {DEFAULT_KEY!r}).")
    format: Literal["json", "hash"] = "json"
    fields: dict[str, list[str]] = Field(default_factory=dict, description="Entity -> fields to keep (default: all).")
    ttl_s: int | None = Field(None, ge=1, description="Expiry of value keys (default: none).")
    tombstone_ttl_s: int | None = Field(
        None, ge=1, description="No longer used: a deleted key's version is kept without expiry, so that a late "
        "replay cannot resurrect it (accepted, with a warning, so that existing configurations still load).")
    mode: Literal["upsert", "invalidate"] = "upsert"

    @field_validator("url")
    @classmethod
    def _tls_in_url(cls, url: SecretStr) -> SecretStr:
        redis_arguments(url.get_secret_value(), "cache sink url")
        return url

    @field_validator("keys")
    @classmethod
    def _templates_parse(cls, keys: dict[str, str]) -> dict[str, str]:
        for entity, template in keys.items():
            try:
                names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
            except ValueError as err:
                raise ValueError(f"key template of {entity!r} ({template!r}) does not parse: {err}") from None
            if any(not name or name.isdigit() for name in names):
                raise ValueError(f"key template of {entity!r} ({template!r}): name every field, e.g. {{id}}")
        return keys


class CacheSink(Sink):
    def __init__(self, name: str, config: CacheSinkConfig, context: SinkContext) -> None:
        self.name = name
        self.config = config
        self.context = context
        self._client: Any = None
        self._script: Any = None
        self._safe_url = redact_url(config.url.get_secret_value())
        self._secrets = url_secrets(config.url.get_secret_value())
        prefix = config.key_prefix
        self._versions = f"{prefix}:__v__:"
        self._floors = f"{prefix}:__truncated__:"
        self._offsets = f"{prefix}:__offsets__"

    # lifecycle

    def open(self) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        if self._client is None:
            url, tls = redis_arguments(self.config.url.get_secret_value(), f"sinks.{self.name}.url")
            self._client = redis.Redis.from_url(
                url,
                **tls,
                socket_connect_timeout=5,
                socket_timeout=30,
                health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
                client_name=f"cdc-sink-{self.name}",
            )
            self._script = self._client.register_script(_SCRIPT)
            self._raise_floor = self._client.register_script(_RAISE_FLOOR)
            self._sweep = self._client.register_script(_SWEEP)
        with self._translate("connecting"):
            self._client.ping()
            self._script.sha = self._client.script_load(_SCRIPT)
        if self.config.tombstone_ttl_s is not None:
            log.warning("cache sink %s: tombstone_ttl_s is no longer used and can be removed: deleted keys keep their "
                        "version without expiry, so that a late replay of an older write cannot bring them back", self.name)
        log.info("cache sink %s open on %s, prefix %s, format %s, mode %s",
                 self.name, self._safe_url, self.config.key_prefix, self.config.format, self.config.mode)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # applying

    def apply(self, events: Sequence[ChangeEvent]) -> list[Rejection]:
        if not events:
            return []
        if self._client is None:
            raise TerminalError(f"cache sink {self.name!r}: apply() before open()")
        truncates, _ = split_truncates(events)
        newest = newest_per_key(events)
        rejections: list[Rejection] = []
        for entity, truncate in truncates.items():
            if "*" not in self.config.entities and entity not in self.config.entities:
                rejections.append(Rejection(truncate, f"entity {entity!r} is not consumed by cache sink {self.name!r}"))
            else:
                self._truncate(truncate)
        sent: list[ChangeEvent] = []
        keys: list[str] = [self._offsets]
        offset = offset_of(events, now_ms())
        args: list[Any] = [self.name, f"{offset.version:0{_WIDTH}d} {offset.model_dump_json()}"]
        for event in newest:
            try:
                value_key, item = self._encode(event)
            except _Refused as err:
                rejections.append(Rejection(event, f"{event.entity} key {event.key_str}: {err}"))
                continue
            sent.append(event)
            keys += (self._versions + value_key, value_key, self._floors + event.entity)
            args += item
        with self._translate(f"applying a batch of {len(events)} events"):
            failed = self._script(keys=keys, args=args)
        for index, error in zip(failed[::2], failed[1::2]):
            event = sent[int(index) - 1]
            detail = error.decode() if isinstance(error, bytes) else str(error)
            rejections.append(Rejection(event, f"{event.entity} key {event.key_str}: Redis refused its version key: {detail}"))
        return rejections

    def _truncate(self, event: ChangeEvent) -> None:
        """Raise the entity's floor, then remove its keys below it. The floor first: from then on no
        older write lands, and SCAN returns every key that existed when it started. Swept again on a
        redelivery (the floor equal to the version): a worker that died mid-sweep leaves none behind."""
        version = f"{event.version:0{_WIDTH}d}"
        with self._translate(f"applying the truncate of {event.entity} at version {event.version}"):
            floor = self._raise_floor(keys=[self._floors + event.entity], args=[version])
            if (floor.decode() if isinstance(floor, bytes) else str(floor)) > version:
                return  # a newer truncate is applied: its own sweep removes more than this one would
            removed = 0
            for chunk in self._scan_chunks(_glob_escape(self._versions) + "*"):
                removed += self._sweep(keys=chunk, args=[event.entity, version, len(self._versions)])
        log.info("cache sink %s: truncate of %s at version %s applied, %d keys removed", self.name, event.entity,
                 event.version, removed, extra={"entity": event.entity})

    def _encode(self, event: ChangeEvent) -> tuple[str, list[Any]]:
        """The value key and the script arguments of one event; raises _Refused with the reason."""
        config = self.config
        if "*" not in config.entities and event.entity not in config.entities:
            raise _Refused(f"entity {event.entity!r} is not consumed by cache sink {self.name!r}")
        template = config.keys.get(event.entity, DEFAULT_KEY)
        try:
            value_key = template.format(**{**event.key, "prefix": config.key_prefix, "entity": event.entity, "key": event.key_str})
        except KeyError as err:
            raise _Refused(f"key template {template!r} names field {err.args[0]!r}, which the key {sorted(event.key)} lacks") from None
        except (ValueError, IndexError, TypeError) as err:
            raise _Refused(f"key template {template!r} cannot format key {event.key}: {err}") from None
        stamp = f"{event.version:0{_WIDTH}d}:{event.entity}:{event.key_str}"
        ttl_ms = (config.ttl_s or 0) * 1000
        live_ms = 0  # versions never expire (module docstring)
        if event.op is Op.DELETE:
            return value_key, [stamp, "x", 0, 0, 0]
        if config.mode == "invalidate":
            return value_key, [stamp, "x", 0, live_ms, 0]
        row = event.after or {}
        keep = config.fields.get(event.entity)
        if keep is not None:
            row = {f: row[f] for f in keep if f in row}
        try:
            if config.format == "json":
                return value_key, [stamp, "j", ttl_ms, live_ms, 1, orjson.dumps(row)]
            pairs = [part for f, v in row.items() for part in (f, orjson.dumps(v))]
        except TypeError as err:
            raise _Refused(f"value is not JSON-encodable: {err}") from None
        return value_key, [stamp, "h", ttl_ms, live_ms, len(pairs), *pairs]

    # reading

    def read_offset(self) -> SinkOffset | None:
        with self._translate("reading the sink offset"):
            raw = self._client.hget(self._offsets, self.name)
        if raw is None:
            return None
        return SinkOffset.model_validate_json(raw.split(b" ", 1)[1])

    def fetch_rows(self, entity: str) -> dict[str, dict[str, Any]]:
        """Live values of an entity, keyed by key string (for tests and verification)."""
        found: list[tuple[str, bytes]] = []
        with self._translate(f"reading {entity}"):
            for chunk in self._scan_chunks(_glob_escape(self._versions) + "*"):
                for vkey, stamp in zip(chunk, self._client.mget(chunk)):
                    if stamp is None:
                        continue
                    _, stamp_entity, key = stamp.decode().split(":", 2)
                    if stamp_entity == entity:
                        found.append((key, vkey[len(self._versions):]))
            pipe = self._client.pipeline(transaction=False)
            for _, value_key in found:
                pipe.get(value_key) if self.config.format == "json" else pipe.hgetall(value_key)
            values = pipe.execute()
        rows = {}
        for (key, _), value in zip(found, values):
            if value is None or value == {}:
                continue
            if self.config.format == "json":
                rows[key] = orjson.loads(value)
            else:
                rows[key] = {f.decode(): orjson.loads(v) for f, v in value.items()}
        return rows

    def reset(self) -> None:
        """Delete every key under the prefix, the value keys the versions point at, and the offsets."""
        with self._translate("resetting"):
            for chunk in self._scan_chunks(_glob_escape(self.config.key_prefix) + ":*"):
                values = [k[len(self._versions):] for k in chunk if k.startswith(self._versions)]
                self._client.unlink(*chunk, *values)

    def _scan_chunks(self, pattern: str):
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 1000:
                yield [k.decode() for k in batch]
                batch = []
        if batch:
            yield [k.decode() for k in batch]

    # errors

    def _translate(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return _errors().translate(f"cache sink {self.name!r} ({self._safe_url}) {doing}", self._secrets)


class _Refused(ValueError):
    pass


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


_BUSY = "BUSY"  # a long script is running; redis-py has no class for this reply


@functools.cache
def _errors() -> ErrorTable:
    """redis-py exceptions -> TransientError (retry later) or TerminalError (stop), never showing the password."""
    import redis.exceptions as rx

    return ErrorTable(
        catch=rx.RedisError,
        rules=[
            Rule((rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError), TerminalError,
                 "{doing}: {detail} (check the credentials and ACL of the cache URL)"),
            Rule((rx.ConnectionError, rx.TimeoutError, rx.OutOfMemoryError, rx.ReadOnlyError, rx.TryAgainError,
                  rx.ClusterDownError), TransientError),
            Rule(lambda exc, fields: fields["detail"].startswith(_BUSY), TransientError),
        ],
        otherwise=TerminalError,
    )


def _factory(name: str, config: SinkConfig, context: SinkContext) -> CacheSink:
    if not isinstance(config, CacheSinkConfig):
        raise ConfigError(f"sink {name!r}: expected a cache sink config, got {type(config).__name__}")
    return CacheSink(name, config, context)


register_sink("cache", CacheSinkConfig, _factory)
