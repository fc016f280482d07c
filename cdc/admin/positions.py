"""Positions as operators type them, parsed and checked without touching any server."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cdc.admin import PositionError
from cdc.domain.envelope import binlog_file_seq

_MARIADB_GTID = re.compile(r"^\d+-\d+-\d+$")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_MYSQL_GTID = re.compile(rf"^{_UUID}(:\d+(-\d+)?)+$")
_RELATIVE = re.compile(r"^-(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class FilePos:
    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    def sort_key(self) -> tuple[int, int]:
        return binlog_file_seq(self.file), self.pos


def parse_file_pos(text: str) -> FilePos:
    file, sep, pos = text.strip().rpartition(":")
    if not sep or not file or not pos.isdigit():
        raise PositionError(f"{text!r} is not FILE:POS (for example mysql-bin.000003:1234)")
    try:
        binlog_file_seq(file)
    except ValueError as err:
        raise PositionError(f"{text!r}: {err}") from None
    if int(pos) < 4:
        raise PositionError(f"{text!r}: a binlog position is at least 4 (the file header)")
    return FilePos(file, int(pos))


def parse_gtid_set(text: str, flavor: str) -> str:
    """Normalised GTID set: MariaDB ``domain-server-seq`` list (one per domain) or MySQL ``uuid:interval`` set."""
    parts = [p.strip() for p in text.replace("\n", "").split(",") if p.strip()]
    if not parts:
        raise PositionError("the GTID set is empty")
    if flavor == "mariadb":
        bad = [p for p in parts if not _MARIADB_GTID.match(p)]
        if bad:
            raise PositionError(f"malformed MariaDB GTID {bad[0]!r}: expected domain-server-sequence, e.g. 0-1-42 "
                                "(several domains separated by commas)")
        domains = [p.split("-", 1)[0] for p in parts]
        if len(set(domains)) != len(domains):
            raise PositionError(f"GTID set {text!r} names a domain twice; give one position per domain")
        return ",".join(sorted(parts, key=lambda p: int(p.split("-", 1)[0])))
    bad = [p for p in parts if not _MYSQL_GTID.match(p)]
    if bad:
        raise PositionError(f"malformed MySQL GTID set element {bad[0]!r}: expected uuid:1-100[:105-110]")
    return ",".join(parts)


def parse_timestamp(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """ISO 8601 (a time without zone is UTC) or relative ``-30m``, ``-2h``, ``-1d``; returns an aware UTC datetime."""
    now = now or dt.datetime.now(dt.UTC)
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return now - dt.timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PositionError(f"{text!r} is not a timestamp: use ISO 8601 (2024-05-01T12:00:00Z; no zone means UTC) "
                            "or a relative time such as -30m, -2h, -1d") from None
    value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if value > now + dt.timedelta(seconds=5):
        raise PositionError(f"{value.isoformat()} is in the future")
    return value


def parse_stream_offset(text: str) -> int:
    if not text.strip().isdigit():
        raise PositionError(f"{text!r} is not an event-log offset (a non-negative integer)")
    return int(text)


def iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
