"""Which backbone, CLIP model, probe set and vocabulary to work with, and how to build them.

A :class:`WorkspaceConfig` is a small, serialisable description (the app keeps it in the URL, the
command line builds it from flags). ``"demo"`` in any field means the offline demo world, which is
the default everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import FalconError
from .settings import FalconSettings

DEMO = "demo"
DEMO_TOP_K = 20


def register_clip_config(path: str) -> str:
    """Register an open_clip model config file (``<name>.json``) and return the model name.

    This is how a custom CLIP architecture is used: its config goes through open_clip's own
    registry and factory, exactly like the built-in ones.
    """
    from pathlib import Path

    import open_clip

    p = Path(path).expanduser()
    if not p.is_file():
        raise FalconError(f"CLIP model config {path} does not exist.",
                          "Give an open_clip model name (e.g. ViT-B-32) or the path of a config JSON.")
    open_clip.add_model_config(p)
    return p.stem


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
        """The authors' settings, except on the demo backbone, which uses the top-k rule.

        The demo backbone's 128-d representation is dense: with the authors' global threshold
        (mean + 5 std of the normalised matrix) 123 of its 128 features have no highly
        activating image at all, the fault FALCON.md warns of. The per-feature top-k rule
        (k = 20, 0.4 % of the 5,000 probe images) gives every feature a set T.
        """
        if self.backbone == DEMO:
            return FalconSettings(high_rule="topk", top_k=DEMO_TOP_K)
        return FalconSettings()

    @property
    def uses_demo(self) -> bool:
        return DEMO in (self.backbone, self.clip, self.probe, self.vocabulary)

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

        if self.backbone == DEMO:
            from .demo.integration import demo_backbone

            return demo_backbone(layer=self.layer, world=self.world)
        return create_backbone(BackboneSpec(name=self.backbone, weights=self.weights,
                                            layer=self.layer, token_pool=self.token_pool,
                                            class_names=self.class_names))

    def build_clip(self):
        from .models.clip import ClipSpec, create_clip

        if self.clip == DEMO:
            from .demo.integration import demo_clip

            return demo_clip(world=self.world)
        name = self.clip
        if name.endswith(".json"):
            name = register_clip_config(name)
        return create_clip(ClipSpec(name=name, pretrained=self.clip_pretrained))

    def build_probe(self, backbone=None):
        from .data.probes import create_probe

        if self.probe == DEMO:
            from .demo.integration import demo_probe

            return demo_probe(world=self.world, n=self.probe_size, seed=self.seed)
        class_names = getattr(backbone, "class_names", None) if backbone is not None else None
        return create_probe(self.probe, class_names_for_labels=class_names)

    def build_vocabulary(self):
        from .data.vocabulary import create_vocabulary

        if self.vocabulary == DEMO:
            from .demo.integration import demo_vocabulary

            return demo_vocabulary(world=self.world)
        return create_vocabulary(self.vocabulary)
