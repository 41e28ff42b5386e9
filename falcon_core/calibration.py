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
- :meth:`Calibration.concept_table`: every caption's concepts by row (Stage 5 looks its
  captions up instead of running spaCy on them).

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
        self._table: tuple | None = None  # (extractor's fingerprint hash, table or None)
        self._naming: dict[str, contrast_stage.Naming] = {}  # view_naming, by its cache key

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

    # ---- what CLIP names in every view -----------------------------------------------------------
    def view_naming(self, k: int, inputs: dict[str, Any], match: Callable, extractor
                    ) -> contrast_stage.Naming:
        """The concepts of every valid probe image's top-``k`` captions, its whole view seen by
        the CLIP (``match(B, k, indices)`` as for an explanation, so a benchmark's replaced
        matching is used), as postings (:class:`~falcon_core.stages.contrast.Naming`). Cached
        under everything an explanation depends on (``inputs``) and ``k``; computed in chunks of
        :data:`VIEW_CHUNK` views."""
        key = cache_keys.view_naming(inputs, k)
        if key in self._naming:
            return self._naming[key]

        def compute() -> dict[str, np.ndarray]:
            views = self.view_embeddings()
            images = np.flatnonzero(self.store.representations()[1])
            words: dict[str, int] = {}
            phrases: dict[str, int] = {}
            w_rows: list[list[int]] = []
            p_rows: list[list[int]] = []
            for start in range(0, len(images), VIEW_CHUNK):
                rows = images[start:start + VIEW_CHUNK]
                idx, texts, _ = match(np.asarray(views[rows], dtype=np.float32), k, rows)
                got = concepts_stage.concepts_by_row(  # the concept table's rows, else spaCy
                    [int(j) for row in idx for j in row], [t for row in texts for t in row],
                    extractor, self.concept_table(extractor), self.vocabulary.captions)
                for row in texts:
                    ws = set().union(*(got[t].words for t in row)) if row else set()
                    ps = set().union(*(got[t].phrases for t in row)) if row else set()
                    w_rows.append(sorted(words.setdefault(w, len(words)) for w in ws))
                    p_rows.append(sorted(phrases.setdefault(p, len(phrases)) for p in ps))
                self.progress(min(start + VIEW_CHUNK, len(images)), len(images),
                              "what CLIP names in each view")

            def flat_rows(rows):
                ptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
                idx = np.asarray([j for r in rows for j in r], dtype=np.int64)
                return ptr, idx

            wp, wi = flat_rows(w_rows)
            pp, pi = flat_rows(p_rows)
            return {"images": images.astype(np.int64),
                    "words": np.asarray(list(words), dtype=str),
                    "phrases": np.asarray(list(phrases), dtype=str),
                    "word_ptr": wp, "word_idx": wi, "phrase_ptr": pp, "phrase_idx": pi}

        got = self.cache.get_or_compute_npz("view_naming", key, compute)
        naming = contrast_stage.Naming(
            images=np.asarray(got["images"], dtype=np.int64),
            words=_postings(got["words"], got["word_ptr"], got["word_idx"]),
            phrases=_postings(got["phrases"], got["phrase_ptr"], got["phrase_idx"]))
        self._naming[key] = naming
        return naming

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

    def concept_table(self, extractor):
        """Every caption's concepts by row (``ConceptTable``; cached), or None for a vocabulary
        above ``CONCEPT_TABLE_MAX`` captions (explanations then extract as they go)."""
        from .cache import hash_json

        made_by = hash_json(extractor.fingerprint)  # another extractor: another table
        if self._table is None or self._table[0] != made_by:
            from .data.vocabulary import concept_table

            table = concept_table(
                self.vocabulary, extractor, self.cache,
                progress=lambda d, t, s: self.progress(d, t, "concepts of every caption"))
            self._table = (made_by, table)
        return self._table[1]

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


def _postings(names: np.ndarray, ptr: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per concept, the sorted positions of the rows that hold it, from rows stored as concept
    ids (``idx[ptr[i]:ptr[i + 1]]`` for row i)."""
    ptr, idx = np.asarray(ptr, dtype=np.int64), np.asarray(idx, dtype=np.int64)
    rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    order = np.argsort(idx, kind="stable")
    idx, rows = idx[order], rows[order]
    bounds = np.searchsorted(idx, np.arange(len(names) + 1))
    return {str(n): rows[bounds[j]:bounds[j + 1]] for j, n in enumerate(names)}
