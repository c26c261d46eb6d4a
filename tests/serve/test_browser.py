"""End to end: the real `qkrag serve` on the demo data, driven by a real headless Chromium.

Skips (with the reason) when Chromium, chromedriver or selenium is missing; `scripts/test.sh` installs Chromium with
apt-get when it can.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_QUERY = "why does my dough stay flat"  # README's example query; its answer is bake-01
ANSWER = "bake-01"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
                              "chromium-driver; scripts/test.sh does it when apt-get is usable)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qkrag.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.fixture(scope="module")
def projection(tmp_path_factory) -> Path:
    """The demo's projection trained on its human train split (the README's runs/demo-proj needs the LLM)."""
    out = tmp_path_factory.mktemp("proj") / "demo-proj"
    done = _cli("train", "data/demo", "--split", "train", "--out", str(out))
    output, _ = done.communicate(timeout=600)
    assert done.returncode == 0, output
    return out


@pytest.fixture(scope="module")
def server(projection):
    process = _cli("serve", "data/demo", "--projection", str(projection), "--http-port", "0")
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=300)
            seen.append(line)
            if line.startswith("qkrag serve: open "):
                yield line.split()[3]
                break
            assert process.poll() is None, "".join(seen)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _search(driver, url: str, query: str, answer: str = "") -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#source option"))
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(query)
    driver.find_element(By.ID, "relevant").send_keys(answer)
    driver.find_element(By.ID, "search").click()


def test_binds_loopback(server):
    assert server.startswith("http://127.0.0.1:")


def test_readme_query_shows_rankings_with_probabilities_and_the_answer_marked(server, browser):
    from selenium.webdriver.common.by import By

    _search(browser, server, README_QUERY, ANSWER)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-column="projection"] .hit'))
    columns = [c.get_attribute("data-column") for c in browser.find_elements(By.CSS_SELECTOR, ".column")]
    assert columns == ["cosine", "projection", "hybrid", "bm25"]
    hits = browser.find_elements(By.CSS_SELECTOR, '[data-column="projection"] .hit')
    assert len(hits) == 10
    probabilities = [h.find_element(By.CSS_SELECTOR, ".prob").text for h in hits]
    assert all(p.startswith("p=0.") for p in probabilities), probabilities
    answer = browser.find_element(By.CSS_SELECTOR, f'[data-column="projection"] .hit[data-id="{ANSWER}"]')
    assert answer.get_attribute("data-relevant") == "true" and "✓ relevant" in answer.text
    assert "nDCG@10" in browser.find_element(By.CSS_SELECTOR, '[data-column="projection"] h2').text
    posts = browser.find_elements(By.CSS_SELECTOR, '[data-column="cosine"] .hit[data-question-form="true"]')
    assert posts and all(p.get_attribute("data-id").startswith("post-") for p in posts)
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_an_empty_query_shows_a_message_not_a_trace(server, browser):
    from selenium.webdriver.common.by import By

    _search(browser, server, "   ")
    error = _wait(browser, lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed()
                  else None)
    assert "has no text" in error.text and "Fix:" in error.text
    assert "Traceback" not in browser.page_source


def test_collection_view_draws_gains_and_the_reliability_diagram(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server + "?view=collection")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#per-query tbody tr"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#per-query tbody tr")) == 60
    assert "Projection − cosine" in browser.find_element(By.ID, "comparison").text
    counts = browser.find_elements(By.CSS_SELECTOR, "#reliability-chart text.count")
    assert counts and all(c.text.startswith("n=") for c in counts)
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.histogram")) == 2
