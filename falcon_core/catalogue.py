"""What a workspace holds across features: :class:`Catalogue`.

Everything here looks at many features at once: the explanations already cached (``explained``,
``search``), explaining many features ahead (``precompute``, resumable because each explanation
is cached as soon as it is done), Stage 8's discovered groups and the co-activation map that helps
choose pairs, and what the cache holds for this workspace (``status``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .cache import DiskCache
from .errors import FalconError
from .explainer import Explainer
from .explanation import Explanation
from .progress import Progress
from .representation_store import RepresentationStore
from .settings import FalconSettings
from .stages import groups as groups_stage


# Features prefilled together by precompute (each chunk's shared work is written before its
# features are explained, so an interrupted precompute loses at most one chunk's prefill; each
# feature's GradCAM maps are written as soon as they are all made). The larger the chunk, the
# more features an image's one forward pass serves: the demo layer's 128 features (top-20 sets
# over 400 images) took 117 GradCAM batches of up to 16 images in chunks of 16 and 25 (each of
# the 400 images once) in one chunk of 128, and the whole precompute 16 % less CPU (16.1 ->
# 13.6 s, load ~7); what a chunk holds (searched rows, boxes, paused explanations) is small
# beside its maps, which are written per feature.
PREFILL_FEATURES = 128


class Catalogue:
    """Many features of one workspace at once (see the module docstring)."""

    def __init__(self, store: RepresentationStore, explainer: Explainer, cache: DiskCache,
                 settings: FalconSettings, progress: Progress):
        self.store = store
        self.explainer = explainer
        self.cache = cache
        self.settings = settings
        self.progress = progress

    def explained(self, settings: FalconSettings | None = None) -> dict[int, Explanation]:
        """Every single-feature explanation already computed with these settings."""
        out = {}
        for f in range(self.store.num_features):
            exp = self.explainer.cached_explanation(f, settings)
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
        self.store.representations()
        self.explainer.text_embeddings()
        self.explainer.concept_table()
        feats = list(range(self.store.num_features)) if features is None else list(features)
        result: dict[int, str | None] = {}
        n = 0

        def done(f, exp, err):
            nonlocal n
            result[f] = err
            if on_feature:
                on_feature(f, exp, err)
            n += 1
            self.progress(n, len(feats), "features")

        for start in range(0, len(feats), PREFILL_FEATURES):
            chunk = feats[start:start + PREFILL_FEATURES]
            try:
                self.explainer.box_memo = {}  # boxes cut once for the chunk (None outside it)
                keys: dict[tuple, str] = {}  # each explanation key hashed once
                self.prefill(chunk, settings, keys=keys)  # work shared by the chunk's features,
                # then each (their concept texts embedded together, before their faithfulness)
                self.explainer.explain_many(chunk, settings, on_feature=done, keys=keys)
            finally:
                self.explainer.search_memo.clear()
                self.explainer.box_memo = None
        return result

    def prefill(self, features: Sequence[int], settings: FalconSettings | None = None,
                 batch_size: int = 16, keys: dict | None = None) -> dict[str, int]:
        """The work many explanations share, done once for all of ``features`` and written to
        the cache entries each ``explain(f)`` reads (so the results are the same):

        * GradCAM: every image of the union of the features' top sets is loaded and run forward
          once; each feature whose set holds it gets its own backward pass, stopped at the CAM
          layer (:func:`~falcon_core.stages.gradcam.compute_cams_many`);
        * CLIP: the crops of all features are embedded in one batched call, each distinct
          (image, box) once (in batches of a fixed size,
          :func:`~falcon_core.explainer_stages.embed_images`, so each row is bit-equal to the one
          a plain ``explain`` computes); the counterfactual sets' whole images are rows of the
          workspace's view embeddings (computed once, as for a plain ``explain``);
        * the caption search: the T and L rows of all features, each distinct row once, in one
          search (kept in ``explainer.search_memo`` until the precompute's chunk is done), and
          the concepts of every caption found: rows of the vocabulary's concept table, or (a
          vocabulary above the table's limit) one call of the concept extractor.

        Features already explained, or whose arrays are cached, are skipped. Returns counts
        (features, images run through GradCAM, distinct crops, rows searched). ``keys``, when
        given, receives each feature's explanation key (``{(features, settings): key}``), for
        :meth:`Explainer.explain_many` to reuse.
        """
        from .explainer_stages import embed_images
        from .stages import crops as crops_stage
        from .stages.gradcam import compute_cams_many

        ex, s = self.explainer, settings or self.settings
        todo = []  # (feats, high indices)
        for f in features:
            try:
                feats = self.store.features(f)
                key = ex.explanation_key(feats, s)
                if keys is not None:
                    keys[(feats, s)] = key
                if self.cache.exists("explanations", key, ".json"):
                    continue
                high = ex.select_high(feats, s)
            except FalconError:
                continue  # explain() says what is wrong with this one
            if len(high.indices):
                todo.append((feats, np.asarray(high.indices, dtype=np.int64)))
        # GradCAM, one forward pass per image
        need: dict[int, list[tuple[int, ...]]] = {}
        left: dict[tuple[int, ...], int] = {}  # features -> their maps still to make
        for feats, idx in todo:
            if not self.cache.exists("cams", ex._cams_key(feats, idx), ".npy"):
                left[feats] = len(idx)
                for i in idx:
                    need.setdefault(int(i), []).append(feats)
        order = sorted(need)
        maps: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        for start in range(0, len(order), batch_size):
            part = order[start:start + batch_size]
            got = compute_cams_many(ex.backbone, [self.probe_load(i) for i in part],
                                    [need[i] for i in part], batch_size=batch_size)
            for i, per in zip(part, got):
                for g, m in per.items():
                    maps[(i, g)] = m.astype(np.float16)  # as the cams entries are stored
                    left[g] -= 1
            for feats, idx in todo:  # a feature whose every map is made is stored, and dropped
                if left.get(feats) == 0:
                    ex._store_cams(feats, idx, np.stack([maps.pop((int(i), feats)) for i in idx]))
                    del left[feats]
            self.progress(min(start + batch_size, len(order)), len(order), "GradCAM (shared)")
        # CLIP: crops of every feature at once, each (image, box) once
        crops: dict[tuple, int] = {}
        plan = []  # (feats, idx, boxes, key)
        for feats, idx in todo:
            cams_key, boxes = ex._cam_boxes(feats, idx, s)  # kept in ex.box_memo for the chunk
            key = ex._crop_embeddings_key(cams_key, s.cam_threshold, boxes, s.cam_box_margin)
            if self.cache.exists("crop_embeddings", key, ".npy"):
                continue
            for i, b in zip(idx, boxes):
                if (int(i), b.as_tuple()) not in crops:
                    crops[(int(i), b.as_tuple())] = (len(crops), int(i), b)
            plan.append((idx, boxes, key))
        if crops:
            emb = embed_images(ex.clip, [crops_stage.crop_image(self.store.view(i), b,
                                                                ex.clip.image_size)
                                         for _, i, b in crops.values()])
            for idx, boxes, key in plan:
                rows = [crops[(int(i), b.as_tuple())][0] for i, b in zip(idx, boxes)]
                self.cache.write_npy("crop_embeddings", key, emb[rows])
        # the counterfactual sets: their whole views are rows of the view embeddings (computed
        # once per workspace, for the faithfulness score too), nothing to embed per feature
        all_lows = [np.asarray(ex.select_low(feats, idx, s).indices, dtype=np.int64)
                    for feats, idx in todo]
        if any(len(li) for li in all_lows):
            ex.calibration.view_embeddings()
        searched = self._share_searches(todo, all_lows, s)
        return {"features": len(todo), "gradcam_images": len(order), "crops": len(crops),
                "rows_searched": searched}

    def _share_searches(self, todo, lows, s: FalconSettings) -> int:
        """The caption search of every feature's T and L rows (read back from the cache, as
        ``explain`` will read them) in one search, and the concepts of the captions found (the
        concept table's rows, or one extraction the extractor keeps)."""
        ex = self.explainer
        rows = []
        for (feats, idx), li in zip(todo, lows):
            rows.append(ex._crop_rows(feats, idx, s))
            if len(li):
                rows.append(ex._whole_embeddings(li))
        if not rows:
            return 0
        B = np.concatenate([np.asarray(r, dtype=np.float32) for r in rows])
        k = s.captions_per_image
        searched = ex.share_searches(B, k, s)
        idx, _ = ex._search(B, k, s)  # every row from the memo now
        found = sorted({int(j) for j in idx.ravel() if j >= 0})
        # the concepts of the captions found: the vocabulary's concept table has them (each
        # explanation looks its rows up); without one, one extraction the extractor memoises
        if found and ex.concept_table() is None:
            ex.extractor.extract(ex.vocabulary.captions(found))
        return searched

    def probe_load(self, i: int):
        return self.store.probe.load(int(i))

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
        Hn = self.store.normalized(s.normalize_rows)
        return groups_stage.discover_groups(Hn, mask=self.store.high_mask(s),
                                            min_images=s.group_min_images,
                                            min_size=s.group_min_size, valid=self.store.valid)

    def groups_hint(self, settings: FalconSettings | None = None, most: int = 3
                    ) -> list[dict[str, Any]]:
        """When no group is discovered: the single setting changes that give some, as
        ``[{"setting", "value", "groups"}]``, most groups first (empty when none helps).

        Tried: a lower k in α = mean + k·std, a larger top-k, a lower quantile (whichever the
        discovery reads), and fewer images per group.
        """
        s = settings or self.settings
        tries: list[tuple[str, Any]] = []
        for k in (s.alpha_std - 1, s.alpha_std - 2, s.alpha_std - 3):
            if k > 0:
                tries.append(("alpha_std", float(k)))
        tries += [("top_k", s.top_k * 2), ("top_k", s.top_k * 5)]
        tries += [("quantile", q) for q in (0.98, 0.95) if q < s.quantile]
        tries += [("group_min_images", n) for n in (5, 3) if n < s.group_min_images]
        found: dict[str, dict[str, Any]] = {}
        for name, value in tries:
            if name in found:
                continue  # the gentlest change of each setting that gives a group
            n = len(self.groups(s.replace(**{name: value})))
            if n:
                found[name] = {"setting": name, "value": value, "groups": n}
        return sorted(found.values(), key=lambda h: -h["groups"])[:most]

    def coactivation(self, features: Sequence[int] | None = None,
                     settings: FalconSettings | None = None) -> np.ndarray:
        """The Jaccard index of the sets T (the settings' rule) of every two of ``features``, in
        the order given; every feature when ``features`` is None."""
        s = settings or self.settings
        feats = (list(range(self.store.num_features)) if features is None
                 else list(self.store.features(features)))
        return groups_stage.jaccard(self.store.high_mask(s)[:, feats])

    def status(self) -> dict[str, Any]:
        """What is already computed for this workspace, and how big the cache is."""
        done = self.explained()
        return {
            "representations": self.store.is_computed(),
            "explained_features": len(done),
            "num_features": self.store.num_features,
            "cache_bytes": self.cache.size_bytes(),
            "cache_root": str(self.cache.root),
        }
