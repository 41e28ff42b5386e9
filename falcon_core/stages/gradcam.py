"""Stage 3a: GradCAM maps for a feature (or a group of features).

The GradCAM target is the feature's own activation in the explained layer (for a group: the sum of
its features' activations) — a custom target, not a class index — taken with respect to the
backbone's ``cam_layer`` (ResNet ``layer4[-1]``; ViT ``blocks[-1].norm1`` with a token -> grid
reshape). Images go through ``backbone.transform``, the same preprocessing as Stage 1, so the maps
are aligned with ``backbone.view_transform(image)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from falcon_core.errors import FalconError
from falcon_core.progress import Progress

__all__ = ["FeatureTarget", "compute_cams"]


class FeatureTarget:
    """GradCAM target: the sum of the chosen features' activations.

    Called on one model output ``(r,)`` (pytorch-grad-cam's convention) or a batch ``(n, r)``
    (then one value per row).
    """

    def __init__(self, features: Sequence[int] | int):
        if isinstance(features, (int, np.integer)):
            features = [int(features)]
        self.features = [int(f) for f in features]
        if not self.features:
            raise FalconError("No feature chosen for GradCAM.", "Give at least one feature index.")

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(self.features, device=model_output.device)
        if model_output.ndim == 1:
            return model_output.index_select(0, idx).sum()
        return model_output.index_select(-1, idx).sum(dim=-1)

    def __repr__(self) -> str:
        return f"FeatureTarget({self.features})"


def _to_batch(backbone, images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != 3:
            raise FalconError(f"Expected images as a tensor (n, 3, S, S), got {tuple(images.shape)}.")
        return x.float()
    if isinstance(images, np.ndarray):
        return _to_batch(backbone, torch.from_numpy(images))
    tensors = [backbone.transform(img) for img in images]
    if not tensors:
        return torch.empty(0, 3, backbone.input_size, backbone.input_size)
    return torch.stack(tensors)


def compute_cams(
    backbone,
    images,
    features: Sequence[int] | int,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> np.ndarray:
    """GradCAM maps of ``features`` (summed) for ``images``.

    ``images``: a list of PIL images (they go through ``backbone.transform``) or a tensor
    (n, 3, S, S) already transformed. Returns float32 (n, S, S) in [0, 1]. A map whose gradients
    vanish (e.g. the feature is 0 on that image) comes back as zeros, never NaN.
    The model is left in eval mode, with no hook left behind.
    """
    from pytorch_grad_cam import GradCAM

    if backbone.cam_layer is None:
        raise FalconError(
            f"No layer of {backbone.name} gives a spatial map for GradCAM.",
            "Choose an explained layer that comes after a convolutional block.",
        )
    target = FeatureTarget(features)
    r = int(backbone.num_features)
    bad = [f for f in target.features if not 0 <= f < r]
    if bad:
        raise FalconError(
            f"Feature {bad[0]} does not exist: the layer {backbone.layer} has {r} features (0 to {r - 1}).",
            "Choose a feature index in that range.",
        )
    x = _to_batch(backbone, images)
    n = x.shape[0]
    S_h, S_w = int(x.shape[-2]), int(x.shape[-1])
    out = np.zeros((n, S_h, S_w), dtype=np.float32)
    if n == 0:
        return out
    model = backbone.feature_model
    device = backbone.device
    model.eval()
    batch_size = max(1, int(batch_size))
    cam = GradCAM(model=model, target_layers=[backbone.cam_layer],
                  reshape_transform=backbone.reshape_transform)
    # pytorch-grad-cam's own __exit__ swallows IndexError; release the hooks ourselves instead
    try:
        with torch.enable_grad():
            for start in range(0, n, batch_size):
                xb = x[start:start + batch_size].to(device)
                maps = cam(input_tensor=xb, targets=[target] * xb.shape[0])
                maps = np.asarray(maps, dtype=np.float32)
                if maps.shape[-2:] != (S_h, S_w):  # pragma: no cover - grad-cam resizes already
                    t = torch.from_numpy(maps)[:, None]
                    maps = torch.nn.functional.interpolate(t, size=(S_h, S_w), mode="bilinear",
                                                           align_corners=False)[:, 0].numpy()
                out[start:start + xb.shape[0]] = maps
                if progress is not None:
                    progress(min(start + batch_size, n), n, "gradcam")
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
        model.eval()  # GradCAM never trains; the backbone stays in eval mode
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(out, 0.0, 1.0, out=out)
    return out
