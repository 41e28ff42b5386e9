"""Does the faithfulness score mean something? Its validation on the demo world, and the two
demo backbones compared (issue 12): ``python -m falcon_core.bench trust [--docs]``.

Over the clear features of the recovery benchmark (:mod:`.recovery`), the score of each
explanation's kept concepts should separate the explanations whose top-3 words hold the ground
truth from those that do not: :func:`validate` reports the ROC AUC of the score for that split
(target ≥ 0.8), with both counts. The same for Spearman's ρ, and the mean score of each side.

Nothing is explained twice: the explanations are the recovery benchmark's full-pipeline ones
(same workspace, settings and cache keys), made with the catalogue's precompute (shared GradCAM
passes and CLIP batches; what is cached is read back), so after ``precompute`` or ``bench
recovery`` on the same cache the validation only reads. ``--docs`` writes ``docs/trust.json`` and
the README's block between the ``trust`` markers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..stages.faithfulness import roc_auc

TARGET = 0.8


def feature_fields(exp) -> dict[str, Any]:
    """The per-feature fields the benchmark records (None where there is no score)."""
    f = getattr(exp, "faithfulness", None) if exp is not None else None

    def num(x):
        return None if x is None or x != x else float(x)

    return {
        "faithfulness_auc": num(f.kept.auc) if f and f.kept else None,
        "faithfulness_spearman": num(f.kept.spearman) if f and f.kept else None,
        "faithfulness_auc_removed": num(f.removed.auc) if f and f.removed else None,
    }


def validate(per_feature: list[dict[str, Any]], hit_key: str = "hit") -> dict[str, Any]:
    """ROC AUC of the faithfulness score (and of ρ) for "top-3 holds the truth" (``hit_key``)."""
    out: dict[str, Any] = {"target": TARGET, "split": f"{hit_key}: top-3 words hold the truth"}
    for name, key in (("auc", "faithfulness_auc"), ("spearman", "faithfulness_spearman")):
        rows = [r for r in per_feature if r.get(key) is not None]
        hits = [bool(r[hit_key]) for r in rows]
        scores = [r[key] for r in rows]
        sep = roc_auc(scores, hits) if rows else math.nan
        mean = (lambda xs: float(sum(xs) / len(xs)) if xs else None)
        out[name] = {
            "separation_auc": None if sep != sep else float(sep),
            "with_truth": sum(hits), "without_truth": len(hits) - sum(hits),
            "mean_with_truth": mean([s for s, h in zip(scores, hits) if h]),
            "mean_without_truth": mean([s for s, h in zip(scores, hits) if not h]),
        }
    sep = out["auc"]["separation_auc"]
    out["passes"] = bool(sep is not None and sep >= TARGET)
    return out


def format_validation(v: dict[str, Any]) -> list[str]:
    def f(x):
        return "n/a" if x is None else f"{x:.2f}"

    a, r = v["auc"], v["spearman"]
    return [
        f"  faithfulness score separates top-3 hits from misses: ROC AUC {f(a['separation_auc'])}"
        f" (target >= {v['target']}; {a['with_truth']} with the truth in the top 3, "
        f"{a['without_truth']} without) -> {'passes' if v['passes'] else 'FAILS'}",
        f"    mean score: {f(a['mean_with_truth'])} with the truth, {f(a['mean_without_truth'])}"
        f" without; by rank correlation: separation {f(r['separation_auc'])}, mean rho "
        f"{f(r['mean_with_truth'])} vs {f(r['mean_without_truth'])}",
    ]


# ---- one command for the README: the validation and the demo comparison --------------------------
REPO = Path(__file__).resolve().parents[2]
DOCS_JSON = REPO / "docs" / "trust.json"
README = REPO / "README.md"
DOCS_COMMAND = "python -m falcon_core.bench trust --docs"
BLOCK = "trust"


def shape_split(per_feature: list[dict[str, Any]]) -> dict[str, Any]:
    """The validation within one attribute (shape: where most misses are), so the figure is not
    only the score telling attributes apart."""
    rows = [r for r in per_feature if r["truth"].startswith("shape=")]
    return validate(rows) if rows else {}


def planted_reliance_rows(cmp, world, summary_features: dict[str, dict[str, list[int]]],
                          truth_features: dict[str, dict[str, list[int]]]) -> list[dict[str, Any]]:
    """The reliance test (:meth:`falcon_core.compare.Comparison.reliance`) of each planted
    correlation ``if {a1: v1} then {a2: v2}`` of the demo world: concept = the source value's
    name, companion = the target value's word CLIP names most often among the images naming the
    source (chosen by count, not by effect), a family of as many tests as correlations. Twice:
    with the features the summary uses (explanations whose top 3 words hold the source) and with
    the ground truth's clear features of the source (what a perfect explainer would hand it)."""
    from ..demo import synonyms

    syn = synonyms(world)
    concepts, named, _ = cmp.naming()
    col = {c: j for j, c in enumerate(concepts)}
    pairs = []
    for corr in getattr(world, "correlations", []) or []:
        (a1, v1), = corr["if"].items()
        (a2, v2), = corr["then"].items()
        if v1 not in col:
            continue
        rows = named[:, col[v1]]
        words = [w for w in syn[f"{a2}={v2}"] if w in col]
        if not words:
            continue
        d = max(words, key=lambda w: (int(named[rows, col[w]].sum()), w == v2))
        pairs.append((f"{a1}={v1}", f"{a2}={v2}", v1, d))
    out = []
    for label, feats in (("explanations", summary_features), ("ground truth", truth_features)):
        test = {side: {c: feats[side].get(src, []) for src, _, c, _ in pairs}
                for side in ("a", "b")}
        rows = {(r["concept"], r["companion"]): r
                for r in cmp.reliance(test, pairs=[(c, d) for _, _, c, d in pairs])}
        for src, dst, c, d in pairs:
            r = rows.get((c, d))
            out.append({"features_from": label, "correlation": f"{src} -> {dst}",
                        "concept": c, "companion": d,
                        "features": {s: test[s][c] for s in ("a", "b")},
                        **({k: r[k] for k in ("auc", "auc_interval", "difference",
                                              "difference_interval", "images", "z", "in")}
                           if r else {"in": None, "untested": "no features of the concept in "
                                      "one of the models"})})
    return out


