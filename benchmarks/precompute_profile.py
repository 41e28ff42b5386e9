"""Where the precompute row's CPU time goes: the stages of both sides, one explain per feature
and Catalogue.precompute, as in ``python -m falcon_core.bench speed --only precompute`` (same
primed cache, same memos emptied before each run).

    python -m benchmarks.precompute_profile --features 32 --repeat 3

Each stage is a light wrapper (process CPU time, all threads; a stage called inside itself is
counted once) around the function named in the table, so the figures nest (e.g. ``faithfulness``
holds ``embed_texts``); cProfile's own overhead was larger than several stages. Prints, for the
fastest run of each side, every stage's CPU seconds and calls, and whether both sides gave the
same explanations. ``--omp-wait passive`` (default): see ``falcon_core.bench.speed``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import shutil
import sys
import tempfile
import time

# stage label -> [CPU seconds, calls] of the run in progress
_acc: dict[str, list] = {}
_inside: dict[str, bool] = {}


def _wrap(modname: str, owner: str | None, attr: str, label: str) -> None:
    """Count the CPU time of ``modname.owner.attr`` under ``label`` (once when it nests)."""
    obj = importlib.import_module(modname)
    obj = getattr(obj, owner) if owner else obj
    real = getattr(obj, attr)

    @functools.wraps(real)
    def counted(*a, **k):
        if _inside.get(label):
            return real(*a, **k)
        _inside[label] = True
        c0 = time.process_time()
        try:
            return real(*a, **k)
        finally:
            _inside[label] = False
            v = _acc.setdefault(label, [0.0, 0])
            v[0] += time.process_time() - c0
            v[1] += 1

    setattr(obj, attr, counted)


# (module, class or None, function, label), in the order printed
STAGES = [
    ("falcon_core.stages.gradcam", None, "compute_cams", "GradCAM (compute_cams, per feature)"),
    ("falcon_core.stages.gradcam", None, "compute_cams_many", "GradCAM (compute_cams_many, shared)"),
    ("falcon_core.stages.gradcam", None, "gradcam_maps", "  maps from gradients (gradcam_maps)"),
    ("torch.autograd", None, "grad", "  backward passes (torch.autograd.grad)"),
    ("falcon_core.explainer_stages", None, "embed_images", "CLIP crops (embed_images, incl. crop cutting)"),
    ("falcon_core.stages.crops", None, "crop_image", "  crop cutting (crop_image)"),
    ("falcon_core.explainer_stages", "ImageStages", "_boxes", "crop boxes (_boxes)"),
    ("falcon_core.caption_index", "ExactIndex", "search", "caption search (ExactIndex.search)"),
    ("falcon_core.stages.concepts", "ConceptExtractor", "docs", "spaCy (ConceptExtractor.docs)"),
    ("falcon_core.stages.concepts", "ConceptExtractor", "extract", "concepts (extract, incl. spaCy)"),
    ("falcon_core.explainer_stages", "ImageStages", "caption_concepts", "concepts (caption_concepts: table lookups, incl. extract)"),
    ("falcon_core.stages.concepts", None, "word_scores", "Word Scores"),
    ("falcon_core.explainer_stages", None, "embed_texts", "concept text embeddings (embed_texts)"),
    ("falcon_core.explainer_stages", "ImageStages", "faithfulness_plan", "faithfulness products (faithfulness_plan)"),
    ("falcon_core.stages.faithfulness", None, "score_rows", "faithfulness arithmetic (score_rows)"),
    ("falcon_core.explainer", "Explainer", "select_low", "select_low"),
    ("falcon_core.explainer", "Explainer", "select_high", "select_high"),
    ("falcon_core.calibration", "Calibration", "hygiene", "hygiene"),
    ("falcon_core.explainer", "Explainer", "explanation_key", "explanation_key (hashing)"),
    ("falcon_core.cache", "DiskCache", "write_json", "cache write_json"),
    ("falcon_core.cache", "DiskCache", "write_npy", "cache write_npy"),
    ("falcon_core.cache", "DiskCache", "read_json", "cache read_json (incl. from_dict)"),
    ("falcon_core.cache", "DiskCache", "get_or_compute_npy", "cache get_or_compute_npy (incl. compute)"),
    ("falcon_core.explanation", "Explanation", "to_dict", "Explanation.to_dict"),
    ("falcon_core.catalogue", "Catalogue", "prefill", "prefill (shared work, total)"),
    ("falcon_core.catalogue", "Catalogue", "_share_searches", "  shared search + spaCy"),
    ("falcon_core.explainer", "Explainer", "_explain", "_explain (total)"),
    ("falcon_core.explainer", "Explainer", "explain_many", "explain_many (total)"),
]


_gc_t0: list[float] = []


def _gc_timer(phase: str, info: dict) -> None:
    """Count the CPU time of the cyclic garbage collector (generation 2 and all) as a stage."""
    if phase == "start":
        _gc_t0[:] = [time.process_time()]
    elif _gc_t0:
        label = f"garbage collector (generation {info.get('generation')})"
        v = _acc.setdefault(label, [0.0, 0])
        v[0] += time.process_time() - _gc_t0[0]
        v[1] += 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precompute_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, default=32, help="the first N features of the layer")
    p.add_argument("--repeat", type=int, default=3, help="runs of each side (the fastest shown)")
    p.add_argument("--omp-wait", choices=("passive", "default"), default="passive")
    p.add_argument("--primed-concepts", action="store_true",
                   help="every vocabulary caption's concepts extracted once before the runs and "
                        "put back into the extractor's memo before each (both sides); with the "
                        "concept table (Explainer.concept_table) explanations call spaCy only "
                        "for captions it lacks, so this changes nothing there")
    args = p.parse_args(argv)
    if args.omp_wait == "passive" and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for spec in STAGES:
        _wrap(*spec)
    import gc

    gc.callbacks.append(_gc_timer)
    run(args.features, max(1, args.repeat), args.primed_concepts)
    return 0


def run(n_features: int, repeat: int, primed_concepts: bool = False) -> None:
    from falcon_core.bench.speed import _demo_cfg, copy_of, primed_demo_cache
    from falcon_core.cache import DiskCache
    from falcon_core.pipeline import Falcon

    cfg, base = _demo_cfg(400), primed_demo_cache(400)
    d = tempfile.mkdtemp(prefix="falcon-precompute-profile-")
    falcon = Falcon.from_config(cfg, cache_dir=str(copy_of(base, d, "c0")))
    feats = list(range(min(n_features, falcon.store.num_features)))
    falcon.explainer.extractor.nlp  # loaded once, outside the runs (as the speed row)
    falcon.view_embeddings()
    table = {}
    if primed_concepts:
        ex = falcon.explainer
        texts = ex.vocabulary.captions(range(len(ex.vocabulary)))
        table = dict(zip(texts, ex.extractor.extract(texts)))
    made = [0]

    def fresh():
        made[0] += 1
        falcon.cache = DiskCache(copy_of(base, d, f"c{made[0]}"))
        for part in (falcon.store, falcon.explainer, falcon.catalogue):
            part.cache = falcon.cache
        falcon.explainer._A = None
        falcon.explainer.extractor._memo.clear()
        falcon.explainer.extractor._memo.update(table)
        falcon.explainer.text_memo.clear()
        return falcon

    def one_by_one():
        f = fresh()
        return [f.explain(i) for i in feats]

    def shared():
        f = fresh()
        got = {}
        f.precompute(feats, on_feature=lambda i, exp, err: got.__setitem__(i, exp))
        return [got[i] for i in feats]

    runs: dict[str, list] = {}
    outs = {}
    try:
        for _ in range(repeat):
            for name, fn in (("one_by_one", one_by_one), ("shared", shared)):
                _acc.clear()
                c0 = time.process_time()
                outs[name] = fn()
                cpu = time.process_time() - c0
                runs.setdefault(name, []).append((cpu, {k: tuple(v) for k, v in _acc.items()}))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("load average", [round(x, 2) for x in os.getloadavg()], "features", len(feats),
          "OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "default"),
          "OPENBLAS_THREAD_TIMEOUT", os.environ.get("OPENBLAS_THREAD_TIMEOUT", "default"),
          "concepts primed" if primed_concepts else "")
    for name, rs in runs.items():
        cpu, stages = min(rs, key=lambda r: r[0])
        print(f"== {name}: CPU {cpu:.2f} s (fastest; all {[round(r[0], 2) for r in rs]})")
        for *_, label in STAGES:
            if label in stages:
                sec, calls = stages[label]
                print(f"   {label:48s} {sec:7.3f} s  ({calls} calls)")
        for label in sorted(k for k in stages if k.startswith("garbage")):
            sec, calls = stages[label]
            print(f"   {label:48s} {sec:7.3f} s  ({calls} calls)")
    same = [e.to_dict() for e in outs["one_by_one"]] == [e.to_dict() for e in outs["shared"]]
    print("bit_equal", same)


if __name__ == "__main__":
    from falcon_core.bench.speed import quiet_blas_reexec

    quiet_blas_reexec("benchmarks.precompute_profile", sys.argv[1:])
    sys.exit(main())
