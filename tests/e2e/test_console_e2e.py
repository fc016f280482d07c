"""The status page as an operator's console, in headless Chromium against the real daemon.

While a workload writes members: the page asks for a token and refuses writes without one; with
the token ("alice") its numbers and both charts move; the window can be chosen; every card keeps
its content inside at 1024, 1400 and 1920 px and the cards stack at 600 px; the dead letter's
reason and key are shown and the purge button empties the queue, recorded in the audit log in
alice's name. Then, with a sinks-only daemon (no reader to run it), a snapshot shows its progress
bar, rows/s and ETA, and its Cancel button asks the reader to stop it, also audited.

Screenshots are kept beside the test's folder (console-*.png).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time

import orjson
import pika
from browser import layout, open_browser, set_width, sign_in
from e2e_support import Daemon, drop_world, make_world
from test_metrics_e2e import free_port, get, insert_members, metric

from cdc.state.store import SqlStateStore

ALICE = "alice-console-token"


def texts(driver) -> dict:
    return driver.execute_script("""
      const t = (sel) => [...document.querySelectorAll(sel)].map(e => e.textContent.trim());
      return {offset: t('#sinks tr td:nth-child(2)'), position: t('#source-position'),
              rates: [...document.querySelectorAll('#chart-rates polyline.series')].map(p => p.getAttribute('points')),
              lags: [...document.querySelectorAll('#chart-lag polyline.series')].map(p => p.getAttribute('points')),
              legend: t('#legend-rates span'), renders: document.body.dataset.renders || '0'};""")


def test_the_console_moves_with_a_workload_and_guards_its_writes(tmp_path, source_server, pg_url, amqp_url, wait_until):
    port = free_port()
    world = make_world(tmp_path, source_server, pg_url, amqp_url, http_port=port, extra_yaml=(
        "snapshot: {mode: never}\n"
        f"admin: {{tokens: {{alice: {ALICE}}}, read_only: false, sample_interval_s: 1}}\n"))
    sink = world["sink"]
    state = SqlStateStore(world["state_url"])
    daemon, sinks_only = Daemon(world), Daemon(world, ["sinks"])
    stop = threading.Event()
    shots = tmp_path.parent

    def workload():
        next_id = 1000
        while not stop.wait(0.2):
            insert_members(world, next_id, 5)
            next_id += 5

    writer = threading.Thread(target=workload, daemon=True)
    driver = None
    try:
        daemon.start()
        wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=60, message=f"/readyz\n{daemon.logs()}")
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
            conn.channel().basic_publish(f"cdc.e2e.{world['uid']}", "member.c", b"not an event")
        wait_until(lambda: metric(port, "cdc_sink_dlq_depth", sink=sink) == 1, timeout=15, message="DLQ depth 1")
        writer.start()
        wait_until(lambda: metric(port, "cdc_sink_events_applied_total", sink=sink) > 20, timeout=30, message="the workload flows")

        driver = open_browser(1400)
        driver.get(f"http://127.0.0.1:{port}/status")
        # No token: no data, the page asks for one, and a write is refused by the server and says so.
        wait_until(lambda: "missing or wrong token" in driver.find_element("id", "banner").text, timeout=10, message="banner")
        assert driver.find_element("id", "login").is_displayed()
        assert driver.find_element("id", "source-position").text == "–"
        driver.find_element("id", "snapshot-start").click()
        wait_until(lambda: "refused (401)" in driver.find_element("id", "snapshot-msg").text, timeout=10, message="write refused")
        assert "admin token" in driver.find_element("id", "snapshot-start").get_attribute("title")

        sign_in(driver, ALICE)
        wait_until(lambda: int(texts(driver)["renders"]) >= 1 and texts(driver)["rates"], timeout=15, message="first render")
        assert ALICE not in driver.page_source and ALICE not in driver.current_url  # the token is in no page and no URL
        assert driver.find_element("id", "who-name").text == "token: alice"
        wait_until(lambda: len((texts(driver)["rates"] or [""])[0].split()) >= 3, timeout=20, message="three points in the chart")
        before = texts(driver)
        time.sleep(4)
        after = texts(driver)
        assert int(after["renders"]) > int(before["renders"]), "the page did not refresh by itself"
        assert after["offset"] != before["offset"], (before, after)  # the sink's offset moves
        assert after["rates"] != before["rates"] and after["lags"] != before["lags"], "the charts did not move"
        assert any(re.search(r"applied .*: [\d.]+k? ev/s", x) for x in after["legend"]), after["legend"]
        assert any(re.search(r"^read: [1-9]", x) for x in after["legend"]), after["legend"]

        # The window is the operator's: the 1 h window folds into 10 s steps.
        driver.find_element("css selector", ".windows button[data-window='1h']").click()
        wait_until(lambda: "one per 10.0 s" in driver.find_element("id", "chart-note").text, timeout=10, message="1 h window")
        driver.find_element("css selector", ".windows button[data-window='5m']").click()
        wait_until(lambda: "one per 1.0 s" in driver.find_element("id", "chart-note").text, timeout=10, message="5 min window")

        # The dead letter: its queue, reason and key, and the buttons.
        wait_until(lambda: driver.find_elements("css selector", f"#dlq .queue[data-queue='{sink}'] .purge"), timeout=10, message="DLQ card")
        card = driver.find_element("css selector", f"#dlq .queue[data-queue='{sink}']")
        assert "1 dead letter" in card.text and "1 ×" in card.text, card.text
        assert card.find_elements("css selector", "tr[data-message]")

        for width in (1024, 1400, 1920):
            set_width(driver, width)
            found = layout(driver)
            assert not found["overflowing"], f"{width} px: {found['overflowing']}"
            assert found["scrollWidth"] <= width, f"{width} px: the page scrolls sideways ({found['scrollWidth']})"
            driver.save_screenshot(str(shots / f"console-{width}.png"))
        set_width(driver, 600, 1400)
        found = layout(driver)
        assert not found["overflowing"] and found["scrollWidth"] <= 600, found
        cards = found["cards"]
        assert len({round(c["left"]) for c in cards}) == 1, cards  # one column
        assert all(b["top"] >= a["bottom"] for a, b in zip(cards, cards[1:])), cards
        driver.save_screenshot(str(shots / "console-600.png"))
        set_width(driver, 1400)

        driver.find_element("css selector", f"#dlq .queue[data-queue='{sink}'] .purge").click()
        driver.switch_to.alert.accept()
        wait_until(lambda: "done" in driver.find_element("id", "dlq-msg").text, timeout=15, message="purged")
        assert '"purged":1' in driver.find_element("id", "dlq-msg").text.replace(" ", "")
        wait_until(lambda: metric(port, "cdc_sink_dlq_depth", sink=sink) == 0, timeout=15, message="DLQ emptied")
        [row] = [r for r in state.audit_log(20) if r["target"] == f"dlq:{sink}"]
        assert row["who"].startswith("admin API token alice") and "1 dead letters purged" in row["reason"]
        wait_until(lambda: "admin API token alice" in driver.find_element("id", "audit").text, timeout=10, message="audit on the page")

        stop.set()
        writer.join(10)
        assert daemon.terminate() == 0, daemon.logs()

        # A snapshot under way (no reader runs it now): progress, rows/s, ETA, and Cancel.
        snapshot_id = state.snapshot_create("e2e", world["db"], "members", "id > 0", 400)
        state.snapshot_update(snapshot_id, status="running", rows_done=100,
                              started_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10))  # updated: now
        sinks_only.start()
        wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=60, message=f"/readyz\n{sinks_only.logs()}")
        driver.refresh()
        wait_until(lambda: driver.find_elements("css selector", f"#snapshots tr[data-snapshot='{snapshot_id}'] .cancel"),
                   timeout=20, message="the snapshot's row")
        row_el = driver.find_element("css selector", f"#snapshots tr[data-snapshot='{snapshot_id}']")
        assert "100 / 400" in row_el.text and re.search(r"\b(9|10|11)\b", row_el.find_element("css selector", ".rate").text), row_el.text
        assert re.search(r"\d+(\.\d)? s", row_el.find_element("css selector", ".eta").text), row_el.text
        fill = row_el.find_element("css selector", ".bar > div").get_attribute("style")
        assert "25%" in fill, fill
        driver.save_screenshot(str(shots / "console-snapshot.png"))
        driver.find_element("css selector", f"#snapshots tr[data-snapshot='{snapshot_id}'] .cancel").click()
        driver.switch_to.alert.accept()
        wait_until(lambda: "cancel_requested" in driver.find_element("id", "snapshot-msg").text, timeout=10, message="cancel sent")
        [snap] = [s for s in state.snapshot_list("e2e") if s["id"] == snapshot_id]
        assert snap["status"] == "cancel_requested"
        assert any(r["target"] == f"snapshot:{world['db']}.members" and r["who"].startswith("admin API token alice")
                   for r in state.audit_log(20))
        status = orjson.loads(get(port, "/api/status", ALICE)[1])
        assert status["token_name"] == "alice"
        assert sinks_only.terminate() == 0, sinks_only.logs()
        # The token is in no log line of either process.
        assert ALICE not in daemon.logs() + sinks_only.logs()
    finally:
        stop.set()
        if driver is not None:
            driver.quit()
        daemon.stop_if_running()
        sinks_only.stop_if_running()
        state.close()
        drop_world(world)
