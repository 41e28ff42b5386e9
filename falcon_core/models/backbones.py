"""Backbones: the vision model whose features FALCON explains.

``create_backbone(BackboneSpec("resnet18", weights="imagenet"))`` returns a :class:`Backbone` that
bundles everything the stages need:

* ``feature_model``: ``forward(x) -> (n, r)``, the pooled features of the explained layer (by
  default the input of the classifier head, i.e. the globally pooled representation);
* ``transform``: the one preprocessing (PIL -> normalised tensor) used for Stage 1 *and* GradCAM,
  and ``view_transform`` (PIL -> PIL, the same resize and crop without normalisation: the picture
  that crop boxes refer to);
* ``cam_layer`` / ``reshape_transform`` for GradCAM (ResNet ``layer4[-1]``, ViT
  ``blocks[-1].norm1`` with the token -> grid reshape);
* ``head`` (the linear classifier over the explained features, or None), ``class_names``;
* ``fingerprint``: a hash of everything that determines the features (cache key).

The model is in eval mode (BatchNorm uses its running statistics), with gradients enabled on the
parameters so that GradCAM works; feature extraction runs under ``torch.no_grad``.

Presets are kept in a registry (:data:`BACKBONES`, :func:`register_backbone`): the torchvision
ResNets and the offline demo world's backbone (``"demo"``); ``"timm:<model name>"`` builds any timm
model.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse
from typing import Callable, Sequence

import torch
from torch import nn

from falcon_core.errors import OFFLINE_HINT, FalconError, OfflineError
from falcon_core.models.checkpoints import apply_checkpoint, hash_state_dict
from falcon_core.models.classes import ClassList, imagenet_class_ids, parse_class_list
from falcon_core.models.layers import (auto_cam_layer, dry_run, first_tensor, layer_examples,
                                       vit_cam_layer)
from falcon_core.registry import Registry

__all__ = [
    "BackboneSpec",
    "Backbone",
    "TokenGridReshape",
    "create_backbone",
    "register_backbone",
    "list_backbones",
    "backbone_settings",
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "hub_offline_guard",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PRETRAINED_WORDS = {"imagenet", "pretrained", "default"}
_RANDOM_WORDS = {None, "", "random", "none"}
_SEED = 0


@dataclass
class BackboneSpec:
    """Which backbone to build.

    name: a registered preset ("resnet18", "resnet50", "demo", ...) or "timm:<model name>".
    weights: "imagenet" (download), "random"/None (random init, seed 0) or a checkpoint path.
    layer: the explained layer: None (the input of the classifier head), a module name from
        ``model.named_modules()`` (its output is pooled), or "<module>:input" (its input).
    token_pool: for token outputs (n, T, C): "cls" (token 0) or "mean" (of the non-prefix tokens).
    class_names: the classes of a checkpoint's head, in its order: a list, a text file (one a
        line) or "a,b,c". Failure explanations need them to read the probe set's labels.
    """

    name: str
    weights: str | None = None
    layer: str | None = None
    token_pool: str = "cls"
    class_names: str | list[str] | None = None


def _class_names_for(spec: BackboneSpec, head, report: list[str]) -> ClassList | None:
    """The classes given with a checkpoint (ids and names; formats in :mod:`.classes`)."""
    classes = parse_class_list(spec.class_names)
    if classes is None:
        return None
    if head is None:
        raise FalconError("Class names were given, but the model has no classifier head.",
                          "Use a checkpoint with its head, or leave the class names out.")
    if len(classes) != head.out_features:
        raise FalconError(f"{len(classes)} class names for a classifier head with "
                          f"{head.out_features} outputs.",
                          "Give one name per output of the head, in the head's order.")
    shown = classes.display()
    report.append(f"class names: {', '.join(shown[:5])}{' ...' if len(shown) > 5 else ''}")
    return classes


def _imagenet_classes(names: Sequence[str]) -> ClassList:
    """ImageNet-1k's class names with their wnids as ids (the names alone when unknown)."""
    ids = imagenet_class_ids()
    if ids is None or len(ids) != len(names):
        ids = list(names)
    return ClassList(list(ids), list(names))


# --------------------------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------------------------

