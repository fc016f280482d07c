"""The one secret redactor (cdc.domain.redact), with generated inputs: the secret never survives, the rest does."""

import logging
from urllib.parse import quote

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cdc.domain.redact import RedactingFilter, redact_text, redact_url, secret_forms, url_secrets

# passwords: the characters a URL has to escape, and unicode, never whitespace
_SPECIAL = "@:/%?#[]'\"\\ é€漢🔑"
passwords = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")) | st.sampled_from(_SPECIAL.replace(" ", "")),
                    min_size=1, max_size=24)
users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
hosts = st.sampled_from(["127.0.0.1", "rabbit.example", "db-1.internal", "[::1]", "localhost"])
schemes = st.sampled_from(["amqp", "amqps", "postgresql", "postgresql+psycopg", "redis", "rediss", "https", "http"])
tails = st.sampled_from(["", "/", "/%2F", "/crm", "/0?tls_ca=/ca.pem", "/db?sslmode=verify-full"])
# surrounding text: no whitespace-free token can hold the secret (it is checked), no "password=" net
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,;()-_", max_size=40)


def _url(scheme: str, user: str, password: str, host: str, port: int | None, tail: str) -> str:
    return f"{scheme}://{user}:{quote(password, safe='')}@{host}{f':{port}' if port else ''}{tail}"


def _gone(secret: str, text: str) -> bool:
    return all(form not in text for form in secret_forms(secret) if len(form) >= 1) and secret not in text


ports = st.none() | st.integers(1, 65535)


@settings(max_examples=300, deadline=None)
@given(schemes, users, passwords, hosts, ports, tails)
def test_redact_url_hides_the_password_keeps_the_rest(scheme, user, password, host, port, tail):
    url = _url(scheme, user, password, host, port, tail)
    safe = redact_url(url)
    assert safe == f"{scheme}://{user}:***@{host}{f':{port}' if port else ''}{tail}"
    assert url_secrets(url) and quote(password, safe="") in url_secrets(url) and password in url_secrets(url)


@settings(max_examples=300, deadline=None)
@given(users, passwords.filter(lambda p: "/" not in p and "?" not in p and "#" not in p and "[" not in p and "]" not in p),
       hosts, tails)
def test_a_raw_password_with_at_and_colon_is_redacted_too(user, password, host, tail):
    url = f"amqp://{user}:{password}@{host}{tail}"
    assert redact_url(url) == f"amqp://{user}:***@{host}{tail}"
    assert redact_text(f"cannot connect to {url}: refused") == f"cannot connect to amqp://{user}:***@{host}{tail}: refused"


@settings(max_examples=300, deadline=None)
@given(schemes, users, passwords, hosts, ports, tails, words, words)
def test_urls_in_free_text_lose_their_password(scheme, user, password, host, port, tail, before, after):
    url = _url(scheme, user, password, host, port, tail)
    text = f"{before} {url} {after}"
    out = redact_text(text)
    assert out == f"{before} {scheme}://{user}:***@{host}{f':{port}' if port else ''}{tail} {after}"


@settings(max_examples=300, deadline=None)
@given(passwords, words, words, st.sampled_from(["str", "repr", "repr-exc", "quoted"]))
def test_known_secrets_never_survive_in_messages_and_reprs(secret, before, after, shape):
    assume(all(form not in before and form not in after for form in secret_forms(secret)))
    message = f"{before} {secret} {after}"
    exc = ConnectionError(message)
    text = {"str": str(exc), "repr": repr(message), "repr-exc": repr(exc), "quoted": f"{before} {quote(secret, safe='')} {after}"}[shape]
    out = redact_text(text, [secret])
    assert _gone(secret, out), (text, out)
    for word in before.split() + after.split():
        assert word in out


def test_keyword_values_and_the_filter():
    assert redact_text("amqp://guest:hunter2@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert "hunter2" not in redact_text("connect failed password=hunter2 host=x")
    assert "hunter2" not in redact_text("{'passwd': 'hunter2'}")
    assert redact_url("amqp://rabbit.example/") == "amqp://rabbit.example/"
    assert redact_url("amqp://[::1", "<unparseable broker URL>") == "<unparseable broker URL>"
    assert url_secrets("redis://cache:6379/0") == []
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "cannot reach %s with %r", ("postgresql://u:p%40ss@db/crm", "k3y"), None)
    assert RedactingFilter(["k3y"]).filter(record)
    assert record.getMessage() == "cannot reach postgresql://u:***@db/crm with '***'"
