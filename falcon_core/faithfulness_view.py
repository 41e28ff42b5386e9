"""The faithfulness score (issue 12) as text: one function each for the command line, the app's
badge and the report, so all three say the same thing.

``summary_line(exp)``: "faithfulness: AUC 0.93, ρ 0.41 (top 50 of 5000 images by the concepts)
...; removed concepts: AUC 0.71". ``badge(exp)``: a short label and a colour for the app.
``concept_auc(exp, text)``: one concept's AUC, formatted. ``report_html(exp)``: an HTML snippet
for the stakeholder report.
"""

from __future__ import annotations

import html
from typing import Any

# Where the badge turns from red to amber to green (AUC of the kept concepts). 0.5 is chance; an
# explanation whose words pick out images that activate the feature in 9 of 10 pairs is "high".
HIGH, MEDIUM = 0.9, 0.7


def _num(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def level(auc: float | None) -> str:
    """"high", "medium", "low", or "n/a"."""
    if auc is None:
        return "n/a"
    return "high" if auc >= HIGH else "medium" if auc >= MEDIUM else "low"


def concept_auc(exp, text: str) -> str:
    f = getattr(exp, "faithfulness", None)
    v = _num(f.per_concept.get(text)) if f is not None else None
    return "–" if v is None else f"{v:.2f}"


def summary_line(exp) -> str:
    f = getattr(exp, "faithfulness", None)
    if f is None:
        return "faithfulness: not computed (explanation made by an older version)"
    if f.kept is None:
        return "faithfulness: no concept kept"
    auc, rho = _num(f.kept.auc), _num(f.kept.spearman)
    text = (f"faithfulness: AUC {'–' if auc is None else f'{auc:.2f}'} ({level(auc)}), "
            f"ρ {'–' if rho is None else f'{rho:.2f}'} (top {f.kept.k} of {f.kept.n_images} "
            f"probe images by {', '.join(f.kept.concepts)})")
    if f.removed is not None:
        r = _num(f.removed.auc)
        text += f"; removed concepts: AUC {'–' if r is None else f'{r:.2f}'}"
    return text


def badge(exp) -> tuple[str, str, str]:
    """(label, colour name, help text) of the kept concepts' score, for a badge in the app."""
    f = getattr(exp, "faithfulness", None)
    auc = _num(f.kept.auc) if f is not None and f.kept is not None else None
    colour = {"high": "green", "medium": "orange", "low": "red", "n/a": "gray"}[level(auc)]
    label = "faithfulness –" if auc is None else f"faithfulness {auc:.2f}"
    return label, colour, (summary_line(exp) + ". " + (f.method if f is not None else "")).strip()


def report_html(exp) -> str:
    """A small HTML snippet for the report: the badge's text (with its level) and, as a tooltip,
    the whole line and the method. No script, no style attribute, no request."""
    label, _colour, help_text = badge(exp)
    f = getattr(exp, "faithfulness", None)
    auc = _num(f.kept.auc) if f is not None and f.kept is not None else None
    return (f'<span class="faithfulness {level(auc)}" title="{html.escape(help_text)}">'
            f'{html.escape(label)} ({level(auc)})</span>')
