from typer.testing import CliRunner

from cdc.cli import app

runner = CliRunner()


def test_config_check_accepts_the_demo_config():
    result = runner.invoke(app, ["config", "check", "-c", "deploy/demo.yaml"])
    assert result.exit_code == 0, result.output
    assert "config ok" in result.output and "legacy.members" in result.output


def test_config_check_points_at_the_wrong_key_without_a_traceback(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("source:\n  port: 3307\nsinks:\n  crm: {type: crm, url: 'postgresql://u:pw@h/db', batchsize: 10}\n")
    result = runner.invoke(app, ["config", "check", "-c", str(bad)])
    assert result.exit_code == 2
    assert "sinks.crm.batchsize: unknown key (did you mean 'batch_size'?)" in result.output
    assert "Traceback" not in result.output


def test_config_check_names_a_bad_mapping(tmp_path):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "m.yaml").write_text("entity: member\nsource: {db: legacy, table: members}\nkey: [id]\nfields: {}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"mappings: {{dir: {mappings}}}\n")
    result = runner.invoke(app, ["config", "check", "-c", str(cfg)])
    assert result.exit_code == 2 and "m.yaml (entity member)" in result.output
