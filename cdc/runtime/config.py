"""Configuration: one YAML file, overridden by environment variables.

Every key can be overridden by ``CDC_<SECTION>__<KEY>``, e.g. ``CDC_SOURCE__PASSWORD`` or
``CDC_SINKS__CRM__URL``. Unknown keys are errors. Secrets are ``SecretStr``: they print as
``**********`` and never reach logs or metrics.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from cdc.domain.errors import ConfigError
from cdc.runtime.tls import TlsConfig, client_context, split_url
from cdc.sinks.base import SinkConfig, get_sink_type


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Section):
    name: str = Field("legacy", description="Name of this source in events, checkpoints and metrics.")
    host: str = "127.0.0.1"
    port: int = 3307
    user: str = "cdc"
    password: SecretStr = SecretStr("")
    databases: list[str] = Field(default_factory=lambda: ["legacy"])
    replica_server_id: int = Field(4201, ge=1, description="server_id the reader registers with; unique among replicas.")
    flavor: Literal["auto", "mariadb", "mysql"] = "auto"
    resume_by: Literal["gtid", "position"] = Field(
        "gtid", description="Resume from the checkpoint's GTID position or its file:position."
    )
    start_at: Literal["latest", "earliest"] = Field("latest", description="Where to start without a checkpoint.")
    heartbeat_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0, description="A silent connection is dropped after this long.")
    connect_timeout_s: float = Field(10.0, gt=0)
    lease_ttl_s: float = Field(
        10.0, gt=0, description="Lease of the active reader; a standby takes over this long after the active one died."
    )
    max_txn_rows: int = Field(
        5000, ge=1, description="Rows of one source transaction held in memory; larger ones are published in segments."
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS to the source (binlog stream, checks, snapshots): enabled, ca, cert, key, verify "
        "(require | verify-ca | verify-identity).",
    )

    @model_validator(mode="after")
    def _tls_files(self) -> SourceConfig:
        check_tls_section(self.tls, "source.tls")
        return self


class SnapshotConfig(_Section):
    mode: Literal["initial", "when_needed", "never"] = Field(
        "initial",
        description="initial: snapshot every mapped table when there is no checkpoint; when_needed: also when the "
        "checkpoint's binlog is gone (then the stream restarts at the head); never: stream only.",
    )
    chunk_size: int = Field(5000, ge=1, le=200_000, description="Rows per chunk (one SELECT, bounded memory).")
    workers: int = Field(
        2, ge=0, le=16,
        description="Processes that read, map and encode chunks side by side, one chunk each (memory: about 120 MB "
        "each while they work on chunks of 5,000 rows); 0: the reader thread does it itself.",
    )


class WorkerConfig(_Section):
    """Which share of a sharded sink's queues this process takes (see SinkConfig.shards)."""

    index: int = Field(0, ge=0, description="This worker's number, 0..count-1 (e.g. a StatefulSet pod index).")
    count: int = Field(1, ge=1, description="Workers sharing each sharded sink.")


class BrokerConfig(_Section):
    url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F"),
        description="amqp://user:password@host:5672/vhost, or with TLS amqps://...:5671/vhost?tls_ca=/ca.pem"
        "[&tls_cert=...&tls_key=...][&tls_verify=require|verify-ca|verify-identity] (default verify-identity).",
    )
    exchange: str = "cdc.events"
    max_in_flight: int = Field(5_000, ge=1, description="Published but unconfirmed change events before the reader waits "
                               "(a batch message weighs the events it holds). 5,000 keep a broker on the same network "
                               "busy; 20,000 gave no more throughput here and twice the reader's memory with one event "
                               "a message (bench/bench_pipeline.py).")
    confirm_timeout_s: float = Field(60.0, gt=0)
    max_message_bytes: int = Field(
        128 * 1024 * 1024, ge=4096,
        description="Largest message the reader publishes: at most RabbitMQ's max_message_size (default 128 MiB). A change "
        "event over it is not published: it goes to the reader DLQ with its size and the size of each field (no values).",
    )
    batch_events: int = Field(
        1, ge=1, le=10_000,
        description="Change events per message: above 1, consecutive events of one transaction (or snapshot chunk) with "
        "the same <entity>.<op> travel as one message holding a JSON array (header x-cdc-count), up to this many. "
        "RabbitMQ's cost is per message, so this is what lowers lag under a heavy load. Every consumer must read both "
        "forms (cdc.domain.envelope.decode_many; the sink workers, `cdc replay`, `cdc dlq` and cdc.consumer do). Not with "
        "sharded sinks (a batch holds many keys).",
    )
    event_log_max_age: str = Field(
        "7D", pattern=r"^[1-9][0-9]*[YMDhms]$",
        description="Retention of the event-log stream <exchange>.log (RabbitMQ x-max-age, e.g. 7D, 12h): how far back "
        "`cdc replay` can go.",
    )

    @field_validator("url")
    @classmethod
    def _tls_in_url(cls, url: SecretStr) -> SecretStr:
        split_url(url.get_secret_value(), "amqps", "broker.url")
        return url


