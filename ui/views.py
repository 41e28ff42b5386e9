"""Pieces of pages shared by several pages: the page opening, the feature picker, headings,
concept charts, provenance, image grids, the activation histogram, exports, the report button."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import streamlit as st

from falcon_core.errors import FalconError
from falcon_core.settings import FalconSettings

from . import charts, errors, images, loaders, state

N_IMAGES_DEFAULT = 12


def show_url_problems() -> None:
    for p in state.url_problems():
        st.warning(p, icon=":material/link:")


def open_page(title: str, intro: str, *url_keys: str):
    """What every page does first: its title and what it is for, claim its URL keys, warn about
    bad link values, load the workspace, drop link values the workspace does not have (a feature
    or image number beyond its range), and say what the cache had to say (a damaged file
    recomputed, a folder that cannot be written). Returns ``(falcon, settings)``, or None when
    the workspace could not be loaded (a message is already shown)."""
    st.title(title)
    st.caption(intro)
    state.url_keys(*url_keys)
    show_url_problems()
    falcon = loaders.falcon()
    if falcon is None:
        return None
    check_link_selection(falcon)
    show_cache_notices(falcon)
    return falcon, state.settings()


def check_link_selection(falcon) -> None:
    """A feature or image number from the link that this workspace does not have: the same
    "Ignored ... in the link" notice as any other bad link value, and the page's default."""
    limits = {"feature": ("feature", falcon.num_features),
              "features": ("feature", falcon.num_features), "image": ("image", falcon.num_images)}
    for key, value in state.fresh_from_link().items():
        if key not in limits:
            continue
        what, n = limits[key]
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if not 0 <= int(v) < n]
        if bad:
            st.warning(f"Ignored '{key}={state.format_value(value)}' in the link: this workspace "
                       f"has {n} {what}s (0 to {n - 1}), not {bad[0]}.", icon=":material/link:")
            state.put(key, None)
            st.session_state.pop(state.widget_key(key), None)


def show_cache_notices(falcon) -> None:
    """What the disk cache reported (once per session each); a cache folder that cannot be used
    is an error on every run while it lasts (tried now: a page that only reads may write nothing)."""
    cache = getattr(falcon, "cache", None)
    check = getattr(cache, "check_usable", None)
    problem = check() if callable(check) else None
    if problem is not None:  # on every run while it lasts: results are not kept
        errors.show_falcon_error(problem)
    notices = list(getattr(cache, "notices", []) or [])
    seen = st.session_state.setdefault("_cache_notices_seen", set())
    for text in notices:
        if problem is not None and text.startswith(problem.message):
            continue
        if text not in seen:
            seen.add(text)
            st.warning(text, icon=":material/database:")


def feature_label(row: dict) -> str:
    coh = row.get("coherence")
    coh_text = f"coherence {coh:.2f}" if isinstance(coh, float) and coh == coh else "coherence –"
    fa = row.get("faithfulness")
    fa_text = f" · faithfulness {fa:.2f}" if isinstance(fa, float) and fa == fa else ""
    return f"{row['feature']} · {coh_text}{fa_text} · {row.get('top concepts') or '(no concepts)'}"


@contextmanager
def feature_picker(falcon, settings: FalconSettings, key: str = "feature",
                   label: str = "Feature number") -> Iterator[int]:
    """A number box, and beside it the list of the features explained so far (best coherence
    first). Used as ``with views.feature_picker(falcon, settings) as feature: ...``: the list is
    drawn when the block ends, so it counts the feature the block has just explained.

    The chosen number is the selection (and the URL) under ``key``, and the box shows it on every
    page that has one (a box of the same key on another page must not reset it). It is *not*
    validated here (:func:`check_feature` says what is wrong with it).
    """
    wkey, list_key = state.widget_key(key), state.widget_key(key, "list")
    current = state.get(key)
    if current is None:
        table = loaders.feature_table(falcon, settings)
        current = (int(table["feature"].iloc[0]) if len(table)
                   else loaders.busiest_feature(falcon, settings))
        state.put(key, current)
    st.session_state[wkey] = int(current)

    def typed() -> None:
        state.put(key, int(st.session_state[wkey]))
        st.session_state[list_key] = None

    def picked() -> None:
        choice = st.session_state.get(list_key)
        if choice is not None:
            state.put(key, int(choice))

    c1, c2 = st.columns([1, 3])
    with c1:
        st.number_input(label, step=1, format="%d", key=wkey, on_change=typed,
                        help=f"0 to {falcon.num_features - 1} for this backbone.")
    slot = c2.empty()
    try:
        yield int(current)
    finally:
        table = loaders.feature_table(falcon, settings)
        rows = {int(r["feature"]): r for r in table.to_dict("records")}
        with slot:
            st.selectbox(
                f"…or pick one of the {len(rows)} features explained so far (best coherence "
                "first)", options=list(rows), index=None, key=list_key,
                format_func=lambda f: feature_label(rows[f]), on_change=picked,
                placeholder="Type to search by number or concept" if rows else
                "None yet: explain features here or run the precompute on the Setup page")


