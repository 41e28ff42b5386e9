"""Setup: which backbone, CLIP model, probe set and vocabulary; what is computed; precompute."""

import time

import pandas as pd
import streamlit as st

from falcon_core.cache import human_bytes
from falcon_core.errors import FalconError
from falcon_core.settings import HIGH_RULES, LIMITS, FalconSettings
from falcon_core.workspace import WorkspaceConfig
from ui import errors, links, loaders, presets, shell, state, views
from ui.progress import format_seconds, progress_bar


def _workspace_form(current: WorkspaceConfig) -> None:
    st.markdown("### Models and data")
    st.caption("Presets marked “download” need the internet the first time; on a machine without "
               "it, give a local path, or keep the offline demo world.")
    fields: dict = {}
    problems: list[str] = []
    labels = {"backbone": "Backbone", "clip": "CLIP model", "probe": "Probe images",
              "vocabulary": "Vocabulary (captions)"}
    policy = state.policy()
    if not policy.allow_paths:
        st.caption("Typed paths are off on this server: files and folders are chosen under the "
                   "data folders its operator allows"
                   + (f" ({len(policy.roots)})." if policy.roots else " (none yet).")
                   + " See the README (FALCON_DATA_ROOTS, FALCON_ALLOW_PATHS).")
    cols = st.columns(2)
    for n, (group, plist) in enumerate(presets.GROUPS.items()):
        with cols[n % 2], st.container(border=True):
            key = f"setup:{group}"
            state.seed_widget(key, presets.find(group, current))
            idx = st.selectbox(labels[group], options=list(range(len(plist))), key=key,
                               format_func=lambda i, pl=plist: pl[i].label
                               + (" — download" if pl[i].downloads else ""))
            p = plist[idx]
            path = None
            custom = {}
            if p.path:
                pkey = f"setup:{group}:path:{idx}"
                path = _path_input(policy, p, pkey, current)
            for field in p.custom:
                ckey = f"setup:{group}:{field}"
                if not policy.allow_paths:
                    st.caption("Typed model names are off on this server (see the README: "
                               "FALCON_ALLOW_PATHS).")
                    continue
                state.seed_widget(ckey, str(getattr(current, field) or ""))
                custom[field] = st.text_input(field.replace("_", " ").capitalize(), key=ckey)
            chosen = presets.apply(p, path, custom)
            miss = presets.missing(p, chosen)
            if miss:
                problems.append(miss)
            fields.update(chosen)
            if group == "backbone":
                state.seed_widget("setup:layer", current.layer or "")
                fields["layer"] = st.text_input(
                    "Layer (blank: the pooled output before the classifier head)",
                    key="setup:layer",
                    help="A module name such as layer3 (its output is mean-pooled over H×W) or "
                         "'<module>:input'.").strip() or None
                if str(fields.get("backbone") or "").startswith("timm:vit") or "vit" in str(
                        fields.get("backbone") or "").lower():
                    state.seed_widget("setup:token_pool", current.token_pool)
                    fields["token_pool"] = st.radio(
                        "ViT tokens", ["cls", "mean"], key="setup:token_pool", horizontal=True,
                        help="cls: the CLS token; mean: the mean of the patch tokens.")
    new = current.replace(**fields)
    c1, c2 = st.columns([1, 1])
    open_clicked = c1.button("Open this workspace", type="primary", key="setup_open",
                             disabled=bool(problems))
    demo_clicked = c2.button("Back to the demo world", key="setup_demo",
                             disabled=current == WorkspaceConfig.demo())
    for p in problems:
        st.caption(f":material/warning: {p}")
    if demo_clicked:
        state.set_workspace(WorkspaceConfig.demo())
        _clear_setup_widgets()
        st.rerun()
    if open_clicked:
        try:  # checked like a link, except what the operator lets users type
            typed = links.TYPED_FIELDS if policy.allow_paths else ()
            for k, v in new.to_dict().items():
                if k not in typed:
                    policy.check_field(k, v)
        except FalconError as e:
            errors.show_falcon_error(e, "This workspace cannot be opened")
            return
    if open_clicked and loaders.falcon(new, offer_demo=False) is not None:
        state.set_workspace(new)
        st.rerun()


