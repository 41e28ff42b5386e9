"""Ground truth of the demo world: which attribute value each backbone feature stands for.

For feature i and attribute value v ("shape=star"), the AUC is the ROC AUC of the feature's
activations over the probe set against the binary label "the scene has v" (for object
attributes: *any* object of the scene has it). The feature's ground truth is the value of largest
AUC; the feature is *clear* when that AUC >= ``threshold`` (0.85).

Direction: we score ``activation`` itself, not ``max(AUC, 1 - AUC)``. An AUC below 0.5 means the
feature is *low* on scenes with the value (anti-correlated); FALCON explains a feature by its
*highly* activating images, so such a value is not what the feature shows and is never its ground
truth. A value present in all or in none of the scenes has no AUC (skipped).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from .world import ATTRIBUTES, World


@dataclass(frozen=True)
class FeatureTruth:
    feature: int
    attribute: str | None
    value: str | None
    auc: float
    clear: bool

    @property
    def name(self) -> str | None:
        return None if self.attribute is None else f"{self.attribute}={self.value}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def attribute_names(world: World) -> list[str]:
    return [f"{a}={v}" for a in ATTRIBUTES for v in world.values(a)]


def attribute_matrix(scenes: Sequence[dict], world: World | None = None) -> tuple[list[str], np.ndarray]:
    """(names ["shape=star", ...], binary (N, V) uint8): which scene has which attribute value.

    With ``world``, the columns are all its values in config order (some may be all zero);
    without, the values that occur in ``scenes``, sorted."""
    if world is not None:
        names = attribute_names(world)
    else:
        found = set()
        for s in scenes:
            found.add(f"background={s['background']}")
            for o in s["objects"]:
                found.update(f"{a}={o[a]}" for a in ("shape", "color", "pattern", "size"))
        names = sorted(found)
    col = {n: j for j, n in enumerate(names)}
    M = np.zeros((len(scenes), len(names)), np.uint8)
    for i, s in enumerate(scenes):
        M[i, col[f"background={s['background']}"]] = 1
        for o in s["objects"]:
            for a in ("shape", "color", "pattern", "size"):
                M[i, col[f"{a}={o[a]}"]] = 1
    return names, M


def auc_table(H: np.ndarray, binary: np.ndarray) -> np.ndarray:
    """(r, V) ROC AUC of each feature (column of H) for each value (column of ``binary``);
    nan where a value is in all or none of the rows."""
    from sklearn.metrics import roc_auc_score  # here: importing scikit-learn takes seconds,
    # and every demo workspace imports this module (the app's first start, issue 9)

    H = np.asarray(H, np.float64)
    binary = np.asarray(binary).astype(bool)
    if H.ndim != 2 or binary.ndim != 2 or H.shape[0] != binary.shape[0]:
        raise ValueError(f"H {H.shape} and the attribute matrix {binary.shape} must have the same rows")
    out = np.full((H.shape[1], binary.shape[1]), np.nan)
    for j in range(binary.shape[1]):
        y = binary[:, j]
        if y.all() or not y.any():
            continue
        for i in range(H.shape[1]):
            out[i, j] = roc_auc_score(y, H[:, i])
    return out


def ground_truth(H: np.ndarray, scenes_or_binary: Any, names: Sequence[str] | None = None,
                 threshold: float = 0.85) -> list[FeatureTruth]:
    """One :class:`FeatureTruth` per feature (column of H).

    ``scenes_or_binary``: a list of scene dicts, or a binary (N, V) matrix with its ``names``.
    Ties go to the first value in column order. A feature that is constant has AUC 0.5 for every
    value and is not clear."""
    if isinstance(scenes_or_binary, np.ndarray):
        if names is None:
            raise ValueError("names are required with a binary matrix")
        binary = scenes_or_binary
    else:
        derived, binary = attribute_matrix(list(scenes_or_binary))
        names = derived if names is None else list(names)
        if list(names) != derived:
            col = {n: j for j, n in enumerate(derived)}
            binary = np.stack([binary[:, col[n]] if n in col else np.zeros(len(binary), np.uint8) for n in names], 1)
    names = list(names)
    if len(names) != binary.shape[1]:
        raise ValueError(f"{len(names)} names for {binary.shape[1]} columns")
    table = auc_table(H, binary)
    out = []
    for i in range(table.shape[0]):
        row = table[i]
        if np.all(np.isnan(row)):
            out.append(FeatureTruth(i, None, None, float("nan"), False))
            continue
        j = int(np.nanargmax(row))
        attr, value = names[j].split("=", 1)
        auc = float(row[j])
        out.append(FeatureTruth(i, attr, value, round(auc, 6), bool(auc >= threshold)))
    return out


def clear_share(truths: Sequence[FeatureTruth]) -> float:
    return float(np.mean([t.clear for t in truths])) if truths else 0.0
