"""Does the faithfulness score mean something? Its validation on the demo world (issue 12).

Over the clear features of the recovery benchmark (:mod:`.recovery`), the score of each
explanation's kept concepts should separate the explanations whose top-3 words hold the ground
truth from those that do not: :func:`validate` reports the ROC AUC of the score for that split
(target ≥ 0.8), with both counts. The same for Spearman's ρ, and the mean score of each side.
"""

from __future__ import annotations

import math
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
def run_demo_comparison(cache_dir: str | None = None, progress=None,
                        features: list[int] | None = None) -> dict[str, Any]:
    """The summary of the default demo backbone (A) against the one trained without the planted
    correlations (B), both seen through the demo CLIP, probe set and vocabulary."""
    from ..compare import Comparison
    from ..workspace import WorkspaceConfig

    a = WorkspaceConfig.demo()
    cmp = Comparison.from_configs(a, a.replace(backbone="demo-uncorrelated"), cache_dir=cache_dir,
                                  progress=progress)
    return {"summary": cmp.summary(features, features)}


def main(argv=None) -> int:
    """``python -m falcon_core.bench trust``: the faithfulness score's validation (the recovery
    benchmark's clear features) and the comparison of the two demo backbones."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from ..compare import format_summary
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
    args = p.parse_args(argv)
    progress = null_progress if args.no_progress else tqdm_progress()
    out: dict[str, Any] = {}
    try:
        # the recovery benchmark's full pipeline on its clear features (no ablations)
        W = World(None, 0, None, args.cache_dir, progress, None)
        scored = _score_rows(W, W.explain_all(W.falcon, W.settings, "full"))
        validation = validate(scored)
        out["validation"] = validation
        out["validation"]["per_feature"] = [
            {k: f[k] for k in ("feature", "truth", "hit", "top_words", "faithfulness_auc",
                               "faithfulness_spearman", "faithfulness_auc_removed")}
            for f in scored]
        print(f"Faithfulness on the demo world '{W.w.name}' (seed {W.seed}), "
              f"{len(W.clear)} clear features:")
        print("\n".join(format_validation(validation)))
        if not args.skip_compare:
            s = run_demo_comparison(cache_dir=args.cache_dir, progress=progress)["summary"]
            out["comparison"] = s.to_dict()
            print()
            print(format_summary(s))
    except FalconError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"saved {args.out}", file=sys.stderr)
    return 0 if out.get("validation", {}).get("passes") else 1
