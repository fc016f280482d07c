"""A change event too large for the broker: its dead letter names the row, the sizes and the settings."""

from __future__ import annotations

from cdc.domain.envelope import encode
from cdc.source.change_events import too_large


def test_the_dead_letter_names_sizes_and_settings_but_holds_no_values():
    event = {
        "v": 1, "id": "s:f.000001:4:0:doc", "version": 7, "op": "u", "entity": "doc", "key": {"id": 3},
        "before": {"id": 3, "body": "x" * 1000, "note": "é"}, "after": {"id": 3, "body": "y" * 5000, "note": None},
        "source": {"name": "s", "server_id": 1, "gtid": None, "file": "f.000001", "pos": 4, "row": 0, "db": "legacy",
                   "table": "docs", "ts_ms": 0, "snapshot": False},
        "txn": None, "ts_ms": 0,
    }
    size = len(encode(event))
    reason, body = too_large(event, size, 4096)
    assert f"{size:,} bytes, over broker.max_message_bytes (4,096" in reason and "max_message_size" in reason
    assert "body 5,002 bytes" in reason and "f.000001:4" in reason
    assert body["field_bytes"]["after"] == {"body": 5002, "note": 4, "id": 1}
    assert body["before"] is None and body["after"] is None and "yyy" not in encode(body).decode()
    assert (body["entity"], body["key"], body["version"], body["bytes"]) == ("doc", {"id": 3}, 7, size)
