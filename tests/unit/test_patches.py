"""Library patches are installed explicitly (cdc.runtime.patches.install), never on import.

Checked in a fresh interpreter (this one has them installed by tests/conftest.py): importing every
module of the service leaves python-mysql-replication and pika as released; install() patches them,
and a second install() changes nothing more.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import json, logging
    from pika.adapters.utils import io_services_utils
    from pymysqlreplication import row_event
    from pymysqlreplication.row_event import RowsEvent

    NAMES = [(row_event, "BitGet"), (row_event, "BitCount"), (RowsEvent, "_is_null"),
             (RowsEvent, "_RowsEvent__read_time2"), (RowsEvent, "_RowsEvent__read_date"),
             (RowsEvent, "_RowsEvent__read_datetime"), (RowsEvent, "_read_column_data"), (RowsEvent, "_fetch_rows")]

    def look():
        out = {f"{getattr(o, '__name__', o)}.{n}": id(o.__dict__[n]) for o, n in NAMES}
        out["pika._produce"] = id(io_services_utils._AsyncTransportBase.__dict__["_produce"])
        out["logger"] = logging.getLogger("pymysqlreplication").level
        return out

    released = look()
    import cdc.broker.publisher, cdc.source.binlog_stream, cdc.source.row_decoder  # noqa: E401
    import cdc.reader.pipeline, cdc.runtime.bootstrap, cdc.runtime.daemon, cdc.cli.root  # noqa: E401
    imported = look()
    from cdc.runtime import patches
    patches.install()
    installed = look()
    patches.install()
    again = look()
    print(json.dumps({"released": released, "imported": imported, "installed": installed, "again": again}))
""")


def _probe() -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_changes_nothing_in_the_libraries_and_install_patches_them_once() -> None:
    seen = _probe()
    assert seen["imported"] == seen["released"], "importing a module of the service patched a library"
    changed = {k for k in seen["released"] if seen["installed"][k] != seen["released"][k]}
    assert changed == set(seen["released"]), f"install() left unpatched: {set(seen['released']) - changed}"
    assert seen["installed"]["logger"] == 40  # logging.ERROR
    assert seen["again"] == seen["installed"], "a second install() changed something"


def test_the_daemon_preimports_what_its_threads_import_lazily() -> None:
    from cdc.runtime import patches

    patches.preimport()
    assert {"pika.exceptions", "pymysqlreplication.gtid", "cdc.admin.offsets"} <= set(sys.modules)
    assert patches.installed()  # tests/conftest.py installed them, as the CLI's entry point and the daemon do
