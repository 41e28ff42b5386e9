"""The Spurious concepts page's pieces: the contrast settings (the counterfactual rule, the
threshold rule, ε, β, the removal threshold, how many L images), the kept and removed lists, the
counterfactuals that removed each concept, and what concept hygiene dropped."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from falcon_core.errors import FalconError
from falcon_core.settings import FalconSettings

from . import errors, loaders, state

CONTRAST = ("low_rule", "low_threshold", "beta", "spurious_rule", "spurious_threshold",
            "max_low_images")
LOW_RULE_LABELS = {"global": "below ε (authors' Eq. 2)",
                   "twins": "below ε, with the feature's correlated twins",
                   "quantile": "below the feature's own quantile",
                   "clip": "below its own quantile, nearest to the crops as CLIP sees them"}
SPURIOUS_RULE_LABELS = {"absolute": "absolute (authors: on ViT-B/32's scale)",
                        "relative": "relative to this CLIP's similarity scale",
                        "ratio": "a share of the concept's own T score",
                        "conditional": "measured: the feature's response given its anchor"}


def sliders(falcon, settings: FalconSettings) -> FalconSettings:
    """ε, β, the removal threshold and the number of L images; returns the new settings."""
    alpha = errors.or_none(falcon.alpha_for, settings)
    default_eps = errors.or_none(falcon.low_threshold_for, settings.replace(low_threshold=None))
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
    for key, value in ((state.widget_key("low_threshold", "auto"), eps is None),
                       (state.widget_key("low_threshold"),
                        float(min(max(eps if eps is not None else default_eps, lo), hi))),
                       (state.widget_key("beta"), float(settings.beta)),
                       (state.widget_key("spurious_threshold"), float(settings.spurious_threshold)),
                       (state.widget_key("max_low_images"), int(settings.max_low_images))):
        state.seed_widget(key, value)
    for name, (a, b) in ranges.items():
        state.clamp_widget(state.widget_key(name), a, b)

    rules = st.columns(2)
    with rules[0]:
        state.seed_widget(state.widget_key("low_rule"), settings.low_rule)
        low_rule = st.selectbox("Counterfactual images (L)", list(LOW_RULE_LABELS),
                                format_func=LOW_RULE_LABELS.get, key=state.widget_key("low_rule"),
                                help="Which images count as low on the feature. The twins rule "
                                     "also requires them low on every feature whose activations "
                                     "correlate with this one (r ≥ "
                                     f"{settings.twin_correlation:g}), so a concept the backbone "
                                     "encodes in several features is not removed from itself. "
                                     "The clip rule ranks the images low on the feature by how "
                                     "close CLIP sees them to the highly activating crops "
                                     "(not by the backbone's other features: no β).")
    with rules[1]:
        state.seed_widget(state.widget_key("spurious_rule"), settings.spurious_rule)
        spurious_rule = st.radio("Removal threshold", list(SPURIOUS_RULE_LABELS),
                                 format_func=SPURIOUS_RULE_LABELS.get, horizontal=True,
                                 key=state.widget_key("spurious_rule"),
                                 help="Relative: the slider's value × this CLIP's caption scale / "
                                      f"{settings.spurious_reference_scale:g} (the scale of "
                                      "ViT-B/32, on which the authors set 0.1). Ratio: removed "
                                      "when the L score is at least the slider's value / "
                                      f"{settings.spurious_reference_scale:g} of the concept's "
                                      "T score. Conditional: measured on every probe image, "
                                      "not on L: removed when, among the images CLIP names the "
                                      "feature's anchor concept in, the feature responds to the "
                                      "concept less than the slider's value / "
                                      f"{settings.spurious_reference_scale:g} as much as to the "
                                      "anchor (ROC AUCs).")
    c = st.columns(4)
    with c[0]:
        no_eps = low_rule in ("quantile", "clip")  # low = below its own quantile: no ε
        auto = st.toggle("ε = global mean (authors)", key=state.widget_key("low_threshold", "auto"),
                         disabled=no_eps,
                         help=f"Not used by the {low_rule} rule (low = at or below the feature's own "
                              f"{settings.low_quantile:g}-quantile)." if no_eps else None)
        eps_value = st.slider("ε: “low” means below", lo, hi, step=(hi - lo) / 200 or 1e-4,
                              key=state.widget_key("low_threshold"), disabled=auto or no_eps,
                              format="%.4f",
                              help=f"Authors: the global mean of the normalised matrix "
                                   f"({default_eps:.4f}).")
    with c[1]:
        beta = st.slider("β: similarity to the high images' other features", *ranges["beta"],
                         step=0.01, key=state.widget_key("beta"), disabled=low_rule == "clip",
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
        return settings.replace(low_threshold=None if auto else float(eps_value),
                                beta=float(beta), spurious_threshold=float(thr),
                                max_low_images=int(n_low), low_rule=str(low_rule),
                                spurious_rule=str(spurious_rule))
    except FalconError as e:
        errors.show_falcon_error(e)
        return settings


def reset() -> None:
    """Back to the workspace's contrast settings (a button's callback)."""
    over = dict(st.session_state.get("settings", {}))
    for k in CONTRAST:
        over.pop(k, None)
    st.session_state["settings"] = over
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith("w:") and key[2:].split(":")[0] in CONTRAST:
            del st.session_state[key]


def _rows(items, status: str, exp=None) -> list[dict]:
    per = exp.faithfulness.per_concept if exp is not None and exp.faithfulness is not None else {}

    def faithful(text: str) -> float | None:  # the concept's own faithfulness AUC (issue 12)
        v = per.get(text)
        return None if v is None or v != v else round(float(v), 3)

    tests = _conditional_tests(exp)
    anchor = (exp.low_selection.get("spurious") or {}).get("anchor") if tests else None

    def given(text: str) -> str | None:  # the conditional rule's test (AUC given the anchor)
        t = tests.get(text)
        if t is None:
            return "the anchor (never removed)" if text == anchor else None
        if t.get("auc") is None:
            return "too few images: kept"
        lo, hi = t["interval"]
        return f"{t['auc']:.3f} [{lo:.3f}, {hi:.3f}] vs {t['bound']:.3f}"

    return [{"concept": c.text, "T score": round(c.score, 4), "L score": round(c.l_score, 4),
             "faithfulness": faithful(c.text), "status": status,
             **({"AUC given the anchor vs bound": given(c.text)} if tests else {})}
            for c in items]


def _conditional_tests(exp) -> dict[str, dict]:
    """The conditional rule's tests of an explanation, words and phrases (empty otherwise)."""
    spurious = (exp.low_selection.get("spurious") or {}) if exp is not None else {}
    tests = spurious.get("tests") or {}
    return {**tests.get("phrases", {}), **tests.get("words", {})}


