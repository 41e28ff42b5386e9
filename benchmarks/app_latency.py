"""How long the app takes from choosing a feature to showing its explanation (demo world).

    python -m benchmarks.app_latency                # browser (headless Chromium)
    python -m benchmarks.app_latency --mode apptest # no browser: Streamlit's AppTest
    python -m benchmarks.app_latency --screenshots docs/screenshots

Browser mode starts ``streamlit run app.py`` on a free local port with a fresh cache folder and
drives Debian's Chromium with Playwright (never a downloaded browser). It reports:

* ``first open``: a fresh cache, from opening the app to the first explanation on the page
  (the demo world's representations and text embeddings are computed then);
* ``cold``: typing a feature never explained before, until its concepts and images are shown;
* ``warm``: typing a feature explained before (Falcon's disk cache + Streamlit's caches);

  ``cold`` and ``warm`` are timed from this process, typing and Playwright's polling pauses
  included (an upper bound on what a user waits); ``cold_in_page_s`` / ``warm_in_page_s`` hold
  the same choices timed in the page, from the Enter key to the first frame drawn with the
  explanation shown and the run over (``timed_choice``);
* ``failures``: then clicking the Failures page in the sidebar, until the first misclassified
  image's explanation (the features on both sides, each explained) is shown.

Issue 9's targets (fresh clone, 2 cores, quiet): first open ≤ 30 s, cold ≤ 1 s, warm ≤ 0.3 s,
failures ≤ 2 s. The JSON (``--json``, ``--out FILE``) holds every figure with the load average
before and after the run and the number of CPUs: the machine may be shared, and then absolute
times say little.

The helpers here (free_port, start_app, wait_healthy, launch_browser, wait_explained, ...) are
also what tests/test_browser.py uses. It measures the app, so it lives next to the app, outside
the library (``falcon_core`` knows nothing of Streamlit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FALCON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
PAGES = {  # url path -> what a screenshot shows
    "feature_explorer": "Feature explorer",
    "pairs_and_groups": "Pairs and groups",
    "spurious_concepts": "Spurious concepts",
    "failures": "Failures",
    "concept_search": "Concept search",
    "setup": "Setup",
    "compare_models": "Compare models",
}


# ------------------------------------------------------------------------------ the server

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(port: int, cache_dir: str | None = None, log_path: str | None = None,
              root: Path = ROOT) -> subprocess.Popen:
    """``streamlit run app.py`` on ``port`` (headless), with FALCON_CACHE=cache_dir if given.

    Run from the project folder with nothing but the port and address on the command line, as a
    user starts it: every other server setting (the file watcher among them) comes from the
    project's ``.streamlit/config.toml``."""
    env = dict(os.environ)
    if cache_dir:
        env["FALCON_CACHE"] = str(cache_dir)
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py",
           "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1"]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(cmd, cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_healthy(port: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Wait for the server's health endpoint (``/_stcore/health``) to answer ``ok``."""
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def inotify_watches(pid: int) -> int:
    """How many inotify watches the process holds (Linux: /proc/<pid>/fdinfo)."""
    n = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        n += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return n


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# ------------------------------------------------------------------------------ the browser

def launch_browser(playwright: Any):
    """Debian's Chromium through Playwright (``executable_path``: no browser download)."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def url(port: int, page: str = "", params: dict[str, Any] | None = None) -> str:
    from urllib.parse import urlencode

    q = ("?" + urlencode({k: str(v) for k, v in params.items()})) if params else ""
    if page == "feature_explorer":  # the default page lives at "/"
        page = ""
    return f"http://127.0.0.1:{port}/{page}{q}"


def wait_idle(page: Any, timeout_ms: float = 120_000) -> None:
    """Wait until the script run is over (the app root says it is not running)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           timeout=timeout_ms)


def wait_explained(page: Any, feature: int | Sequence[int], timeout_ms: float = 300_000,
                   grid_key: str = "high_grid") -> None:
    """Wait for an explanation on the page: its heading, the concept chart and the image grid."""
    if isinstance(feature, int):
        heading = f"Feature {feature}:"
    else:
        heading = "Features " + " + ".join(str(f) for f in feature) + ":"
    page.get_by_role("heading", name=heading).first.wait_for(timeout=timeout_ms)
    if isinstance(feature, int):
        page.wait_for_selector(".st-key-concept_chart .js-plotly-plot", timeout=timeout_ms)
    page.wait_for_selector(f".st-key-{grid_key} img", timeout=timeout_ms)


def wait_failures(page: Any, timeout_ms: float = 300_000) -> None:
    """Wait for the Failures page's explanation of a misclassified image: its heading ("True:
    … → predicted: …") and the features of the predicted side, then the end of the run."""
    page.get_by_role("heading", name="True:").first.wait_for(timeout=timeout_ms)
    page.wait_for_selector(".stPlotlyChart", timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def open_failures(page: Any) -> None:
    """Click the Failures page in the sidebar's navigation (the same session, as a user does)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text="Failures").first.click()


def choose_feature(page: Any, feature: int) -> None:
    """Type a feature number into the explorer's number box and press Enter."""
    box = page.locator('[data-testid="stNumberInput"] input').first
    box.fill(str(feature))
    box.press("Enter")


# In the page: the time of the Enter key on the number box, and of the first frame drawn after
# everything wait_explained and wait_idle wait for holds at once (the feature's heading, a concept
# chart, an image of the grid, the run over). Playwright's waits poll with growing pauses (0, 20,
# 50, 100, 100, 500 ms) and each answer crosses two processes, which a user does not see.
_WATCH_JS = """([heading, grid]) => {
  const w = window.__falconWatch = {start: null, done: null};
  const ready = () => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    const hs = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')];
    if (!hs.some(h => (h.textContent || '').trim().startsWith(heading))) return false;
    return !!document.querySelector('.st-key-concept_chart .js-plotly-plot')
        && !!document.querySelector('.st-key-' + grid + ' img');
  };
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && w.start === null) w.start = performance.now();
  }, {capture: true});
  const obs = new MutationObserver(() => {
    if (w.start === null || w.done !== null || !ready()) return;
    w.done = -1;
    obs.disconnect();
    requestAnimationFrame(() => { w.done = performance.now(); });
  });
  obs.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def timed_choice(page: Any, feature: int, grid_key: str = "high_grid") -> tuple[float, float]:
    """Choose ``feature`` in the explorer and wait for its explanation (wait_explained, then
    wait_idle). Returns (seconds from the Enter key to the first frame drawn with the explanation
    shown and the run over, measured in the page; seconds of the whole call, measured here)."""
    page.evaluate(_WATCH_JS, [f"Feature {feature}:", grid_key])
    t0 = time.perf_counter()
    choose_feature(page, feature)
    wait_explained(page, feature, grid_key=grid_key)
    wait_idle(page)
    page.wait_for_function("window.__falconWatch.done > 0", timeout=10_000)
    wall = time.perf_counter() - t0
    w = page.evaluate("window.__falconWatch")
    return (w["done"] - w["start"]) / 1000.0, wall


def screenshot(page: Any, path: Path, max_height: int = 4000) -> Path:
    """The whole page as one PNG. Streamlit scrolls inside its main container, not the
    document, so the viewport is made as tall as that container's content (at most
    ``max_height``) for the picture, then put back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    tall = page.evaluate("""() => Math.max(0, ...[...document.querySelectorAll(
        '[data-testid="stMain"], [data-testid="stAppViewContainer"], section.main')]
        .map(e => e.scrollHeight))""")
    if size and tall > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(tall), max_height)})
        time.sleep(0.5)  # let the charts lay themselves out again
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        if size:
            page.set_viewport_size(size)
    return path


