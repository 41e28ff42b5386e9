"""End to end in a real browser: `streamlit run app.py` driven by headless Chromium; and hostile
links against that served app (a system file as the vocabulary, the filesystem root as the probe
set, a setting out of range: refused with a notice, the page on the demo world).

Debian's `chromium` (apt-get install -y chromium; .ci/run installs it) through Python
Playwright with `executable_path` — Playwright never downloads a browser. Screenshots are saved
to test-artifacts/ (git-ignored) as the test's artefacts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import app_latency as bench

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("FALCON_TEST_ARTIFACTS", ROOT / "test-artifacts"))
TIMEOUT_MS = 600_000
SYSTEM_FILE = "/etc/passwd" if Path("/etc/passwd").is_file() else "/etc/hostname"

pytestmark = pytest.mark.skipif(not Path(bench.CHROMIUM).exists(),
                                reason=f"{bench.CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def features():
    """Two demo features with highly activating images, explained once through the library."""
    from falcon_core import Falcon, WorkspaceConfig

    fb = Falcon.from_config(WorkspaceConfig.demo())  # FALCON_CACHE: tests/conftest.py
    feats = bench.demo_pair(falcon=fb)  # a pair whose group has highly activating images
    for f in feats:
        fb.explain(f)
    return feats


@pytest.fixture(scope="module")
def server(features):
    port = bench.free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = bench.start_app(port, os.environ.get("FALCON_CACHE"),
                           log_path=str(ARTIFACTS / "streamlit.log"))
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


def test_feature_page_then_a_pair_in_the_browser(server, browser, features):
    f, g = features
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(bench.url(server, "feature_explorer", {"feature": f}))
        bench.wait_explained(page, f, TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        assert page.locator(".st-key-concept_chart .js-plotly-plot").count() >= 1
        assert page.locator(".st-key-high_grid img").count() >= 1
        assert f"feature={f}" in page.url
        bench.screenshot(page, ARTIFACTS / "browser_feature_explorer.png")

        # type another feature: the URL follows
        bench.choose_feature(page, g)
        bench.wait_explained(page, g, TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        assert f"feature={g}" in page.url

        # switch to a pair through the navigation, then choose the pair
        page.get_by_role("link", name="Pairs and groups").first.click()
        page.get_by_role("heading", name="Pairs and groups").first.wait_for(timeout=TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        box = page.get_by_role("textbox", name="Features (two or more, separated by commas)")
        box.fill(f"{f},{g}")
        box.press("Enter")
        bench.wait_explained(page, [f, g], TIMEOUT_MS, grid_key="group_high_grid")
        bench.wait_idle(page, TIMEOUT_MS)
        assert f"features={f}%2C{g}" in page.url or f"features={f},{g}" in page.url
        bench.screenshot(page, ARTIFACTS / "browser_pair.png")

        # a link reopens the same view
        page.goto(bench.url(server, "pairs_and_groups", {"features": f"{g},{f}"}))
        bench.wait_explained(page, [g, f], TIMEOUT_MS, grid_key="group_high_grid")
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()
    assert not errors, errors


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
