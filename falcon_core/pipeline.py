"""The FALCON pipeline: stages 1-9 over one backbone, CLIP model, probe set and vocabulary.

Every heavy result is cached on disk under a key made of everything that determines it, so a
result is computed once and nothing stale is ever returned:

=================  ======================================================================
representations    backbone fingerprint (weights, layer, pooling, preprocessing) + probe set
text embeddings    CLIP fingerprint + vocabulary fingerprint
crops              backbone + probe + features + the high images + CAM threshold
crop embeddings    crops key + CLIP fingerprint
explanations       all of the above + vocabulary + every setting
=================  ======================================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .cache import DiskCache, hash_json
from .errors import FalconError
from .explanation import CaptionMatch, Concept, Explanation, ImageRecord
from .settings import FalconSettings
from .stages import captions as captions_stage
from .stages import coherence as coherence_stage
from .stages import concepts as concepts_stage
from .stages import contrast as contrast_stage
from .stages import crops as crops_stage
from .stages import failures as failures_stage
from .stages import groups as groups_stage
from .stages import selection as selection_stage

PIPELINE_VERSION = 2
Progress = Callable[[int, int, str], None]
# Stored with each explanation so the app can show provenance; longer lists are cut.
MAX_STORED_SCORES = 200
# Settings that change how fast a result is computed, never the result itself.
RESULT_NEUTRAL_SETTINGS = ("batch_size",)


class NoHighImagesError(FalconError):
    """The chosen rule leaves a feature (or group) with no highly activating image."""


def _null_progress(done: int, total: int, stage: str) -> None:
    pass


@dataclass
class FailureExplanation:
    index: int
    id: str
    true_class: int
    true_name: str
    predicted_class: int
    predicted_name: str
    toward_predicted: list[dict[str, Any]] = field(default_factory=list)
    toward_true: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def side(items):
            out = []
            for it in items:
                exp = it.get("explanation")
                out.append({"feature": it["feature"], "contribution": it["contribution"],
                            "words": [c.text for c in exp.words] if exp else [],
                            "error": it.get("error")})
            return out

        d = {k: v for k, v in dataclasses.asdict(self).items()
             if k not in ("toward_predicted", "toward_true")}
        d["toward_predicted"] = side(self.toward_predicted)
        d["toward_true"] = side(self.toward_true)
        return d


class _ProbeRange:
    """A contiguous slice of a probe set (Stage 1 runs chunk by chunk so it can resume)."""

    def __init__(self, probe, start: int, stop: int):
        self.probe, self.start, self.stop = probe, start, stop
        self.ids = probe.ids[start:stop]

    def __len__(self) -> int:
        return self.stop - self.start

    def load(self, i: int):
        return self.probe.load(self.start + i)


class Falcon:
    """Explains the features of one backbone with one CLIP model, probe set and vocabulary."""

    def __init__(self, backbone, clip, probe, vocabulary, settings: FalconSettings | None = None,
                 cache: DiskCache | None = None, progress: Progress | None = None,
                 config=None):
        if len(probe) == 0:
            raise FalconError("The probe set is empty.", "Choose a folder or data set with images.")
        if len(vocabulary) == 0:
            raise FalconError("The vocabulary is empty.", "Choose a caption file with captions.")
        self.backbone = backbone
        self.clip = clip
        self.probe = probe
        self.vocabulary = vocabulary
        self.settings = settings or FalconSettings()
        self.cache = cache or DiskCache()
        self.progress = progress or _null_progress
        self.config = config
        self._H: np.ndarray | None = None
        self._valid: np.ndarray | None = None
        self._errors: dict[int, str] = {}
        self._Hn: dict[bool, np.ndarray] = {}
        self._alpha: dict[tuple[bool, float], float] = {}
        self._A = None
        self._extractor: concepts_stage.ConceptExtractor | None = None
        # Seconds spent per stage by this object (cache hits are cheap and show as such).
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, config=None, settings: FalconSettings | None = None,
                    cache_dir: str | None = None, progress: Progress | None = None) -> "Falcon":
        from .workspace import WorkspaceConfig

        config = config or WorkspaceConfig.demo()
        backbone = config.build_backbone()
        clip = config.build_clip()
        probe = config.build_probe(backbone)
        vocabulary = config.build_vocabulary()
        return cls(backbone, clip, probe, vocabulary, settings=settings or config.default_settings(),
                   cache=DiskCache(cache_dir), progress=progress, config=config)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    @property
    def num_images(self) -> int:
        return len(self.probe)

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
        return {
            "backbone": self.backbone.fingerprint,
            "layer": self.backbone.layer,
            "clip": self.clip.fingerprint,
            "probe": self.probe.fingerprint,
            "vocabulary": self.vocabulary.fingerprint,
            "pipeline": PIPELINE_VERSION,
        }

    # ---- Stage 1 --------------------------------------------------------------------------
    def representations(self) -> tuple[np.ndarray, np.ndarray]:
        """``H`` (N, r) and the mask of images that could be read. Cached, resumable."""
        if self._H is None:
            from .stages.representations import compute_representations

            key = self.cache.key("representations", backbone=self.backbone.fingerprint,
                                 probe=self.probe.fingerprint, version=PIPELINE_VERSION)
            n, r = len(self.probe), self.num_features
            chunk = max(self.settings.batch_size * 8, 256)
            errors_key = "representation_errors"

            def compute(start: int, stop: int) -> np.ndarray:
                part = _ProbeRange(self.probe, start, stop)
                H, valid, errors = compute_representations(
                    self.backbone, part, batch_size=self.settings.batch_size,
                    progress=lambda d, t, s: self.progress(start + d, n, "representations"))
                self.cache.write_json(errors_key, f"{key}-{start}",
                                      {str(start + i): msg for i, msg in errors.items()})
                return H.astype(np.float32)

            H = self.cache.compute_chunked("representations", key, n, chunk, compute,
                                           dtype=np.float32)
            H = np.asarray(H)
            valid = ~np.isnan(H).any(axis=1)
            errors: dict[int, str] = {}
            for start in range(0, n, chunk):
                stored = self.cache.read_json(errors_key, f"{key}-{start}")
                for k, v in (stored or {}).items():
                    errors[int(k)] = v
            bad = getattr(self.probe, "bad_images", None)
            if isinstance(bad, dict):  # images skipped in an earlier run, read from the cache
                for i, msg in errors.items():
                    bad.setdefault(str(self.probe.ids[i]), msg)
            if not valid.any():
                raise FalconError(
                    f"None of the {n} probe images could be read.",
                    "Check the folder: the files may be corrupt or not images.")
            self._H, self._valid, self._errors = H, valid, errors
        return self._H, self._valid

    @property
    def skipped_images(self) -> dict[int, str]:
        """Images that could not be read, with the reason (they are never selected)."""
        self.representations()
        return dict(self._errors)

    def normalized(self, normalize: bool | None = None) -> np.ndarray:
        """The matrix the thresholds apply to: row-normalised ``H`` (authors) or ``H``."""
        from .stages.representations import normalise_rows

        normalize = self.settings.normalize_rows if normalize is None else normalize
        if normalize not in self._Hn:
            H, valid = self.representations()
            M = normalise_rows(H) if normalize else np.array(H, dtype=np.float32)
            M = np.where(valid[:, None], M, 0.0).astype(np.float32)
            self._Hn[normalize] = M
        return self._Hn[normalize]

    def alpha_for(self, settings: FalconSettings | None = None) -> float:
        """Stage 2's global α; computed once per (normalisation, k) since it scans all of H."""
        s = settings or self.settings
        key = (s.normalize_rows, s.alpha_std)
        if key not in self._alpha:
            Hn = self.normalized(s.normalize_rows)
            self._alpha[key] = float(selection_stage.global_alpha(Hn, s.alpha_std,
                                                                  valid=self._valid))
        return self._alpha[key]

    @property
    def alpha(self) -> float:
        return self.alpha_for(self.settings)

    def low_threshold_for(self, settings: FalconSettings | None = None) -> float:
        s = settings or self.settings
        if s.low_threshold is not None:
            return float(s.low_threshold)
        Hn = self.normalized(s.normalize_rows)
        return float(selection_stage.global_mean(Hn, valid=self._valid))

    # ---- pieces shared by the stages -------------------------------------------------------
    def features(self, features: int | Sequence[int]) -> tuple[int, ...]:
        if isinstance(features, (int, np.integer)):
            features = [int(features)]
        return tuple(selection_stage.validate_features(list(features), self.num_features))

    def view(self, i: int):
        """Image ``i`` as the backbone sees it (resized and cropped, not normalised)."""
        return self.backbone.view_transform(self.probe.load(int(i)))

    def text_embeddings(self):
        if self._A is None:
            from .data.vocabulary import text_embeddings

            self._A = text_embeddings(self.vocabulary, self.clip, self.cache,
                                      progress=lambda d, t, s: self.progress(d, t, "text embeddings"))
        return self._A

    @property
    def extractor(self) -> concepts_stage.ConceptExtractor:
        if self._extractor is None:
            self._extractor = concepts_stage.ConceptExtractor()
        return self._extractor

    def select_high(self, features, settings: FalconSettings | None = None):
        s = settings or self.settings
        feats = self.features(features)
        Hn = self.normalized(s.normalize_rows)
        self.representations()
        return selection_stage.select_high(
            Hn, feats, rule=s.high_rule, alpha=self.alpha_for(s), top_k=s.top_k,
            quantile=s.quantile, max_images=s.max_high_images, valid=self._valid,
            k_std=s.alpha_std)

    def select_low(self, features, high_indices, settings: FalconSettings | None = None):
        s = settings or self.settings
        feats = self.features(features)
        Hn = self.normalized(s.normalize_rows)
        return contrast_stage.select_low(
            Hn, feats, np.asarray(high_indices, dtype=np.int64),
            low_threshold=s.low_threshold, beta=s.beta,
            max_images=s.max_low_images, valid=self._valid)

    # ---- Stage 3 ---------------------------------------------------------------------------
    def _crops_key(self, feats: tuple[int, ...], indices: np.ndarray) -> str:
        return self.cache.key("crops", backbone=self.backbone.fingerprint,
                              probe=self.probe.fingerprint, features=list(feats),
                              images=hash_json([int(i) for i in indices]),
                              version=PIPELINE_VERSION)

    def _cams(self, feats: tuple[int, ...], indices: np.ndarray) -> np.ndarray:
        """GradCAM maps (n, S, S) in [0, 1] of the group's summed activation, cached."""
        from .stages.gradcam import compute_cams

        key = self._crops_key(feats, indices)

        def compute() -> np.ndarray:
            cams = []
            n = len(indices)
            step = 16
            for start in range(0, n, step):
                batch = [self.probe.load(int(i)) for i in indices[start:start + step]]
                cams.append(compute_cams(self.backbone, batch, list(feats)))
                self.progress(min(start + step, n), n, "GradCAM")
            if not cams:
                size = self.backbone.input_size
                return np.zeros((0, size, size), dtype=np.float16)
            return np.concatenate(cams).astype(np.float16)

        return self.cache.get_or_compute_npy("cams", key, compute)

    def cams(self, features, settings: FalconSettings | None = None) -> dict[int, np.ndarray]:
        """``{image index: CAM}`` for the highly activating images of ``features``."""
        feats = self.features(features)
        high = self.select_high(feats, settings)
        cams = self._cams(feats, high.indices)
        return {int(i): np.asarray(c, dtype=np.float32) for i, c in zip(high.indices, cams)}

    def _boxes(self, cams: np.ndarray, threshold: float) -> list[crops_stage.CropBox]:
        return [crops_stage.crop_box(np.asarray(c, dtype=np.float32), threshold) for c in cams]

    def _crop_embeddings(self, feats, indices, boxes, cams_key: str, threshold: float):
        key = self.cache.key("crop_embeddings", crops=cams_key, threshold=threshold,
                             clip=self.clip.fingerprint)

        def compute() -> np.ndarray:
            crops = [crops_stage.crop_image(self.view(i), b, self.clip.image_size)
                     for i, b in zip(indices, boxes)]
            if not crops:
                return np.zeros((0, self.clip.embed_dim), dtype=np.float32)
            return self.clip.encode_images(crops).astype(np.float32)

        return self.cache.get_or_compute_npy("crop_embeddings", key, compute)

    def _whole_embeddings(self, indices) -> np.ndarray:
        key = self.cache.key("image_embeddings", probe=self.probe.fingerprint,
                             clip=self.clip.fingerprint, backbone_view=self.backbone.fingerprint,
                             images=[int(i) for i in indices])

        def compute() -> np.ndarray:
            if len(indices) == 0:
                return np.zeros((0, self.clip.embed_dim), dtype=np.float32)
            return self.clip.encode_images([self.view(i) for i in indices]).astype(np.float32)

        return self.cache.get_or_compute_npy("image_embeddings", key, compute)

    # ---- Stages 4-5 --------------------------------------------------------------------------
    def _caption_scores(self, B: np.ndarray, k: int):
        """Top-k captions of each row of B, their concepts, and the Eq. 1 scores."""
        idx, scores = captions_stage.top_captions(B, self.text_embeddings(), k=k)
        flat = sorted({int(j) for j in idx.ravel()})
        texts = dict(zip(flat, self.vocabulary.captions(flat)))
        concepts = dict(zip(flat, self.extractor.extract([texts[j] for j in flat])))
        word_sets = [[concepts[int(j)].words for j in row] for row in idx]
        phrase_sets = [[concepts[int(j)].phrases for j in row] for row in idx]
        words = concepts_stage.word_scores(scores, word_sets) if len(idx) else {}
        phrases = concepts_stage.word_scores(scores, phrase_sets) if len(idx) else {}
        matches = [[CaptionMatch(int(j), texts[int(j)], float(s),
                                 words=sorted(concepts[int(j)].words),
                                 phrases=sorted(concepts[int(j)].phrases))
                    for j, s in zip(r, sr)]
                   for r, sr in zip(idx, scores)]
        return matches, words, phrases

    # ---- the explanation ---------------------------------------------------------------------
    def explanation_key(self, features, settings: FalconSettings | None = None) -> str:
        s = settings or self.settings
        determining = {k: v for k, v in s.to_dict().items() if k not in RESULT_NEUTRAL_SETTINGS}
        return self.cache.key("explanations", inputs=self.inputs, features=list(self.features(features)),
                              settings=determining)

    def cached_explanation(self, features, settings: FalconSettings | None = None
                           ) -> Explanation | None:
        data = self.cache.read_json("explanations", self.explanation_key(features, settings))
        return Explanation.from_dict(data) if data else None

    def explain(self, features, settings: FalconSettings | None = None) -> Explanation:
        """Stages 2-7 for one feature (an int) or a group (a list of ints)."""
        s = settings or self.settings
        feats = self.features(features)
        key = self.explanation_key(feats, s)
        data = self.cache.read_json("explanations", key)
        if data:
            return Explanation.from_dict(data)
        exp = self._explain(feats, s)
        self.cache.write_json("explanations", key, exp.to_dict())
        return exp

    def _explain(self, feats: tuple[int, ...], s: FalconSettings) -> Explanation:
        label = "feature " + str(feats[0]) if len(feats) == 1 else "group " + str(list(feats))
        with self.timed("1 representations"):
            self.representations()
        with self.timed("2 high images"):
            high = self.select_high(feats, s)
        if len(high.indices) == 0:
            raise NoHighImagesError(
                f"No highly activating image for {label}: {high.description}",
                "Use the top-k rule (--rule topk in the command line, 'Top-k' in the app) or a "
                "lower α (--alpha-std), or add images to the probe set.")
        Hn = self.normalized(s.normalize_rows)
        notes: list[str] = []

        # Stage 3: GradCAM crops
        with self.timed("3 GradCAM"):
            cams = self._cams(feats, high.indices)
            boxes = self._boxes(cams, s.cam_threshold)
        n_fallback = sum(b.fallback for b in boxes)
        if n_fallback:
            notes.append(f"{n_fallback} of {len(boxes)} GradCAM masks were empty: those images "
                         "are used whole.")
        with self.timed("4 CLIP crops"):
            B = self._crop_embeddings(feats, high.indices, boxes,
                                      self._crops_key(feats, high.indices), s.cam_threshold)
        with self.timed("4 text embeddings"):
            self.text_embeddings()

        # Stages 4-5 on T
        with self.timed("4-5 captions and Word Scores"):
            t_matches, t_words, t_phrases = self._caption_scores(B, s.captions_per_image)

        # Stage 6: counterfactuals
        with self.timed("6 counterfactuals"):
            low = self.select_low(feats, high.indices, s)
            if len(low.indices) == 0:
                notes.append(low.description + " Nothing was removed as spurious.")
                l_matches, l_words, l_phrases = [], {}, {}
            else:
                BL = self._whole_embeddings(low.indices)
                l_matches, l_words, l_phrases = self._caption_scores(BL, s.captions_per_image)
        if s.contrast:
            kept_w, removed_w = contrast_stage.split_spurious(t_words, l_words, s.spurious_threshold)
            kept_p, removed_p = contrast_stage.split_spurious(t_phrases, l_phrases,
                                                              s.spurious_threshold)
        else:
            kept_w, removed_w, kept_p, removed_p = t_words, {}, t_phrases, {}

        # Stage 7
        coh = coherence_stage.coherence(B)
        interpretable = coherence_stage.is_interpretable(coh, s.coherence_threshold)
        if len(high.indices) < 2:
            notes.append("Coherence needs at least two highly activating images.")

        def concepts(kept: dict[str, float], l_scores: dict[str, float], top: int):
            return [Concept(w, float(v), float(l_scores.get(w, 0.0)))
                    for w, v in concepts_stage.rank(kept, top)]

        def spurious(removed: dict[str, tuple[float, float]], top: int):
            ranked = sorted(removed.items(), key=lambda kv: (-kv[1][0], kv[0]))[:max(top, 1) * 2]
            return [Concept(w, float(t), float(l)) for w, (t, l) in ranked]

        high_records = [
            ImageRecord(index=int(i), id=str(self.probe.ids[int(i)]),
                        activation=float(a), captions=m, box=b.as_tuple(),
                        box_fallback=bool(b.fallback))
            for i, a, b, m in zip(high.indices, high.activations, boxes, t_matches)]
        low_records = [
            ImageRecord(index=int(i), id=str(self.probe.ids[int(i)]),
                        activation=float(Hn[int(i), list(feats)].sum()), captions=m,
                        similarity=float(sim))
            for i, sim, m in zip(low.indices, low.similarity, l_matches)]
        top_scores = dict(concepts_stage.rank(t_words, MAX_STORED_SCORES))
        top_phrase_scores = dict(concepts_stage.rank(t_phrases, MAX_STORED_SCORES))
        return Explanation(
            features=list(feats),
            words=concepts(kept_w, l_words, s.top_words),
            phrases=concepts(kept_p, l_phrases, s.top_phrases),
            spurious_words=spurious(removed_w, s.top_words),
            spurious_phrases=spurious(removed_p, s.top_phrases),
            high=high_records, low=low_records,
            coherence=float(coh), interpretable=bool(interpretable),
            high_selection={"rule": high.rule, "threshold": _num(high.threshold),
                            "n_passed": int(high.n_passed), "n_used": int(len(high.indices)),
                            "description": high.description},
            low_selection={"threshold": _num(low.low_threshold), "beta": float(low.beta),
                           "n_candidates": int(low.n_candidates), "n_used": int(len(low.indices)),
                           "description": low.description},
            settings=s.to_dict(),
            inputs={**self.inputs, "describe": self.describe()},
            notes=notes,
            all_word_scores=top_scores,
            all_phrase_scores=top_phrase_scores,
        )

    def try_explain(self, features, settings: FalconSettings | None = None
                    ) -> tuple[Explanation | None, str | None]:
        """Like :meth:`explain`, but a user-facing problem comes back as a message."""
        try:
            return self.explain(features, settings), None
        except FalconError as e:
            return None, str(e)

    # ---- overviews ---------------------------------------------------------------------------
    def feature_stats(self, settings: FalconSettings | None = None) -> dict[str, np.ndarray]:
        """Per feature: how many images pass the rule, mean and max normalised activation."""
        s = settings or self.settings
        Hn = self.normalized(s.normalize_rows)[self._valid]
        alpha = self.alpha_for(s)
        return {"n_high": (Hn > alpha).sum(axis=0), "mean": Hn.mean(axis=0),
                "max": Hn.max(axis=0)}

    def explained(self, settings: FalconSettings | None = None) -> dict[int, Explanation]:
        """Every single-feature explanation already computed with these settings."""
        out = {}
        for f in range(self.num_features):
            exp = self.cached_explanation(f, settings)
            if exp is not None:
                out[f] = exp
        return out

    def precompute(self, features: Sequence[int] | None = None,
                   settings: FalconSettings | None = None,
                   on_feature: Callable[[int, Explanation | None, str | None], None] | None = None
                   ) -> dict[int, str | None]:
        """Explain many features (resumable: each explanation is cached as soon as it is done).

        Returns ``{feature: None or the message of why it has no explanation}``.
        """
        self.representations()
        self.text_embeddings()
        feats = list(range(self.num_features)) if features is None else list(features)
        result: dict[int, str | None] = {}
        for n, f in enumerate(feats):
            exp, err = self.try_explain(f, settings)
            result[f] = err
            if on_feature:
                on_feature(f, exp, err)
            self.progress(n + 1, len(feats), "features")
        return result

    def search(self, word: str, settings: FalconSettings | None = None,
               include_phrases: bool = True) -> list[dict[str, Any]]:
        """Features whose concepts contain ``word``, over all features explained so far."""
        needle = word.strip().lower()
        if not needle:
            return []
        hits = []
        for f, exp in self.explained(settings).items():
            pools = [("word", exp.words)] + ([("phrase", exp.phrases)] if include_phrases else [])
            for kind, items in pools:
                for rank, c in enumerate(items, 1):
                    if needle == c.text or (kind == "phrase" and needle in c.text.split()):
                        hits.append({"feature": f, "concept": c.text, "kind": kind,
                                     "rank": rank, "score": c.score,
                                     "coherence": exp.coherence})
        hits.sort(key=lambda h: (-h["score"], h["feature"]))
        return hits

    def groups(self, settings: FalconSettings | None = None) -> list[groups_stage.Group]:
        """Stage 8: groups of features discovered by their images' activation signatures."""
        s = settings or self.settings
        Hn = self.normalized(s.normalize_rows)
        return groups_stage.discover_groups(Hn, self.alpha_for(s), min_images=s.group_min_images,
                                            min_size=s.group_min_size, valid=self._valid)

    def coactivation(self, features: Sequence[int] | None = None,
                     settings: FalconSettings | None = None) -> np.ndarray:
        s = settings or self.settings
        Hn = self.normalized(s.normalize_rows)[self._valid]
        feats = list(range(self.num_features)) if features is None else list(self.features(features))
        return groups_stage.coactivation(Hn[:, feats], self.alpha_for(s))

    # ---- Stage 9 ---------------------------------------------------------------------------
    def _head(self) -> tuple[np.ndarray, np.ndarray]:
        head = getattr(self.backbone, "head", None)
        if head is None:
            raise FalconError(
                "This backbone has no linear classifier head over the explained layer.",
                "Failure explanations need a classifier: use a backbone with its head (e.g. "
                "ResNet-18 ImageNet, the demo backbone) and the default layer.")
        U = head.weight.detach().cpu().numpy().astype(np.float32)
        b = (head.bias.detach().cpu().numpy().astype(np.float32) if head.bias is not None
             else np.zeros(U.shape[0], dtype=np.float32))
        return U, b

    def class_names(self) -> list[str]:
        names = getattr(self.backbone, "class_names", None)
        U, _ = self._head()
        return list(names) if names else [f"class {i}" for i in range(U.shape[0])]

    def labels(self) -> np.ndarray:
        """True labels of the probe images in the classifier's class indices (-1: unknown)."""
        if not getattr(self.backbone, "class_names", None):
            raise FalconError(
                "The classifier's class names are unknown, so the probe set's labels cannot be "
                "matched to its outputs.",
                "Give them with the checkpoint (--class-names 'a,b,c' or a file, one a line).")
        labels = getattr(self.probe, "labels", None)
        if labels is None:
            raise FalconError("The probe set has no true labels.",
                              "Use a labelled set: class subfolders, CIFAR-10, Imagenette, or the demo world.")
        labels = np.asarray(labels, dtype=np.int64)
        probe_names = getattr(self.probe, "class_names", None)
        head_names = self.class_names()
        if probe_names and list(probe_names) != head_names:
            norm = lambda t: "".join(ch for ch in str(t).lower() if ch.isalnum())
            lookup = {norm(n): i for i, n in enumerate(head_names)}
            mapping = np.array([lookup.get(norm(n), -1) for n in probe_names] + [-1])
            labels = np.where(labels >= 0, mapping[np.clip(labels, 0, len(probe_names))], -1)
        if not (labels >= 0).any():
            raise FalconError("None of the probe set's labels match the classifier's classes.",
                              "Name the class subfolders after the classifier's classes.")
        return labels

    def failures(self) -> list[dict[str, Any]]:
        """Misclassified probe images with their true and predicted classes."""
        U, b = self._head()
        H, valid = self.representations()
        labels = np.where(valid, self.labels(), -1)
        idx, preds = failures_stage.misclassified(np.nan_to_num(H), U, b, labels)
        names = self.class_names()
        return [{"index": int(i), "id": str(self.probe.ids[int(i)]), "true": int(labels[i]),
                 "true_name": names[int(labels[i])], "predicted": int(p),
                 "predicted_name": names[int(p)]} for i, p in zip(idx, preds)]

    def accuracy(self) -> float:
        U, b = self._head()
        H, valid = self.representations()
        labels = np.where(valid, self.labels(), -1)
        known = labels >= 0
        pred = (np.nan_to_num(H[known]) @ U.T + b).argmax(axis=1)
        return float((pred == labels[known]).mean()) if known.any() else float("nan")

    def image_features(self, image) -> np.ndarray:
        """``h`` of an image that is not in the probe set (e.g. uploaded in the app)."""
        import torch

        x = self.backbone.transform(image.convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            return self.backbone.feature_model(x)[0].cpu().numpy().astype(np.float32)

    def explain_failure(self, index: int | None = None, k: int = 3, image=None,
                        true_class: int | None = None,
                        settings: FalconSettings | None = None) -> FailureExplanation:
        """Stage 9: the features that pushed an image toward its predicted and its true class."""
        U, b = self._head()
        names = self.class_names()
        if image is None:
            if index is None or not 0 <= int(index) < self.num_images:
                raise FalconError(f"Unknown probe image {index!r}: there are {self.num_images}.")
            H, valid = self.representations()
            if not valid[int(index)]:
                raise FalconError(f"Probe image {index} could not be read: "
                                  f"{self._errors.get(int(index), 'unreadable')}.")
            h = H[int(index)]
            if true_class is None:
                true_class = int(self.labels()[int(index)])
            ident = str(self.probe.ids[int(index)])
        else:
            h = self.image_features(image)
            ident = "uploaded image"
            index = -1
        if true_class is None or true_class < 0:
            true_class = -1
        if true_class < 0:  # unknown: rank toward the prediction only
            known = int(np.argmax(U @ np.nan_to_num(h) + b))
        else:
            known = true_class
        drivers = failures_stage.failure_drivers(h, U, b, known, k=k)

        def side(items):
            out = []
            for f, c in items:
                exp, err = self.try_explain(int(f), settings)
                out.append({"feature": int(f), "contribution": float(c), "explanation": exp,
                            "error": err})
            return out

        pred = int(drivers.predicted_class)
        return FailureExplanation(
            index=int(index), id=ident, true_class=int(true_class),
            true_name=names[true_class] if true_class >= 0 else "unknown",
            predicted_class=pred, predicted_name=names[pred],
            toward_predicted=side(drivers.toward_predicted),
            toward_true=side(drivers.toward_true) if true_class >= 0 else [])

    # ---- cache overview ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What is already computed for this workspace, and how big the cache is."""
        done = self.explained()
        return {
            "representations": self._H is not None or self.cache.exists(
                "representations", self.cache.key("representations",
                                                  backbone=self.backbone.fingerprint,
                                                  probe=self.probe.fingerprint,
                                                  version=PIPELINE_VERSION), ".npy"),
            "explained_features": len(done),
            "num_features": self.num_features,
            "cache_bytes": self.cache.size_bytes(),
            "cache_root": str(self.cache.root),
        }


def _num(x) -> float | list | None:
    if x is None:
        return None
    if isinstance(x, (list, tuple, np.ndarray)):
        return [float(v) for v in np.ravel(x)]
    x = float(x)
    return None if math.isnan(x) else x
