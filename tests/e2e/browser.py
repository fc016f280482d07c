"""Headless Chromium for the status page tests, driven through chromedriver (selenium).

Both are Debian packages (deploy/setup.sh installs chromium and chromium-driver); selenium is given
their paths, so nothing is downloaded. Each browser gets a fresh profile.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


def open_browser(width: int = 1400, height: int = 900):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium or chromedriver is missing: run deploy/setup.sh (it installs the Debian packages chromium "
                    "and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='cdc-chromium-')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    set_width(driver, width, height)
    return driver


def set_width(driver, width: int, height: int = 900) -> None:
    """The viewport exactly ``width`` CSS pixels wide (window sizes include no frame in headless mode)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                                   "mobile": False})
    time.sleep(0.3)  # let the resize handler redraw the charts


def sign_in(driver, token: str) -> None:
    field = driver.find_element("id", "token-input")
    field.clear()
    field.send_keys(token)
    driver.find_element("css selector", "#login button[type=submit]").click()


# Every element inside a card whose box leaves the card's box (1 px of rounding allowed), and the page's
# horizontal overflow.
OVERFLOW_JS = """
const out = [];
for (const card of document.querySelectorAll('main > section')) {
  const c = card.getBoundingClientRect();
  for (const el of card.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < c.left - 1 || r.right > c.right + 1 || r.top < c.top - 1 || r.bottom > c.bottom + 1) {
      out.push(`${card.id}: <${el.tagName.toLowerCase()} id=${el.id} class=${el.getAttribute('class')}> ` +
               `[${Math.round(r.left)},${Math.round(r.right)}]x[${Math.round(r.top)},${Math.round(r.bottom)}] outside ` +
               `[${Math.round(c.left)},${Math.round(c.right)}]x[${Math.round(c.top)},${Math.round(c.bottom)}] ` +
               `${(el.textContent || '').slice(0, 60)}`);
    }
  }
}
return {overflowing: out.slice(0, 20), scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
        cards: [...document.querySelectorAll('main > section')].map(s => { const r = s.getBoundingClientRect();
                 return {id: s.id, left: r.left, right: r.right, top: r.top, bottom: r.bottom}; })};
"""


def layout(driver) -> dict:
    return driver.execute_script(OVERFLOW_JS)
