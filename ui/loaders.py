"""Cached access to the library: one Falcon per workspace (``st.cache_resource``), derived
tables and pictures (``st.cache_data``); explanations themselves live in Falcon's disk cache."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import streamlit as st

from falcon_core.errors import FalconError, OfflineError
from falcon_core.settings import FalconSettings
from falcon_core.workspace import WorkspaceConfig

from . import errors, images, state
from .progress import ProgressRouter, progress_bar


def cache_root() -> str:
    return os.environ.get("FALCON_CACHE", "")


@st.cache_resource(show_spinner=False, max_entries=4)
def _build_falcon(config_items: tuple, cache_dir: str):
    from falcon_core.pipeline import Falcon

    config = WorkspaceConfig.from_dict(dict(config_items))
    return Falcon.from_config(config, progress=ProgressRouter(), cache_dir=cache_dir or None)


_run = threading.local()  # this script run's opened Falcon (per session thread)


def opened():
    """The current workspace's Falcon if this script run opened it (else None); the frame resets
    it at the start of each run."""
    return getattr(_run, "opened", None)


def forget_opened() -> None:
    _run.opened = None


def _open(config: WorkspaceConfig):
    # A spinner, not a progress bar: st.cache_resource records the elements its function touches
    # and replays them, so a bar fed from inside _build_falcon breaks the next run. Opening is
    # quick now (the demo's scenes render on demand, its heavy results ship in assets/prefill/);
    # what is still computed (Stage 1, text embeddings, ...) happens in the first explanation,
    # under its progress bar with the time left.
    with st.spinner(f"Opening {describe_workspace(config)}…"):
        return _build_falcon(state.config_key(config), cache_root())


def _open_or_say_why(config: WorkspaceConfig):
    """The Falcon of ``config``, or None after saying why it cannot be opened. What is expected
    (bad input, no network, an unusable cache folder) is a message; anything else (a third-party
    loader's own error on a user's model) is shown as a bug, with its details, and the caller
    still offers the way back to the demo world."""
    what = "The workspace could not be opened"
    try:
        return _open(config)
    except OfflineError as e:
        errors.show_falcon_error(e, "Cannot download what this workspace needs")
    except FalconError as e:
        errors.show_falcon_error(e, what)
    except OSError as e:  # e.g. the demo world's files under a cache folder that is unusable
        from falcon_core.cache import cache_problem, default_cache_root

        root = Path(cache_root()) if cache_root() else default_cache_root()
        name = str(getattr(e, "filename", "") or "")
        if name == str(root) or name.startswith(str(root) + os.sep):
            errors.show_falcon_error(cache_problem(root, e, kept_in_memory=False), what)
        else:
            errors.show_unexpected(e, what)
    except Exception as e:  # noqa: BLE001 - see above: shown as a bug, never a raw traceback
        errors.show_unexpected(e, what)
    return None


def describe_workspace(config: WorkspaceConfig) -> str:
    """The workspace in words; a file or folder of the server shows by its name only (the page
    may be seen by anyone with a link)."""
    if config == WorkspaceConfig.demo():
        return "the offline demo world"

    def name(v):
        return Path(str(v)).name if v and ("/" in str(v) or "\\" in str(v)) else v

    parts = [f"backbone {config.backbone}" + (f" ({name(config.weights)})" if config.weights
                                              else ""),
             f"CLIP {name(config.clip)}", f"probe {name(config.probe)}",
             f"vocabulary {name(config.vocabulary)}"]
    if config.layer:
        parts.insert(1, f"layer {config.layer}")
    return ", ".join(parts)


def falcon(config: WorkspaceConfig | None = None, offer_demo: bool = True):
    """The Falcon of the current workspace (or of ``config``), or None after saying why it
    cannot be opened (and, with ``offer_demo``, offering the demo world)."""
    config = config or state.workspace()
    opened = _open_or_say_why(config)
    if opened is not None:
        if config == state.workspace():
            _run.opened = opened
        return opened
    if offer_demo and config != WorkspaceConfig.demo():
        st.info("You can go back to the offline demo world, which needs no download.")
        if st.button("Use the demo world", key="back_to_demo"):
            state.set_workspace(WorkspaceConfig.demo())
            st.rerun()
    return None


def with_progress(falcon, label: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the library's progress shown as a bar; errors shown."""
    with progress_bar(falcon, label):
        return errors.call(fn, *args, **kwargs)


def explain(falcon, features, settings: FalconSettings | None = None, what: str | None = None):
    """The explanation of a feature or group (from the disk cache when it exists)."""
    settings = settings or state.settings()
    cached = errors.or_none(falcon.cached_explanation, features, settings)
    if cached is not None:
        return cached
    return with_progress(falcon, "Explaining…", falcon.explain, features, settings=settings, what=what)


def explanations_stamp(falcon) -> int:
    """Changes whenever an explanation is added to the disk cache (for st.cache_data keys)."""
    try:
        return Path(falcon.cache.root, "explanations").stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(show_spinner=False, max_entries=16)
