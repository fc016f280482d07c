import re
import shlex

import pymysql
import pytest
import typer.main
from typer.testing import CliRunner

from cdc.cli.root import app
from cdc.domain.errors import CheckpointLost, PositionsWentBack
from cdc.domain.positions import Checkpoint
from cdc.runtime.config import SourceConfig
from cdc.source.binlog_stream import BinlogReader, _translate

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


def _parse(argv: list[str]) -> tuple[str, dict]:
    """(command path, parameters) of ``cdc <argv>`` as the CLI parses it, without running it; a
    UsageError where the CLI would refuse the words (an unknown option, an extra argument)."""
    cmd, words, ctx, path = typer.main.get_command(app), list(argv), None, []
    while hasattr(cmd, "list_commands"):
        ctx = cmd.context_class(cmd, info_name=" ".join(path) or "cdc", parent=ctx)
        name = words.pop(0)
        cmd = cmd.get_command(ctx, name)
        assert cmd is not None, f"no command {' '.join([*path, name])!r}"
        path.append(name)
    return " ".join(path), cmd.make_context(path[-1], words, parent=ctx).params


def test_the_recovery_commands_of_a_lost_checkpoint_run_as_printed():
    """The reader's way out of a purged or renumbered binlog is copied into a shell during an incident: each
    command it prints must be one the CLI accepts, and do what the message says."""
    reader = BinlogReader(SourceConfig(name="legacy"))
    reader.binlog_files = lambda: [("mysql-bin.000007", 4)]
    with pytest.raises(CheckpointLost) as lost:
        reader.check_available(Checkpoint(file="mysql-bin.000003", pos=4))
    gone = _translate(pymysql.err.OperationalError(1236, "Could not find first log file name"),
                      Checkpoint(file="mysql-bin.000003", pos=4), "legacy")
    renumbered = PositionsWentBack("the binlog ends at mysql-bin.000003:4, before the checkpoint.")
    for message in (str(lost.value), str(gone), str(renumbered)):
        assert "mysql-bin.000003:4" in message
        commands = [shlex.split(c)[1:] for c in re.findall(r"`(cdc [^`]*)`", message)]
        parsed = dict(_parse(argv) for argv in commands)
        assert set(parsed) == {"offsets reset", "snapshot start"}, message
        assert parsed["offsets reset"]["source"] and parsed["offsets reset"]["latest"]
        assert parsed["snapshot start"]["all_tables"] or parsed["snapshot start"]["tables"]
        assert "snapshot.mode: when_needed" in message or "empty every sink" in message
