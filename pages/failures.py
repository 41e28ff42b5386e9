"""Failures: why a classifier got an image wrong, in terms of its features' concepts."""

import io

import streamlit as st
from PIL import Image, UnidentifiedImageError

from ui import charts, errors, loaders, shell, state, views

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _side(fb, items, title: str, settings, key: str, colour: str) -> None:
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
            if exp.spurious_words:
                st.caption("Removed as spurious: "
                           + ", ".join(c.text for c in exp.spurious_words[:6]))
            pairs = loaders.annotated_high(fb, exp, settings, 4)
            st.image([p[1] for p in pairs], caption=[f"#{r.index}" for r in exp.high[:4]],
                     width=90)
            st.page_link("pages/feature_explorer.py", label=f"Open feature {f}", icon=":material/search:",
                         query_params={"feature": str(f)})


def _read_upload(upload) -> Image.Image | None:
    data = upload.getvalue()
    if not data:
        st.error("The uploaded file is empty.")
        st.info("**What to do:** upload a JPEG or PNG image.")
        return None
    if len(data) > MAX_UPLOAD_BYTES:
        st.error("The uploaded file is too large (over 20 MB).")
        st.info("**What to do:** upload a smaller image.")
        return None
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        st.error(f"“{upload.name}” is not an image that can be read.")
        st.info("**What to do:** upload a JPEG or PNG image.")
        return None


def main() -> None:
    st.title("Failures")
    st.caption("For a backbone with a linear classifier head: which features pushed a "
               "misclassified image toward the predicted class, and which toward the true class, "
               "each with its concepts — so you can see which (possibly spurious) concepts "
               "caused the error.")
    opened = views.open_page("image")
    if opened is None:
        return
    fb, settings = opened
    fails = errors.call(loaders.failures, fb, what="Misclassified images cannot be listed")
    if fails is None:
        return
    acc = errors.attempt(fb.accuracy)[0]
    c = st.columns(3)
    c[0].metric("Probe images", fb.num_images)
    c[1].metric("Misclassified", len(fails))
    if acc is not None:
        c[2].metric("Accuracy", f"{acc:.1%}")
    k = st.slider("Features per side", 1, 10, 3, key="fail_k")

    source = st.radio("Image", ["A misclassified probe image", "Upload an image"],
                      horizontal=True, key="fail_source")
    if source == "Upload an image":
        upload = st.file_uploader("Image", type=["png", "jpg", "jpeg", "webp", "bmp"],
                                  key="fail_upload")
        names = errors.attempt(fb.class_names)[0] or []
        true = st.selectbox("Its true class (optional)", options=list(range(len(names))),
                            index=None, format_func=lambda i: names[i], key="fail_true",
                            placeholder="Unknown")
        if upload is None:
            st.caption("Upload a picture to see which features drive the classifier's decision.")
            return
        image = _read_upload(upload)
        if image is None:
            return
        fx = loaders.with_progress(fb, "Explaining the decision…", fb.explain_failure, k=k,
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
        fx = loaders.with_progress(fb, "Explaining the decision…", fb.explain_failure,
                                   int(index), k=k, settings=settings,
                                   what=f"Image {index} could not be explained")
        shown = loaders.view(fb, int(index))
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
                           __import__("json").dumps(fx.to_dict(), indent=2),
                           file_name=f"falcon_failure_{fx.index}.json",
                           mime="application/json", key="dl_failure")
    a, b = st.columns(2)
    with a:
        _side(fb, fx.toward_predicted, f"Toward the predicted class: {fx.predicted_name}",
              settings, "pred", charts.REMOVED_COLOUR)
    with b:
        if fx.true_class < 0:
            st.info("Choose the true class to see the features that pushed toward it.")
        else:
            _side(fb, fx.toward_true, f"Toward the true class: {fx.true_name}", settings,
                  "true", "#2ca02c")


shell.page(main)