def run_demo_comparison(falcon_a=None, world=None, truths=None, cache_dir: str | None = None,
                        progress=None) -> dict[str, Any]:
    """The summary of the default demo backbone (A) against the one trained without the planted
    correlations (B), both seen through the demo CLIP, probe set and vocabulary; with the
    planted correlations' reliance rows when the world and its ground truth are given."""
    from ..compare import Comparison, concept_sets
    from ..pipeline import Falcon
    from ..workspace import WorkspaceConfig

    if falcon_a is None:
        falcon_a = Falcon.from_config(WorkspaceConfig.demo(), cache_dir=cache_dir,
                                      progress=progress)
    cfg = falcon_a.config
    cmp = Comparison.with_model_b(falcon_a, cfg.replace(backbone="demo-uncorrelated"))
    summary = cmp.summary()
    out: dict[str, Any] = {"summary": summary}
    if world is not None and truths is not None:
        enc: dict[str, dict[str, list[int]]] = {"a": {}, "b": {}}
        for side in ("a", "b"):
            for f, e in cmp.explanations(side)[0].items():  # cached by the summary
                for c in concept_sets(e)["encoded"]:
                    for name, words in _value_words(world).items():
                        if c in words and f not in enc[side].get(name, []):
                            enc[side].setdefault(name, []).append(f)  # once per feature
        out["planted"] = planted_reliance_rows(cmp, world, enc, truths)
    return out


def _value_words(world) -> dict[str, set[str]]:
    from ..demo import synonyms

    return {k: set(v) for k, v in synonyms(world).items()}


def _truth_features(world_obj, bb: str, cache_dir, progress) -> dict[str, list[int]]:
    """``{attribute=value: the clear features of backbone bb}`` on the world's probe set."""
    from ..demo import attribute_matrix, ground_truth
    from ..pipeline import Falcon
    from ..workspace import WorkspaceConfig

    cfg = WorkspaceConfig.demo().replace(backbone=bb)
    f = Falcon.from_config(cfg, cache_dir=cache_dir, progress=progress)
    H, valid = f.representations()
    from ..demo.integration import demo_probe_truth

    _, scenes = demo_probe_truth(cfg.world, n=cfg.probe_size, seed=cfg.seed)
    names, binary = attribute_matrix(scenes, world_obj)
    out: dict[str, list[int]] = {}
    for t in ground_truth(H[valid], binary[valid], names):
        if t.clear:
            out.setdefault(t.name, []).append(t.feature)
    return out