def check_feature(falcon, feature: int) -> bool:
    """Say (once) what is wrong with a feature number this backbone does not have."""
    try:
        falcon.features(int(feature))
        return True
    except FalconError as e:
        errors.show_falcon_error(e)  # the message says the range once; the hint what to do
        return False


def no_high_images(falcon, features, settings: FalconSettings) -> bool:
    """When the rule leaves no highly activating image: say so, offer the top-k rule; True."""
    high = errors.or_none(falcon.select_high, features, settings)
    if high is None or len(high.indices) > 0:
        return False
    feats = [features] if isinstance(features, int) else list(features)
    what = f"Feature {feats[0]}" if len(feats) == 1 else "No image has every feature of " + \
        " + ".join(map(str, feats)) + " high: the group"
    st.warning(f"{what} has no highly activating image with the current rule: "
               f"{high.description}", icon=":material/warning:")
    st.info("**What to do:** pick other features (the lists above help), or use the top-k "
            "rule, which takes the best images of every feature (of a group: by the summed "
            "activation).", icon=":material/lightbulb:")
    if st.button(f"Use the top-k rule ({settings.top_k} images)", key="use_topk"):
        state.set_settings(settings.replace(high_rule="topk"))
        st.rerun()
    return True


def explained_feature(falcon, feature: int, settings: FalconSettings):
    """The explanation of a chosen feature, or None after saying why there is none (a number
    this backbone does not have, no highly activating image, an error)."""
    if not check_feature(falcon, feature):
        return None
    cached = errors.or_none(falcon.cached_explanation, feature, settings)
    if cached is not None and cached.high:  # seen: T was not empty (no selection run again)
        return cached
    if no_high_images(falcon, feature, settings):
        return None
    return loaders.explain(falcon, feature, settings,
                           what=f"Feature {feature} could not be explained")


def heading(exp, what: str = "") -> None:
    """"Feature 7: stone, loose, rock" (or "Features 3 + 9: ..."): which explanation is shown."""
    label = exp.label[0].upper() + exp.label[1:]
    st.subheader(f"{label}: " + (what or ", ".join(exp.top_concepts(5)) or "no concepts kept"))


def activation_histogram(falcon, exp, settings: FalconSettings) -> None:
    """The explained feature's activations with α, ε and the rule's threshold for T."""
    feature = exp.features[0]
    hs = exp.high_selection
    thr = hs.get("threshold")
    thr = thr if isinstance(thr, (int, float)) else None
    alpha = errors.or_none(falcon.alpha_for, settings)
    epsilon = errors.or_none(falcon.low_threshold_for, settings)
    label = f"T threshold ({hs.get('rule')})"
    # the activations are those of loaders.activations: the workspace, the row normalisation
    # and the feature determine them
    key = (state.config_key(falcon.config or state.workspace()), bool(settings.normalize_rows),
           int(feature), alpha, epsilon, thr, label)
    fig = loaders.figure("histogram", key, lambda: charts.histogram(
        loaders.activations(falcon, feature, settings), alpha, epsilon,
        title=f"Activations of feature {feature}", high_threshold=thr, high_label=label))
    st.plotly_chart(fig, key="histogram", width="stretch")
    st.caption("α: the global threshold for highly activating images; ε: the threshold for "
               "lowly activating counterfactuals (counts on a log scale).")


def summary(exp) -> None:
    hs, ls = exp.high_selection, exp.low_selection
    c = st.columns(4)
    coh = exp.coherence
    c[0].metric("Coherence", "–" if coh is None or coh != coh else f"{coh:.3f}",
                help="Mean off-diagonal cosine similarity of the CLIP embeddings of the crops "
                     f"(interpretable if > {exp.settings.get('coherence_threshold', 0.8)}).")
    c[1].metric("Interpretable", "yes" if exp.interpretable else "no")
    c[2].metric("High images (T)", f"{hs.get('n_used', len(exp.high))}",
                help=hs.get("description") or "")
    c[3].metric("Counterfactuals (L)", f"{ls.get('n_used', len(exp.low))}",
                help=ls.get("description") or "")
    faithfulness_badge(exp, key="faithfulness_badge")
    if hs.get("description"):
        st.caption(f"**T:** {hs['description']}  \n**L:** {ls.get('description', '')}")
    for note in exp.notes:
        st.info(note, icon=":material/info:")


