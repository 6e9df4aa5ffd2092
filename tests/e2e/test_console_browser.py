"""The operator console in a real browser (Debian's chromium, headless, driven by Selenium through Debian's
chromedriver: Selenium Manager downloads nothing) against a real `tonewatch serve` on its own redis-server, with the
bundled model and the shipped adapters. A session is driven into drift through /v1/score; in the browser an operator
signs in with a client key, filters to alerting sessions, opens the session and finds the drift chart and its alarm
marker; the transcript's markup stays text; the adapters page refuses the client key and works with the admin token.
The browser resolves no host but 127.0.0.1, and the test checks from its network log that it asked for no other.

TONEWATCH_CONSOLE_PNG_DIR=docs/console also writes screenshots of the three pages (the README's pictures)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ADMIN = "console-admin-token-0123456789"
CLIENT = "console-client-key-0123456789"
ADAPTER = "console-e2e"  # the /v1/score caller's source name: the sessions' `adapter`
FRIENDLY = [
    "Thanks so much for reaching out! I'm really happy to help you sort this out today.",
    "Oh no, I'm so sorry about that! Let me fix it for you right away.",
    "Great news, your refund is on its way! Thanks for your patience, it means a lot.",
    "No worries at all! I've updated your address, and you're all set.",
]
CURT = [
    "Request received. Ticket 4411 closed.",
    "Refund denied. Policy 7.2.",
    "Address updated. No further action.",
    "Invalid input. Resubmit form.",
    'Account locked. Contact admin. <img id="injected" src="x">',  # untrusted text: must stay text
]
WAIT_S = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support.redis_servers import RedisServer
    from tests.support.servers import ServerProcess, free_port

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make system-deps`")
    tmp = tmp_path_factory.mktemp("console")
    redis = RedisServer(free_port(), tmp / "redis", persistent=False)
    redis.start()
    srv = ServerProcess(
        {
            "TONEWATCH_REDIS_URL": redis.url,
            "TONEWATCH_DB_PATH": str(tmp / "tw.db"),
            "TONEWATCH_SPILL_PATH": str(tmp / "spill.jsonl"),
            "TONEWATCH_ADMIN_TOKEN": ADMIN,
            "TONEWATCH_API_KEYS": CLIENT,
            "TONEWATCH_DEFAULT_ADAPTER": "support-friendly",
        },
        free_port(),
    )
    try:
        srv.wait_ready(120)
        yield srv
    finally:
        srv.stop()
        redis.kill()


@pytest.fixture(scope="module")
def sessions(server):
    """A session driven into drift (in persona, then curt) and a calm one, both from the same source."""

    def score(session: str, texts: list[str]) -> list[dict]:
        r = httpx.post(
            server.base_url + "/v1/score",
            json={"texts": texts, "persona": "support-friendly", "session_id": session, "adapter": ADAPTER},
            headers={"Authorization": f"Bearer {CLIENT}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()["results"]

    drifting = score("console-drift-1", FRIENDLY + CURT)
    assert drifting[-1]["drift"]["alert"], [r["drift"] for r in drifting]
    calm = score("console-calm-1", FRIENDLY * 2)
    assert not any(r["drift"]["alert"] for r in calm)
    return {"drifting": "console-drift-1", "calm": "console-calm-1", "turns": len(FRIENDLY + CURT)}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: run `make system-deps` (Debian packages chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing but loopback resolves
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        "--metrics-recording-only",
        "--disable-features=OptimizationHints,MediaRouter,Translate",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, css: str, timeout: float = WAIT_S):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def session_rows(driver, expected: list[str]) -> list[str]:
    """The session ids the table shows, once they are `expected` (the page re-renders after a hash change)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d) -> list[str] | None:
        try:
            return [r.get_attribute("data-session-id") for r in d.find_elements(By.CSS_SELECTOR, ".session-row")]
        except StaleElementReferenceException:
            return None

    try:
        WebDriverWait(driver, WAIT_S).until(lambda d: shown(d) == expected)
    except TimeoutException:
        pass
    return shown(driver) or []


