"""What the rest of FALCON calls: the demo world's data, models and synonyms.

- :func:`probe_scenes` and :func:`vocabulary_captions` generate the probe set and the caption
  vocabulary on first use and cache them under ``$FALCON_CACHE`` (or ``~/.cache/falcon``)
  ``/demo/``, keyed by the world config hash, the seed, the size and the generator version,
  written atomically (temporary file + ``os.replace``; the JSON index is written last, so a
  half-written entry is never trusted).
- :func:`demo_clip_spec` / :func:`load_demo_clip`: the demo CLIP through open_clip's factory.
- :func:`build_demo_backbone_module`: the demo backbone (eval mode) and its preprocessing meta.
- :func:`synonyms`: the words that name each attribute value, with their spaCy lemmas.

Models of the default world and seed are the committed ones in ``assets/``. For another world or
seed, :func:`ensure_assets` builds them once into the cache (about an hour on 2 cores) and reuses
them while the build recipe (:func:`.build.recipe`: settings, generator version, CLIP architecture,
training mix, ...) is the one they were built with: the recipe is part of the folder's key and is
checked against the folder's manifest, so models of an older recipe are never shown.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import default_cache_root
from ..errors import FalconError
from . import captions as C
from .build import (BACKBONE_FILES, CLIP_FILE, DEFAULT_SEED, MANIFEST_FILE, atomic_write_bytes, manifest_recipe,
                    recipe, recipe_hash, render_many, stream_seed)
from .world import ASSETS_DIR, DEFAULT_WORLD, GENERATOR_VERSION, World, load_world

DEFAULT_PROBE_SEED = 0
DEFAULT_PROBE_N = 5000
DEFAULT_VOCAB_N = 24000

_BUILD_HINT = "Rebuild the demo assets with `python -m falcon_core.demo build --seed 0` (a few minutes)."


def cache_dir() -> Path:
    return default_cache_root() / "demo"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([GENERATOR_VERSION, *parts], sort_keys=True).encode()).hexdigest()[:20]


def _world(world: World | str | Path | None) -> World:
    return world if isinstance(world, World) else load_world(world)


# --------------------------------------------------------------------------------------------
# probe set and vocabulary
# --------------------------------------------------------------------------------------------


def probe_scene_dicts(world: World | str | Path | None = None, n: int = DEFAULT_PROBE_N,
                      seed: int = DEFAULT_PROBE_SEED) -> list[dict]:
    """The probe set's scene dicts (no rendering; cheap)."""
    return _world(world).sample_scenes(n, stream_seed(seed, "probe"))


def probe_scenes(world: World | str | Path | None = None, n: int = DEFAULT_PROBE_N, seed: int = DEFAULT_PROBE_SEED,
                 progress=None) -> tuple[np.ndarray, list[dict], np.ndarray, list[str]]:
    """(images uint8 (N, S, S, 3) read-only memmap, scenes, labels int64 (N,), class_names).

    Generated on first use (about a minute for 5,000 scenes) and cached."""
    w = _world(world)
    key = _key("probe", w.hash, seed, n, w.image_size)
    d = cache_dir()
    npy, idx = d / f"probe-{key}.npy", d / f"probe-{key}.json"
    if not (npy.is_file() and idx.is_file()):
        d.mkdir(parents=True, exist_ok=True)
        scenes = probe_scene_dicts(w, n, seed)
        images = np.empty((n, w.image_size, w.image_size, 3), np.uint8)
        step = 250
        for i in range(0, n, step):
            images[i:i + step] = render_many(w, scenes[i:i + step])
            if progress:
                progress(min(i + step, n), n, "demo probe set")
        tmp = d / f"probe-{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, images)
        os.replace(tmp, npy)
        data = {"world": w.name, "world_hash": w.hash, "seed": seed, "n": n, "generator_version": GENERATOR_VERSION,
                "class_names": w.class_names, "labels": [w.label(s) for s in scenes], "scenes": scenes}
        atomic_write_bytes(idx, json.dumps(data).encode())
    data = json.loads(idx.read_text())
    images = np.load(npy, mmap_mode="r")
    return images, data["scenes"], np.asarray(data["labels"], np.int64), list(data["class_names"])


