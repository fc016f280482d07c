"""The one error-classification helper of the sinks: a driver's exception becomes a
:class:`~cdc.domain.errors.TransientError` (retry the batch later) or a
:class:`~cdc.domain.errors.TerminalError` (stop, the operator must act) at the sink's edge, by a
table per sink (as dlt's ``raise_database_error`` does for its destinations).

    _ERRORS = ErrorTable(
        catch=redis.exceptions.RedisError,
        rules=[Rule(rx.AuthenticationError, TerminalError, "{doing}: {detail} (check the credentials ...)"),
               Rule(rx.ConnectionError, TransientError)],
        otherwise=TerminalError)

    with _ERRORS.translate(f"cache sink {name!r} writing", secrets=url_secrets(url)):
        client.eval(...)

A rule matches by exception class (one or a tuple) or by a predicate; its ``message`` is a format
string over ``doing``, ``detail`` (the driver's text, secrets redacted), the table's ``fields``
(e.g. an HTTP status) and the caller's context (e.g. ``sink``), keeping each sink's recovery text. The first matching rule wins; an exception
of ``catch`` no rule matches becomes ``otherwise`` (None: it propagates unchanged), and the project's
own errors always propagate unchanged. Drivers are imported lazily, so a sink builds its table on
first use (``functools.cache``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc.domain.errors import ConfigError, TerminalError, TransientError
from cdc.domain.redact import redact_text

ErrorClass = type[TransientError] | type[TerminalError]
Match = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException, dict[str, Any]], bool]


@dataclass(frozen=True)
class Rule:
    """``when`` the exception matches (a class, a tuple of classes or ``predicate(exc, fields)``), raise ``error``."""

    when: Match
    error: ErrorClass
    message: str = "{doing}: {detail}"

    def matches(self, exc: BaseException, fields: dict[str, Any]) -> bool:
        if isinstance(self.when, type | tuple):
            return isinstance(exc, self.when)
        return bool(self.when(exc, fields))


def first_line(exc: BaseException) -> str:
    """The exception's text, or its class name when it has none."""
    return str(exc) or type(exc).__name__


@dataclass
class ErrorTable:
    """A sink's table: which driver exceptions it translates (``catch``) and into what (``rules``)."""

    catch: type[BaseException] | tuple[type[BaseException], ...]
    rules: Sequence[Rule]
    otherwise: ErrorClass | None = TerminalError
    detail: Callable[[BaseException], str] = first_line
    fields: Callable[[BaseException], dict[str, Any]] = field(default=lambda exc: {})
    chain: bool = False  # raise ... from the driver's exception (else from None: the message says it all)

    def classify(self, exc: BaseException, doing: str = "", secrets: Iterable[str] = (),
                 **context: Any) -> TransientError | TerminalError | None:
        """The project error ``exc`` becomes, or None when it is not this table's to translate. ``context``:
        more names for the messages (e.g. ``sink``)."""
        if isinstance(exc, (TransientError, TerminalError, ConfigError)) or not isinstance(exc, self.catch):
            return None
        fields = self.fields(exc)
        values = {**context, **fields, "doing": doing, "detail": redact_text(self.detail(exc), secrets)}
        for rule in self.rules:
            if rule.matches(exc, values):
                return rule.error(rule.message.format(**values))
        return self.otherwise(f"{doing}: {values['detail']}") if self.otherwise is not None else None

    @contextlib.contextmanager
    def translate(self, doing: str, secrets: Iterable[str] = (), **context: Any) -> Iterator[None]:
        """Run the block; a driver exception leaves it as the project error :meth:`classify` gives."""
        try:
            yield
        except BaseException as exc:
            error = self.classify(exc, doing, secrets, **context)
            if error is None:
                raise
            if self.chain:
                raise error from exc
            raise error from None