def faithfulness_badge(exp, key: str | None = None) -> None:
    """The faithfulness score of the explanation's concepts (issue 12) as a coloured badge, with
    the removed concepts' score beside it and how it is computed in the tooltip (``key``: of
    its container, for tests; leave None where several explanations share a page)."""
    from falcon_core.faithfulness_view import badge, summary_line

    label, colour, help_text = badge(exp)
    with st.container(key=key) if key else st.container():
        st.badge(label, color=colour, icon=":material/verified:", help=help_text)
        st.caption(summary_line(exp))


def _all_concepts(exp) -> list[str]:
    out: list[str] = []
    for items in (exp.words, exp.phrases, exp.spurious_words, exp.spurious_phrases):
        for c in items:
            if c.text not in out:
                out.append(c.text)
    return out


def _chart_selection(event: Any) -> str | None:
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        try:
            points = event.selection.points
        except AttributeError:
            return None
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(cd, (list, tuple)) and cd:
            cd = cd[0]
        text = cd if isinstance(cd, str) else (p.get("y") if isinstance(p, dict) else None)
        if isinstance(text, str):
            return text
    return None


def concept_figure(items: Sequence, title: str, show_l: bool = True, **kw):
    """:func:`charts.concept_bars`, built once per content (see :func:`loaders.figure`)."""
    key = (tuple((c.text, float(c.score), float(c.l_score)) for c in items), title, bool(show_l),
           tuple(sorted(kw.items())))
    return loaders.figure("concept_bars", key,
                          lambda: charts.concept_bars(items, title, show_l, **kw))


def concept_charts(exp, key: str = "concept", show_l: bool = True,
                   container_key: str = "concept_chart") -> str | None:
    """Word and phrase bar charts; a click (or the list below them) selects a concept."""
    ss = st.session_state
    seen = ss.setdefault("_chart_seen", {})
    clicked = None
    with st.container(key=container_key):
        cols = st.columns(2)
        for col, items, title, ck in ((cols[0], exp.words, "Words", "words"),
                                      (cols[1], exp.phrases, "Phrases", "phrases")):
            with col:
                if not items:
                    st.info(f"No {title.lower()} kept for {exp.label}.")
                    continue
                chart_key = f"chart:{container_key}:{ck}:{'-'.join(map(str, exp.features))}"
                event = st.plotly_chart(
                    concept_figure(items, f"{title} (click a bar for its sources)", show_l),
                    key=chart_key, on_select="rerun", selection_mode="points",
                    width="stretch")
                sel = _chart_selection(event)
                if sel is not None and seen.get(chart_key) != sel:
                    clicked = sel
                seen[chart_key] = sel
    options = _all_concepts(exp)
    wkey = state.widget_key(key)
    if clicked is not None:
        state.put(key, clicked)
        ss[wkey] = clicked
    current = state.get(key)
    if current not in options:
        current = None
        state.put(key, None)
    if ss.get(wkey) not in options:
        ss[wkey] = current
    chosen = st.selectbox("Concept to trace (or click a bar)", options=options, key=wkey,
                          index=None, placeholder="Choose a concept")
    state.put(key, chosen)
    return chosen


def provenance(falcon, exp, concept: str | None) -> None:
    """The highly activating images and captions a concept came from."""
    if not concept:
        st.caption("Click a bar (or choose a concept) to see the images and captions it came from.")
        return
    pairs = exp.provenance(concept)
    t_score = next((c.score for c in exp.words + exp.phrases + exp.spurious_words
                    + exp.spurious_phrases if c.text == concept), None)
    st.markdown(f"**“{concept}”** — T score {t_score:.3f}" if t_score is not None
                else f"**“{concept}”**")
    if not pairs:
        st.info("No stored caption contains this concept as written (it may come from a lemma, "
                "e.g. 'dogs' → 'dog').")
        return
    import pandas as pd

    rows = [{"image": rec.index, "id": rec.id, "caption": cap.text,
             "similarity": round(cap.score, 4)} for rec, cap in pairs]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    idx = []
    for rec, _ in pairs:
        if rec.index not in idx:
            idx.append(rec.index)
    recs = {r.index: r for r in exp.high}
    shown = idx[:8]
    pics = [images.crop(loaders.view(falcon, i), recs[i].box) for i in shown]
    st.image(pics, caption=[f"image {i}" for i in shown], width=110)


def image_grid(pictures: Sequence, captions: Sequence[str], cols: int = 6,
               key: str | None = None, width: int = 150) -> None:
    """Pictures of ``width`` pixels with their captions, in rows (``cols``: at most that many a
    row). One element of many images, which the browser lays out in wrapping rows: a grid of
    columns, one element per picture, cost the browser more than the pictures themselves on
    every choice of a feature (issue 9)."""
    if not len(pictures):
        return
    with st.container(key=key, width=cols * (width + 16)):
        st.image(list(pictures), caption=list(captions), width=width)