# ------------------------------------------------------------------------------ the demo world

def _demo(cache_dir: str | None = None, falcon: Any = None):
    if falcon is not None:
        return falcon
    from falcon_core import Falcon, WorkspaceConfig

    return Falcon.from_config(WorkspaceConfig.demo(), cache_dir=cache_dir)


def demo_features(n: int = 4, cache_dir: str | None = None, falcon: Any = None) -> list[int]:
    """Features of the demo world that have highly activating images, most images first."""
    import numpy as np

    falcon = _demo(cache_dir, falcon)
    stats = falcon.feature_stats()
    order = np.argsort(-np.asarray(stats["n_high"]), kind="stable")
    return [int(f) for f in order if stats["n_high"][f] >= 2][:n]


def demo_pair(cache_dir: str | None = None, falcon: Any = None) -> list[int]:
    """The two demo features most often highly active together (their group has images)."""
    import numpy as np

    falcon = _demo(cache_dir, falcon)
    feats = demo_features(48, falcon=falcon)
    M = np.array(falcon.coactivation(feats), dtype=np.float64)
    np.fill_diagonal(M, -1.0)
    i, j = np.unravel_index(int(np.argmax(M)), M.shape)
    return sorted([int(feats[i]), int(feats[j])])


def _features_elsewhere(n: int) -> tuple[list[int], list[int]]:
    """demo_features() and demo_pair() computed in a throw-away cache, so the measured cache
    stays cold."""
    tmp = tempfile.mkdtemp(prefix="falcon-bench-probe-")
    try:
        falcon = _demo(tmp)
        return demo_features(n, falcon=falcon), demo_pair(falcon=falcon)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ measurements