def vocabulary_captions(world: World | str | Path | None = None, seed: int = DEFAULT_PROBE_SEED,
                        n: int = DEFAULT_VOCAB_N, probe_n: int = DEFAULT_PROBE_N,
                        probe_seed: int | None = None, progress=None) -> list[str]:
    """At least ``n`` (default 24,000) distinct captions of the world, cached; distractors describe
    main-object combinations absent from the probe set (``probe_n``, ``probe_seed`` = ``seed``)."""
    w = _world(world)
    probe_seed = seed if probe_seed is None else probe_seed
    key = _key("vocab", w.hash, seed, n, probe_n, probe_seed)
    path = cache_dir() / f"vocab-{key}.txt"
    if not path.is_file():
        caps = C.vocabulary(w, probe_scene_dicts(w, probe_n, probe_seed), stream_seed(seed, "vocab"), n, progress)
        atomic_write_bytes(path, ("\n".join(caps) + "\n").encode())
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line]


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def read_manifest(directory: str | Path | None = None) -> dict[str, Any]:
    p = Path(directory or ASSETS_DIR) / MANIFEST_FILE
    if not p.is_file():
        raise FalconError(f"The demo world's models are missing ({p} not found).", _BUILD_HINT)
    return json.loads(p.read_text())


def ensure_assets(world: World | str | Path | None = None, seed: int = DEFAULT_SEED, build: bool = True) -> Path:
    """The folder holding models for (world, seed): ``assets/`` when its manifest matches (the
    committed models, versioned with the code), else a cache folder keyed by (world, seed, build
    recipe) whose manifest records that world, seed and recipe, built there on first use when
    ``build`` (about an hour on 2 cores). A folder under the key used before the recipe was part of
    it is reused only when its manifest records the current recipe."""
    w = _world(world)
    try:
        m = read_manifest(ASSETS_DIR)
        if m.get("world_hash") == w.hash and m.get("seed") == seed:
            return ASSETS_DIR
    except FalconError:
        if w.hash == load_world(DEFAULT_WORLD).hash and seed == DEFAULT_SEED and not build:
            raise
    want = recipe_hash(recipe())
    d = models_cache_dir(w, seed)
    for folder in (d, cache_dir() / f"models-{_key('models', w.hash, seed)}"):  # the key before the recipe
        if _built_by(folder, w, seed, want):
            return folder
    if not build:
        raise FalconError(f"No demo models for world {w.name!r} and seed {seed} built with the current recipe.",
                          f"Build them: `python -m falcon_core.demo build --seed {seed} --world {w.path} --out {d}`.")
    from .build import build as run_build

    run_build(seed=seed, world=w, out=d)
    return d


def models_cache_dir(world: World | str | Path | None = None, seed: int = DEFAULT_SEED) -> Path:
    """The cache folder of the models :func:`ensure_assets` builds for (world, seed): keyed by the
    world config, the seed and the build recipe (:func:`.build.recipe`: settings, generator version,
    CLIP architecture and training mix, ...), so a changed recipe never reuses older models."""
    w = _world(world)
    return cache_dir() / f"models-{_key('models', w.hash, seed, recipe_hash(recipe()))}"


def _built_by(folder: Path, w: World, seed: int, want: str) -> bool:
    """Whether ``folder`` holds a complete build of (world, seed) with the recipe hashed ``want``
    (its manifest, written last, says so; every file it lists is there)."""
    try:
        m = json.loads((folder / MANIFEST_FILE).read_text())
        return (m.get("world_hash") == w.hash and m.get("seed") == seed
                and recipe_hash(manifest_recipe(m)) == want
                and all((folder / f).is_file() for f in m.get("files", {})))
    except (OSError, ValueError, AttributeError):
        return False


def demo_clip_spec(directory: str | Path | None = None) -> tuple[str, str]:
    """(open_clip model name, checkpoint path) of the demo CLIP, after registering its config."""
    from .clip_model import register

    name = register()
    path = Path(directory or ASSETS_DIR) / CLIP_FILE
    if not path.is_file():
        raise FalconError(f"The demo CLIP checkpoint is missing ({path}).", _BUILD_HINT)
    return name, str(path)


