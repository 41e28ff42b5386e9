"""Cached access to the library: one Falcon per workspace (``st.cache_resource``), derived
tables and pictures (``st.cache_data``); explanations themselves live in Falcon's disk cache."""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import streamlit as st

from falcon_core.errors import FalconError, OfflineError
from falcon_core.settings import FalconSettings
from falcon_core.workspace import WorkspaceConfig

from . import errors, images, state
from .progress import ProgressRouter, format_seconds, progress_bar


def cache_root() -> str:
    return os.environ.get("FALCON_CACHE", "")


# Opening a workspace (issue 9: a progress bar with the time left while anything is built).
#
# The Falcon of a workspace is one object per server process, kept by st.cache_resource. Its
# building (models, probe set, vocabulary) and the workspace-level work every explanation needs
# (Stage 1, the text embeddings, ...: see ``preparation``) are done by :func:`_open`, a plain
# function, under a bar the page draws; the cached function then only takes the object over.
# Nothing that touches a widget runs inside st.cache_resource (it records the elements its
# function touches and replays them: a bar fed from inside it broke the next run).
_opening = threading.Lock()
_workspace_locks: dict[tuple, threading.Lock] = {}
_handoff: dict[tuple, Any] = {}  # (config_items, cache_dir) -> the Falcon _open has just built
_live: "weakref.WeakValueDictionary[tuple, Any]" = weakref.WeakValueDictionary()
_prepared: "weakref.WeakSet[Any]" = weakref.WeakSet()  # Falcons whose preparation is done


def _new_falcon(config_items: tuple, cache_dir: str, router: ProgressRouter):
    from falcon_core.pipeline import Falcon

    config = WorkspaceConfig.from_dict(dict(config_items))
    return Falcon.from_config(config, progress=router, cache_dir=cache_dir or None)


@st.cache_resource(show_spinner=False, max_entries=4)
def _build_falcon(config_items: tuple, cache_dir: str):
    """The workspace's Falcon, kept for every session of this process: the one :func:`_open`
    has just built (with the page's progress bar), else built here, silently."""
    handed = _handoff.get((config_items, cache_dir))
    if handed is not None:
        return handed
    return _new_falcon(config_items, cache_dir, ProgressRouter())


OPENING = "the models, the probe set and the vocabulary"


def _concepts(falcon) -> None:
    """The vocabulary's concept table (explanations look their captions' concepts up in it);
    spaCy itself is loaded only where there is none (a vocabulary above its size limit)."""
    if falcon.concept_table() is None:
        falcon.extractor.nlp


def preparation(settings: FalconSettings) -> list[tuple[str, Any]]:
    """The workspace-level work the first explanation would otherwise do inside its own bar,
    as (what, call(falcon)) steps. Each is computed once, then read from the disk cache or
    memory, so on a prepared workspace they all return at once."""
    steps: list[tuple[str, Any]] = [
        ("Stage 1, the representations of the probe images", lambda f: f.representations()),
        ("the activation statistics", lambda f: f.feature_stats(settings)),
        ("the CLIP text embeddings of the vocabulary", lambda f: f.text_embeddings()),
        ("the CLIP embeddings of the probe images", lambda f: f.view_embeddings()),
        ("the concepts of every caption (spaCy, once per vocabulary)", _concepts),
    ]
    if settings.concept_hygiene:
        steps.append(("the concepts' document frequencies", lambda f: f.document_frequencies()))
    if settings.spurious_rule == "relative":
        steps.append(("the CLIP's similarity scale", lambda f: f.spurious_threshold(settings)))
    return steps


def prepare(falcon, label: str, settings: FalconSettings | None = None,
            opening: tuple[tuple, str] | None = None):
    """Build (with ``opening``: ``(config_items, cache_dir)``; ``falcon`` is then None) and
    prepare a workspace under a progress bar that says the step, its stage and the time left
    from the throughput so far. Returns ``(falcon, seconds)``. A step that fails with a
    FalconError is left to the page, which meets the error where it needs the result and says
    it there; a failure to build propagates."""
    from .progress import steps_bar

    steps = preparation(settings or state.settings())
    names = ([OPENING] if opening else []) + [name for name, _ in steps]
    router = ProgressRouter() if opening else getattr(falcon, "progress", None)
    with steps_bar(router, label, names) as bar:
        if opening:
            bar.step(0)
            falcon = _new_falcon(*opening, router)
        first = len(names) - len(steps)
        for i, (_, call) in enumerate(steps):
            bar.step(first + i)
            try:
                call(falcon)
            except FalconError:
                pass
        bar.step(len(names))
        seconds = bar.tracker.elapsed()
    _prepared.add(falcon)
    return falcon, seconds


_run = threading.local()  # this script run's opened Falcon (per session thread)


def opened():
    """The current workspace's Falcon if this script run opened it (else None); the frame resets
    it at the start of each run."""
    return getattr(_run, "opened", None)


def forget_opened() -> None:
    _run.opened = None


def ensure_prepared(falcon, label: str, settings: FalconSettings | None = None):
    """``falcon`` (a workspace the page holds, e.g. the Compare page's model B), prepared under
    a progress bar the first time (see :func:`prepare`); other sessions wait for it."""
    lock = _lock_for(("prepare", id(falcon)))
    with lock:
        if falcon not in _prepared:
            prepare(falcon, label, settings)
    return falcon


def _lock_for(key: tuple) -> threading.Lock:
    with _opening:
        return _workspace_locks.setdefault(key, threading.Lock())


