"""The Setup page's presets: each maps a label to WorkspaceConfig fields (pure; tested alone).

A preset with ``path`` asks for a local path, which goes into the field named by ``path``
(with ``prefix`` in front, e.g. ``laion:`` for LAION shards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from falcon_core.workspace import WorkspaceConfig


@dataclass(frozen=True)
class Preset:
    label: str
    fields: dict[str, Any] = field(default_factory=dict)
    path: str | None = None  # field filled with a local path the user types
    prefix: str = ""
    path_help: str = ""
    downloads: bool = False  # needs the internet the first time (or a local copy)
    custom: tuple[str, ...] = ()  # fields typed by the user


BACKBONES = [
    Preset("Demo world backbone (offline)", {"backbone": "demo", "weights": None}),
    Preset("ResNet-18, ImageNet weights", {"backbone": "resnet18", "weights": "imagenet"},
           downloads=True),
    Preset("ResNet-50, ImageNet weights", {"backbone": "resnet50", "weights": "imagenet"},
           downloads=True),
    Preset("ResNet-50, DINO checkpoint (local file)", {"backbone": "resnet50"}, path="weights",
           path_help="A .pth/.pt file of DINO ResNet-50 weights (e.g. dino_resnet50_pretrain.pth)."),
    Preset("ResNet-50, SimCLR checkpoint (local file)", {"backbone": "resnet50"}, path="weights",
           path_help="A .pth/.pt/.ckpt file of SimCLR ResNet-50 weights (converted to torchvision "
                     "names, or with a common prefix such as 'module.' or 'encoder.')."),
    Preset("ViT-S/16, timm ImageNet weights",
           {"backbone": "timm:vit_small_patch16_224", "weights": "imagenet"}, downloads=True),
    Preset("Demo world backbone trained without the planted correlations (offline)",
           {"backbone": "demo-uncorrelated", "weights": None}),
    Preset("Other (type a name and weights)", {}, custom=("backbone", "weights")),
]

CLIPS = [
    Preset("Demo CLIP (offline)", {"clip": "demo", "clip_pretrained": None}),
    Preset("CLIP ViT-B/32, OpenAI weights", {"clip": "ViT-B-32", "clip_pretrained": "openai"},
           downloads=True),
    Preset("CLIP ViT-B/32, local checkpoint", {"clip": "ViT-B-32"}, path="clip_pretrained",
           path_help="An open_clip checkpoint file (e.g. ViT-B-32 open_clip_pytorch_model.bin)."),
    Preset("Other (type an open_clip name and weights)", {}, custom=("clip", "clip_pretrained")),
]

PROBES = [
    Preset("Demo world images (offline)", {"probe": "demo"}),
    Preset("CIFAR-10 (test split)", {"probe": "cifar10"}, downloads=True),
    Preset("STL-10 (test split)", {"probe": "stl10"}, downloads=True),
    Preset("Imagenette (validation)", {"probe": "imagenette"}, downloads=True),
    Preset("An image folder", {}, path="probe",
           path_help="A folder of images; class subfolders named after the classifier's classes "
                     "give true labels (for the Failures page)."),
]

VOCABULARIES = [
    Preset("Demo world captions (offline)", {"vocabulary": "demo"}),
    Preset("A caption file", {}, path="vocabulary",
           path_help="A text file with one caption a line (or a .csv/.parquet with a caption "
                     "column)."),
    Preset("LAION shards (folder)", {}, path="vocabulary", prefix="laion:",
           path_help="A folder of LAION text-embedding .npy shards with their .parquet metadata."),
]

GROUPS = {"backbone": BACKBONES, "clip": CLIPS, "probe": PROBES, "vocabulary": VOCABULARIES}


def matches(preset: Preset, config: WorkspaceConfig) -> bool:
    d = config.to_dict()
    if preset.custom:
        return False
    if any(d.get(k) != v for k, v in preset.fields.items()):
        return False
    if preset.path:
        value = d.get(preset.path)
        if not value or value == "demo":
            return False
        if preset.path in ("weights", "clip_pretrained"):
            return value not in ("imagenet", "openai", "random", "pretrained", "default")
        if preset.prefix:
            return str(value).startswith(preset.prefix)
        if preset.path == "vocabulary":
            return not str(value).startswith("laion:")
        return value not in ("cifar10", "stl10", "imagenette")
    return True


def find(group: str, config: WorkspaceConfig) -> int:
    """The index of the preset of ``group`` that describes ``config`` (the custom one if none)."""
    presets = GROUPS[group]
    for i, p in enumerate(presets):
        if matches(p, config):
            return i
    for i, p in enumerate(presets):
        if p.custom or p.path:
            return i
    return 0


def current_path(preset: Preset, config: WorkspaceConfig) -> str:
    if not preset.path:
        return ""
    value = config.to_dict().get(preset.path) or ""
    if value in ("demo", "imagenet", "openai", "cifar10", "stl10", "imagenette"):
        return ""
    return str(value)[len(preset.prefix):] if str(value).startswith(preset.prefix) else str(value)


def apply(preset: Preset, path: str | None = None, custom: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """The WorkspaceConfig fields a preset sets (with the typed path / custom values)."""
    out = dict(preset.fields)
    if preset.path:
        out[preset.path] = preset.prefix + (path or "").strip() if (path or "").strip() else None
    for k in preset.custom:
        value = (custom or {}).get(k)
        out[k] = value.strip() if isinstance(value, str) and value.strip() else None
    return out


def missing(preset: Preset, fields: dict[str, Any]) -> str | None:
    """What the user still has to type for this preset, or None."""
    if preset.path and not fields.get(preset.path):
        return f"{preset.label}: give a path."
    for k in preset.custom:
        if k in ("backbone", "clip") and not fields.get(k):
            return f"{preset.label}: give a {k} name."
    return None
