"""The Pairs and groups page's logic: which features are chosen (typed, a discovered group, a
link, a click on the co-activation heatmap), the heatmap itself, and the tables that compare a
group's concepts and top images with each feature's own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from falcon_core.errors import FalconError
from falcon_core.report import groups_hint_text
from falcon_core.settings import FalconSettings

from . import charts, errors, loaders, state

HEATMAP_MAX = 48  # features shown in the co-activation heatmap
EMPTY = "–"  # a concept missing from an explanation, in the comparison table
GROUP_KEY = "w:group"  # the discovered-group list
FEATURES_KEY = state.widget_key("features")
SETTING_NAMES = {"alpha_std": "k in α = mean + k·std", "top_k": "Top-k",
                 "quantile": "Quantile", "group_min_images": "images per group"}


# ------------------------------------------------------------------------- co-activation

@st.cache_data(show_spinner=False, max_entries=8)
def _coactivation(_falcon, config_items: tuple, settings_items: tuple) -> np.ndarray:
    return np.asarray(_falcon.coactivation(None, FalconSettings(**dict(settings_items))),
                      dtype=np.float32)


def coactivation(falcon, settings: FalconSettings) -> np.ndarray:
    """How often every two features are high together (Jaccard of their high sets)."""
    return _coactivation(falcon, state.config_key(falcon.config or state.workspace()),
                         state.settings_key(settings))


def _off_diagonal(M: np.ndarray) -> np.ndarray:
    M = np.array(M, dtype=np.float64)
    np.fill_diagonal(M, 0.0)
    return M


def heatmap_features(M: np.ndarray, most: int = HEATMAP_MAX) -> list[int]:
    """The features most often high together with another one (a row of zeros says nothing,
    and under a per-feature rule every feature has as many images, so that cannot choose), at
    most ``most``, in feature order."""
    best = _off_diagonal(M).max(axis=1) if len(M) else np.zeros(0)
    order = [int(f) for f in np.argsort(-best, kind="stable") if best[f] > 0][:most]
    return sorted(order)


def busiest_pair(M: np.ndarray) -> list[int] | None:
    """The two features most often high together (None when no two ever are)."""
    off = _off_diagonal(M)
    if off.size == 0 or off.max() <= 0:
        return None
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    return sorted([int(i), int(j)])


def rule_text(settings: FalconSettings) -> str:
    """What puts an image in a feature's set T, in words (the groups' signatures use it too)."""
    if settings.high_rule == "topk":
        return f"among the top {settings.top_k} images of"
    if settings.high_rule == "quantile":
        return f"above the {settings.quantile:g} quantile of"
    return "above α on"


def empty_hint(falcon, settings: FalconSettings) -> str:
    """Why no group was discovered, and the one-setting changes that would give some."""
    hints = errors.or_none(falcon.groups_hint, settings) or []
    return (groups_hint_text(hints, settings, lambda s: SETTING_NAMES.get(s, s))
            + " The method settings are on the Setup page.")


# ------------------------------------------------------------------------- the choice

def _apply_group(groups: list, g: int) -> None:
    feats = list(groups[g][0])
    state.put("features", feats)
    state.put("group", int(g))
    st.session_state[FEATURES_KEY] = state.format_ints(feats)
    st.session_state["_group_applied"] = int(g)


def chosen_features(falcon, settings: FalconSettings, groups: list) -> list[int] | None:
    """The text box of features and the list of discovered groups; returns the chosen features
    (checked against the backbone), or None after saying what is wrong."""
    g = state.get("group")
    if g is not None and st.session_state.get("_group_applied") != g:
        if 0 <= g < len(groups):  # a link naming a group: its features
            _apply_group(groups, g)
        else:
            st.warning(f"There is no discovered group {g} (there are {len(groups)}).")
            state.put("group", None)
            st.session_state.pop(GROUP_KEY, None)
            st.session_state["_group_applied"] = g
    feats = state.get("features")
    if not feats:
        feats = (list(groups[0][0]) if groups else
                 busiest_pair(coactivation(falcon, settings)) or [0, 1])
        state.put("features", feats)
    state.seed_widget(FEATURES_KEY, state.format_ints(feats))
    if state.get("group") is not None:
        state.seed_widget(GROUP_KEY, state.get("group"))

    def picked() -> None:
        choice = st.session_state.get(GROUP_KEY)
        if choice is not None and 0 <= choice < len(groups):
            _apply_group(groups, choice)

    c1, c2 = st.columns([2, 3])
    with c1:
        text = st.text_input("Features (two or more, separated by commas)", key=FEATURES_KEY,
                             help="For example 3,9 or 3,9,12.")
    with c2:
        st.selectbox(
            f"…or a discovered group ({len(groups)} found: images {rule_text(settings)} "
            f"exactly these features, at least {settings.group_min_images} images)",
            options=list(range(len(groups))), index=None, key=GROUP_KEY,
            format_func=lambda i: f"features {state.format_ints(groups[i][0])} · "
                                  f"{groups[i][1]} images",
            on_change=picked, placeholder="Choose a group" if groups else
            "No group with these settings (see below)")
    if not groups:
        st.info(empty_hint(falcon, settings), icon=":material/lightbulb:")
    try:
        feats = state.parse_ints(text, "features")
    except FalconError as e:
        errors.show_falcon_error(e)
        return None
    if len(feats) > state.MAX_GROUP:
        st.warning(f"Only the first {state.MAX_GROUP} features are used.")
        feats = feats[: state.MAX_GROUP]
    state.put("features", feats)
    g = state.get("group")
    if g is not None and (g >= len(groups) or list(groups[g][0]) != feats):
        state.put("group", None)  # typed features that are not the chosen group
    try:
        falcon.features(feats)
    except FalconError as e:
        errors.show_falcon_error(e)
        return None
    if len(feats) < 2:
        st.warning("A group needs at least two features; showing one feature. "
                   f"Add another number, e.g. {feats[0]},{(feats[0] + 1) % falcon.num_features}.")
    return feats


def heatmap(falcon, settings: FalconSettings, feats: list[int], expanded: bool) -> None:
    """The co-activation heatmap of the features that are high together; a click on a cell
    chooses that pair."""
    with st.expander("Co-activation heatmap (helps choose pairs)", expanded=expanded):
        M = coactivation(falcon, settings)
        shown = heatmap_features(M)
        if len(shown) < 2:
            st.info("No two features are high on the same images with these settings, so there "
                    "is nothing to map (what to change is said above).")
            return
        hf = sorted(set(shown) | set(feats))
        fig = charts.coactivation_heatmap(M[np.ix_(hf, hf)], hf,
                                          f"How often features are high together ({len(shown)} "
                                          f"features that are; click a cell to pick the pair)")
        event = st.plotly_chart(fig, key="coact", on_select="rerun", selection_mode="points",
                                width="stretch")
        try:
            points = event["selection"]["points"]
        except (KeyError, TypeError):
            points = []
        if points and points[0].get("x") is not None:
            pair = [int(points[0].get("y")), int(points[0].get("x"))]
            if pair[0] != pair[1] and st.session_state.get("_coact_seen") != pair:
                st.session_state["_coact_seen"] = pair
                state.put("features", pair)
                state.put("group", None)
                st.session_state.pop(FEATURES_KEY, None)
                st.rerun()


# ------------------------------------------------------------------------- the comparison

def singles(falcon, feats: list[int], settings: FalconSettings) -> dict[int, Any]:
    """Each feature's own explanation (None where it has none)."""
    return {f: loaders.explain(falcon, f, settings, what=f"Feature {f} could not be explained")
            for f in feats}


