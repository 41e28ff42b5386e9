"""The per-image work behind an explanation, mixed into :class:`~falcon_core.explainer.Explainer`:

- Stage 3: GradCAM maps of the explained feature(s) on the highly activating images (cached) and
  their crop boxes;
- Stage 4: CLIP embeddings of the crops and of whole views (cached), and the caption search of the
  vocabulary for several sets of images at once (T and L), with the Word Scores of each set;
- the faithfulness score of an explanation's concepts (:mod:`.stages.faithfulness`).

Each method is one step a benchmark may replace (``falcon_core.bench.recovery`` swaps
``_boxes``, ``_cams`` and ``_match_captions`` for its ablations). The methods use the explainer's
``store``, ``probe``, ``backbone``, ``clip``, ``vocabulary``, ``cache``, ``calibration``,
``progress``, ``extractor``, ``select_high`` and ``caption_index``.
"""

from __future__ import annotations

import numpy as np

from . import cache_keys
from .explanation import CaptionMatch, Concept, Faithfulness, FaithfulnessScore
from .settings import FalconSettings
from .stages import captions as captions_stage
from .stages import concepts as concepts_stage
from .stages import crops as crops_stage
from .stages import faithfulness as faithfulness_stage

# Images CLIP embeds per batch in Stages 3-4, always exactly this many (the last batch filled up
# with copies of its last image): a float32 row then depends only on its own image, never on
# which other images shared its batch -- the kernels torch picks (and so the order of their
# additions) depend on the batch's shape, not on its other rows. So a crop embedded with every
# feature's crops in a precompute is bit-equal to the same crop embedded with one feature's.
IMAGE_BATCH = cache_keys.IMAGE_BATCH  # part of the embeddings' cache keys


def embed_images(clip, images: list) -> np.ndarray:
    """CLIP embeddings (float32, L2-normalised) of ``images`` in batches of exactly
    :data:`IMAGE_BATCH` (see there)."""
    n = len(images)
    if n == 0:
        return np.zeros((0, clip.embed_dim), dtype=np.float32)
    padded = list(images) + [images[-1]] * (-n % IMAGE_BATCH)
    return np.asarray(clip.encode_images(padded, batch_size=IMAGE_BATCH)[:n], dtype=np.float32)


# Concept texts (the faithfulness score's) CLIP embeds per batch: exactly this many texts of one
# tokenised length (the last batch filled with copies), so a text's row has one batch shape
# whatever texts it is embedded with -- the reason of IMAGE_BATCH, for a text tower cut to its
# batch's longest text. A concept shared by many features is then embedded once (Explainer's
# ``text_memo``) and every explanation gets the same bits for it.
TEXT_BATCH = cache_keys.TEXT_BATCH
# Rows a shared search (ImageStages.share_searches) sends to the index at once: the exact scan
# makes a few (rows x vocabulary) arrays per call, and at a whole chunk's rows (~500 x 24,000,
# 46 MB each) they fell out of the caches and were fresh memory each time -- the stacked search
# was slower per row than one explanation's. 64: with the demo vocabulary kept as float32
# (caption_index.RESIDENT_FLOAT32_BYTES) and its product through torch, the demo precompute's
# 2,857 rows took 0.52 / 0.44 / 0.43 / 0.55 / 0.53 s CPU in blocks of 32 / 64 / 128 / 256 / 512
# (load ~6). A row's result does not depend on its batch.
SHARED_SEARCH_ROWS = 64
# Concepts kept in an explainer's memo at most (512 floats each: ~100 MB at this size).
TEXT_MEMO_MAX = 50_000


def _tokens_and_lengths(clip, texts: list[str]):
    """The tokens of ``texts`` and the positions a trimmed text tower runs for each, or
    (None, None) when the model has no tokenizer to tell (a stand-in whose rows never depend on
    the batch)."""
    tokenizer, model = getattr(clip, "tokenizer", None), getattr(clip, "model", None)
    if tokenizer is None or model is None:
        return None, None
    from .models.clip import text_lengths

    tokens = tokenizer([str(t) for t in texts])
    return tokens, [int(v) for v in text_lengths(model, tokens)]


