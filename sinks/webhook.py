"""Webhook sink: each change event POSTed to configured HTTP endpoints, signed, retried, in per-key order.

    sinks:
      partners:
        type: webhook
        endpoints:
          billing: {url: "https://billing.example/hooks/cdc"}    # secret: CDC_SINKS__PARTNERS__ENDPOINTS__BILLING__SECRET
          crm_saas: {url: "https://crm.example/in", entities: [member]}

One event per request: the body is the event's JSON (the contract in ``schemas/events/<entity>.json``).
Headers: ``X-CDC-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`` (a receiver
checks it with :func:`verify_signature`, which refuses timestamps older than 5 minutes: replay
protection), ``X-CDC-Event-Id``, ``X-CDC-Version``, ``X-CDC-Entity``, ``X-CDC-Key``.

Order: the events of one key are POSTed one after the other, in version order, to each endpoint;
different keys and different endpoints go in parallel (``concurrency`` keys in flight per endpoint).
A truncate (op ``t``, key null, header ``X-CDC-Key`` empty) is POSTed after every older event of its
batch and before every newer one; the receiver removes the entity's rows below its version and ignores
older events that come later (see docs/consumers.md).

Failures, per endpoint: 2xx is accepted; 408, 429, 5xx, timeouts and connection errors are retried
with capped exponential backoff up to ``max_attempts``; other 4xx are refused for good at once. An
endpoint that is down (no answer after ``max_attempts``) is not tried again in the rest of the batch.

Dead letters per endpoint: an event that some endpoint could not take is dead-lettered with a reason
naming that endpoint (``endpoint <name>: ...``) while the other endpoints get it and go on; a
healthy endpoint is never held back by a broken one. When *every* endpoint failed with retryable
errors and none accepted anything in the batch (our network is down, say), the batch is retried as a
whole instead, with backoff, for as long as it takes: nothing is dead-lettered for an outage of all.
Receivers get at-least-once delivery (a timed-out request may have arrived; a dead letter replayed
goes to every endpoint again): they skip event ids or versions they already have.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from cdc.domain.envelope import ChangeEvent, Op, encode, now_ms
from cdc.domain.errors import TerminalError, TransientError
from cdc.domain.positions import SinkOffset
from cdc.sinks.base import (
    Rejection,
    Sink,
    SinkConfig,
    SinkContext,
    offset_of,
    register_sink,
)
from cdc.sinks.errors import ErrorTable, Rule

log = logging.getLogger("cdc.sinks.webhook")

SIGNATURE_HEADER = "X-CDC-Signature"
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-CDC-Signature`` value for ``body`` at ``timestamp`` (unix seconds, default now)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str | bytes | None, tolerance_s: int = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> bool:
    """For receivers: the signature matches the body and is at most ``tolerance_s`` old (replay protection).

    Any header, text or bytes, gives True or False, never an exception: the header is the sender's to choose."""
    if isinstance(header, (bytes, bytearray)):
        header = bytes(header).decode("utf-8", "surrogateescape")
    try:
        parts = dict(item.split("=", 1) for item in (header or "").split(","))
        t = int(parts["t"])
        age = abs((time.time() if now is None else now) - t)  # OverflowError for a t no float holds
    except (ValueError, KeyError, OverflowError, TypeError, AttributeError):
        return False
    if age > tolerance_s:
        return False
    # Bytes, not str: compare_digest refuses str holding non-ASCII characters (TypeError).
    given = f"t={t},v1={parts.get('v1', '')}".encode("utf-8", "surrogatepass")
    return hmac.compare_digest(sign(secret, body, t).encode("ascii"), given)


class WebhookEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Set from the key under ``endpoints``; names it in logs and dead-letter reasons.")
    url: str = Field(pattern=r"^https?://", description="Where events are POSTed.")
    secret: SecretStr = Field(description="HMAC-SHA256 key shared with the receiver.")
    entities: list[str] = Field(default_factory=lambda: ["*"], description="Entities this endpoint gets ('*' for all).")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (e.g. an API key).")

    def wants(self, entity: str) -> bool:
        return "*" in self.entities or entity in self.entities


