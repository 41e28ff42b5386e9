"""Does a feature respond to a planted value? Measured by re-rendering its top images.

A planted correlation ``if -> then`` (stars mostly on grass) makes the ``then`` value a candidate
spurious concept of every feature whose truth is the ``if`` value. It *is* spurious for a feature
only when the feature does not respond to it: a star feature that also fires on grass without a
star has grass among what it responds to, and a contrast step that keeps "grass" for it is right.
The demo world can test that directly, because a probe image is rendered from its scene dict
(``World.render`` is deterministic from the dict alone):

* the images: the feature's highly activating images ``T`` (the pipeline's own selection) that
  show both the ``if`` and the ``then`` value (only there can either be taken away);
* the spurious swap: each image re-rendered once per other value of the ``then`` attribute, the
  value replaced wherever it occurs (the background, or every object that has it), everything
  else the same (same seed, same placement); the feature's activation ``h`` (Stage 1's, before
  row normalisation) averaged over those renders;
* the control: the same with the ``if`` value (the feature's own truth) swapped.

``drop_spurious`` and ``drop_true`` are the mean over the images of ``h(original) - h(swapped)``,
and ``reliance = drop_spurious / drop_true``: the share of the activation the feature keeps for
its own truth that it also owes to the planted value.

The cut, fixed before any removal rate was looked at: the feature *relies* on the planted value
when ``reliance >= RELIANCE_SHARE`` = 1/3. Why a third: it is the share the contrast step itself
uses for "counts" (the ratio rule removes a concept that the counterfactual images name at least
a third as much as the top images do: the authors' 0.1 on ViT-B/32's caption scale 0.3), so a
value the feature owes at least a third of what it owes its own truth is, by the same yardstick,
part of what it responds to. A case is *unclear* (in neither figure) when no top image shows both
values or the control does not lower the activation (``drop_true <= 0``: the truth swap is not a
working control there).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

RELIANCE_SHARE = 1.0 / 3.0


def has_value(scene: dict[str, Any], attribute: str, value: str) -> bool:
    """Whether the scene shows ``attribute = value`` (its background, or any of its objects)."""
    if attribute == "background":
        return scene["background"] == value
    return any(o[attribute] == value for o in scene["objects"])


def swap_value(scene: dict[str, Any], attribute: str, value: str, new: str) -> dict[str, Any]:
    """A copy of the scene with ``attribute = value`` replaced by ``new`` wherever it occurs;
    nothing else changes (the scene's seed and every placement are kept)."""
    out = copy.deepcopy(scene)
    if attribute == "background":
        if out["background"] == value:
            out["background"] = new
    else:
        for o in out["objects"]:
            if o[attribute] == value:
                o[attribute] = new
    return out


class _Rendered:
    """A probe-like list of scenes (``load(i)``), for Stage 1's ``compute_representations``."""

    def __init__(self, world, scenes: Sequence[dict]):
        self.world, self.scenes = world, list(scenes)

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, i: int):
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self.world.render(self.scenes[i])))


def swap_drops(backbone, world, scenes: Sequence[dict], feature: int, original: np.ndarray,
               attribute: str, value: str, batch_size: int = 64) -> np.ndarray:
    """Per scene: ``original[j] - mean over the other values v of h_feature(scene j with value
    replaced by v)`` (``original``: the feature's activation on the unchanged scenes)."""
    from ..stages.representations import compute_representations

    others = [v for v in world.values(attribute) if v != value]
    if not scenes or not others:
        return np.zeros(len(scenes))
    swapped = [swap_value(s, attribute, value, v) for s in scenes for v in others]
    H, valid, _ = compute_representations(backbone, _Rendered(world, swapped), batch_size)
    h = np.asarray(H[:, feature], dtype=np.float64).reshape(len(scenes), len(others))
    return np.asarray(original, dtype=np.float64) - h.mean(axis=1)


def reliance_case(backbone, world, scenes: Sequence[dict], H: np.ndarray, feature: int,
                  high: Sequence[int], source: str, target: str) -> dict[str, Any]:
    """The measurement of the module docstring for one feature (truth ``source`` =
    "attribute=value", planted value ``target``) over its highly activating images ``high``."""
    a1, v1 = source.split("=", 1)
    a2, v2 = target.split("=", 1)
    imgs = [int(i) for i in high if has_value(scenes[int(i)], a1, v1)
            and has_value(scenes[int(i)], a2, v2)]
    out: dict[str, Any] = {"feature": int(feature), "images": len(imgs), "high": len(high),
                           "drop_true": None, "drop_spurious": None, "reliance": None,
                           "relies": None}
    if not imgs:
        return out
    sc = [scenes[i] for i in imgs]
    h0 = np.asarray(H[imgs, feature], dtype=np.float64)
    d_true = float(swap_drops(backbone, world, sc, feature, h0, a1, v1).mean())
    d_sp = float(swap_drops(backbone, world, sc, feature, h0, a2, v2).mean())
    out.update({"drop_true": round(d_true, 5), "drop_spurious": round(d_sp, 5),
                "activation": round(float(h0.mean()), 5)})
    if d_true > 0:
        rel = d_sp / d_true
        out.update({"reliance": round(rel, 4), "relies": bool(rel >= RELIANCE_SHARE)})
    return out
