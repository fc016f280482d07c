"""The sink contract suite: one set of tests, parametrised over every sink by a harness each.

Adding a sink to the suite
--------------------------
Write ``tests/contract/harness_<name>.py`` with a module-level function::

    def make_harness(request: pytest.FixtureRequest) -> Harness: ...

This conftest finds the files by glob, parametrises the ``harness`` fixture over them (test id =
``<name>``), imports each file only when its tests run, and calls ``cleanup()`` after every test.
``request`` is the fixture request: get services and names with ``request.getfixturevalue(...)``
(``redis_url``, ``pg_url``, ``amqp_url``, ``unique_name``) and the entity schemas with
``request.getfixturevalue("contract_context")`` (a :class:`SinkContext`; the schemas are also the
module attributes ``CUSTOMER`` and ``CONTEXT`` here). A harness whose service cannot exist on this
machine may ``pytest.skip(reason)``; memory, crm and cache always run.

The object returned (see :class:`Harness`) has:

``name``
    The sink type name (``"crm"``).
``sink``
    A sink built through the registry, ``get_sink_type(t).factory(name, config, context)``, and
    already opened, on a store of its own (unique schema, key prefix, index prefix...).
``rows(entity) -> dict[key_str, dict]``
    The live (not deleted) rows as stored, in canonical JSON form (decimal as string, timestamp
    as ``...Z`` text, json as the value), keyed by :func:`cdc.domain.envelope.key_string`.
``reopen()``
    Close the sink and set ``sink`` to a fresh instance on the same store: a process restart.
``bad_event(factory) -> ChangeEvent | None``
    A well-formed event that this target refuses (``apply`` must return exactly one
    :class:`Rejection` for it), built with the ``event_factory`` it is given; ``None`` if the
    target accepts every well-formed event.
``cleanup()``
    Close the sink (it may already be closed: a SinkWorker closes the sink it ran) and delete
    the store.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import pytest

from cdc.domain.entity_schema import EntitySchema, FieldType
from cdc.domain.envelope import ChangeEvent
from cdc.sinks.base import Sink, SinkContext

HERE = Path(__file__).resolve().parent

CUSTOMER = EntitySchema(
    name="customer",
    key=("id",),
    fields={
        "id": FieldType.INTEGER,
        "name": FieldType.STRING,
        "balance": FieldType.DECIMAL,
        "tags": FieldType.JSON,
        "updated_at": FieldType.TIMESTAMP,
    },
)
CONTEXT = SinkContext(entities={CUSTOMER.name: CUSTOMER})


class Harness(Protocol):
    name: str
    sink: Sink

    def rows(self, entity: str) -> dict[str, dict[str, Any]]: ...

    def reopen(self) -> None: ...

    def bad_event(self, factory: Any) -> ChangeEvent | None: ...

    def cleanup(self) -> None: ...


def harness_names() -> list[str]:
    return sorted(path.stem.removeprefix("harness_") for path in HERE.glob("harness_*.py"))


def _load(name: str) -> Any:
    path = HERE / f"harness_{name}.py"
    spec = importlib.util.spec_from_file_location(f"cdc_contract_harness_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def contract_context() -> SinkContext:
    return CONTEXT


@pytest.fixture(params=harness_names())
def harness(request: pytest.FixtureRequest) -> Harness:
    made = _load(request.param).make_harness(request)
    assert made.name == request.param, f"harness_{request.param}.py builds a harness named {made.name!r}"
    yield made
    made.cleanup()
