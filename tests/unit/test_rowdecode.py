"""The C row decoder (cdc/source/_rowdecode.c) against the Python plan it replaces, on random row images.

tests/integration/test_binlog_decoder.py compares both with the library on rows MariaDB wrote. Here
both decode the same random bytes through the same random plans (every kind, every size, fraction
digits and DECIMAL layout, NULL and absent columns, truncated images, bytes no server writes) and
must agree on everything: the values (by repr), the reasons of None, the position after the row,
or the error raised. Nothing may crash the process.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from cdc.source import row_decoder as bf

pytestmark = pytest.mark.skipif(bf._rowdecode is None, reason="cdc/source/_rowdecode.c is not built: run `pip install -e .`")

ENCODINGS = ["utf8", "cp1252", "ascii", "utf-16-be", "latin1", "swe7"]  # swe7: Python does not know it


def _step(rnd: random.Random, i: int) -> tuple:
    """A random plan step (name, kind, column, args), as binlog_fixes._plan builds them."""
    kind = rnd.choice([bf._INT, bf._STR, bf._DATE, bf._DATETIME2, bf._TIMESTAMP2, bf._DECIMAL])
    name = f"c{i}"
    if kind == bf._INT:
        return name, kind, None, (rnd.choice([1, 2, 3, 4, 8]), rnd.random() < 0.5)
    if kind == bf._STR:
        return name, kind, None, (rnd.choice([1, 1, 2, 3, 4]), rnd.choice(ENCODINGS))
    if kind == bf._DECIMAL:
        precision = rnd.randint(1, 65)
        scale = rnd.randint(0, min(30, precision))
        return name, kind, SimpleNamespace(precision=precision, decimals=scale), bf._decimal_layout(precision, scale)
    return name, kind, None, 0 if kind == bf._DATE else rnd.randint(0, 6)


def _value(rnd: random.Random, step: tuple) -> bytes:
    """The bytes of one value of ``step``: well-formed mostly, else what no server writes (zero parts,
    invalid days, fractions past a second, text not in its encoding)."""
    _, kind, _, args = step
    valid = rnd.random() < 0.8
    if kind == bf._INT:
        return rnd.randbytes(args[0])
    if kind == bf._STR:
        size, encoding = args
        text = rnd.choice(["", "plain", "Zoë €", "😀 ŝ"])
        raw = text.encode("utf-16-be" if encoding == "utf-16-be" else "utf-8") if rnd.random() < 0.7 \
            else rnd.randbytes(rnd.randint(0, 12))
        return len(raw).to_bytes(size, "little") + raw
    if kind == bf._DECIMAL:
        return rnd.randbytes(args[0])
    year, month, day = rnd.randint(1, 9999), rnd.randint(1, 12), rnd.randint(1, 28)
    if kind == bf._DATE:
        return ((year << 9) | (month << 5) | day).to_bytes(3, "little") if valid else rnd.randbytes(3)
    digits = (args + 1) // 2
    fraction = rnd.randrange(100 ** digits).to_bytes(digits, "big") if valid else rnd.randbytes(digits)
    if kind == bf._TIMESTAMP2:
        return rnd.randbytes(4) + fraction
    packed = (1 << 39) | ((year * 13 + month) << 22) | (day << 17) | (rnd.randint(0, 23) << 12) \
        | (rnd.randint(0, 59) << 6) | rnd.randint(0, 59)
    return (packed.to_bytes(5, "big") if valid else rnd.randbytes(5)) + fraction


def _image(rnd: random.Random, steps: tuple, bitmap: bytes) -> bytes:
    """One row image: the NULL bitmap of the present columns, then the values that are not NULL."""
    present = [(int.from_bytes(bitmap, "little") >> i) & 1 for i in range(len(steps))]
    nulls = [rnd.random() < 0.15 for p in present if p]
    values = [_value(rnd, step) for step, p in zip(steps, present) if p]
    return (sum(1 << i for i, n in enumerate(nulls) if n).to_bytes((len(nulls) + 7) // 8, "little")
            + b"".join(v for v, n in zip(values, nulls) if not n))


def _bitmap(rnd: random.Random, columns: int) -> bytes:
    return sum(1 << i for i in range(columns) if rnd.random() < 0.9).to_bytes((columns + 7) // 8, "little")


def _outcome(decode, data: bytes, bitmap: bytes, steps: tuple, errors: str):
    none_sources: dict = {}
    try:
        values, pos = decode(data, 3, bitmap, steps, none_sources, errors)
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return "error", type(exc).__name__, str(exc)
    return "ok", {k: repr(v) for k, v in values.items()}, none_sources, pos


def _case(rnd: random.Random) -> tuple[bytes, bytes, tuple, str]:
    steps = tuple(_step(rnd, i) for i in range(rnd.randint(1, 12)))
    bitmap = _bitmap(rnd, len(steps))
    data = b"pre" + _image(rnd, steps, bitmap) + rnd.randbytes(rnd.choice([0, 0, 2]))
    if rnd.random() < 0.15:
        data = data[:rnd.randint(3, len(data))]  # a truncated image
    if rnd.random() < 0.05:
        data = data[:3] + rnd.randbytes(rnd.randint(0, 40))  # bytes no server writes
    return data, bitmap, steps, rnd.choice(["strict", "ignore"])


def test_the_c_decoder_agrees_with_the_python_plan_on_random_rows():
    rnd = random.Random(20261127)
    kinds_seen: dict[str, int] = {}
    for _ in range(20_000):
        data, bitmap, steps, errors = _case(rnd)
        c_plan = bf._c_plan(steps)
        python = _outcome(bf.decode_row, data, bitmap, steps, errors)
        in_c = _outcome(bf._rowdecode.decode_row, data, bitmap, c_plan, errors)
        assert in_c == python, (data, bitmap, steps, errors)
        key = python[0] if python[0] == "ok" else python[1]
        kinds_seen[key] = kinds_seen.get(key, 0) + 1
    # The cases reach decoded rows and every kind of error the decoders raise.
    assert kinds_seen["ok"] > 8_000 and {"AssertionError", "ValueError", "UnicodeDecodeError"} <= set(kinds_seen), kinds_seen


def test_the_c_decoder_reads_values_at_the_edges():
    steps = (("i", bf._INT, None, (8, True)), ("u", bf._INT, None, (8, False)), ("m", bf._INT, None, (3, True)),
             ("d", bf._DECIMAL, SimpleNamespace(precision=4, decimals=2), bf._decimal_layout(4, 2)),
             ("t", bf._TIMESTAMP2, None, 0), ("s", bf._STR, None, (1, "swe7")))
    c_plan = bf._c_plan(steps)
    data = (b"\x00" + (2**63).to_bytes(8, "little") + (2**64 - 1).to_bytes(8, "little") + (2**23).to_bytes(3, "little")
            + bytes([0x80 ^ 0xFF ^ 0x00, 0xFF ^ 50]) + (2**31).to_bytes(4, "big") + b"\x02ab")
    none_sources: dict = {}
    values, pos = bf._rowdecode.decode_row(data, 0, b"\x3f", c_plan, none_sources, "strict")
    assert pos == len(data) and none_sources == {}
    assert values["i"] == -(2**63) and values["u"] == 2**64 - 1 and values["m"] == -(2**23)
    assert repr(values["d"]) == "Decimal('-0.50')"
    assert values["t"].isoformat() == "1901-12-13T20:45:52"  # a negative TIMESTAMP, as utcfromtimestamp gives it
    assert values["s"] == b"ab"  # an encoding Python does not know: the bytes


@pytest.mark.parametrize("step", [("c", bf._INT, 5, True), ("c", bf._STR, 0, "utf8"), ("c", bf._DATETIME2, 7, None),
                                  ("c", bf._DECIMAL, 66, 0), ("c", bf._DECIMAL, 10, 31), ("c", 99, 0, None)])
def test_a_step_the_c_decoder_cannot_decode_is_refused_by_name(step):
    """A plan outside what MySQL writes is an error naming the column (when it is compiled, once per
    table), never a read out of bounds."""
    with pytest.raises(ValueError, match="column 'c'"):
        bf._rowdecode.decode_row(b"\x00" + bytes(64), 0, b"\x01", bf._rowdecode.compile((step,)), {}, "strict")


def _rows_in_python(data: bytes, end: int, bitmap: bytes, bitmap2: bytes | None, steps: tuple, errors: str):
    """What the library's row loop builds from our Python plan: row dicts with their none_sources."""
    event_none: dict = {}
    rows, pos = [], 3
    while pos < end:
        row = {}
        for prefix, image_bitmap in ((("before_", bitmap), ("after_", bitmap2)) if bitmap2 is not None else (("", bitmap),)):
            values, pos = bf.decode_row(data, pos, image_bitmap, steps, event_none, errors)
            row[f"{prefix}values"] = values
            row[f"{prefix}none_sources"] = {k: event_none.get(k, "null") for k, v in values.items() if v is None}
        rows.append(row)
    return rows, pos, event_none


