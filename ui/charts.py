"""Plotly figures of the app (kept free of Streamlit calls so they can be tested alone)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

T_COLOUR = "#1f77b4"
L_COLOUR = "#ff7f0e"
REMOVED_COLOUR = "#d62728"


def concept_bars(concepts: Sequence, title: str, show_l: bool = True,
                 threshold: float | None = None, colour: str = T_COLOUR) -> go.Figure:
    """Horizontal bars of concepts (best on top): T score and, as a second series, L score.

    ``concepts``: objects with ``text``, ``score`` and ``l_score`` (falcon_core Concept).
    Each bar's ``customdata`` is the concept text, so a click selects it.
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
        fig.add_vline(x=threshold, line_dash="dash", line_color=REMOVED_COLOUR,
                      annotation_text=f"removal threshold {threshold:g}",
                      annotation_position="top")
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), barmode="group",
                      height=max(240, 90 + 34 * len(items)),
                      margin=dict(l=10, r=10, t=70, b=10), clickmode="event+select",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
                      yaxis=dict(automargin=True))
    return fig


def histogram(values: np.ndarray, alpha: float | None, epsilon: float | None,
              title: str = "Activation histogram", high_threshold: float | None = None,
              high_label: str | None = None) -> go.Figure:
    """Histogram of one feature's (normalised) activations with α and ε marked."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    fig = go.Figure()
    fig.add_histogram(x=values, nbinsx=60, marker_color="#7f7f7f", name="images")
    if alpha is not None and np.isfinite(alpha):
        fig.add_vline(x=alpha, line_color="#2ca02c", line_dash="dash",
                      annotation_text=f"α = {alpha:.3g} (global)", annotation_position="top right")
    if high_threshold is not None and np.isfinite(high_threshold) and high_threshold != alpha:
        fig.add_vline(x=high_threshold, line_color="#1f77b4", line_dash="dot",
                      annotation_text=high_label or f"T threshold {high_threshold:.3g}",
                      annotation_position="bottom right")
    if epsilon is not None and np.isfinite(epsilon):
        fig.add_vline(x=epsilon, line_color="#d62728", line_dash="dash",
                      annotation_text=f"ε = {epsilon:.3g}", annotation_position="top left")
    fig.update_layout(title=title, height=280, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="normalised activation", yaxis_title="images", yaxis_type="log",
                      showlegend=False)
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
