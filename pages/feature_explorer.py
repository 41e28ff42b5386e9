"""Feature explorer: one feature's concepts, images, crops, counterfactuals and histogram."""

import streamlit as st

from ui import loaders, shell, views


def main() -> None:
    opened = views.open_page(
        "Feature explorer",
        "Pick a feature: FALCON shows the images that activate it most, the GradCAM crops "
        "of what activates it, the words that describe the crops (Word Score, Eq. 1) "
        "and those removed as spurious by the counterfactuals (Eq. 2).",
        "feature", "concept")
    if opened is None:
        return
    falcon, settings = opened
    with views.feature_picker(falcon, settings) as feature:
        exp = views.explained_feature(falcon, feature, settings)
    if exp is None:
        return
    views.heading(exp)
    views.summary(exp)

    left, right = st.columns([3, 2])
    with left:
        concept = views.concept_charts(exp)
        views.provenance(falcon, exp, concept)
    with right:
        views.activation_histogram(falcon, exp, settings)
        removed = [c.text for c in exp.spurious_words + exp.spurious_phrases]
        if removed:
            st.markdown("**Removed as spurious:** " + ", ".join(removed[:12]))
            st.page_link("pages/spurious_concepts.py", label="Inspect the spurious concepts",
                         icon=":material/block:", query_params={"feature": str(feature)})

    views.high_images(falcon, exp, settings)
    with st.expander("Lowly activating counterfactual images (L)", expanded=True):
        views.low_images(falcon, exp)
    views.exports(exp)
    with st.expander("Every feature explained so far (click a column to sort)"):
        st.dataframe(loaders.feature_table(falcon, settings), hide_index=True, width="stretch",
                     key="feature_list")
        st.caption("faithfulness: ROC AUC of the probe images the top concepts pick (by CLIP "
                   "similarity) against the rest, scored by the feature's activation; 0.5 is "
                   "chance.")


shell.page(main)
