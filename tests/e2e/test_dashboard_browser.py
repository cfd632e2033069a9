"""The dashboard in a real browser: Debian's chromium driven by chromedriver through selenium, against a
real `secauto serve` process in cluster mode (the session's redis-server).

One browser session and one node serve the whole scenario: log in, watch a job submitted through the API
appear and finish without a reload, open its detail, cancel a running job as an operator, check that a
viewer has no Cancel button, watch a burst of 10,000 events cause a bounded number of fragment requests,
watch a schedule fire on the schedules page, pause it with a note, resume and trigger it, log out. With
``SECAUTO_SCREENSHOTS=DIR`` (``scripts/screenshots`` sets it to docs/screenshots) it also saves a PNG of
each main page, after adding some example jobs (and schedules) so the pages have something to show.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, REPO, VIEWER_KEY
from tests.support.ports import free_port
from tests.support.procs import write_config

# Read at import: the suite's autouse fixture drops SECAUTO_* variables from each test's environment.
SCREENSHOTS = os.environ.get("SECAUTO_SCREENSHOTS")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


# ------------------------------------------------------------------------------------------- helpers
class Api:
    """The node's JSON API, with the admin key."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None, key: str = ADMIN_KEY) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return json.loads(text) if text.startswith("{") else text

    def submit(self, body: dict[str, Any]) -> str:
        return str(self.call("POST", "/cluster/jobs", body)["job_id"])

    def status(self, job_id: str) -> str:
        return str(self.call("GET", f"/cluster/jobs/{job_id}")["job"]["status"])

    def fragment_requests(self, route: str) -> float:
        """How many GETs the node answered on a dashboard route (its own request counter)."""
        total = 0.0
        for line in self.call("GET", "/metrics").splitlines():
            if (line.startswith("secauto_http_requests_total{") and f'route="{route}"' in line
                    and 'method="GET"' in line):
                total += float(line.rsplit(" ", 1)[1])
        return total


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 20.0) -> T:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)  # type: ignore[no-any-return]


def text_of(driver: WebDriver, css: str) -> str:
    """The element's text, or "" while it is missing or being replaced by a live update."""
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    except WebDriverException as exc:
        return _replaced_meanwhile(exc)


def attribute_of(driver: WebDriver, css: str, name: str) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).get_attribute(name) or "")
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    except WebDriverException as exc:
        return _replaced_meanwhile(exc)


def _replaced_meanwhile(exc: WebDriverException) -> str:
    """"" when chromedriver reports an element swapped out between finding and reading it as an inspector
    error rather than as a stale reference (seen once in CI); re-raises anything else."""
    if "does not belong to the document" in str(exc):
        return ""
    raise exc


class Screens:
    """Saves named screenshots when SECAUTO_SCREENSHOTS names a folder."""

    def __init__(self, driver: WebDriver) -> None:
        self.folder = Path(SCREENSHOTS) if SCREENSHOTS else None
        self.driver = driver
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def wanted(self) -> bool:
        return self.folder is not None

    def shot(self, name: str) -> None:
        if self.folder is not None:
            time.sleep(0.3)  # let a just-swapped fragment settle
            self.driver.save_screenshot(str(self.folder / f"{name}.png"))


def log_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(f"{url}/ui/login")
    field = driver.find_element(By.NAME, "api_key")
    field.send_keys(key)
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: d.current_url.rstrip("/").endswith("/ui"))


