"""Feature explorer: one feature's concepts, images, crops, counterfactuals and histogram."""

import streamlit as st

from ui import charts, errors, loaders, shell, state, views


def main() -> None:
    st.title("Feature explorer")
    st.caption("Pick a feature: FALCON shows the images that activate it most, the GradCAM crops "
               "of what activates it, the words that describe the crops (Word Score, Eq. 1) "
               "and those removed as spurious by the counterfactuals (Eq. 2).")
    opened = views.open_page("feature", "concept")
    if opened is None:
        return
    fb, settings = opened
    feature = views.feature_picker(fb, settings)
    if not views.check_feature(fb, feature):
        return
    if views.no_high_images(fb, feature, settings):
        return
    exp = loaders.explain(fb, feature, settings, what=f"Feature {feature} could not be explained")
    if exp is None:
        return

    st.subheader(f"Feature {feature}: " + (", ".join(exp.top_concepts(5)) or "no concepts kept"))
    views.summary(exp, fb)

    left, right = st.columns([3, 2])
    with left:
        concept = views.concept_charts(exp)
        views.provenance(fb, exp, concept, settings)
    with right:
        values = loaders.activations(fb, feature, settings)
        hs = exp.high_selection
        thr = hs.get("threshold")
        thr = thr if isinstance(thr, (int, float)) else None
        fig = charts.histogram(values, errors.attempt(fb.alpha_for, settings)[0],
                               errors.attempt(fb.low_threshold_for, settings)[0],
                               title=f"Activations of feature {feature}",
                               high_threshold=thr, high_label=f"T threshold ({hs.get('rule')})")
        st.plotly_chart(fig, key="histogram", width="stretch")
        st.caption("Green: α, the global threshold for highly activating images; red: ε, the "
                   "threshold for lowly activating counterfactuals.")
        if exp.spurious_words or exp.spurious_phrases:
            removed = [c.text for c in exp.spurious_words + exp.spurious_phrases]
            st.markdown("**Removed as spurious:** " + ", ".join(removed[:12]))
            st.page_link("pages/spurious_concepts.py", label="Inspect the spurious concepts",
                         icon=":material/block:", query_params={"feature": str(feature)})

    views.high_images(fb, exp, settings)
    with st.expander("Lowly activating counterfactual images (L)", expanded=True):
        views.low_images(fb, exp)
    views.exports(exp)


shell.page(main)