class WebhookSinkConfig(SinkConfig):
    type: Literal["webhook"] = "webhook"
    batch_size: int = Field(100, ge=1, le=50_000)
    endpoints: dict[str, WebhookEndpoint] = Field(min_length=1, description="Name -> endpoint.")
    # A batch is applied while the worker's broker connection waits: keep timeout_s * max_attempts plus the
    # backoff well under the broker's heartbeat timeout (60 s by default).
    timeout_s: float = Field(5.0, gt=0, description="Per request.")
    max_attempts: int = Field(5, ge=1, description="Attempts of one event at one endpoint before it is dead-lettered.")
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(10.0, gt=0)
    concurrency: int = Field(8, ge=1, le=256, description="Keys in flight at once per endpoint.")
    state_url: str | None = Field(None, description="State store holding this sink's offset (default: state.url).")

    @field_validator("endpoints")
    @classmethod
    def _named(cls, endpoints: dict[str, WebhookEndpoint]) -> dict[str, WebhookEndpoint]:
        bad = [n for n in endpoints if not re.fullmatch(r"[A-Za-z0-9_.-]+", n)]
        if bad:
            raise ValueError(f"endpoint names {bad} may only hold letters, digits, '_', '.' and '-'")
        return {n: e.model_copy(update={"name": n}) for n, e in endpoints.items()}


class _Outcome:
    """What happened at one endpoint during one batch."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failures: dict[str, str] = {}  # event id -> reason
        self.all_retryable = True
        self.down: str | None = None  # the reason once the endpoint stopped answering
        self.lock = threading.Lock()


class WebhookSink(Sink):
    def __init__(self, name: str, config: WebhookSinkConfig, context: SinkContext | None = None) -> None:
        self.name = name
        self.config = config
        self._clients: dict[str, Any] = {}
        self._store: Any = None
        self._offset: SinkOffset | None = None
        self._stopping = threading.Event()

    def open(self) -> None:
        import httpx

        self._stopping.clear()
        for endpoint in self.config.endpoints.values():
            if endpoint.name not in self._clients:
                self._clients[endpoint.name] = httpx.Client(timeout=self.config.timeout_s, headers={
                    "Content-Type": "application/json", "User-Agent": "cdc-webhook/1", **endpoint.headers})
        if self._store is None and self.config.state_url:
            from cdc.state import open_state_store

            self._store = open_state_store(self.config.state_url, f"sinks.{self.name}.state_url (state.url by default)")
        log.info("webhook sink %s open: %s", self.name, ", ".join(self.config.endpoints))

    def close(self) -> None:
        self._stopping.set()
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def read_offset(self) -> SinkOffset | None:
        if self._store is not None:
            return self._store.load_sink_offset(self.name)
        return self._offset

    # --- one batch -------------------------------------------------------------------------------

    def apply(self, events: Sequence[ChangeEvent]) -> list[Rejection]:
        outcomes = {name: _Outcome() for name in self.config.endpoints}
        for phase in _phases(events):
            by_key: dict[tuple[str, str], list[ChangeEvent]] = {}
            for event in phase:
                by_key.setdefault((event.entity, event.key_str), []).append(event)
            jobs = [(endpoint, sorted(group, key=lambda e: e.version)) for endpoint in self.config.endpoints.values()
                    for (entity, _), group in by_key.items() if endpoint.wants(entity)]
            workers = min(len(jobs), self.config.concurrency * len(self.config.endpoints)) or 1
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"webhook-{self.name}") as pool:
                for future in [pool.submit(self._send_key, endpoint, group, outcomes[endpoint.name]) for endpoint, group in jobs]:
                    future.result()
        if self._stopping.is_set():
            raise TransientError(f"webhook sink {self.name!r} is closing: the batch goes back to the queue")
        failed = {name: o for name, o in outcomes.items() if o.failures}
        if failed and len(failed) == len(self._targeted(events)) and all(
                o.delivered == 0 and o.all_retryable for o in failed.values()):
            first = next(iter(failed.values()))
            raise TransientError(f"webhook sink {self.name!r}: every endpoint failed ({next(iter(first.failures.values()))})")
        reasons: dict[str, list[str]] = {}
        for name, outcome in failed.items():
            for event_id, reason in outcome.failures.items():
                reasons.setdefault(event_id, []).append(f"endpoint {name}: {reason}")
        self._save_offset(offset_of(events, now_ms()))
        return [Rejection(e, "; ".join(reasons[e.id])) for e in events if e.id in reasons]

    def _targeted(self, events: Sequence[ChangeEvent]) -> list[str]:
        entities = {e.entity for e in events}
        return [ep.name for ep in self.config.endpoints.values() if any(ep.wants(x) for x in entities)]

    def _send_key(self, endpoint: WebhookEndpoint, events: list[ChangeEvent], outcome: _Outcome) -> None:
        # One key's events strictly one after the other: a receiver sees them in version order.
        for event in events:
            reason, retryable = (outcome.down, True) if outcome.down else self._deliver(endpoint, event, outcome)
            with outcome.lock:
                if reason is None:
                    outcome.delivered += 1
                else:
                    outcome.failures[event.id] = reason
                    outcome.all_retryable &= retryable

    def _deliver(self, endpoint: WebhookEndpoint, event: ChangeEvent, outcome: _Outcome) -> tuple[str | None, bool]:
        """(None, _) when accepted, else (reason, retryable)."""
        import httpx

        body = encode(event)
        secret = endpoint.secret.get_secret_value()
        reason = ""
        for attempt in range(1, self.config.max_attempts + 1):
            backoff = min(self.config.retry_max_s, self.config.retry_initial_s * 2 ** (attempt - 2))
            if attempt > 1 and (outcome.down or self._stopping.wait(backoff)):
                return outcome.down or f"{reason} (stopped)", True
            headers = {SIGNATURE_HEADER: sign(secret, body), "X-CDC-Event-Id": event.id, "X-CDC-Version": str(event.version),
                       "X-CDC-Entity": event.entity, "X-CDC-Key": event.key_str}
            try:
                response = self._clients[endpoint.name].post(endpoint.url, content=body, headers=headers)
                if response.is_success:
                    return None, True
                raise _Answer(response.status_code, response.text[:200])
            except (httpx.HTTPError, _Answer) as err:
                error = _errors().classify(err)
                reason = str(error)
                if isinstance(error, TerminalError):
                    return reason, False
        reason = f"{reason} after {self.config.max_attempts} attempts"
        if not reason.startswith("HTTP"):
            outcome.down = f"not tried: endpoint down ({reason})"  # spare the rest of the batch the same wait
        log.warning("webhook sink %s: endpoint %s gave up on %s: %s", self.name, endpoint.name, event.id, reason)
        return reason, True

    def _save_offset(self, offset: SinkOffset | None) -> None:
        if offset is None:
            return
        if self._store is None:
            if self._offset is None or offset.version > self._offset.version:
                self._offset = offset
            return
        current = self._store.load_sink_offset(self.name)
        if current is None or offset.version > current.version:
            self._store.save_sink_offset(self.name, offset)


class _Answer(Exception):
    """An endpoint's answer other than 2xx, for the error table."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status} {text!r}")
        self.status = status


