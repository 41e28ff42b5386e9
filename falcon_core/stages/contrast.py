"""Stage 6: lowly activating counterfactual images ``L`` (Eq. 2) and spurious-concept removal.

``L = { j : Hn[j, f] low for every f of W,  Hn[j, V] · h_mu >= beta }`` where ``W`` is the set of
features the counterfactuals must be low on, ``V`` every column but ``W`` and ``h_mu`` the mean of
``Hn[T, V]`` over the highly activating images ``T``. As in the authors' code the similarity is the
plain dot product of the (already row-normalised) rows with ``W``'s dimensions removed; nothing is
renormalised. Images of ``T`` and invalid rows are never candidates. ``L`` is sorted by similarity,
best first (ties: lower index), and capped at ``max_images`` (0 = no cap, as for
``max_high_images``; turn contrast off with ``FalconSettings.contrast``).
``LowSelection.activations`` is the summed activation of the group features of each L image.

Which features must be low, and what "low" means (``rule``, :data:`LOW_RULES`):

``"global"`` (the authors' Eq. 2)
    ``W`` = the feature (or group); low = strictly below ``eps``, by default the global mean of
    ``Hn`` over the valid rows (one number for every feature).
``"twins"``
    ``W`` = the group plus its *twins*: every other feature whose activation over the probe set
    correlates with the group's summed activation with Pearson ``r >= twin_correlation``;
    low = strictly below ``eps`` as in ``"global"``. The twins leave ``V`` too, so they pull no
    image into ``L``.
``"quantile"``
    ``W`` = the feature (or group); low = at or below the feature's own ``low_quantile``
    (``np.quantile`` over the valid rows, linear interpolation; ``<=``, so a sparse feature whose
    lower quantile is 0 still has its zero images as candidates).
``"clip"``
    The candidates of ``"quantile"`` (low on the feature by its own quantile), ranked by what the
    CLIP sees instead of by the backbone: the cosine of each candidate's CLIP embedding (its whole
    view, ``views``) with the mean direction of the CLIP embeddings of T's crops
    (``reference``: the rows Stage 4 captions T from), best first, the ``max_images`` nearest
    kept. No β: β is a bound on the backbone's dot product, which this rule does not use.

Why ``"clip"``: Eq. 2 asks for images that "share the other concepts of T but not feature i", and
measures "share" in the backbone's space. But a backbone that learnt a planted correlation (stars
mostly on grass) encodes it there, and its space is dominated by what it was trained on (shape):
the backbone-nearest low images show the spurious value about as rarely as random ones (README).
The concepts being tested are what CLIP names on T's crops; the images that look most like those
crops *to the CLIP* (a model not trained on the backbone's correlations), among the images on
which the feature is low, are the images that show T's concepts without the feature: if the
feature does not respond to a concept, they show it and name it, and it is removed; if it does,
the feature is high on such images, they are not candidates, and the concept stays.

Why a rule other than the authors': on a representation that encodes a concept in many redundant
features (the demo backbone has 12 star features), the images that are below the global mean on
feature i but most similar to T on every other feature are the few images of the concept on which
i happens to be weak while its twins are strong: they show the concept itself, and Eq. 2 removes
the true concept. The README has the measurements.

A concept of ``T`` is spurious when its Word Score on ``L`` is ``>= threshold`` (inclusive); a
concept absent from ``L``'s captions has L-score 0. The threshold (:data:`SPURIOUS_RULES`) is the
authors' absolute 0.1 (on OpenAI ViT-B/32's cosine scale), or relative to the CLIP in use
(:func:`spurious_threshold`): ``0.1 × scale / 0.3``, the authors' value moved from ViT-B/32's
scale (0.3) to the scale of the CLIP in use, the mean top-k caption cosine of probe images
(:func:`caption_scale`), or ``"ratio"``: one threshold per concept, ``(0.1 / 0.3) × its own Word
Score on T`` (:func:`split_spurious`).

Why ``"ratio"``: a Word Score is (share of the images whose top captions name the concept with
this word) × (their caption score). Both the relative and the ratio rule keep the authors' 0.1 / 0.3
= 1/3; they differ in what a third is of. The relative rule compares the L-score with a caption
that names the concept on *every* image (the CLIP's scale), so a concept the captions phrase in
several ways (grass, grassy, lawn, meadow, turf, field: the demo's and LAION's captions alike) has
every synonym below the threshold even when L shows it as often as T does, and one synonym stays
among the top words. The ratio rule compares a concept's L-score with its own T-score: the
phrasing share, the CLIP's scale and how many images of ``T`` show the concept are the same factor
on both sides and cancel, leaving "L names it at least a third as much as T does". A concept that
L never names (L-score 0) is never spurious.

``"conditional"``: measured on the feature's own activations instead of on ten images
(:func:`conditional_split`). Eq. 2 asks "does this concept also describe images the feature is
low on?"; this rule asks it per concept, over the whole probe set, with CLIP's naming of every
view (its top-k captions' concepts, as Stage 5 extracts them). The *anchor* ``c`` is the concept
among T's top words whose naming best separates the feature's activation (highest ROC AUC over
the probe images); it is never removed. Every other concept ``d`` is tested on the images CLIP
names ``c`` in: the AUC of the activation for "``d`` is named too" (DeLong's interval,
:mod:`.reliance`). There both groups show ``c``, so a correlation between ``c`` and ``d`` in the
probe set cancels, and an AUC of 0.5 says the feature ignores ``d``. The yardstick is the
feature's response to ``c`` itself: the AUC of the activation for "``c`` is named" among the
images that do not name ``d``. ``d`` is spurious when ``AUC(d | c) - 0.5 < share × (AUC(c | not
d) - 0.5)``, with ``share`` the ratio rule's 1/3 (the authors' 0.1 / 0.3): the feature responds to
``d`` less than a third as much as to its anchor. The decision is on the estimates, as Eq. 2's is
on the L-score; the interval is kept with each test so a user sees how sure it is. A concept with
fewer than ``MIN_NAMED`` (2, the least DeLong's covariance needs) images in either group of
either test is *undecided* and kept: the probe set cannot show that the feature ignores it (a
synonym of the anchor, named wherever the anchor is, is such a case).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import FalconError
from .common import (as_matrix, best_first, count_images, global_mean, name_features, unit_rows,
                     valid_mask, validate_features)
from .reliance import delong


LOW_RULES = ("global", "twins", "quantile", "clip")
SPURIOUS_RULES = ("absolute", "relative", "ratio", "conditional")


@dataclass
class LowSelection:
    indices: np.ndarray  # int64, most similar first
    activations: np.ndarray  # summed activation of the group features
    similarity: np.ndarray  # Hn[j, V] · h_mu
    low_threshold: float  # eps of the first feature of the group (one number for displays)
    beta: float
    n_candidates: int  # images low on every feature of W (not in T, valid)
    description: str
    rule: str = "global"
    twins: tuple[int, ...] = ()  # features added to W by the "twins" rule, most correlated first
    twin_correlations: tuple[float, ...] = ()
    feature_thresholds: tuple[float, ...] = ()  # eps of each feature of W (group, then twins)

    def __len__(self) -> int:
        return int(len(self.indices))


def column_correlations(Hn: np.ndarray, column: np.ndarray, valid: np.ndarray | None = None
                        ) -> np.ndarray:
    """Pearson correlation of ``column`` (N,) with every column of ``Hn`` over the valid rows.

    A constant column (or a constant ``column``) correlates 0 with everything. Computed in row
    blocks, so a large ``Hn`` (memory-mapped) is never copied whole."""
    Hn = as_matrix(Hn)
    N, r = Hn.shape
    v = valid_mask(valid, N)
    x = np.asarray(column, dtype=np.float64).reshape(-1)
    if x.shape[0] != N:
        raise FalconError(f"The column has {x.shape[0]} entries but the matrix has {N} rows.")
    rows = np.flatnonzero(v)
    n = len(rows)
    if n < 2:
        return np.zeros(r)
    xv = x[rows]
    xc = xv - xv.mean()
    sx = np.sqrt((xc ** 2).sum())
    s1 = np.zeros(r)
    s2 = np.zeros(r)
    sxy = np.zeros(r)
    step = max(1, 2**22 // max(r, 1))
    for i in range(0, n, step):
        block = np.asarray(Hn[rows[i:i + step]], dtype=np.float64)
        s1 += block.sum(axis=0)
        s2 += (block ** 2).sum(axis=0)
        sxy += xc[i:i + step] @ block
    var = np.maximum(s2 - s1 ** 2 / n, 0.0)
    sy = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = sxy / (sx * sy)
    corr[~np.isfinite(corr)] = 0.0
    if sx == 0:
        corr[:] = 0.0
    return np.clip(corr, -1.0, 1.0)


def find_twins(Hn: np.ndarray, features: Sequence[int] | int, min_correlation: float = 0.5,
               valid: np.ndarray | None = None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Features outside the group whose activation correlates with the group's summed activation
    with Pearson ``r >= min_correlation`` over the valid rows; most correlated first (ties: lower
    index). Returns ``(twins, their correlations)``."""
    Hn = as_matrix(Hn)
    feats = validate_features(features, Hn.shape[1])
    v = valid_mask(valid, Hn.shape[0])
    summed = np.asarray(Hn[:, list(feats)], dtype=np.float64).sum(axis=1)
    corr = column_correlations(Hn, summed, v)
    corr[list(feats)] = -np.inf
    cand = np.flatnonzero(corr >= float(min_correlation))
    twins = cand[best_first(cand, corr[cand])]
    return tuple(int(t) for t in twins), tuple(float(corr[t]) for t in twins)