def bench_browser(repeats: int = 3, keep_cache: str | None = None,
                  screenshots_dir: str | None = None) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    cache_dir = keep_cache or tempfile.mkdtemp(prefix="falcon-bench-cache-")
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"falcon-bench-streamlit-{port}.log"
    out: dict[str, Any] = {"mode": "browser", "cache_dir": cache_dir, "repeats": repeats,
                           **machine("before")}
    proc = start_app(port, cache_dir, str(log))
    try:
        wait_healthy(port, proc)
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            if keep_cache:  # warm already: choose in it
                feats = demo_features(2 + 2 * repeats, cache_dir=cache_dir)
                pair = demo_pair(cache_dir=cache_dir)
            else:
                feats, pair = _features_elsewhere(2 + 2 * repeats)  # keeps the app's cache cold
            first, rest = feats[0], feats[1:]
            t0 = time.perf_counter()
            page.goto(url(port, "feature_explorer", {"feature": first}))
            wait_explained(page, first)
            out["first_open_s"] = time.perf_counter() - t0
            cold, warm, cold_page, warm_page = [], [], [], []
            for f in rest[:repeats]:
                shown, wall = timed_choice(page, f)
                cold.append(wall)
                cold_page.append(shown)
            for f in [first] + rest[:repeats - 1]:
                shown, wall = timed_choice(page, f)
                warm.append(wall)
                warm_page.append(shown)
            out.update(features=feats, cold_s=cold, warm_s=warm, cold_in_page_s=cold_page,
                       warm_in_page_s=warm_page)
            t0 = time.perf_counter()
            open_failures(page)
            wait_failures(page)
            out["failures_s"] = time.perf_counter() - t0
            if screenshots_dir:
                out["screenshots"] = take_screenshots(page, port, screenshots_dir, feats, pair)
            browser.close()
    finally:
        stop_app(proc)
        if not keep_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    out.update(machine("after"))
    return out


def machine(when: str) -> dict[str, Any]:
    """The load average (1, 5, 15 min) and the CPUs: the machine may be shared."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        load = None
    return {f"load_average_{when}": load, "cpus": os.cpu_count()}


def screenshot_views(page: Any, feats: Sequence[int], pair: Sequence[int] | None = None
                     ) -> list[tuple[str, dict[str, Any], Any]]:
    """(page name, link values, wait until it is drawn) of each screenshot."""
    f = int(feats[0])
    pair = [int(x) for x in pair] if pair else [int(feats[0]), int(feats[1])]
    return [
        ("feature_explorer", {"feature": f}, lambda: wait_explained(page, f)),
        ("pairs_and_groups", {"features": f"{pair[0]},{pair[1]}"},
         lambda: wait_explained(page, pair, grid_key="group_high_grid")),
        ("spurious_concepts", {"feature": f}, lambda: page.wait_for_selector(
            ".st-key-kept_list", timeout=300_000)),
        ("failures", {}, lambda: wait_idle(page, 300_000)),
        ("concept_search", {}, lambda: wait_idle(page)),
        ("setup", {}, lambda: wait_idle(page)),
        # the summary is drawn at once when every feature of both models is explained (a warm
        # cache: precompute both backbones first); otherwise the page shows what is left
        ("compare_models", {"model_b": "demo-uncorrelated", "feature": f},
         lambda: page.wait_for_selector(".st-key-compare_b", timeout=600_000)),
    ]


def take_screenshots(page: Any, port: int, out_dir: str, feats: Sequence[int],
                     pair: Sequence[int] | None = None, only: Sequence[str] | None = None,
                     report: bool = True) -> list[str]:
    """One full-page PNG of each page of the app (of the pages named in ``only``), on the demo
    world, and of the HTML report."""
    out = Path(out_dir)
    saved = []
    for name, params, ready in screenshot_views(page, feats, pair):
        if only and name not in only:
            continue
        page.goto(url(port, name, params))
        ready()
        wait_idle(page, 600_000)
        time.sleep(0.5)  # let plotly finish drawing
        saved.append(str(screenshot(page, out / f"{name}.png")))
    if report:
        saved.append(str(report_screenshot(page, out / "report.png")))
    return saved


def retake_screenshots(names: Sequence[str], cache_dir: str, out_dir: str) -> list[str]:
    """Only the named pages' screenshots, on the app served from ``cache_dir`` (no timing)."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    proc = start_app(port, cache_dir,
                     str(Path(tempfile.gettempdir()) / f"falcon-bench-streamlit-{port}.log"))
    try:
        wait_healthy(port, proc)
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            feats = demo_features(2, cache_dir=cache_dir)
            saved = take_screenshots(page, port, out_dir, feats, demo_pair(cache_dir=cache_dir),
                                     only=names, report="report" in names)
            browser.close()
    finally:
        stop_app(proc)
    return saved


