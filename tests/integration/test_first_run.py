"""The first run as a new user makes it: `recstream up` (what `make run` runs), its curl line,
the demo page in a real browser (headless Debian Chromium), then `recstream down`."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stream.api.client import ApiError, RecstreamClient
from stream.config import Settings
from stream.events.schema import ClickEvent
from stream.local.processes import alive, settings_env, stop
from stream.local.stack import free_port
from tests.conftest import forget, isolated_settings, wait_until

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    settings: Settings
    output: str

    def line(self, label: str) -> str:
        found = re.search(rf"^\s*{label}\s+(.+)$", self.output, re.MULTILINE)
        assert found, f"no '{label}' line in:\n{self.output}"
        return found.group(1).strip()


@pytest.fixture(scope="module")
def up(kafka_bootstrap: str, redis_url: str) -> Iterator[Up]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = isolated_settings(kafka_bootstrap, redis_url, Path(data_dir))
        settings = settings.model_copy(update={"insecure_open": False, "api_port": free_port()})
        log = Path(data_dir) / "up-output.txt"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "stream", "up", "--events", "3000"],
                env=settings_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        began = time.monotonic()
        wait_until(  # until it says how to query it
            lambda: "\n  try " in log.read_text() or process.poll() is not None,
            180,
            "recstream up to answer",
        )
        output = log.read_text()
        assert process.poll() is None, output
        print(f"recstream up answered after {time.monotonic() - began:.1f}s")
        try:
            yield Up(process, settings, output)
        finally:
            stop(process)
            forget(settings.model_copy(update={"redis_prefix": settings.redis_prefix + "up:"}))


def _answers_with_items(command: list[str], cwd: Path | None = None) -> None:
    command = [*command, "--silent", "--write-out", "\n%{http_code}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=cwd)
    body, code = done.stdout.rsplit("\n", 1)
    assert code == "200", done.stdout + done.stderr
    assert '"items":[{"item_id"' in body
    assert '"model_version":' in body


def test_up_prints_a_curl_line_that_answers_with_items(up: Up) -> None:
    _answers_with_items(shlex.split(up.line("try")))


def test_the_readmes_curl_line_answers_with_items(up: Up) -> None:
    """The README's first curl line, run where `make run` ran (its data dir and port here)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("curl "))
    port = up.line("API").split()[0].rsplit(":", 1)[1]
    line = line.replace(":8000/", f":{port}/")
    run_dir = Path(tempfile.mkdtemp())  # where a user ran `make run`
    (run_dir / ".recstream").symlink_to(up.settings.data_dir)
    cat = re.search(r"\$\(cat ([^)]+)\)", line)
    assert cat
    key = (run_dir / cat.group(1)).read_text().strip()
    _answers_with_items(shlex.split(line.replace(cat.group(0), key)), cwd=run_dir)


needs_browser = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tempfile.mkdtemp()}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _visitor_page(up: Up) -> str:
    user = f"visitor-{uuid.uuid4().hex[:8]}"  # no history: popular items, then learned ones
    return re.sub(r"user=[^&\s]+", f"user={user}", up.line("demo page"))


def _in_recs(browser: Any, selector: str, read: str) -> list[str]:
    """`read` of each element of the list on screen that `selector` picks, read in one go:
    the page redraws the list on each new model version (once a second), so elements read
    one by one can go stale in between."""
    found: list[str] = browser.execute_script(
        f"return [...document.querySelectorAll('#recs tbody {selector}')].map((e) => {read})"
    )
    return found


def _shown(browser: Any) -> list[str]:
    return _in_recs(browser, ".item", "e.innerText.trim()")


