"""Pairs and groups: a group's concepts against those of each of its features alone."""

import streamlit as st

from ui import charts, errors, groups, loaders, shell, views


def main() -> None:
    opened = views.open_page(
        "Pairs and groups",
        "Single features often explain little; pairs and groups of features are often more "
        "interpretable. Pick two or more features, or a group discovered from images that "
        "activate exactly those features, and compare the group's concepts with each "
        "feature's own.",
        "features", "group")
    if opened is None:
        return
    falcon, settings = opened
    found = errors.call(loaders.groups, falcon, settings,
                        what="Groups could not be discovered") or []
    feats = groups.chosen_features(falcon, settings, found)
    if feats is None:
        return
    groups.heatmap(falcon, settings, feats, expanded=not found)
    if views.no_high_images(falcon, feats, settings):
        return
    group_exp = loaders.explain(falcon, feats, settings,
                                what="The group " + " + ".join(map(str, feats))
                                     + " could not be explained")
    single = groups.singles(falcon, feats, settings)
    if group_exp is None:
        return

    views.heading(group_exp)
    views.summary(group_exp)

    st.markdown("#### The group's concepts against each feature alone")
    st.dataframe(groups.concept_table(group_exp, single), hide_index=True, width="stretch")
    st.caption(f"{groups.EMPTY}: the concept is not among that explanation's kept words.")
    chart_cols = st.columns(len(feats) + 1)
    with chart_cols[0]:
        st.plotly_chart(charts.concept_bars(group_exp.words, "Group", show_l=False),
                        key="group_words", width="stretch")
    for col, f in zip(chart_cols[1:], feats):
        with col:
            e = single.get(f)
            if e is None or not e.words:
                st.info(f"Feature {f}: no kept words.")
            else:
                st.plotly_chart(charts.concept_bars(e.words, f"Feature {f} alone", show_l=False,
                                                    colour="#9467bd"),
                                key=f"single_words_{f}", width="stretch")

    st.markdown("#### How their top images overlap")
    table, jaccard, why = groups.overlap(group_exp, single)
    if jaccard is not None:
        st.metric("Overlap of their high images (Jaccard)", jaccard, help=why)
    st.dataframe(table, hide_index=True)

    views.high_images(falcon, group_exp, settings, key="group_high")
    with st.expander("The group's counterfactual images (all group features low)"):
        views.low_images(falcon, group_exp, key="group_low")
    views.exports(group_exp, key="group")


shell.page(main)