def markdown(res: dict[str, Any]) -> str:
    """The README's block: the validation and the comparison of the two demo backbones."""
    def f(x, d=2):
        return "n/a" if x is None else f"{x:.{d}f}"

    v = res["validation"]
    a, r = v["auc"], v["spearman"]
    lines = [f"Measured by `{DOCS_COMMAND}` ({res.get('seconds', 0):.0f} s on this machine, "
             f"{res.get('cold_explanations', 0)} explanations computed, the rest read from the "
             f"cache); default demo world, seed {res.get('seed', 0)}, "
             f"{a['with_truth'] + a['without_truth']} clear features.", "",
             "| the faithfulness score separates explanations whose top-3 words hold the truth "
             "from the others | ROC AUC | with the truth | without | mean score with / without |",
             "|---|---|---|---|---|",
             f"| score (AUC of the kept concepts), all clear features | "
             f"**{f(a['separation_auc'])}** (target ≥ {v['target']}) | {a['with_truth']} | "
             f"{a['without_truth']} | {f(a['mean_with_truth'])} / {f(a['mean_without_truth'])} |",
             f"| Spearman's ρ, all clear features | {f(r['separation_auc'])} | "
             f"{r['with_truth']} | "
             f"{r['without_truth']} | {f(r['mean_with_truth'])} / {f(r['mean_without_truth'])} |"]
    sh = res.get("validation_shape") or {}
    if sh:
        s = sh["auc"]
        lines.append(f"| score, shape features only | {f(s['separation_auc'])} | "
                     f"{s['with_truth']} | {s['without_truth']} | {f(s['mean_with_truth'])} / "
                     f"{f(s['mean_without_truth'])} |")
    c = res.get("comparison")
    if c:
        A, B = c["names"]["a"], c["names"]["b"]
        lines += ["", f"The two demo backbones compared (A = `{A}`, B = `{B}`, "
                      f"{c['explained']['a']} and {c['explained']['b']} features explained):", "",
                  "| map | held-out R² | features with R² ≥ 0.5 | "
                  "λ (× mean sq. singular value) |",
                  "|---|---|---|---|"]
        for m in c["maps"].values():
            lines.append(f"| {m['from']} → {m['to']} | {f(m['r2_test'], 3)} | "
                         f"{m['features_well_predicted']} of {m['features']} | "
                         f"{m['lambda_relative']:g} |")
        lines += ["", "| | A only | B only |", "|---|---|---|"]
        for key, what in (("only", "concepts encoded (a feature's top 3 words)"),
                          ("spurious_only", "removed as spurious")):
            cells = [", ".join(f"{x['concept']} ({len(x['features'])})" for x in c[key][s][:8])
                     or "–" for s in ("a", "b")]
            lines.append(f"| {what} | {cells[0]} | {cells[1]} |")
        t = c.get("reliance_tests") or {}
        lines += ["", f"What the activations show by themselves (the reliance test: among the "
                      f"probe images CLIP names a shared concept in, does the mean ROC AUC of its "
                      f"features for a companion also being named differ between the models? "
                      f"{t.get('tests', 0)} pairs tested, intervals simultaneous at 95 %, "
                      f"z = {f(t.get('z'))}; top 10 of {len(c.get('reliance', []))}):", "",
                  "| concept | companion | carried in | AUC A | AUC B | A − B [interval] | "
                  "images both / concept only |", "|---|---|---|---|---|---|---|"]
        for x in c.get("reliance", [])[:10]:
            lo, hi = x["difference_interval"]
            lines.append(f"| {x['concept']} | {x['companion']} | {c['names'][x['in']]} | "
                         f"{f(x['auc']['a'])} | {f(x['auc']['b'])} | {x['difference']:+.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}] | {x['images']['both_named']} / "
                         f"{x['images']['concept_only']} |")
    pl = res.get("planted")
    if pl:
        lines += ["", "The planted correlations through the same test (5 tests per row group, "
                      "simultaneous intervals); features from the explanations (what the summary "
                      "uses) and from the ground truth (the clear features of the source value):",
                  "", "| correlation | features from | features A / B | AUC A | AUC B | "
                      "A − B [interval] | shown as carried in |", "|---|---|---|---|---|---|---|"]
        for x in pl:
            fa, fb = len(x["features"]["a"]), len(x["features"]["b"])
            if "auc" not in x:
                lines.append(f"| {x['concept']} → {x['companion']} | {x['features_from']} | "
                             f"{fa} / {fb} | – | – | not tested | – |")
                continue
            lo, hi = x["difference_interval"]
            lines.append(f"| {x['concept']} → {x['companion']} | {x['features_from']} | "
                         f"{fa} / {fb} | {f(x['auc']['a'])} | {f(x['auc']['b'])} | "
                         f"{x['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                         f"{'A' if x['in'] == 'a' else 'B' if x['in'] == 'b' else 'neither'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m falcon_core.bench trust``: the faithfulness score's validation (the recovery
    benchmark's clear features) and the comparison of the two demo backbones."""
    import argparse
    import json
    import sys
    import time

    from ..compare import format_summary
    from ..demo.report import replace_block
    from ..errors import FalconError
    from ..progress import null_progress, tqdm_progress
    from .recovery import World, _score_rows

    p = argparse.ArgumentParser(
        prog="python -m falcon_core.bench trust",
        description="How far to trust an explanation (the faithfulness score, validated on the "
                    "demo world's clear features) and the comparison of the two demo backbones.")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default=None, help="also write the figures as JSON to this file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--skip-compare", action="store_true", help="only the validation")
    p.add_argument("--markdown", action="store_true", help="print the README's block")
    p.add_argument("--from-json", default=None, help="format a saved result instead of running")
    p.add_argument("--docs", action="store_true",
                   help=f"write {DOCS_JSON.relative_to(REPO)} and the README's '{BLOCK}' block")
    args = p.parse_args(argv)
    if args.docs and args.skip_compare:
        p.error("--docs needs the comparison: leave out --skip-compare")
    progress = null_progress if args.no_progress else tqdm_progress()
    if args.from_json:
        out = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        out = {"command": "python -m falcon_core.bench trust " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-progress")}
        t0 = time.perf_counter()
        try:
            # the recovery benchmark's full pipeline on its clear features (no ablations)
            W = World(None, 0, None, args.cache_dir, progress, None)
            feats = [t.feature for t in W.clear]
            cold = [("a", x) for x in feats
                    if W.falcon.explainer.cached_explanation(x, W.settings) is None]
            W.falcon.precompute(feats, W.settings)
            scored = _score_rows(W, W.explain_all(W.falcon, W.settings, "full"))
            out["seed"] = W.seed
            out["validation"] = validate(scored)
            out["validation_shape"] = shape_split(scored)
            out["validation"]["per_feature"] = [
                {k: x[k] for k in ("feature", "truth", "hit", "top_words", "faithfulness_auc",
                                   "faithfulness_spearman", "faithfulness_auc_removed")}
                for x in scored]
            print(f"Faithfulness on the demo world '{W.w.name}' (seed {W.seed}), "
                  f"{len(W.clear)} clear features:")
            print("\n".join(format_validation(out["validation"])))
            if not args.skip_compare:
                from ..compare import Comparison
                from ..workspace import WorkspaceConfig

                truths = {side: _truth_features(W.w, bb, args.cache_dir, progress)
                          for side, bb in (("a", W.cfg.backbone), ("b", "demo-uncorrelated"))}
                pending = Comparison.with_model_b(
                    W.falcon, WorkspaceConfig.demo().replace(backbone="demo-uncorrelated"))
                for side, f in pending.falcons.items():  # what the summary will explain
                    cold += [(side, x) for x in range(f.num_features)
                             if f.explainer.cached_explanation(x) is None
                             and (side, x) not in cold]
                res = run_demo_comparison(W.falcon, W.w, truths)
                s = res["summary"]
                out["comparison"] = s.to_dict()
                out["planted"] = res["planted"]
                print()
                print(format_summary(s))
        except FalconError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        out["cold_explanations"] = len(cold)
        out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.docs:
        args.out = args.out or str(DOCS_JSON)
        text = README.read_text(encoding="utf-8")
        try:
            new = replace_block(text, BLOCK, markdown(out), command=DOCS_COMMAND)
        except FalconError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if new != text:
            README.write_text(new, encoding="utf-8")
    if args.out and not args.from_json:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(f"saved {args.out}", file=sys.stderr)
    if args.markdown or args.from_json:
        print(markdown(out))
    return 0 if out.get("validation", {}).get("passes") else 1
