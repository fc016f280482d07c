"""Library patches, installed explicitly at start-up: importing a module of the service changes nothing
in the libraries it uses.

- python-mysql-replication: the row decoder's fixes and faster paths (cdc.source.row_decoder) and its
  logger quietened (cdc.source.binlog_stream.install);
- pika: queued frames sent in one ``send`` of up to 256 KB (cdc.broker.publisher.coalesce_socket_writes).

:func:`install` is called by the CLI's entry point (cdc.cli.root.main) and by the daemon before it builds
anything; tests call it from tests/conftest.py, the benchmarks from their main. It is idempotent.
:func:`preimport` imports, in the calling (main) thread, what the role threads would otherwise import for
the first time at once: first imports of one package from several threads can fail with
"_DeadlockError: deadlock detected by _ModuleLock" (seen with pika.exceptions between the reader and a
sink worker). The daemon calls it before it starts its role threads.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger("cdc.patches")

# What the role threads import inside functions (clients, operator requests such as `cdc offsets set
# --via-daemon`).
LAZY_MODULES = (
    "pika", "pika.exceptions", "pika.adapters.select_connection", "pika.adapters.blocking_connection",
    "pika.adapters.utils.io_services_utils", "pymysql", "pymysqlreplication", "pymysqlreplication.event",
    "pymysqlreplication.gtid", "psycopg", "redis", "redis.exceptions", "opensearchpy", "opensearchpy.exceptions",
    "opensearchpy.helpers", "cdc.admin.offsets", "cdc.admin.binlog_time", "cdc.admin.replay",
)

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Install every library patch (once; later calls return at once)."""
    global _installed
    with _lock:
        if _installed:
            return
        from cdc.broker.publisher import coalesce_socket_writes
        from cdc.source import binlog_stream

        binlog_stream.install()
        coalesce_socket_writes()
        _installed = True


def installed() -> bool:
    return _installed


def preimport() -> None:
    """Import :data:`LAZY_MODULES` in this thread (those installed)."""
    for module in LAZY_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # a client this installation does not use
            log.debug("patches: %s is not installed", module)
