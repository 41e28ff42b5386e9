"""Stage 3a: GradCAM maps for a feature (or a group of features).

The GradCAM target is the feature's own activation in the explained layer (for a group: the sum of
its features' activations) — a custom target, not a class index — taken with respect to the
backbone's ``cam_layer`` (ResNet ``layer4[-1]``; ViT ``blocks[-1].norm1`` with a token -> grid
reshape). Images go through ``backbone.transform``, the same preprocessing as Stage 1, so the maps
are aligned with ``backbone.view_transform(image)``.

How the gradient is taken (``method``):

* ``"stopped"`` (default): one forward pass with the parameters frozen, in which the CAM layer's
  output is replaced by a leaf tensor; the backward pass (``torch.autograd.grad``) then runs only
  from the target back to that leaf. Nothing before the CAM layer is recorded for autograd and no
  weight gradient is computed anywhere. The gradient is the same tensor pytorch-grad-cam's hook
  sees, so the maps are the same.
* ``"pytorch-grad-cam"``: pytorch-grad-cam's ``GradCAM`` as it is: ``loss.backward()`` through the
  whole network, weight gradients included (2-3× slower on CPU; kept as the reference and for
  models whose CAM layer runs more than once per forward pass).

What is kept from pytorch-grad-cam: its target convention (``FeatureTarget`` is called on one
output row), its reshape-transform contract (tokens -> (n, C, h, w), applied to activations and
gradients alike), the reference method above, and every other CAM method: put
:class:`StoppedBackwardMixin` before any gradient-based CAM class of pytorch-grad-cam
(``class Fast(StoppedBackwardMixin, GradCAMPlusPlus)``) and it gets the stopped backward pass with
the class's own arithmetic. The default path repeats GradCAM's arithmetic (:func:`gradcam_maps`:
the same numpy operations in the same order, and the same ``cv2.resize``, so the maps are
bit-identical; a test compares them) instead of importing pytorch-grad-cam, because importing that
package pulls in scikit-learn and matplotlib: 3-30 s on a busy machine, which was most of the
"first GradCAM in a fresh process is 10× slower" of issue 9.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from falcon_core.errors import FalconError
from falcon_core.progress import Progress

__all__ = ["FeatureTarget", "cam_grid", "compute_cams", "compute_cams_many", "stopped_backward", "StoppedBackwardMixin",
           "CAM_METHODS", "gradcam_maps"]

CAM_METHODS = ("stopped", "pytorch-grad-cam")


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


class LayerCalledTwice(RuntimeError):
    """The CAM layer ran more (or fewer) than once in one forward pass."""


def stopped_backward(model: torch.nn.Module, layers: Sequence[torch.nn.Module], x: torch.Tensor,
                     targets: Sequence) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The outputs of ``layers`` and the gradients of ``sum(target(output))`` with respect to
    them, with the backward pass stopped at those layers.

    The parameters are frozen for the call (``requires_grad`` restored after), so the part of the
    network before the layers records nothing; each layer's output is swapped for a leaf (a clone
    of it goes on, so in-place operations after the layer are allowed). Raises
    :class:`LayerCalledTwice` when a layer does not run exactly once.
    """
    leaves: list[list[torch.Tensor]] = [[] for _ in layers]

    def hook_for(i):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise LayerCalledTwice(f"the CAM layer returns {type(output).__name__}, not a tensor")
            leaf = output.detach().requires_grad_(True)
            leaves[i].append(leaf)
            return leaf.clone()
        return hook

    frozen = [p for p in model.parameters() if p.requires_grad]
    handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(layers)]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            outputs = model(x)
            if any(len(v) != 1 for v in leaves):
                raise LayerCalledTwice("the CAM layer ran "
                                       + "/".join(str(len(v)) for v in leaves) + " times")
            acts = [v[0] for v in leaves]
            loss = sum(t(o) for t, o in zip(targets, outputs))
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                grads = torch.autograd.grad(loss, acts, allow_unused=True)
                grads = [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads)]
            else:  # the target does not depend on the layer: no gradient at all
                grads = [torch.zeros_like(a) for a in acts]
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
    return [a.detach() for a in acts], [g.detach() for g in grads]


class StoppedBackwardMixin:
    """Put before a pytorch-grad-cam CAM class (``class C(StoppedBackwardMixin, GradCAM)``): the
    activations and gradients come from :func:`stopped_backward` instead of pytorch-grad-cam's
    hooks and ``loss.backward()``; the CAM arithmetic is the class's own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.activations_and_grads.release()  # its hooks are not needed: we capture ourselves

    def forward(self, input_tensor: torch.Tensor, targets, eigen_smooth: bool = False):
        input_tensor = input_tensor.to(self.device)
        acts, grads = stopped_backward(self.model, self.target_layers, input_tensor, targets)
        rt = self.reshape_transform
        ag = self.activations_and_grads
        ag.activations = [(rt(a) if rt is not None else a).cpu() for a in acts]
        ag.gradients = [(rt(g) if rt is not None else g).cpu() for g in grads]
        try:
            return self.aggregate_multi_layers(
                self.compute_cam_per_layer(input_tensor, targets, eigen_smooth))
        finally:
            ag.activations, ag.gradients = [], []


def _scale(cam: np.ndarray, target_size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch-grad-cam's ``scale_cam_image``: each map to [0, 1] (min-max, + 1e-7), resized
    with ``cv2.resize`` to ``target_size`` = (width, height)."""
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            import cv2

            img = cv2.resize(np.float32(img), target_size)
        result.append(img)
    return np.float32(result)


