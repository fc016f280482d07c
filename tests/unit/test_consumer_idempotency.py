"""The consumers' idempotency stores honour truncates: after one, older events of the entity are seen."""

from __future__ import annotations

import pytest

from cdc.consumer.idempotency import MemoryIdempotencyStore, SqlIdempotencyStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryIdempotencyStore()
        return
    made = SqlIdempotencyStore(f"sqlite:///{tmp_path}/seen.db", namespace="team")
    yield made
    made.close()


def test_after_a_truncate_older_events_of_the_entity_are_seen_newer_ones_not(store, event_factory):
    store.record("member", "1", 10)
    truncate = event_factory.truncate("member", version=20)
    assert not store.seen("member", truncate.key_str, truncate.version)
    store.record("member", truncate.key_str, truncate.version)
    assert store.seen("member", truncate.key_str, truncate.version)  # the truncate redelivered
    assert store.seen("member", "1", 15) and store.seen("member", "2", 19)  # older: a redelivery, a late replay
    assert not store.seen("member", "2", 21) and not store.seen("order", "2", 5)  # newer, or another entity
