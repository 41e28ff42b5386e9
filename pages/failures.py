"""Failures: why a classifier got an image wrong, in terms of its features' concepts."""

import json

import streamlit as st

from falcon_core.data.probes import load_image_bytes
from ui import charts, errors, loaders, shell, state, views


def _side(falcon, items, title: str, settings, key: str, colour: str) -> None:
    st.markdown(f"#### {title}")
    if not items:
        st.info("Nothing to show on this side.")
        return
    st.plotly_chart(charts.contributions(items, "Contribution of each feature", colour),
                    key=f"contrib_{key}", width="stretch")
    for it in items:
        f = it["feature"]
        exp = it.get("explanation")
        with st.container(border=True):
            st.markdown(f"**Feature {f}** · contribution {it['contribution']:.3f}")
            if exp is None:
                st.warning(f"No explanation: {it.get('error') or 'unknown reason'}")
                continue
            words = ", ".join(c.text for c in exp.words[:6]) or "(no concepts kept)"
            st.markdown(f"Concepts: {words}")
            views.faithfulness_badge(exp)
            if exp.spurious_words:
                st.caption("Removed as spurious: "
                           + ", ".join(c.text for c in exp.spurious_words[:6]))
            pairs = loaders.annotated_high(falcon, exp, settings, 4)
            st.image([p[1] for p in pairs], caption=[f"#{r.index}" for r in exp.high[:4]],
                     width=90)
            st.page_link("pages/feature_explorer.py", label=f"Open feature {f}", icon=":material/search:",
                         query_params={"feature": str(f)})


def _read_upload(upload):
    """The uploaded picture as RGB (the library's image rules), or None after saying why not.
    Its size is bounded by the server (``server.maxUploadSize`` in .streamlit/config.toml)."""
    return errors.call(load_image_bytes, upload.getvalue(), f"“{upload.name}”",
                       what="The upload cannot be used")


def main() -> None:
    opened = views.open_page(
        "Failures",
        "For a backbone with a linear classifier head: which features pushed a "
        "misclassified image toward the predicted class, and which toward the true class, "
        "each with its concepts — so you can see which (possibly spurious) concepts "
        "caused the error.",
        "image")
    if opened is None:
        return
    falcon, settings = opened
    fails = errors.call(loaders.failures, falcon, what="Misclassified images cannot be listed")
    if fails is None:
        return
    acc = errors.or_none(falcon.accuracy)
    c = st.columns(3)
    c[0].metric("Probe images", falcon.num_images)
    c[1].metric("Misclassified", len(fails))
    if acc is not None:
        c[2].metric("Accuracy", f"{acc:.1%}")
    k = st.slider("Features per side", 1, 10, 3, key="fail_k")

    source = st.radio("Image", ["A misclassified probe image", "Upload an image"],
                      horizontal=True, key="fail_source")
    if source == "Upload an image":
        upload = st.file_uploader("Image", type=["png", "jpg", "jpeg", "webp", "bmp"],
                                  key="fail_upload")
        state.put("image", None)  # an upload is not a probe image: the link must not say one
        names = errors.or_none(falcon.class_names) or []
        true = st.selectbox("Its true class (optional)", options=list(range(len(names))),
                            index=None, format_func=lambda i: names[i], key="fail_true",
                            placeholder="Unknown")
        if upload is None:
            st.caption("Upload a picture to see which features drive the classifier's decision.")
            return
        image = _read_upload(upload)
        if image is None:
            return
        fx = loaders.with_progress(falcon, "Explaining the decision…", falcon.explain_failure, k=k,
                                   image=image, true_class=true, settings=settings,
                                   what="The image could not be explained")
        shown = image
    else:
        if not fails:
            st.success("The classifier gets every probe image right: nothing to explain.")
            st.info("**What to do:** upload an image instead, or use a harder probe set.")
            return
        by_index = {f["index"]: f for f in fails}
        current = state.get("image")
        if current is not None and current not in by_index:
            st.warning(f"Probe image {current} is not among the misclassified images; showing "
                       "the first one instead.")
            current = None
        if current is None:
            current = fails[0]["index"]
        state.put("image", current)
        wkey = state.widget_key("image")
        if st.session_state.get(wkey) not in by_index:
            st.session_state[wkey] = current
        index = st.selectbox(
            f"Misclassified probe image ({len(fails)})", options=list(by_index), key=wkey,
            format_func=lambda i: f"#{i} {by_index[i]['id']}: true {by_index[i]['true_name']}"
                                  f" → predicted {by_index[i]['predicted_name']}")
        state.put("image", int(index))
        fx = loaders.with_progress(falcon, "Explaining the decision…", falcon.explain_failure,
                                   int(index), k=k, settings=settings,
                                   what=f"Image {index} could not be explained")
        shown = loaders.view(falcon, int(index))
    if fx is None:
        return

    left, right = st.columns([1, 3])
    with left:
        st.image(shown, caption=f"{fx.id}", width=220)
    with right:
        st.markdown(f"### True: **{fx.true_name}** → predicted: **{fx.predicted_name}**")
        if fx.true_class >= 0 and fx.true_class == fx.predicted_class:
            st.success("This image is classified correctly.")
        st.download_button("Download this failure explanation (JSON)",
                           json.dumps(fx.to_dict(), indent=2),
                           file_name=f"falcon_failure_{fx.index}.json",
                           mime="application/json", key="dl_failure")
    a, b = st.columns(2)
    with a:
        _side(falcon, fx.toward_predicted, f"Toward the predicted class: {fx.predicted_name}",
              settings, "pred", charts.REMOVED_COLOUR)
    with b:
        if fx.true_class < 0:
            st.info("Choose the true class to see the features that pushed toward it.")
        else:
            _side(falcon, fx.toward_true, f"Toward the true class: {fx.true_name}", settings,
                  "true", "#2ca02c")


shell.page(main)
