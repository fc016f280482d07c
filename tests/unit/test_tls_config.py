"""TLS settings: the shared SSLContext builder, the URL convention, and the ConfigErrors (no server needed)."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr
from tls_certs import make_pki

from cdc.domain.errors import ConfigError
from cdc.runtime.config import load_settings
from cdc.runtime.tls import (
    TlsConfig,
    amqp_parameters,
    check_postgres_url,
    client_context,
    redis_arguments,
    split_url,
)
from cdc.sinks.cache import CacheSinkConfig
from cdc.sinks.crm import CrmSinkConfig
from cdc.sinks.search import _parse_url


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(("verify", "mode", "hostname"), [
    ("require", ssl.CERT_NONE, False), ("verify-ca", ssl.CERT_REQUIRED, False), ("verify-identity", ssl.CERT_REQUIRED, True)])
def test_verify_modes(pki, verify, mode, hostname):
    ctx = client_context(TlsConfig(enabled=True, ca=pki.ca, verify=verify), "source.tls")
    assert ctx.verify_mode == mode and ctx.check_hostname is hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_the_ca_is_loaded_and_a_client_certificate_accepted(pki):
    ctx = client_context(TlsConfig(enabled=True, ca=pki.ca, cert=pki.client_cert, key=pki.client_key), "source.tls")
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_missing_ca_names_the_setting_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(source={"tls": {"enabled": True, "ca": str(tmp_path / "nope.pem")}})
    message = str(err.value)
    assert "source.tls.ca" in message and "does not exist" in message and "PEM file of the CA" in message


def test_a_file_that_is_not_pem_is_a_config_error(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"source\.tls\.ca: .* holds no usable PEM CA certificate"):
        load_settings(source={"tls": {"enabled": True, "ca": str(bad)}})


def test_a_key_without_its_certificate_and_files_on_a_disabled_section(pki):
    with pytest.raises(ConfigError, match=r"source\.tls\.key is set without source\.tls\.cert"):
        load_settings(source={"tls": {"enabled": True, "key": str(pki.client_key)}})
    with pytest.raises(ConfigError, match=r"source\.tls\.ca is set but source\.tls\.enabled is false"):
        load_settings(source={"tls": {"ca": str(pki.ca)}})


def test_source_tls_reaches_the_pymysql_settings(pki):
    from cdc.source.binlog_stream import BinlogReader

    settings = load_settings(source={"tls": {"enabled": True, "ca": str(pki.ca), "verify": "verify-ca"}})
    ssl_arg = BinlogReader(settings.source).connection_settings()["ssl"]
    assert isinstance(ssl_arg, ssl.SSLContext) and ssl_arg.verify_mode == ssl.CERT_REQUIRED and not ssl_arg.check_hostname
    assert "ssl" not in BinlogReader(load_settings().source).connection_settings()


def test_unknown_verify_mode_is_refused():
    with pytest.raises(ConfigError, match="source.tls.verify"):
        load_settings(source={"tls": {"enabled": True, "verify": "verify-full"}})


# --- RabbitMQ ---------------------------------------------------------------------------------------


def test_amqps_url_gives_pika_an_ssl_context(pki):
    params = amqp_parameters(f"amqps://u:p@mq.example:5671/%2F?heartbeat=15&tls_ca={pki.ca}"
                             f"&tls_cert={pki.client_cert}&tls_key={pki.client_key}")
    assert params.host == "mq.example" and params.port == 5671 and params.heartbeat == 15
    assert params.ssl_options.server_hostname == "mq.example"
    ctx = params.ssl_options.context
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname and len(ctx.get_ca_certs()) == 1


def test_amqps_without_parameters_verifies_against_the_system_store():
    params = amqp_parameters("amqps://u:p@mq.example/%2F")
    assert params.port == 5671 and len(params.ssl_options.context.get_ca_certs()) != 1
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED and params.ssl_options.context.check_hostname


def test_plain_amqp_is_unchanged_and_tls_parameters_on_it_are_refused(pki):
    assert amqp_parameters("amqp://u:p@localhost:5672/%2F").ssl_options is None
    with pytest.raises(ConfigError, match="tls_ca given on an amqp:// URL, which is plain text; use amqps://"):
        amqp_parameters(f"amqp://u:p@localhost/%2F?tls_ca={pki.ca}")


def test_broker_url_errors_name_the_setting_and_hide_the_password(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(broker={"url": f"amqps://cdc:s3cret-pw@mq/%2F?tls_ca={tmp_path}/missing.pem"})
    assert "broker.url parameter tls_ca" in str(err.value) and "s3cret-pw" not in str(err.value)
    with pytest.raises(ConfigError, match="tls_verify='maybe' is not one of require, verify-ca, verify-identity"):
        load_settings(broker={"url": "amqps://mq/%2F?tls_verify=maybe"})


# --- Redis, search, PostgreSQL --------------------------------------------------------------------------


def test_rediss_url_gives_redis_py_its_tls_arguments(pki):
    url, args = redis_arguments(f"rediss://:pw@cache:6380/2?tls_ca={pki.ca}&tls_verify=verify-ca", "sinks.cache.url")
    assert url == "rediss://:pw@cache:6380/2"
    assert args["ssl_ca_certs"] == str(pki.ca) and args["ssl_cert_reqs"] == "required" and args["ssl_check_hostname"] is False
    assert redis_arguments("redis://cache/0", "sinks.cache.url") == ("redis://cache/0", {})


def test_cache_config_refuses_a_missing_ca(tmp_path):
    with pytest.raises(ConfigError, match="cache sink url parameter tls_ca: file .* does not exist"):
        CacheSinkConfig(url=SecretStr(f"rediss://cache/0?tls_ca={tmp_path}/none.pem"))


def test_search_https_with_a_ca_bundle(pki):
    safe, args, password = _parse_url(f"https://admin:pw@search:9200?tls_ca={pki.ca}")
    assert safe == "https://admin:***@search:9200" and password == "pw"
    assert args["use_ssl"] and isinstance(args["ssl_context"], ssl.SSLContext)
    assert args["ssl_context"].check_hostname
    _, plain, _ = _parse_url("https://search:9200")
    assert plain["ssl_context"].check_hostname and len(plain["ssl_context"].get_ca_certs()) != 1  # the system store
    _, unverified, _ = _parse_url("https://search:9200?tls_verify=require")
    assert unverified["ssl_context"].verify_mode == ssl.CERT_NONE


def test_postgres_tls_parameters_are_checked(pki, tmp_path):
    check_postgres_url(f"postgresql://u@db/crm?sslmode=verify-full&sslrootcert={pki.ca}", "state.url")
    with pytest.raises(ConfigError, match=r"state\.url: sslrootcert=.* does not exist"):
        load_settings(state={"url": f"postgresql://u@db/crm?sslmode=verify-full&sslrootcert={tmp_path}/x.pem"})
    with pytest.raises(ConfigError, match="sslmode='verify_full' is not one of"):
        CrmSinkConfig(url=SecretStr("postgresql://u:pw@db/crm?sslmode=verify_full"))
    with pytest.raises(ConfigError, match="never checks the certificate; use sslmode=verify-full"):
        check_postgres_url(f"postgresql://u@db/crm?sslmode=prefer&sslrootcert={pki.ca}", "state.url")
    check_postgres_url("sqlite:///var/x.db", "state.url")


def test_split_url_keeps_other_parameters():
    clean, tls = split_url("amqps://h/%2F?heartbeat=5&tls_verify=require&channel_max=9", "amqps", "broker.url")
    assert clean == "amqps://h/%2F?heartbeat=5&channel_max=9" and tls is not None and tls.verify == "require"


def test_sink_url_errors_name_the_sink(tmp_path):
    with pytest.raises(ConfigError, match=r"sinks\.hot: cache sink url parameter tls_ca: file .* does not exist"):
        load_settings(sinks={"hot": {"type": "cache", "url": f"rediss://:pw@cache/0?tls_ca={tmp_path}/none.pem"}})
