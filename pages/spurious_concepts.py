"""Spurious concepts: what the contrast step (Eq. 2) removed, why, and live contrast settings."""

import pandas as pd
import streamlit as st

from falcon_core.errors import FalconError
from ui import charts, errors, loaders, shell, state, views

CONTRAST = ("low_threshold", "beta", "spurious_threshold", "max_low_images")


def _sliders(fb, settings):
    """ε, β, the removal threshold and the number of L images; returns the new settings."""
    alpha = errors.attempt(fb.alpha_for, settings)[0]
    default_eps = errors.attempt(fb.low_threshold_for, settings.replace(low_threshold=None))[0]
    default_eps = float(default_eps) if default_eps is not None else 0.0
    hi = float(alpha) if alpha is not None and alpha > default_eps else default_eps * 4 + 1e-3
    lo = min(0.0, default_eps)
    # every slider's range is the settings' own (ε: the data's range, inside the setting's)
    eps_lo, eps_hi = state.bounds("low_threshold")
    lo, hi = max(lo, eps_lo), min(max(hi, lo + 1e-3), eps_hi)
    eps = settings.low_threshold
    ranges = {name: state.bounds(name) for name in ("beta", "spurious_threshold",
                                                    "max_low_images")}
    ranges["low_threshold"] = (lo, hi)

    state.seed_widget(state.widget_key("low_threshold", "auto"), eps is None)
    state.seed_widget(state.widget_key("low_threshold"),
                      float(min(max(eps if eps is not None else default_eps, lo), hi)))
    state.seed_widget(state.widget_key("beta"), float(settings.beta))
    state.seed_widget(state.widget_key("spurious_threshold"), float(settings.spurious_threshold))
    state.seed_widget(state.widget_key("max_low_images"), int(settings.max_low_images))
    for name, (a, b) in ranges.items():
        state.clamp_widget(state.widget_key(name), a, b)

    c = st.columns(4)
    with c[0]:
        auto = st.toggle("ε = global mean (authors)", key=state.widget_key("low_threshold", "auto"))
        eps_value = st.slider("ε: “low” means below", lo, hi, step=(hi - lo) / 200 or 1e-4,
                              key=state.widget_key("low_threshold"), disabled=auto,
                              format="%.4f",
                              help=f"Authors: the global mean of the normalised matrix "
                                   f"({default_eps:.4f}).")
    with c[1]:
        beta = st.slider("β: similarity to the high images' other features", *ranges["beta"],
                         step=0.01, key=state.widget_key("beta"),
                         help="Counterfactuals must share the other features (h·h^μ ≥ β). "
                              "Authors: 0.3.")
    with c[2]:
        thr = st.slider("Removal threshold (L score ≥)", *ranges["spurious_threshold"],
                        step=0.01,
                        key=state.widget_key("spurious_threshold"),
                        help="A concept whose Word Score on the counterfactuals reaches this is "
                             "removed as spurious. Authors: 0.1.")
    with c[3]:
        n_low = st.slider("How many L images (at most)", *ranges["max_low_images"], step=1,
                          key=state.widget_key("max_low_images"),
                          help="Authors: 10. (To skip the contrast step, turn it off in the "
                               "method settings on the Setup page.)")
    try:
        new = settings.replace(low_threshold=None if auto else float(eps_value), beta=float(beta),
                               spurious_threshold=float(thr), max_low_images=int(n_low))
    except FalconError as e:
        errors.show_falcon_error(e)
        return settings
    return new


def _reset() -> None:
    over = dict(st.session_state.get("settings", {}))
    for k in CONTRAST:
        over.pop(k, None)
    st.session_state["settings"] = over
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith("w:") and key[2:].split(":")[0] in CONTRAST:
            del st.session_state[key]


def main() -> None:
    st.title("Spurious concepts")
    st.caption("Words that describe a feature's highly activating images can be spurious: they "
               "also describe lowly activating counterfactuals (images that share the other "
               "features but not this one). FALCON removes every concept whose Word Score on "
               "the counterfactuals (L score) reaches the threshold. Move the sliders to see the "
               "lists change.")
    opened = views.open_page("feature")
    if opened is None:
        return
    fb, settings = opened
    feature = views.feature_picker(fb, settings)
    if not views.check_feature(fb, feature):
        return
    st.markdown("##### Contrast settings")
    settings = _sliders(fb, settings)
    state.set_settings(settings)
    st.button("Reset the contrast settings", on_click=_reset, key="reset_contrast")

    exp = loaders.explain(fb, feature, settings, what=f"Feature {feature} could not be explained")
    if exp is None:
        return
    ls = exp.low_selection
    st.caption(f"**L:** {ls.get('description', '')}")
    for note in exp.notes:
        st.info(note, icon=":material/info:")

    kept = views.concept_table(exp.words, "kept word")
    kept = pd.concat([kept, views.concept_table(exp.phrases, "kept phrase")], ignore_index=True)
    removed = views.concept_table(exp.spurious_words, "removed word")
    removed = pd.concat([removed, views.concept_table(exp.spurious_phrases, "removed phrase")],
                        ignore_index=True)
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
                                            threshold=settings.spurious_threshold,
                                            colour=charts.REMOVED_COLOUR),
                        key="removed_chart", width="stretch")
        st.markdown("##### The counterfactual images that removed each concept")
        for c in items:
            pairs = views.l_provenance(exp, c.text)
            idx = list(dict.fromkeys(rec.index for rec, _ in pairs))
            with st.expander(f"“{c.text}” — T {c.score:.3f}, L {c.l_score:.3f}, "
                             f"in the captions of {len(idx)} L image(s)"):
                if pairs:
                    st.dataframe(pd.DataFrame([{"L image": rec.index, "caption": cap.text,
                                                "similarity": round(cap.score, 4)}
                                               for rec, cap in pairs]),
                                 hide_index=True, width="stretch")
                    st.image([loaders.view(fb, i) for i in idx[:8]],
                             caption=[f"#{i}" for i in idx[:8]], width=110)
                else:
                    st.caption("Its L score comes from lemmas of caption words (e.g. plural "
                               "forms), not a literal match.")
    views.low_images(fb, exp, key="spurious_low")
    views.exports(exp, key="spurious")


shell.page(main)
