"""Stages 2-7 for one feature or one group of features: :class:`Explainer`.

``Explainer._explain`` is the one place where the stages meet, in the paper's order:

2. the highly activating images T (:mod:`.stages.selection`),
3. their GradCAM maps and crop boxes (:mod:`.stages.gradcam`, :mod:`.stages.crops`),
4. the CLIP embeddings of the crops and their top captions (:mod:`.stages.captions`),
5. the concepts of those captions and their Word Scores (:mod:`.stages.concepts`),
6. the counterfactual images L and the spurious concepts (:mod:`.stages.contrast`),
7. the coherence of the crops (:mod:`.stages.coherence`),

and the result is one :class:`~falcon_core.explanation.Explanation`, cached on disk as JSON. The
work behind Stages 3-4 for each image (GradCAM maps and boxes, CLIP embeddings of crops and whole
views, the caption search) and the faithfulness score live in :mod:`.explainer_stages`. The
representation matrix (Stage 1, ``Hn``, α) comes from a
:class:`~falcon_core.representation_store.RepresentationStore`; the arrays in between (CAMs, crop
and image embeddings, text embeddings) are cached on disk too.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np

from . import cache_keys
from .cache import DiskCache
from .calibration import Calibration
from .errors import FalconError
from .explainer_stages import ImageStages, faithfulness_texts, score_faithfulness
from .explanation import Concept, Explanation, ImageRecord
from .progress import Progress
from .representation_store import RepresentationStore
from .settings import FalconSettings
from .stages import coherence as coherence_stage
from .stages import concepts as concepts_stage
from .stages import contrast as contrast_stage
from .stages import faithfulness as faithfulness_stage
from .stages import selection as selection_stage

# Stored with each explanation so the app can show provenance; longer lists are cut.
MAX_STORED_SCORES = 200
# Kept concepts stored below the top-n cut (``Explanation.more_words``), per kind.
MAX_MORE_CONCEPTS = MAX_STORED_SCORES
# explain_many ranks the faithfulness plans of its features together once they hold this many
# (probe image x concept) similarities (float32; ~64 MB, and about 4x that while ranking): the
# demo layer's 128 features hold ~1.9M, a 50,000-image probe set ~1.8M per feature.
FAITHFULNESS_GROUP_VALUES = 1 << 24


class NoHighImagesError(FalconError):
    """The chosen rule leaves a feature (or group) with no highly activating image."""


class Explainer(ImageStages):
    """Explains a feature or a group with one CLIP model and vocabulary (see the module; the
    per-image work of Stages 3-4 and the faithfulness score are in :class:`ImageStages`)."""

    def __init__(self, store: RepresentationStore, clip, vocabulary, cache: DiskCache,
                 settings: FalconSettings, progress: Progress,
                 extractor: concepts_stage.ConceptExtractor | None = None):
        if len(vocabulary) == 0:
            raise FalconError("The vocabulary is empty.", "Choose a caption file with captions.")
        self.store = store
        self.backbone = store.backbone
        self.probe = store.probe
        self.clip = clip
        self.vocabulary = vocabulary
        self.cache = cache
        self.settings = settings
        self.progress = progress
        self._A = None
        self.engine = None  # where the text embeddings are computed (falcon_core.engines)
        self._indexes: dict[str, Any] = {}
        # rows already searched, (index tag, row bytes) -> (idx, scores): filled by a precompute
        # for many features at once (ImageStages.share_searches), emptied after it
        self.search_memo: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        # (cams key, threshold, margin) -> crop boxes: cut once by a precompute for the chunk
        # it explains (ImageStages._cam_boxes); None outside a precompute, so nothing is kept
        self.box_memo: dict[tuple, list] | None = None
        # concept text -> its CLIP embedding (ImageStages.concept_embeddings: a row never
        # depends on the texts embedded with it, so keeping them changes no result)
        self.text_memo: dict[str, np.ndarray] = {}
        if hasattr(vocabulary, "use_cache"):  # LAION caption text entries live in our cache
            vocabulary.use_cache(cache)
        self._extractor = extractor  # the default (spaCy) one is loaded when first needed
        self.calibration = Calibration(store, clip, vocabulary, cache, progress)
        # Seconds spent per stage by this object (cache hits are cheap and show as such).
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.describe(),
            "clip": self.clip.describe(),
            "probe": self.probe.describe(),
            "vocabulary": self.vocabulary.describe(),
        }

    @property
    def inputs(self) -> dict[str, Any]:
        """Fingerprints of everything the explanations depend on (stored with each one)."""
        return cache_keys.explanation_inputs(self.backbone, self.clip, self.probe,
                                             self.vocabulary, self.extractor.fingerprint)

    # ---- inputs of the stages --------------------------------------------------------------
    def text_embeddings(self):
        """``A``: the vocabulary's CLIP text embeddings (cached on disk, read block by block)."""
        if self._A is None:
            from .data.vocabulary import text_embeddings

            self._A = text_embeddings(self.vocabulary, self.clip, self.cache,
                                      progress=lambda d, t, s: self.progress(d, t, "text embeddings"),
                                      engine=self.engine, config=self.store.config)
        return self._A

    def caption_index(self, settings: FalconSettings | None = None):
        """The search index of Stage 4 that ``settings.caption_index`` names
        (:mod:`falcon_core.caption_index`; ``exact`` needs nothing built)."""
        from . import caption_index as ci

        kind = (settings or self.settings).caption_index
        if kind not in self._indexes:
            A = self.text_embeddings()
            self._indexes[kind] = ci.open_index(
                kind, A, self.cache, ci.embeddings_id(self.vocabulary, self.clip, A.shape[1]))
        return self._indexes[kind]

    def document_frequencies(self):
        """Each concept's share of the vocabulary's captions (cached; Stage 5's hygiene)."""
        return self.calibration.document_frequencies(self.extractor)

    def concept_table(self):
        """Every vocabulary caption's concepts by row (cached; None above its size limit)."""
        return self.calibration.concept_table(self.extractor)

    def caption_scale(self, k: int | None = None) -> dict[str, Any]:
        """The CLIP's similarity scale on this probe set and vocabulary (cached)."""
        k = int(self.settings.captions_per_image if k is None else k)
        return self.calibration.caption_scale(k, self.inputs, self._whole_embeddings,
                                              self._match_captions)

    def spurious_threshold(self, settings: FalconSettings | None = None) -> dict[str, Any]:
        """The L-score at or above which a concept is spurious, and where it comes from."""
        s = settings or self.settings
        return self.calibration.spurious_threshold(s, self.caption_scale)

    @property
    def extractor(self) -> concepts_stage.ConceptExtractor:
        if self._extractor is None:
            self._extractor = concepts_stage.ConceptExtractor()
        return self._extractor

    # ---- Stage 2 and Stage 6: which images ---------------------------------------------------
    def select_high(self, features, settings: FalconSettings | None = None):
        s = settings or self.settings
        feats = self.store.features(features)
        Hn = self.store.normalized(s.normalize_rows)
        return selection_stage.select_high(
            Hn, feats, rule=s.high_rule, alpha=self.store.alpha_for(s), top_k=s.top_k,
            quantile=s.quantile, max_images=s.max_high_images, valid=self.store.valid,
            k_std=s.alpha_std)

    def select_low(self, features, high_indices, settings: FalconSettings | None = None,
                   crops: np.ndarray | None = None):
        """Stage 6's counterfactual images. The ``clip`` rule also reads the CLIP embeddings of
        every view and of T's crops (``crops``: those rows when the caller has them; otherwise
        read from the cache or computed as Stages 3-4 do)."""
        s = settings or self.settings
        feats = self.store.features(features)
        Hn = self.store.normalized(s.normalize_rows)
        high = np.asarray(high_indices, dtype=np.int64)
        views = None
        if s.low_rule == "clip":
            views = self.calibration.view_embeddings()
            if crops is None and len(high):
                crops = self._crop_rows(feats, high, s)
        return contrast_stage.select_low(
            Hn, feats, high,
            low_threshold=s.low_threshold, beta=s.beta,
            max_images=s.max_low_images, valid=self.store.valid, rule=s.low_rule,
            low_quantile=s.low_quantile, twin_correlation=s.twin_correlation,
            views=views, reference=crops)

    def view_naming(self, settings: FalconSettings | None = None) -> contrast_stage.Naming:
        """What CLIP names in every probe image's whole view (cached; the conditional rule)."""
        s = settings or self.settings
        return self.calibration.view_naming(s.captions_per_image, self.inputs,
                                            self._match_captions, self.extractor)

    def _conditional(self, feats, words, phrases, s: FalconSettings, info: dict[str, Any]):
        """Stage 6 by the ``conditional`` rule (:func:`.stages.contrast.conditional_split`):
        ``words`` and ``phrases`` are ``(T-scores, L-scores)``. Returns the kept and removed
        words and phrases and ``info`` with the anchor and every test."""
        naming = self.view_naming(s)
        Hn = self.store.normalized(s.normalize_rows)
        act = np.asarray(Hn[naming.images][:, list(feats)], dtype=np.float64).sum(axis=1)
        share = info["share"]
        cands = [c for c, _ in concepts_stage.rank(words[0], s.top_words)]
        anchor = contrast_stage.choose_anchor(act, naming, cands)
        a = None if anchor is None else anchor[0]
        kept_w, removed_w, tests_w = contrast_stage.conditional_split(
            *words, act, naming, a, share, "word", s.top_words)
        kept_p, removed_p, tests_p = contrast_stage.conditional_split(
            *phrases, act, naming, a, share, "phrase", s.top_phrases)
        info = {**info, "anchor": a, "anchor_auc": None if anchor is None else anchor[1],
                "images": int(len(naming.images)), "tests": {"words": tests_w,
                                                             "phrases": tests_p}}
        if anchor is None:
            info["description"] = ("Nothing was removed: no top word is named in enough probe "
                                   "views (at least 2 with it and 2 without) to anchor the "
                                   "conditional test. " + info["description"])
        else:
            info["description"] = (f"Anchor: “{a}” (AUC {anchor[1]:.3f} over "
                                   f"{len(naming.images)} probe images). " + info["description"])
        return kept_w, removed_w, kept_p, removed_p, info

    # ---- the explanation ---------------------------------------------------------------------
    def explanation_key(self, features, settings: FalconSettings | None = None) -> str:
        s = settings or self.settings
        inputs = self.inputs
        if s.caption_index != "exact":  # approximate search: the index is an input too
            inputs = {**inputs, "caption_index": self.caption_index(s).fingerprint}
        return cache_keys.explanation(inputs, self.store.features(features), s.to_dict())

    def cached_explanation(self, features, settings: FalconSettings | None = None
                           ) -> Explanation | None:
        return self.cache.read_json("explanations", self.explanation_key(features, settings),
                                    schema=_explanation_of(self.store.features(features)))

    def explain(self, features, settings: FalconSettings | None = None) -> Explanation:
        """Stages 2-7 for one feature (an int) or a group (a list of ints)."""
        s = settings or self.settings
        feats = self.store.features(features)
        key = self.explanation_key(feats, s)
        exp = self.cache.read_json("explanations", key, schema=_explanation_of(feats))
        if exp is not None:
            return exp
        exp = self._explain(feats, s)
        self.cache.write_json("explanations", key, exp.to_dict())
        return exp

    def try_explain(self, features, settings: FalconSettings | None = None
                    ) -> tuple[Explanation | None, str | None]:
        """Like :meth:`explain`, but a user-facing problem comes back as a message."""
        try:
            return self.explain(features, settings), None
        except FalconError as e:
            return None, str(e)

    def explain_many(self, features: list, settings: FalconSettings | None = None,
                     on_feature=None, keys: dict | None = None
                     ) -> dict:
        """:meth:`explain` for many features (or groups), giving the same explanations, with the
        work their faithfulness scores share done once: Stages 2-7 of every feature first, then
        the CLIP embeddings of the union of their concept texts in one call
        (:meth:`concept_embeddings`: fewer padded batches than one call per feature), then each
        feature's faithfulness score. Each explanation is cached as soon as it is done.

        Returns ``{feature as given: None or the message of why it has no explanation}``;
        ``on_feature(feature as given, explanation or None, message or None)`` is called for
        each.
        ``keys``: explanation keys already computed (``{(features, settings): key}``, from
        ``Catalogue.prefill``), not hashed again (only those of equal settings are used)."""
        s = settings or self.settings
        result: dict = {}
        started = []  # (f, feats, key, the explanation's steps paused before its faithfulness)

        def done(f, exp, err):
            result[f] = err
            if on_feature:
                on_feature(f, exp, err)

        for f in features:
            try:
                feats = self.store.features(f)
                key = (keys or {}).get((feats, s)) or self.explanation_key(feats, s)
                exp = self.cache.read_json("explanations", key, schema=_explanation_of(feats))
                if exp is not None:
                    done(f, exp, None)
                    continue
                steps = self._explain_steps(feats, s)
                texts = next(steps)
                started.append((f, feats, key, steps, texts))
            except FalconError as e:
                done(f, None, str(e))
        if started:  # one call for every feature's concept texts; the memo keeps them
            self.concept_embeddings(list(dict.fromkeys(t for *_, texts in started
                                                       for t in texts)))
        # then the faithfulness scores: every feature's matrix products back to back, then
        # their ranking, then the explanations (in groups of bounded size: a plan holds
        # (probe images x concepts) similarities)
        planned, values = [], 0
        for i, (f, feats, key, steps, _) in enumerate(started):
            try:
                with self.timed("faithfulness"):
                    plan = next(steps)
            except FalconError as e:
                done(f, None, str(e))
            else:
                planned.append((f, key, steps, plan))
                values += plan.size
            if planned and (values >= FAITHFULNESS_GROUP_VALUES or i == len(started) - 1):
                with self.timed("faithfulness"):
                    scored = score_faithfulness([plan for *_, plan in planned])
                for (f, key, steps, _), faithful in zip(planned, scored):
                    try:
                        exp = _finish(steps, faithful)
                    except FalconError as e:
                        done(f, None, str(e))
                        continue
                    self.cache.write_json("explanations", key, exp.to_dict())
                    done(f, exp, None)
                planned, values = [], 0
        return result

    def _explain(self, feats: tuple[int, ...], s: FalconSettings) -> Explanation:
        steps = self._explain_steps(feats, s)
        next(steps)  # the concept texts the faithfulness score embeds (explain_many shares them)
        with self.timed("faithfulness"):
            faithful = score_faithfulness([next(steps)])[0]
        return _finish(steps, faithful)

    def _explain_steps(self, feats: tuple[int, ...], s: FalconSettings):
        """Stages 2-7 as a generator: it yields the concept texts its faithfulness score will
        embed (so :meth:`explain_many` can embed every feature's at once), then, resumed, its
        faithfulness plan (:meth:`faithfulness_plan`: the matrix products, so
        :meth:`explain_many` can make every feature's back to back and rank them together),
        then, sent the scored :class:`Faithfulness`, returns the explanation
        (``StopIteration.value``; :func:`_finish`)."""
        label = "feature " + str(feats[0]) if len(feats) == 1 else "group " + str(list(feats))
        with self.timed("1 representations"):
            self.store.representations()
        with self.timed("2 high images"):
            high = self.select_high(feats, s)
        if len(high.indices) == 0:
            raise NoHighImagesError(
                f"No highly activating image for {label}: {high.description}",
                "Use the top-k rule (--rule topk in the command line, 'Top-k' in the app) or a "
                "lower α (--alpha-std), or add images to the probe set.")
        Hn = self.store.normalized(s.normalize_rows)
        notes: list[str] = []

        # Stage 3: GradCAM crops
        with self.timed("3 GradCAM"):
            cams_key, boxes = self._cam_boxes(feats, high.indices, s)
        n_fallback = sum(b.fallback for b in boxes)
        if n_fallback:
            notes.append(f"{n_fallback} of {len(boxes)} GradCAM masks were empty: those images "
                         "are used whole.")
        with self.timed("4 CLIP crops"):
            B = self._crop_embeddings(high.indices, boxes, cams_key, s.cam_threshold,
                                      s.cam_box_margin)
        with self.timed("4 text embeddings"):
            self.text_embeddings()

        # Stage 6's counterfactual images, so that T and L go through one caption search
        with self.timed("6 counterfactuals"):
            low = self.select_low(feats, high.indices, s, crops=B)
            BL = self._whole_embeddings(low.indices) if len(low.indices) else None
        if BL is None:
            notes.append(low.description + " Nothing was removed as spurious.")

        # Stages 4-5 on T (and on L for Stage 6): one search of the vocabulary for both
        with self.timed("4-5 captions and Word Scores"):
            sets = [(B, high.indices)] if BL is None else [(B, high.indices), (BL, low.indices)]
            scored = self._score_caption_sets(sets, s)
            t_matches, t_words, t_phrases = scored[0]
            l_matches, l_words, l_phrases = scored[1] if BL is not None else ([], {}, {})
            t_words, t_phrases, hygiene = self.calibration.hygiene(t_words, t_phrases, s,
                                                                   self.extractor)
        if s.contrast:
            spurious_at = self.spurious_threshold(s)
            if s.spurious_rule == "conditional":
                with self.timed("6 conditional contrast"):
                    kept_w, removed_w, kept_p, removed_p, spurious_at = self._conditional(
                        feats, (t_words, l_words), (t_phrases, l_phrases), s, spurious_at)
            else:
                at = {"threshold": spurious_at["threshold"], "share": spurious_at.get("share")}
                kept_w, removed_w = contrast_stage.split_spurious(t_words, l_words, **at)
                kept_p, removed_p = contrast_stage.split_spurious(t_phrases, l_phrases, **at)
        else:
            spurious_at = {"rule": "off", "threshold": None,
                           "description": "The contrast step is off: nothing is removed."}
            kept_w, removed_w, kept_p, removed_p = t_words, {}, t_phrases, {}

        # Stage 7
        coh = coherence_stage.coherence(B)
        interpretable = coherence_stage.is_interpretable(coh, s.coherence_threshold)
        if len(high.indices) < 2:
            notes.append("Coherence needs at least two highly activating images.")

        words = _kept(kept_w, l_words, s.top_words)
        phrases = _kept(kept_p, l_phrases, s.top_phrases)
        spurious_words = _spurious(removed_w, s.top_words)
        spurious_phrases = _spurious(removed_p, s.top_phrases)
        n = faithfulness_stage.TOP_CONCEPTS
        kept_top = words[:n] + phrases[:n]
        removed_top = spurious_words[:n] + spurious_phrases[:n] if s.contrast else []
        shown = words + phrases + spurious_words + spurious_phrases
        yield faithfulness_texts(kept_top, removed_top, shown)
        faithful = yield self.faithfulness_plan(feats, kept_top, removed_top, shown,
                                                len(high.indices), s)

        ids = self.probe.ids
        return Explanation(
            features=list(feats),
            words=words,
            phrases=phrases,
            spurious_words=spurious_words,
            spurious_phrases=spurious_phrases,
            high=[ImageRecord(index=int(i), id=str(ids[int(i)]), activation=float(a), captions=m,
                              box=b.as_tuple(), box_fallback=bool(b.fallback))
                  for i, a, b, m in zip(high.indices, high.activations, boxes, t_matches)],
            low=[ImageRecord(index=int(i), id=str(ids[int(i)]), captions=m, similarity=float(sim),
                             activation=float(Hn[int(i), list(feats)].sum()))
                 for i, sim, m in zip(low.indices, low.similarity, l_matches)],
            coherence=float(coh), interpretable=bool(interpretable),
            high_selection={"rule": high.rule, "threshold": _num(high.threshold),
                            "n_passed": int(high.n_passed), "n_used": int(len(high.indices)),
                            "description": high.description},
            low_selection={"threshold": _num(low.low_threshold), "beta": float(low.beta),
                           "n_candidates": int(low.n_candidates), "n_used": int(len(low.indices)),
                           "description": low.description, "rule": low.rule,
                           "twins": [int(t) for t in low.twins],
                           "twin_correlations": [float(c) for c in low.twin_correlations],
                           "feature_thresholds": [float(e) for e in low.feature_thresholds],
                           "spurious": spurious_at},
            hygiene=hygiene,
            settings=s.to_dict(),
            inputs={**self.inputs, "describe": self.describe()},
            notes=notes,
            all_word_scores=dict(concepts_stage.rank(t_words, MAX_STORED_SCORES)),
            all_phrase_scores=dict(concepts_stage.rank(t_phrases, MAX_STORED_SCORES)),
            more_words=_kept(kept_w, l_words, s.top_words + MAX_MORE_CONCEPTS)[s.top_words:],
            more_phrases=_kept(kept_p, l_phrases, s.top_phrases + MAX_MORE_CONCEPTS)[s.top_phrases:],
            faithfulness=faithful,
        )


