"""Canonical values: the Python values python-mysql-replication (binlog) and a PyMySQL SELECT
(snapshot) give for the same stored value map to one canonical value (docs/types.md)."""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import pytest

from cdc.mapping import FieldSpec, MappingValueError, convert

POINT = struct.pack("<I", 4326) + b"\x01" + struct.pack("<Idd", 1, 1.5, 2.0)

# (field spec, binlog value, SELECT value, canonical)
CASES = [
    ({"type": "bigint_unsigned"}, 18446744073709551615, 18446744073709551615, 18446744073709551615),
    ({"type": "integer"}, -9223372036854775808, -9223372036854775808, -9223372036854775808),
    ({"type": "decimal"}, Decimal("1.500000000000000000000000000000"), Decimal("1.500000000000000000000000000000"),
     "1.500000000000000000000000000000"),
    ({"type": "decimal"}, Decimal("0E-30"), Decimal("0E-30"), "0.000000000000000000000000000000"),
    ({"type": "float", "column_type": "float"}, 3.4000000953674316, 3.4, 3.4),
    ({"type": "float"}, 0.1, 0.1, 0.1),
    ({"type": "date"}, None, "0000-00-00", None),
    ({"type": "date"}, None, "2024-00-10", None),
    ({"type": "datetime"}, dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 1, 2, 3, 4, 5, 123456), "2024-01-02T03:04:05.123456"),
    ({"type": "datetime"}, None, "0000-00-00 00:00:00", None),
    ({"type": "timestamp"}, dt.datetime(2038, 1, 19, 3, 14, 7, 999999), dt.datetime(2038, 1, 19, 3, 14, 7, 999999), "2038-01-19T03:14:07.999999Z"),
    ({"type": "timestamp"}, dt.datetime(1970, 1, 1), "0000-00-00 00:00:00", None),
    ({"type": "timestamp", "column_type": "datetime"}, dt.datetime(2024, 7, 1, 12), dt.datetime(2024, 7, 1, 12), "2024-07-01T12:00:00Z"),
    ({"type": "time"}, dt.timedelta(days=-35, seconds=3601), dt.timedelta(days=-35, seconds=3601), "-838:59:59"),
    ({"type": "time"}, dt.timedelta(days=1, seconds=3600, microseconds=500000), dt.timedelta(days=1, seconds=3600, microseconds=500000), "25:00:00.500000"),
    ({"type": "integer", "column_type": "year"}, 1900, 0, None),
    ({"type": "integer", "column_type": "year"}, 2155, 2155, 2155),
    ({"type": "string"}, "héllo 😀", "héllo 😀", "héllo 😀"),
    ({"type": "bytes", "column_type": "binary(4)"}, b"\x01\x02", b"\x01\x02\x00\x00", "AQIAAA=="),
    ({"type": "bytes"}, b"\xde\xad\xbe\xef", b"\xde\xad\xbe\xef", "3q2+7w=="),
    ({"type": "json", "column_type": "set"}, {"z", "x"}, "x,z", ["x", "z"]),
    ({"type": "json", "column_type": "set"}, None, "", None),
    ({"type": "integer", "column_type": "bit(9)"}, "100000001", b"\x01\x01", 257),
    ({"type": "boolean", "column_type": "bit(1)"}, "0", b"\x00", False),
    ({"type": "json"}, '{"ключ": [1, 2.5]}', '{"ключ": [1, 2.5]}', {"ключ": [1, 2.5]}),
    ({"type": "json"}, {b"k": [b"v", 1]}, '{"k": ["v", 1]}', {"k": ["v", 1]}),  # MySQL binary JSON from the binlog
    ({"type": "json", "column_type": "geometry"}, POINT, POINT, {"type": "Point", "coordinates": [1.5, 2.0], "srid": 4326}),
    ({"type": "bytes"}, POINT, POINT, "5hAAAAEBAAAAAAAAAAAA+D8AAAAAAAAAQA=="),
    ({"type": "string", "labels": {"A": "active"}}, "A", "A", "active"),
]


@pytest.mark.parametrize("spec, binlog, select, canonical", CASES, ids=[f"{c[0]}-{c[3]!r}"[:60] for c in CASES])
def test_binlog_and_select_values_have_one_canonical_form(spec, binlog, select, canonical):
    field = FieldSpec(column="c", **spec)
    assert convert(field, binlog) == canonical
    assert convert(field, select) == canonical


def test_datetime_as_timestamp_uses_the_source_zone_across_dst():
    field = FieldSpec(column="c", type="timestamp", column_type="datetime")
    assert convert(field, dt.datetime(2024, 1, 15, 12), zone="Europe/Paris") == "2024-01-15T11:00:00Z"
    assert convert(field, dt.datetime(2024, 7, 15, 12), zone="Europe/Paris") == "2024-07-15T10:00:00Z"


@pytest.mark.parametrize("spec, value, problem", [
    ({"type": "integer"}, 18446744073709551615, "signed 64-bit"),
    ({"type": "integer"}, "12a", "cannot convert to integer"),
    ({"type": "decimal"}, "12,5", "cannot convert to decimal"),
    ({"type": "string"}, b"caf\xe9", "invalid UTF-8"),
    ({"type": "json"}, "{nope", "not valid JSON"),
    ({"type": "boolean"}, "maybe", "not a boolean"),
    ({"type": "string", "labels": {"A": "active"}, "unknown_label": "error"}, "Q", "unknown code"),
])
def test_unconvertible_values_raise_naming_field_column_value_and_problem(spec, value, problem):
    with pytest.raises(MappingValueError) as err:
        convert(FieldSpec(column="col", **spec), value, "fld")
    assert problem in str(err.value) and "field fld (column col)" in str(err.value) and repr(value)[:10] in str(err.value)


def test_text_fixes():
    assert convert(FieldSpec(column="c", type="string", transforms=["fix_mojibake"]), "ZoÃ« MÃ¼ller") == "Zoë Müller"
    assert convert(FieldSpec(column="c", type="string", transforms=["fix_mojibake"]), "Zoë") == "Zoë"
    assert convert(FieldSpec(column="c", type="date", format="%d/%m/%Y"), "31/02/1980") is None  # invalid: unknown
    assert convert(FieldSpec(column="c", type="string", transforms=["trim", "lower"]), "  A@B.ORG ") == "a@b.org"
