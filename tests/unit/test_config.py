import pytest

from cdc.domain.errors import ConfigError
from cdc.runtime.config import load_settings


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("source:\n  hots: db.example\n")
    with pytest.raises(ConfigError, match=r"source.hots: unknown key \(did you mean 'host'\?\)"):
        load_settings(path)


def test_environment_overrides_file_and_secrets_stay_hidden(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("source:\n  port: 3307\n  password: from-file\nsinks:\n  mem: {type: memory, batch_size: 10}\n")
    monkeypatch.setenv("CDC_SOURCE__PORT", "3399")
    monkeypatch.setenv("CDC_SOURCE__PASSWORD", "s3cr3t-value")
    settings = load_settings(path)
    assert settings.source.port == 3399
    assert settings.source.password.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(settings.model_dump())
    assert settings.sinks["mem"].batch_size == 10


def test_unknown_sink_type_lists_the_known_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sinks:\n  x: {type: kafka}\n")
    with pytest.raises(ConfigError, match="unknown sink type 'kafka'.*crm"):
        load_settings(path)


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
