"""Drives the gateway's page in Debian's headless Chromium (Selenium + chromedriver).

Usage: page_check.py URL TOKEN SCREENSHOT
Checks that the live values appear and change, enters the token, places an offer through the
page's form and waits for the page to say it was submitted; writes a phone-sized screenshot.
Prints one JSON line with what it saw; exits non-zero on any failure.
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, token, shot = sys.argv[1], sys.argv[2], sys.argv[3]

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for arg in (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic", "--window-size=430,2200",
):
    opts.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def text(id_):
    return driver.find_element(By.ID, id_).text


def wait(what, pred, secs=30):
    deadline = time.time() + secs
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.25)
    raise SystemExit(f"page check failed: {what} (page says: {driver.find_element(By.TAG_NAME, 'body').text[:600]!r})")


try:
    driver.get(url)
    wait("the page connects", lambda: text("connection") == "live")
    wait("PV power appears", lambda: text("pv-w").endswith("W"))
    wait("battery SoC appears", lambda: text("battery-soc").endswith("%"))
    wait("grid power appears", lambda: text("grid-w").endswith("W"))
    first = {i: text(i) for i in ("pv-w", "battery-w", "grid-w", "battery-soc", "updated", "height")}
    devices_first = text("devices")
    changed = wait(
        "live values change",
        lambda: [i for i in first if text(i) != first[i]] if text("devices") != devices_first else None,
    )
    # Trading: the token once, then an offer through the form.
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait("the token is saved", lambda: "token saved" in text("trade-result"))
    wh = driver.find_element(By.ID, "offer-wh")
    wh.clear()
    wh.send_keys("321")
    driver.find_element(By.ID, "offer-submit").click()
    result = wait("the offer is submitted", lambda: text("trade-result") if "offer submitted" in text("trade-result") else None)
    wait("the offer shows in the page's offer table", lambda: "321" in text("offers"), secs=40)
    driver.save_screenshot(shot)
    print(json.dumps({
        "changed": changed,
        "pv": text("pv-w"), "battery": text("battery-w"), "grid": text("grid-w"),
        "soc": text("battery-soc"), "height": text("height"), "result": result,
    }))
finally:
    driver.quit()
