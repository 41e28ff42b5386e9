"""``Falcon``: one workspace and everything FALCON computes on it, behind one object.

The command line, the app and the benchmarks call ``Falcon.from_config(...)`` and the methods
below. ``Falcon`` does no work itself: it builds four parts, split along the data they own, and
hands each call to the part that answers it:

======================  =============================================  ============================
part                    owns                                           module
======================  =============================================  ============================
``store``               Stage 1: ``H``, ``Hn``, α, ε, skipped images   :mod:`.representation_store`
``explainer``           Stages 2-7 for one feature or group            :mod:`.explainer`
``failure_analyser``    Stage 9: the head, labels, failures            :mod:`.failure_analyser`
``catalogue``           many features: explained, search, groups, ...  :mod:`.catalogue`
======================  =============================================  ============================
"""

from __future__ import annotations

import functools
from typing import Callable

from .cache import DiskCache
from .catalogue import Catalogue
from .explainer import NoHighImagesError  # noqa: F401  (part of this module's API)
from .explainer import Explainer
from .failure_analyser import FailureAnalyser, FailureExplanation  # noqa: F401
from .progress import Progress, null_progress
from .representation_store import RepresentationStore
from .settings import FalconSettings


def _delegate(part: str, method: Callable) -> Callable:
    """A method of Falcon that calls ``self.<part>.<method>`` (same signature and docstring)."""
    name = method.__name__

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return getattr(getattr(self, part), name)(*args, **kwargs)

    return call


def _delegate_property(part: str, prop: property) -> property:
    name = prop.fget.__name__
    return property(lambda self: getattr(getattr(self, part), name), doc=prop.__doc__)


class Falcon:
    """Explains the features of one backbone with one CLIP model, probe set and vocabulary."""

    def __init__(self, backbone, clip, probe, vocabulary, settings: FalconSettings | None = None,
                 cache: DiskCache | None = None, progress: Progress | None = None,
                 config=None, engine=None):
        self.backbone = backbone
        self.clip = clip
        self.probe = probe
        self.vocabulary = vocabulary
        self.settings = settings or FalconSettings()
        self.cache = cache or DiskCache()
        self.progress = progress or null_progress
        self.config = config
        # where Stage 1, the text embeddings and the precompute run (falcon_core.engines)
        from .engines import LocalEngine

        self.engine = engine or LocalEngine()
        remote = None if self.engine.name == "local" else self.engine
        self.store = RepresentationStore(backbone, probe, self.cache, self.settings, self.progress,
                                         engine=remote)
        self.store.config = config
        self.explainer = Explainer(self.store, clip, vocabulary, self.cache, self.settings,
                                   self.progress)
        self.explainer.engine = remote
        self.failure_analyser = FailureAnalyser(self.store, self.explainer)
        self.catalogue = Catalogue(self.store, self.explainer, self.cache, self.settings,
                                   self.progress)
        self.failure_analyser.prefill = self.catalogue.prefill
        # Seconds spent per stage by this object (cache hits are cheap and show as such).
        self.timings = self.explainer.timings

    @classmethod
    def from_config(cls, config=None, settings: FalconSettings | None = None,
                    cache_dir: str | None = None, progress: Progress | None = None,
                    engine=None) -> "Falcon":
        """Build the workspace's models and data (``config``: a WorkspaceConfig; the demo world
        when None), with the workspace's default settings unless ``settings`` are given."""
        from .workspace import WorkspaceConfig

        config = config or WorkspaceConfig.demo()
        say = progress or null_progress
        say(0, 4, "opening the workspace")
        backbone = config.build_backbone()
        say(1, 4, "opening the workspace")
        clip = config.build_clip()
        say(2, 4, "opening the workspace")
        probe = config.build_probe(backbone, progress=progress)
        say(3, 4, "opening the workspace")
        vocabulary = config.build_vocabulary()
        say(4, 4, "opening the workspace")
        falcon = cls(backbone, clip, probe, vocabulary, settings=settings or config.default_settings(),
                     cache=DiskCache(cache_dir), progress=progress, config=config, engine=engine)
        from .demo.prefill import install  # the demo world's shipped results (only if they match)

        install(falcon, progress=falcon.progress)
        return falcon

    # ---- Stage 1 and what is derived from H: the representation store -----------------------
    num_features = _delegate_property("store", RepresentationStore.num_features)
    num_images = _delegate_property("store", RepresentationStore.num_images)
    skipped_images = _delegate_property("store", RepresentationStore.skipped_images)
    alpha = _delegate_property("store", RepresentationStore.alpha)
    representations = _delegate("store", RepresentationStore.representations)
    normalized = _delegate("store", RepresentationStore.normalized)
    alpha_for = _delegate("store", RepresentationStore.alpha_for)
    low_threshold_for = _delegate("store", RepresentationStore.low_threshold_for)
    features = _delegate("store", RepresentationStore.features)
    feature_stats = _delegate("store", RepresentationStore.feature_stats)
    high_mask = _delegate("store", RepresentationStore.high_mask)
    view = _delegate("store", RepresentationStore.view)
    image_features = _delegate("store", RepresentationStore.image_features)

    # ---- Stages 2-7 for one feature or group: the explainer ----------------------------------
    inputs = _delegate_property("explainer", Explainer.inputs)
    extractor = _delegate_property("explainer", Explainer.extractor)
    describe = _delegate("explainer", Explainer.describe)
    explain = _delegate("explainer", Explainer.explain)
    try_explain = _delegate("explainer", Explainer.try_explain)
    cached_explanation = _delegate("explainer", Explainer.cached_explanation)
    explanation_key = _delegate("explainer", Explainer.explanation_key)
    select_high = _delegate("explainer", Explainer.select_high)
    select_low = _delegate("explainer", Explainer.select_low)
    cams = _delegate("explainer", Explainer.cams)
    text_embeddings = _delegate("explainer", Explainer.text_embeddings)
    document_frequencies = _delegate("explainer", Explainer.document_frequencies)
    concept_table = _delegate("explainer", Explainer.concept_table)
    caption_scale = _delegate("explainer", Explainer.caption_scale)
    spurious_threshold = _delegate("explainer", Explainer.spurious_threshold)

    def view_embeddings(self, compute: bool = True):
        """CLIP embeddings of every probe view, encoded once (see :mod:`.calibration`)."""
        return self.explainer.calibration.view_embeddings(compute)

    # ---- Stage 9: the failure analyser -------------------------------------------------------
    class_names = _delegate("failure_analyser", FailureAnalyser.class_names)
    labels = _delegate("failure_analyser", FailureAnalyser.labels)
    failures = _delegate("failure_analyser", FailureAnalyser.failures)
    accuracy = _delegate("failure_analyser", FailureAnalyser.accuracy)
    explain_failure = _delegate("failure_analyser", FailureAnalyser.explain_failure)
    failure_summary = _delegate("failure_analyser", FailureAnalyser.summary)

    # ---- many features at once: the catalogue ------------------------------------------------
    explained = _delegate("catalogue", Catalogue.explained)
    precompute = _delegate("catalogue", Catalogue.precompute)
    search = _delegate("catalogue", Catalogue.search)
    groups = _delegate("catalogue", Catalogue.groups)
    groups_hint = _delegate("catalogue", Catalogue.groups_hint)
    coactivation = _delegate("catalogue", Catalogue.coactivation)
    status = _delegate("catalogue", Catalogue.status)