def _path_input(policy, preset, key: str, current: WorkspaceConfig) -> str | None:
    """A typed path (when this server allows it) or a choice among the files and folders under
    its data folders."""
    now = presets.current_path(preset, current)
    if policy.allow_paths:
        state.seed_widget(key, now)
        return st.text_input("Local path", key=key, help=preset.path_help,
                             placeholder=preset.path_help)
    kind = "laion" if preset.prefix == "laion:" else preset.path
    options = policy.candidates(kind)
    if not options:
        st.caption("No file or folder for this under the data folders of this server.")
        return None
    if now in options:
        state.seed_widget(key, now)
    return st.selectbox("Under the data folders", options, index=None, key=key,
                        help=preset.path_help, placeholder="Choose one",
                        format_func=lambda v: _under_root(policy, v))


def _under_root(policy, value: str) -> str:
    from pathlib import Path

    for root in policy.roots:
        try:
            return f"{root.name}/{Path(value).relative_to(root).as_posix()}".rstrip("/.")
        except ValueError:
            continue
    return Path(value).name


def _clear_setup_widgets() -> None:
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith("setup:"):
            del st.session_state[key]


def _status(falcon) -> dict | None:
    status = errors.call(falcon.status, what="What is computed cannot be listed")
    if status is None:
        return None
    st.markdown("### What is already computed")
    c = st.columns(4)
    c[0].metric("Representations (Stage 1)", "done" if status["representations"] else "not yet")
    c[1].metric("Features explained", f"{status['explained_features']} / "
                                      f"{status['num_features']}")
    c[2].metric("Probe images", falcon.num_images)
    c[3].metric("Cache size", human_bytes(status["cache_bytes"]))
    st.caption(f"Cache folder: `{status['cache_root']}` (set FALCON_CACHE to move it). "
               "Explanations computed with other settings are kept too.")
    with st.expander("Cache contents and workspace details"):
        entries = falcon.cache.entries()
        if entries:
            df = pd.DataFrame(entries)
            agg = df.groupby("namespace").agg(entries=("key", "count"),
                                              size=("size_bytes", "sum"),
                                              unfinished=("complete", lambda s: int((~s).sum())))
            agg["size"] = agg["size"].map(human_bytes)
            st.dataframe(agg.reset_index(), hide_index=True)
        desc = errors.or_none(falcon.describe)
        if desc:
            st.json(desc, expanded=False)
    return status


def _precompute(falcon, settings: FalconSettings, status: dict) -> None:
    st.markdown("### Precompute explanations")
    st.caption("Explains many features at once so the feature list, the concept search and the "
               "coherence ranking cover them. Each explanation is saved as soon as it is done: "
               "you can leave this page (or stop) at any time and resume later.")
    r = falcon.num_features
    c1, c2 = st.columns(2)
    state.seed_widget("pre_first", 0)
    state.seed_widget("pre_count", min(r, 64))
    first = int(c1.number_input("From feature", 0, r - 1, step=1, key="pre_first"))
    count = int(c2.number_input("How many features", 1, r, step=1, key="pre_count"))
    feats = list(range(first, min(r, first + count)))
    done = set(loaders.feature_table(falcon, settings)["feature"].tolist())
    todo = [f for f in feats if f not in done]
    st.caption(f"{len(feats) - len(todo)} of these {len(feats)} are already explained; "
               f"{len(todo)} to go.")
    if not st.button("Start / resume the precompute", type="primary", key="pre_start",
                     disabled=not todo):
        return
    t0 = time.monotonic()
    with progress_bar(falcon, "Explained", main_stage="features"):
        result = errors.call(falcon.precompute, todo, settings, what="The precompute stopped")
    if result is None:
        return
    no_exp = {f: m for f, m in result.items() if m}
    n = len(result) - len(no_exp)
    st.success(f"Explained {n} feature{'' if n == 1 else 's'} in "
               f"{format_seconds(time.monotonic() - t0)}.")
    if no_exp:
        with st.expander(f"{len(no_exp)} features have no explanation (why)"):
            st.dataframe(pd.DataFrame([{"feature": f, "reason": m} for f, m in no_exp.items()]),
                         hide_index=True)


RULE_LABELS = {"global": "Global α = mean + k·std (authors)", "topk": "Top-k per feature",
               "quantile": "Per-feature quantile"}