def report_screenshot(page: Any, path: Path) -> Path:
    """Download the report from the sidebar and photograph its first screen."""
    with page.expect_download(timeout=300_000) as info:
        page.get_by_role("button", name="Download the report (HTML)").click()
    html = path.with_suffix(".html")
    info.value.save_as(str(html))
    report = page.context.browser.new_page()
    try:
        report.set_viewport_size({"width": 1200, "height": 1500})
        report.goto(html.resolve().as_uri())
        path.parent.mkdir(parents=True, exist_ok=True)
        report.screenshot(path=str(path))
    finally:
        report.close()
        html.unlink()
    return path


def bench_apptest(repeats: int = 3, keep_cache: str | None = None) -> dict[str, Any]:
    """The same figures without a browser: the script run time of the explorer in AppTest."""
    cache_dir = keep_cache or tempfile.mkdtemp(prefix="falcon-bench-cache-")
    os.environ["FALCON_CACHE"] = cache_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from streamlit.testing.v1 import AppTest

    out: dict[str, Any] = {"mode": "apptest", "cache_dir": cache_dir, "repeats": repeats,
                           **machine("before")}
    try:
        feats, _ = _features_elsewhere(2 + 2 * repeats)
        first, rest = feats[0], feats[1:]
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
        at.query_params["feature"] = str(first)
        t0 = time.perf_counter()
        at.run()
        out["first_open_s"] = time.perf_counter() - t0
        _check(at, first)

        def choose(f: int) -> float:
            t = time.perf_counter()
            at.number_input[0].set_value(f).run()
            dt = time.perf_counter() - t
            _check(at, f)
            return dt

        out["cold_s"] = [choose(f) for f in rest[:repeats]]
        out["warm_s"] = [choose(f) for f in [first] + rest[:repeats - 1]]
        out["features"] = feats
        t0 = time.perf_counter()
        at.switch_page("pages/failures.py").run()
        out["failures_s"] = time.perf_counter() - t0
        if at.exception:
            raise RuntimeError(at.exception[0].value)
    finally:
        if not keep_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    out.update(machine("after"))
    return out


def bench_pieces(repeats: int = 3, cache_dir: str | None = None) -> dict[str, Any]:
    """Pieces of a page run on the demo world through the Python API, side by side in one run
    (CPU and wall seconds, min/median): the feature table after one more feature is explained,
    read again whole (how the page built it before issue 9's change) against updated with what
    changed (ui.loaders.ExplainedFeatures). Explains ``repeats`` features not yet explained in
    ``cache_dir`` (a throw-away cache when None)."""
    from falcon_core import Falcon, WorkspaceConfig
    from ui.loaders import ExplainedFeatures, explanations_stamp

    tmp = None if cache_dir else tempfile.mkdtemp(prefix="falcon-bench-pieces-")
    out: dict[str, Any] = {"mode": "pieces", "repeats": repeats, **machine("before")}
    try:
        falcon = Falcon.from_config(WorkspaceConfig.demo(), cache_dir=cache_dir or tmp)
        s = falcon.settings
        feats = demo_features(falcon.num_features, falcon=falcon)
        todo = [f for f in feats if falcon.cached_explanation(f, s) is None][:repeats]
        held = ExplainedFeatures(falcon, s)
        held.table(explanations_stamp(falcon))
        whole, changed = [], []
        for f in todo:
            falcon.explain(f, settings=s)
            whole.append(_timed(lambda: _whole_table(falcon, s)))
            changed.append(_timed(lambda: held.table(explanations_stamp(falcon))))
        out["features_explained"] = len(falcon.explained(s))
        out["table_whole_s"] = whole
        out["table_changed_s"] = changed
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    out.update(machine("after"))
    return out


