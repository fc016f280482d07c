"""Contract harness for the CRM sink: PostgreSQL, a schema of its own per test."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from cdc.domain.envelope import ChangeEvent, Op
from cdc.sinks.base import Sink, SinkContext, get_sink_type


class CrmHarness:
    name = "crm"

    def __init__(self, pg_url: str, schema: str, context: SinkContext) -> None:
        self.pg_url, self.schema, self.context = pg_url, schema, context
        self.sink: Sink = self._build()

    def _build(self) -> Sink:
        sink_type = get_sink_type("crm")
        config = sink_type.config_model(url=SecretStr(self.pg_url), schema_name=self.schema)
        sink = sink_type.factory("contract-crm", config, self.context)
        sink.open()
        return sink

    def rows(self, entity: str) -> dict[str, dict[str, Any]]:
        return self.sink.fetch_rows(entity)

    def reopen(self) -> None:
        self.sink.close()
        self.sink = self._build()

    def bad_event(self, factory: Any) -> ChangeEvent:
        """A word in a decimal column: PostgreSQL numeric cannot hold it."""
        after = {"id": 987_654, "name": "bad", "balance": "twelve", "tags": [], "updated_at": None}
        return factory("customer", 987_654, None, Op.CREATE, after=after)

    def cleanup(self) -> None:
        self.sink.close()
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def make_harness(request: pytest.FixtureRequest) -> CrmHarness:
    return CrmHarness(
        request.getfixturevalue("pg_url"), request.getfixturevalue("unique_name"), request.getfixturevalue("contract_context")
    )
