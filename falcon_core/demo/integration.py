"""The demo world as the pipeline's four inputs: backbone, CLIP, probe set, vocabulary.

Each goes through the same code as a user's own input (``Backbone.from_module``,
``create_clip`` with a local checkpoint, ``ArrayProbe``, ``ListVocabulary``), so the demo
exercises the real paths.
"""

from __future__ import annotations

from ..cache import hash_json
from ..data.probes import ArrayProbe
from ..data.vocabulary import ListVocabulary
from .assets import (build_demo_backbone_module, demo_clip_spec, ensure_assets, probe_scenes,
                     vocabulary_captions)
from .world import GENERATOR_VERSION, load_world


def demo_backbone(layer: str | None = None, world: str | None = None):
    from ..models.backbones import Backbone

    model, meta = build_demo_backbone_module(ensure_assets(world))
    size = int(meta["input_size"])
    return Backbone.from_module(
        model, "demo", input_size=size, resize_size=size, mean=tuple(meta["mean"]),
        std=tuple(meta["std"]), head_name="fc", class_names=list(meta["class_names"]),
        layer=layer, weights=meta["checkpoint"])


def demo_clip(world: str | None = None):
    from ..models.clip import ClipSpec, create_clip

    name, path = demo_clip_spec(ensure_assets(world))
    return create_clip(ClipSpec(name=name, pretrained=path))


def demo_probe(world: str | None = None, n: int = 5000, seed: int = 0, progress=None):
    w = load_world(world)
    images, scenes, labels, class_names = probe_scenes(w, n=n, seed=seed, progress=progress)
    probe = ArrayProbe(
        images, ids=[f"scene-{i:05d}" for i in range(len(images))], labels=labels,
        class_names=class_names,
        fingerprint=hash_json({"demo_world": w.hash, "n": n, "seed": seed,
                               "generator": GENERATOR_VERSION}),
        description=f"demo world '{w.name}': {len(images)} generated scenes (seed {seed})")
    probe.scenes = scenes  # ground truth for the benchmark and the app
    probe.world = w
    return probe


def demo_vocabulary(world: str | None = None, seed: int = 0):
    w = load_world(world)
    return ListVocabulary(vocabulary_captions(w, seed=seed), name=f"demo world '{w.name}' captions")
