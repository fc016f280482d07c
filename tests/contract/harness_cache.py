"""Contract harness for the cache sink: Redis, a key prefix of its own per test."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from cdc.domain.envelope import ChangeEvent, Op
from cdc.sinks.base import Sink, SinkContext, get_sink_type

# Key fields by name in the template: an event whose key lacks ``id`` cannot be given a Redis key.
TEMPLATE = "{prefix}:customer:{id}"


class CacheHarness:
    name = "cache"

    def __init__(self, redis_url: str, prefix: str, context: SinkContext) -> None:
        self.redis_url, self.prefix, self.context = redis_url, prefix, context
        self.sink: Sink = self._build()

    def _build(self) -> Sink:
        sink_type = get_sink_type("cache")
        # A short tombstone_ttl_s as configurations had it: no tombstone may expire whatever it says.
        config = sink_type.config_model(url=SecretStr(self.redis_url), key_prefix=self.prefix, keys={"customer": TEMPLATE},
                                        tombstone_ttl_s=60)
        sink = sink_type.factory("contract-cache", config, self.context)
        sink.open()
        return sink

    def rows(self, entity: str) -> dict[str, dict[str, Any]]:
        return self.sink.fetch_rows(entity)

    def reopen(self) -> None:
        self.sink.close()
        self.sink = self._build()

    def expire_tombstones(self) -> None:
        """As if every expiry under the prefix had passed (a tombstone_ttl_s of a day, a replay a week later)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                if client.pttl(key) > 0:
                    client.delete(key)
        finally:
            client.close()

    def bad_event(self, factory: Any) -> ChangeEvent:
        return factory("customer", {"customer_no": 987_654}, None, Op.CREATE, after={"customer_no": 987_654, "name": "bad"})

    def cleanup(self) -> None:
        self.sink.close()
        sink = self._build()  # a fresh connection: the one under test may be closed or broken
        try:
            sink.reset()
        finally:
            sink.close()


def make_harness(request: pytest.FixtureRequest) -> CacheHarness:
    prefix = f"contract:{request.getfixturevalue('unique_name')}"
    return CacheHarness(request.getfixturevalue("redis_url"), prefix, request.getfixturevalue("contract_context"))
