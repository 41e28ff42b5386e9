"""Spurious concepts: what the contrast step (Eq. 2) removed, why, and live contrast settings."""

import streamlit as st

from ui import charts, contrast, shell, state, views


def main() -> None:
    opened = views.open_page(
        "Spurious concepts",
        "Words that describe a feature's highly activating images can be spurious: they "
        "also describe lowly activating counterfactuals (images that share the other "
        "features but not this one). FALCON removes every concept whose Word Score on "
        "the counterfactuals (L score) reaches the threshold. Move the sliders to see the "
        "lists change.",
        "feature")
    if opened is None:
        return
    falcon, settings = opened
    with views.feature_picker(falcon, settings) as feature:
        st.markdown("##### Contrast settings")
        settings = contrast.sliders(falcon, settings)
        state.set_settings(settings)
        st.button("Reset the contrast settings", on_click=contrast.reset, key="reset_contrast")
        exp = views.explained_feature(falcon, feature, settings)
    if exp is None:
        return
    n_removed = len(exp.spurious_words) + len(exp.spurious_phrases)
    views.heading(exp, f"{n_removed} concept(s) removed as spurious")
    st.caption(f"**L:** {exp.low_selection.get('description', '')}")
    threshold = contrast.threshold(exp, settings)
    for note in exp.notes:
        st.info(note, icon=":material/info:")
    views.faithfulness_badge(exp, key="faithfulness_badge")

    kept, removed = contrast.kept_and_removed(exp)
    left, right = st.columns(2)
    with left, st.container(key="kept_list"):
        st.markdown(f"**Kept** ({len(kept)})")
        st.dataframe(kept, hide_index=True, width="stretch")
    with right, st.container(key="removed_list"):
        st.markdown(f"**Removed as spurious** ({len(removed)})")
        if len(removed):
            st.dataframe(removed, hide_index=True, width="stretch")
        else:
            st.info("Nothing was removed with these settings.")

    items = exp.spurious_words + exp.spurious_phrases
    if items:
        st.plotly_chart(charts.concept_bars(items, "Removed concepts: T score and L score",
                                            threshold=threshold,
                                            colour=charts.REMOVED_COLOUR),
                        key="removed_chart", width="stretch")
        st.markdown("##### The counterfactual images that removed each concept")
        contrast.removed_sources(falcon, exp)
    contrast.hygiene(exp)
    views.low_images(falcon, exp, key="spurious_low")
    views.exports(exp, key="spurious")


shell.page(main)
