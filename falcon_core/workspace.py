"""Which backbone, CLIP model, probe set and vocabulary to work with, and how to build them.

A :class:`WorkspaceConfig` is a small, serialisable description (the app keeps it in the URL, the
command line builds it from flags). Each field is a spec for its kind's ``create_*`` function,
which looks registered names up first (:mod:`falcon_core.registry`): ``"demo"`` is the offline
demo world, registered in all four and the default everywhere; ``world``, ``seed`` and
``probe_size`` say which demo world (the other inputs do not read them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import FalconError
from .settings import FalconSettings

DEMO = "demo"


@dataclass(frozen=True)
class WorkspaceConfig:
    backbone: str = DEMO  # "demo", "resnet18", "resnet50", "timm:<name>"
    weights: str | None = None  # "imagenet", "random", or a checkpoint path (None: preset default)
    layer: str | None = None  # module name; None = the pooled output before the head
    token_pool: str = "cls"  # ViT: "cls" token or "mean" of patch tokens
    class_names: str | None = None  # a checkpoint head's classes: "a,b,c" or a file, one a line
    clip: str = DEMO  # "demo" or an open_clip model name, e.g. "ViT-B-32"
    clip_pretrained: str | None = None  # open_clip tag ("openai", ...) or a local checkpoint path
    probe: str = DEMO  # "demo", "cifar10", "stl10", "imagenette", or an image folder
    vocabulary: str = DEMO  # "demo", a caption file, or "laion:<folder of shards>"
    world: str | None = None  # demo world config (None: assets/world.json)
    seed: int = 0  # demo probe set seed
    probe_size: int = 5000  # demo probe set size

    @classmethod
    def demo(cls, world: str | None = None, **changes: Any) -> "WorkspaceConfig":
        return cls(world=world, **changes)

    def default_settings(self) -> FalconSettings:
        """The authors' settings, with the ones the backbone preset was registered with (the
        demo backbone's per-feature top-k rule: see ``models/backbones.py``)."""
        from .models.backbones import backbone_settings

        return FalconSettings(**backbone_settings(self.backbone))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkspaceConfig":
        names = {f.name: f for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for k, v in data.items():
            if k not in names:
                continue
            if k in ("seed", "probe_size"):
                try:
                    v = int(v)
                except (TypeError, ValueError) as e:
                    raise FalconError(f"{k} must be a whole number, not {v!r}.") from e
            elif v in ("", "None"):
                v = None
            clean[k] = v
        return cls(**clean)

    def replace(self, **changes: Any) -> "WorkspaceConfig":
        return dataclasses.replace(self, **changes)

    # ---- building the parts ---------------------------------------------------------------
    def build_backbone(self):
        from .models.backbones import BackboneSpec, create_backbone

        return create_backbone(BackboneSpec(name=self.backbone, weights=self.weights,
                                            layer=self.layer, token_pool=self.token_pool,
                                            class_names=self.class_names), world=self.world)

    def build_clip(self):
        from .models.clip import ClipSpec, create_clip

        return create_clip(ClipSpec(name=self.clip, pretrained=self.clip_pretrained),
                           world=self.world)

    def build_probe(self, backbone=None, progress=None):
        """The probe set; a folder's class subfolders are read as labels of ``backbone``'s
        classes (by class id, e.g. an ImageNet wnid, or by a name no other class has).
        ``progress`` reaches factories that report it (the demo probe set's render)."""
        from .data.probes import create_probe

        class_names = getattr(backbone, "class_names", None) if backbone is not None else None
        class_ids = getattr(backbone, "class_ids", None) if backbone is not None else None
        return create_probe(self.probe, class_names_for_labels=class_names,
                            class_ids_for_labels=class_ids, world=self.world,
                            n=self.probe_size, seed=self.seed, progress=progress)

    def build_vocabulary(self):
        from .data.vocabulary import create_vocabulary

        return create_vocabulary(self.vocabulary, world=self.world)