# (setting, column, widget, label, widget options): the method settings form, in order
SETTINGS_FORM = [  # (setting, column, widget, label, options); ranges: the settings' LIMITS
    ("high_rule", 0, "select", "Highly activating images", {}),
    ("alpha_std", 0, "number", "k (α = mean + k·std)", dict(step=0.5)),
    ("top_k", 1, "number", "Top-k", dict(step=1)),
    ("quantile", 1, "number", "Quantile", dict(step=0.005, format="%.4f")),
    ("cam_threshold", 2, "slider", "GradCAM mask threshold", dict(step=0.05)),
    ("cam_box_margin", 2, "number", "Crop margin (CAM cells; authors: 0)", dict(step=0.5)),
    ("captions_per_image", 2, "number", "Captions per image", dict(step=1)),
    ("caption_index", 2, "select", "Caption search", dict(labels={
        "exact": "Exact: every caption scored (up to a few million)",
        "ivfpq": "IVF-PQ index (LAION scale; built with python -m falcon_core index build)"})),
    ("top_words", 0, "number", "Top words", dict(step=1)),
    ("top_phrases", 1, "number", "Top phrases", dict(step=1)),
    ("coherence_threshold", 2, "slider", "Interpretable if coherence >", dict(step=0.01)),
    ("normalize_rows", 0, "checkbox", "Row-normalise the representations (authors)", {}),
    ("contrast", 1, "checkbox", "Remove spurious concepts (contrast step)", {}),
]


def _setting_widget(column, name: str, kind: str, label: str, options: dict, value):
    key = f"w:{name}:form"
    state.seed_widget(key, value)
    if kind == "select":  # a choice among the setting's LIMITS (the rules: those registered)
        choices = list(HIGH_RULES) if name == "high_rule" else list(LIMITS[name].allowed())
        return column.selectbox(label, choices, key=key,
                                format_func=options.get("labels", RULE_LABELS).get)
    if kind == "checkbox":
        return column.checkbox(label, key=key)
    widget = column.slider if kind == "slider" else column.number_input
    low, high = state.bounds(name)
    return widget(label, low, high, key=key, **options)


def _settings_form() -> None:
    s = state.settings()
    base = state.base_settings(state.workspace())
    changed = state.settings_overrides(s, base)
    note = (f" — changed: {', '.join(changed)}" if changed else "")
    with st.expander("Method settings (the authors' defaults; on the demo world the top-k rule)"
                     + note):
        with st.form("settings_form"):
            c = st.columns(3)
            values = {name: _setting_widget(c[col], name, kind, label, opts, getattr(s, name))
                      for name, col, kind, label, opts in SETTINGS_FORM}
            applied = st.form_submit_button("Apply settings")
        if applied:
            try:
                new = s.replace(**{k: type(getattr(s, k))(v) for k, v in values.items()})
            except FalconError as e:
                errors.show_falcon_error(e, "These settings cannot be used")
                return
            state.set_settings(new)
            st.success("Settings applied: explanations with them are computed when needed.")
        if st.button("Reset every setting to this workspace's defaults", key="settings_reset"):
            state.set_settings(state.base_settings(state.workspace()))
            for key in list(st.session_state.keys()):
                if isinstance(key, str) and key.startswith("w:") and key.endswith(":form"):
                    del st.session_state[key]
            st.rerun()


def main() -> None:
    st.title("Setup")
    st.caption("Choose the vision model to explain, the CLIP model that matches crops to "
               "captions, the probe images and the caption vocabulary. The app starts on an "
               "offline demo world with tiny models, so everything works without a download.")
    views.show_url_problems()
    current = state.workspace()
    st.info(f"**Current workspace:** {loaders.describe_workspace(current)}", icon=":material/folder_open:")
    _workspace_form(current)
    _settings_form()
    falcon = loaders.falcon(current)
    if falcon is None:
        return
    views.show_cache_notices(falcon)
    for note in (getattr(falcon.vocabulary, "report", None) or {}).get("notes", []):
        st.warning(note, icon=":material/text_snippet:")
    status = _status(falcon)
    if status is None:
        return
    _precompute(falcon, state.settings(), status)


shell.page(main)
