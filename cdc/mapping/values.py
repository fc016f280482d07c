"""One source value -> its canonical JSON form (documented in docs/types.md). Pure.

Inputs come from python-mysql-replication (binlog) or from a PyMySQL SELECT (snapshots, charset
utf8mb4, session time zone UTC); both give the same canonical value. Zero and invalid dates are
unknown (null), never an error; a value that cannot be converted raises MappingValueError.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import struct
import zoneinfo
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson

from cdc.domain.entity_schema import FieldType
from cdc.mapping.columns import ColumnHint
from cdc.mapping.geometry import geojson
from cdc.mapping.transforms import TRANSFORMS

_EPOCH = dt.datetime(1970, 1, 1)  # python-mysql-replication's rendering of a zero TIMESTAMP
_I64 = (-(2**63), 2**63 - 1)
_TRUE = {"1", "y", "yes", "true", "t", "on"}
_FALSE = {"", "0", "n", "no", "false", "f", "off"}


class MappingValueError(ValueError):
    """A value the mapping cannot convert; names the field, the column, the value and the problem."""

    def __init__(self, problem: str, field: str = "?", column: str | None = None, value: Any = None) -> None:
        self.problem, self.field, self.column, self.value = problem, field, column, value
        where = f"field {field}" + (f" (column {column})" if column else "")
        super().__init__(f"{where}: {problem}: value {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def convert(spec: Any, value: Any, field: str = "?", zone: str = "UTC") -> Any:
    """Canonical value of ``value`` for the field ``spec`` (a FieldSpec)."""
    return compile_field(spec, field)(value, zone)


def compile_field(spec: Any, field: str = "?") -> Callable[[Any, str], Any]:
    """``convert`` for one field, with everything the spec decides looked up once: the mapper calls
    it for every column of every row, where pydantic attribute reads would cost a third of its time."""
    hint: ColumnHint | None = spec.hint
    keeps_bytes = spec.type in (FieldType.BYTES, FieldType.JSON)
    transforms = tuple(TRANSFORMS[name] for name in spec.transforms)
    labelled = spec.labels is not None
    converter = _CONVERTERS[spec.type]
    column, kind = spec.column, spec.type.value

    def run(value: Any, zone: str = "UTC") -> Any:
        raw = value
        try:
            if value is None:
                if not transforms:
                    return None
            elif hint is not None:
                value = _normalise(hint, value)
            if not keeps_bytes and isinstance(value, (bytes, bytearray, memoryview)):
                value = _text(bytes(value))
            for transform in transforms:
                value = transform(value)
            if value is None:
                return None
            if labelled:
                return _label(spec, value)
            return converter(value, spec, zone)
        except MappingValueError as err:
            raise MappingValueError(err.problem, field, column, raw) from None
        except (TypeError, ValueError, ArithmeticError, OverflowError) as err:
            raise MappingValueError(f"cannot convert to {kind} ({err})", field, column, raw) from None

    return run


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MappingValueError(f"invalid UTF-8 text (byte {value[err.start]:#04x} at {err.start})") from None


def _normalise(hint: ColumnHint, value: Any) -> Any:
    base = hint.base
    if base == "float" and isinstance(value, float):
        return _shortest_float32(value)
    if base == "binary" and isinstance(value, (bytes, bytearray, str)) and hint.length:
        # The binlog drops BINARY(N)'s zero padding (and hands an all-zero value over as '').
        data = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        return data.ljust(hint.length, b"\0")
    if base == "bit":
        if isinstance(value, str):
            return int(value, 2) if value else 0
        if isinstance(value, (bytes, bytearray)):
            return int.from_bytes(value, "big")
    if base == "set":
        if isinstance(value, (set, frozenset, list, tuple)):
            return sorted(value) or None
        if isinstance(value, str):
            return sorted(value.split(",")) if value else None  # the binlog cannot tell '' from NULL
    if base == "year" and value in (0, 1900):
        return None  # YEAR 0000; the binlog library renders it as 1900, which YEAR cannot hold
    return value


def _shortest_float32(value: float) -> float:
    """A FLOAT column's value as the shortest decimal that is the same single-precision number."""
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def _label(spec: Any, value: Any) -> Any:
    code = str(value)
    if code in spec.labels:
        return spec.labels[code]
    if spec.unknown_label == "null":
        return None
    if spec.unknown_label == "error":
        raise MappingValueError(f"unknown code, known: {sorted(spec.labels)}")
    return code


# --- per canonical type ------------------------------------------------------------------------------