class StateConfig(_Section):
    url: str = Field(
        "sqlite:///var/cdc-state.db",
        description="SQLAlchemy URL of the state store; PostgreSQL over TLS with libpq's parameters, e.g. "
        "postgresql://user@host/db?sslmode=verify-full&sslrootcert=/ca.pem[&sslcert=...&sslkey=...].",
    )

    @field_validator("url")
    @classmethod
    def _tls_in_url(cls, url: str) -> str:
        from cdc.state.store import check_state_url  # late: the store imports this module's neighbours

        check_state_url(url, "state.url")
        return url


class MappingsConfig(_Section):
    dir: Path = Path("mappings")
    pii_salt: SecretStr | None = Field(None, description="Secret key of 'pii: hash' fields (CDC_MAPPINGS__PII_SALT).")


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108


class AdminConfig(_Section):
    """The admin API and status page, served beside /metrics (on metrics.host:metrics.port)."""

    token: SecretStr | None = Field(None, description="Bearer token for /api/*, named 'admin' in the audit log; without any "
                                    "token the admin API is off.")
    tokens: dict[str, SecretStr] = Field(default_factory=dict, description="More bearer tokens by name "
                                         "(CDC_ADMIN__TOKENS__ALICE=...): the audit log records who wrote by that name.")
    token_file: Path | None = Field(None, description="A file whose first line is a token named 'admin' (a mounted secret, "
                                    "or the demo's .dev/admin-token); read when the process starts; a missing file adds no token.")
    read_only: bool = Field(True, description="Refuse the API's write operations (e.g. requesting a snapshot).")
    sample_interval_s: float = Field(5.0, gt=0, description="How often lag, offsets and queue depths are sampled.")

    @field_validator("token_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().absolute()  # relative: to where the command runs

    def named_tokens(self) -> dict[str, str]:
        """Every configured token as name -> secret (empty: the admin API is off)."""
        named = {name: secret.get_secret_value() for name, secret in self.tokens.items() if secret.get_secret_value()}
        if self.token is not None and self.token.get_secret_value():
            named.setdefault("admin", self.token.get_secret_value())
        if self.token_file is not None and "admin" not in named:
            try:
                first = self.token_file.read_text().splitlines()[:1]
            except OSError:
                first = []
            if first and first[0].strip():
                named["admin"] = first[0].strip()
        return named

    @property
    def enabled(self) -> bool:
        return bool(self.named_tokens())


class HeartbeatsConfig(_Section):
    enabled: bool = Field(False, description="Publish a heartbeat event (routing key cdc.heartbeat.reader) every "
                          "interval_s, with the source position read and the time, even when no table changes.")
    interval_s: float = Field(10.0, gt=0, description="Seconds between heartbeats; at least source.heartbeat_s (the "
                              "binlog stream's heartbeat, which wakes the reader when the source is idle).")


class EventsConfig(_Section):
    """Events beside the change events on the events exchange, for consumers (docs/consumers.md); off by default."""

    transactions: bool = Field(False, description="Frame every source transaction that carries change events with a "
                               "BEGIN (routing key cdc.transaction.begin) and an END event (cdc.transaction.end, with the "
                               "count of events per entity and in total); change events then carry txn.entity_index.")
    heartbeats: HeartbeatsConfig = Field(default_factory=HeartbeatsConfig)


class LogConfig(_Section):
    format: Literal["console", "json"] = "console"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDC_", env_nested_delimiter="__", extra="forbid")

    source: SourceConfig = Field(default_factory=SourceConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    mappings: MappingsConfig = Field(default_factory=MappingsConfig)
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _batches_need_unsharded_sinks(self) -> Settings:
        sharded = [name for name, sink in self.sinks.items() if getattr(sink, "shards", 1) > 1]
        if self.broker.batch_events > 1 and sharded:
            raise ValueError(
                f"broker.batch_events is {self.broker.batch_events} but sinks.{sharded[0]}.shards is "
                f"{self.sinks[sharded[0]].shards}: a batch message holds events of many keys, and a sharded sink routes "
                "each message by one key. Set broker.batch_events: 1, or shards: 1 for that sink")
        return self

    @model_validator(mode="after")
    def _heartbeats_not_below_the_stream(self) -> Settings:
        beats = self.events.heartbeats
        if beats.enabled and beats.interval_s < self.source.heartbeat_s:
            raise ValueError(
                f"events.heartbeats.interval_s is {beats.interval_s:g} but source.heartbeat_s is {self.source.heartbeat_s:g}: "
                "the reader wakes on the binlog stream's heartbeat when the source is idle, so it cannot publish "
                "heartbeats more often. Set events.heartbeats.interval_s to at least source.heartbeat_s, or lower "
                "source.heartbeat_s")
        return self

    @field_validator("sinks", mode="before")
    @classmethod
    def _typed_sinks(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        typed = {}
        for name, raw in value.items():
            if isinstance(raw, SinkConfig):
                typed[name] = raw
                continue
            if not isinstance(raw, dict) or "type" not in raw:
                raise ValueError(f"sink {name!r} needs a 'type' (for example: type: crm)")
            model = get_sink_type(raw["type"]).config_model
            try:
                typed[name] = model.model_validate(raw)
            except ValidationError as exc:
                raise ValueError("\n" + _lines(exc, model, f"sinks.{name}.")) from None
            except ConfigError as exc:  # e.g. a TLS file named in the sink's URL
                raise ConfigError(f"sinks.{name}: {exc}") from None
        return typed


def check_tls_section(tls: TlsConfig, setting: str) -> None:
    """ConfigError for files set on a disabled section (they would be ignored) or unusable files."""
    if not tls.enabled:
        given = [name for name in ("ca", "cert", "key") if getattr(tls, name) is not None]
        if given:
            raise ConfigError(f"{setting}.{given[0]} is set but {setting}.enabled is false: set {setting}.enabled: true "
                              f"to connect with TLS, or remove {setting}.{given[0]}")
        return
    client_context(tls, setting)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), apply environment overrides, validate; raise ConfigError."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections at the top level")
    data = _deep_merge(data, overrides)

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
            return (env_settings, InitSettingsSource(settings_cls, init_kwargs=data))

    try:
        return _FromFile()
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration ({where}):\n" + explain(exc, data)) from None
    except ConfigError as exc:
        raise ConfigError(f"invalid configuration ({where}): {exc}") from None


def explain(exc: ValidationError, data: dict[str, Any] | None = None) -> str:
    """One line per problem: the dotted key, what is wrong, and a suggestion for a misspelt key."""
    return _lines(exc, Settings)


def _lines(exc: ValidationError, root: Any, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {prefix}{loc}: unknown key{_did_you_mean(err['loc'], root)}")
        elif err["msg"].startswith("Value error, \n"):
            lines.append(err["msg"][len("Value error, \n"):])  # already explained by a nested model
        else:
            lines.append(f"  {prefix}{loc}: {err['msg']}")
    return "\n".join(lines)


def _did_you_mean(loc: tuple, root: Any = None) -> str:
    model: Any = root or Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    names = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(names)})" if names else ""


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