@functools.cache
def _errors() -> ErrorTable:
    """No answer, 408, 429 and 5xx: retried (then the batch, when every endpoint is down); any other answer:
    the event is refused by that endpoint (a rejection, dead-lettered)."""
    import httpx

    return ErrorTable(
        catch=(httpx.HTTPError, _Answer),
        rules=[
            Rule(httpx.HTTPError, TransientError, "{detail}"),
            Rule(lambda exc, fields: fields["status"] >= 500 or fields["status"] in (408, 429), TransientError, "{detail}"),
            Rule(_Answer, TerminalError, "{detail}"),
        ],
        detail=lambda exc: str(exc) if isinstance(exc, _Answer) else f"{type(exc).__name__}: {exc or 'no answer'}",
        fields=lambda exc: {"status": getattr(exc, "status", 0)},
    )


def _phases(events: Sequence[ChangeEvent]) -> list[list[ChangeEvent]]:
    """The batch in delivery phases: the rows older than a truncate, then the truncate alone, then the
    next rows... so a receiver gets a truncate after every older row of the batch and before every newer one."""
    truncates = sorted((e for e in events if e.op is Op.TRUNCATE), key=lambda e: e.version)
    if not truncates:
        return [list(events)]
    rows = sorted((e for e in events if e.op is not Op.TRUNCATE), key=lambda e: e.version)
    phases: list[list[ChangeEvent]] = []
    i = 0
    for truncate in truncates:
        older = []
        while i < len(rows) and rows[i].version < truncate.version:
            older.append(rows[i])
            i += 1
        phases += [older, [truncate]] if older else [[truncate]]
    if i < len(rows):
        phases.append(rows[i:])
    return phases


register_sink("webhook", WebhookSinkConfig, lambda name, cfg, ctx: WebhookSink(name, cfg, ctx))
