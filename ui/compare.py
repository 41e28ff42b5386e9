"""The "Compare models" page's logic (issue 12): model B's choices, the cached comparison, and
the parts of the page (maps, one feature side by side, the summary).

Model A is the workspace; model B is the same workspace with another backbone, chosen among the
Setup page's backbone presets that need no file (a link carries the preset's registered name,
``model_b=demo-uncorrelated``, never a path: ui/links.py's policy).
"""

from __future__ import annotations

import streamlit as st

from falcon_core.workspace import WorkspaceConfig

from . import errors, loaders, presets, state

DEFAULT_B = "demo-uncorrelated"


def model_b_choices() -> dict[str, presets.Preset]:
    """Registered backbone name -> its Setup preset, for every preset that names no file."""
    out: dict[str, presets.Preset] = {}
    for p in presets.BACKBONES:
        name = p.fields.get("backbone")
        if name and not p.path and not p.custom and name not in out:
            out[name] = p
    return out


def config_b(config_a: WorkspaceConfig, name: str) -> WorkspaceConfig:
    """Model B's workspace: A's with the preset's backbone fields (and the default layer)."""
    p = model_b_choices()[name]
    return config_a.replace(backbone=name, weights=p.fields.get("weights"), layer=None,
                            class_names=None)


@st.cache_resource(show_spinner=False, max_entries=2)
def _comparison(config_items: tuple, name_b: str, cache_dir: str):
    from falcon_core.compare import Comparison
    from falcon_core.pipeline import Falcon

    from .progress import ProgressRouter

    config_a = WorkspaceConfig.from_dict(dict(config_items))
    a = loaders._build_falcon(config_items, cache_dir)
    cb = config_b(config_a, name_b)
    b = Falcon(cb.build_backbone(), a.clip, a.probe, a.vocabulary,
               settings=cb.default_settings(), cache=a.cache, progress=ProgressRouter(),
               config=cb)
    return Comparison(a, b, names=(f"A ({config_a.backbone})", f"B ({name_b})"))


def comparison(name_b: str):
    """The comparison of the workspace with model B, or None after saying why there is none."""
    config_a = state.workspace()
    with st.spinner(f"Opening model B ({name_b})…"):
        cmp = errors.call(_comparison, state.config_key(config_a), name_b, loaders.cache_root(),
                          what=f"Model B ({name_b}) could not be opened")
    if cmp is None:
        st.info("**What to do:** choose another model B, or rebuild the demo assets "
                "(`python -m falcon_core.demo build`) if the demo's second backbone is missing.",
                icon=":material/lightbulb:")
        return None
    # model B's Stage 1 (the first time), under a bar with the time left, outside the cache
    b = cmp.falcons["b"]
    if errors.call(loaders.ensure_prepared, b, f"Preparing model B ({name_b}):", b.settings,
                   what=f"Model B ({name_b}) could not be prepared") is None:
        return None
    return cmp


def pick_model_b() -> str:
    """Model B's selector (its registered name is kept in the URL as ``model_b``)."""
    choices = model_b_choices()
    current = state.get("model_b")
    if current not in choices:
        if current is not None:
            st.warning(f"Ignored model_b={str(current)[:40]!r} in the link: model B is one of "
                       f"{', '.join(choices)}.", icon=":material/link_off:")
        current = DEFAULT_B if DEFAULT_B in choices else next(iter(choices))
    names = list(choices)
    wkey = state.widget_key("model_b")
    state.seed_widget(wkey, current)
    name = st.selectbox("Model B (model A is the workspace's backbone)", names, key=wkey,
                        format_func=lambda n: choices[n].label)
    state.put("model_b", name)
    return name


def maps(cmp) -> None:
    report = errors.call(cmp.map_report, what="The linear maps could not be fitted")
    if report is None:
        return
    cols = st.columns(len(report))
    for col, (key, m) in zip(cols, report.items()):
        r2 = m["r2_test"]
        col.metric(f"{m['from']} → {m['to']}: held-out R²", "–" if r2 is None else f"{r2:.3f}",
                   help=f"Ridge map fitted on {m['images']['fit']} images; λ = "
                        f"{m['lambda_relative']:g} × the mean squared singular value of the "
                        f"centred input, chosen on {m['images']['choice']} other images; R² on "
                        f"{m['images']['test']} images used for neither.")
        col.caption(f"{m['features_well_predicted']} of {m['features']} features of {m['to']} "
                    "are predicted with R² ≥ 0.5.")


