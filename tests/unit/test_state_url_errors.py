"""A malformed state.url is refused with a ConfigError that names the setting and never holds its password,
at `cdc config check` (load_settings) and where the daemon and the sinks open the store (open_state_store)."""

from __future__ import annotations

import os
import random
import string

import pytest

from cdc.domain.errors import ConfigError
from cdc.runtime.config import load_settings
from cdc.state.store import open_state_store

SEED = int(os.environ.get("CDC_TEST_SEED", random.randrange(2**32)))
# Characters a password may hold in a URL without percent-encoding (so that each form below stays malformed
# for the reason it is built for, not another).
_PASSWORD_CHARS = string.ascii_letters + string.digits + "-._~!$*"


def _password(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters)) + "".join(rng.choice(_PASSWORD_CHARS) for _ in range(rng.randint(8, 24)))


def _forms(rng: random.Random, pw: str) -> list[str]:
    host = rng.choice(["pg.internal", "127.0.0.1", "db-1.example.com"])
    return [
        f"nodialect{rng.randint(0, 99)}://cdc:{pw}@{host}/cdc",  # no such database kind
        f"postgresql+nodriver://cdc:{pw}@{host}/cdc",  # no such driver
        f"cdc:{pw}@{host}/cdc",  # no scheme
        f"://cdc:{pw}@{host}/cdc",
        f"postgresql://cdc:{pw}@{host}:port{rng.randint(0, 9)}/cdc",  # a port that is not a number
        f"postgresql://cdc:{pw}/cdc",  # no host: the password reads as the port
        f"postgresql://cdc:{pw}@[::1/cdc",  # a broken IPv6 address
        f"postgresql://cdc:{pw}@{host}/cdc?sslmode=bogus",
        f"postgresql://cdc:{pw}@{host}/cdc?sslmode=verify-full&sslrootcert=/nonexistent/{rng.randint(0, 9)}.pem",
        f"postgresql://cdc@{host}:port/cdc?password={pw}",  # libpq also takes the password as a parameter
    ]


def test_every_malformed_form_names_the_setting_and_hides_the_password():
    print(f"seed {SEED} (set CDC_TEST_SEED to replay)")
    rng = random.Random(SEED)
    for _ in range(20):
        pw = _password(rng)
        for url in _forms(rng, pw):
            for where, open_it in (("config check", lambda u: load_settings(state={"url": u})),
                                   ("open_state_store", open_state_store)):
                with pytest.raises(ConfigError) as caught:
                    open_it(url)
                message = str(caught.value)
                assert pw not in message, f"{where}: the password is in the error for {url!r}: {message} (seed {SEED})"
                assert "state.url" in message, f"{where}: the error does not name state.url: {message} (seed {SEED})"


def test_a_sink_state_url_is_named_as_such():
    with pytest.raises(ConfigError, match=r"sinks\.search\.state_url") as caught:
        open_state_store("nodialect://cdc:hunter2secret@pg/cdc", setting="sinks.search.state_url")
    assert "hunter2secret" not in str(caught.value)
