"""Contract harness for the search sink: osmem-server (or OPENSEARCH_URL), indices under a unique prefix.

Protocol (tests/contract/conftest.py): ``make_harness(request) -> Harness`` with ``name``, ``sink``
(built through the registry and opened), ``rows(entity)``, ``reopen()``, ``bad_event(factory)``
and ``cleanup()``. The offset lives in a SQLite state store of its own, so ``reopen()`` finds it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cdc.domain.entity_schema import EntitySchema, FieldType
from cdc.domain.envelope import ChangeEvent, Op
from cdc.sinks.base import Sink, SinkContext, get_sink_type

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for search_server
import search_server  # noqa: E402

# Field types whose mapping parses the value: a word where a number/date/boolean belongs is refused.
_STRICT_TYPES = (FieldType.INTEGER, FieldType.DATE, FieldType.TIMESTAMP, FieldType.DATETIME, FieldType.FLOAT, FieldType.BOOLEAN)


def _contract_entities(request: pytest.FixtureRequest) -> dict[str, EntitySchema]:
    """The entity schemas the contract conftest defines (module attributes: EntitySchema or SinkContext)."""
    here = Path(__file__).resolve().parent
    found: dict[str, EntitySchema] = {}
    for plugin in request.config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path is None or Path(path).resolve() != here / "conftest.py":
            continue
        for value in vars(plugin).values():
            if isinstance(value, EntitySchema):
                found[value.name] = value
            elif isinstance(value, SinkContext):
                found.update(value.entities)
    if not found:
        raise RuntimeError("harness_search: tests/contract/conftest.py defines no EntitySchema")
    return found


class SearchHarness:
    name = "search"

    def __init__(self, entities: dict[str, EntitySchema]) -> None:
        self.entities = entities
        self._dir = tempfile.mkdtemp(prefix="cdc-contract-search-")
        self._prefix = f"contract-{uuid.uuid4().hex[:10]}"
        self.sink: Sink = self._build()

    def _build(self) -> Sink:
        sink_type = get_sink_type("search")
        config = sink_type.config_model(
            type="search",
            url=SecretStr(search_server.url()),
            index_prefix=self._prefix,
            state_url=f"sqlite:///{self._dir}/state.db",
        )
        sink = sink_type.factory("contract-search", config, SinkContext(entities=self.entities))
        sink.open()
        return sink

    def rows(self, entity: str) -> dict[str, dict[str, Any]]:
        return self.sink.fetch_rows(entity)

    def reopen(self) -> None:
        self.sink.close()
        self.sink = self._build()

    def bad_event(self, factory: Any) -> ChangeEvent | None:
        """An insert with a word in a numeric/date/boolean field: the strict mapping refuses it."""
        for schema in self.entities.values():
            field = next((f for f, t in schema.fields.items() if t in _STRICT_TYPES and f not in schema.key), None)
            if field is None:
                continue
            key = {k: 987_654_321 if schema.fields[k] is FieldType.INTEGER else "bad-key" for k in schema.key}
            return factory(schema.name, key, None, Op.CREATE, after={**key, field: "not-a-value"})
        return None

    def cleanup(self) -> None:
        from opensearchpy import OpenSearch

        self.sink.close()
        client = OpenSearch(hosts=[search_server.url()])
        try:
            for index in client.indices.get(index=f"{self._prefix}-*"):
                client.indices.delete(index=index)
        finally:
            client.close()
            shutil.rmtree(self._dir, ignore_errors=True)


def make_harness(request: pytest.FixtureRequest) -> SearchHarness:
    return SearchHarness(_contract_entities(request))