def concept_table(group_exp, single: dict[int, Any]) -> pd.DataFrame:
    """The group's kept words against each feature's own Word Scores, best for the group first;
    a dash where a concept is not among that explanation's kept words. The scores are text with
    three decimals (the grid shows a missing number as "None", whatever a Styler says), which
    still sorts as the numbers do."""
    rows: dict[str, dict] = {}
    for c in group_exp.words:
        rows.setdefault(c.text, {"concept": c.text})["group"] = c.score
    for f, e in single.items():
        for c in (e.words if e is not None else []):
            rows.setdefault(c.text, {"concept": c.text})[f"feature {f}"] = c.score
    cols = ["concept", "group"] + [f"feature {f}" for f in single]
    table = pd.DataFrame(list(rows.values())).reindex(columns=cols)
    table = table.sort_values("group", ascending=False, na_position="last")
    for col in cols[1:]:
        table[col] = [EMPTY if v != v else f"{v:.3f}" for v in table[col]]
    return table


def overlap(group_exp, single: dict[int, Any]) -> tuple[pd.DataFrame, str | None, str]:
    """How the features' top images overlap with each other's and with the group's:
    ``(table, Jaccard index or None, its explanation)``."""
    sets = {f: {r.index for r in e.high} for f, e in single.items() if e is not None}
    group_set = {r.index for r in group_exp.high}
    rows = [{"features": f"feature {f}", "high images": len(s),
             "shared with the group": len(s & group_set)} for f, s in sets.items()]
    jaccard, why = None, ""
    if len(sets) >= 2:
        inter, union = set.intersection(*sets.values()), set.union(*sets.values())
        rows.append({"features": "all of them", "high images": len(inter),
                     "shared with the group": len(inter & group_set)})
        jaccard = f"{len(inter) / len(union):.2f}" if union else "–"
        why = f"{len(inter)} images are high for every feature, of {len(union)} high for any."
    rows.append({"features": "the group (T)", "high images": len(group_set),
                 "shared with the group": len(group_set)})
    return pd.DataFrame(rows), jaccard, why
