"""The demo world as the pipeline's four inputs: backbone, CLIP, probe set, vocabulary.

These are the factories registered as ``"demo"`` in the four registries
(:mod:`falcon_core.registry`), so ``create_backbone("demo")``, ``create_clip("demo")``,
``create_probe("demo")`` and ``create_vocabulary("demo")`` build them like any other input. Each
goes through the same code as a user's own input (``Backbone.from_module``, ``create_clip`` with a
local checkpoint, ``ListVocabulary``), so the demo exercises the real paths; the probe set is a
:class:`~.scene_probe.SceneProbe`, which renders each scene when it is first loaded.
``world`` is the world config (None: ``assets/world.json``).

:func:`demo_probe_truth` gives what the probe set's images show (the ground truth a benchmark
checks FALCON against).
"""

from __future__ import annotations

from ..cache import hash_json
from ..data.vocabulary import ListVocabulary
from .assets import (build_demo_backbone_module, demo_clip_spec, ensure_assets, probe_scene_dicts,
                     probe_scenes, vocabulary_captions)
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
    """The demo world's probe set: ``n`` generated scenes of ``seed``, each rendered when it is
    first loaded (:class:`~.scene_probe.SceneProbe`; the whole set is rendered, and cached, only
    for work that reads every image)."""
    from .scene_probe import SceneProbe

    w = load_world(world)
    scenes = probe_scene_dicts(w, n=n, seed=seed)

    def rendered():
        return rendered_probe(w, n=n, seed=seed)

    def render_all(progress):
        return probe_scenes(w, n=n, seed=seed, progress=progress)[0]

    return SceneProbe(
        w, scenes,
        fingerprint=hash_json({"demo_world": w.hash, "n": n, "seed": seed,
                               "generator": GENERATOR_VERSION}),
        description=f"demo world '{w.name}': {len(scenes)} generated scenes (seed {seed})",
        rendered=rendered, render_all=render_all, progress=progress)


def rendered_probe(world: World, n: int, seed: int):
    """The all-at-once render of the probe set that ``probe_scenes`` cached (a read-only
    memmap), or None when it is not in the cache (nothing is rendered here)."""
    import numpy as np

    from .assets import _key, cache_dir

    key = _key("probe", world.hash, seed, n, world.image_size)
    npy, idx = cache_dir() / f"probe-{key}.npy", cache_dir() / f"probe-{key}.json"
    if not (npy.is_file() and idx.is_file()):
        return None
    try:
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    S = int(world.image_size)
    return images if images.shape == (n, S, S, 3) and images.dtype == np.uint8 else None


def demo_probe_truth(world: str | None = None, n: int = 5000, seed: int = 0
                     ) -> tuple[World, list[dict]]:
    """The world and the scene of every image of ``demo_probe(world, n, seed)``, in its order."""
    w = load_world(world)
    return w, probe_scenes(w, n=n, seed=seed)[1]


def demo_vocabulary(world: str | None = None, seed: int = 0):
    """The demo world's captions: shipped in ``assets/prefill/`` for the default world when they
    were made by this code (:func:`~.prefill.shipped_captions`), else generated and cached."""
    from .prefill import shipped_captions

    w = load_world(world)
    captions = shipped_captions(w, seed)
    if captions is None:
        captions = vocabulary_captions(w, seed=seed)
    return ListVocabulary(captions, name=f"demo world '{w.name}' captions")