def sign_in(driver, key: str) -> None:
    from selenium.webdriver.common.by import By

    field = wait_for(driver, "#token")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "sign-in-button").click()
    wait_for(driver, "#sign-out")


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("TONEWATCH_CONSOLE_PNG_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(1280, min(max(int(height), 700), 2200) + int(chrome))
    driver.save_screenshot(str(Path(folder) / f"{name}.png"))
    driver.set_window_size(1280, 1000)


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_operator_finds_a_drifting_session_and_its_alarm(server, sessions, browser, downloads):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base = server.base_url
    browser.get(base + "/console")
    sign_in(browser, CLIENT)
    assert "client key" in browser.find_element(By.ID, "who").text
    wait_for(browser, "#sessions-table")

    # filter to this source's alerting sessions through the form; the filters land in the URL hash
    browser.find_element(By.ID, "adapter").send_keys(ADAPTER)
    Select(browser.find_element(By.ID, "alerting")).select_by_value("true")
    browser.find_element(By.ID, "apply-filters").click()
    assert session_rows(browser, [sessions["drifting"]]) == [sessions["drifting"]]
    assert "alerting=true" in browser.current_url and f"adapter={ADAPTER}" in browser.current_url

    # the same view straight from a link (what an alert's `console` annotation points at)
    browser.get(f"{base}/console#/sessions?adapter={ADAPTER}&persona=support-friendly&alerting=false")
    assert session_rows(browser, [sessions["calm"]]) == [sessions["calm"]]
    assert Select(browser.find_element(By.ID, "alerting")).first_selected_option.get_attribute("value") == "false"
    assert browser.find_element(By.ID, "persona").get_attribute("value") == "support-friendly"
    browser.get(f"{base}/console#/sessions?adapter={ADAPTER}&order=drift")
    assert session_rows(browser, [sessions["drifting"], sessions["calm"]]) == [sessions["drifting"], sessions["calm"]]
    screenshot(browser, "sessions")
    browser.get(f"{base}/console#/sessions?adapter={ADAPTER}&alerting=true")
    assert session_rows(browser, [sessions["drifting"]]) == [sessions["drifting"]]
    link = wait_for(browser, f'.session-row[data-session-id="{sessions["drifting"]}"] a.session-link')

    # the export button fetches the filtered turns with the key in a header and saves them
    browser.find_element(By.ID, "export-sessions").click()
    exported = downloads / "tonewatch-sessions.ndjson"
    WebDriverWait(browser, WAIT_S).until(lambda _: exported.exists() and exported.read_text().endswith("\n"))
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == sessions["turns"] and {t["session_id"] for t in lines} == {sessions["drifting"]}

    # the session: chart with the threshold, an alarm marker, the transcript as text
    link.click()
    wait_for(browser, "#drift-chart")
    assert browser.find_element(By.ID, "session-id").text == sessions["drifting"]
    assert browser.find_elements(By.CSS_SELECTOR, "#drift-chart .series-cusum")
    assert browser.find_elements(By.CSS_SELECTOR, "#drift-chart .series-threshold")
    markers = browser.find_elements(By.CSS_SELECTOR, "#drift-chart .alarm-marker")
    assert markers, "no alarm marker on the drift chart"
    onset = browser.find_elements(By.CSS_SELECTOR, "#drift-chart .alarm-onset")
    assert len(onset) >= 1 and int(onset[0].get_attribute("data-seq")) > len(FRIENDLY)  # seq counts from 1
    turns = browser.find_elements(By.CSS_SELECTOR, "#transcript li.turn")
    assert len(turns) == sessions["turns"]
    assert browser.find_elements(By.ID, "injected") == []  # the answer's markup was not parsed
    assert '<img id="injected" src="x">' in turns[-1].text
    assert "support-friendly" in turns[0].text and ADAPTER in turns[0].text
    screenshot(browser, "session")

    # adapters: a client key is refused with a clear message; the admin token sees the loaded adapters
    browser.get(base + "/console#/adapters")
    denied = wait_for(browser, "#adapters-denied")
    assert "admin token" in denied.text
    browser.find_element(By.ID, "sign-out").click()
    wait_for(browser, "#token")
    assert browser.execute_script("return sessionStorage.length") == 0
    canary = {"share": 0.1, "persona": "support-friendly", "min_turns": 10}
    r = httpx.post(
        base + "/admin/adapters/support-robotic/canary", json=canary, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert r.status_code == 200, r.text
    sign_in(browser, ADMIN)
    wait_for(browser, "#adapters-table")
    assert browser.find_element(By.ID, "active-adapter").text == "support-friendly"
    evidence = wait_for(browser, '.canary[data-adapter="support-robotic"]')
    assert "running" in evidence.text and "support-friendly" in evidence.text
    rows = browser.find_elements(By.CSS_SELECTOR, ".adapter-row.active")
    assert [row.get_attribute("data-adapter") for row in rows] == ["support-friendly"]
    rows[0].find_element(By.CSS_SELECTOR, ".profile-button").click()
    wait_for(browser, "#profile-chart .profile-bar", timeout=60)
    screenshot(browser, "adapters")

    # nothing but this server was asked for, and the key never went into a URL
    urls = requested_urls(browser)
    assert urls
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme in ("blob", "data") or parts.netloc == urlsplit(base).netloc, url
        assert CLIENT not in url and ADMIN not in url
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not [p for p in problems if "Content Security Policy" in p or "Uncaught" in p], problems
