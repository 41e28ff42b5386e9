"""Plotly figures of the app (kept free of Streamlit calls so they can be tested alone)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

T_COLOUR = "#1f77b4"
L_COLOUR = "#ff7f0e"
REMOVED_COLOUR = "#d62728"


def _legend_line(fig: go.Figure, name: str, colour: str, dash: str) -> None:
    """A legend entry for a reference line drawn with ``add_vline`` (lines carry no label over
    the data: a label on the plot covers bars and collides with the legend)."""
    fig.add_scatter(x=[None], y=[None], mode="lines", name=name, hoverinfo="skip",
                    line=dict(color=colour, dash=dash, width=2))


def concept_bars(concepts: Sequence, title: str, show_l: bool = True,
                 threshold: float | None = None, colour: str = T_COLOUR) -> go.Figure:
    """Horizontal bars of concepts (best on top): T score and, as a second series, L score.

    ``concepts``: objects with ``text``, ``score`` and ``l_score`` (falcon_core Concept).
    Each bar's ``customdata`` is the concept text, so a click selects it. ``threshold``: the
    removal threshold, a dashed line named in the legend.
    """
    items = list(concepts)[::-1]
    texts = [c.text for c in items]
    fig = go.Figure()
    fig.add_bar(y=texts, x=[c.score for c in items], orientation="h", name="T score (high images)",
                marker_color=colour, customdata=texts,
                hovertemplate="%{y}<br>T score %{x:.3f}<extra></extra>")
    if show_l:
        fig.add_bar(y=texts, x=[c.l_score for c in items], orientation="h",
                    name="L score (counterfactuals)", marker_color=L_COLOUR, customdata=texts,
                    hovertemplate="%{y}<br>L score %{x:.3f}<extra></extra>")
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color=REMOVED_COLOUR)
        _legend_line(fig, f"removal threshold {threshold:g}", REMOVED_COLOUR, "dash")
    # Fixed margins, wide enough for the longest label and the legend above the bars: with
    # plotly's automatic margins the browser lays each chart out twice on every draw, a third
    # of its time on every choice of a feature (issue 9).
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), barmode="group",
                      height=max(240, 90 + 34 * len(items)),
                      margin=dict(l=label_margin(texts), r=10, t=70, b=30, autoexpand=False),
                      clickmode="event+select",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0,
                                  xref="container"),
                      yaxis=dict(automargin=False))
    return fig


LABEL_PX_PER_CHAR = 6  # plotly's 12 px tick font: about 5.5 px per character, rounded up
LABEL_MARGIN_MAX = 320


def label_margin(labels: Sequence[str]) -> int:
    """The left margin (pixels) that holds the longest of ``labels`` at plotly's tick font, plus
    the tick's gap; at most :data:`LABEL_MARGIN_MAX` (a longer label is cut at its start)."""
    longest = max((len(str(t)) for t in labels), default=0)
    return int(min(LABEL_MARGIN_MAX, 16 + LABEL_PX_PER_CHAR * longest))


def log_ticks(top: float) -> list[int]:
    """Powers of ten from 1 up to the first one at or above ``top`` (a log axis' ticks)."""
    ticks = [1]
    while ticks[-1] < top:
        ticks.append(ticks[-1] * 10)
    return ticks


def histogram(values: np.ndarray, alpha: float | None, epsilon: float | None,
              title: str = "Activation histogram", high_threshold: float | None = None,
              high_label: str | None = None, bins: int = 60) -> go.Figure:
    """Histogram of one feature's (normalised) activations with α, ε and the rule's threshold
    for T as lines named in the legend. Counts on a log axis ticked at powers of ten, with room
    above the tallest bar."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=bins) if len(values) else (np.zeros(0), [0.0, 1.0])
    fig = go.Figure()
    fig.add_bar(x=(np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2, y=counts,
                width=float(edges[1] - edges[0]), marker_color="#7f7f7f", name="images",
                showlegend=False,
                hovertemplate="activation %{x:.3f}<br>%{y} images<extra></extra>")
    lines = [(alpha, "#2ca02c", "dash", f"α = {alpha:.3g} (global)" if alpha is not None else ""),
             (high_threshold if high_threshold != alpha else None, "#1f77b4", "dot",
              high_label or (f"T threshold {high_threshold:.3g}" if high_threshold is not None
                             else "")),
             (epsilon, "#d62728", "dash", f"ε = {epsilon:.3g}" if epsilon is not None else "")]
    for x, colour, dash, name in lines:
        if x is not None and np.isfinite(x):
            fig.add_vline(x=x, line_color=colour, line_dash=dash)
            _legend_line(fig, name, colour, dash)
    top = float(counts.max()) if len(counts) and counts.max() > 0 else 1.0
    ticks = log_ticks(top)
    fig.update_layout(
        title=title, height=300, margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title="normalised activation", bargap=0,
        yaxis=dict(title="images", type="log", range=[-0.1, np.log10(top) + 0.25],
                   tickvals=ticks, ticktext=[str(t) for t in ticks]),
        legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
    return fig


def coactivation_heatmap(matrix: np.ndarray, features: Sequence[int],
                         title: str = "Co-activation of the features") -> go.Figure:
    labels = [str(f) for f in features]
    m = np.asarray(matrix, dtype=np.float64)
    fig = go.Figure(go.Heatmap(z=m, x=labels, y=labels, colorscale="Viridis",
                               hovertemplate="features %{y} & %{x}<br>%{z:.3f}<extra></extra>"))
    size = min(900, max(320, 14 * len(labels) + 120))
    fig.update_layout(title=title, height=size, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(type="category", title="feature"),
                      yaxis=dict(type="category", title="feature", autorange="reversed"))
    return fig


def contributions(items: Sequence[dict], title: str, colour: str = T_COLOUR) -> go.Figure:
    """Bars of feature contributions (h_j ∘ U_c) toward one class."""
    items = list(items)[::-1]
    labels = [f"feature {it['feature']}" for it in items]
    fig = go.Figure(go.Bar(y=labels, x=[it["contribution"] for it in items], orientation="h",
                           marker_color=colour,
                           customdata=[it["feature"] for it in items],
                           hovertemplate="%{y}<br>contribution %{x:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=max(200, 60 + 30 * len(items)),
                      margin=dict(l=10, r=10, t=40, b=10), xaxis_title="h · U (contribution)")
    return fig
