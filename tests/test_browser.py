"""The page in a real browser: `streamlit run ui/app.py` on the bundled models, driven by
Playwright through Debian's Chromium (installed by `make test`), loopback only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SAMPLES, free_port, wait_healthy

from privatellm.config import Settings
from privatellm.embeddings import Embedder
from privatellm.service import Service

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
QUESTION = "Who started the llama.cpp project?"


def _chromium() -> str:
    found = os.environ.get("PRIVATELLM_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("the browser test needs Chromium: make system-deps installs it")
    return found


@pytest.fixture
def app_url(tmp_path: Path, real_embedder: Embedder) -> Iterator[str]:
    """The page served on a loopback port, answering from ingest/ with the bundled models."""
    data = tmp_path / "data"
    Service(Settings(data_dir=data), embedder=real_embedder).ingest([SAMPLES])
    port = free_port()
    env = {**os.environ, "PRIVATELLM_DATA_DIR": str(data)}
    env.pop("PRIVATELLM_CONFIG", None)
    log = (tmp_path / "streamlit.log").open("wb")
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamlit", "run", str(REPO / "ui" / "app.py")),
            *("--server.headless", "true", "--server.address", "127.0.0.1"),
            *("--server.port", str(port), "--browser.gatherUsageStats", "false"),
            *("--server.fileWatcherType", "none"),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/_stcore/health", server, b"ok")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_question_in_the_browser_shows_a_streamed_cited_answer(
    app_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=BROWSER_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(app_url)
            expect(page.get_by_text("llama-history.pdf")).to_be_visible(timeout=120_000)
            expect(page.get_by_text("3 documents", exact=False)).to_be_visible()
            box = page.get_by_test_id("stChatInputTextArea")
            box.fill(QUESTION)
            box.press("Enter")
            answer = page.get_by_test_id("stChatMessage").nth(1)
            expect(answer).to_contain_text("Gerganov", timeout=180_000)
            citation = page.locator("summary").filter(
                has_text=re.compile(r"\[\d\] llama-history\.pdf, p\. 3 · score \d\.\d\d")
            )
            expect(citation.first).to_be_visible(timeout=180_000)
            citation.first.click()
            expect(page.get_by_text("Georgi Gerganov in March 2023").last).to_be_visible()
            image = _show_page(page, page.get_by_test_id("stExpander").filter(has=citation.first))
            page.wait_for_timeout(1000)  # the expander's opening animation, for the screenshot
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    assert image["width"] >= 800 and abs(image["width"] / image["height"] - 210 / 297) < 0.02
    print(f"screenshot: {shot}")


def _show_page(page: Any, expander: Any) -> dict[str, int]:
    """Turns on the citation's "Show page" and returns the natural size of the page image."""
    from playwright.sync_api import expect

    switch = expander.get_by_role("switch", name="Show page")
    # A click that lands while the answer's run is still finishing can be lost in Streamlit's
    # rerun (seen once under load in CI); a person would click again, and so does this.
    for attempt in range(3):
        expander.get_by_text("Show page").click()  # the label: it covers the input
        try:
            expect(switch).to_be_checked(timeout=20_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    image = expander.get_by_role("img").first
    expect(image).to_be_visible(timeout=60_000)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    size: dict[str, int] = image.evaluate(
        "img => ({width: img.naturalWidth, height: img.naturalHeight})"
    )
    return size
