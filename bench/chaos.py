#!/usr/bin/env python
"""A seeded, reproducible randomized differential harness with faults (issue 20).

    python bench/chaos.py --seed 7 --ops 2000 --faults kill,rabbitmq,postgres,mariadb,redis
    python bench/chaos.py --seeds 10 --ops 1000           # ten seeds in a row, one summary line each
    python bench/chaos.py --replay /tmp/chaos-7.json      # an operation list written by a failing run

Everything runs on private services (tests/chaos/private_services.py: MariaDB with its binlog,
PostgreSQL as state store and CRM, Redis, a RabbitMQ node, osmem-server for search), so that the
faults touch nobody else. A run:

1. generates legacy tables from the seed: random column types across docs/types.md (signed and
   unsigned integers with their extremes, DECIMAL, FLOAT/DOUBLE, DATE/DATETIME/TIMESTAMP/TIME/YEAR,
   CHAR/VARCHAR/TEXT in utf8mb4 and latin1, BINARY/VARBINARY/BLOB, ENUM/SET, JSON, BIT), integer,
   composite, binary and string keys (string parts containing ``|``), legacy column names;
2. seeds rows, writes the mappings with ``cdc mappings init --sinks crm,cache,search``, starts the
   daemon (``cdc run``, or ``--role reader`` and ``--role sinks`` with ``--roles``) with
   ``broker.batch_events`` 1 or N (alternating by seed unless ``--batch-events`` says);
3. runs the generated operations: inserts, updates (key changes included), deletes, small and big
   transactions (up to a few thousand rows), rolled-back ones, zero and invalid values under the
   permissive sql_modes of legacy PHP (``''``, ``ALLOW_INVALID_DATES``) and strict ones (refused
   statements are part of the workload), DDL (add/drop/rename/modify of a column, rename of a
   table and back, a pt-online-schema-change style rebuild, truncate, drop and re-create, CREATE OR
   REPLACE), run-time snapshots (``cdc snapshot start``) and faults: SIGKILL of the daemon (or of the
   reader or the sinks process), restarts of RabbitMQ, of the PostgreSQL holding the state store and
   the CRM, of MariaDB and of Redis;
4. waits (with a deadline) until ``cdc verify`` reports every sink equal to the source, then checks:
   0 differences except keys that sit in a DLQ with a reason, each sink's row count equal to the
   source's ``COUNT(*)`` (``cdc verify`` itself keys rows by their key string), the daemon never
   exited by itself, and the reader never stopped or restarted on data (its logs).

A failing run prints its seed, writes its operation list, shrinks it (a bisection of the prefix, then
delta debugging, each candidate replayed on fresh private services, within ``--shrink-budget``
seconds) and prints the command that replays the smallest sequence that still fails.

Not generated, by design (each a documented behaviour, not a divergence to find):
- dropping or renaming a *mapped* column: rows then lack a mapped field and go to the reader DLQ
  (``on_missing_column: dlq``) until the mapping is changed by hand; the harness drops and renames
  the columns it added itself, which no mapping names;
- a MODIFY that changes how stored values read (a DECIMAL's scale, a shorter string): MySQL rewrites
  the rows without row events, so no CDC tool sees it; only widening modifies are generated;
- changes made to a mapped table while it is renamed away: the binlog names the other table; the
  harness renames a table away and back in one statement, and rebuilds tables pt-osc style;
- a restart of the search server: osmem-server keeps its data in memory only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "chaos"))

from private_services import PrivateServices  # noqa: E402

ALL_FAULTS = ("kill", "rabbitmq", "postgres", "mariadb", "redis")
SINKS = ("crm", "cache", "search")
DB = "legacy"
PERMISSIVE = ["", "ALLOW_INVALID_DATES", "NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES", "NO_ENGINE_SUBSTITUTION"]
STRICT = "STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO"


# ---------------------------------------------------------------------------------------------- values

def q(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def hexlit(data: bytes) -> str:
    return f"X'{data.hex()}'" if data else "''"


UTF8_PIECES = ["a", "Zoë", "😀", "|", "'", "\\", " ", "ß", "漢字", "x|y", "€", "\t", "Ω", "—", "0", "null", "%"]
LATIN1_PIECES = ["a", "é", "€", "ÿ", "|", " ", "Ä", "«»", "'", "ñ", "‰", "x|y", "ž"]


def _text(rng: random.Random, pieces: list[str], maxlen: int) -> str:
    out = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
    if rng.random() < 0.1:
        out += "  "  # trailing spaces: CHAR drops them, VARCHAR keeps them
    return out[:maxlen]


def _int_range(kind: str) -> tuple[int, int]:
    bits = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}[kind]
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def new_column(rng: random.Random, name: str) -> dict:
    """A column spec: name, SQL type, and what its values look like."""
    kind = rng.choice(["int", "int", "decimal", "float", "double", "date", "datetime", "timestamp", "time", "year",
                       "char", "varchar", "varchar", "text", "binary", "varbinary", "blob", "enum", "set", "json",
                       "bit", "bool"])
    col = {"name": name, "kind": kind}
    if kind == "int":
        size = rng.choice(["tinyint", "smallint", "mediumint", "int", "bigint"])
        unsigned = rng.random() < 0.4
        lo, hi = _int_range(size)
        if unsigned:
            lo, hi = 0, hi * 2 + 1
        col.update(sql=size.upper() + (" UNSIGNED" if unsigned else ""), lo=lo, hi=hi)
    elif kind == "bool":
        col.update(sql="TINYINT(1)")
    elif kind == "decimal":
        m = rng.randint(1, 65)
        d = rng.randint(0, min(m, 30))
        col.update(sql=f"DECIMAL({m},{d})", m=m, d=d)
    elif kind == "float":
        col.update(sql="FLOAT")
    elif kind == "double":
        col.update(sql="DOUBLE")
    elif kind in ("datetime", "timestamp", "time"):
        fsp = rng.choice([0, 0, 3, 6, 2])
        col.update(sql=f"{kind.upper()}({fsp})" if fsp else kind.upper(), fsp=fsp)
    elif kind in ("date", "year"):
        col.update(sql=kind.upper())
    elif kind in ("char", "varchar", "text"):
        charset = rng.choice(["utf8mb4", "utf8mb4", "latin1"])
        n = rng.randint(1, 40)
        base = {"char": f"CHAR({n})", "varchar": f"VARCHAR({n})", "text": rng.choice(["TEXT", "MEDIUMTEXT", "TINYTEXT"])}[kind]
        col.update(sql=f"{base} CHARACTER SET {charset}", charset=charset, n=n if kind != "text" else 200)
    elif kind in ("binary", "varbinary"):
        n = rng.randint(1, 16)
        col.update(sql=f"{kind.upper()}({n})", n=n)
    elif kind == "blob":
        col.update(sql=rng.choice(["BLOB", "TINYBLOB", "MEDIUMBLOB"]), n=300)
    elif kind == "enum":
        labels = rng.sample(["a", "b", "c d", "Zoë", "x|y", "NEW", "old"], rng.randint(1, 4))
        col.update(sql="ENUM(" + ", ".join(q(x) for x in labels) + ")", labels=labels)
    elif kind == "set":
        labels = rng.sample(["x", "y", "z", "w", "ü", "a b"], rng.randint(1, 5))
        col.update(sql="SET(" + ", ".join(q(x) for x in labels) + ")", labels=labels)
    elif kind == "json":
        col.update(sql="JSON")
    elif kind == "bit":
        n = rng.choice([1, 1, 2, 8, 9, 17, 32, 63, 64])
        col.update(sql=f"BIT({n})", n=n)
    return col


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1000, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _fraction(rng: random.Random, fsp: int) -> str:
    if not fsp or rng.random() < 0.3:
        return ""
    return "." + "".join(str(rng.randint(0, 9)) for _ in range(fsp))


def value(rng: random.Random, col: dict, allow_null: bool = True) -> str:
    """A SQL literal for the column: ordinary, extreme, zero, invalid (under a permissive sql_mode), or NULL."""
    if allow_null and rng.random() < 0.08:
        return "NULL"
    kind = col["kind"]
    odd = rng.random() < 0.25
    if kind == "int":
        lo, hi = col["lo"], col["hi"]
        if odd:
            return str(rng.choice([lo, hi, 0, hi + 1, lo - 1]))  # out of range: clipped without strict mode
        return str(rng.randint(max(lo, -10**6), min(hi, 10**6)) if rng.random() < 0.7 else rng.randint(lo, hi))
    if kind == "bool":
        return str(rng.choice([0, 1, 1, 2, -1, 127]))
    if kind == "decimal":
        m, d = col["m"], col["d"]
        digits = m - d
        if odd:
            whole = "9" * digits if digits else "0"
            return ("-" if rng.random() < 0.5 else "") + whole + ("." + "9" * d if d else "") + rng.choice(["", "9"])
        whole = str(rng.randint(0, 10 ** min(digits, 18) - 1)) if digits else "0"
        frac = "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(0, d))) if d else ""
        return ("-" if rng.random() < 0.3 else "") + whole + ("." + frac if frac else "")
    if kind == "float":
        return repr(rng.choice([0.0, 3.4, -1.5, 3.4e38, -3.4e38, 1.17549e-38, 0.1, 1e-45, 16777217.0,
                                round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))]))
    if kind == "double":
        return repr(rng.choice([0.0, -0.0, 0.1, 1.7976931348623157e308, 5e-324, -2.2250738585072014e-308, 2.0**53 + 1,
                                rng.uniform(-1e12, 1e12), round(rng.uniform(-1000, 1000), 3)]))
    if kind == "date":
        if odd:
            return q(rng.choice(["0000-00-00", "2024-02-30", "2024-00-10", "2023-02-29", "2024-04-31", "9999-12-31",
                                 "1000-01-01", "0001-01-01", "2024-02-29"]))
        return q(_date(rng))
    if kind == "datetime":
        if odd:
            return q(rng.choice(["0000-00-00 00:00:00", "2024-02-30 12:00:00", "2024-00-00 00:00:00",
                                 "9999-12-31 23:59:59.999999", "1000-01-01 00:00:00", "2024-03-31 02:30:00"]))
        return q(f"{_date(rng)} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
                 + _fraction(rng, col["fsp"]))
    if kind == "timestamp":
        if odd:
            return q(rng.choice(["0000-00-00 00:00:00", "1970-01-01 00:00:01", "2038-01-19 03:14:07.999999",
                                 "2024-02-30 10:00:00"]))
        return q(f"{rng.randint(1971, 2037)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                 f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}" + _fraction(rng, col["fsp"]))
    if kind == "time":
        if odd:
            return q(rng.choice(["-838:59:59", "838:59:59", "25:00:00.5", "-00:00:01.000001", "00:00:00", "-12:30:00.25"]))
        sign = "-" if rng.random() < 0.2 else ""
        return q(f"{sign}{rng.randint(0, 100):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}" + _fraction(rng, col["fsp"]))
    if kind == "year":
        return str(rng.choice([0, 1901, 2155, 2000, 1999, rng.randint(1901, 2155)]))
    if kind in ("char", "varchar", "text"):
        pieces = LATIN1_PIECES if col["charset"] == "latin1" else UTF8_PIECES
        text = _text(rng, pieces, col["n"] + (5 if odd else 0))  # too long: truncated without strict mode
        if kind == "char" and rng.random() < 0.3:
            text = text.rstrip()
        return q(text)
    if kind in ("binary", "varbinary", "blob"):
        n = col["n"]
        length = rng.randint(0, n)
        data = bytes(rng.choice([0, 0, 1, 0x7C, 0xFF, rng.randint(0, 255)]) for _ in range(length))
        if odd and kind == "binary":
            data = data.rstrip(b"\0")  # padded back with zeros by the server
        return hexlit(data)
    if kind == "enum":
        return q(rng.choice(col["labels"] + (["not-a-label", ""] if odd else [])))
    if kind == "set":
        members = [x for x in col["labels"] if rng.random() < 0.5]
        return q(",".join(members + (["bogus"] if odd else [])))
    if kind == "json":
        return q(json.dumps(_json(rng, 2), ensure_ascii=rng.random() < 0.5))
    if kind == "bit":
        n = col["n"]
        return f"b'{rng.choice([0, 2 ** n - 1, rng.randrange(2 ** n)]):b}'"
    raise AssertionError(kind)


def _json(rng: random.Random, depth: int):
    choice = rng.randint(0, 7 if depth else 4)
    if choice == 0:
        return rng.choice([0, -1, 2 ** 53, 2 ** 63 - 1, -(2 ** 63), 12345])
    if choice == 1:
        return rng.choice([2.5, -0.125, 1e100, 0.1, 1.0])
    if choice == 2:
        return _text(rng, UTF8_PIECES, 20)
    if choice == 3:
        return rng.choice([True, False, None])
    if choice == 4:
        return {}
    if choice in (5, 6):
        return {_text(rng, ["k", "ключ", "|", "a", "😀"], 8): _json(rng, depth - 1) for _ in range(rng.randint(1, 3))}
    return [_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]


# ---------------------------------------------------------------------------------------------- tables

TABLE_NAMES = ["members", "OrderItems", "tbl_Payments", "event_registrations", "newsLetters", "categories", "wp_postmeta",
               "UserProfile", "invoice_lines", "addresses"]
COLUMN_NAMES = ["status", "dateJoined", "Zip Code", "amount", "note", "flags", "last_login", "score", "payload", "colour",
                "birthDate", "createdAt", "ratio", "avatar", "token", "kind", "opened", "level", "2fa", "Email_Address",
                "updated", "weight", "tags", "bits", "hash"]


def ident(name: str) -> str:
    return f"`{name}`"


@dataclass
class Table:
    name: str
    key_kind: str
    key: list[dict]
    cols: list[dict]
    extra: list[dict] = field(default_factory=list)  # columns added by DDL: no mapping names them
    keys: list[list[str]] = field(default_factory=list)  # key literals of rows believed present
    counter: int = 0

    def ddl(self) -> str:
        parts = [f"{ident(c['name'])} {c['sql']} NOT NULL" for c in self.key]
        parts += [f"{ident(c['name'])} {c['sql']} NULL" for c in self.cols + self.extra]
        parts.append("PRIMARY KEY (" + ", ".join(ident(c["name"]) for c in self.key) + ")")
        return f"CREATE TABLE {ident(self.name)} ({', '.join(parts)}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

    def new_key(self, rng: random.Random) -> list[str]:
        self.counter += 1
        out = []
        for c in self.key:
            kind = c["kind"]
            if kind == "int":
                if rng.random() < 0.05:
                    out.append(str(rng.choice([c["lo"], c["hi"]])))
                else:
                    out.append(str(self.counter * 7 + rng.randint(0, 6) if c["lo"] >= 0 else rng.choice([1, -1]) * self.counter * 7))
            elif kind == "varchar":
                out.append(q(rng.choice(["", "a|", "|b", "x|y", "k", "é|", "😀"]) + str(self.counter) + rng.choice(["", "|", "|z"])))
            elif kind == "varbinary":
                out.append(hexlit(bytes([rng.choice([0, 0x7C, 0xFF, 1])]) + self.counter.to_bytes(3, "big") + bytes(rng.randint(0, 2))))
            elif kind == "binary":
                out.append(hexlit(self.counter.to_bytes(4, "big")))
        return out

    def where(self, key: list[str]) -> str:
        return " AND ".join(f"{ident(c['name'])} = {v}" for c, v in zip(self.key, key))


def new_table(rng: random.Random, name: str) -> Table:
    key_kind = rng.choice(["int", "int_unsigned", "composite", "composite_pipe", "binary", "varbinary", "string"])
    if key_kind == "int":
        key = [{"name": "id", "kind": "int", "sql": "INT", "lo": -(2**31), "hi": 2**31 - 1}]
    elif key_kind == "int_unsigned":
        key = [{"name": "ID", "kind": "int", "sql": "BIGINT UNSIGNED", "lo": 0, "hi": 2**64 - 1}]
    elif key_kind == "composite":
        key = [{"name": "shopId", "kind": "int", "sql": "SMALLINT UNSIGNED", "lo": 0, "hi": 65535},
               {"name": "line", "kind": "int", "sql": "INT", "lo": -(2**31), "hi": 2**31 - 1}]
    elif key_kind == "composite_pipe":  # both parts text: 'x|y','z' and 'x','y|z' are different rows
        key = [{"name": "ns", "kind": "varchar", "sql": "VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"},
               {"name": "code", "kind": "varchar", "sql": "VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"}]
    elif key_kind == "binary":
        key = [{"name": "uid", "kind": "binary", "sql": "BINARY(4)"}]
    elif key_kind == "varbinary":
        key = [{"name": "hash", "kind": "varbinary", "sql": "VARBINARY(8)"}]
    else:
        key = [{"name": "slug", "kind": "varchar", "sql": "VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"}]
    names = rng.sample([n for n in COLUMN_NAMES if n not in {k["name"] for k in key}], rng.randint(3, 9))
    return Table(name, key_kind, key, [new_column(rng, n) for n in names])


# ---------------------------------------------------------------------------------------------- operations

class Generator:
    """Operations from a seed; each one is concrete SQL (or a fault, or a snapshot), so that any subset replays."""

    def __init__(self, seed: int, n_ops: int, faults: list[str], n_faults: int, tables: int | None = None,
                 big_rows: int = 3000) -> None:
        self.rng = random.Random(seed)
        self.n_ops, self.faults, self.n_faults, self.big_rows = n_ops, faults, n_faults, big_rows
        self.tables = [new_table(self.rng, n) for n in self.rng.sample(TABLE_NAMES, tables or self.rng.randint(2, 4))]
        self.ddl_count = 0

    def setup(self) -> dict:
        """The tables and their first rows (read by the daemon's initial snapshot)."""
        sql = [t.ddl() for t in self.tables]
        for t in self.tables:
            sql += self._inserts(t, self.rng.randint(5, 60), multi=True)
        return {"t": "setup", "sql": sql, "mode": "ALLOW_INVALID_DATES"}

    def generate(self) -> list[dict]:
        ops = [self.setup()]
        fault_at = sorted(self.rng.sample(range(1, self.n_ops), min(self.n_faults, self.n_ops - 1))) if self.faults else []
        kinds = []  # every kind in turn, in an order of the seed's: a few faults still cover them all
        for i in range(self.n_ops):
            if fault_at and i == fault_at[0]:
                fault_at.pop(0)
                if not kinds:
                    kinds = self.rng.sample(self.faults, len(self.faults))
                ops.append({"t": "fault", "what": kinds.pop()})
                continue
            ops.append(self.op())
        return ops

    def _mode(self) -> str:
        return STRICT if self.rng.random() < 0.15 else self.rng.choice(PERMISSIVE)

    def _row(self, t: Table, key: list[str] | None = None) -> tuple[list[str], list[str]]:
        key = key or t.new_key(self.rng)
        cols = [c for c in t.cols + t.extra if self.rng.random() < 0.9]
        return key, [ident(c["name"]) for c in t.key + cols], key + [value(self.rng, c) for c in cols]

    def _inserts(self, t: Table, n: int, multi: bool) -> list[str]:
        out, rows = [], []
        names = [ident(c["name"]) for c in t.key + t.cols + t.extra]
        for _ in range(n):
            key = t.new_key(self.rng)
            t.keys.append(key)
            rows.append("(" + ", ".join(key + [value(self.rng, c) for c in t.cols + t.extra]) + ")")
        verb = "INSERT IGNORE" if self.rng.random() < 0.3 else "INSERT"
        if multi:
            for i in range(0, len(rows), 500):
                out.append(f"{verb} INTO {ident(t.name)} ({', '.join(names)}) VALUES {', '.join(rows[i:i + 500])}")
        else:
            out += [f"{verb} INTO {ident(t.name)} ({', '.join(names)}) VALUES {r}" for r in rows]
        return out

    def _existing(self, t: Table) -> list[str] | None:
        return self.rng.choice(t.keys) if t.keys else None

    def _set(self, t: Table) -> str:
        cols = self.rng.sample(t.cols + t.extra, self.rng.randint(1, min(3, len(t.cols + t.extra))))
        return ", ".join(f"{ident(c['name'])} = {value(self.rng, c)}" for c in cols)

    def statement(self, t: Table) -> list[str]:
        r = self.rng.random()
        if r < 0.35 or not t.keys:
            return self._inserts(t, self.rng.randint(1, 5), multi=self.rng.random() < 0.5)
        key = self._existing(t)
        if r < 0.62:
            return [f"UPDATE {ident(t.name)} SET {self._set(t)} WHERE {t.where(key)}"]
        if r < 0.70:  # the key changes
            new = t.new_key(self.rng)
            t.keys.append(new)
            sets = ", ".join(f"{ident(c['name'])} = {v}" for c, v in zip(t.key, new))
            return [f"UPDATE {ident(t.name)} SET {sets}{', ' + self._set(t) if self.rng.random() < 0.5 else ''} WHERE {t.where(key)}"]
        if r < 0.74:
            col = self.rng.choice(t.cols)
            return [f"UPDATE {ident(t.name)} SET {ident(col['name'])} = {value(self.rng, col)} ORDER BY {ident(t.key[0]['name'])} "
                    f"LIMIT {self.rng.randint(2, 50)}"]
        if r < 0.77:  # an insert that collides, updated in place
            return [f"INSERT INTO {ident(t.name)} ({', '.join(ident(c['name']) for c in t.key)}) VALUES ({', '.join(key)}) "
                    f"ON DUPLICATE KEY UPDATE {self._set(t)}"]
        if r < 0.80:
            names, values = self._row(t, key)[1:]
            return [f"REPLACE INTO {ident(t.name)} ({', '.join(names)}) VALUES ({', '.join(values)})"]
        if r < 0.96:
            t.keys.remove(key)
            return [f"DELETE FROM {ident(t.name)} WHERE {t.where(key)}"]
        return [f"DELETE FROM {ident(t.name)} ORDER BY {ident(t.key[0]['name'])} DESC LIMIT {self.rng.randint(2, 20)}"]

    def op(self) -> dict:
        rng = self.rng
        t = rng.choice(self.tables)
        r = rng.random()
        if r < 0.70:
            return {"t": "sql", "mode": self._mode(), "sql": self.statement(t)}
        if r < 0.86:  # a small transaction over the tables
            sql = [s for _ in range(rng.randint(2, 8)) for s in self.statement(rng.choice(self.tables))]
            return {"t": "txn", "mode": self._mode(), "sql": sql, "end": "ROLLBACK" if rng.random() < 0.1 else "COMMIT"}
        if r < 0.885:  # a big one
            n = rng.randint(self.big_rows // 4, self.big_rows)
            sql = self._inserts(t, n, multi=True)
            if rng.random() < 0.5 and t.cols:
                col = rng.choice(t.cols)
                sql.append(f"UPDATE {ident(t.name)} SET {ident(col['name'])} = {value(rng, col)}")
            if rng.random() < 0.3:
                sql.append(f"DELETE FROM {ident(t.name)} ORDER BY {ident(t.key[0]['name'])} LIMIT {rng.randint(1, n)}")
            return {"t": "txn", "mode": rng.choice(PERMISSIVE), "sql": sql, "end": "COMMIT"}
        if r < 0.935:
            return self.ddl(t)
        if r < 0.985:
            return {"t": "sql", "mode": self._mode(), "sql": self.statement(t)}
        return {"t": "snapshot", "table": t.name}

    def ddl(self, t: Table) -> dict:
        rng = self.rng
        self.ddl_count += 1
        kind = rng.choice(["add", "add", "drop", "rename_col", "modify", "modify_mapped", "truncate", "recreate",
                           "create_or_replace", "rename_table", "rebuild"])
        name = ident(t.name)
        if kind == "drop" and t.extra:
            col = t.extra.pop(rng.randrange(len(t.extra)))
            return {"t": "ddl", "sql": [f"ALTER TABLE {name} DROP COLUMN {ident(col['name'])}"]}
        if kind == "rename_col" and t.extra:
            col = rng.choice(t.extra)
            old, col["name"] = col["name"], f"x{self.ddl_count}_{col['name']}"[:60]
            return {"t": "ddl", "sql": [f"ALTER TABLE {name} RENAME COLUMN {ident(old)} TO {ident(col['name'])}"]}
        if kind == "modify" and t.extra:
            col = rng.choice(t.extra)
            new = new_column(rng, col["name"])
            t.extra[t.extra.index(col)] = new
            return {"t": "ddl", "mode": rng.choice(PERMISSIVE), "sql": [f"ALTER TABLE {name} MODIFY COLUMN {ident(col['name'])} {new['sql']} NULL"]}
        if kind == "modify_mapped":
            widen = [c for c in t.cols if c["kind"] in ("varchar", "char") or (c["kind"] == "int" and c["sql"].split()[0] != "BIGINT")]
            if widen:
                col = rng.choice(widen)
                if col["kind"] == "int":
                    col["sql"] = "BIGINT" + (" UNSIGNED" if "UNSIGNED" in col["sql"] else "")  # values and field type kept
                else:
                    col["kind"], col["n"] = "varchar", col["n"] + 20
                    col["sql"] = f"VARCHAR({col['n']}) CHARACTER SET {col['charset']}"
                return {"t": "ddl", "sql": [f"ALTER TABLE {name} MODIFY COLUMN {ident(col['name'])} {col['sql']} NULL"]}
        if kind == "truncate":
            t.keys.clear()
            return {"t": "ddl", "sql": [f"TRUNCATE TABLE {name}"]}
        if kind == "recreate":
            t.keys.clear()
            return {"t": "ddl", "sql": [f"DROP TABLE {name}", t.ddl()]}
        if kind == "create_or_replace":
            t.keys.clear()
            return {"t": "ddl", "sql": [t.ddl().replace("CREATE TABLE", "CREATE OR REPLACE TABLE", 1)]}
        if kind == "rename_table":  # away and back in one statement: no change is made under the other name
            side = ident(f"{t.name}_side{self.ddl_count}")
            return {"t": "ddl", "sql": [f"RENAME TABLE {name} TO {side}, {side} TO {name}"]}
        if kind == "rebuild":  # pt-online-schema-change: copy into a new table, swap, drop the old one
            new, old = ident(f"_{t.name}_new"), ident(f"_{t.name}_old")
            return {"t": "ddl", "sql": [f"DROP TABLE IF EXISTS {new}", f"CREATE TABLE {new} LIKE {name}",
                                        f"INSERT INTO {new} SELECT * FROM {name}", f"RENAME TABLE {name} TO {old}, {new} TO {name}",
                                        f"DROP TABLE {old}"]}
        col = new_column(rng, f"added{self.ddl_count}")
        t.extra.append(col)
        default = f" DEFAULT {value(rng, col, allow_null=False)}" if rng.random() < 0.3 and col["kind"] not in ("text", "blob", "json") else ""
        return {"t": "ddl", "mode": rng.choice(PERMISSIVE), "sql": [f"ALTER TABLE {name} ADD COLUMN {ident(col['name'])} {col['sql']} NULL{default}"]}


# ---------------------------------------------------------------------------------------------- running

@dataclass
class Options:
    seed: int = 0
    batch_events: int = 1
    roles: bool = False
    sinks: tuple[str, ...] = SINKS
    converge_s: float = 240
    pace_s: float = 0.0  # a pause after each operation
    keep: bool = False
    verbose: bool = False
    workdir: Path | None = None


@dataclass
class Result:
    ok: bool
    problems: list[str]
    stats: dict
    workdir: Path

    def summary(self) -> str:
        s = self.stats
        return (f"seed {s.get('seed')}: {'OK' if self.ok else 'FAILED'}; {s.get('ops', 0)} operations ({s.get('statements', 0)} statements, "
                f"{s.get('refused', 0)} refused by the server, {s.get('ddl', 0)} DDL, {s.get('snapshots', 0)} snapshots), "
                f"{s.get('faults', 0)} faults {s.get('fault_kinds', {})}, batch_events {s.get('batch_events')}, "
                f"{s.get('rows', 0)} source rows at the end, {s.get('differences', 0)} differences "
                f"({s.get('dead_lettered', 0)} keys dead-lettered), {s.get('seconds', 0):.0f} s (services up at "
                f"{s.get('t_services')} s, daemon at {s.get('t_daemon')}, operations done at {s.get('t_ops')}, "
                f"verify calls {s.get('verify_calls')})")


def _cdc(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, CDC_SOURCE__PASSWORD="cdc-secret")
    return subprocess.run([sys.executable, "-m", "cdc.cli", *args, "-c", str(config)], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=REPO)


class Daemon:
    """``cdc run`` (or a reader and a sinks process) as real processes, logs kept per start."""

    def __init__(self, config: Path, logs: Path, roles: bool) -> None:
        self.config, self.logs = config, logs
        self.parts = {"reader": ["--role", "reader"], "sinks": ["--role", "sinks"]} if roles else {"daemon": []}
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts = 0
        self.exits: list[str] = []  # processes that ended without being killed

    def start(self, part: str | None = None) -> None:
        for name in [part] if part else list(self.parts):
            self.starts += 1
            log = open(self.logs / f"{name}-{self.starts:03d}.log", "wb")  # noqa: SIM115 - the child keeps it
            env = dict(os.environ, CDC_SOURCE__PASSWORD="cdc-secret")
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "cdc.cli", "run", "-c", str(self.config), *self.parts[name]],
                                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            log.close()

    def check(self) -> None:
        """Restart a process that exited by itself (recorded: the daemon must never exit)."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.exits.append(f"{name} exited by itself with status {proc.returncode} (log {self.logs}/{name}-*.log)")
                self.start(name)

    def kill(self, rng: random.Random) -> str:
        name = rng.choice(sorted(self.procs))
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        else:
            self.check()
        self.start(name)
        return name

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


_BENIGN = re.compile(r"connect|connection|lost|refused|closed|timed? ?out|gone away|broker|state store|shutdown|shutting|"
                     r"stream|reset by peer|EOF|AMQP|Errno|unavailable|not available|server has gone|lease|restart|"
                     r"interrupted|publisher|confirm|socket|terminat|2013|2006|2003|1927|OperationalError", re.I)


def reader_data_stops(text: str) -> list[str]:
    """Reader restarts whose reason is not a lost connection or a service restart: the reader stopped on data."""
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = str(entry.get("event") or entry.get("message") or entry.get("msg") or "")
        level = str(entry.get("level", "")).lower()
        if message.startswith("reader:") and "resuming from" in message and not _BENIGN.search(message.split("; resuming")[0]):
            found.append(message[:400])
        elif level in ("error", "critical") and ("Traceback" in line or "decode" in message.lower()) and not _BENIGN.search(message):
            found.append(message[:400])
    return found


def _connect(svc, autocommit=True):
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=svc.mariadb.port, user="root", autocommit=autocommit, database=DB,
                           charset="utf8mb4", connect_timeout=5, read_timeout=120, write_timeout=120)


def run(ops: list[dict], opts: Options) -> Result:
    """Execute ``ops`` on fresh private services and check every sink; a Result with the problems found."""
    started = time.monotonic()
    root = opts.workdir or Path(tempfile.mkdtemp(prefix=f"chaos-{opts.seed}-"))
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # the postgres and rabbitmq users reach their folders through it
    rng = random.Random(opts.seed ^ 0x5EED)  # fault details (which process, pauses): reproducible too
    stats: dict = {"seed": opts.seed, "batch_events": opts.batch_events, "ops": len(ops) - 1, "statements": 0, "refused": 0,
                   "ddl": 0, "snapshots": 0, "faults": 0, "fault_kinds": {}}
    problems: list[str] = []
    svc = PrivateServices(root / "services", tuple(["mariadb", "postgres", "redis", "rabbitmq", "search"]))
    daemon = None
    log = (lambda *a: print(*a, flush=True)) if opts.verbose else (lambda *a: None)
    try:
        svc.__enter__()
        stats["t_services"] = round(time.monotonic() - started, 1)
        with svc.mariadb.root_connection() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB}")
        svc.postgres.create_database("crm")
        svc.postgres.create_database("state")
        config = write_config(root, svc, opts)
        execute(svc, ops[0], stats, log)  # the tables and their first rows
        init = _cdc(config, "mappings", "init", "--sinks", ",".join(s for s in opts.sinks if s in SINKS))
        if init.returncode != 0:
            problems.append(f"cdc mappings init failed ({init.returncode}): {init.stdout[-2000:]}{init.stderr[-2000:]}")
            return Result(False, problems, stats, root)
        daemon = Daemon(config, root / "logs", opts.roles)
        daemon.start()
        stats["t_daemon"] = round(time.monotonic() - started, 1)
        for index, op in enumerate(ops[1:], 1):
            daemon.check()
            if op["t"] == "fault":
                fault(op["what"], svc, daemon, rng, stats, log)
            elif op["t"] == "snapshot":
                stats["snapshots"] += 1
                out = _cdc(config, "snapshot", "start", f"{DB}.{op['table']}")
                if out.returncode != 0 and "not mapped" not in out.stderr + out.stdout:
                    problems.append(f"op {index}: cdc snapshot start failed: {out.stderr[-500:]}")
            else:
                execute(svc, op, stats, log)
            if opts.pace_s:
                time.sleep(opts.pace_s)
        daemon.check()
        stats["t_ops"] = round(time.monotonic() - started, 1)
        problems += converge(config, svc, daemon, opts, stats, log)
        daemon.check()
        problems += daemon.exits
        stops = reader_data_stops(daemon.text())
        problems += [f"the reader stopped on data: {s}" for s in stops]
        stats["reader_data_stops"] = len(stops)
    except Exception as exc:  # noqa: BLE001 - a harness failure is a failed run, with its reason
        import traceback

        problems.append(f"harness error: {exc!r}\n{traceback.format_exc()[-3000:]}")
    finally:
        if daemon is not None:
            daemon.stop()
        svc.close()
        stats["seconds"] = time.monotonic() - started
        if not problems and not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
    return Result(not problems, problems, stats, root)


def write_config(root: Path, svc, opts: Options) -> Path:
    mappings = root / "mappings"
    mappings.mkdir(exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    sinks = {
        "crm": f'  crm: {{type: crm, url: "{svc.postgres.url("crm")}", schema_name: crm, batch_size: 500}}\n',
        "cache": f'  cache: {{type: cache, url: "{svc.redis.url(0)}", key_prefix: chaos, batch_size: 500}}\n',
        "search": f'  search: {{type: search, url: "{svc.search_url}", index_prefix: chaos, batch_size: 500}}\n',
    }
    config = root / "cdc.yaml"
    config.write_text(f"""
source: {{name: chaos, host: 127.0.0.1, port: {svc.mariadb.port}, user: cdc, databases: [{DB}], start_at: latest,
          heartbeat_s: 1, read_timeout_s: 10, lease_ttl_s: 3, replica_server_id: {random.randint(10_000, 2**31)}}}
broker: {{url: "{svc.rabbitmq.url}", exchange: cdc.chaos, batch_events: {opts.batch_events}}}
state: {{url: "{svc.postgres.url("state")}"}}
mappings: {{dir: {mappings}}}
snapshot: {{chunk_size: 200, workers: 1}}
sinks:
{"".join(sinks[s] for s in opts.sinks)}metrics: {{enabled: false}}
log: {{format: json, level: INFO}}
""")
    return config


def execute(svc, op: dict, stats: dict, log) -> None:
    """One operation's statements; a statement the server refuses is part of the workload (counted)."""
    import pymysql

    for attempt in range(3):
        try:
            conn = _connect(svc)
            break
        except pymysql.err.OperationalError:
            time.sleep(1 + attempt)
    else:
        conn = _connect(svc)
    with conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = %s", (op.get("mode", ""),))
        if op["t"] == "ddl":
            stats["ddl"] += 1
        txn = op["t"] == "txn"
        if txn:
            cur.execute("BEGIN")
        for sql in op["sql"]:
            stats["statements"] += 1
            try:
                cur.execute(sql)
            except (pymysql.err.DataError, pymysql.err.IntegrityError, pymysql.err.ProgrammingError,
                    pymysql.err.OperationalError, pymysql.err.InternalError) as exc:
                if exc.args and exc.args[0] in (2006, 2013, 2003):
                    raise
                stats["refused"] += 1
                log(f"refused: {exc.args} {sql[:200]}")
        if txn:
            cur.execute(op.get("end", "COMMIT"))


def fault(what: str, svc, daemon: Daemon, rng: random.Random, stats: dict, log) -> None:
    stats["faults"] += 1
    kinds = stats["fault_kinds"]
    kinds[what] = kinds.get(what, 0) + 1
    log(f"fault: {what}")
    if what == "kill":
        time.sleep(rng.random() * 2)  # somewhere in what the daemon is doing
        daemon.kill(rng)
        return
    service = {"rabbitmq": svc.rabbitmq, "postgres": svc.postgres, "mariadb": svc.mariadb, "redis": svc.redis}[what]
    service.stop()
    time.sleep(rng.random() * 3)
    service.start()


def fetch_letters(config: Path, sinks: tuple[str, ...]) -> dict[str, list[dict]]:
    """Every DLQ's letters (the reader's and each sink's), by queue."""
    out = {}
    for name, args in [("reader", ["--reader"])] + [(s, ["--sink", s]) for s in sinks]:
        res = _cdc(config, "dlq", "list", *args, "--json", "--limit", "100000")
        try:
            out[name] = json.loads(res.stdout) if res.returncode == 0 else []
        except ValueError:
            out[name] = []
    return out


def converge(config: Path, svc, daemon: Daemon, opts: Options, stats: dict, log) -> list[str]:
    """Wait until ``cdc verify`` finds every sink equal to the source (or only dead-lettered keys differ)."""
    deadline = time.monotonic() + opts.converge_s
    reports, problems = None, []
    stats["verify_calls"] = 0
    while True:
        daemon.check()
        stats["verify_calls"] += 1
        out = _cdc(config, "verify", "--json", timeout=300)
        try:
            reports = json.loads(out.stdout) if out.returncode in (0, 3) else None
        except ValueError:
            reports = None
        if reports is not None and out.returncode == 0:
            break
        if time.monotonic() > deadline:
            if reports is None:
                problems.append(f"cdc verify failed ({out.returncode}): {out.stderr[-1500:]}")
                return problems
            break
        time.sleep(3)
    letters = fetch_letters(config, opts.sinks)
    dead: dict[str, dict[str, str]] = {}  # entity -> key -> reason
    for queue, items in letters.items():
        for item in items:
            dead.setdefault(item.get("entity") or "", {})[str(item.get("key"))] = f"{queue}: {item.get('reason')}"
    stats["dead_letters"] = sum(len(v) for v in letters.values())
    if stats["dead_letters"]:
        problems.append("dead letters (every one is a row the service could not deliver): "
                        + "; ".join(f"{q}: {i.get('entity')} {i.get('key')}: {str(i.get('reason'))[:200]}"
                                    for q, items in letters.items() for i in items[:5]))
    counts = source_counts(svc, config)
    stats["rows"] = sum(counts.values())
    differences = dead_lettered = 0
    for report in reports:
        entity, sink = report["entity"], report["sink"]
        keys = [("missing in sink", k) for k in report["missing"]] + [("not in source", k) for k in report["extra"]] + \
               [("different", k) for k in report["different"]]
        explained = [k for _, k in keys if k in dead.get(entity, {})]
        dead_lettered += len(explained)
        real = [(label, k) for label, k in keys if k not in dead.get(entity, {})]
        differences += report["differences"] - len(explained)
        if real:
            problems.append(f"sink {sink}, entity {entity}: {report['differences']} differences "
                            f"(source {report['source_rows']} rows, sink {report['sink_rows']}): "
                            + ", ".join(f"{label} {k!r}" for label, k in real[:10]))
        if entity in counts and counts[entity] != report["source_rows"]:
            problems.append(f"entity {entity}: the source table has {counts[entity]} rows but cdc verify saw "
                            f"{report['source_rows']} distinct keys (keys whose key strings collide)")
        if entity in counts and report["sink_rows"] != counts[entity] and not report["differences"]:
            problems.append(f"sink {sink}, entity {entity}: {report['sink_rows']} rows for {counts[entity]} in the source")
    stats["differences"] = differences
    stats["dead_lettered"] = dead_lettered
    return problems


def source_counts(svc, config: Path) -> dict[str, int]:
    """Entity -> COUNT(*) of its source table, through the mapping files."""
    import yaml

    out = {}
    mappings = config.parent / "mappings"
    with _connect(svc) as conn, conn.cursor() as cur:
        for path in mappings.glob("*.yaml"):
            raw = yaml.safe_load(path.read_text())
            cur.execute(f"SELECT COUNT(*) FROM {ident(raw['source']['table'])}")
            out[raw["entity"]] = cur.fetchone()[0]
    return out


# ---------------------------------------------------------------------------------------------- shrinking

def shrink(ops: list[dict], opts: Options, budget_s: float, report) -> list[dict]:
    """The smallest operation list found that still fails: the shortest failing prefix (bisection), then
    delta debugging (ddmin) over its operations, every candidate run on fresh services, within ``budget_s``."""
    deadline = time.monotonic() + budget_s
    setup, body = ops[0], ops[1:]

    def fails(candidate: list[dict]) -> bool:
        if time.monotonic() > deadline:
            return False
        result = run([setup, *candidate], Options(**{**opts.__dict__, "workdir": None, "keep": False, "verbose": False}))
        report(f"  shrink: {len(candidate)} operations -> {'fails' if not result.ok else 'passes'}")
        return not result.ok

    lo, hi = 0, len(body)  # the prefix of length hi fails; find the shortest
    while lo < hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        if fails(body[:mid]):
            hi = mid
        else:
            lo = mid + 1
    body = body[:hi]
    n = 2
    while len(body) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(body) // n)
        subsets = [body[i:i + chunk] for i in range(0, len(body), chunk)]
        reduced = False
        for i in range(len(subsets)):
            complement = [op for j, s in enumerate(subsets) if j != i for op in s]
            if fails(complement):
                body, n, reduced = complement, max(n - 1, 2), True
                break
        if not reduced:
            if n >= len(body):
                break
            n = min(len(body), n * 2)
    return [setup, *body]


# ---------------------------------------------------------------------------------------------- command line

def plan(seed: int, n_ops: int, faults: list[str], n_faults: int, big_rows: int = 3000) -> list[dict]:
    return Generator(seed, n_ops, faults, n_faults, big_rows=big_rows).generate()


def options_for(seed: int, batch_events: int | None = None, **kw) -> Options:
    """``batch_events`` alternates by seed unless given: even seeds one event a message, odd seeds batches."""
    return Options(seed=seed, batch_events=batch_events if batch_events is not None else (1 if seed % 2 == 0 else 50), **kw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, help="the run's seed (default: random, printed)")
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds in a row, from --seed on")
    parser.add_argument("--ops", type=int, default=500, help="operations per run")
    parser.add_argument("--faults", default=",".join(ALL_FAULTS), help=f"fault kinds ({','.join(ALL_FAULTS)}; '' for none)")
    parser.add_argument("--fault-count", type=int, help="faults per run (default: one per 100 operations, at least 1)")
    parser.add_argument("--batch-events", type=int, help="broker.batch_events (default: 1 for even seeds, 50 for odd)")
    parser.add_argument("--roles", action="store_true", help="run a reader and a sinks process (kills hit one of them)")
    parser.add_argument("--sinks", default=",".join(SINKS))
    parser.add_argument("--big-rows", type=int, default=3000, help="rows of the biggest transaction")
    parser.add_argument("--replay", type=Path, help="run the operation list of this file (written by a failing run)")
    parser.add_argument("--shrink-budget", type=float, default=900, help="seconds spent shrinking a failure (0: none)")
    parser.add_argument("--converge", type=float, default=240, help="seconds to wait for the sinks to catch up")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()), help="where failing operation lists go")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, config, mappings)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    sinks = tuple(s for s in args.sinks.split(",") if s)
    if args.replay:
        saved = json.loads(args.replay.read_text())
        seeds = [(saved["seed"], saved["ops"], saved.get("batch_events"), saved.get("roles", False))]
    else:
        first = args.seed if args.seed is not None else random.randrange(2**31)
        seeds = [(s, None, args.batch_events, args.roles) for s in range(first, first + args.seeds)]
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(ALL_FAULTS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {','.join(ALL_FAULTS)}")
    totals = {"runs": 0, "failed": 0, "ops": 0, "faults": 0, "differences": 0, "seconds": 0.0}
    failed_seeds = []
    for seed, ops, batch, roles in seeds:
        n_faults = args.fault_count if args.fault_count is not None else max(1, args.ops // 100)
        ops = ops or plan(seed, args.ops, faults, n_faults, args.big_rows)
        opts = options_for(seed, batch, roles=roles, sinks=sinks, converge_s=args.converge, keep=args.keep, verbose=args.verbose)
        print(f"chaos: seed {seed}, {len(ops) - 1} operations, faults {faults or 'none'}, batch_events {opts.batch_events}"
              f"{', roles' if roles else ''}", flush=True)
        result = run(ops, opts)
        print(result.summary(), flush=True)
        totals["runs"] += 1
        for k in ("ops", "faults", "differences", "seconds"):
            totals[k] += result.stats.get(k, 0)
        if result.ok:
            continue
        totals["failed"] += 1
        failed_seeds.append(seed)
        for problem in result.problems:
            print(f"  PROBLEM {problem}", flush=True)
        print(f"  work directory (logs, config, mappings): {result.workdir}")
        path = args.out / f"chaos-{seed}.json"
        path.write_text(json.dumps({"seed": seed, "batch_events": opts.batch_events, "roles": roles, "ops": ops}))
        print(f"  operations: {path}; replay: python bench/chaos.py --replay {path}")
        if args.shrink_budget > 0:
            small = shrink(ops, opts, args.shrink_budget, lambda m: print(m, flush=True))
            spath = args.out / f"chaos-{seed}-min.json"
            spath.write_text(json.dumps({"seed": seed, "batch_events": opts.batch_events, "roles": roles, "ops": small}, indent=1))
            print(f"  shrunk to {len(small) - 1} operations: {spath}")
            for op in small[1:]:
                print(f"    {json.dumps(op)[:300]}")
            print(f"  replay: python bench/chaos.py --replay {spath}")
    print(f"chaos: {totals['runs']} runs, {totals['failed']} failed {failed_seeds or ''}, {totals['ops']} operations, "
          f"{totals['faults']} faults, {totals['differences']} differences, {totals['seconds']:.0f} s", flush=True)
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