def _click_the_first(browser: Any) -> str:
    """Click the first recommendation; returns it once the list on screen reflects the click."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(10):  # the list may be redrawn between finding its first item and the click
        try:
            first = browser.find_elements(By.CSS_SELECTOR, "#recs tbody .item")[0]
            clicked: str = first.text
            first.click()
            break
        except StaleElementReferenceException:
            continue
    else:
        raise AssertionError("the list was redrawn under every click")
    recs = browser.find_element(By.ID, "recs")
    wait_until(
        lambda: recs.get_attribute("data-clicked") == clicked,
        15,
        "the recommendations to reflect the click",
    )
    return clicked


@needs_browser
def test_the_demo_page_shows_recommendations_change_after_a_click(up: Up) -> None:
    from selenium.webdriver.common.by import By

    browser = _browser()
    try:
        browser.get(_visitor_page(up))

        def shown() -> list[str]:
            return _shown(browser)

        wait_until(lambda: len(shown()) == 10, 30, "the page to show 10 recommendations")
        picks = browser.find_elements(By.CSS_SELECTOR, "#users option")
        assert len(picks) == 12  # the sample's most active users, to pick from
        before = shown()
        clicked = _click_the_first(browser)
        status = browser.find_element(By.ID, "status").text
        assert f"after your click on {clicked}" in status, status
        after = shown()
        assert after != before
        assert clicked not in after  # seen items are not recommended again
        reasons = set(_in_recs(browser, ".reason", "e.getAttribute('data-reason')"))
        assert reasons - {"popular"}, reasons  # the click made it personal
        assert browser.find_element(By.ID, "clicked").text == clicked
        wait_until(
            lambda: bool(browser.find_elements(By.CSS_SELECTOR, "#similar tbody tr")),
            10,
            "similar items of the clicked one",
        )
        wait_until(lambda: "clicks" in browser.find_element(By.ID, "fresh").text, 5, "freshness")
        wait_until(  # the service panel polls once a second
            lambda: browser.find_element(By.ID, "model").text not in ("", "-"),
            5,
            "the model version in the service panel",
        )
    finally:
        browser.quit()


@needs_browser
def test_an_answer_asked_before_a_click_never_replaces_the_one_that_reflects_it(up: Up) -> None:
    """The page also refreshes the list when the model version changes (once a second): an
    answer to such a refresh, asked before the click and arriving after the click's answer,
    must not put the pre-click list (the clicked item in it) back on screen."""

    browser = _browser()
    try:
        browser.get(_visitor_page(up))
        wait_until(lambda: len(_shown(browser)) == 10, 30, "the page to show 10 recommendations")
        browser.execute_script(  # the next list asked for answers 2 s late
            """
            const fetchNow = window.fetch.bind(window);
            window.delayNext = true;
            window.fetch = async (url, options) => {
              const late = window.delayNext && String(url).includes("/recommendations");
              if (late) window.delayNext = false;
              const answer = await fetchNow(url, options);
              if (late) await new Promise((done) => setTimeout(done, 2000));
              return answer;
            };
            show(null);  // as the version refresh does
            """
        )
        clicked = _click_the_first(browser)
        time.sleep(2.5)  # the late answer has arrived
        assert clicked not in _shown(browser)
    finally:
        browser.quit()


def test_the_python_client_recommends_sends_and_describes_items(up: Up) -> None:
    api = up.line("API").split()[0]
    demo_key, admin_key = up.line("keys").split(": ")[1], up.line("admin:")
    client = RecstreamClient(api, demo_key)
    top = client.recommend("user-000000", k=5)
    assert len(top.items) == 5
    assert top.model_version is not None
    assert client.similar(top.items[0].item_id, k=3)
    now = datetime.now(UTC)
    sent = client.send_events(
        [
            ClickEvent(event_id="client-1", user_id="client-user", ts=now, item_id="item-000001"),
            {"event_id": "client-2", "type": "click", "user_id": "client-user"},  # no ts
        ]
    )
    assert (sent.accepted, sent.rejected) == (1, 1)
    assert "ts" in sent.errors[0]["reason"]
    with pytest.raises(ApiError) as refused:
        client.put_item("new-item", category="topic-1")
    assert refused.value.status == 403
    admin = RecstreamClient(api, admin_key)
    assert admin.put_item("new-item", category="topic-1", brand="b")["category"] == "topic-1"


def test_down_stops_everything_up_started(up: Up) -> None:
    children = subprocess.run(
        ["pgrep", "-P", str(up.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) >= 3  # worker, trainer, API
    done = subprocess.run(
        [sys.executable, "-m", "stream", "down"],
        env=settings_env(up.settings),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"stopped recstream up (pid {up.process.pid})" in done.stderr
    assert up.process.wait(timeout=30) is not None
    wait_until(lambda: not any(alive(int(c)) for c in children), 30, "its processes to stop")
    assert shutil.which("curl")
    api = up.line("API").split()[0]
    probe = subprocess.run(["curl", "-s", f"{api}/healthz"], capture_output=True, check=False)
    assert probe.returncode != 0  # nothing listens any more
