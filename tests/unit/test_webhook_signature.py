"""verify_signature, the helper webhook receivers call on every request: whatever the header holds it
answers True or False and never raises (a receiver's framework turns an exception into a 500, which the
sink retries; an attacker's header must not make the receiver fail)."""

from __future__ import annotations

import os
import random
import time

from cdc.sinks.webhook import sign, verify_signature

SECRET = "receiver-secret"
SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))


def _text(rng: random.Random, n: int) -> str:
    """Any code points: ASCII, accents, CJK, emoji, digits of other scripts, lone surrogates."""
    pools = [(0x20, 0x7E), (0xA0, 0x2FF), (0x660, 0x669), (0x4E00, 0x4E80), (0x1F600, 0x1F64F), (0xD800, 0xDFFF), (0, 0x1F)]
    return "".join(chr(rng.randint(*rng.choice(pools))) for _ in range(n))


def _headers(rng: random.Random, body: bytes) -> list:
    now = int(time.time())
    good = sign(SECRET, body, now)
    digest = good.split("v1=", 1)[1]
    i = rng.randrange(len(digest))
    other = digest[i]
    while other == digest[i]:  # a "replacement" by the same character is the genuine signature
        other = _text(rng, 1)
    return [
        _text(rng, rng.randint(0, 40)),
        f"t={now},v1={_text(rng, rng.randint(0, 70))}",  # a current timestamp: the digest is compared
        f"t={now},v1={digest[:i]}{other}{digest[i + 1:]}",  # one character of the real digest replaced
        f"t={now},v1={digest}{_text(rng, rng.randint(1, 3))}",
        f"t={'9' * rng.randint(310, 4000)},v1={digest}",  # a timestamp no float holds
        f"t=-{'9' * rng.randint(310, 4000)},v1={digest}",
        f"t={_text(rng, 5)},v1={digest}",
        f"{_text(rng, 3)}={now},v1={digest}",
        good.encode("utf-8") + _text(rng, 2).encode("utf-8", "surrogatepass"),  # bytes, as some frameworks hand them
    ]


def test_any_header_gives_true_or_false_never_an_exception():
    print(f"seed {SEED} (set CDC_TEST_SEED to replay)")
    rng = random.Random(SEED)
    for _ in range(300):
        body = _text(rng, rng.randint(0, 50)).encode("utf-8", "surrogatepass")
        for header in _headers(rng, body):
            try:
                result = verify_signature(SECRET, body, header)
            except Exception as exc:  # noqa: BLE001 - the failure this test is about
                raise AssertionError(f"verify_signature raised {type(exc).__name__}: {exc} on header {header!r} "
                                     f"(seed {SEED})") from None
            assert result is False, f"header {header!r} accepted (seed {SEED})"


def test_the_real_signature_still_verifies_as_text_and_as_bytes():
    rng = random.Random(SEED)
    for _ in range(50):
        body = _text(rng, rng.randint(0, 50)).encode("utf-8", "surrogatepass")
        header = sign(SECRET, body)
        assert verify_signature(SECRET, body, header) is True
        assert verify_signature(SECRET, body, header.encode("ascii")) is True
        assert verify_signature("another-secret", body, header) is False