def _comparable(rows: list) -> list:
    return [{k: ({n: repr(v) for n, v in d.items()} if k.endswith("values") else d) for k, d in row.items()} for row in rows]


def test_the_c_decoder_reads_every_row_of_an_event_as_the_library_loop_does():
    rnd = random.Random(7)
    decoded = 0
    for _ in range(3_000):
        steps = tuple(_step(rnd, i) for i in range(rnd.randint(1, 8)))
        c_plan = bf._c_plan(steps)
        bitmap = _bitmap(rnd, len(steps))
        bitmap2 = _bitmap(rnd, len(steps)) if rnd.random() < 0.5 else None  # an update: before and after images
        images = [_image(rnd, steps, b) for _ in range(rnd.randint(1, 5)) for b in (bitmap, bitmap2) if b is not None]
        data = b"pre" + b"".join(images) + b"crc!"  # the event's checksum follows its last row
        end = len(data) - 4
        errors = rnd.choice(["strict", "ignore"])
        try:
            rows, pos, event_none = _rows_in_python(data, end, bitmap, bitmap2, steps, errors)
            expected = ("ok", _comparable(rows), pos, event_none)
            decoded += 1
        except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
            expected = ("error", type(exc).__name__, str(exc))
        event_none = {}
        try:
            rows, pos = bf._rowdecode.decode_rows(data, 3, end - 3, bitmap, bitmap2, c_plan, event_none, errors)
            got = ("ok", _comparable(rows), pos, event_none)
        except Exception as exc:  # noqa: BLE001
            got = ("error", type(exc).__name__, str(exc))
        assert got == expected, (data, bitmap, bitmap2, steps)
    assert decoded > 1_000