_REACH_CACHE: dict[str, tuple[float, bool]] = {}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (cached for a minute)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct connection says nothing
    try:
        from huggingface_hub import constants

        url = urlparse(constants.ENDPOINT)
    except Exception:  # pragma: no cover
        url = urlparse("https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    key = f"{host}:{port}"
    now = time.monotonic()
    hit = _REACH_CACHE.get(key)
    if hit and now - hit[0] < 60:
        return hit[1]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _REACH_CACHE[key] = (now, ok)
    return ok


@contextlib.contextmanager
def hub_offline_guard():
    """When the Hub cannot be reached, put huggingface_hub in offline mode for the block.

    Files already in the local cache still load; missing ones fail at once instead of after
    huggingface_hub's retries (about 45 s per file).
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield
        return
    if constants.HF_HUB_OFFLINE or _hub_reachable():
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class TokenGridReshape:
    """GradCAM reshape transform for ViTs: tokens (n, T, C) -> (n, C, h, w), prefix tokens dropped."""

    def __init__(self, num_prefix_tokens: int = 1, grid_size: tuple[int, int] | None = None):
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid_size = tuple(grid_size) if grid_size else None

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if isinstance(tensor, (tuple, list)):
            tensor = tensor[0]
        if tensor.ndim == 4:  # already a map
            return tensor
        t = tensor[:, self.num_prefix_tokens:, :]
        n, T, C = t.shape
        if self.grid_size and self.grid_size[0] * self.grid_size[1] == T:
            h, w = self.grid_size
        else:
            h = int(round(math.sqrt(T)))
            if h * h != T:
                raise FalconError(
                    f"Cannot arrange {T} tokens on a square grid for GradCAM.",
                    "Choose another layer, or a model with a square patch grid.",
                )
            w = h
        return t.reshape(n, h, w, C).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokenGridReshape(num_prefix_tokens={self.num_prefix_tokens}, grid_size={self.grid_size})"


def _pool(x: torch.Tensor, token_pool: str, num_prefix_tokens: int) -> torch.Tensor:
    """(n, C, H, W) -> mean over H, W; (n, T, C) -> CLS token or mean of patch tokens; (n, r) as is."""
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        if token_pool == "cls" and num_prefix_tokens > 0:
            return x[:, 0].clone()
        return x[:, num_prefix_tokens:].mean(dim=1)
    if x.ndim == 2:
        return x.clone()
    return x.flatten(1).clone()


class _FeatureModel(nn.Module):
    """forward(x) -> (n, r): runs the model and returns the pooled explained layer.

    The hook lives only during a forward call, so no hook is left on the model.
    """

    def __init__(self, model: nn.Module, module_name: str, use_input: bool, token_pool: str,
                 num_prefix_tokens: int):
        super().__init__()
        self.model = model
        self.module_name = module_name
        self.use_input = use_input
        self.token_pool = token_pool
        self.num_prefix_tokens = num_prefix_tokens
        self.eval()

    def train(self, mode: bool = True):
        """Always eval: FALCON never trains, and BatchNorm must use its running statistics."""
        return super().train(False)

    def _target(self) -> nn.Module:
        return self.model.get_submodule(self.module_name) if self.module_name else self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}

        def grab(t):
            t = first_tensor(t)
            if t is not None:
                store["h"] = _pool(t, self.token_pool, self.num_prefix_tokens)

        mod = self._target()
        if self.use_input:
            handle = mod.register_forward_pre_hook(lambda m, args: grab(args))
        else:
            handle = mod.register_forward_hook(lambda m, args, out: grab(out))
        try:
            out = self.model(x)
        finally:
            handle.remove()
        if "h" not in store:
            if not self.module_name and not self.use_input:
                grab(out)
            if "h" not in store:
                raise FalconError(
                    f"The layer {self.module_name!r} is not used by the model's forward pass.",
                    "Choose another layer.",
                )
        return store["h"]


def _module_name(model: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    for name, mod in model.named_modules():
        if mod is target:
            return name
    return None


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    name = str(getattr(name, "value", name)).lower()
    return {
        "bicubic": InterpolationMode.BICUBIC,
        "bilinear": InterpolationMode.BILINEAR,
        "nearest": InterpolationMode.NEAREST,
        "lanczos": InterpolationMode.LANCZOS,
        "box": InterpolationMode.BOX,
        "hamming": InterpolationMode.HAMMING,
    }.get(name, InterpolationMode.BILINEAR)


class _RGB:
    def __call__(self, img):
        return img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img

    def __repr__(self) -> str:
        return "RGB()"


def _build_transforms(input_size: int, resize_size: int | None, mean, std, interpolation="bilinear"):
    from torchvision import transforms as T

    resize_size = int(resize_size or input_size)
    interp = _interp(interpolation)
    view = T.Compose([_RGB(), T.Resize(resize_size, interpolation=interp), T.CenterCrop(input_size)])
    full = T.Compose([*view.transforms, T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])
    desc = (f"resize shorter side to {resize_size} ({str(getattr(interp, 'value', interp))}), "
            f"center crop {input_size}, mean {tuple(round(float(m), 4) for m in mean)}, "
            f"std {tuple(round(float(s), 4) for s in std)}")
    return full, view, desc


def _seeded(fn: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        return fn()


# --------------------------------------------------------------------------------------------
# the Backbone
# --------------------------------------------------------------------------------------------


class Backbone:
    """A vision model prepared for FALCON (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        name: str,
        *,
        layer: str | None = None,
        head_name: str | None = "fc",
        has_head: bool = True,
        token_pool: str = "cls",
        num_prefix_tokens: int = 0,
        input_size: int = 224,
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
        transform: Callable | None = None,
        view_transform: Callable | None = None,
        transform_description: str | None = None,
        class_names: Sequence[str] | ClassList | None = None,
        weights: str | None = None,
        load_report: list[str] | None = None,
        cam_layer: nn.Module | str | None = None,
        reshape_transform: Callable | None = None,
        vit_blocks: str | None = None,
        grid_size: tuple[int, int] | None = None,
        pooling_note: str | None = None,
    ):
        if token_pool not in ("cls", "mean"):
            raise FalconError(f"Unknown token pooling {token_pool!r}.", "Use 'cls' or 'mean'.")
        model.eval()
        self.model = model
        self.name = name
        self.weights = weights
        self.token_pool = token_pool
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.input_size = int(input_size)
        self.load_report = list(load_report or [])
        # class_names: what is shown; class_ids: what labels are matched by (they differ where
        # ids are known, e.g. ImageNet wnids; two classes may share a name)
        if isinstance(class_names, ClassList):
            self.class_names, self.class_ids = list(class_names.names), list(class_names.ids)
        else:
            self.class_names = list(class_names) if class_names is not None else None
            self.class_ids = self.class_names

        # preprocessing: one transform for selection and cropping
        full, view, desc = _build_transforms(self.input_size, resize_size, mean, std, interpolation)
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform = transform if transform is not None else full
        self.view_transform = view_transform if view_transform is not None else view
        if transform is not None:
            desc = transform_description or repr(transform)
        self.transform_description = desc

        # explained layer
        modules = dict(model.named_modules())
        head_mod = modules.get(head_name) if head_name else None
        if layer is None or layer == "":
            if head_mod is not None:
                module_name, use_input = head_name, True
            else:
                module_name, use_input = "", False  # the model's output
        else:
            module_name, use_input = layer, False
            if layer.endswith(":input"):
                module_name, use_input = layer[: -len(":input")], True
            elif layer.endswith(":output"):
                module_name = layer[: -len(":output")]
            if module_name not in modules:
                raise FalconError(
                    f"The model {name} has no layer {module_name!r}.",
                    "Valid layers include: " + ", ".join(layer_examples(model))
                    + " (any name of model.named_modules(); add ':input' for a module's input).",
                )
        self.layer = (f"{module_name}:input" if use_input else module_name) or "output"
        self.is_default_layer = layer in (None, "") or (use_input and module_name == head_name)
        self.feature_model = _FeatureModel(model, module_name, use_input, token_pool, self.num_prefix_tokens)

        # head: only when the explained layer is its input
        self.head = None
        if use_input and module_name == head_name and has_head and isinstance(head_mod, nn.Linear):
            self.head = head_mod
        if self.head is None:  # class names name the head's outputs
            self.class_names = self.class_ids = None

        # dry run: feature size and a default CAM layer
        records, n_features, out_ndim, before = dry_run(model, self.feature_model, self.input_size,
                                                        self.device, name, module_name, use_input)
        self.num_features = n_features
        self.layer_ndim = out_ndim
        if pooling_note is None:
            if use_input and module_name == head_name:
                pooling_note = "the input of the classifier head (the model's own pooling)"
            elif out_ndim == 4:
                pooling_note = "mean over the spatial map"
            elif out_ndim == 3:
                pooling_note = ("the CLS token" if token_pool == "cls" and self.num_prefix_tokens > 0
                                else "the mean of the patch tokens")
            else:
                pooling_note = "as is"
        self.pooling = pooling_note

        self.reshape_transform = reshape_transform
        if isinstance(cam_layer, str):
            if cam_layer not in modules:
                raise FalconError(f"The model {name} has no layer {cam_layer!r} for GradCAM.",
                                  "Valid layers include: " + ", ".join(layer_examples(model)))
            cam_layer = modules[cam_layer]
        if cam_layer is None and vit_blocks is not None:
            cam_layer = vit_cam_layer(modules, vit_blocks, module_name)
            if cam_layer is not None and reshape_transform is None:
                self.reshape_transform = TokenGridReshape(self.num_prefix_tokens, grid_size)
        if cam_layer is None:
            cam_layer = auto_cam_layer(modules, records, before, module_name, use_input)
        self.cam_layer = cam_layer
        self.cam_layer_name = _module_name(model, cam_layer)
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    # ---- public --------------------------------------------------------------------------

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        name: str,
        *,
        transform: Callable | None = None,
        view_transform: Callable | None = None,
        input_size: int = 224,
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
        head_name: str | None = "fc",
        class_names: Sequence[str] | ClassList | None = None,
        layer: str | None = None,
        token_pool: str = "cls",
        cam_layer: nn.Module | str | None = None,
        reshape_transform: Callable | None = None,
        weights: str | None = None,
        load_report: list[str] | None = None,
        has_head: bool = True,
    ) -> "Backbone":
        """Wrap any nn.Module (e.g. the demo world's small ResNet).

        The default explained layer is the input of ``head_name`` (when the module has it), else
        the model's output. The default transform resizes the shorter side to ``resize_size``
        (default ``input_size``), center-crops ``input_size`` and normalises with mean/std.
        """
        return cls(model, name, layer=layer, head_name=head_name, has_head=has_head,
                   token_pool=token_pool, input_size=input_size, resize_size=resize_size,
                   mean=mean, std=std, interpolation=interpolation, transform=transform,
                   view_transform=view_transform, class_names=class_names, weights=weights,
                   load_report=load_report, cam_layer=cam_layer, reshape_transform=reshape_transform)

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device) -> "Backbone":
        self.model.to(device)
        return self

    @property
    def fingerprint(self) -> str:
        """sha256 over the architecture, layer, pooling, preprocessing and every weight."""
        if self._fingerprint is None:
            with self._lock:
                if self._fingerprint is None:
                    h = hashlib.sha256()
                    for part in (self.name, self.layer, self.token_pool, self.transform_description,
                                 f"head={self.head is not None}"):
                        h.update(str(part).encode())
                        h.update(b"\0")
                    h.update(hash_state_dict(self.model).encode())
                    self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        return {
            "name": self.name,
            "weights": self.weights,
            "layer": self.layer,
            "pooling": self.pooling,
            "token_pool": self.token_pool,
            "num_features": self.num_features,
            "input_size": self.input_size,
            "transform": self.transform_description,
            "cam_layer": self.cam_layer_name,
            "head": None if self.head is None else f"linear {self.head.in_features} -> {self.head.out_features}",
            "num_classes": None if self.head is None else int(self.head.out_features),
            "class_names": None if self.class_names is None else len(self.class_names),
            "load_report": list(self.load_report),
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        return (f"Backbone({self.name!r}, weights={self.weights!r}, layer={self.layer!r}, "
                f"r={self.num_features})")


# --------------------------------------------------------------------------------------------
# registry and factories
# --------------------------------------------------------------------------------------------

BackboneFactory = Callable[..., Backbone]
BACKBONES = Registry("backbone")
_TIMM_PRESETS = ["timm:vit_tiny_patch16_224", "timm:vit_base_patch16_224", "timm:resnet50"]


def register_backbone(name: str, factory: BackboneFactory | str,
                      settings: dict | None = None) -> None:
    """Add (or replace) a preset: ``factory(spec, **options) -> Backbone`` (see
    :mod:`falcon_core.registry`); ``settings``: the FalconSettings it works best with."""
    BACKBONES.register(name, factory, settings)


def list_backbones() -> list[str]:
    """Names for the UI: registered presets, then a few timm models (any "timm:<name>" works)."""
    return BACKBONES.names() + [p for p in _TIMM_PRESETS if p not in BACKBONES]


def backbone_settings(name: str) -> dict:
    """The settings a preset was registered with ({}: the authors' defaults)."""
    return BACKBONES.settings(name)


def create_backbone(spec: BackboneSpec | str, device: str | torch.device | None = None,
                    **options) -> Backbone:
    """Build the backbone described by ``spec`` (a BackboneSpec or a preset name); ``options``
    go to a preset's factory (the demo backbone reads ``world``)."""
    if isinstance(spec, str):
        spec = BackboneSpec(spec)
    if spec.token_pool not in ("cls", "mean"):
        raise FalconError(f"Unknown token pooling {spec.token_pool!r}.", "Use 'cls' or 'mean'.")
    name = spec.name.strip()
    if name in BACKBONES:
        bb = BACKBONES.create(name, spec, **options)
    elif name.startswith("timm:"):
        bb = _timm_backbone(spec)
    else:
        raise FalconError(
            f"Unknown backbone {name!r}.",
            "Choose one of " + ", ".join(list_backbones()) + ", or 'timm:<model name>' for any timm model.",
        )
    if device is not None:
        bb.to(device)
    return bb


def _weights_kind(weights: str | None) -> str:
    w = None if weights is None else str(weights).strip()
    if w is None or w.lower() in _RANDOM_WORDS:
        return "random"
    if w.lower() in _PRETRAINED_WORDS:
        return "pretrained"
    path = os.path.expanduser(w)
    if not os.path.exists(path):
        raise FalconError(
            f"Weights {weights!r}: no such checkpoint file.",
            "Weights are 'imagenet' (downloaded), 'random', or the path of a checkpoint file.",
        )
    return "file"


def _torchvision_factory(arch: str):
    def factory(spec: BackboneSpec) -> Backbone:
        import torchvision

        builder = getattr(torchvision.models, arch)
        weights_enum = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        kind = _weights_kind(spec.weights)
        model = _seeded(lambda: builder(weights=None))
        report: list[str] = []
        class_names = None
        has_head = True
        tf = weights_enum.transforms()
        if kind == "pretrained":
            try:
                sd = weights_enum.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # URLError, timeouts, HTTP errors, a corrupt partial download
                raise OfflineError(
                    f"Could not download the ImageNet weights of {arch} ({type(e).__name__}: {e}).",
                    OFFLINE_HINT,
                ) from e
            model.load_state_dict(sd)
            class_names = _imagenet_classes(weights_enum.meta["categories"])
            report.append(f"torchvision ImageNet weights {weights_enum}")
            weights_desc = "imagenet"
        elif kind == "file":
            report, has_head = apply_checkpoint(model, spec.weights, head_name="fc", arch=arch)
            class_names = _class_names_for(spec, model.fc if has_head else None, report)
            weights_desc = str(spec.weights)
        else:
            report.append(f"random initialisation (seed {_SEED})")
            weights_desc = "random"
        return Backbone(
            model, arch, layer=spec.layer, head_name="fc", has_head=has_head,
            token_pool=spec.token_pool, input_size=int(tf.crop_size[0]),
            resize_size=int(tf.resize_size[0]), mean=tf.mean, std=tf.std,
            interpolation=tf.interpolation, class_names=class_names, weights=weights_desc,
            load_report=report,
        )

    return factory


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_backbone(_arch, _torchvision_factory(_arch))

# The offline demo world's small ResNet (falcon_core/demo). Its 128-d representation is dense: the
# authors' global alpha (mean + 5 std of the normalised matrix) leaves 123 of its 128 features
# without any highly activating image, the fault FALCON.md warns of. The per-feature top-k rule
# (k = 20, 0.4 % of the 5,000 probe images) gives every feature a set T.
# Stage 8's signatures follow the same rule, so a discovered group's images are a subset of each
# member's 20 images: the authors' minimum of 11 images (set for a global alpha, under which a
# feature's T is not capped) would need more than half of those 20 to share exactly one signature,
# which no pair of demo features reaches (at most 7). A group is kept from 5 images (k / 4).
register_backbone("demo", "falcon_core.demo.integration:demo_backbone",
                  settings={"high_rule": "topk", "top_k": 20, "group_min_images": 5})
# The same network trained on the same world without the planted correlations (model comparison).
register_backbone("demo-uncorrelated", "falcon_core.demo.integration:demo_backbone_uncorrelated",
                  settings={"high_rule": "topk", "top_k": 20, "group_min_images": 5})


def _timm_backbone(spec: BackboneSpec) -> Backbone:
    import timm

    model_name = spec.name[len("timm:"):].strip()
    base = model_name.split(".")[0]
    if not timm.is_model(base):
        words = [w for w in base.replace("-", "_").split("_") if len(w) > 2][:1]
        similar = timm.list_models(f"*{words[0]}*")[:10] if words else []
        raise FalconError(
            f"timm has no model {model_name!r}.",
            ("Similar names: " + ", ".join(similar) + ". ") if similar else
            "See timm.list_models() for the names.",
        )
    kind = _weights_kind(spec.weights)
    report: list[str] = []
    has_head = True
    class_names = None
    if kind == "pretrained":
        if not timm.is_model_pretrained(model_name):
            raise FalconError(f"timm has no pretrained weights for {model_name!r}.",
                              "Use weights='random' or a checkpoint file.")
        try:
            with hub_offline_guard():
                model = timm.create_model(model_name, pretrained=True)
        except Exception as e:
            raise OfflineError(
                f"Could not download the pretrained weights of {model_name} ({type(e).__name__}: {e}).",
                OFFLINE_HINT,
            ) from e
        report.append(f"timm pretrained weights ({model.pretrained_cfg.get('tag') or 'default'})")
        weights_desc = "imagenet"
        try:
            from timm.data import ImageNetInfo, infer_imagenet_subset

            subset = infer_imagenet_subset(model)
            if subset:
                info = ImageNetInfo(subset)
                class_names = ClassList(list(info.label_names()), list(info.label_descriptions()))
        except Exception:  # pragma: no cover - optional
            class_names = None
    else:
        model = _seeded(lambda: timm.create_model(model_name, pretrained=False))
        weights_desc = "random"
        report.append(f"random initialisation (seed {_SEED})")

    head_mod = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_name = _module_name(model, head_mod) or model.pretrained_cfg.get("classifier")
    if kind == "file":
        report, has_head = apply_checkpoint(model, spec.weights, head_name=head_name, arch=model_name)
        head_now = model.get_classifier() if hasattr(model, "get_classifier") else None
        class_names = _class_names_for(
            spec, head_now if has_head and isinstance(head_now, nn.Linear) else None, report)
        weights_desc = str(spec.weights)

    cfg = timm.data.resolve_data_config(model=model)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    resize = int(math.floor(size / crop_pct))

    num_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    is_vit = hasattr(model, "blocks") and hasattr(model, "patch_embed")
    layer = spec.layer
    pooling_note = None
    if is_vit and layer in (None, "") and spec.token_pool == "mean" and getattr(model, "global_pool", "") == "token" \
            and "norm" in dict(model.named_modules()):
        layer = "norm"  # mean of the patch tokens after the final norm instead of the CLS token
    if is_vit and layer in (None, ""):
        pooling_note = f"the input of the classifier head (timm global_pool={getattr(model, 'global_pool', '?')!r})"
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return Backbone(
        model, spec.name, layer=layer, head_name=head_name, has_head=has_head,
        token_pool=spec.token_pool, num_prefix_tokens=num_prefix, input_size=size,
        resize_size=resize, mean=cfg["mean"], std=cfg["std"], interpolation=cfg.get("interpolation", "bicubic"),
        class_names=class_names, weights=weights_desc, load_report=report,
        vit_blocks="blocks" if is_vit else None, grid_size=tuple(grid) if grid else None,
        pooling_note=pooling_note,
    )
