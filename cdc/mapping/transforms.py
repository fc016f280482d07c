"""Named value transforms a field applies, in order, before its type conversion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _fix_mojibake(value: Any) -> Any:
    """Text a legacy app wrote as UTF-8 bytes into a latin1 column ('ZoÃ«' -> 'Zoë'); other text unchanged."""
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        return value.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _collapse_spaces(value: Any) -> Any:
    return " ".join(value.split()) if isinstance(value, str) else value


TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "trim": lambda v: v.strip() if isinstance(v, str) else v,
    "lower": lambda v: v.lower() if isinstance(v, str) else v,
    "upper": lambda v: v.upper() if isinstance(v, str) else v,
    "collapse_spaces": _collapse_spaces,
    "null_if_empty": lambda v: None if v == "" else v,
    "null_if_zero": lambda v: None if v == 0 or v == "0" else v,
    "fix_mojibake": _fix_mojibake,
}
