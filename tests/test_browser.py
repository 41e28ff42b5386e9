"""End to end in a real browser: `streamlit run app.py` driven by headless Chromium; and hostile
links against that served app (a system file as the vocabulary, the filesystem root as the probe
set, a setting out of range: refused with a notice, the page on the demo world).

Debian's `chromium` (apt-get install -y chromium; .ci/run installs it) through Python
Playwright with `executable_path` — Playwright never downloads a browser. Screenshots are saved
to test-artifacts/ (git-ignored) as the test's artefacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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

    falcon = Falcon.from_config(WorkspaceConfig.demo())  # FALCON_CACHE: tests/conftest.py
    feats = bench.demo_pair(falcon=falcon)  # a pair whose group has highly activating images
    for f in feats:
        falcon.explain(f)
    return feats


@pytest.fixture(scope="module")
def server(features):
    """``streamlit run app.py`` from the project folder, as a user starts it."""
    port = bench.free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / "streamlit.log"
    proc = bench.start_app(port, os.environ.get("FALCON_CACHE"), log_path=str(log))
    try:
        bench.wait_healthy(port, proc, timeout=180)
        yield SimpleNamespace(port=port, proc=proc, log=log)
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
    server = server.port
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


def test_the_benchmark_times_a_choice_until_it_is_shown(server, browser, features):
    """benchmarks.app_latency.timed_choice (the browser benchmark's cold and warm figures) stops
    its clock in the page no earlier than the chosen feature's heading appears and the run is
    over, both seen by an observer of its own here."""
    f, g = features
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(bench.url(server.port, "feature_explorer", {"feature": f}))
        bench.wait_explained(page, f, TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        page.evaluate("""(heading) => {
            const seen = window.__seen = {heading: null, idle: null, running: false};
            new MutationObserver(() => {
                const now = performance.now();
                const hs = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')];
                if (seen.heading === null && hs.some(h => h.textContent.startsWith(heading)))
                    seen.heading = now;
                const s = document.querySelector('[data-testid="stApp"]')
                    .getAttribute('data-test-script-state');
                if (s === 'running') seen.running = true;
                if (seen.running && s === 'notRunning' && seen.idle === null) seen.idle = now;
            }).observe(document, {subtree: true, childList: true, attributes: true,
                                  characterData: true});
        }""", f"Feature {g}:")
        shown, wall = bench.timed_choice(page, g)
        watch = page.evaluate("window.__falconWatch")
        seen = page.evaluate("window.__seen")
        assert seen["heading"] is not None and seen["idle"] is not None
        assert watch["done"] >= seen["heading"]
        assert watch["done"] >= seen["idle"]
        assert 0 < shown <= wall
        assert page.get_by_role("heading", name=f"Feature {g}:").count() >= 1
    finally:
        page.close()


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
        page.goto(bench.url(server.port, page_name, params))
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


def test_spurious_link_opens_the_same_feature(server, browser, features):
    """The explorer's "Inspect the spurious concepts" link (href spurious_concepts?feature=N)
    used to land on feature 0: the number box of the same key on the other page reset it."""
    from falcon_core import Falcon, WorkspaceConfig

    falcon = Falcon.from_config(WorkspaceConfig.demo())
    f = next(x for x in features if falcon.cached_explanation(x).spurious_words)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(bench.url(server.port, "feature_explorer", {"feature": f}))
        bench.wait_explained(page, f, TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        link = page.get_by_role("link", name="Inspect the spurious concepts")
        assert link.get_attribute("href").endswith(f"spurious_concepts?feature={f}")
        link.click()
        # the explorer has the same heading: wait for the other page's address first (a busy
        # machine can take seconds to switch)
        page.wait_for_url(f"**/spurious_concepts?feature={f}", timeout=TIMEOUT_MS)
        page.get_by_role("heading", name="Spurious concepts").first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_role("heading", name=f"Feature {f}:").first.wait_for(timeout=TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        assert page.url.endswith(f"spurious_concepts?feature={f}")
        box = page.locator('[data-testid="stNumberInput"] input').first
        assert box.input_value() == str(f)
        assert page.get_by_role("heading", name="Spurious concepts").count() >= 1
    finally:
        page.close()


def test_the_server_watches_no_folder(server, browser, features):
    """The project's .streamlit/config.toml: while a session is open, no inotify watch of the
    project folder (watchdog's is recursive: with a .venv inside the folder, thousands of
    folders and "Inotify queue overflowed" in the log)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(bench.url(server.port, "feature_explorer", {"feature": features[0]}))
        bench.wait_explained(page, features[0], TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        assert bench.inotify_watches(server.proc.pid) == 0
    finally:
        page.close()
    assert "Inotify" not in server.log.read_text(errors="replace")


def check_report_offline(browser, path: Path, words: list[str]) -> None:
    """Open a report file in Chromium: every picture decodes, ``words`` are on the page, and no
    request other than the file itself is made (any other is refused and recorded)."""
    context = browser.new_context()
    requests: list[str] = []

    def route(r):
        requests.append(r.request.url)
        if r.request.url == path.resolve().as_uri():
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(path.resolve().as_uri())
        pictures = page.evaluate("""async () => {
            const els = [...document.querySelectorAll('.pic')];
            const urls = [...new Set(els.map(e => getComputedStyle(e).backgroundImage))];
            const widths = await Promise.all(urls.map(u => new Promise(done => {
                const m = u.match(/^url\\("(data:image\\/jpeg;base64,[^"]+)"\\)$/);
                if (!m) return done(0);
                const im = new Image();
                im.onload = () => done(im.naturalWidth); im.onerror = () => done(0);
                im.src = m[1];
            })));
            return {shown: els.length, distinct: urls.length, widths: widths};
        }""")
        assert pictures["shown"] > 0 and pictures["distinct"] > 0
        assert all(w > 0 for w in pictures["widths"]), pictures
        text = page.inner_text("body")
        for w in words:
            assert w in text, w
        assert {u for u in requests if not u.startswith("data:")} == {path.resolve().as_uri()}
        bench.screenshot(page, ARTIFACTS / f"{path.stem}.png")
    finally:
        context.close()


def test_report_from_the_app_opens_offline(server, browser, features):
    from falcon_core import Falcon, WorkspaceConfig

    falcon = Falcon.from_config(WorkspaceConfig.demo())
    words = [c.text for f in features for c in falcon.cached_explanation(f).words[:3]]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(bench.url(server.port, "feature_explorer", {"feature": features[0]}))
        bench.wait_explained(page, features[0], TIMEOUT_MS)
        bench.wait_idle(page, TIMEOUT_MS)
        with page.expect_download(timeout=TIMEOUT_MS) as info:
            page.get_by_role("button", name="Download the report (HTML)").click()
        path = ARTIFACTS / "report_from_app.html"
        info.value.save_as(str(path))
    finally:
        page.close()
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    check_report_offline(browser, path, words + [f"Feature {f}:" for f in features])


def test_report_from_the_command_line_opens_offline(browser, features):
    from falcon_core import Falcon, WorkspaceConfig

    path = ARTIFACTS / "report_from_cli.html"
    res = subprocess.run([sys.executable, "-m", "falcon_core", "report", "--out", str(path),
                          "--no-explain", "--no-progress"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=900)
    assert res.returncode == 0, res.stderr
    assert f"wrote the report to {path.resolve()}" in res.stdout
    falcon = Falcon.from_config(WorkspaceConfig.demo())
    removed = [c.text for f in features for c in falcon.cached_explanation(f).spurious_words[:2]]
    check_report_offline(browser, path, removed + ["Accuracy", "Discovered groups"])