def log_out(driver: WebDriver) -> None:
    driver.find_element(By.ID, "logout").click()
    wait(driver, lambda d: "/ui/login" in d.current_url)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are not installed (scripts/test installs them)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1000", "--lang=en-US", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations show up there
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def node_url(tmp_path: Path, process_factory: Any, redis_url: str) -> str:
    port = free_port()
    config = write_config(tmp_path / "node.yaml", {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "cluster": {"enabled": True, "redis_url": redis_url, "node_id": "ui-node", "cluster_name": "ui-cluster",
                    "heartbeat_interval": 1, "retry_backoff": 0.05, "max_concurrent_jobs": 20},
        "security": {"api_keys": [{"name": "admin", "key": ADMIN_KEY, "role": "admin"},
                                  {"name": "ops", "key": OPERATOR_KEY, "role": "operator"},
                                  {"name": "view", "key": VIEWER_KEY, "role": "viewer"}]},
        "engine": {"scripts_dir": str(REPO / "automations"), "playbooks_dir": str(REPO / "playbooks")},
        "logging": {"level": "warning"},
    })
    proc = process_factory(config, name="ui-node")
    proc.wait_http_sync(timeout=30)
    return f"http://127.0.0.1:{port}"


def example_jobs(api: Api) -> None:
    """A few realistic jobs for the screenshots: triage runs, a phishing playbook, failures in the DLQ."""
    alerts = [("198.51.100.23", "high", "malware"), ("10.1.2.3", "low", "scan"), ("203.0.113.9", "critical", "c2"),
              ("192.0.2.44", "medium", "phishing")]
    for ip, severity, kind in alerts:
        api.submit({"playbook_name": "triage_ip", "tags": ["triage", kind], "priority": 5,
                    "context": {"alert": {"source_ip": ip, "severity": severity, "type": kind}}})
    api.submit({"playbook_name": "notify_soc", "tags": ["phishing"],
                "context": {"alert": {"type": "phishing", "source_ip": "203.0.113.77"}}})
    for target in ("edr-01.corp", "edr-02.corp"):
        api.submit({"playbook": [{"action": "fail", "message": f"EDR {target} unreachable: connection refused"}],
                    "tags": ["containment"], "max_retries": 0, "context": {"host": target}})