def _open(config: WorkspaceConfig):
    """The workspace's Falcon, opened and prepared under a progress bar the first time in this
    process (another session opening the same workspace at the same time waits for it)."""
    key = (state.config_key(config), cache_root())
    lock = _lock_for(key)
    if not lock.acquire(blocking=False):
        with st.spinner(f"Opening {describe_workspace(config)} (another visitor is opening "
                        "it)…"):
            lock.acquire()
    try:
        falcon = _live.get(key)
        elapsed = None
        if falcon is None:
            falcon, elapsed = prepare(None, f"Opening {describe_workspace(config)}:",
                                      opening=key)
        elif falcon not in _prepared:
            falcon, elapsed = prepare(falcon, f"Preparing {describe_workspace(config)}:")
        _handoff[key] = falcon
        try:
            got = _build_falcon(*key)
        finally:
            _handoff.pop(key, None)
        _live[key] = got
        if got is not falcon and got not in _prepared:  # st.cache_resource kept an older one
            got, _ = prepare(got, f"Preparing {describe_workspace(config)}:")
    finally:
        lock.release()
    if elapsed is not None:
        st.caption(f"Opened {describe_workspace(config)} in {format_seconds(elapsed)} (the "
                   "models, Stage 1, the text embeddings and what every explanation needs: "
                   "from now on they are ready).")
    return got


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


class ExplainedFeatures:
    """The single-feature explanations of one workspace with one set of settings, as the rows of
    the feature table, each explanation read once: when the cache changes (a feature explained,
    an entry removed) only what changed is read again, not every explanation (issue 9: rebuilding
    the whole table after each new explanation read all of them, ~5 ms each, on the click of a
    never-seen feature). The cache keys of the features are computed once: they depend on the
    workspace's fingerprints, fixed for one Falcon, and on the settings, fixed for this object."""

    COLUMNS = ["feature", "coherence", "interpretable", "top concepts", "faithfulness",
               "high images", "spurious removed", "max activation"]

    def __init__(self, falcon, settings: FalconSettings) -> None:
        self.falcon, self.settings = falcon, settings
        self._keys: list[str] | None = None
        self._rows: dict[int, dict[str, Any]] = {}
        self._stamp: int | None = None
        self._table = None
        self._lock = threading.Lock()

    def _row(self, f: int, exp, stats) -> dict[str, Any]:
        coh = exp.coherence
        return {"feature": int(f),
                "coherence": None if coh is None or coh != coh else round(float(coh), 4),
                "interpretable": bool(exp.interpretable),
                "top concepts": ", ".join(exp.top_concepts(4)),
                "faithfulness": _faithfulness(exp),
                "high images": int(exp.high_selection.get("n_used", len(exp.high))),
                "spurious removed": len(exp.spurious_words) + len(exp.spurious_phrases),
                "max activation": round(float(stats["max"][f]), 4)}

    def table(self, stamp: int):
        """The table (a DataFrame sorted by coherence, best first) as of cache stamp ``stamp``
        (:func:`explanations_stamp`; 0, e.g. a cache kept in memory: looked at every time)."""
        import pandas as pd

        with self._lock:
            if self._table is not None and stamp and stamp == self._stamp:
                return self._table
            falcon, settings = self.falcon, self.settings
            if self._keys is None:
                self._keys = [falcon.explanation_key(f, settings)
                              for f in range(falcon.num_features)]
            stats = None
            for f, key in enumerate(self._keys):
                there = falcon.cache.exists("explanations", key, ".json")
                if not there:
                    self._rows.pop(f, None)
                    continue
                if f in self._rows:
                    continue
                exp = falcon.cached_explanation(f, settings)  # checked as any read
                if exp is None:
                    continue
                stats = stats if stats is not None else falcon.feature_stats(settings)
                self._rows[f] = self._row(f, exp, stats)
            df = pd.DataFrame([self._rows[f] for f in sorted(self._rows)], columns=self.COLUMNS)
            if len(df):
                df = df.sort_values(["coherence", "feature"], ascending=[False, True],
                                    na_position="last").reset_index(drop=True)
            self._table, self._stamp = df, stamp
            return df


@st.cache_resource(show_spinner=False, max_entries=16)
def _explained_features(_falcon, falcon_id: int, config_items: tuple, settings_items: tuple):
    """One :class:`ExplainedFeatures` per Falcon object and settings (shared by the sessions)."""
    return ExplainedFeatures(_falcon, FalconSettings(**dict(settings_items)))


def _faithfulness(exp) -> float | None:
    """The kept concepts' faithfulness AUC, rounded (None: not computed; see issue 12)."""
    auc = exp.faithfulness_auc
    return None if auc != auc else round(float(auc), 3)


def feature_table(falcon, settings: FalconSettings | None = None):
    """Features explained so far (with these settings), sorted by coherence, best first."""
    settings = settings or state.settings()
    held = _explained_features(falcon, id(falcon),
                               state.config_key(falcon.config or state.workspace()),
                               state.settings_key(settings))
    return held.table(explanations_stamp(falcon))


def busiest_feature(falcon, settings: FalconSettings) -> int:
    """The feature with the most highly activating images (a good first feature to show)."""
    stats = errors.or_none(falcon.feature_stats, settings)
    if stats is None:
        return 0
    return int(np.argmax(np.asarray(stats["n_high"])))


@st.cache_resource(show_spinner=False, max_entries=256)
def _figure(kind: str, key: tuple, _make):
    return _make()


def figure(kind: str, key: tuple, make):
    """The plotly figure ``make()`` builds, built once per ``(kind, key)`` in this server process
    and shared by every session and rerun (issue 9: a seen feature's rerun built its figures
    again, ~15 ms of plotly's validation each). ``key`` must hold everything the figure is drawn
    from (the values, not a name for them), so a figure is never stale. The figure is shared:
    nobody may change it (``st.plotly_chart`` only reads it)."""
    return _figure(kind, key, make)


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