def _string(v: Any, spec: Any, zone: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return ",".join(map(str, v))
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    return str(v)


def _integer(v: Any, spec: Any, zone: str) -> int:
    n = _whole(v)
    if not _I64[0] <= n <= _I64[1]:
        raise MappingValueError("out of the signed 64-bit range of an integer field (use type: bigint_unsigned)")
    return n


def _unsigned(v: Any, spec: Any, zone: str) -> int:
    n = _whole(v)
    if not 0 <= n < 2**64:
        raise MappingValueError("not an unsigned 64-bit integer")
    return n


def _whole(v: Any) -> int:
    if isinstance(v, (bool, int)):
        return int(v)
    if isinstance(v, str):
        v = v.strip()
    d = decimal.Decimal(str(v)) if isinstance(v, float) else decimal.Decimal(v)
    if d != d.to_integral_value():
        raise MappingValueError("not a whole number")
    return int(d)


def _decimal(v: Any, spec: Any, zone: str) -> str:
    d = decimal.Decimal(repr(v)) if isinstance(v, float) else decimal.Decimal(v.strip() if isinstance(v, str) else v)
    if not d.is_finite():
        raise MappingValueError("not a finite decimal number")
    return format(d, "f")


def _float(v: Any, spec: Any, zone: str) -> float:
    return float(v.strip() if isinstance(v, str) else v)


def _boolean(v: Any, spec: Any, zone: str) -> bool:
    if isinstance(v, str):
        text = v.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise MappingValueError("not a boolean (1/0, y/n, yes/no, true/false)")
    return bool(v)


def _date(v: Any, spec: Any, zone: str) -> str | None:
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    parsed = _parse(str(v), spec.format or "%Y-%m-%d")
    return parsed.date().isoformat() if parsed else None


def _datetime(v: Any, spec: Any, zone: str) -> str | None:
    wall = _wall_time(v, spec)
    return wall.isoformat() if wall else None


def _timestamp(v: Any, spec: Any, zone: str) -> str | None:
    wall = _wall_time(v, spec)
    if wall is None:
        return None
    if wall.tzinfo is None:
        if spec.hint is not None and spec.hint.base == "datetime":
            wall = wall.replace(tzinfo=_zone(zone))  # a DATETIME is wall time in the source's zone
        elif wall == _EPOCH:
            return None  # a zero TIMESTAMP (TIMESTAMP cannot hold 1970-01-01 00:00:00 UTC itself)
        else:
            return wall.isoformat() + "Z"  # TIMESTAMP values arrive as naive UTC
    return wall.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"


def _wall_time(v: Any, spec: Any) -> dt.datetime | None:
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    text = str(v).strip()
    if spec.format:
        return _parse(text, spec.format)
    if text.startswith("0000"):
        return None  # year 0: a zero date (fromisoformat would refuse it too, at the cost of an exception a row)
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None  # zero ('0000-00-00 00:00:00') or invalid legacy dates are unknown, not errors


@lru_cache(maxsize=65_536)  # legacy text dates repeat (birth dates, join dates); strptime is slow
def _parse(text: str, fmt: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text.strip(), fmt)
    except ValueError:
        return None


@lru_cache(maxsize=32)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _time(v: Any, spec: Any, zone: str) -> str:
    if isinstance(v, dt.timedelta):
        micros = v.days * 86_400_000_000 + v.seconds * 1_000_000 + v.microseconds
        sign, micros = ("-" if micros < 0 else ""), abs(micros)
        hours, rest = divmod(micros, 3_600_000_000)
        minutes, rest = divmod(rest, 60_000_000)
        seconds, micros = divmod(rest, 1_000_000)
        text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
        return f"{text}.{micros:06d}" if micros else text
    if isinstance(v, dt.time):
        return v.isoformat()
    return str(v).strip()


def _json(v: Any, spec: Any, zone: str) -> Any:
    if spec.hint is not None and spec.hint.base == "geometry" and isinstance(v, (bytes, bytearray)):
        return geojson(bytes(v))
    if isinstance(v, (bytes, bytearray)):
        v = _text(bytes(v))
    if isinstance(v, str):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError as err:
            raise MappingValueError(f"not valid JSON ({err})") from None
    return _json_tree(v)


def _json_tree(value: Any) -> Any:
    """MySQL's binary JSON as the binlog library decodes it: bytes keys and strings become text."""
    if isinstance(value, (bytes, bytearray)):
        return _text(bytes(value))
    if isinstance(value, dict):
        return {_json_tree(k): _json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_tree(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _bytes(v: Any, spec: Any, zone: str) -> str:
    data = v.encode("utf-8") if isinstance(v, str) else bytes(v)
    return base64.b64encode(data).decode("ascii")


_CONVERTERS: dict[FieldType, Callable[[Any, Any, str], Any]] = {
    FieldType.STRING: _string,
    FieldType.INTEGER: _integer,
    FieldType.BIGINT_UNSIGNED: _unsigned,
    FieldType.DECIMAL: _decimal,
    FieldType.FLOAT: _float,
    FieldType.BOOLEAN: _boolean,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
    FieldType.TIMESTAMP: _timestamp,
    FieldType.TIME: _time,
    FieldType.JSON: _json,
    FieldType.BYTES: _bytes,
}
