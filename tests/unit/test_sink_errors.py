"""The sinks' one error-classification helper (cdc.sinks.errors): each sink's table, driver exception by exception."""

import httpx
import psycopg
import pytest
import redis.exceptions as rx
import sqlalchemy.exc as sa_exc
from opensearchpy import exceptions as ox

from cdc.domain.errors import ConfigError, TerminalError, TransientError
from cdc.sinks import cache, crm, search, webhook
from cdc.sinks.errors import ErrorTable, Rule


def _sa(orig: BaseException, cls=sa_exc.OperationalError, invalidated=False):
    return cls("SELECT 1", {}, orig, connection_invalidated=invalidated)


CASES = [
    # (table, driver exception, expected class or None = propagates unchanged, text the message must hold)
    (cache, rx.ConnectionError("Connection refused"), TransientError, "Connection refused"),
    (cache, rx.TimeoutError("Timeout reading"), TransientError, "Timeout reading"),
    (cache, rx.ReadOnlyError("READONLY replica"), TransientError, "READONLY"),
    (cache, rx.ResponseError("BUSY Redis is busy running a script"), TransientError, "BUSY"),
    (cache, rx.AuthenticationError("invalid password s3cret"), TerminalError, "check the credentials and ACL of the cache URL"),
    (cache, rx.NoPermissionError("NOPERM"), TerminalError, "check the credentials and ACL"),
    (cache, rx.ResponseError("WRONGTYPE Operation"), TerminalError, "WRONGTYPE"),
    (cache, ValueError("not redis"), None, ""),
    (search, ox.ConnectionError("N/A", "refused", None), TransientError, "refused"),
    (search, ox.TransportError(503, "unavailable", {}), TransientError, "unavailable"),
    (search, ox.TransportError(429, "too many requests", {}), TransientError, "too many"),
    (search, ox.TransportError("N/A", "no status", {}), TransientError, "no status"),
    (search, ox.AuthenticationException(401, "unauthorized", {}), TerminalError, "credentials in sinks.s.url are refused"),
    (search, ox.SSLError("N/A", "certificate verify failed", None), TerminalError, "TLS failed"),
    (search, ox.RequestError(400, "mapper_parsing_exception", {}), TerminalError, "400"),
    (search, KeyError("x"), None, ""),
    (crm, _sa(psycopg.OperationalError("server closed the connection"), invalidated=True), TransientError, "connection lost"),
    (crm, _sa(psycopg.OperationalError("could not connect")), TransientError, "could not connect"),
    (crm, _sa(psycopg.errors.QueryCanceled("canceling statement")), TransientError, "canceling"),
    (crm, _sa(psycopg.errors.DiskFull("disk full")), TransientError, "disk full"),
    (crm, _sa(psycopg.errors.ProgramLimitExceeded("row too big")), TerminalError, "the CRM schema or grants need fixing"),
    (crm, _sa(psycopg.errors.SerializationFailure("could not serialize"), sa_exc.DBAPIError), TransientError, "serialize"),
    (crm, _sa(psycopg.errors.DeadlockDetected("deadlock detected"), sa_exc.DBAPIError), TransientError, "deadlock"),
    (crm, _sa(psycopg.errors.UndefinedTable("relation missing\nLINE 1"), sa_exc.ProgrammingError), TerminalError,
     "relation missing (the CRM schema or grants need fixing)"),
    (crm, sa_exc.TimeoutError("QueuePool limit"), TransientError, "QueuePool"),
    (crm, ZeroDivisionError("bug"), None, ""),
    (webhook, httpx.ConnectError("refused"), TransientError, "ConnectError: refused"),
    (webhook, httpx.ReadTimeout("slow"), TransientError, "ReadTimeout: slow"),
    (webhook, webhook._Answer(503, "down"), TransientError, "HTTP 503 'down'"),
    (webhook, webhook._Answer(408, ""), TransientError, "HTTP 408"),
    (webhook, webhook._Answer(429, "slow down"), TransientError, "HTTP 429"),
    (webhook, webhook._Answer(400, "bad event"), TerminalError, "HTTP 400 'bad event'"),
    (webhook, webhook._Answer(404, ""), TerminalError, "HTTP 404"),
]


@pytest.mark.parametrize("module, exc, expected, text", CASES, ids=[f"{m.__name__.rsplit('.', 1)[-1]}-{type(e).__name__}-{i}"
                                                                     for i, (m, e, _, _) in enumerate(CASES)])
def test_each_sink_table_sorts_driver_errors(module, exc, expected, text):
    table = module._errors()
    error = table.classify(exc, "sink 's' doing", secrets=["s3cret"], sink="s")
    if expected is None:
        assert error is None
        with pytest.raises(type(exc)), table.translate("doing", sink="s"):
            raise exc
        return
    assert type(error) is expected and text in str(error) and "s3cret" not in str(error)
    with pytest.raises(expected) as info, table.translate("sink 's' doing", secrets=["s3cret"], sink="s"):
        raise exc
    assert str(info.value) == str(error)
    assert (info.value.__cause__ is exc) is table.chain


@pytest.mark.parametrize("module", [cache, search, crm, webhook])
def test_the_project_errors_pass_through(module):
    for err in (TransientError("t"), TerminalError("x"), ConfigError("c")):
        with pytest.raises(type(err)) as info, module._errors().translate("doing"):
            raise err
        assert info.value is err


def test_rules_first_match_wins_and_otherwise():
    table = ErrorTable(catch=OSError, rules=[Rule(TimeoutError, TransientError, "{doing}: {detail} ({n})"),
                                             Rule(lambda e, f: "again" in f["detail"], TransientError)],
                       fields=lambda e: {"n": 7})
    assert str(table.classify(TimeoutError("slow"), "reading")) == "reading: slow (7)"
    assert isinstance(table.classify(OSError("try again"), "x"), TransientError)
    assert isinstance(table.classify(OSError("no"), "x"), TerminalError)
    assert table.classify(ValueError("no"), "x") is None
    assert ErrorTable(catch=OSError, rules=[], otherwise=None).classify(OSError("x")) is None