def embed_texts(clip, texts: list[str]) -> np.ndarray:
    """CLIP text embeddings (float32, L2-normalised) of short texts, each row computed in a batch
    of exactly :data:`TEXT_BATCH` texts of its own tokenised length (see there).

    With a trimmed open_clip tower (``clip.text_trim``) the texts are tokenised once and each
    batch goes to ``clip.encode_tokens`` (what ``clip.encode_texts`` runs after tokenising, so
    the same bits): tokenising each small batch again cost more than the tower itself."""
    n = len(texts)
    out = np.zeros((n, clip.embed_dim), dtype=np.float32)
    tokens, lengths = _tokens_and_lengths(clip, texts)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(lengths[i] if lengths is not None else 0, []).append(i)
    direct = tokens is not None and getattr(clip, "text_trim", False) is True \
        and hasattr(clip, "encode_tokens")
    for _, idx in sorted(groups.items()):
        for a in range(0, len(idx), TEXT_BATCH):
            part = idx[a:a + TEXT_BATCH]
            rows = part + [part[-1]] * (TEXT_BATCH - len(part))
            if direct:
                got = clip.encode_tokens(tokens[rows], batch_size=TEXT_BATCH)
            else:
                got = clip.encode_texts([texts[i] for i in rows])
            out[part] = np.asarray(got, dtype=np.float32)[:len(part)]
    return out


def score_captions(B: np.ndarray, A, vocabulary, extractor: concepts_stage.ConceptExtractor,
                   k: int) -> tuple[list[list[CaptionMatch]], dict[str, float], dict[str, float]]:
    """Stages 4-5 on the images whose CLIP embeddings are the rows of ``B``: each image's top-k
    captions of the vocabulary (``A``: a search index of :mod:`falcon_core.caption_index`, or
    the text embeddings themselves, searched exactly), their concepts, and the Word Score
    (Eq. 1) of every word and phrase. Returns ``(captions per image, words, phrases)``."""
    return score_caption_sets([B], A, vocabulary, extractor, k)[0]


def score_caption_sets(sets: list[np.ndarray], A, vocabulary,
                       extractor: concepts_stage.ConceptExtractor, k: int
                       ) -> list[tuple[list[list[CaptionMatch]], dict[str, float], dict[str, float]]]:
    """:func:`score_captions` for several sets of images (the T and L of an explanation, or the
    sets of many features) with one search of the vocabulary, one caption lookup and one concept
    extraction for all of them; the Word Scores are computed per set."""
    if hasattr(A, "search"):
        index = A
    else:
        from .caption_index import ExactIndex

        index = ExactIndex(A)
    mats = [np.asarray(b, dtype=np.float32) for b in sets]
    idx_all, sc_all = index.search(np.concatenate(mats), k)
    flat = sorted({int(j) for j in idx_all.ravel() if j >= 0})
    texts = dict(zip(flat, vocabulary.captions(flat)))
    concepts = dict(zip(flat, extractor.extract([texts[j] for j in flat])))
    out = []
    for idx, scores in captions_stage.split_rows(idx_all, sc_all, [len(m) for m in mats]):
        word_sets = [[concepts[int(j)].words for j in row] for row in idx]
        phrase_sets = [[concepts[int(j)].phrases for j in row] for row in idx]
        words = concepts_stage.word_scores(scores, word_sets) if len(idx) else {}
        phrases = concepts_stage.word_scores(scores, phrase_sets) if len(idx) else {}
        matches = [[CaptionMatch(int(j), texts[int(j)], float(sv),
                                 words=sorted(concepts[int(j)].words),
                                 phrases=sorted(concepts[int(j)].phrases))
                    for j, sv in zip(r, sr)]
                   for r, sr in zip(idx, scores)]
        out.append((matches, words, phrases))
    return out


