import json
import logging

from cdc.domain.redact import redact_text as mask_secrets
from cdc.runtime.logs import setup_logging


def test_url_passwords_and_keyword_secrets_are_masked():
    assert mask_secrets("amqp://guest:hunter2@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert "hunter2" not in mask_secrets("connect failed password=hunter2 host=x")
    assert "hunter2" not in mask_secrets("{'passwd': 'hunter2'}")


def test_json_log_lines_carry_context_and_never_the_secret(capsys):
    setup_logging("json", "INFO")
    logging.getLogger("cdc.test").warning("cannot reach %s", "postgresql://crm:hunter2@db/crm")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["level"] == "warning" and record["logger"] == "cdc.test"
    assert "hunter2" not in line and "crm:***@db" in record["event"]