def _timed(fn) -> dict[str, float]:
    c, w = time.process_time(), time.perf_counter()
    fn()
    return {"cpu": time.process_time() - c, "wall": time.perf_counter() - w}


def _whole_table(falcon, settings) -> int:
    """The feature table as the page built it before: every explanation read again."""
    stats = falcon.feature_stats(settings)
    rows = [(f, exp.coherence, exp.top_concepts(4), float(stats["max"][f]))
            for f, exp in falcon.explained(settings).items()]
    return len(rows)


def _check(at: Any, feature: int) -> None:
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    if not any(s.value.startswith(f"Feature {feature}:") for s in at.subheader):
        errors = [e.value for e in at.error]
        raise RuntimeError(f"feature {feature} was not explained on the page: {errors}")


def report(result: dict[str, Any]) -> str:
    lines = [f"App latency on the demo world ({result['mode']}): choosing a feature -> its "
             "explanation on the page (targets: first open <= 30 s, new <= 1 s, seen <= 0.3 s, "
             "Failures <= 2 s)"]
    if "first_open_s" in result:
        lines.append(f"  first open, fresh cache : {result['first_open_s']:8.2f} s")
    for name in ("cold", "warm"):
        xs = result.get(f"{name}_s") or []
        if xs:
            lines.append(f"  {name:<5} (new feature)   : median {statistics.median(xs):6.2f} s  "
                         f"(min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"
                         if name == "cold" else
                         f"  {name:<5} (seen before)   : median {statistics.median(xs):6.2f} s  "
                         f"(min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})")
    for name in ("cold", "warm"):
        xs = result.get(f"{name}_in_page_s") or []
        if xs:
            lines.append(f"  {name:<5} timed in the page: median {statistics.median(xs):6.2f} s  "
                         f"(min {min(xs):.2f}, max {max(xs):.2f}; Enter key to the frame drawn)")
    for name in ("table_whole", "table_changed"):
        xs = result.get(f"{name}_s") or []
        if xs:
            cpu = sorted(x["cpu"] for x in xs)
            wall = sorted(x["wall"] for x in xs)
            lines.append(f"  feature table, {name.split('_')[1]:<7}: CPU min {cpu[0] * 1000:7.1f} ms"
                         f" median {statistics.median(cpu) * 1000:7.1f} ms; wall min "
                         f"{wall[0] * 1000:7.1f} ms (n={len(xs)}, "
                         f"{result.get('features_explained')} features explained)")
    if "failures_s" in result:
        lines.append(f"  Failures page (click)   : {result['failures_s']:8.2f} s")
    lines.append(f"  load average before {result.get('load_average_before')}, after "
                 f"{result.get('load_average_after')} on {result.get('cpus')} CPUs")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["browser", "apptest", "pieces", "auto"], default="auto",
                    help="pieces: parts of a page run through the Python API, before/after")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default=None, help="reuse this cache folder (not cold)")
    ap.add_argument("--screenshots", default=None, metavar="DIR",
                    help="also save a screenshot of every page into DIR (browser mode)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    ap.add_argument("--out", default=None, metavar="FILE", help="also write the JSON to FILE")
    ap.add_argument("--retake", action="append", default=None, metavar="PAGE",
                    choices=list(PAGES) + ["report"],
                    help="only retake this page's screenshot into --screenshots DIR, on the app "
                         "served from --cache (repeatable; no timing)")
    a = ap.parse_args(argv)
    if a.retake:
        if not (a.screenshots and a.cache):
            print("--retake needs --screenshots DIR and --cache DIR", file=sys.stderr)
            return 2
        print("screenshots:", ", ".join(retake_screenshots(a.retake, a.cache, a.screenshots)))
        return 0
    mode = a.mode
    if mode == "auto":
        mode = "browser" if Path(CHROMIUM).exists() else "apptest"
    if a.screenshots and mode != "browser":
        print("--screenshots needs the browser (apt-get install -y chromium)", file=sys.stderr)
        return 2
    if mode == "pieces":
        result = bench_pieces(a.repeats, a.cache)
    elif mode == "browser":
        result = bench_browser(a.repeats, a.cache, a.screenshots)
    else:
        result = bench_apptest(a.repeats, a.cache)
    print(report(result))
    if a.screenshots:
        print("screenshots:", ", ".join(result.get("screenshots", [])))
    if a.json:
        print(json.dumps(result, indent=2))
    if a.out:
        result = dict(result, command="python -m benchmarks.app_latency " + " ".join(
            sys.argv[1:] if argv is None else argv))
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