def score_matches(idx: np.ndarray, texts: list[list[str]], scores: np.ndarray,
                  extractor: concepts_stage.ConceptExtractor,
                  concepts: dict[str, concepts_stage.CaptionConcepts] | None = None
                  ) -> tuple[list[list[CaptionMatch]], dict[str, float], dict[str, float]]:
    """Stage 5 on images' top-k captions (``Explainer._match_captions``: vocabulary rows, texts,
    scores): their concepts (``concepts``, text -> concepts, when the caller has them; else
    ``extractor``), and the Word Score (Eq. 1) of every word and phrase. Returns
    ``(captions per image, words, phrases)``."""
    if concepts is None:
        flat = sorted({t for row in texts for t in row})
        concepts = dict(zip(flat, extractor.extract(flat)))
    word_sets = [[concepts[t].words for t in row] for row in texts]
    phrase_sets = [[concepts[t].phrases for t in row] for row in texts]
    words = concepts_stage.word_scores(scores, word_sets) if len(texts) else {}
    phrases = concepts_stage.word_scores(scores, phrase_sets) if len(texts) else {}
    matches = [[CaptionMatch(int(j), t, float(s), words=sorted(concepts[t].words),
                             phrases=sorted(concepts[t].phrases))
                for j, t, s in zip(r, tr, sr)]
               for r, tr, sr in zip(idx, texts, scores)]
    return matches, words, phrases


def faithfulness_texts(kept: list[Concept], removed: list[Concept], shown: list[Concept]
                       ) -> list[str]:
    """The concept texts :meth:`ImageStages.faithfulness_plan` embeds, in its order."""
    return list(dict.fromkeys(c.text for c in kept + removed + shown))


