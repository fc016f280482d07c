"""TLS for every client: one model, one ``ssl.SSLContext`` builder, one URL convention.

The MySQL/MariaDB source has no URL, so it takes a section (``source.tls``, :class:`TlsConfig`).
The URL-configured clients take the same options in the URL:

* RabbitMQ (``broker.url``): ``amqps://user:pw@host:5671/vhost?tls_ca=/ca.pem&tls_cert=...&tls_key=...&tls_verify=verify-ca``
* Redis (cache sink ``url``): ``rediss://:pw@host:6380/0?tls_ca=...`` (same ``tls_*`` parameters)
* OpenSearch/Elasticsearch (search sink ``url``): ``https://user:pw@host:9200?tls_ca=...`` (same)
* PostgreSQL (crm sink ``url``, ``state.url``, search sink ``state_url``): libpq's own parameters,
  ``?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=...&sslkey=...``, checked here and passed to libpq.

Verify modes: ``require`` encrypts without checking the certificate (protects against eavesdropping
only), ``verify-ca`` checks the chain against ``ca`` (or the system store), ``verify-identity`` (the
default) also checks that the certificate names the host connected to. A file that is missing or
not PEM raises :class:`ConfigError` naming the setting and the fix, before any connection is tried.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from cdc.domain.errors import ConfigError

VerifyMode = Literal["require", "verify-ca", "verify-identity"]
VERIFY_MODES = ("require", "verify-ca", "verify-identity")

#: URL query parameter -> TlsConfig field, for amqps://, rediss:// and https:// URLs.
URL_PARAMS = {"tls_ca": "ca", "tls_cert": "cert", "tls_key": "key", "tls_verify": "verify"}

#: PostgreSQL (libpq) parameters naming files, and the sslmode values libpq knows.
_PG_FILES = {"sslrootcert": "ca", "sslcert": "cert", "sslkey": "key"}
PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class TlsConfig(BaseModel):
    """TLS towards one server. Paths are PEM files readable by the service."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Connect with TLS (refused if the server does not offer it).")
    ca: Path | None = Field(None, description="CA certificate(s) that signed the server's certificate (default: the system store).")
    cert: Path | None = Field(None, description="Client certificate, for servers that require one (mutual TLS).")
    key: Path | None = Field(None, description="Private key of the client certificate (default: inside `cert`).")
    verify: VerifyMode = Field(
        "verify-identity",
        description="require: encrypt only, no certificate check; verify-ca: check the chain against `ca`; "
        "verify-identity: also check that the certificate names the host.",
    )


def client_context(tls: TlsConfig, setting: str, in_url: bool = False) -> ssl.SSLContext:
    """An SSLContext for a client, or ConfigError naming ``setting`` (e.g. ``source.tls``) and the fix.

    ``in_url``: the options came from the ``tls_*`` parameters of the URL ``setting`` names.
    """
    def name(field: str) -> str:
        return f"{setting} parameter tls_{field}" if in_url else f"{setting}.{field}"

    for field in ("ca", "cert", "key"):
        path = getattr(tls, field)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{name(field)}: file {path} does not exist (or is not a file); "
                              f"set it to the PEM file of {_WHAT[field]}, or remove it")
    if tls.key is not None and tls.cert is None:
        raise ConfigError(f"{name('key')} is set without {name('cert')}: give the client certificate too")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # with `ca`, trust that CA only (not also the system store)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.verify == "require":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = tls.verify == "verify-identity"
        ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.ca is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            ctx.load_verify_locations(cafile=str(tls.ca))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"{name('ca')}: {tls.ca} holds no usable PEM CA certificate ({_reason(exc)}); "
                              "point it at the CA certificate in PEM format") from None
    if tls.cert is not None:
        try:
            ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"{name('cert')}/{name('key')}: cannot load the client certificate {tls.cert} "
                              f"with its key ({_reason(exc)}); give a PEM certificate and its unencrypted PEM key") from None
    return ctx