def gradcam_maps(activations: np.ndarray, grads: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """GradCAM from a layer's activations and gradients (n, C, h, w), as pytorch-grad-cam's
    ``GradCAM`` computes it for one target layer: channel weights = spatial mean of the
    gradients, ReLU of the weighted sum of channels, scaled to [0, 1], resized to ``size`` =
    (height, width), then the one-layer aggregation (ReLU, mean, scale again)."""
    weights = np.mean(grads, axis=(2, 3))
    cam = (weights[:, :, None, None] * activations).sum(axis=1)
    cam = np.maximum(cam, 0)
    per_layer = _scale(cam, (int(size[1]), int(size[0])))[:, None, :]
    per_layer = np.maximum(per_layer, 0)
    return _scale(np.mean(per_layer, axis=1))


def _stopped_maps(model, layer, reshape_transform, x: torch.Tensor, target) -> np.ndarray:
    acts, grads = stopped_backward(model, [layer], x, [target] * x.shape[0])
    a, g = acts[0], grads[0]
    if reshape_transform is not None:
        a, g = reshape_transform(a), reshape_transform(g)
    if a.ndim != 4:
        raise FalconError(f"The GradCAM layer gives activations of shape {tuple(a.shape)}; a "
                          "spatial map (n, C, h, w) is needed.",
                          "Choose another CAM layer, or give a reshape transform.")
    return gradcam_maps(a.cpu().numpy(), g.cpu().numpy(), (int(x.shape[-2]), int(x.shape[-1])))


def cam_grid(backbone) -> tuple[int, int]:
    """The spatial grid (rows, columns) on which GradCAM computes its map: the CAM layer's
    output (after the backbone's reshape transform, e.g. a ViT's tokens -> grid) for one blank
    image of the input size. Measured once per backbone (kept on it as ``_cam_grid``). One cell
    of it is the resolution of the map, and so of the crop box's edges
    (:func:`falcon_core.stages.crops.cell_size`)."""
    grid = getattr(backbone, "_cam_grid", None)
    if grid is not None:
        return grid
    if backbone.cam_layer is None:
        raise FalconError(
            f"No layer of {backbone.name} gives a spatial map for GradCAM.",
            "Choose an explained layer that comes after a convolutional block.",
        )
    seen: list[tuple[int, ...]] = []

    def hook(module, args, output):
        t = output
        if backbone.reshape_transform is not None:
            t = backbone.reshape_transform(t)
        seen.append(tuple(t.shape))

    S = int(backbone.input_size)
    handle = backbone.cam_layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            backbone.feature_model(torch.zeros(1, 3, S, S, device=backbone.device))
    finally:
        handle.remove()
    if not seen or len(seen[0]) != 4:
        raise FalconError(f"The GradCAM layer of {backbone.name} gives no spatial map "
                          f"(shape {seen[0] if seen else None}).",
                          "Choose another CAM layer, or give a reshape transform.")
    grid = (int(seen[0][2]), int(seen[0][3]))
    try:
        backbone._cam_grid = grid
    except AttributeError:  # pragma: no cover - a backbone that takes no attributes
        pass
    return grid


def _cam_class(method: str):
    from pytorch_grad_cam import GradCAM

    if method == "pytorch-grad-cam":
        return GradCAM
    if method == "stopped":
        class StoppedGradCAM(StoppedBackwardMixin, GradCAM):
            pass
        return StoppedGradCAM
    raise FalconError(f"Unknown GradCAM method {method!r}.",
                      "Choose one of: " + ", ".join(CAM_METHODS) + ".")


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
    method: str = "stopped",
) -> np.ndarray:
    """GradCAM maps of ``features`` (summed) for ``images``.

    ``images``: a list of PIL images (they go through ``backbone.transform``) or a tensor
    (n, 3, S, S) already transformed. Returns float32 (n, S, S) in [0, 1]. A map whose gradients
    vanish (e.g. the feature is 0 on that image) comes back as zeros, never NaN.
    ``method``: ``"stopped"`` (the backward pass stops at the CAM layer) or
    ``"pytorch-grad-cam"`` (see the module docstring); the maps are the same. A CAM layer that
    runs more than once per forward pass falls back to pytorch-grad-cam.
    The model is left in eval mode, with no hook left behind and no gradient on the weights.
    """
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
    if method not in CAM_METHODS:
        raise FalconError(f"Unknown GradCAM method {method!r}.",
                          "Choose one of: " + ", ".join(CAM_METHODS) + ".")
    cam = None

    def reference(xb):
        nonlocal cam
        if cam is None:
            cam = _cam_class("pytorch-grad-cam")(model=model, target_layers=[backbone.cam_layer],
                                                 reshape_transform=backbone.reshape_transform)
        return cam(input_tensor=xb, targets=[target] * xb.shape[0])

    # pytorch-grad-cam's own __exit__ swallows IndexError; release the hooks ourselves instead
    try:
        with torch.enable_grad():
            for start in range(0, n, batch_size):
                xb = x[start:start + batch_size].to(device)
                if method == "stopped":
                    try:
                        maps = _stopped_maps(model, backbone.cam_layer,
                                             backbone.reshape_transform, xb, target)
                    except LayerCalledTwice:
                        method = "pytorch-grad-cam"  # its hooks handle a layer run twice
                if method != "stopped":
                    maps = reference(xb)
                maps = np.asarray(maps, dtype=np.float32)
                if maps.shape[-2:] != (S_h, S_w):  # pragma: no cover - grad-cam resizes already
                    t = torch.from_numpy(maps)[:, None]
                    maps = torch.nn.functional.interpolate(t, size=(S_h, S_w), mode="bilinear",
                                                           align_corners=False)[:, 0].numpy()
                out[start:start + xb.shape[0]] = maps
                if progress is not None:
                    progress(min(start + batch_size, n), n, "gradcam")
    finally:
        if cam is not None:
            cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
        model.eval()  # GradCAM never trains; the backbone stays in eval mode
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def compute_cams_many(backbone, images, wanted: Sequence[Sequence[Sequence[int]]],
                      batch_size: int = 16, progress: Progress | None = None
                      ) -> list[dict[tuple[int, ...], np.ndarray]]:
    """GradCAM maps of several targets per image with one forward pass per image (a
    whole-layer precompute: an image in the top set of several features is run once).

    ``wanted[i]``: the feature groups whose maps image ``i`` needs. Returns, per image,
    ``{group (tuple): float32 (S, S) map}`` — the maps :func:`compute_cams` gives for that group
    (the same arithmetic; only the batches differ). The backward pass stops at the CAM layer, one
    per group present in a batch, through the part of the network after the layer only.
    """
    if backbone.cam_layer is None:
        raise FalconError(f"No layer of {backbone.name} gives a spatial map for GradCAM.",
                          "Choose an explained layer that comes after a convolutional block.")
    groups_of = [[tuple(int(f) for f in g) for g in w] for w in wanted]
    r = int(backbone.num_features)
    for gs in groups_of:
        for g in gs:
            FeatureTarget(list(g))
            if any(not 0 <= f < r for f in g):
                raise FalconError(f"Feature {g} does not exist: the layer {backbone.layer} has {r} "
                                  f"features (0 to {r - 1}).", "Choose a feature index in that range.")
    x = _to_batch(backbone, images)
    n = x.shape[0]
    out: list[dict[tuple[int, ...], np.ndarray]] = [{} for _ in range(n)]
    if n == 0:
        return out
    S = (int(x.shape[-2]), int(x.shape[-1]))
    model = backbone.feature_model
    model.eval()
    layer, rt = backbone.cam_layer, backbone.reshape_transform
    leaves: list[torch.Tensor] = []

    def hook(module, args, output):
        leaf = output.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf.clone()

    frozen = [p for p in model.parameters() if p.requires_grad]
    handle = layer.register_forward_hook(hook)
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for start in range(0, n, max(1, int(batch_size))):
                stop = min(n, start + max(1, int(batch_size)))
                leaves.clear()
                outputs = model(x[start:stop].to(backbone.device))
                if len(leaves) != 1:
                    raise LayerCalledTwice("the CAM layer ran more than once")
                leaf = leaves[0]
                act = (rt(leaf.detach()) if rt is not None else leaf.detach()).cpu().numpy()
                members: dict[tuple[int, ...], list[int]] = {}  # group -> its rows, in order
                for i in range(start, stop):
                    for g in groups_of[i]:
                        members.setdefault(g, []).append(i - start)
                groups = sorted(members)
                # every group's gradients first, then every map of the batch in one call of
                # gradcam_maps (its arithmetic is per map: the same bits as one call a group)
                acts, grads, where = [], [], []
                for gi, g in enumerate(groups):
                    rows = members[g]
                    loss = outputs[rows][:, list(g)].sum()
                    if loss.requires_grad:
                        grad, = torch.autograd.grad(loss, leaf, retain_graph=gi < len(groups) - 1,
                                                    allow_unused=True)
                    else:
                        grad = None
                    grad = torch.zeros_like(leaf) if grad is None else grad
                    grad = rt(grad) if rt is not None else grad
                    acts.append(act[rows])
                    grads.append(grad.cpu().numpy()[rows])
                    where += [(start + row, g) for row in rows]
                maps = gradcam_maps(np.concatenate(acts), np.concatenate(grads), S)
                np.nan_to_num(maps, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
                np.clip(maps, 0.0, 1.0, out=maps)
                for (i, g), m in zip(where, maps):
                    out[i][g] = m
                if progress is not None:
                    progress(stop, n, "gradcam")
    finally:
        handle.remove()
        for p in frozen:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model.eval()
    return out