class ImageStages:
    """Stages 3-4 and the faithfulness score (see the module)."""

    # ---- Stage 3: GradCAM and crops ----------------------------------------------------------
    def _cams_key(self, feats: tuple[int, ...], indices: np.ndarray) -> str:
        return cache_keys.cams(self.backbone.fingerprint, self.probe.fingerprint, feats, indices)

    def _cams(self, feats: tuple[int, ...], indices: np.ndarray) -> np.ndarray:
        """GradCAM maps (n, S, S) in [0, 1] of the group's summed activation, cached."""
        from .stages.gradcam import compute_cams

        key = self._cams_key(feats, indices)

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

        size = self.backbone.input_size
        return self.cache.get_or_compute_npy("cams", key, compute, shape=(len(indices), size, size),
                                             dtype=np.float16)

    def _store_cams(self, feats: tuple[int, ...], indices: np.ndarray, cams: np.ndarray) -> None:
        """Write maps computed elsewhere (the catalogue's shared precompute) under the key
        ``_cams`` reads, in the dtype it stores."""
        self.cache.write_npy("cams", self._cams_key(feats, indices), cams.astype(np.float16))

    def cams(self, features, settings: FalconSettings | None = None) -> dict[int, np.ndarray]:
        """``{image index: CAM}`` for the highly activating images of ``features``."""
        feats = self.store.features(features)
        high = self.select_high(feats, settings)
        cams = self._cams(feats, high.indices)
        return {int(i): np.asarray(c, dtype=np.float32) for i, c in zip(high.indices, cams)}

    def _boxes(self, cams: np.ndarray, threshold: float,
               margin: float = 0.0) -> list[crops_stage.CropBox]:
        """The crop box of each CAM (Stage 3b), widened by ``margin`` cells of the CAM layer's
        grid on every side (``FalconSettings.cam_box_margin``; 0: the paper's box)."""
        pixels = (0.0, 0.0)
        if margin and len(cams):
            from .stages.gradcam import cam_grid

            cell = crops_stage.cell_size((cams.shape[-1], cams.shape[-2]), cam_grid(self.backbone))
            pixels = (margin * cell[0], margin * cell[1])
        return [crops_stage.crop_box(np.asarray(c, dtype=np.float32), threshold, pixels)
                for c in cams]

    # ---- Stage 4: CLIP embeddings of crops and whole images ----------------------------------
    def _crop_embeddings_key(self, cams_key: str, threshold: float, boxes,
                             margin: float = 0.0) -> str:
        return cache_keys.crop_embeddings(cams_key, threshold, self.clip.fingerprint,
                                          [b.as_tuple() for b in boxes], margin)

    def _crop_embeddings(self, indices, boxes, cams_key: str, threshold: float,
                         margin: float = 0.0):
        key = self._crop_embeddings_key(cams_key, threshold, boxes, margin)

        def compute() -> np.ndarray:
            return embed_images(self.clip, [crops_stage.crop_image(self.store.view(i), b,
                                                                   self.clip.image_size)
                                            for i, b in zip(indices, boxes)])

        return self.cache.get_or_compute_npy("crop_embeddings", key, compute,
                                             shape=(len(indices), self.clip.embed_dim),
                                             dtype=np.float32)

    def _cam_boxes(self, feats: tuple[int, ...], indices, s: FalconSettings
                   ) -> tuple[str, list[crops_stage.CropBox]]:
        """``(cams key, crop boxes)`` of the images ``indices`` of ``feats`` under settings
        ``s`` (:meth:`_cams`, then :meth:`_boxes`). Boxes a precompute already cut from the same
        maps (:attr:`box_memo`, a dict only during a precompute chunk, else None)
        are taken from there: the same maps and the same arithmetic give the same boxes."""
        key = self._cams_key(feats, indices)
        memo = self.box_memo
        tag = (key, float(s.cam_threshold), float(s.cam_box_margin))
        if memo is not None and tag in memo:
            return key, memo[tag]
        boxes = self._boxes(self._cams(feats, indices), s.cam_threshold, s.cam_box_margin)
        if memo is not None:
            memo[tag] = boxes
        return key, boxes

    def _crop_rows(self, feats: tuple[int, ...], indices, s: FalconSettings) -> np.ndarray:
        """Stages 3-4 for the images ``indices`` of ``feats`` under settings ``s``: the CLIP
        embeddings of their GradCAM crops (threshold and margin of ``s``), read from the cache or
        computed -- the rows ``explain`` computes for T."""
        key, boxes = self._cam_boxes(feats, indices, s)
        return self._crop_embeddings(indices, boxes, key, s.cam_threshold, s.cam_box_margin)

    def _whole_embeddings(self, indices) -> np.ndarray:
        """CLIP embeddings of whole views (Stage 6's counterfactual images, the caption scale's
        sample): rows of the view embeddings (:meth:`Calibration.view_embeddings`), which every
        explanation computes anyway for its faithfulness score, once per workspace. So an image
        is embedded whole once, whichever features (or precompute, or cold or warm run) need it,
        and every path reads the same stored rows: a plain explain and a shared precompute give
        the same bits."""
        views = self.calibration.view_embeddings()
        idx = np.asarray(indices, dtype=np.int64)
        return np.array(views[idx], dtype=np.float32)

    def _match_captions(self, B: np.ndarray, k: int, images,
                        settings: FalconSettings | None = None):
        """Stage 4 for the probe images ``images`` (their CLIP embeddings: the rows of B): their
        k best captions, as vocabulary rows (n, k), texts and cosine scores (n, k), searched with
        the caption index ``settings.caption_index`` names. One method, so a benchmark can
        replace CLIP's matching (e.g. by ground-truth captions)."""
        idx, scores = self._search(np.asarray(B, dtype=np.float32), k, settings)
        flat = sorted({int(j) for j in idx.ravel() if j >= 0})
        texts = dict(zip(flat, self.vocabulary.captions(flat)))
        return idx, [[texts.get(int(j), "") for j in row] for row in idx], scores

    def _search(self, B: np.ndarray, k: int, settings: FalconSettings | None = None):
        """``caption_index(settings).search(B, k)``, rows found in :attr:`search_memo` (what a
        precompute searched for many features at once) taken from there. A row's result does
        not depend on the rows searched with it (:func:`falcon_core.caption_index.pair_scores`),
        so both give the same."""
        index = self.caption_index(settings)
        memo = self.search_memo
        if memo and len(B):
            tag = (index.fingerprint, index.kind, int(k))
            got = [memo.get((tag, r.tobytes())) for r in B]
            if all(g is not None for g in got):
                return np.stack([g[0] for g in got]), np.stack([g[1] for g in got])
        return index.search(B, k)

    def share_searches(self, B: np.ndarray, k: int, settings: FalconSettings | None = None
                       ) -> int:
        """Search the distinct rows of ``B`` once, in one search, and keep each row's result
        in :attr:`search_memo` for :meth:`_search`. Returns the number of rows searched."""
        index = self.caption_index(settings)
        tag = (index.fingerprint, index.kind, int(k))
        B = np.ascontiguousarray(B, dtype=np.float32)
        rows: dict[bytes, int] = {}
        for n, r in enumerate(B):
            rows.setdefault(r.tobytes(), n)
        todo = [n for key, n in rows.items() if (tag, key) not in self.search_memo]
        if not todo:
            return 0
        for a in range(0, len(todo), SHARED_SEARCH_ROWS):
            part = todo[a:a + SHARED_SEARCH_ROWS]
            idx, scores = index.search(B[part], k)
            for n, i, sc in zip(part, idx, scores):
                self.search_memo[(tag, B[n].tobytes())] = (i, sc)
        return len(todo)

    def _score_caption_sets(self, sets, s: FalconSettings):
        """Stages 4-5 on several sets of images, ``[(B, images), ...]`` (T and L): one search of
        the vocabulary for all of them (:meth:`_match_captions`), the Word Scores per set."""
        k = s.captions_per_image
        B = np.concatenate([np.asarray(b, dtype=np.float32) for b, _ in sets])
        images = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in sets])
        idx, texts, scores = self._match_captions(B, k, images, s)
        concepts = self.caption_concepts(idx, texts)
        out, start = [], 0
        for b, _ in sets:
            stop = start + len(b)
            out.append(score_matches(idx[start:stop], texts[start:stop], scores[start:stop],
                                     self.extractor, concepts))
            start = stop
        return out

    def caption_concepts(self, idx, texts: list[list[str]]
                         ) -> dict[str, concepts_stage.CaptionConcepts]:
        """Stage 5's concepts of matched captions (vocabulary rows ``idx``, their ``texts``):
        looked up in the vocabulary's concept table (:meth:`Calibration.concept_table`, no
        spaCy), the extractor's for captions it lacks (a vocabulary above the table's limit,
        texts of no row)."""
        table = self.calibration.concept_table(self.extractor)
        rows = [int(j) for row in idx for j in row]
        flat = [t for row in texts for t in row]
        return concepts_stage.concepts_by_row(rows, flat, self.extractor, table,
                                              self.vocabulary.captions)


    def concept_embeddings(self, texts: list[str]) -> np.ndarray:
        """CLIP embeddings of concept texts (:func:`embed_texts`), each embedded once per
        explainer (``text_memo``): the features of a layer share most of their concepts."""
        memo = self.text_memo
        todo = [t for t in dict.fromkeys(texts) if t not in memo]
        if todo:
            if len(memo) + len(todo) > TEXT_MEMO_MAX:
                memo.clear()
            for t, row in zip(todo, embed_texts(self.clip, todo)):
                memo[t] = row
        return np.stack([memo[t] for t in texts]) if texts else \
            np.zeros((0, self.clip.embed_dim), dtype=np.float32)

    def faithfulness_plan(self, feats: tuple[int, ...], kept: list[Concept],
                          removed: list[Concept], shown: list[Concept], n_high: int,
                          s: FalconSettings) -> "FaithfulnessPlan":
        """The faithfulness score (:mod:`.stages.faithfulness`) of the top kept concepts
        (``kept``: words then phrases, each list best first, already cut to the top few), of
        the top removed ones, and of each ``shown`` concept alone, on the whole probe set, up to
        its ranking: the matrix products (each probe view against each concept, and against the
        two Word-Score-weighted combinations). :func:`score_faithfulness` ranks them. A
        precompute makes every feature's plan, then ranks them all, so its products run back to
        back; each product is the one a plain explain computes (same shapes, same call), so the
        bits are the same."""
        Hn = self.store.normalized(s.normalize_rows)
        valid = np.asarray(self.store.valid, dtype=bool)
        activation = np.asarray(Hn[:, list(feats)], dtype=np.float64).sum(axis=1)
        k = faithfulness_stage.choose_k(int(valid.sum()), n_high)
        texts = faithfulness_texts(kept, removed, shown)
        if not texts:
            return FaithfulnessPlan(texts, None, activation, k, valid, None, None)
        views = np.asarray(self.calibration.view_embeddings(), dtype=np.float32)
        T = self.concept_embeddings(texts)
        row = {t: i for i, t in enumerate(texts)}

        def combined(concepts: list[Concept]):
            weights: dict[str, float] = {}
            for c in concepts:  # a word that is also a phrase counts once, with both weights
                weights[c.text] = weights.get(c.text, 0.0) + max(float(c.score), 0.0)
            if not weights:
                return None
            sim = faithfulness_stage.concept_similarity(
                views, T[[row[t] for t in weights]], list(weights.values()))
            return list(weights), list(weights.values()), sim

        return FaithfulnessPlan(texts, faithfulness_stage.concept_products(views, T),
                                activation, k, valid, combined(kept), combined(removed))


