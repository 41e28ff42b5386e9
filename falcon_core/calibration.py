"""What is measured once about a workspace's CLIP model, vocabulary and probe set, and used to
calibrate the explainer's choices: :class:`Calibration`.

- :meth:`Calibration.view_embeddings`: the CLIP embeddings of every probe image's whole view.
  Counterfactual images (Stage 6) are encoded whole; one explanation needs ten, which the
  explainer encodes on demand, but when many explanations are made (a precompute, the recovery
  benchmark, the sliders of the Spurious concepts page) every view is encoded once (cached,
  resumable) and looked up.
- :meth:`Calibration.caption_scale`: the CLIP's similarity scale, the mean top-k caption cosine
  of probe images seen whole (Stage 6's relative spurious threshold).
- :meth:`Calibration.document_frequencies`: each concept's share of the vocabulary's captions
  (Stage 5's concept hygiene).

Each is cached on disk under a key of everything that determines it (:mod:`.cache_keys`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import cache_keys
from .cache import DiskCache
from .progress import Progress
from .stages import concepts as concepts_stage
from .stages import contrast as contrast_stage

VIEW_CHUNK = 256
# Probe images whose whole-view caption scores measure the CLIP's similarity scale.
SCALE_SAMPLE = 500


def _scale_schema(value: Any) -> dict[str, Any]:
    """A cached ``caption_scale`` entry, checked (the cache moves a wrong one aside). The scale is
    a cosine: finite, in [-1, 1]; nan only when no image was measured."""
    if not isinstance(value, dict) or set(value) != {"scale", "images"}:
        raise ValueError("not a caption scale")
    images, scale = value["images"], value["scale"]
    if not isinstance(images, int) or isinstance(images, bool) or images < 0:
        raise ValueError("images: not a count")
    if images == 0 and (scale is None or (isinstance(scale, float) and scale != scale)):
        return {"scale": float("nan"), "images": 0}
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not -1.0 <= float(scale) <= 1.0:
        raise ValueError("scale: not a cosine")
    return {"scale": float(scale), "images": images}


class Calibration:
    def __init__(self, store, clip, vocabulary, cache: DiskCache, progress: Progress):
        self.store, self.clip, self.vocabulary = store, clip, vocabulary
        self.cache, self.progress = cache, progress
        self._views: np.ndarray | None = None
        self._df = None

    # ---- CLIP embeddings of every view ---------------------------------------------------------
    def view_embeddings(self, compute: bool = True) -> np.ndarray | None:
        """CLIP embeddings (N, k) of every probe image's whole view; rows of unreadable images
        are zeros. With ``compute=False``: None unless they are already cached."""
        if self._views is not None:
            return self._views
        key = cache_keys.view_embeddings(self.store.probe.fingerprint,
                                         self.store.backbone.fingerprint, self.clip.fingerprint)
        if not compute and not self.cache.exists("view_embeddings", key, ".npy"):
            return None
        _, valid = self.store.representations()
        k = int(self.clip.embed_dim)

        def rows(start: int, stop: int) -> np.ndarray:
            out = np.zeros((stop - start, k), dtype=np.float32)
            ok = [i for i in range(start, stop) if valid[i]]
            if ok:
                out[[i - start for i in ok]] = self.clip.encode_images(
                    [self.store.view(i) for i in ok])
            return out

        self._views = self.cache.compute_chunked(
            "view_embeddings", key, self.store.num_images, VIEW_CHUNK, rows, dtype=np.float32,
            progress=lambda d, t, s: self.progress(d, t, "CLIP views"), stage="CLIP views")
        return self._views

    # ---- the CLIP's similarity scale -----------------------------------------------------------
    def caption_scale(self, k: int, inputs: dict[str, Any], whole: Callable, match: Callable
                      ) -> dict[str, Any]:
        """``{"scale", "images"}``: the mean top-``k`` caption cosine of up to ``SCALE_SAMPLE``
        valid probe images, evenly spaced, seen whole (``whole(indices)`` embeds them,
        ``match(B, k, indices)`` gives their captions' scores, as for an explanation)."""
        def compute() -> dict[str, Any]:
            pick = contrast_stage.scale_sample(self.store.representations()[1], SCALE_SAMPLE)
            _, _, scores = match(whole(pick), k, pick)
            return {"scale": contrast_stage.caption_scale(scores), "images": int(len(pick))}

        return self.cache.get_or_compute_json(
            "caption_scale", cache_keys.caption_scale(inputs, k, SCALE_SAMPLE), compute,
            schema=_scale_schema)

    def spurious_threshold(self, s, caption_scale: Callable[[int], dict]) -> dict[str, Any]:
        """Stage 6's threshold for settings ``s`` (absolute, or moved to the scale measured by
        ``caption_scale(k)``), with what the app shows about it."""
        measured = caption_scale(s.captions_per_image) if s.spurious_rule == "relative" \
            else {"scale": None, "images": 0}
        return contrast_stage.spurious_threshold_info(
            s.spurious_rule, s.spurious_threshold, s.spurious_reference_scale, measured["scale"],
            s.captions_per_image, measured["images"])

    # ---- concept hygiene -----------------------------------------------------------------------
    def document_frequencies(self, extractor):
        """Each concept's share of the vocabulary's captions (``DocumentFrequencies``)."""
        if self._df is None:
            from .data.vocabulary import document_frequencies

            self._df = document_frequencies(
                self.vocabulary, extractor, self.cache,
                progress=lambda d, t, s: self.progress(d, t, "word document frequency"))
        return self._df

    def hygiene(self, words: dict[str, float], phrases: dict[str, float], s, extractor):
        """Stage 5's concept hygiene for settings ``s``: drop the concepts of most of the
        vocabulary's captions. Returns ``(words, phrases, what was dropped and why)``."""
        if not s.concept_hygiene:
            return words, phrases, {"enabled": False}
        df = self.document_frequencies(extractor)
        frequent_w, frequent_p = df.frequent(s.max_document_frequency)
        words, dropped_w = concepts_stage.drop_frequent(words, frequent_w)
        phrases, dropped_p = concepts_stage.drop_frequent(phrases, frequent_p)
        return words, phrases, concepts_stage.hygiene_record(
            dropped_w, dropped_p, s.max_document_frequency, df.describe())