def select_low(
    Hn: np.ndarray,
    features: Sequence[int] | int,
    high_indices: Sequence[int] | np.ndarray,
    low_threshold: float | None = None,
    beta: float = 0.3,
    max_images: int = 10,
    valid: np.ndarray | None = None,
    rule: str = "global",
    low_quantile: float = 0.25,
    twin_correlation: float = 0.5,
    views: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> LowSelection:
    """Stage 6's counterfactual images (see the module docstring). ``views`` (N, k) and
    ``reference`` (n, k or k) are the CLIP embeddings the ``"clip"`` rule needs: every probe
    image's whole view, and the crops of T (or their mean); other rules ignore them."""
    Hn = as_matrix(Hn)
    N, r = Hn.shape
    feats = validate_features(features, r)
    v = valid_mask(valid, N)
    high = np.asarray(high_indices, dtype=np.int64).reshape(-1)
    if high.size and (high.min() < 0 or high.max() >= N):
        raise FalconError(f"A highly activating image index is out of range (0 to {N - 1}).")
    if max_images is None:
        max_images = 0
    if max_images < 0:
        raise FalconError(f"max_images={max_images} must be 0 (no cap) or positive.")
    if rule not in LOW_RULES:
        raise FalconError(f"Unknown rule for counterfactual images: {rule!r}.",
                          f"Use one of {', '.join(LOW_RULES)}.")
    if rule in ("quantile", "clip") and not 0.0 < float(low_quantile) < 1.0:
        raise FalconError(f"low_quantile={low_quantile!r} must be between 0 and 1.")
    if rule == "clip":
        views, ref = _clip_inputs(views, reference, N)

    twins: tuple[int, ...] = ()
    twin_corr: tuple[float, ...] = ()
    if rule == "twins":
        twins, twin_corr = find_twins(Hn, feats, twin_correlation, v)
    W = list(feats) + list(twins)
    if rule in ("quantile", "clip"):
        q = float(low_quantile)
        rows = np.flatnonzero(v)
        eps_w = [float(np.quantile(np.asarray(Hn[rows, f], dtype=np.float64), q)) for f in W]
        eps_text = f"its own {q:g}-quantile"
        strict = False
    else:
        if low_threshold is None:
            eps = global_mean(Hn, v)
            eps_text = "the global mean"
        else:
            eps = float(low_threshold)
            eps_text = "the set threshold"
        eps_w = [eps] * len(W)
        strict = True
    eps0 = eps_w[0]
    beta = float(beta)
    who = name_features(feats)
    if twins:
        who += f" and its {len(twins)} twin{'s' if len(twins) != 1 else ''} " \
               f"(features {', '.join(map(str, twins[:12]))}{', ...' if len(twins) > 12 else ''}: " \
               f"r ≥ {float(twin_correlation):g})"
    elif rule == "twins":
        who += f" (no twin: no other feature has r ≥ {float(twin_correlation):g})"
    empty = np.zeros(0, dtype=np.int64)

    def result(idx, act, sim, n_cand, description):
        return LowSelection(
            indices=np.asarray(idx, dtype=np.int64),
            activations=np.asarray(act, dtype=np.float64),
            similarity=np.asarray(sim, dtype=np.float64),
            low_threshold=eps0,
            beta=beta,
            n_candidates=int(n_cand),
            description=description,
            rule=rule,
            twins=twins,
            twin_correlations=twin_corr,
            feature_thresholds=tuple(float(e) for e in eps_w),
        )

    colsW = np.asarray(Hn[:, W], dtype=np.float64)
    eps_arr = np.asarray(eps_w, dtype=np.float64)
    low_each = colsW < eps_arr if strict else colsW <= eps_arr
    cand_mask = v & np.all(low_each, axis=1)
    cand_mask[high] = False
    cand = np.flatnonzero(cand_mask)
    n_cand = len(cand)
    cmp = "below" if strict else "at or below"
    if rule in ("quantile", "clip"):
        low = f"{who} {cmp} {eps_text}"
    else:
        low = f"{who} {cmp} ε = {eps0:.4g} ({eps_text})"
    if high.size == 0:
        return result(empty, [], [], n_cand,
                      "No counterfactual images: there are no highly activating images to contrast with.")
    if n_cand == 0:
        return result(empty, [], [], 0, f"No counterfactual images: no other image has {low}.")

    if rule == "clip":
        return _select_clip(cand, views, ref, feats, Hn, max_images, low, result)

    # h_mu over V, written as a full-length vector with zeros on W's dimensions, so that
    # Hn[j] · h_mu_full == Hn[j, V] · h_mu without copying the columns of V
    h_mu = np.asarray(Hn[high], dtype=np.float64).mean(axis=0)
    h_mu[W] = 0.0
    step = max(1, 2**22 // max(r, 1))
    sim = np.concatenate([np.asarray(Hn[cand[i:i + step]], dtype=np.float64) @ h_mu
                          for i in range(0, n_cand, step)])
    ok = sim >= beta
    idx, sim = cand[ok], sim[ok]
    o = best_first(idx, sim)
    idx, sim = idx[o], sim[o]
    n_ok = len(idx)
    if max_images and n_ok > max_images:
        idx, sim = idx[:max_images], sim[:max_images]
    act = np.asarray(Hn[idx][:, list(feats)], dtype=np.float64).sum(axis=1)

    if n_ok == 0:
        description = (f"No counterfactual images: {count_images(n_cand)} {'has' if n_cand == 1 else 'have'} {low}, but none has a "
                       f"similarity ≥ β = {beta:g} to the highly activating images on the other features.")
    else:
        use = "all are used" if len(idx) == n_ok else f"the {len(idx)} most similar are used"
        if n_ok == 1:
            use = "it is used"
        verb = "has" if n_ok == 1 else "have"
        description = (f"{n_ok} of {n_cand} images with {low} {verb} a similarity ≥ β = {beta:g} to "
                       f"the highly activating images on the other features; {use}.")
    return result(idx, act, sim, n_cand, description)


def _clip_inputs(views, reference, N: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``"clip"`` rule's inputs, checked: the views (N, k) and the unit mean direction of the
    reference rows (each row normalised first, so every crop counts the same)."""
    if views is None or reference is None:
        raise FalconError("The 'clip' counterfactual rule needs the CLIP embeddings of the probe "
                          "images' views and of the highly activating images' crops.",
                          "Pass views= and reference=, or use another low_rule.")
    V = np.asarray(views)
    R = np.asarray(reference, dtype=np.float64)
    R = R.reshape(1, -1) if R.ndim == 1 else R
    if V.ndim != 2 or V.shape[0] != N:
        raise FalconError(f"views must be (N={N}, k); got shape {V.shape}.")
    if R.ndim != 2 or R.shape[1] != V.shape[1] or len(R) == 0:
        raise FalconError(f"reference must be (n, {V.shape[1]}); got shape {R.shape}.")
    ref = unit_rows(unit_rows(R).mean(axis=0))
    return V, ref


def _select_clip(cand, views, ref, feats, Hn, max_images, low, result) -> LowSelection:
    """The ``"clip"`` rule's ranking: the candidates nearest (cosine of their view's CLIP
    embedding) to the mean direction ``ref`` of T's crops, best first (ties: lower index)."""
    n_cand = len(cand)
    sim = unit_rows(views[cand]) @ ref
    o = best_first(cand, sim)
    idx, sim = cand[o], sim[o]
    if max_images and len(idx) > max_images:
        idx, sim = idx[:max_images], sim[:max_images]
    act = np.asarray(Hn[idx][:, list(feats)], dtype=np.float64).sum(axis=1)
    use = ("it is used" if n_cand == 1 else "all are used" if len(idx) == n_cand
           else f"the {len(idx)} nearest are used")
    description = (f"{n_cand} image{'s' if n_cand != 1 else ''} {'has' if n_cand == 1 else 'have'} "
                   f"{low}; ranked by the cosine of their CLIP view embedding with the mean of the "
                   f"highly activating crops' embeddings (what CLIP sees, not the backbone); {use}.")
    return result(idx, act, sim, n_cand, description)


def caption_scale(scores: np.ndarray) -> float:
    """The similarity scale of a CLIP model on a probe set: the mean of the top-k caption scores
    (rows: images, columns: their k best captions), i.e. the score a caption that describes an
    image typically gets. nan when there is no score."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return float("nan")
    if s.ndim != 2:
        raise FalconError(f"Caption scores must be 2-D (images x captions); got shape {s.shape}.")
    return float(s.mean())


def spurious_threshold(rule: str, absolute: float = 0.1, scale: float | None = None,
                       reference_scale: float = 0.3) -> float:
    """The L-score at or above which a concept is spurious.

    ``"absolute"``: ``absolute`` (the authors' 0.1, on OpenAI ViT-B/32's cosine scale).
    ``"relative"``: the same threshold moved to the scale of the CLIP in use,
    ``absolute × scale / reference_scale``, with ``scale`` from :func:`caption_scale` and
    ``reference_scale`` the scale the absolute value was set on (0.3 for ViT-B/32: the cosine at
    which LAION-400M judged, with human checks, that a caption matches its image). A Word Score is
    the mean over L of the best caption score naming the concept (0 where none does), so a concept
    named by a share p of the counterfactuals scores about ``p × scale``: the authors' 0.1 at
    scale 0.3 means "named by a third of the counterfactuals", and the relative threshold keeps
    that meaning on any CLIP.
    """
    if rule not in SPURIOUS_RULES:
        raise FalconError(f"Unknown rule for the spurious threshold: {rule!r}.",
                          f"Use one of {', '.join(SPURIOUS_RULES)}.")
    if rule == "absolute":
        return float(absolute)
    if rule in ("ratio", "conditional"):
        raise FalconError(f"The {rule} rule has one threshold per concept (a share of its T-score), "
                          "not one number.", "Use spurious_share() and split_spurious(share=...).")
    if scale is None or not np.isfinite(scale) or scale <= 0:
        raise FalconError(
            f"The relative spurious threshold needs the CLIP's caption scale (got {scale!r}).",
            "Use spurious_rule='absolute', or a probe set with readable images.")
    if not reference_scale > 0:
        raise FalconError(f"reference_scale={reference_scale!r} must be positive.")
    return float(absolute) * float(scale) / float(reference_scale)


def scale_sample(valid: np.ndarray, n: int) -> np.ndarray:
    """The (at most ``n``) images a CLIP's caption scale is measured on: evenly spaced over the
    valid rows (ascending, deterministic)."""
    rows = np.flatnonzero(np.asarray(valid, dtype=bool))
    if len(rows) == 0 or n <= 0:
        return rows[:0]
    return rows[np.unique(np.linspace(0, len(rows) - 1, min(int(n), len(rows))).round()
                          .astype(np.int64))]


def spurious_share(absolute: float = 0.1, reference_scale: float = 0.3) -> float:
    """The ratio rule's share: a concept is spurious when its L-score is at least this share of its
    T-score. ``absolute / reference_scale``: the authors' 0.1 on ViT-B/32's caption scale 0.3,
    i.e. 1/3 (see the module docstring)."""
    if not reference_scale > 0:
        raise FalconError(f"reference_scale={reference_scale!r} must be positive.")
    return float(absolute) / float(reference_scale)


def spurious_threshold_info(rule: str, absolute: float = 0.1, reference_scale: float = 0.3,
                            scale: float | None = None, captions_per_image: int = 5,
                            scale_images: int = 0) -> dict:
    """:func:`spurious_threshold` with what the app shows about it: the rule, the inputs, and a
    sentence saying where the number comes from. For the ratio rule ``threshold`` is None (one
    per concept) and ``share`` is the share of the T-score; for the conditional rule ``share`` is
    the share of the anchor's response (:func:`conditional_test`)."""
    if rule in ("ratio", "conditional"):
        share = spurious_share(absolute, reference_scale)
        if rule == "ratio":
            description = (
                f"A concept is spurious when its L-score is ≥ {share:.3g} × its T-score "
                f"({absolute:g} / {reference_scale:g}: the authors' {absolute:g} as a share "
                f"of the caption score {reference_scale:g} it was set against on CLIP "
                f"ViT-B/32). It means: the counterfactual images name the concept at least "
                f"{share:.0%} as much as the highly activating images do; a concept they never "
                f"name is kept.")
        else:
            description = (
                f"A concept is spurious when the feature responds to it less than "
                f"{share:.3g} as much as to its anchor (the top word whose naming best "
                f"separates the feature's activation; never removed): among the probe images "
                f"CLIP names the anchor in, the ROC AUC of the activation for \"the concept "
                f"is named too\" is below 0.5 + {share:.3g} × (the anchor's own AUC − 0.5). "
                f"{share:.3g} = {absolute:g} / {reference_scale:g}, the ratio rule's share. "
                f"Measured on every probe image, not on the counterfactual images (L is "
                f"shown, not used); a concept with too few images to test is kept.")
        return {"rule": rule, "absolute": float(absolute), "threshold": None, "share": share,
                "reference_scale": float(reference_scale), "description": description}
    threshold = spurious_threshold(rule, absolute, scale, reference_scale)
    info = {"rule": rule, "absolute": float(absolute), "threshold": threshold}
    if rule == "relative":
        share = absolute / reference_scale
        info.update({"caption_scale": float(scale), "reference_scale": float(reference_scale),
                     "scale_images": int(scale_images)})
        info["description"] = (
            f"A concept is spurious when its L-score is ≥ {threshold:.3g} = {absolute:g} × "
            f"{scale:.3g} / {reference_scale:g}: the authors' {absolute:g} (set on CLIP ViT-B/32, "
            f"whose matching captions score about {reference_scale:g}) moved to this CLIP's scale, "
            f"{scale:.3g} (its mean top-{captions_per_image} caption cosine on {scale_images} probe "
            f"images). It means: named by about {share:.0%} of the counterfactual images.")
    else:
        info["description"] = (f"A concept is spurious when its L-score is ≥ {threshold:.3g} "
                               "(absolute; the authors' value, set on CLIP ViT-B/32's cosine "
                               "scale).")
    return info


def split_spurious(
    t_scores: dict[str, float],
    l_scores: dict[str, float],
    threshold: float | None = 0.1,
    share: float | None = None,
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Split T's concepts into kept ones and spurious ones: L-score >= ``threshold`` or, with
    ``share`` (the ratio rule; ``threshold`` is then ignored), L-score > 0 and L-score >= ``share``
    × T-score.

    Returns ``(kept, removed)``: ``kept[c] = t_score``, ``removed[c] = (t_score, l_score)``; the
    order of ``t_scores`` is preserved in both.
    """
    if share is None and threshold is None:
        raise FalconError("split_spurious needs a threshold or a share.")
    kept: dict[str, float] = {}
    removed: dict[str, tuple[float, float]] = {}
    for c, t in t_scores.items():
        l_score = float(l_scores.get(c, 0.0))
        if share is not None:
            spurious = l_score > 0.0 and l_score >= float(share) * float(t)
        else:
            spurious = l_score >= threshold
        if spurious:
            removed[c] = (float(t), l_score)
        else:
            kept[c] = float(t)
    return kept, removed


# the conditional rule: the fewest images in each group of an AUC test (DeLong needs two)
MIN_NAMED = 2


@dataclass
class Naming:
    """Which concepts CLIP names in each probe image's whole view: ``images`` (n,) probe rows,
    and for each concept (``words``, ``phrases``) the sorted positions in ``images`` of the views
    whose top captions hold it (postings, so a large vocabulary needs no n × m matrix)."""
    images: np.ndarray
    words: dict[str, np.ndarray]
    phrases: dict[str, np.ndarray]

    def column(self, text: str, kind: str = "word") -> np.ndarray:
        """(n,) bool: the views that name ``text`` (a word, or a phrase with ``kind="phrase"``)."""
        out = np.zeros(len(self.images), dtype=bool)
        got = (self.words if kind == "word" else self.phrases).get(text)
        if got is not None:
            out[got] = True
        return out


def _auc(activation: np.ndarray, positive: np.ndarray) -> tuple[float, float] | None:
    """ROC AUC of ``activation`` for ``positive`` and DeLong's standard error; None with fewer
    than :data:`MIN_NAMED` positives or negatives."""
    y = np.asarray(positive, dtype=bool)
    if int(y.sum()) < MIN_NAMED or int((~y).sum()) < MIN_NAMED:
        return None
    auc, cov = delong(np.asarray(activation, dtype=np.float64)[None, :], y)
    return float(auc[0]), float(np.sqrt(max(float(cov[0, 0]), 0.0)))


def choose_anchor(activation: np.ndarray, naming: Naming, candidates: Sequence[str]
                  ) -> tuple[str, float] | None:
    """The candidate word (T's top words, best first) whose naming best separates ``activation``
    over the named images (highest AUC; ties: the earlier candidate), with its AUC; None when no
    candidate is named in at least :data:`MIN_NAMED` views and missing from as many."""
    best = None
    for c in candidates:
        got = _auc(activation, naming.column(c))
        if got is not None and (best is None or got[0] > best[1]):
            best = (c, got[0])
    return best


def conditional_test(activation: np.ndarray, anchor: np.ndarray, concept: np.ndarray,
                     share: float, z: float = 1.959964) -> dict:
    """One concept's test (module docstring): ``anchor`` and ``concept`` (n,) bool namings.
    Returns ``auc`` (of the activation for the concept among the anchor's images), its
    ``interval``, ``auc_anchor`` (for the anchor among the images without the concept), the
    ``bound`` ``0.5 + share × (auc_anchor − 0.5)``, the group sizes, and ``spurious``: True,
    False, or None (undecided: too few images)."""
    a, d = np.asarray(anchor, dtype=bool), np.asarray(concept, dtype=bool)
    act = np.asarray(activation, dtype=np.float64)
    out = {"auc": None, "interval": None, "auc_anchor": None, "bound": None,
           "both": int((a & d).sum()), "anchor_only": int((a & ~d).sum()),
           "neither": int((~a & ~d).sum()), "spurious": None}
    given = _auc(act[a], d[a])
    control = _auc(act[~d], a[~d])
    if given is None or control is None:
        return out
    bound = 0.5 + float(share) * (control[0] - 0.5)
    out.update({"auc": round(given[0], 4),
                "interval": [round(given[0] - z * given[1], 4), round(given[0] + z * given[1], 4)],
                "auc_anchor": round(control[0], 4), "bound": round(bound, 4),
                "spurious": bool(given[0] < bound)})
    return out


def conditional_split(t_scores: dict[str, float], l_scores: dict[str, float],
                      activation: np.ndarray, naming: Naming, anchor: str | None,
                      share: float, kind: str = "word", top: int | None = None
                      ) -> tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, dict]]:
    """:func:`split_spurious` for the ``"conditional"`` rule: T's concepts split by
    :func:`conditional_test` against the anchor word ``anchor`` (None: nothing is removed).
    Concepts are tested best T-score first (ties: text) until ``top`` are kept (None: all are
    tested); the rest are kept untested (below what is shown). The anchor, and a phrase equal to
    it, are never removed; undecided concepts are kept. Returns ``(kept, removed, tests)`` with
    ``removed[c] = (t_score, l_score)`` as :func:`split_spurious` and ``tests[c]`` each tested
    concept's test; ``kept`` and ``removed`` keep the order of ``t_scores``."""
    tests: dict[str, dict] = {}
    out: set[str] = set()
    a = naming.column(anchor) if anchor is not None else None
    n_kept = 0
    for c, _ in sorted(t_scores.items(), key=lambda kv: (-kv[1], kv[0])):
        if a is None or (top is not None and n_kept >= top):
            break
        if c != anchor:
            test = conditional_test(activation, a, naming.column(c, kind), share)
            tests[c] = test
            if test["spurious"]:
                out.add(c)
                continue
        n_kept += 1
    kept = {c: float(t) for c, t in t_scores.items() if c not in out}
    removed = {c: (float(t), float(l_scores.get(c, 0.0))) for c, t in t_scores.items() if c in out}
    return kept, removed, tests
