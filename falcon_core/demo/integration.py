"""The demo world as the pipeline's four inputs: backbone, CLIP, probe set, vocabulary.

These are the factories registered as ``"demo"`` in the four registries
(:mod:`falcon_core.registry`), so ``create_backbone("demo")``, ``create_clip("demo")``,
``create_probe("demo")`` and ``create_vocabulary("demo")`` build them like any other input. Each
goes through the same code as a user's own input (``Backbone.from_module``, ``create_clip`` with a
local checkpoint, ``ArrayProbe``, ``ListVocabulary``), so the demo exercises the real paths.
``world`` is the world config (None: ``assets/world.json``).

:func:`demo_probe_truth` gives what the probe set's images show (the ground truth a benchmark
checks FALCON against); the probe set itself is a plain ``ArrayProbe``.
"""

from __future__ import annotations

from ..cache import hash_json
from ..data.probes import ArrayProbe
from ..data.vocabulary import ListVocabulary
from .assets import (build_demo_backbone_module, demo_clip_spec, ensure_assets, probe_scenes,
                     vocabulary_captions)
from .world import GENERATOR_VERSION, World, load_world


def demo_backbone(spec, world: str | None = None, variant: str = "default"):
    """The demo world's backbone; ``spec`` (a BackboneSpec) chooses the layer. ``variant``:
    ``"default"`` (trained on the world with its planted correlations) or ``"uncorrelated"`` (the
    same training without them; registered as ``"demo-uncorrelated"``)."""
    from ..models.backbones import Backbone

    model, meta = build_demo_backbone_module(ensure_assets(world), variant=variant)
    size = int(meta["input_size"])
    return Backbone.from_module(
        model, "demo" if variant == "default" else f"demo-{variant}", input_size=size, resize_size=size,
        mean=tuple(meta["mean"]), std=tuple(meta["std"]), head_name="fc", class_names=list(meta["class_names"]),
        layer=spec.layer, weights=meta["checkpoint"])


def demo_backbone_uncorrelated(spec, world: str | None = None):
    """The demo backbone trained on the world without its planted correlations (for comparing two
    models: its features of a planted source do not carry the planted target)."""
    return demo_backbone(spec, world, variant="uncorrelated")


def demo_clip(spec, world: str | None = None):
    """The demo world's CLIP (its own weights: ``spec.pretrained`` is not read)."""
    from ..models.clip import ClipSpec, create_clip

    name, path = demo_clip_spec(ensure_assets(world))
    return create_clip(ClipSpec(name=name, pretrained=path))


def demo_probe(world: str | None = None, n: int = 5000, seed: int = 0, progress=None):
    w = load_world(world)
    images, _scenes, labels, class_names = probe_scenes(w, n=n, seed=seed, progress=progress)
    return ArrayProbe(
        images, ids=[f"scene-{i:05d}" for i in range(len(images))], labels=labels,
        class_names=class_names,
        fingerprint=hash_json({"demo_world": w.hash, "n": n, "seed": seed,
                               "generator": GENERATOR_VERSION}),
        description=f"demo world '{w.name}': {len(images)} generated scenes (seed {seed})")


def demo_probe_truth(world: str | None = None, n: int = 5000, seed: int = 0
                     ) -> tuple[World, list[dict]]:
    """The world and the scene of every image of ``demo_probe(world, n, seed)``, in its order."""
    w = load_world(world)
    return w, probe_scenes(w, n=n, seed=seed)[1]


def demo_vocabulary(world: str | None = None, seed: int = 0):
    w = load_world(world)
    return ListVocabulary(vocabulary_captions(w, seed=seed), name=f"demo world '{w.name}' captions")
