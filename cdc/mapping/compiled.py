"""A mapping's column conversions compiled into one Python function (the mapper's fast path).

``map_row`` runs for every row of every mapped table, in the reader and in snapshots. Converting a
row field by field through :func:`cdc.mapping.values.compile_field` costs three or four Python calls
a field (the field's converter, each transform, the type's converter): about a third of the reader's
and of a snapshot's time. Here the converters of one mapping become a single function, generated
once per mapping, that handles the value types a source really sends (``str`` for text, ``int``,
``Decimal``, ``date``, ``datetime``) inline, with the same result as the general converter; any other
value type goes to that field's general converter.

Exactness: the generated code is only an abbreviation. Each inline case applies, for one exact
Python class, what the general converter does for that class (see the comments at each case); where
an inline case cannot decide (an integer out of range, an unknown label, a non-finite decimal) it
calls the general converter. Any exception makes the caller run the general path again, which raises
the error with its full message. ``tests/unit/test_mapping_compiled.py`` compares the two paths over
every field type, transform, column hint and value class.

Nothing from a mapping file is pasted into the generated source: field names, column names and
labels are passed in as constants (``_n3``, ``_c3``, ...), so a mapping cannot inject code.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from cdc.domain.entity_schema import FieldType
from cdc.mapping.transforms import TRANSFORMS

# Column hints whose normalisation changes values of the classes handled inline (see values._normalise).
_HINTS_WITH_NORMALISATION = frozenset({"float", "binary", "bit", "set", "year", "geometry"})

# What each transform does to a str (values/transforms.TRANSFORMS), as an expression of x.
_STR_TRANSFORMS = {
    "trim": "x.strip()",
    "lower": "x.lower()",
    "upper": "x.upper()",
    "collapse_spaces": '" ".join(x.split())',
    "null_if_empty": 'None if x == "" else x',
    "null_if_zero": 'None if x == "0" else x',  # a str is never == 0
    "fix_mojibake": "_fix_mojibake(x)",
}
_NULLING = frozenset({"null_if_empty", "null_if_zero"})

_I64_MIN, _I64_MAX, _U64_END = -(2**63), 2**63 - 1, 2**64
_EPOCH = dt.datetime(1970, 1, 1)  # values._EPOCH: a zero TIMESTAMP as the binlog library renders it


def compile_row(fields: list[tuple[str, str, Any, Callable[[Any, str], Any]]],
                also_needed: frozenset[str] = frozenset()) -> Callable[[dict, str], dict]:
    """One function ``(row, zone) -> {field: canonical value}`` for ``fields``: (field name, source
    column, FieldSpec, the field's general converter from ``compile_field``), in output order.
    It raises KeyError where the row lacks one of those columns or of ``also_needed`` (columns that
    conditions read), like every other problem, for the general path to report."""
    namespace: dict[str, Any] = {
        "_fix_mojibake": TRANSFORMS["fix_mojibake"], "_EPOCH": _EPOCH, "_str": str, "_int": int, "_float": float,
        "_Decimal": decimal.Decimal, "_date": dt.date, "_datetime": dt.datetime, "_format": format,
    }
    lines = ["def convert_row(row, zone):", "    values = {}"]
    for j, column in enumerate(sorted(also_needed - {c for _, c, _, _ in fields})):
        namespace[f"_k{j}"] = column
        lines.append(f"    row[_k{j}]")
    for i, (name, column, spec, general) in enumerate(fields):
        namespace[f"_n{i}"], namespace[f"_c{i}"], namespace[f"_r{i}"] = name, column, general
        lines += [f"    v = row[_c{i}]", "    if v is None:", f"        values[_n{i}] = None"]
        for cls, body in _inline_cases(i, spec, namespace):
            lines.append(f"    elif v.__class__ is {cls}:")
            lines += ["        " + line for line in body]
        lines += ["    else:", f"        values[_n{i}] = _r{i}(v, zone)"]
    lines.append("    return values")
    exec(compile("\n".join(lines), "<cdc.mapping.compiled>", "exec"), namespace)  # noqa: S102 - see the module doc
    convert_row = namespace["convert_row"]
    convert_row.source = "\n".join(lines)  # for tests and for reading in a debugger
    return convert_row


def _inline_cases(i: int, spec: Any, namespace: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(class name in the namespace, statements that set values[_n{i}] from v) for each class handled inline."""
    hint = spec.hint
    if hint is not None and hint.base in _HINTS_WITH_NORMALISATION:
        return []
    kind, transforms, out = spec.type, list(spec.transforms), f"values[_n{i}]"
    fallback = f"_r{i}(v, zone)"
    if spec.labels is not None:
        if kind != FieldType.STRING:
            return []
        # A str code: labels[code], else what unknown_label says (keep / null / error): the general converter.
        namespace[f"_l{i}"] = dict(spec.labels)
        body = _str_transforms(transforms)
        body.append(f"{out} = None if x is None else _l{i}[x] if x in _l{i} else {fallback}")
        return [("_str", body)]
    if kind == FieldType.STRING:
        # _string returns a str unchanged.
        return [("_str", [*_str_transforms(transforms), f"{out} = x"])]
    # Other types: of the transforms only null_if_zero changes a number (x == 0); every transform
    # leaves a date or datetime as it is; a str goes to the general converter (parsing, formats).
    zero = "null_if_zero" in transforms
    number = (lambda expr: [f"{out} = None if v == 0 else {expr}"]) if zero else (lambda expr: [f"{out} = {expr}"])
    if kind == FieldType.INTEGER:  # _integer: int(v) within the signed 64-bit range, else an error
        return [("_int", number(f"v if {_I64_MIN} <= v <= {_I64_MAX} else {fallback}"))]
    if kind == FieldType.BIGINT_UNSIGNED:  # _unsigned: 0 <= v < 2**64, else an error
        return [("_int", number(f"v if 0 <= v < {_U64_END} else {fallback}"))]
    if kind == FieldType.BOOLEAN:  # _boolean: bool(v) for a number
        return [("_int", number("v != 0"))]
    if kind == FieldType.DECIMAL:  # _decimal: format(d, "f") of a finite Decimal, else an error
        return [("_Decimal", number(f'_format(v, "f") if v.is_finite() else {fallback}'))]
    if kind == FieldType.FLOAT:  # _float: float(v), the same float
        return [("_float", number("v"))]
    # Dates as text (legacy 'dd/mm/yyyy' columns, zero dates, a driver's text) take strptime or an
    # exception a row in the general converter, and repeat (birth dates, '0000-00-00'): its results
    # for a str are kept (a pure function of the text and the zone; an error is never kept).
    text = ("_str", [f"{out} = _t{i}(v, zone)"])
    if kind in (FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP):
        namespace[f"_t{i}"] = lru_cache(maxsize=4096)(namespace[f"_r{i}"])
    if kind == FieldType.DATE:  # _date: a date's isoformat, a datetime's date's
        return [("_date", [f"{out} = v.isoformat()"]), ("_datetime", [f"{out} = v.date().isoformat()"]), text]
    if kind == FieldType.DATETIME:  # _datetime: _wall_time gives a datetime back as it is
        return [("_datetime", [f"{out} = v.isoformat()"]), text]
    if kind == FieldType.TIMESTAMP and (hint is None or hint.base != "datetime"):
        # _timestamp: a naive datetime is UTC ('Z'), the library's 1970-01-01 a zero TIMESTAMP (null);
        # an aware one is converted to UTC by the general converter.
        return [("_datetime", [f'{out} = v.isoformat() + "Z" if v.tzinfo is None and v != _EPOCH else {fallback}']), text]
    if kind == FieldType.TIMESTAMP:
        return [text]
    return []  # time, json, bytes: always the general converter


def _str_transforms(transforms: list[str]) -> list[str]:
    """Statements applying ``transforms`` to the str v, leaving the result in x (None once nulled)."""
    body, maybe_none = ["x = v"], False
    for name in transforms:
        expr = _STR_TRANSFORMS[name]
        body.append(f"if x is not None: x = {expr}" if maybe_none else f"x = {expr}")
        maybe_none = maybe_none or name in _NULLING
    return body
