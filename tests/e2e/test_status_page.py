"""The status page of the real daemon, rendered by headless Chromium (screenshot + DOM).

Scenario: the daemon replicated 40 members and dead-lettered one malformed message, then stopped;
while no reader runs, 10 more members are written (so the source lags) and a snapshot is under
way. A sinks-only daemon with the admin API then serves the page. What a person looking at it
must see: the checkpoint, the lag (in the chart too), the sink's offset and its DLQ of 1 flagged,
the snapshot's progress; the page refreshes itself; without the token it asks for one.

Chromium and chromedriver are the Debian packages (deploy/setup.sh installs them), driven through
selenium (tests/e2e/browser.py): the token is typed into the page, as an operator does; it is never
put in a URL.
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser

import orjson
import pika
from browser import open_browser, sign_in
from e2e_support import Daemon, drop_world, make_world
from test_metrics_e2e import TOKEN, free_port, get, insert_members, metric

from cdc.state.store import SqlStateStore


class Dom(HTMLParser):
    """Text and attributes of the elements that carry an id, plus every <tr data-*>."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.rows: list[dict] = []
        self._open: list[dict] = []
        self.body: dict = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        node = {"tag": tag, "attrs": attrs, "text": ""}
        if tag == "body":
            self.body = attrs
        if "id" in attrs:
            self.by_id[attrs["id"]] = node
        if tag == "tr" and any(k.startswith("data-") for k in attrs):
            self.rows.append(node)
        if tag not in ("br", "input", "meta", "polyline", "line"):
            self._open.append(node)

    def handle_endtag(self, tag):
        while self._open and self._open.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        for node in self._open:
            node["text"] += data

    def text(self, id_: str) -> str:
        return self.by_id[id_]["text"].strip()


def test_the_status_page_shows_positions_lag_sinks_and_snapshots(tmp_path, source_server, pg_url, amqp_url, wait_until):
    port = free_port()
    world = make_world(tmp_path, source_server, pg_url, amqp_url, extra_yaml="snapshot: {mode: never}", http_port=port)
    sink = world["sink"]
    state = SqlStateStore(world["state_url"])
    daemon = Daemon(world)
    sinks_only = Daemon(world, ["sinks"])
    try:
        daemon.start()
        wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=60, message=f"/readyz\n{daemon.logs()}")
        insert_members(world, 1, 40)
        wait_until(lambda: metric(port, "cdc_sink_events_applied_total", sink=sink) == 40, timeout=30, message="40 applied")
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            conn.channel().basic_publish(f"cdc.e2e.{world['uid']}", "member.c", b"not an event")
        wait_until(lambda: metric(port, "cdc_sink_dlq_depth", sink=sink) == 1, timeout=15, message="DLQ depth 1")
        assert daemon.terminate() == 0, daemon.logs()

        checkpoint = state.load_checkpoint("e2e")
        insert_members(world, 100, 10)  # no reader runs: the source now lags
        snapshot_id = state.snapshot_create("e2e", world["db"], "members", None, 50)
        state.snapshot_update(snapshot_id, status="running", rows_done=20)

        sinks_only.start()
        wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=60, message=f"/readyz\n{sinks_only.logs()}")
        wait_until(lambda: len(orjson.loads(get(port, "/api/status", TOKEN)[1])["history"]) >= 2,
                   timeout=15, message="two samples of the source")

        driver = open_browser(1280)
        try:
            # Without the token the page shows no data and asks for one.
            driver.get(f"http://127.0.0.1:{port}/status")
            wait_until(lambda: "missing or wrong token" in driver.find_element("id", "banner").text, timeout=10, message="banner")
            assert driver.find_element("id", "login").is_displayed()
            assert driver.find_element("id", "source-position").text == "–"

            sign_in(driver, TOKEN)
            wait_until(lambda: int(driver.find_element("tag name", "body").get_attribute("data-renders") or 0) >= 2,
                       timeout=15, message="the page refreshes by itself")
            shot = tmp_path / "status.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            shutil.copy(shot, tmp_path.parent / "status-page.png")  # kept beside the test's folder for a look

            dom = Dom(driver.page_source)
            assert dom.text("source-name") == "e2e"
            assert dom.text("source-position") == f"{checkpoint.file}:{checkpoint.pos}"
            assert re.search(r"\d", dom.text("source-lag")) and not dom.text("source-lag").endswith("· 0 B")
            [line] = [p for p in driver.find_elements("css selector", "#chart-lag polyline.series") if p.get_attribute("data-series") == "source"]
            assert len(line.get_attribute("points").split()) >= 2
            [row] = [r for r in dom.rows if r["attrs"].get("data-sink") == sink]
            assert f"{checkpoint.file}:" in row["text"]
            [snap] = [r for r in dom.rows if r["attrs"].get("data-snapshot") == str(snapshot_id)]
            assert "members" in snap["text"] and "20 / 50" in snap["text"]
            assert "ready" in dom.text("ready")
            # The DLQ cell is flagged; the sink's values are those of the API.
            assert re.search(r'class="num dlq bad">1<', driver.page_source), "the sink's DLQ of 1 is not flagged"
            assert TOKEN not in driver.page_source
        finally:
            driver.quit()
        assert sinks_only.terminate() == 0, sinks_only.logs()
    finally:
        daemon.stop_if_running()
        sinks_only.stop_if_running()
        state.close()
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            conn.channel().queue_delete(f"cdc.sink.{sink}.dlq")
        drop_world(world)
