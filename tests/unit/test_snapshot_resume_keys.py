"""A snapshot's resume key (issue 19, 2): the last key of the last confirmed chunk is stored so that it reads
back as the very values the driver gave, whatever their type (bytes of a BINARY key included), and the
untagged lists earlier versions stored still read. Keys are generated from a printed seed."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import random

import orjson
import pytest

from cdc.snapshot import _stored_last_key, decode_resume_key, encode_resume_key

EDGE_BYTES = [b"", b"\x00", b"\xff", b"\x00" * 16, b"\xff" * 16, b"\x7f\x80", b"b'x'", b"\\", b"'\"", b"\x00\xff\x00",
              bytes(range(256))]


@pytest.fixture
def rng():
    seed = int(os.environ.get("CDC_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed} (CDC_TEST_SEED={seed} repeats this run)")
    return random.Random(seed)


def _value(rng: random.Random):
    kind = rng.choice(["int", "bigint", "str", "bytes", "bytes", "edge", "decimal", "date", "datetime", "timedelta", "float"])
    if kind == "int":
        return rng.randint(-2**31, 2**31)
    if kind == "bigint":
        return rng.choice([2**64 - 1, -2**63, 2**53 + 1, 0])
    if kind == "str":
        return "".join(rng.choice("aZ0 %'\"\\\x00é€😀B") for _ in range(rng.randint(0, 8)))
    if kind == "bytes":
        return bytes(rng.choice([0, 1, 0x7f, 0x80, 0xfe, 0xff, rng.randrange(256)]) for _ in range(rng.choice([1, 4, 16])))
    if kind == "edge":
        return rng.choice(EDGE_BYTES)
    if kind == "decimal":
        return decimal.Decimal(f"{rng.randint(-10**12, 10**12)}.{rng.randint(0, 10**6):06d}")
    if kind == "date":
        return dt.date(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28))
    if kind == "datetime":
        return dt.datetime(rng.randint(1000, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                           rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, 1, 999999, rng.randrange(10**6)]))
    if kind == "timedelta":
        return dt.timedelta(hours=rng.randint(-838, 838), seconds=rng.randint(0, 3599), microseconds=rng.randrange(10**6))
    return rng.choice([0.1, -0.0, 1e308, 5e-324, rng.random()])


def test_generated_keys_read_back_exactly_with_their_types(rng):
    for _ in range(2000):
        key = tuple(_value(rng) for _ in range(rng.randint(1, 4)))
        stored = encode_resume_key(key)
        back = decode_resume_key(stored)
        assert back == key and [type(v) for v in back] == [type(v) for v in key], (key, stored)
        assert _stored_last_key({"last_key": stored}) == key
        assert "\n" not in stored and orjson.loads(stored)["v"] == 2


@pytest.mark.parametrize("key", [(b,) for b in EDGE_BYTES] + [(7, "a|b", b"\x00\xff", dt.date(2024, 2, 29))])
def test_binary_keys_are_not_stored_as_their_text(key):
    assert decode_resume_key(encode_resume_key(key)) == key
    tags = [tag for tag, _ in orjson.loads(encode_resume_key(key))["key"]]
    assert [tag == "bytes" for tag in tags] == [isinstance(v, bytes) for v in key]  # tagged, never "b'\\x00'"


def test_keys_stored_by_earlier_versions_still_read(rng):
    """Untagged lists (``orjson.dumps(list(key), default=str)``): JSON's own values as before; a binary key's
    text ``b'...'`` read back as the bytes it spells (its repr: exact)."""
    for _ in range(500):
        key = tuple(_value(rng) for _ in range(rng.randint(1, 3)))
        old = orjson.dumps(list(key), default=str).decode()
        expected = tuple(v if isinstance(v, bytes) else orjson.loads(orjson.dumps(v, default=str)) for v in key)
        assert decode_resume_key(old) == expected, (key, old)
    assert decode_resume_key('[42, "abc", "2024-01-31"]') == (42, "abc", "2024-01-31")
    assert decode_resume_key(orjson.dumps([str(b"\x00\xff'\"")]).decode()) == (b"\x00\xff'\"",)
    with pytest.raises(ValueError, match="unreadable snapshot resume key"):
        decode_resume_key('{"v": 99}')