def high_images(falcon, exp, settings: FalconSettings, key: str = "high", n: int | None = None,
                show_crops: bool = True) -> None:
    """Highly activating images with the GradCAM heatmap and the crop box, then the crops."""
    if not exp.high:
        st.info("No highly activating image.")
        return
    if n is None:
        n = st.slider("Images shown", 1, max(1, len(exp.high)),
                      min(N_IMAGES_DEFAULT, len(exp.high)), key=f"n_{key}")
    pairs = loaders.annotated_high(falcon, exp, settings, n)
    caps = [f"#{r.index} · {r.activation:.3f}" + (" · whole (empty CAM)" if r.box_fallback else "")
            for r in exp.high[:n]]
    st.markdown(f"**Highly activating images** of {exp.label} (GradCAM heatmap, crop box; "
                f"{len(exp.high)} in T, best first)")
    image_grid([p[0] for p in pairs], caps, key=f"{key}_grid")
    if show_crops:
        _crops(exp, pairs, n, key)
    st.download_button("Download these images (PNG)",
                       lambda: loaders.grid_png([p[0] for p in pairs], caps,
                                                f"{exp.label}: highly activating images"),
                       file_name=f"falcon_{'_'.join(map(str, exp.features))}_high.png",
                       mime="image/png", key=f"dl_{key}_png", on_click="ignore")


def _crops(exp, pairs, n: int, key: str) -> None:
    st.markdown("**Their crops** (what CLIP captions)")
    image_grid([p[1] for p in pairs], [f"#{r.index}" for r in exp.high[:n]], cols=8,
               key=f"{key}_crops", width=100)


def crop_images(falcon, exp, settings: FalconSettings, key: str = "high") -> None:
    """The GradCAM crops of the highly activating images (as many as :func:`high_images`
    shows, its slider's value)."""
    if not exp.high:
        st.info("No highly activating image.")
        return
    n = int(st.session_state.get(f"n_{key}") or min(N_IMAGES_DEFAULT, len(exp.high)))
    n = max(1, min(n, len(exp.high)))
    _crops(exp, loaders.annotated_high(falcon, exp, settings, n), n, key)


def low_images(falcon, exp, key: str = "low") -> None:
    """The lowly activating counterfactual images L (encoded whole)."""
    if not exp.low:
        st.info("No lowly activating counterfactual image: "
                + (exp.low_selection.get("description") or "") + " Nothing was removed.")
        return
    pics = [loaders.view(falcon, r.index) for r in exp.low]
    caps = [f"#{r.index} · sim {r.similarity:.2f}" if r.similarity is not None else f"#{r.index}"
            for r in exp.low]
    st.markdown(f"**Lowly activating counterfactuals (L)** — they share the other features' "
                f"concepts but not {exp.label}; encoded whole")
    image_grid(pics, caps, key=f"{key}_grid", width=130)
    st.download_button("Download the counterfactuals (PNG)",
                       lambda: loaders.grid_png(pics, caps, f"{exp.label}: counterfactual images"),
                       file_name=f"falcon_{'_'.join(map(str, exp.features))}_low.png",
                       mime="image/png", key=f"dl_{key}_png", on_click="ignore")


def exports(exp, key: str = "exp") -> None:
    name = "falcon_" + "_".join(map(str, exp.features))
    c1, c2 = st.columns(2)
    # The files are made when a button is clicked, not on every run of the page (issue 9).
    c1.download_button("Download the explanation (JSON)", exp.to_json,
                       file_name=f"{name}.json", mime="application/json", key=f"dl_{key}_json",
                       on_click="ignore")
    c2.download_button("Download the concepts (CSV)", exp.to_csv, file_name=f"{name}.csv",
                       mime="text/csv", key=f"dl_{key}_csv", on_click="ignore")


def concept_table(items: Sequence, status: str) -> Any:
    import pandas as pd

    return pd.DataFrame([{"concept": c.text, "T score": round(c.score, 4),
                          "L score": round(c.l_score, 4), "status": status} for c in items],
                        columns=["concept", "T score", "L score", "status"])


def report_button(falcon, settings: FalconSettings) -> None:
    """"Download the report": one self-contained HTML file of the workspace, built when the
    button is clicked from what is explained so far (nothing new is computed)."""
    from falcon_core.report import ReportOptions, build_report

    n = len(loaders.feature_table(falcon, settings))

    def html() -> bytes:
        opts = ReportOptions(explain_missing=False)
        return build_report(falcon, settings, opts).html.encode("utf-8")

    name = str(falcon.describe()["backbone"].get("name") or "model").replace("/", "_")
    st.download_button("Download the report (HTML)", html, file_name=f"falcon_report_{name}.html",
                       mime="text/html", key="dl_report", icon=":material/description:",
                       on_click="ignore")
    st.caption(f"One file that opens offline in any browser: the workspace, the {n} of "
               f"{falcon.num_features} features explained so far, the groups and the failures. "
               "The precompute on the Setup page explains them all.")
