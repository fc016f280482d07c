"""The search cluster tests talk to: ``OPENSEARCH_URL`` if set (a real cluster), else an osmem-server.

osmem-server (PyPI ``osmem-server``) is an in-memory OpenSearch-compatible server: it starts in
milliseconds on a free port and exits with its parent process. One server serves the whole test
session; tests keep apart by index prefix. Use the ``search_url`` fixture (import it into the test
module) or :func:`url` from code that is not a fixture (contract harnesses).
"""

from __future__ import annotations

import atexit
import os
import threading
import time

import pytest

_lock = threading.Lock()
_server = None
_url: str | None = None


def _answers(address: str) -> bool:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[address], timeout=2, max_retries=0)
    try:
        return client.ping()
    finally:
        client.close()


def _wait_until_it_answers(address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(address):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"osmem-server at {address} did not answer within {timeout}s")
        time.sleep(0.05)


def url() -> str:
    """Address of the cluster; starts the osmem-server on first use."""
    global _server, _url
    with _lock:
        if _url is None:
            external = os.environ.get("OPENSEARCH_URL")
            if external:
                _url = external
            else:
                from osmem_server import OsmemServer

                _server = OsmemServer.start(japanese=False, addr="127.0.0.1:0", startup_timeout=30)
                _url = _server.url
                _wait_until_it_answers(_server.url, timeout=30)
        return _url


def stop() -> None:
    global _server, _url
    with _lock:
        if _server is not None:
            _server.close()
            _server = None
            _url = None


atexit.register(stop)


@pytest.fixture(scope="session")
def search_url() -> str:
    address = url()
    if not _answers(address):
        pytest.fail(f"the search cluster does not answer at {address.rsplit('@', 1)[-1]} (OPENSEARCH_URL)", pytrace=False)
    yield address
    stop()