_WHAT = {"ca": "the CA that signed the server's certificate", "cert": "the client certificate",
         "key": "the client certificate's private key"}


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or exc.__class__.__name__


# --- URLs -------------------------------------------------------------------------------------------


def split_url(url: str, secure_scheme: str, setting: str) -> tuple[str, TlsConfig | None]:
    """(URL without the ``tls_*`` parameters, TlsConfig when the scheme is ``secure_scheme`` else None).

    ``tls_*`` parameters on a plain-text scheme are a ConfigError: they would be silently ignored.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {URL_PARAMS[k]: v for k, v in query if k in URL_PARAMS}
    rest = [(k, v) for k, v in query if k not in URL_PARAMS]
    clean = urlunsplit(parts._replace(query=urlencode(rest)))
    if parts.scheme != secure_scheme:
        if ours:
            given = ", ".join(k for k, _ in query if k in URL_PARAMS)
            raise ConfigError(f"{setting}: {given} given on an {parts.scheme}:// URL, which is plain text; use {secure_scheme}:// for TLS "
                              "or remove the tls_* parameters")
        return url, None
    verify = ours.get("verify", "verify-identity")
    if verify not in VERIFY_MODES:
        raise ConfigError(f"{setting}: tls_verify={verify!r} is not one of {', '.join(VERIFY_MODES)}")
    tls = TlsConfig(enabled=True, verify=verify, **{k: Path(v) for k, v in ours.items() if k != "verify" and v})
    client_context(tls, setting, in_url=True)  # files checked now, with the setting named
    return clean, tls


def amqp_parameters(url: str, setting: str = "broker.url") -> Any:
    """``pika.URLParameters`` for an amqp:// or amqps:// URL; amqps uses :func:`client_context`."""
    import pika

    clean, tls = split_url(url, "amqps", setting)
    params = pika.URLParameters(clean)
    if tls is not None:
        params.ssl_options = pika.SSLOptions(client_context(tls, setting, in_url=True), server_hostname=params.host)
    return params


def redis_arguments(url: str, setting: str) -> tuple[str, dict[str, Any]]:
    """(URL for ``redis.Redis.from_url``, its TLS keyword arguments) for a redis:// or rediss:// URL."""
    clean, tls = split_url(url, "rediss", setting)
    if tls is None:
        return clean, {}
    client_context(tls, setting, in_url=True)  # validation (redis-py builds its own context from the same files)
    args: dict[str, Any] = {
        "ssl_cert_reqs": "none" if tls.verify == "require" else "required",
        "ssl_check_hostname": tls.verify == "verify-identity",
        "ssl_min_version": ssl.TLSVersion.TLSv1_2,
    }
    if tls.ca is not None:
        args["ssl_ca_certs"] = str(tls.ca)
    if tls.cert is not None:
        args["ssl_certfile"] = str(tls.cert)
        args["ssl_keyfile"] = str(tls.key) if tls.key else None
    return clean, args


def check_postgres_url(url: str, setting: str) -> None:
    """Check libpq's TLS parameters in a PostgreSQL URL (sslmode value, files present); ConfigError otherwise."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    mode = query.get("sslmode")
    if mode is not None and mode not in PG_SSLMODES:
        raise ConfigError(f"{setting}: sslmode={mode!r} is not one of {', '.join(PG_SSLMODES)}")
    for name in _PG_FILES:
        path = query.get(name)
        if path and path != "system" and not Path(path).is_file():
            raise ConfigError(f"{setting}: {name}={path} does not exist (or is not a file); "
                              f"set it to the PEM file of {_WHAT[_PG_FILES[name]]}")
    if query.get("sslrootcert") and mode in ("prefer", "allow"):
        raise ConfigError(f"{setting}: sslrootcert is given with sslmode={mode}, which never checks the certificate; "
                          "use sslmode=verify-full (or verify-ca)")
