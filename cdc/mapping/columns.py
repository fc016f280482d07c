"""Source column types, where a row's Python values alone cannot tell how to read them.

The binlog library and a PyMySQL SELECT hand over different Python values for some column types
(FLOAT widened to double vs. its shortest text; BINARY(N) without vs. with its zero padding; BIT
as a '0101' string vs. bytes; SET as a Python set vs. 'a,b'; YEAR 0000 as 1900 vs. 0). A field
says ``column_type`` for those, and both inputs then give the same canonical value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Types whose reading depends on the hint; others are accepted (and compared by `cdc mappings check`).
SIGNIFICANT = {"float", "binary", "bit", "set", "year", "geometry", "datetime"}

_TYPE_RE = re.compile(r"^\s*([a-z]+)\s*(?:\(\s*(\d+)\s*(?:,\s*\d+\s*)?\))?\s*(unsigned)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ColumnHint:
    base: str  # lower-case MySQL type name: float, binary, bit, set, year, geometry, datetime, ...
    length: int | None = None


def parse_column_type(text: str) -> ColumnHint:
    match = _TYPE_RE.match(text)
    if match is None or text.lower().startswith(("enum(", "set(")) and "'" in text:
        if text.lower().startswith("set("):
            return ColumnHint("set")
        if text.lower().startswith("enum("):
            return ColumnHint("enum")
        raise ValueError(f"column_type {text!r} is not a MySQL type such as 'float', 'binary(16)', 'bit(8)', 'set'")
    base, length = match.group(1).lower(), match.group(2)
    return ColumnHint(base, int(length) if length else None)