# ------------------------------------------------------------------------------------------ the test
def test_dashboard_in_a_browser(browser: WebDriver, node_url: str, redis_url: str) -> None:
    driver, api, screens = browser, Api(node_url), Screens(browser)
    if screens.wanted:
        example_jobs(api)

    # 1. an unauthenticated visit lands on the login form; an operator logs in
    driver.get(f"{node_url}/ui")
    wait(driver, lambda d: "/ui/login" in d.current_url)
    assert driver.find_element(By.NAME, "api_key").get_attribute("type") == "password"
    screens.shot("login")
    log_in(driver, node_url, OPERATOR_KEY)
    assert wait(driver, lambda d: text_of(d, "#nodes-up")) == "1"
    assert ADMIN_KEY not in driver.page_source and OPERATOR_KEY not in driver.page_source
    cookie = driver.get_cookie("secauto_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # local time on hover: ui.js fills the title of every time element
    wait(driver, lambda d: text_of(d, "#leader") == "ui-node")

    # 2. a job submitted through the API appears on the jobs page and finishes, without a reload
    driver.get(f"{node_url}/ui/jobs")
    driver.execute_script("window.secautoNoReload = true;")
    job_id = api.submit({"playbook": [{"action": "log", "message": "hello from the API"},
                                      {"action": "sleep", "seconds": 1.5},
                                      {"action": "set", "variables": {"verdict": "benign"}}],
                         "tags": ["browser"], "context": {"alert": {"source_ip": "198.51.100.7"}}})
    row = f'tr[data-job-id="{job_id}"] .status'
    wait(driver, lambda d: text_of(d, row) in ("pending", "running", "completed"))
    assert wait(driver, lambda d: text_of(d, row) == "completed", timeout=30)
    assert driver.execute_script("return window.secautoNoReload === true;")  # updated in place
    wait(driver, lambda d: attribute_of(d, f'tr[data-job-id="{job_id}"] time', "title").startswith("Your local time:"))
    screens.shot("jobs")

    # 3. its detail page: status, step timeline with outputs, attempts, context
    driver.find_element(By.LINK_TEXT, job_id).click()
    wait(driver, lambda d: d.current_url.endswith(f"/ui/jobs/{job_id}"))
    assert text_of(driver, "#job-status") == "completed"
    assert len(driver.find_elements(By.CSS_SELECTOR, "#steps li.step")) == 3
    assert "hello from the API" in text_of(driver, "#steps")
    assert "ui-node" in text_of(driver, "#attempts") and "benign" in text_of(driver, "#context")
    screens.shot("job")

    # 4. an operator cancels a running job with one click
    running = api.submit({"playbook": [{"action": "sleep", "seconds": 120}], "tags": ["long-scan"]})
    driver.get(f"{node_url}/ui/jobs/{running}")
    wait(driver, lambda d: text_of(d, "#job-status") == "running")
    screens.shot("job_running")
    driver.find_element(By.ID, "cancel-job").click()
    wait(driver, lambda d: text_of(d, "#job-status") == "cancelled")
    assert api.status(running) == "cancelled"
    assert not driver.find_elements(By.ID, "cancel-job")

    # 5. a viewer sees the running job but no Cancel button
    other = api.submit({"playbook": [{"action": "sleep", "seconds": 120}]})
    log_out(driver)
    log_in(driver, node_url, VIEWER_KEY)
    driver.get(f"{node_url}/ui/jobs/{other}")
    wait(driver, lambda d: text_of(d, "#job-status") == "running")
    assert not driver.find_elements(By.ID, "cancel-job") and not driver.find_elements(By.TAG_NAME, "form")[1:]
    api.call("DELETE", f"/cluster/jobs/{other}")
    wait(driver, lambda d: text_of(d, "#job-status") == "cancelled")  # live, for viewers too

    # the event tail follows the cluster; Pause freezes it, Resume catches up
    driver.get(f"{node_url}/ui/events")
    wait(driver, lambda d: other in text_of(d, "#events"))
    driver.find_element(By.ID, "pause").click()
    quiet = api.submit({"playbook": [{"action": "log", "message": "while paused"}]})
    time.sleep(3)  # more than one live interval
    assert quiet not in text_of(driver, "#events")
    assert driver.find_element(By.ID, "pause").text == "Resume"
    driver.find_element(By.ID, "pause").click()
    wait(driver, lambda d: quiet in text_of(d, "#events"))

    if screens.wanted:  # the events of the jobs so far, before the burst below fills the tail
        driver.get(f"{node_url}/ui/events")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#events td time"))
        screens.shot("events")

    # 6. a burst of 10,000 events: the open overview refetches its fragment a bounded number of times
    driver.get(f"{node_url}/ui")
    wait(driver, lambda d: text_of(d, "#nodes-up") == "1")
    time.sleep(2.5)  # the SSE connection is open and the first signal (if any) has passed
    before = api.fragment_requests("/ui")
    client = redis.Redis.from_url(redis_url)
    try:
        started = time.monotonic()
        pipe = client.pipeline(transaction=False)
        for index in range(10_000):
            pipe.publish("secauto:events:ui-cluster",
                         json.dumps({"type": "job.submitted", "version": 1, "timestamp": "2026-01-01T00:00:00.000Z",
                                     "job_id": f"job-burst-{index}"}, separators=(",", ":")))
        pipe.execute()
    finally:
        client.close()
    time.sleep(5)
    elapsed = time.monotonic() - started
    requests = api.fragment_requests("/ui") - before
    print(f"10,000 events over {elapsed:.1f} s -> {requests:.0f} overview fragment requests")
    assert 1 <= requests <= elapsed / 2 + 2

    # 7. the other pages, for the screenshots (and a last look that each renders for a viewer)
    log_out(driver)
    log_in(driver, node_url, ADMIN_KEY)
    if screens.wanted:
        time.sleep(1.5)
        driver.get(f"{node_url}/ui")
        wait(driver, lambda d: text_of(d, "#nodes-up") == "1")
        screens.shot("overview")
    for path, marker, name in (("/ui/events", "#events", ""), ("/ui/nodes", "table.grid", "nodes"),
                               ("/ui/dlq", "#dlq-count", "dlq")):
        driver.get(node_url + path)
        wait(driver, lambda d, css=marker: d.find_elements(By.CSS_SELECTOR, css))
        if name:
            screens.shot(name)
    if screens.wanted and driver.find_elements(By.CSS_SELECTOR, "input[type=checkbox]"):
        for box in driver.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")[:2]:
            box.click()
        driver.find_element(By.ID, "requeue-selected").click()
        wait(driver, lambda d: d.find_elements(By.ID, "confirm-list"))
        screens.shot("dlq_confirm")

    # 8. schedules: the list follows fires live; an operator (here an admin) pauses with a note, resumes
    # and triggers from the detail page
    sweep = [{"action": "log", "message": "nightly compliance sweep"}]
    api.call("PUT", "/schedules/ioc-refresh", {"every": 2, "tags": ["intel"],
                                               "playbook": [{"action": "log", "message": "refresh IOC lists"}]})
    api.call("PUT", "/schedules/compliance-sweep", {"cron": "0 2 * * *", "timezone": "Europe/Berlin",
                                                    "playbook": sweep, "overlap": "buffer_one"})
    if screens.wanted:
        api.call("PUT", "/schedules/threat-intel", {"every": 900, "jitter": 30, "playbook_name": "notify_soc",
                                                    "context": {"alert": {"type": "intel", "source_ip": "feeds"}}})
        api.call("PUT", "/schedules/weekly-report", {"cron": "30 7 * * MON", "timezone": "America/New_York",
                                                     "playbook": sweep})
        api.call("POST", "/schedules/weekly-report/pause", {"note": "report owner on leave"})
    driver.get(f"{node_url}/ui/schedules")
    driver.execute_script("window.secautoNoReload = true;")
    assert "Europe/Berlin" in text_of(driver, 'tr[data-schedule="compliance-sweep"]')
    wait(driver, lambda d: text_of(d, 'tr[data-schedule="ioc-refresh"] .outcome') == "fired", timeout=15)
    assert driver.execute_script("return window.secautoNoReload === true;")  # updated in place
    screens.shot("schedules")
    driver.find_element(By.LINK_TEXT, "ioc-refresh").click()
    wait(driver, lambda d: text_of(d, "#schedule-state") == "active")
    driver.find_element(By.ID, "pause-note").send_keys("change freeze")
    driver.find_element(By.ID, "pause-schedule").click()
    wait(driver, lambda d: text_of(d, "#schedule-state") == "paused")
    assert "change freeze" in text_of(driver, "#pause-note-shown")
    assert api.call("GET", "/schedules/ioc-refresh")["schedule"]["pause_note"] == "change freeze"
    driver.find_element(By.ID, "resume-schedule").click()
    wait(driver, lambda d: text_of(d, "#schedule-state") == "active")
    driver.find_element(By.ID, "trigger-schedule").click()
    wait(driver, lambda d: d.find_elements(By.ID, "triggered"))
    triggered = driver.find_element(By.CSS_SELECTOR, "#triggered a").text
    assert triggered in text_of(driver, "#history") and api.status(triggered) in ("pending", "running", "completed")
    screens.shot("schedule")
    api.call("POST", "/schedules/ioc-refresh/pause")

    # 9. log out: the session is gone, the pages send the browser back to the login form
    log_out(driver)
    assert driver.get_cookie("secauto_session") is None
    driver.get(f"{node_url}/ui/jobs")
    wait(driver, lambda d: "/ui/login" in d.current_url)

    # nothing the pages did was refused by the Content-Security-Policy (no inline script or style)
    refused = [entry["message"] for entry in driver.get_log("browser")
               if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]]
    assert not refused, refused
    # ... and the policy is in force: an inline style added to the page is refused (and logged)
    driver.execute_script("const s = document.createElement('style'); s.textContent = 'body {color: red}';"
                          "document.head.appendChild(s);")
    wait(driver, lambda d: any("Content Security Policy" in entry["message"] for entry in d.get_log("browser")),
         timeout=5)
