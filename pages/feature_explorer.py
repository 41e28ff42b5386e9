"""Feature explorer: one feature's concepts, images, crops, counterfactuals and histogram."""

import streamlit as st

from ui import loaders, shell, views

HIGH = "Highly activating images (T)"
CROPS = "Their crops"
LOW = "Counterfactuals (L)"
ACTIVATIONS = "Activation histogram"
TABLE = "Every feature explained so far"
TABS = (HIGH, CROPS, LOW, ACTIVATIONS, TABLE)
TAB_KEY = "explorer_tab"  # st.session_state[TAB_KEY]: the open tab's label


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
    with right:
        views.provenance(falcon, exp, concept)
        removed = [c.text for c in exp.spurious_words + exp.spurious_phrases]
        if removed:
            st.markdown("**Removed as spurious:** " + ", ".join(removed[:12]))
            st.page_link("pages/spurious_concepts.py", label="Inspect the spurious concepts",
                         icon=":material/block:", query_params={"feature": str(feature)})

    # Only the open tab is computed and sent (issue 9: the page drew every image, the crops,
    # the counterfactuals, the histogram and the feature table on every choice of a feature).
    tabs = st.tabs(list(TABS), key=TAB_KEY, on_change="rerun")
    parts = dict(zip(TABS, tabs))
    with parts[HIGH]:
        if parts[HIGH].open:
            views.high_images(falcon, exp, settings, show_crops=False)
    with parts[CROPS]:
        if parts[CROPS].open:
            views.crop_images(falcon, exp, settings)
    with parts[LOW]:
        if parts[LOW].open:
            views.low_images(falcon, exp)
    with parts[ACTIVATIONS]:
        if parts[ACTIVATIONS].open:
            views.activation_histogram(falcon, exp, settings)
    with parts[TABLE]:
        if parts[TABLE].open:
            st.dataframe(loaders.feature_table(falcon, settings), hide_index=True,
                         width="stretch", key="feature_list")
            st.caption("Click a column to sort. faithfulness: ROC AUC of the probe images the "
                       "top concepts pick (by CLIP similarity) against the rest, scored by the "
                       "feature's activation; 0.5 is chance.")
    views.exports(exp)

shell.page(main)
