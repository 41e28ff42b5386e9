"""Pairs and groups: a group's concepts against those of each of its features alone."""

import numpy as np
import pandas as pd
import streamlit as st

from falcon_core.errors import FalconError
from ui import charts, errors, loaders, shell, state, views

HEATMAP_MAX = 48  # features shown in the co-activation heatmap


def _heatmap_features(fb, settings) -> list[int]:
    """Every feature, or the HEATMAP_MAX features most often high together with another one
    (under a per-feature rule every feature has the same number of images, so that number
    cannot choose)."""
    r = fb.num_features
    if r <= HEATMAP_MAX:
        return list(range(r))
    M = errors.attempt(fb.coactivation, None, settings)[0]
    if M is None:
        return list(range(HEATMAP_MAX))
    M = np.array(M, dtype=np.float64)
    np.fill_diagonal(M, 0.0)
    order = np.argsort(-M.max(axis=1), kind="stable")[:HEATMAP_MAX]
    return sorted(int(f) for f in order)


def _rule_text(settings) -> str:
    """What puts an image in a feature's set T, in words (the groups' signatures use it too)."""
    if settings.high_rule == "topk":
        return f"among the top {settings.top_k} images of"
    if settings.high_rule == "quantile":
        return f"above the {settings.quantile:g} quantile of"
    return "above α on"


def _default_features(fb, groups, settings) -> list[int]:
    """The first discovered group, else the pair of busy features most often high together."""
    if groups:
        return list(groups[0][0])
    feats = _heatmap_features(fb, settings)
    M = errors.attempt(fb.coactivation, feats, settings)[0]
    if M is None or len(feats) < 2:
        return [0, 1]
    M = np.array(M, dtype=np.float64)
    np.fill_diagonal(M, -1.0)
    i, j = np.unravel_index(int(np.argmax(M)), M.shape)
    return sorted([int(feats[i]), int(feats[j])])


def _picked_from_group() -> None:
    choice = st.session_state.get("w:group")
    groups = st.session_state.get("_groups_cache") or []
    if choice is not None and 0 <= choice < len(groups):
        feats = list(groups[choice][0])
        state.put("features", feats)
        state.put("group", int(choice))
        st.session_state[state.widget_key("features")] = state.format_ints(feats)
        st.session_state["_group_applied"] = int(choice)