def _words(exp) -> str:
    if exp is None:
        return "(no explanation)"
    return ", ".join(c.text for c in exp.words[:5]) or "(no concepts kept)"


def _removed(exp) -> str:
    return "" if exp is None else ", ".join(c.text for c in exp.spurious_words[:4])


def side_by_side(cmp, feature: int, n: int = 3) -> None:
    """Feature ``feature`` of A, its explanation, and its best matches in B with theirs."""
    import pandas as pd

    from falcon_core.faithfulness_view import badge

    from .progress import progress_bar

    with progress_bar(cmp.falcons["a"], "Explaining the feature…"), \
            progress_bar(cmp.falcons["b"], "Explaining its matches…"):
        view = errors.call(cmp.side_by_side, "a", feature, n,
                           what=f"Feature {feature} could not be compared")
    if view is None:
        return
    m = view["match"]
    left, right = st.columns(2)
    with left, st.container(key="compare_a"):
        st.markdown(f"**{cmp.names['a']}, feature {feature}**")
        exp = view["explanation"]
        if exp is None:
            st.warning(view["error"] or "No explanation.")
        else:
            st.markdown(f"Concepts: {_words(exp)}")
            if exp.spurious_words:
                st.caption(f"Removed as spurious: {_removed(exp)}")
            label, colour, help_text = badge(exp)
            st.badge(label, color=colour, help=help_text)
        r2 = m.r2
        st.caption(f"{cmp.names['b']} predicts this feature with held-out R² "
                   f"{'–' if r2 != r2 else f'{r2:.3f}'} through the ridge map.")
    with right, st.container(key="compare_b"):
        st.markdown(f"**Best matches in {cmp.names['b']}**")
        rows = []
        corr = dict(m.by_correlation)
        weight = dict(m.by_map)
        for j in dict.fromkeys([j for j, _ in m.by_map] + [j for j, _ in m.by_correlation]):
            e, e_err = view["others"][j]
            rows.append({"feature": j,
                         "map weight": round(weight[j], 3) if j in weight else None,
                         "correlation": round(corr[j], 3) if j in corr else None,
                         "concepts": _words(e) if e is not None else f"({e_err})",
                         "removed as spurious": _removed(e),
                         "faithfulness": None if e is None or e.faithfulness_auc != e.faithfulness_auc
                         else round(e.faithfulness_auc, 3)})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="matches")
        st.caption("map weight: |W| × std(B feature) / std(A feature) in the ridge map B → A; "
                   "correlation: Pearson over the probe set.")


def summary(cmp) -> None:
    """The stakeholder summary. It needs every feature of both models explained: when they all
    are (a precompute, an earlier summary) it is shown at once; otherwise the page says how many
    are left and explains them on request, with a progress bar per model (resumable: each
    explanation is cached as soon as it is made)."""
    key = "compare_summary::" + "|".join(cmp.names.values())
    s = st.session_state.get(key)
    if s is None:
        todo = errors.call(cmp.to_explain, what="The cache could not be read")
        if todo is None:
            return
        left = {side: len(v) for side, v in todo.items()}
        if sum(left.values()):
            total = {side: f.num_features for side, f in cmp.falcons.items()}
            st.caption(f"The summary reads every feature's explanation of both models: "
                       f"{left['a']} of {total['a']} of {cmp.names['a']} and {left['b']} of "
                       f"{total['b']} of {cmp.names['b']} are not explained yet (`python -m "
                       f"falcon_core precompute` does the same ahead of time).")
            if not st.button(f"Explain the {sum(left.values())} features and summarise",
                             key="summarise"):
                return
        from .progress import progress_bar

        with progress_bar(cmp.falcons["a"], f"Explaining {cmp.names['a']}…"), \
                progress_bar(cmp.falcons["b"], f"Explaining {cmp.names['b']}…"), \
                st.spinner("Reading the explanations and what CLIP names in each image…"):
            s = errors.call(cmp.summary, what="The summary could not be made")
        if s is None:
            return
        st.session_state[key] = s
    show_summary(s)