class FaithfulnessPlan:
    """One explanation's faithfulness score before its ranking (:meth:`ImageStages.
    faithfulness_plan`): the concept texts, each view's similarity to each ((N, c) float32),
    the activation, k, the valid images, and the kept and removed combinations (``(concepts,
    weights, similarity (N,))`` or None)."""

    __slots__ = ("texts", "sims", "activation", "k", "valid", "kept", "removed")

    def __init__(self, texts, sims, activation, k, valid, kept, removed):
        self.texts, self.sims, self.activation, self.k = texts, sims, activation, k
        self.valid, self.kept, self.removed = valid, kept, removed

    @property
    def size(self) -> int:
        """Similarities held (what bounds a group of plans ranked together)."""
        return 0 if self.sims is None else int(self.sims.size)


def score_faithfulness(plans: list[FaithfulnessPlan]) -> list[Faithfulness]:
    """The :class:`Faithfulness` of each plan: its concepts alone and its two combinations
    ranked in one :func:`~falcon_core.stages.faithfulness.score_rows` a plan (numpy only, no
    matrix product: after a precompute's products, nothing here keeps the BLAS threads
    spinning). A row's scores do not depend on the rows ranked with it, so they are those of a
    plain explain, bit for bit."""
    out = []
    for p in plans:
        if not p.texts:
            out.append(Faithfulness(None, None, {}, faithfulness_stage.METHOD))
            continue
        both = [c for c in (p.kept, p.removed) if c is not None]
        rows = np.empty((p.sims.shape[1] + len(both), p.sims.shape[0]), dtype=np.float64)
        rows[:p.sims.shape[1]] = p.sims.T
        for i, (_, _, sim) in enumerate(both):
            rows[p.sims.shape[1] + i] = sim
        scores = faithfulness_stage.score_rows(rows, p.activation, p.k, p.valid)
        alone, extra = scores[:p.sims.shape[1]], iter(scores[p.sims.shape[1]:])

        def combined(c):
            if c is None:
                return None
            sc = next(extra)
            return FaithfulnessScore(c[0], c[1], sc.auc, sc.spearman, sc.k, sc.n)

        kept = combined(p.kept)
        out.append(Faithfulness(kept, combined(p.removed),
                                {t: alone[i].auc for i, t in enumerate(p.texts)},
                                faithfulness_stage.METHOD))
    return out