def main() -> None:
    st.title("Pairs and groups")
    st.caption("Single features often explain little; pairs and groups of features are often more "
               "interpretable. Pick two or more features, or a group discovered from images that "
               "activate exactly those features, and compare the group's concepts with each "
               "feature's own.")
    opened = views.open_page("features", "group")
    if opened is None:
        return
    fb, settings = opened
    groups = errors.call(loaders.groups, fb, settings, what="Groups could not be discovered") or []
    st.session_state["_groups_cache"] = groups

    g = state.get("group")
    if g is not None and st.session_state.get("_group_applied") != g:
        st.session_state["_group_applied"] = g
        if 0 <= g < len(groups):  # a link naming a group: its features
            state.put("features", list(groups[g][0]))
            st.session_state.pop(state.widget_key("features"), None)
        else:
            st.warning(f"There is no discovered group {g} (there are {len(groups)}).")
            state.put("group", None)
            st.session_state.pop("w:group", None)
    feats = state.get("features")
    if not feats:
        feats = _default_features(fb, groups, settings)
        state.put("features", feats)
    state.seed_widget(state.widget_key("features"), state.format_ints(feats))
    if state.get("group") is not None:
        state.seed_widget("w:group", state.get("group"))

    c1, c2 = st.columns([2, 3])
    with c1:
        text = st.text_input("Features (two or more, separated by commas)",
                             key=state.widget_key("features"), help="For example 3,9 or 3,9,12.")
    with c2:
        st.selectbox(
            f"…or a discovered group ({len(groups)} found: images {_rule_text(settings)} "
            f"exactly these features, at least {settings.group_min_images} images)",
            options=list(range(len(groups))), index=None, key="w:group",
            format_func=lambda g: f"features {state.format_ints(groups[g][0])} · "
                                  f"{groups[g][1]} images",
            on_change=_picked_from_group, placeholder="Choose a group" if groups else
            "No group passes the rule with these settings")
    try:
        feats = state.parse_ints(text, "features")
    except FalconError as e:
        errors.show_falcon_error(e)
        return
    if len(feats) > state.MAX_GROUP:
        st.warning(f"Only the first {state.MAX_GROUP} features are used.")
        feats = feats[: state.MAX_GROUP]
    state.put("features", feats)
    g = state.get("group")
    if g is not None and (g >= len(groups) or list(groups[g][0]) != feats):
        state.put("group", None)  # typed features that are not the chosen group
    try:
        fb.features(feats)
    except FalconError as e:
        errors.show_falcon_error(e)
        st.info(f"**What to do:** use feature numbers between 0 and {fb.num_features - 1}.")
        return
    if len(feats) < 2:
        st.warning("A group needs at least two features; showing one feature. "
                   "Add another number, e.g. " + f"{feats[0]},{(feats[0] + 1) % fb.num_features}.")

    with st.expander("Co-activation heatmap (helps choose pairs)", expanded=len(groups) == 0):
        hf = sorted(set(_heatmap_features(fb, settings)) | set(feats))
        M = errors.call(fb.coactivation, hf, settings, what="Co-activation")
        if M is not None:
            fig = charts.coactivation_heatmap(M, hf, "How often features are high together "
                                                      "(click a cell to pick the pair)")
            event = st.plotly_chart(fig, key="coact", on_select="rerun",
                                    selection_mode="points", width="stretch")
            pts = []
            try:
                pts = event["selection"]["points"]
            except (KeyError, TypeError):
                pass
            if pts:
                p = pts[0]
                pair = [int(p.get("y")), int(p.get("x"))] if p.get("x") is not None else None
                if pair and pair[0] != pair[1] and st.session_state.get("_coact_seen") != pair:
                    st.session_state["_coact_seen"] = pair
                    state.put("features", pair)
                    state.put("group", None)
                    st.session_state.pop(state.widget_key("features"), None)
                    st.rerun()

    label = "group " + " + ".join(map(str, feats))
    if views.no_high_images(fb, feats, settings):
        return
    group_exp = loaders.explain(fb, feats, settings, what=f"The {label} could not be explained")
    singles = {}
    for f in feats:
        singles[f] = errors.attempt(fb.cached_explanation, f, settings)[0] or \
            loaders.explain(fb, f, settings, what=f"Feature {f} could not be explained")
    if group_exp is None:
        return

    st.subheader(f"Features {' + '.join(map(str, feats))}: "
                 + (", ".join(group_exp.top_concepts(5)) or "no concepts kept"))
    views.summary(group_exp)

    st.markdown("#### The group's concepts against each feature alone")
    rows: dict[str, dict] = {}
    for c in group_exp.words:
        rows.setdefault(c.text, {"concept": c.text})["group"] = round(c.score, 3)
    for f, e in singles.items():
        if e is None:
            continue
        for c in e.words:
            rows.setdefault(c.text, {"concept": c.text})[f"feature {f}"] = round(c.score, 3)
    table = pd.DataFrame(list(rows.values()))
    cols = ["concept", "group"] + [f"feature {f}" for f in feats]
    table = table.reindex(columns=cols)
    st.dataframe(table.sort_values("group", ascending=False, na_position="last"),
                 hide_index=True, width="stretch")
    st.caption("Empty cell: the concept is not among that explanation's kept words.")

    chart_cols = st.columns(len(feats) + 1)
    with chart_cols[0]:
        st.plotly_chart(charts.concept_bars(group_exp.words, "Group", show_l=False),
                        key="group_words", width="stretch")
    for col, f in zip(chart_cols[1:], feats):
        with col:
            e = singles.get(f)
            if e is None or not e.words:
                st.info(f"Feature {f}: no kept words.")
            else:
                st.plotly_chart(charts.concept_bars(e.words, f"Feature {f} alone", show_l=False,
                                                    colour="#9467bd"),
                                key=f"single_words_{f}", width="stretch")

    st.markdown("#### How their top images overlap")
    sets = {f: {r.index for r in e.high} for f, e in singles.items() if e is not None}
    group_set = {r.index for r in group_exp.high}
    ov = []
    for f, s in sets.items():
        ov.append({"features": f"feature {f}", "high images": len(s),
                   "shared with the group": len(s & group_set)})
    if len(sets) >= 2:
        inter = set.intersection(*sets.values())
        union = set.union(*sets.values())
        ov.append({"features": "all of them", "high images": len(inter),
                   "shared with the group": len(inter & group_set)})
        st.metric("Overlap of their high images (Jaccard)",
                  f"{len(inter) / len(union):.2f}" if union else "–",
                  help=f"{len(inter)} images are high for every feature, of {len(union)} high "
                       "for any.")
    ov.append({"features": "the group (T)", "high images": len(group_set),
               "shared with the group": len(group_set)})
    st.dataframe(pd.DataFrame(ov), hide_index=True)

    views.high_images(fb, group_exp, settings, key="group_high")
    with st.expander("The group's counterfactual images (all group features low)"):
        views.low_images(fb, group_exp, key="group_low")
    views.exports(group_exp, key="group")


shell.page(main)