def kept_and_removed(exp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every kept concept (those below the top-n cut too, so a concept the threshold lets back
    in shows up here) and every removed one, as tables."""
    n_w, n_p = exp.settings.get("top_words", 8), exp.settings.get("top_phrases", 8)
    cols = ["concept", "T score", "L score", "faithfulness", "status"]
    if _conditional_tests(exp):
        cols.append("AUC given the anchor vs bound")
    kept = pd.DataFrame(_rows(exp.words, "kept word", exp) + _rows(exp.phrases, "kept phrase", exp)
                        + _rows(exp.more_words, f"kept word, below the top {n_w}")
                        + _rows(exp.more_phrases, f"kept phrase, below the top {n_p}"),
                        columns=cols)
    removed = pd.DataFrame(_rows(exp.spurious_words, "removed word", exp)
                           + _rows(exp.spurious_phrases, "removed phrase", exp), columns=cols)
    return kept, removed


def removed_sources(falcon, exp) -> None:
    """For each removed concept: the counterfactual images (L) whose captions hold it."""
    for c in exp.spurious_words + exp.spurious_phrases:
        pairs = exp.provenance(c.text, of="low")
        idx = list(dict.fromkeys(rec.index for rec, _ in pairs))
        with st.expander(f"“{c.text}” — T {c.score:.3f}, L {c.l_score:.3f}, "
                         f"in the captions of {len(idx)} L image(s)"):
            if pairs:
                st.dataframe(pd.DataFrame([{"L image": rec.index, "caption": cap.text,
                                            "similarity": round(cap.score, 4)}
                                           for rec, cap in pairs]),
                             hide_index=True, width="stretch")
                st.image([loaders.view(falcon, i) for i in idx[:8]],
                         caption=[f"#{i}" for i in idx[:8]], width=110)
            else:
                st.caption("No stored caption of an L image holds it as written.")


def threshold(exp, settings: FalconSettings) -> float | None:
    """The removal threshold the explanation used (the relative rule moves the slider's value;
    None for the ratio rule, whose threshold is a share of each concept's T score); its sentence
    is shown next to L's."""
    spurious = exp.low_selection.get("spurious") or {}
    if spurious.get("description"):
        st.caption(f"**Threshold:** {spurious['description']}")
    if spurious.get("rule") in ("ratio", "conditional"):
        return None
    value = spurious.get("threshold", settings.spurious_threshold)
    return None if value is None else float(value)


def hygiene(exp) -> None:
    """What concept hygiene dropped from this explanation, why, and each concept's share of the
    vocabulary's captions."""
    record = exp.hygiene or {}
    dropped = record.get("dropped_words", []) + record.get("dropped_phrases", [])
    with st.expander(f"Dropped by concept hygiene ({len(dropped)})"
                     if record.get("enabled") else "Concept hygiene is off"):
        if not record.get("enabled"):
            st.caption("Turn it on in the method settings on the Setup page (concept hygiene).")
            return
        st.caption(record.get("description", ""))
        if dropped:
            st.dataframe(pd.DataFrame([{"concept": d["text"], "T score": round(d["score"], 4),
                                        "share of the vocabulary's captions":
                                            round(d["document_frequency"], 3)}
                                       for d in dropped]),
                         hide_index=True, width="stretch", key="hygiene_table")
