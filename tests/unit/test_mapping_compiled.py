"""The mapper's compiled fast path (cdc.mapping.compiled) gives what the general converters give.

For every field type, transform chain, column hint and label setting, and for values of every Python
class the binlog library or PyMySQL hands over (and some they never do), the compiled converter of a
one-field row either returns exactly (value and type) what ``compile_field`` returns, or raises where
it raises; ``map_row`` then reports the general converter's error.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from decimal import Decimal

import pytest

from cdc.mapping import FieldSpec, Mapper
from cdc.mapping.compiled import compile_row
from cdc.mapping.mapper import RowMappingError, _plan
from cdc.mapping.model import EntityMapping
from cdc.mapping.values import compile_field

VALUES = [
    None, "", " ", "0", "1", "yes", " Abc  Déf ", "ZoÃ«", "12.50", " 42 ", "abc", "A", "Z", "2020-01-02",
    "2020-01-02 03:04:05", "0000-00-00", "0000-00-00 00:00:00", "31/12/1980", "1,2", "1e3",
    0, 1, -1, 7, 1900, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, True, False,
    0.0, 1.5, -2.25, 3.4000000953674316, math.nan, math.inf,
    Decimal("0"), Decimal("0.00"), Decimal("12.50"), Decimal("-1E+3"), Decimal("0E-30"), Decimal("NaN"),
    Decimal("Infinity"), Decimal("sNaN"),
    dt.date(2020, 1, 2), dt.datetime(2020, 1, 2, 3, 4, 5), dt.datetime(2020, 1, 2, 3, 4, 5, 120000),
    dt.datetime(1970, 1, 1), dt.datetime(2024, 7, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.timedelta(hours=25, seconds=1), dt.time(1, 2, 3), b"abc", b"\xff\x00", bytearray(b"x"), ["a", "b"], {"b", "a"},
]
TRANSFORM_CHAINS = [
    [], ["trim"], ["trim", "lower", "null_if_empty"], ["trim", "collapse_spaces"], ["upper"], ["null_if_zero"],
    ["null_if_empty", "trim", "upper"], ["null_if_zero", "lower", "null_if_empty"], ["fix_mojibake", "trim"],
]
TYPES = ["string", "integer", "bigint_unsigned", "decimal", "float", "boolean", "date", "datetime", "timestamp",
         "time", "json", "bytes"]
COLUMN_TYPES = [None, "varchar(20)", "float", "binary(4)", "bit(8)", "set", "year", "datetime", "date"]


def _specs():
    for kind, transforms, column_type in itertools.product(TYPES, TRANSFORM_CHAINS, COLUMN_TYPES):
        yield {"column": "c", "type": kind, "transforms": transforms, "column_type": column_type}
    for kind in ("date", "datetime", "timestamp"):
        yield {"column": "c", "type": kind, "format": "%d/%m/%Y"}
    for unknown in ("keep", "null", "error"):
        for transforms in ([], ["trim", "upper"], ["null_if_empty"]):
            yield {"column": "c", "type": "string", "labels": {"A": "active", "0": "zero"}, "unknown_label": unknown,
                   "transforms": transforms}
        yield {"column": "c", "type": "integer", "labels": {"1": "one"}, "unknown_label": unknown}


def _outcome(fn):
    try:
        value = fn()
    except Exception:  # noqa: BLE001 - only whether it raised is compared
        return "raised"
    return "nan" if isinstance(value, float) and math.isnan(value) else repr(value)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Zurich"])
def test_the_compiled_converter_gives_what_the_general_converter_gives(zone: str) -> None:
    compared = inline = 0
    for raw in _specs():
        spec = FieldSpec(**raw)
        general = compile_field(spec, "f")
        convert_row = compile_row([("f", "c", spec, general)])
        inline += "elif v.__class__" in convert_row.source
        for value in VALUES:
            expected = _outcome(lambda: general(value, zone))
            got = _outcome(lambda: convert_row({"c": value}, zone)["f"])
            assert got == expected, f"{raw} on {value!r} in {zone}: compiled {got}, general {expected}"
            compared += 1
    assert compared > 20_000
    assert inline > 300  # most specs do take an inline case: the comparison is not only of the fallback


def test_text_dates_kept_from_one_row_to_the_next_depend_on_the_zone_too() -> None:
    """The results for dates as text are kept (they repeat); one compiled mapping serves every zone."""
    for raw in ({"column": "c", "type": "timestamp", "column_type": "datetime"}, {"column": "c", "type": "datetime"},
                {"column": "c", "type": "date", "format": "%d/%m/%Y"}):
        spec = FieldSpec(**raw)
        general = compile_field(spec, "f")
        convert_row = compile_row([("f", "c", spec, general)])
        for _ in range(2):
            for zone, text in itertools.product(["UTC", "Europe/Zurich", "America/New_York"],
                                                ["2024-07-01 12:00:00", "31/12/1980", "0000-00-00 00:00:00", "junk"]):
                assert _outcome(lambda: convert_row({"c": text}, zone)["f"]) == _outcome(lambda: general(text, zone))
    timestamp = FieldSpec(column="c", type="timestamp", column_type="datetime")
    zurich = compile_row([("f", "c", timestamp, compile_field(timestamp, "f"))])
    assert [zurich({"c": "2024-07-01 12:00:00"}, zone)["f"] for zone in ("Europe/Zurich", "UTC")] == [
        "2024-07-01T10:00:00Z", "2024-07-01T12:00:00Z"]


def _member_like() -> EntityMapping:
    return EntityMapping.model_validate({
        "entity": "thing", "source": {"db": "d", "table": "t"}, "key": ["id"],
        "fields": {
            "id": {"column": "id", "type": "integer"},
            "name": {"column": "a'); import os  #\n", "type": "string", "transforms": ["trim"]},
            "status": {"column": "status", "type": "string", "labels": {"A": "active"}, "unknown_label": "error"},
        },
        "deleted_when": {"column": "gone", "equals": 1},
    })


def test_column_and_field_names_are_constants_not_code() -> None:
    mapping = _member_like()
    source = _plan(mapping).convert_row.source
    assert "import os" not in source and "status" not in source and "active" not in source
    mapped = Mapper.map_row(mapping, {"id": 1, "a'); import os  #\n": " x ", "status": "A", "gone": 0})
    assert mapped.values == {"id": 1, "name": "x", "status": "active"}


def test_a_column_only_a_condition_reads_must_still_be_in_the_row() -> None:
    with pytest.raises(RowMappingError, match=r"column\(s\) \['gone'\].*not in the source row"):
        Mapper.map_row(_member_like(), {"id": 1, "a'); import os  #\n": "x", "status": "A"})


def test_a_row_the_compiled_path_cannot_convert_gets_the_general_error() -> None:
    with pytest.raises(RowMappingError, match=r"table d\.t, entity thing, key \{'id': 1\}: field status \(column status\): "
                                              r"unknown code"):
        Mapper.map_row(_member_like(), {"id": 1, "a'); import os  #\n": "x", "status": "Q", "gone": 0})
    with pytest.raises(RowMappingError, match="field id .*signed 64-bit range"):
        Mapper.map_row(_member_like(), {"id": 2**63, "a'); import os  #\n": "x", "status": "A", "gone": 0})