def _finish(steps, faithful) -> Explanation:
    """Resume :meth:`Explainer._explain_steps` after its faithfulness plan with the scored
    ``faithful``; its explanation."""
    try:
        steps.send(faithful)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("_explain_steps yields twice")  # pragma: no cover - a bug here


def _kept(kept: dict[str, float], l_scores: dict[str, float], top: int) -> list[Concept]:
    """The ``top`` kept concepts, best first, each with its score on L."""
    return [Concept(w, float(v), float(l_scores.get(w, 0.0)))
            for w, v in concepts_stage.rank(kept, top)]


def _spurious(removed: dict[str, tuple[float, float]], top: int) -> list[Concept]:
    """The removed concepts, best T-score first; twice as many as shown are kept for inspection."""
    ranked = sorted(removed.items(), key=lambda kv: (-kv[1][0], kv[0]))[:max(top, 1) * 2]
    return [Concept(w, float(t), float(l)) for w, (t, l) in ranked]


def _explanation_of(feats) -> Any:
    """Schema of an ``explanations`` entry: an Explanation of exactly these features."""
    def check(value: Any) -> Explanation:
        exp = Explanation.from_dict(value)
        if list(exp.features) != list(feats):
            raise ValueError(f"an explanation of features {exp.features}, stored under the key "
                             f"of {list(feats)}")
        return exp
    return check


def _num(x) -> float | list | None:
    if x is None:
        return None
    if isinstance(x, (list, tuple, np.ndarray)):
        return [float(v) for v in np.ravel(x)]
    x = float(x)
    return None if math.isnan(x) else x
