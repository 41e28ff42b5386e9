"""Hostile links against a real server: `streamlit run app.py` in headless Chromium (Debian's,
through Playwright with executable_path: no browser download). A system file as the vocabulary
and the filesystem root as the probe set are refused with a notice, and the page shows the demo
world, never the file's lines nor the disk's images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falcon_core.bench import app_latency as bench

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("FALCON_TEST_ARTIFACTS", ROOT / "test-artifacts"))
TIMEOUT_MS = 600_000
SYSTEM_FILE = "/etc/passwd" if Path("/etc/passwd").is_file() else "/etc/hostname"

pytestmark = pytest.mark.skipif(not Path(bench.CHROMIUM).exists(),
                                reason=f"{bench.CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def server():
    port = bench.free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = bench.start_app(port, os.environ.get("FALCON_CACHE"),
                           log_path=str(ARTIFACTS / "streamlit-safety.log"))
    try:
        bench.wait_healthy(port, proc, timeout=180)
        yield port
    finally:
        bench.stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = bench.launch_browser(p)
        yield b
        b.close()


@pytest.mark.parametrize("page_name, params, notice", [
    ("feature_explorer", {"vocabulary": SYSTEM_FILE},
     f"Ignored 'vocabulary={SYSTEM_FILE}' in the link"),
    ("feature_explorer", {"probe": "/"}, "Ignored 'probe=/' in the link"),
    ("spurious_concepts", {"beta": "5"}, "Ignored 'beta=5' in the link"),
], ids=["system-file-vocabulary", "root-probe", "beta-out-of-range"])
def test_a_hostile_link_is_refused_by_the_served_app(server, browser, page_name, params, notice):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(bench.url(server, page_name, params))
        page.get_by_text(notice).first.wait_for(timeout=TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        body = page.inner_text("body")
        assert "offline demo world" in body  # the sidebar: the workspace did not change
        assert "root:x:0:0" not in body and "/bin/bash" not in body and "daemon:" not in body
        assert "Traceback" not in body and "StreamlitValue" not in body
        assert "cannot name files or folders of this server" in body or "out of range" in body
        for k in params:  # the refused value is no longer in the address bar
            assert f"{k}=" not in page.url
        bench.screenshot(page, ARTIFACTS / f"browser_safety_{page_name}_{'_'.join(params)}.png")
        assert not errors, errors
    finally:
        page.close()
