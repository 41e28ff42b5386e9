"""Every speed ratio of issue 9, each measured side by side against its bare baseline in one run.

    python -m falcon_core.bench speed [--json] [--repeat 3] [--only text,gradcam_resnet50]
        [--features N] [--no-search] [--index-cache DIR] [--omp-wait passive|default]

Each row times a tool of this project and the bare baseline it must be compared with, alternating
(baseline, tool, baseline, tool, ...) so a busy machine slows both alike, ``--repeat`` times
(at least 3), and reports the minimum and the median of the CPU time of the process (all threads)
and of the wall time, and their ratios tool / baseline. Peak RSS (``VmHWM``) is printed after
every row, and the load average before and after it.

CPU time is the process's, all threads: torch's OpenMP threads spin after each parallel region
and that spinning is counted as CPU time of whatever runs next (on a busy 2-core machine, ~75 % of
the precompute row's CPU time was spinning, and small batches interleaved with Python work paid
most of it), so ``--omp-wait passive`` (the default) sets ``OMP_WAIT_POLICY=PASSIVE`` before torch
is imported; ``--omp-wait default`` measures with torch's own policy. The JSON says which.
numpy's OpenBLAS threads do the same after every matrix product, however small (~0.1 s of CPU
each: its thread timeout, 2^28 cycles, is read once when numpy loads, which ``falcon_core`` already
did), so under ``passive`` ``python -m falcon_core.bench speed`` re-executes itself once with
``OPENBLAS_THREAD_TIMEOUT=4`` (:func:`quiet_blas_reexec`); the JSON records it.

The vocabulary-search rows (``search_exact``, ``search_ivfpq``) call ``falcon_core.bench.search``;
``--no-search`` leaves them out (they make 1M-row LAION-format shards once, and the IVF-PQ row
builds its index unless ``--index-cache`` holds it).

Models and data are offline: timm / torchvision / open_clip architectures with **random weights**
(``tf_efficientnet_lite0``, ResNet-50, CLIP ViT-B-32), the demo world's rendered scenes and its
captions (``falcon_core.demo``). Random weights run at the speed of trained ones; the ratios are
what count, and the output says so.

Adding a row: write ``def row_<name>(ctx, repeat) -> dict`` that calls :func:`side_by_side`
(or :func:`rows_of`) and decorate it with ``@row("<name>", "what it measures", target)``;
``ctx`` (:class:`Context`) builds shared inputs once (models, images, captions).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROWS: dict[str, tuple[str, str | None, Callable]] = {}


def row(name: str, what: str, target: str | None = None):
    """Register ``fn(ctx, repeat) -> dict`` as a row of the table."""
    def deco(fn):
        ROWS[name] = (what, target, fn)
        return fn
    return deco


def _timed(fn) -> tuple[float, float, Any]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - t0, out


def side_by_side(tool: Callable[[], Any], baseline: Callable[[], Any], repeat: int = 3,
                 warmup: bool = True) -> dict:
    """Time ``baseline`` and ``tool`` alternately ``repeat`` times (after one untimed call of each
    when ``warmup``). Returns the times (CPU and wall; min and median) and the ratios
    tool / baseline, plus the last outputs (``tool_out``, ``baseline_out``) for checks."""
    if warmup:
        baseline()
        tool()
    t: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in ("tool", "baseline")}
    outs: dict[str, Any] = {}
    for _ in range(max(3, int(repeat))):
        for k, fn in (("baseline", baseline), ("tool", tool)):
            c, w, out = _timed(fn)
            t[k]["cpu"].append(c)
            t[k]["wall"].append(w)
            outs[k] = out
    res: dict[str, Any] = {}
    for k in ("tool", "baseline"):
        for m in ("cpu", "wall"):
            res[f"{k}_{m}_min_s"] = round(min(t[k][m]), 4)
            res[f"{k}_{m}_median_s"] = round(statistics.median(t[k][m]), 4)
    for m in ("cpu", "wall"):
        for agg in ("min", "median"):
            b = res[f"baseline_{m}_{agg}_s"]
            res[f"ratio_{m}_{agg}"] = round(res[f"tool_{m}_{agg}_s"] / b, 3) if b > 0 else None
    res["repeat"] = max(3, int(repeat))
    res["tool_out"], res["baseline_out"] = outs["tool"], outs["baseline"]
    return res


class Context:
    """Inputs shared by the rows, each built once: models with random weights, demo images and
    captions."""

    def __init__(self, **options: Any):
        self._memo: dict[str, Any] = {}
        self.options = options  # command-line choices a row reads (``features``)

    def _get(self, key, build):
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def backbone(self, name: str, layer: str | None = None):
        from falcon_core.models.backbones import BackboneSpec, create_backbone

        return self._get(("bb", name, layer), lambda: create_backbone(
            BackboneSpec(name, weights="random", layer=layer)))

    def clip(self, name: str):
        from falcon_core.models.clip import ClipSpec, create_clip

        if name == "demo":
            return self._get(("clip", name), lambda: create_clip("demo"))
        return self._get(("clip", name), lambda: create_clip(ClipSpec(name, pretrained=None)))

    def probe(self, n: int):
        from falcon_core.demo.integration import demo_probe

        return self._get(("probe", n), lambda: demo_probe(n=n, seed=0))

    def captions(self, n: int) -> list[str]:
        from falcon_core.demo.integration import demo_vocabulary

        def build():
            v = demo_vocabulary()
            step = max(1, len(v) // n)
            return v.captions(range(0, step * n, step))[:n]
        return self._get(("captions", n), build)


def primed_demo_cache(probe_size: int) -> Path:
    """A cache folder with the demo world's Stage 1 (``probe_size`` images), text embeddings,
    concept table and the probe's view embeddings already computed (kept in the temp folder between runs; rows copy
    it, so every row starts from the same state without paying for what it does not measure).

    Opened and primed on every call: the entries are content-keyed, so after a change of the code
    or the models the folder gets the new entries here, outside the timings (a marker file once
    said "primed" while the text embeddings were no longer there, and every timed run of the
    precompute row recomputed the 24k captions' embeddings: 24 s of CPU on both sides)."""
    from falcon_core.pipeline import Falcon

    base = Path(tempfile.gettempdir()) / f"falcon-speed-base-{probe_size}"
    falcon = Falcon.from_config(_demo_cfg(probe_size), cache_dir=str(base))
    falcon.representations()
    falcon.text_embeddings()
    falcon.view_embeddings()
    falcon.concept_table()  # per vocabulary, like the text embeddings
    return base


def copy_of(base: Path, into: str | Path, name: str) -> Path:
    dst = Path(into) / name
    shutil.copytree(base, dst, ignore=shutil.ignore_patterns("primed"))
    return dst


def _rss_mb() -> float:
    from falcon_core.bench.search import peak_rss_bytes

    return peak_rss_bytes() / 2 ** 20


# ------------------------------------------------------------------------------------ rows


@row("stage1_efficientnet", "Stage 1, tf_efficientnet_lite0, 128 demo scenes, with decoding "
     "(compute_representations vs a bare model(x) loop)", "<= 1.05x")
def row_stage1(ctx: Context, repeat: int) -> dict:
    import torch

    from falcon_core.stages.representations import compute_representations

    bb = ctx.backbone("timm:tf_efficientnet_lite0")
    probe = ctx.probe(128)

    def baseline():
        out = []
        for s in range(0, len(probe), 64):
            x = torch.stack([bb.transform(probe.load(i)) for i in range(s, min(s + 64, len(probe)))])
            with torch.inference_mode():
                out.append(bb.feature_model(x).numpy())
        return np.concatenate(out)

    r = side_by_side(lambda: compute_representations(bb, probe, batch_size=64)[0], baseline, repeat)
    r["max_abs_diff"] = float(np.abs(r.pop("tool_out") - r.pop("baseline_out")).max())
    return r


@row("text_vitb32", "text embeddings, CLIP ViT-B-32, 256 demo captions (ClipModel.encode_texts: "
     "length-bucketed, trimmed vs a bare encode_text loop on the padded 77-token context)",
     ">= 2.5x faster, cosine >= 0.99999")
def row_text(ctx: Context, repeat: int) -> dict:
    return _text_row(ctx.clip("ViT-B-32"), ctx.captions(256), repeat)


@row("text_demo_clip", "text embeddings, the demo CLIP (context 24), 2,048 demo captions",
     "cosine >= 0.99999")
def row_text_demo(ctx: Context, repeat: int) -> dict:
    return _text_row(ctx.clip("demo"), ctx.captions(2048), repeat)


def _text_row(clip, caps, repeat) -> dict:
    import torch

    def baseline():
        out = []
        with torch.inference_mode():
            for s in range(0, len(caps), 256):
                e = clip.model.encode_text(clip.tokenizer(caps[s:s + 256]))
                out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
        return np.concatenate(out)

    r = side_by_side(lambda: clip.encode_texts(caps, batch_size=256), baseline, repeat)
    a, b = r.pop("tool_out"), r.pop("baseline_out")
    tokens = clip.tokenizer(caps)
    r["min_cosine"] = float((a * b).sum(1).min())
    r["trim"] = clip.text_trim_note
    r["tokens_longest_of_context"] = f"{int(tokens.argmax(-1).max()) + 1} of {tokens.shape[1]}"
    return r


def _gradcam_row(bb, probe, repeat) -> dict:
    import torch

    from falcon_core.stages.crops import crop_box
    from falcon_core.stages.gradcam import FeatureTarget, compute_cams

    x = torch.stack([bb.transform(probe.load(i)) for i in range(9)])
    feats = [3, 17]

    def bare_grad_cam():
        from pytorch_grad_cam import GradCAM

        cam = GradCAM(model=bb.feature_model, target_layers=[bb.cam_layer],
                      reshape_transform=bb.reshape_transform)
        try:
            with torch.enable_grad():
                return cam(input_tensor=x, targets=[FeatureTarget(feats)] * len(x))
        finally:
            cam.activations_and_grads.release()
            bb.model.zero_grad(set_to_none=True)

    def forward():
        with torch.inference_mode():
            return bb.feature_model(x)

    tool = lambda: compute_cams(bb, x, feats)  # noqa: E731
    vs_pgc = side_by_side(tool, bare_grad_cam, repeat)
    fast, ref = vs_pgc.pop("tool_out"), vs_pgc.pop("baseline_out")
    vs_fwd = side_by_side(tool, forward, repeat)
    vs_fwd.pop("tool_out"), vs_fwd.pop("baseline_out")
    return {"vs_pytorch_grad_cam": vs_pgc, "vs_forward_pass": vs_fwd,
            "max_abs_diff_maps": float(np.abs(fast - ref).max()),
            "same_boxes": [crop_box(c).as_tuple() for c in fast]
            == [crop_box(c).as_tuple() for c in ref],
            "cam_layer": bb.cam_layer_name}


@row("gradcam_efficientnet", "GradCAM, 9 demo scenes, tf_efficientnet_lite0 (compute_cams vs a "
     "bare pytorch-grad-cam call, and vs one forward pass)", "<= 1.2x a forward pass, same maps")
def row_gradcam_eff(ctx: Context, repeat: int) -> dict:
    return _gradcam_row(ctx.backbone("timm:tf_efficientnet_lite0"), ctx.probe(128), repeat)


@row("gradcam_resnet50", "GradCAM, 9 demo scenes, ResNet-50 (CAM layer layer4)",
     "<= 1.2x a forward pass, same maps")
def row_gradcam_r50(ctx: Context, repeat: int) -> dict:
    return _gradcam_row(ctx.backbone("resnet50"), ctx.probe(128), repeat)


_FIRST_CALL = r"""
import sys, time, json, torch
from falcon_core.models.backbones import BackboneSpec, create_backbone
bb = create_backbone(BackboneSpec("resnet18", weights="random"))
x = torch.randn(4, 3, 224, 224)
method = sys.argv[1]
from falcon_core.stages.gradcam import compute_cams
t = []
for _ in range(2):
    c0 = time.process_time(); w0 = time.perf_counter()
    compute_cams(bb, x, [5], method=method)
    t.append((time.process_time() - c0, time.perf_counter() - w0))
print(json.dumps(t))
"""


@row("gradcam_first_call", "GradCAM's first call in a fresh process / its second call "
     "(ResNet-18, 4 images; the process has torch and the model already)", "close to 1x")
def row_gradcam_first(ctx: Context, repeat: int) -> dict:
    out = {}
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for method in ("stopped", "pytorch-grad-cam"):
        runs = []
        for _ in range(max(3, repeat)):
            p = subprocess.run([sys.executable, "-c", _FIRST_CALL, method], capture_output=True,
                               text=True, env=env, timeout=900)
            if p.returncode:
                raise RuntimeError(p.stderr[-2000:])
            (c1, w1), (c2, w2) = json.loads(p.stdout.strip().splitlines()[-1])
            runs.append((c1, w1, c2, w2))
        out[method] = {
            "first_cpu_median_s": round(statistics.median(r[0] for r in runs), 3),
            "first_wall_median_s": round(statistics.median(r[1] for r in runs), 3),
            "later_cpu_median_s": round(statistics.median(r[2] for r in runs), 3),
            "first_over_later_cpu_median": round(statistics.median(r[0] / r[2] for r in runs), 2),
            "first_over_later_wall_median": round(statistics.median(r[1] / r[3] for r in runs), 2)}
    return out


# The app (issue 9: "the app feels instant on the demo world"), measured by the browser benchmark
# that lives next to the app (benchmarks/app_latency.py: the library knows nothing of Streamlit),
# run in a subprocess. Its figures are wall-clock latencies of a user's clicks, each against its
# target; the load average of the run is reported with them.
APP_TARGETS_S: dict[str, float] = {"first_open": 30.0, "cold": 1.0, "warm": 0.3, "failures": 2.0}
APP_FIGURES = {"first_open": "first usable page, fresh cache", "cold": "a never-seen feature",
               "warm": "a seen feature", "failures": "the Failures page (click)"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def app_missing(root: Path = PROJECT_ROOT) -> str | None:
    """Why the app row cannot run here (None when it can): the benchmark drives Debian's Chromium
    (``FALCON_CHROMIUM``, default /usr/bin/chromium) with Python Playwright and serves the app
    with Streamlit from a checkout that has ``app.py`` and ``benchmarks/app_latency.py``."""
    import importlib.util

    chromium = os.environ.get("FALCON_CHROMIUM", "/usr/bin/chromium")
    if not (root / "app.py").is_file() or not (root / "benchmarks" / "app_latency.py").is_file():
        return (f"no app next to the library ({root} has no app.py or benchmarks/app_latency.py): "
                "run it from a checkout of the project")
    for module, install in (("playwright", "pip install playwright (no browser download: the "
                             "benchmark uses the system Chromium)"),
                            ("streamlit", "pip install -r requirements.txt")):
        if importlib.util.find_spec(module) is None:
            return f"Python package {module} is missing: {install}"
    if not Path(chromium).exists():
        return f"{chromium} is missing: apt-get install -y chromium (or set FALCON_CHROMIUM)"
    return None


def app_figures(result: dict) -> dict:
    """The browser benchmark's JSON as this table's row: each figure (the median of its
    repeats for the clicks) against its target."""
    out: dict[str, Any] = {}
    for name, target in APP_TARGETS_S.items():
        value = result.get(f"{name}_s")
        if isinstance(value, list):
            value = statistics.median(value) if value else None
        if value is None:
            continue
        out[name] = {"what": APP_FIGURES[name], "seconds": round(float(value), 3),
                     "target_s": target, "met": bool(float(value) <= target)}
        if isinstance(result.get(f"{name}_s"), list):
            xs = [float(x) for x in result[f"{name}_s"]]
            out[name].update(min_s=round(min(xs), 3), max_s=round(max(xs), 3), n=len(xs))
    out["all_met"] = bool(out) and all(v["met"] for v in out.values() if isinstance(v, dict))
    for k in ("load_average_before", "load_average_after", "cpus", "features"):
        if k in result:
            out[f"app_{k}"] = result[k]
    return out


@row("app", "The app in a browser on the demo world with a fresh cache "
     "(python -m benchmarks.app_latency --mode browser, in a subprocess): first usable page, "
     "a never-seen feature, a seen one, the Failures page (wall seconds, median of the repeats)",
     "first open <= 30 s, new feature <= 1 s, seen feature <= 0.3 s, Failures <= 2 s")
def row_app(ctx: Context, repeat: int) -> dict:
    why = app_missing()
    if why is not None:
        return {"skipped": f"app row skipped: {why}"}
    fd, path = tempfile.mkstemp(prefix="falcon-app-latency-", suffix=".json")
    os.close(fd)
    try:
        p = subprocess.run([sys.executable, "-m", "benchmarks.app_latency", "--mode", "browser",
                            "--repeats", str(max(3, repeat)), "--out", path],
                           cwd=str(PROJECT_ROOT), capture_output=True, text=True, timeout=3600)
        if p.returncode:
            raise RuntimeError(f"benchmarks.app_latency exited {p.returncode}: "
                               f"{(p.stderr or p.stdout)[-2000:]}")
        return app_figures(json.loads(Path(path).read_text()))
    finally:
        Path(path).unlink(missing_ok=True)


def _demo_cfg(probe_size: int):
    from falcon_core.workspace import WorkspaceConfig

    return WorkspaceConfig.demo(probe_size=probe_size)


@row("warm_explanation", "a cached explanation in a new Falcon (models loaded, nothing in "
     "memory) vs a repeat call in the same Falcon (demo world, 400 images)", "<= 0.1 s")
def row_warm(ctx: Context, repeat: int) -> dict:
    from falcon_core.cache import DiskCache
    from falcon_core.pipeline import Falcon

    cfg = _demo_cfg(400)
    base = primed_demo_cache(400)
    with tempfile.TemporaryDirectory(prefix="falcon-speed-") as tmp:
        d = str(copy_of(base, tmp, "warm"))
        falcon = Falcon.from_config(cfg, cache_dir=d)
        falcon.explain(3)  # cold, untimed
        times, reps = [], []
        for _ in range(max(3, repeat)):
            # what a new process has after loading the models: new objects, nothing memoised
            bb, clip = cfg.build_backbone(), cfg.build_clip()
            f = Falcon(bb, clip, cfg.build_probe(bb), cfg.build_vocabulary(),
                       settings=cfg.default_settings(), cache=DiskCache(d))
            c, w, _ = _timed(lambda: f.explain(3))
            times.append((c, w))
            c, w, _ = _timed(lambda: falcon.explain(3))
            reps.append((c, w))
    return {"fresh_objects_explain_cpu_min_s": round(min(t[0] for t in times), 4),
            "fresh_objects_explain_wall_median_s": round(statistics.median(t[1] for t in times), 4),
            "fresh_objects_explain_wall_min_s": round(min(t[1] for t in times), 4),
            "repeat_in_process_wall_median_s": round(statistics.median(r[1] for r in reps), 5)}


# Features of the demo layer the precompute row explains (``--features``; None: every feature of
# the layer, what issue 9 means by a whole-layer precompute; ~3 min at load 4-6 on 2 cores).
PRECOMPUTE_FEATURES: int | None = None


@row("precompute", "explaining the demo layer's 128 features (--features N: the first N): "
     "Catalogue.precompute vs one explain() per feature (Stage 1, text embeddings and view "
     "embeddings cached for both; spaCy's and the concept embeddings' memos emptied before each "
     "run)", ">= 3x faster per feature, same explanations")
def row_precompute(ctx: Context, repeat: int) -> dict:
    """Both sides start from the same cache (Stage 1, the vocabulary's text embeddings and the
    probe's view embeddings: per workspace, not per feature) and the same in-memory state (spaCy
    loaded, its memo and the concept-text memo emptied), explain the first N features of the demo
    layer and return the explanations they made (the precompute's through its ``on_feature``;
    reading them back from the cache would be work one ``explain`` per feature does not do);
    ``to_dict`` (for the bit-equality check) runs outside the timings."""
    from falcon_core.cache import DiskCache
    from falcon_core.pipeline import Falcon

    cfg = _demo_cfg(400)
    base = primed_demo_cache(400)
    with tempfile.TemporaryDirectory(prefix="falcon-speed-") as d:
        falcon = Falcon.from_config(cfg, cache_dir=str(copy_of(base, d, "c0")))
        n_feats = ctx.options.get("features") or PRECOMPUTE_FEATURES or falcon.store.num_features
        feats = list(range(min(int(n_feats), falcon.store.num_features)))
        falcon.explainer.extractor.nlp  # spaCy loaded once, outside the timings
        falcon.view_embeddings()  # once per workspace (every explanation's faithfulness reads them)
        n = [0]

        def fresh_cache():
            n[0] += 1
            dst = copy_of(base, d, f"c{n[0]}")
            falcon.cache = DiskCache(dst)
            for part in (falcon.store, falcon.explainer, falcon.catalogue):
                part.cache = falcon.cache
            falcon.explainer._A = None
            # what a new process would have to do again: each caption's concepts (spaCy, loaded
            # once outside the timings) and each concept's text embedding
            falcon.explainer.extractor._memo.clear()
            getattr(falcon.explainer, "text_memo", {}).clear()  # (absent before it existed)
            return falcon

        def one_by_one():
            f = fresh_cache()
            return [f.explain(i) for i in feats]

        def shared():  # the explanations as precompute gives them (not read back: explain
            f = fresh_cache()  # returns its own objects too)
            got = {}
            f.precompute(feats, on_feature=lambda i, exp, err: got.__setitem__(i, exp))
            return [got[i] for i in feats]

        r = side_by_side(shared, one_by_one, repeat, warmup=False)
    a = [e.to_dict() for e in r.pop("tool_out")]
    b = [e.to_dict() for e in r.pop("baseline_out")]
    r["same_explanations"], r["max_score_difference"] = _same_explanations(a, b)
    r["bit_equal"] = a == b  # every score, caption and image, to the last bit
    r["features"] = len(feats)
    r["of_layer"] = falcon.store.num_features
    r["tool_cpu_min_s_per_feature"] = round(r["tool_cpu_min_s"] / len(feats), 4)
    r["baseline_cpu_min_s_per_feature"] = round(r["baseline_cpu_min_s"] / len(feats), 4)
    return r


# ------------------------------------------------------------ vocabulary search (bench search)
# The rows below call falcon_core.bench.search's own functions (each variant in a fresh process,
# so each peak RSS is its own); ``--no-search`` leaves them out, ``--search-data`` and
# ``--index-cache`` say where the LAION-format shards and the built IVF-PQ index are kept.


@row("search_exact", "caption top-5 of 64 crops over M fp16 LAION-format rows (--search-rows, "
     "default 1M): ExactIndex vs a bare chunked matmul + argpartition, and peak RSS (and the "
     "search's own increment over the RSS before it); caption "
     "text of 250 rows vs reading only their row groups (bench search)",
     "<= 1.2x the bare search; RSS <= 1.2x the raw embeddings")
def row_search_exact(ctx: Context, repeat: int) -> dict:
    from falcon_core.bench import search

    rows = int(ctx.options.get("search_rows") or 1_000_000)
    res = search.search_rows(Path(ctx.options.get("search_data") or _search_data()), [rows],
                             repeat)
    r = res["sizes"][str(rows)]
    tk, lk = r["topk"], r["lookup"]
    b, f = tk["bare"], tk["falcon"]
    raw = f["raw_embedding_bytes"]
    out = {"rows": rows,
           "topk_ratio_wall_min": round(search.ratio(f["time"], b["time"], "wall_min"), 3),
           "topk_ratio_wall_median": round(search.ratio(f["time"], b["time"], "wall_median"), 3),
           "topk_ratio_cpu_min": round(search.ratio(f["time"], b["time"], "cpu_min"), 3),
           "topk_falcon_wall_min_s": round(f["time"]["wall_min"], 3),
           "topk_bare_wall_min_s": round(b["time"]["wall_min"], 3),
           "peak_rss_over_raw": round(f["peak_rss"] / raw, 3),
           "bare_peak_rss_over_raw": round(b["peak_rss"] / raw, 3),
           "search_rss_increment_over_raw": round(f["search_rss_increment"] / raw, 3),
           "raw_embeddings_gb": round(raw / 1e9, 3),
           "equal_to_bare": f["equal_to_bare_normalised"],
           "lookup_ratio_wall_min": round(search.ratio(lk["falcon"]["time"], lk["bare"]["time"],
                                                       "wall_min"), 3),
           "lookup_equal": lk["falcon"]["equal_to_bare"]}
    if "stacked_T_L" in f:
        out["T_L_separate_over_stacked_wall_min"] = round(
            search.ratio(f["separate_T_L"], f["stacked_T_L"], "wall_min"), 3)
    return out


@row("search_ivfpq", "IVF-PQ over 1M clustered LAION-format rows: recall@5 against the exact "
     "search (1,024 queries) and ms per 64 crops after warm-up, the index's own settings "
     "(bench search --ivfpq; built once into --index-cache, reused when there)",
     "recall@5 >= 0.95, <= 50 ms per 64 crops")
def row_search_ivfpq(ctx: Context, repeat: int) -> dict:
    from falcon_core.bench import search

    root = search.ensure_data(Path(ctx.options.get("search_data") or _search_data()),
                              1_000_000, "clustered")
    cache = ctx.options.get("index_cache")
    with tempfile.TemporaryDirectory(prefix="falcon-speed-ivf-") as tmp:
        iv = search.measure_ivfpq(root, cache or tmp, repeats=repeat, sweep=())
    ms = iv["ms_per_64"]
    return {"rows": iv["rows"], "recall_at_5": round(iv["recall_at_5"], 4),
            "top1_equal": round(iv["top1_equal"], 4),
            "ms_per_64_wall_min": round(ms["wall_min"], 2),
            "ms_per_64_wall_median": round(ms["wall_median"], 2),
            "ms_per_64_cpu_min": round(ms["cpu_min"], 2),
            "nprobe": iv["nprobe"], "rerank": iv["rerank"],
            "build_wall_s": round(iv["build_s"]["wall"], 1),
            "index_reused": bool(cache) and iv["build_s"]["wall"] < 60,
            "disk_mb": round(iv["disk_bytes"] / 1e6, 1), "peak_rss_mb": round(iv["peak_rss_mb"], 1),
            "params": {k: iv["params"][k] for k in ("nlist", "m", "nbits", "opq")
                       if k in iv["params"]}}


def _search_data() -> str:
    return os.path.join(tempfile.gettempdir(), "falcon-laion-bench")


SEARCH_ROWS = ("search_exact", "search_ivfpq")


def _same_explanations(a: list[dict], b: list[dict]) -> tuple[bool, float]:
    """Whether two lists of explanation dicts say the same (concepts in order, images, boxes,
    captions found), and the largest difference of a score (batches of other sizes move the
    last bits of a float32)."""
    worst = 0.0
    for x, y in zip(a, b):
        for kind in ("words", "phrases", "spurious_words", "spurious_phrases"):
            if [c["text"] for c in x[kind]] != [c["text"] for c in y[kind]]:
                return False, float("nan")
            for c, d in zip(x[kind], y[kind]):
                worst = max(worst, abs(c["score"] - d["score"]))
        for kind in ("high", "low"):
            if [(r["index"], r.get("box"), [m["index"] for m in r["captions"]]) for r in x[kind]] \
                    != [(r["index"], r.get("box"), [m["index"] for m in r["captions"]])
                        for r in y[kind]]:
                return False, float("nan")
    return len(a) == len(b) and worst < 1e-4, worst


# ------------------------------------------------------------------------------------ main

# The rows in the order they run by default (the cheap and decisive ones first; a row added by
# another module is appended at the end).
DEFAULT_ORDER: list[str] = [
    "gradcam_efficientnet", "text_demo_clip", "warm_explanation", "precompute", "text_vitb32",
    "gradcam_resnet50", "gradcam_first_call", "stage1_efficientnet", "search_ivfpq",
    "search_exact"]


def run(names: list[str], repeat: int, log=print, **options: Any) -> dict:
    ctx = Context(**options)
    result: dict[str, Any] = {
        "note": ("models have random weights (timm/torchvision/open_clip architectures), images "
                 "are the demo world's rendered scenes and captions its captions; ratios are "
                 "tool / baseline measured alternately in this run"),
        "cpus": os.cpu_count(), "rows": {}}
    for name in names:
        what, target, fn = ROWS[name]
        load0 = os.getloadavg()
        log(f"[{name}] {what} ...")
        t0 = time.perf_counter()
        try:
            r = fn(ctx, repeat)
        except Exception as e:  # noqa: BLE001 - one broken row must not hide the others
            r = {"error": f"{type(e).__name__}: {e}"}
        r.update({"what": what, "target": target, "load_before": [round(x, 2) for x in load0],
                  "load_after": [round(x, 2) for x in os.getloadavg()],
                  "peak_rss_mb_so_far": round(_rss_mb(), 1),
                  "row_seconds": round(time.perf_counter() - t0, 1)})
        result["rows"][name] = r
        log(_format_row(name, r))
    result["peak_rss_mb"] = round(_rss_mb(), 1)
    return result


def _fmt_ratio(r: dict) -> str:
    return (f"CPU {r['ratio_cpu_min']}x / {r['ratio_cpu_median']}x (min/median), "
            f"wall {r['ratio_wall_min']}x / {r['ratio_wall_median']}x; tool CPU "
            f"{r['tool_cpu_min_s']:.3f} s vs baseline {r['baseline_cpu_min_s']:.3f} s (min)")


def _format_row(name: str, r: dict) -> str:
    lines = [f"  {name}: target {r.get('target')}"]
    if "error" in r:
        lines.append(f"    ERROR {r['error']}")
    for k, v in r.items():
        if isinstance(v, dict) and "ratio_cpu_min" in v:
            lines.append(f"    {k}: {_fmt_ratio(v)}")
    if "ratio_cpu_min" in r:
        lines.append(f"    {_fmt_ratio(r)}")
    skip = {"what", "target", "error"}
    extra = {k: v for k, v in r.items() if not isinstance(v, dict) and k not in skip
             and not k.startswith(("ratio_", "tool_", "baseline_"))}
    nested = {k: v for k, v in r.items() if isinstance(v, dict) and "ratio_cpu_min" not in v}
    lines.append("    " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    for k, v in nested.items():
        lines.append(f"    {k}: " + ", ".join(f"{a}={b}" for a, b in v.items()))
    return "\n".join(lines)


def _set_omp_wait(policy: str) -> str:
    """Set ``OMP_WAIT_POLICY`` for torch's OpenMP threads (read when torch is first imported:
    the rows import it lazily). Returns the policy in force."""
    if policy == "passive" and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "default") + (
        " (torch already imported: not changed)" if "torch" in sys.modules else "")


BLAS_THREAD_TIMEOUT = "4"  # OpenBLAS's minimum: a worker waits 2**4 cycles before it sleeps


def quiet_blas_reexec(module: str, argv: list[str]) -> None:
    """Re-execute ``python -m module *argv`` with ``OPENBLAS_THREAD_TIMEOUT`` set, unless it is
    set already or ``--omp-wait default`` asks for the libraries' own policies.

    numpy's OpenBLAS keeps its worker thread spinning for 2^28 cycles (~0.1 s of CPU) after every
    product, however small; an explanation makes hundreds of small products, so that spinning
    was most of a one-``explain``-per-feature loop's CPU time (the precompute row's baseline:
    ~6 of ~19 s). OpenBLAS reads the timeout once, when numpy is loaded, and importing
    ``falcon_core`` loads numpy, so it cannot be changed in this process. Called only from the
    command line entries (``python -m falcon_core.bench speed``, ``python -m
    benchmarks.precompute_profile``), never from :func:`main` itself, which tests call in-process.
    """
    if "--omp-wait=default" in argv or any(
            a == "--omp-wait" and b == "default" for a, b in zip(argv, argv[1:])):
        return
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        return
    env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT=BLAS_THREAD_TIMEOUT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


@contextlib.contextmanager
def _stdout_to_stderr(active: bool):
    """With ``--json`` the JSON must be all of stdout, but libraries write there from C (faiss
    prints "IO_FLAG_ONDISK_SAME_DIR: ..." when it opens an index whose folder was copied): while
    the rows run, file descriptor 1 points at stderr; the JSON is printed after."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m falcon_core.bench speed",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="rows: " + ", ".join(ROWS))
    p.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per side (at least 3)")
    p.add_argument("--only", default=None, help="comma-separated row names (default: all)")
    p.add_argument("--no-search", action="store_true",
                   help="leave out the vocabulary-search rows (" + ", ".join(SEARCH_ROWS) + ")")
    p.add_argument("--search-rows", type=int, default=None, metavar="M",
                   help="rows of the exact-search row (default 1,000,000)")
    p.add_argument("--search-data", default=None, metavar="DIR",
                   help="where the LAION-format shards are made and kept (default: "
                        "<tmp>/falcon-laion-bench, as bench search)")
    p.add_argument("--index-cache", default=None, metavar="DIR",
                   help="keep the built IVF-PQ index here between runs (default: a temp folder, "
                        "built in the run)")
    p.add_argument("--omp-wait", choices=("passive", "default"), default="passive",
                   help="OpenMP's wait policy for torch's threads (default passive: a thread "
                        "that spins after each parallel region is counted as CPU time of "
                        "whatever runs next -- on a shared machine most of the CPU time of "
                        "small batches)")
    p.add_argument("--features", type=int, default=None, metavar="N",
                   help="features the precompute row explains, the first N of the demo layer "
                        "(default: all 128, a whole-layer precompute)")
    args = p.parse_args(argv)
    names = DEFAULT_ORDER if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    if args.no_search:
        names = [n for n in names if n not in SEARCH_ROWS]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"error: unknown rows {unknown}; rows: {', '.join(ROWS)}", file=sys.stderr)
        return 2
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print
    if not args.only:
        names = names + [n for n in ROWS if n not in names
                         and not (args.no_search and n in SEARCH_ROWS)]
    omp = _set_omp_wait(args.omp_wait)
    with _stdout_to_stderr(args.json):
        result = run(names, max(3, args.repeat), log, features=args.features,
                     search_rows=args.search_rows, search_data=args.search_data,
                     index_cache=args.index_cache)
    result["omp_wait_policy"] = omp
    result["openblas_thread_timeout"] = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "default")
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"peak RSS {result['peak_rss_mb']:.0f} MB; {result['note']}")
    return 0


if __name__ == "__main__":
    quiet_blas_reexec("falcon_core.bench.speed", sys.argv[1:])
    sys.exit(main())
