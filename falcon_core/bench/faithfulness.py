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
