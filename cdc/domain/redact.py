"""The one secret redactor: every URL, message, log line, status text and metric label that may hold a
secret goes through here before an operator sees it.

* :func:`redact_url` -- a URL with the password of its userinfo replaced by ``***`` (the rest as written);
* :func:`url_secrets` -- the forms a URL's password can take in a driver's message (as written,
  percent-decoded, percent-encoded, repr-escaped), for :func:`redact_text`;
* :func:`redact_text` -- free text with the known secrets, the passwords of URLs in it and
  ``password=``/``token:``-style values replaced by ``***``;
* :class:`RedactingFilter` -- a :mod:`logging` filter applying :func:`redact_text` to each record.

Pure functions of their arguments (the filter holds only its secrets); nothing here does I/O.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

MASK = "***"

# scheme://user:password@host -- the password runs to the LAST '@' before the path (an '@' in it is legal)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^/\s]*@")
_KEYWORDS = re.compile(r"((?:password|passwd|secret|token)['\"]?\s*[=:]\s*['\"]?)[^\s'\",}]+", re.IGNORECASE)


def redact_url(url: str, unparseable: str = "<unparseable URL>") -> str:
    """``url`` with its password replaced by ``***``; scheme, user, host, port, path and query as written.
    A URL without a password comes back unchanged; one that does not parse comes back as ``unparseable``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return unparseable
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def url_secrets(url: str) -> list[str]:
    """The password of ``url`` in every form a message may show it, longest first (none: an empty list)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return secret_forms(password) if password else []


def secret_forms(secret: str) -> list[str]:
    """``secret`` as given, percent-decoded and -encoded and escaped as ``repr`` shows it, longest first."""
    if not secret:
        return []
    plain = unquote(secret)
    forms: set[str] = set()
    for value in (secret, plain):
        forms.update({value, quote(value, safe=""), quote(value), quote_plus(value), repr(value)[1:-1]})
    forms.discard("")
    return sorted(forms, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every form of each known secret, the passwords of URLs and ``password=x``-style
    values replaced by ``***``. The secrets go first: their forms are exact, the patterns are a net."""
    forms = sorted({form for secret in secrets for form in secret_forms(secret)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, MASK)
    return _KEYWORDS.sub(rf"\1{MASK}", _URL_PASSWORD.sub(rf"\1{MASK}@", text))


def redact_mapping(values: MutableMapping[str, Any], secrets: Iterable[str] = ()) -> MutableMapping[str, Any]:
    """Every text value of ``values`` through :func:`redact_text`, in place (a structlog event dict, a record's fields)."""
    secrets = tuple(secrets)
    for key, value in list(values.items()):
        if isinstance(value, str):
            values[key] = redact_text(value, secrets)
    return values


class RedactingFilter(logging.Filter):
    """A logging filter: the record's message (its arguments merged in) and exception text redacted,
    with ``secrets`` (values known to be secret, e.g. from the settings) besides the patterns."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True