def load_demo_clip(directory: str | Path | None = None):
    """``open_clip.create_model_and_transforms(name, pretrained=path)`` for the demo CLIP:
    (model, preprocess_train, preprocess_val); the same factory call as for a real CLIP."""
    import open_clip

    name, path = demo_clip_spec(directory)
    model, pp_train, pp_val = open_clip.create_model_and_transforms(name, pretrained=path)
    model.eval()
    return model, pp_train, pp_val


BACKBONE_VARIANTS = ("default", "uncorrelated")
"""``default``: trained on the world with its planted correlations (the demo workspace's backbone);
``uncorrelated``: the same training on the same world without them (for model comparison)."""


def build_demo_backbone_module(directory: str | Path | None = None, variant: str = "default"):
    """(DemoResNet in eval mode with its weights, meta) where meta has input_size, mean, std,
    class_names, head="fc", cam_layer, feature_layer, num_features, checkpoint, sha256, variant.

    ``variant``: one of :data:`BACKBONE_VARIANTS`."""
    import torch

    from .backbone import DemoResNet

    if variant not in BACKBONE_VARIANTS:
        raise FalconError(f"Unknown demo backbone variant {variant!r}.",
                          f"Choose one of {', '.join(BACKBONE_VARIANTS)}.")
    d = Path(directory or ASSETS_DIR)
    m = read_manifest(d)
    entry = m.get("backbone" if variant == "default" else f"backbone_{variant}")
    filename = BACKBONE_FILES[variant]
    if entry is None:
        raise FalconError(f"The demo assets in {d} have no '{variant}' backbone (an older build).", _BUILD_HINT)
    meta = dict(entry["meta"])
    path = d / filename
    if not path.is_file():
        raise FalconError(f"The demo backbone checkpoint is missing ({path}).", _BUILD_HINT)
    model = DemoResNet(len(meta["class_names"]), tuple(entry["widths"]))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    meta["checkpoint"] = str(path)
    meta["sha256"] = m["files"][filename]
    meta["variant"] = variant
    return model, meta


# --------------------------------------------------------------------------------------------
# synonyms
# --------------------------------------------------------------------------------------------

_SYN_CACHE: dict[tuple[str, bool], dict[str, list[str]]] = {}


def synonyms(world: World | str | Path | None = None, lemmas: bool = True) -> dict[str, list[str]]:
    """{"attr=value": [words]}: the config's words for each value and, with ``lemmas``, the spaCy
    lemmas those words get inside typical demo captions (spaCy lemmatises "striped" to "strip",
    "dotted" to "dot", "bricks" to "brick"). The lemmas come from FALCON's own concept extractor
    (the same spaCy pipeline and pipes), so a benchmark can match FALCON's words directly. A lemma
    that would also name another value is left out. Multi-word phrases (``"polka dots"``) are
    covered by their single words."""
    w = _world(world)
    ck = (w.hash, lemmas)
    if ck in _SYN_CACHE:
        return {k: list(v) for k, v in _SYN_CACHE[ck].items()}
    out = {f"{a}={v}": list(w.words(a, v)) for a in w.attributes for v in w.attributes[a]}
    if lemmas:
        from ..stages.concepts import ConceptExtractor

        owner = {word: k for k, ws in out.items() for word in ws}
        frames = {
            "shape": ["a small red {} on the grass", "a {} with stripes"],
            "color": ["a {} star on the grass", "a large {} striped disc"],
            "pattern": ["a red {} star on sand", "a blue star with {}", "a small {} hexagon"],
            "size": ["a {} red star on water", "one {} striped disc"],
            "background": ["a red star on {}", "{} with a blue disc", "a star lying on the {}"],
        }
        sentences, who = [], []
        for k, ws in out.items():
            attr = k.split("=", 1)[0]
            for word in ws:
                for fr in frames[attr]:
                    sentences.append(fr.format(word))
                    who.append((k, word))
        for doc, (k, word) in zip(ConceptExtractor().docs(sentences), who):
            for tok in doc:
                if tok.text.lower() == word:
                    lem = tok.lemma_.lower()
                    if lem and lem not in out[k] and owner.get(lem, k) == k:
                        out[k].append(lem)
                        owner[lem] = k
    _SYN_CACHE[ck] = out
    return {k: list(v) for k, v in out.items()}