def _feature_table(_falcon, config_items: tuple, settings_items: tuple, stamp: int):
    import pandas as pd

    settings = FalconSettings(**dict(settings_items))
    done = _falcon.explained(settings)
    stats = _falcon.feature_stats(settings)
    rows = []
    for f, exp in done.items():
        coh = exp.coherence
        rows.append({"feature": int(f),
                     "coherence": None if coh is None or coh != coh else round(float(coh), 4),
                     "interpretable": bool(exp.interpretable),
                     "top concepts": ", ".join(exp.top_concepts(4)),
                     "faithfulness": _faithfulness(exp),
                     "high images": int(exp.high_selection.get("n_used", len(exp.high))),
                     "spurious removed": len(exp.spurious_words) + len(exp.spurious_phrases),
                     "max activation": round(float(stats["max"][f]), 4)})
    df = pd.DataFrame(rows, columns=["feature", "coherence", "interpretable", "top concepts",
                                     "faithfulness", "high images", "spurious removed",
                                     "max activation"])
    if len(df):
        df = df.sort_values(["coherence", "feature"], ascending=[False, True],
                            na_position="last").reset_index(drop=True)
    return df


def _faithfulness(exp) -> float | None:
    """The kept concepts' faithfulness AUC, rounded (None: not computed; see issue 12)."""
    auc = exp.faithfulness_auc
    return None if auc != auc else round(float(auc), 3)


def feature_table(falcon, settings: FalconSettings | None = None):
    """Features explained so far (with these settings), sorted by coherence, best first."""
    settings = settings or state.settings()
    return _feature_table(falcon, state.config_key(falcon.config or state.workspace()),
                          state.settings_key(settings), explanations_stamp(falcon))


def busiest_feature(falcon, settings: FalconSettings) -> int:
    """The feature with the most highly activating images (a good first feature to show)."""
    stats = errors.or_none(falcon.feature_stats, settings)
    if stats is None:
        return 0
    return int(np.argmax(np.asarray(stats["n_high"])))


@st.cache_data(show_spinner=False, max_entries=256)
def _view(_falcon, config_items: tuple, index: int):
    return _falcon.view(index)


def view(falcon, index: int):
    """Probe image ``index`` as the backbone sees it (a placeholder when unreadable)."""
    try:
        return _view(falcon, state.config_key(falcon.config or state.workspace()), int(index))
    except FalconError:  # an unreadable image (BadImageError) must not break a grid
        return images.placeholder()


@st.cache_data(show_spinner=False, max_entries=64)
def _annotated_high(_falcon, config_items: tuple, features: tuple, settings_items: tuple,
                    records: tuple) -> list[tuple[Any, Any]]:
    settings = FalconSettings(**dict(settings_items))
    cams = _falcon.cams(list(features), settings)
    out = []
    for index, box, fallback in records:
        im = view(_falcon, index)
        cam = cams.get(int(index))
        out.append((images.annotated(im, cam, box, fallback), images.crop(im, box)))
    return out


def annotated_high(falcon, exp, settings: FalconSettings, n: int):
    """[(view with CAM + box, crop)] for the first ``n`` highly activating images of ``exp``."""
    records = tuple((r.index, tuple(r.box) if r.box else None, bool(r.box_fallback))
                    for r in exp.high[:n])
    return _annotated_high(falcon, state.config_key(falcon.config or state.workspace()),
                           tuple(exp.features), state.settings_key(settings), records)


@st.cache_data(show_spinner=False, max_entries=16)
def _normalized_column(_falcon, config_items: tuple, normalize: bool, feature: int) -> np.ndarray:
    Hn = _falcon.normalized(normalize)
    _, valid = _falcon.representations()
    return np.asarray(Hn[valid, feature], dtype=np.float32)


def activations(falcon, feature: int, settings: FalconSettings) -> np.ndarray:
    return _normalized_column(falcon, state.config_key(falcon.config or state.workspace()),
                              bool(settings.normalize_rows), int(feature))


@st.cache_data(show_spinner=False, max_entries=8)
def _groups(_falcon, config_items: tuple, settings_items: tuple):
    settings = FalconSettings(**dict(settings_items))
    return [(tuple(int(f) for f in g.features), int(g.n_images)) for g in _falcon.groups(settings)]


def groups(falcon, settings: FalconSettings) -> list[tuple[tuple[int, ...], int]]:
    """Discovered groups as (features, number of images), largest first."""
    out = _groups(falcon, state.config_key(falcon.config or state.workspace()),
                  state.settings_key(settings))
    return sorted(out, key=lambda g: (-g[1], g[0]))


@st.cache_data(show_spinner=False, max_entries=8)
def _failures(_falcon, config_items: tuple):
    return _falcon.failures()


def failures(falcon):
    return _failures(falcon, state.config_key(falcon.config or state.workspace()))


def grid_png(pictures: Sequence, labels: Sequence[str], title: str, cols: int = 6) -> bytes:
    return images.png_bytes(images.grid(list(pictures), list(labels), cols=cols, title=title))