def show_summary(s) -> None:
    import pandas as pd

    from falcon_core.compare import format_summary

    A, B = s.names["a"], s.names["b"]
    st.markdown(f"**{s.explained['a']} features of {A} and {s.explained['b']} of {B} explained.**")
    t = s.reliance_tests or {}
    st.markdown("##### What the activations show: a shared concept's features rise with a "
                "companion in one model only")
    st.caption(f"Among the probe images CLIP names the concept in, the ROC AUC of each of its "
               f"features for the companion being named too, averaged per model; the difference "
               f"on the same images with DeLong's interval. {t.get('tests', 0)} pairs tested; "
               f"shown where the interval (simultaneous at 95 %) excludes 0 and the carrying "
               f"model's own AUC is above 0.5.")
    rows = []
    for r in s.reliance:
        lo, hi = r["difference_interval"]
        rows.append({"concept": r["concept"], "rises with": r["companion"],
                     "in": s.names[r["in"]], f"AUC {A}": r["auc"]["a"],
                     f"AUC {B}": r["auc"]["b"], "A − B": r["difference"],
                     "interval": f"[{lo:+.3f}, {hi:+.3f}]",
                     "images (both / concept only)":
                         f"{r['images']['both_named']} / {r['images']['concept_only']}"})
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="reliance")
    else:
        st.info("No shared concept's features rise with a companion in one model only.")
    rows = []
    for r in s.companions:
        side = r["in"]
        rows.append({"concept": r["concept"], "carries": r["companion"],
                     "in": s.names[side],
                     f"share in {A}": r["share"]["a"], f"share in {B}": r["share"]["b"],
                     "removed as spurious": r["removed"][side], "kept": r["kept"][side]})
    st.markdown("##### What the explanations of a shared concept's features carry along in one "
                "model only")
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="companions")
    else:
        st.info("The features of every shared concept carry the same concepts in both models.")
    c1, c2 = st.columns(2)
    for col, side in ((c1, "a"), (c2, "b")):
        other = "b" if side == "a" else "a"
        with col:
            st.markdown(f"##### {s.names[side]} encodes, {s.names[other]} does not")
            st.dataframe(pd.DataFrame([{"concept": r["concept"], "features": len(r["features"])}
                                       for r in s.only[side]], columns=["concept", "features"]),
                         hide_index=True, width="stretch", key=f"only_{side}")
            st.markdown(f"##### Removed as spurious in {s.names[side]} only")
            st.dataframe(pd.DataFrame([{"concept": r["concept"], "features": len(r["features"])}
                                       for r in s.spurious_only[side]],
                                      columns=["concept", "features"]),
                         hide_index=True, width="stretch", key=f"spurious_only_{side}")
    st.download_button("Download the summary (text)", format_summary(s),
                       file_name="falcon_compare.txt", mime="text/plain", key="dl_compare")


def run() -> None:
    """The whole page (pages/compare_models.py calls it)."""
    from . import views

    opened = views.open_page(
        "Compare models",
        "Model A is the workspace's backbone; model B another one, seen through the same probe "
        "set, CLIP model and vocabulary. A ridge map is fitted from each representation to the "
        "other (λ chosen on held-out images, R² on others); each feature of A is matched to B's "
        "features by the map and by activation correlation.",
        "feature", "model_b")
    if opened is None:
        return
    fb, _settings = opened
    name_b = pick_model_b()
    if name_b == (fb.config.backbone if fb.config is not None else None):
        st.info("Model B is the workspace's own backbone: choose another to compare.",
                icon=":material/info:")
        return
    cmp = comparison(name_b)
    if cmp is None:
        return
    st.markdown("#### The linear maps between the two representations")
    maps(cmp)
    st.markdown("#### One feature of A and its best matches in B")
    feature = state.get("feature")
    if feature is None or not 0 <= int(feature) < fb.num_features:
        feature = 0
    wkey = state.widget_key("feature")
    state.seed_widget(wkey, int(feature))
    feature = int(st.number_input("Feature of model A", min_value=0,
                                  max_value=fb.num_features - 1, step=1, key=wkey))
    state.put("feature", feature)
    side_by_side(cmp, feature)
    st.markdown("#### Summary")
    summary(cmp)

