"""Build the demo world's models: ``python -m falcon_core.demo build --seed N``.

Renders training scenes (seed streams separate from the probe set's) and trains on the CPU:

- the demo CLIP, on the world *without* its planted correlations (``World.uncorrelated``: every
  attribute drawn independently), from whole scenes and from crops at the scales Stage 3's
  GradCAM boxes have (:mod:`.clip_model`), as a real CLIP is trained on data broader than any probe
  set;
- the default demo backbone, on the world *with* its planted correlations (its features must
  carry the spurious concepts the contrast step is meant to find);
- a second backbone, same settings, on the world without the correlations (issue 12's model
  comparison: its star features should not carry grass).

Each is measured on held-out scenes and written atomically (temporary file + rename):

- ``demo_clip.pt``: the CLIP state dict (float16), for ``falcon-demo-clip``;
- ``demo_backbone.pt`` / ``demo_backbone_uncorrelated.pt``: backbone state dicts (float32),
  ``DemoResNet`` with head ``fc``;
- ``demo_manifest.json`` (last): seed, world name and hash, generator version, every training
  setting, the metrics, the sha256 of every weight file, and (key ``build_time``) how long each
  phase took.

Deterministic: fixed seeds per stream, ``torch.use_deterministic_algorithms(True)`` and a fixed
thread count (``--threads``, default 2, recorded in the manifest: a different thread count may
change float reductions and so the bytes). Same command, same machine type -> same files; the
manifest differs only in ``build_time``.
"""

from __future__ import annotations

import copy
import math
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import backbone as BB
from . import clip_model as CM
from .ground_truth import attribute_matrix, clear_share, ground_truth
from .world import ASSETS_DIR, DEFAULT_WORLD, GENERATOR_VERSION, World, load_world

CLIP_FILE = "demo_clip.pt"
BACKBONE_FILE = "demo_backbone.pt"
BACKBONE_FILES = {"default": BACKBONE_FILE, "uncorrelated": "demo_backbone_uncorrelated.pt"}
"""The demo backbones: trained on the world with its planted correlations (the default one) and on
the same world without them (issue 12's model comparison)."""
MANIFEST_FILE = "demo_manifest.json"
TIMING_KEY = "build_time"
DEFAULT_SEED = 0

FULL = dict(train_scenes=6000, clip_scenes=16000, eval_scenes=2000, clip_eval_scenes=2000, vocabulary=0,
            clip_steps=6000, clip_batch=256, clip_lr=2e-3, clip_visual_lr=6e-3, clip_hard_negatives=1.0,
            backbone_steps=1200, backbone_batch=96, backbone_lr=6e-3, aux_weight=0.1)
TINY = dict(train_scenes=48, clip_scenes=48, eval_scenes=24, clip_eval_scenes=24, vocabulary=400,
            clip_steps=3, clip_batch=16, clip_lr=2e-3, clip_visual_lr=6e-3, clip_hard_negatives=1.0,
            backbone_steps=3, backbone_batch=16, backbone_lr=6e-3, aux_weight=0.1)


RECIPE_VERSION = 1
"""Bump when the training code changes what a build learns in a way the recorded settings do not
show (a new loss term, a new kind of training crop): it is part of :func:`recipe`, so models cached
under the old recipe are not reused. Changes that only move float rounding (how a step is
computed) do not bump it.

1: issue 7's recipe (uncorrelated CLIP world, GradCAM-like crops, NegCLIP hard negatives)."""


def recipe(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """What determines what a build learns besides the world and the seed: the settings
    (``params``, default :data:`FULL`), the world generator's version, the CLIP's architecture
    file, its training mix, hard-negative shares and crop-box distribution, the backbone's widths
    and :data:`RECIPE_VERSION`. The manifest records all of it (:func:`manifest_recipe` reads it
    back); cached models are keyed and checked by it (``assets.ensure_assets``)."""
    return {"recipe_version": RECIPE_VERSION, "generator_version": GENERATOR_VERSION,
            "settings": dict(FULL if params is None else params),
            "clip_config_sha256": sha256_file(CM.CLIP_CONFIG), "clip_mix": dict(CM.MIX),
            "hard_negative_attributes": dict(CM.HARD_NEGATIVES),
            "box_distribution": {"log_scale_mean_sd": list(CM.BOX_LOG_SCALE), "log_aspect_sd": CM.BOX_LOG_ASPECT_SD,
                                 "shift_mean_sd_radii": list(CM.BOX_SHIFT)},
            "backbone_widths": list(BB.WIDTHS)}


def manifest_recipe(manifest: dict[str, Any]) -> dict[str, Any]:
    """The :func:`recipe` a manifest records (manifests before :data:`RECIPE_VERSION` existed are
    version 1); a field the manifest lacks reads as None, so it matches no recipe."""
    clip, bb = manifest.get("clip") or {}, manifest.get("backbone") or {}
    return {"recipe_version": manifest.get("recipe_version", 1), "generator_version": manifest.get("generator_version"),
            "settings": manifest.get("settings"), "clip_config_sha256": clip.get("config_sha256"),
            "clip_mix": clip.get("mix"), "hard_negative_attributes": clip.get("hard_negative_attributes"),
            "box_distribution": clip.get("box_distribution"), "backbone_widths": bb.get("widths")}


def recipe_hash(r: dict[str, Any]) -> str:
    """sha256 of a recipe's canonical JSON (tuples and lists alike, as the manifest stores them)."""
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()


def stream_seed(seed: int, stream: str) -> int:
    """Independent seed of a named random stream ("probe", "train", "heldout", ...)."""
    return int.from_bytes(hashlib.sha256(f"falcon-demo:{seed}:{stream}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def render_many(world: World, scenes: list[dict], size: int | None = None) -> np.ndarray:
    S = int(size or world.image_size)
    out = np.empty((len(scenes), S, S, 3), np.uint8)
    for i, s in enumerate(scenes):
        out[i] = world.render(s, S)
    return out


def tiny_world() -> World:
    """A tiny world derived from the default one: 3 shapes, 2 values of everything else, and one
    planted correlation (its first shape mostly on its first background)."""
    raw = copy.deepcopy(load_world(DEFAULT_WORLD).raw)
    keep = {"shape": 3, "color": 2, "pattern": 2, "size": 2, "background": 2}
    for a, k in keep.items():
        raw["attributes"][a] = dict(list(raw["attributes"][a].items())[:k])
    raw["name"] = "shapes-tiny"
    first = {a: next(iter(raw["attributes"][a])) for a in ("shape", "background")}
    raw["correlations"] = [{"if": {"shape": first["shape"]}, "then": {"background": first["background"]}, "p": 0.8}]
    return World.from_dict(raw, "<tiny>")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def demo_vocabulary(world: World, n: int | None = None) -> list[str]:
    """The world's caption vocabulary exactly as the app gets it (``assets.vocabulary_captions``
    with its defaults), made without touching the cache."""
    from . import captions as C
    from .assets import DEFAULT_PROBE_N, DEFAULT_PROBE_SEED, DEFAULT_VOCAB_N, probe_scene_dicts

    return C.vocabulary(world, probe_scene_dicts(world, DEFAULT_PROBE_N, DEFAULT_PROBE_SEED),
                        stream_seed(DEFAULT_PROBE_SEED, "vocab"), n or DEFAULT_VOCAB_N)


def gradcam_crop_eval(world: World, net, clip, scenes: list[dict], images: np.ndarray, truths: list,
                      vocabulary: list[str], top: int = 10) -> dict[str, Any]:
    """The CLIP on the crops Stage 3 really makes of this backbone: for every clear shape feature,
    its ``top`` most activating held-out scenes, GradCAM of the feature (threshold 0.6, largest
    region's box; :mod:`falcon_core.stages`), crop, and whether the best caption naming a shape
    names the feature's shape (and no shape absent from the scene). Also the boxes' size relative
    to the object they cover most (the distribution the CLIP's training crops imitate)."""
    from ..models.backbones import Backbone
    from ..stages.crops import crop_box
    from ..stages.gradcam import compute_cams

    meta = BB.meta(world)
    bb = Backbone.from_module(net, "demo", input_size=meta["input_size"], resize_size=meta["input_size"],
                              mean=tuple(meta["mean"]), std=tuple(meta["std"]), head_name="fc",
                              class_names=meta["class_names"])
    H, _ = BB.features_and_logits(net, images)
    _, _, pp = CM.create()
    tok = CM.tokenizer()
    A = CM.encode_texts(clip, tok, vocabulary)
    ment = [CM.mentions(world, t) for t in vocabulary]
    cand = np.array([i for i, m in enumerate(ment) if "shape" in m])
    S = images.shape[1]
    ok, scales, covers_both = [], [], 0
    feats = [t for t in truths if t.clear and t.attribute == "shape"]
    for t in feats:
        idx = np.argsort(-H[:, t.feature], kind="stable")[:top]
        x = BB.to_tensor(images[idx])
        cams = compute_cams(bb, x, [t.feature])
        crops = []
        for i, cam in zip(idx, cams):
            b = crop_box(cam, 0.6)
            crops.append(CM.crop(images[i], b, S))
            sc = scenes[i]
            inside = []
            for o in sc["objects"]:
                r = o["r"] * S
                ix = max(0.0, min(b.x1, o["cx"] * S + r) - max(b.x0, o["cx"] * S - r))
                iy = max(0.0, min(b.y1, o["cy"] * S + r) - max(b.y0, o["cy"] * S - r))
                inside.append((ix * iy / (2 * r) ** 2, r))
            cover, r = max(inside)
            scales.append(math.sqrt(b.width * b.height) / (2 * r))
            covers_both += sum(c > 0.5 for c, _ in inside) > 1
        B = CM.encode_images(clip, pp, crops)
        best = (B @ A[cand].T).argmax(1).numpy()
        for i, j in zip(idx, best):
            named = ment[cand[j]]["shape"]
            present = {o["shape"] for o in scenes[i]["objects"]}
            ok.append(t.value in named and named <= present)
    q = np.quantile(scales, [0.05, 0.25, 0.5, 0.75, 0.95]).round(3).tolist() if scales else []
    return {"features": len(feats), "crops": len(ok), "shape_top1": round(float(np.mean(ok)), 4) if ok else None,
            "box_side_over_object_diameter_quantiles_5_25_50_75_95": q,
            "boxes_holding_two_objects": covers_both}


def build(seed: int = DEFAULT_SEED, world: World | str | Path | None = None, out: str | Path = ASSETS_DIR,
          tiny: bool = False, threads: int = 2, log: Callable[[str], None] | None = None,
          **overrides: Any) -> dict[str, Any]:
    """Train the CLIP and both backbones and write them with the manifest into ``out``; returns
    the manifest."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    params = dict(TINY if tiny else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise TypeError(f"unknown build settings: {sorted(unknown)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    if not isinstance(world, World):
        world = tiny_world() if (tiny and world is None) else load_world(world)
    uncorrelated = world.uncorrelated()
    out = Path(out)
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    t0, cpu0 = time.time(), time.process_time()
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> None:
        seconds[name] = round(time.time() - since, 1)

    log(f"[demo build] world {world.name} ({world.hash[:12]}), seed {seed}, out {out}")
    # the backbone's world (with the planted correlations) and the CLIP's (without), held-out sets
    # of both; the uncorrelated backbone trains on the first train_scenes of the CLIP's scenes
    train_scenes = world.sample_scenes(params["train_scenes"], stream_seed(seed, "train"))
    clip_scenes = uncorrelated.sample_scenes(max(params["clip_scenes"], params["train_scenes"]),
                                             stream_seed(seed, "train-uncorrelated"))
    eval_scenes = world.sample_scenes(params["eval_scenes"], stream_seed(seed, "heldout"))
    clip_eval_scenes = uncorrelated.sample_scenes(params["clip_eval_scenes"], stream_seed(seed, "heldout-uncorrelated"))
    train_images = render_many(world, train_scenes)
    clip_images = render_many(world, clip_scenes)
    eval_images = render_many(world, eval_scenes)
    clip_eval_images = render_many(world, clip_eval_scenes)
    vocabulary = demo_vocabulary(world, params.get("vocabulary") or None)
    lap("data", t0)
    log(f"[demo build] rendered {len(train_scenes)} + {len(clip_scenes)} training and {len(eval_scenes)} + "
        f"{len(clip_eval_scenes)} held-out scenes, {len(vocabulary)} vocabulary captions ({seconds['data']:.0f}s)")

    # ---- CLIP (the uncorrelated world)
    t1 = time.time()
    clip, clip_stats = CM.train_clip(uncorrelated, clip_scenes, clip_images, params["clip_steps"],
                                     params["clip_batch"], params["clip_lr"], stream_seed(seed, "clip"), log,
                                     hard_negative=params["clip_hard_negatives"],
                                     visual_lr=params["clip_visual_lr"])
    clip_path = out / CLIP_FILE
    atomic_torch_save(CM.half_state_dict(clip), clip_path)
    lap("clip_training", t1)
    t1 = time.time()
    loaded, _, _ = CM.create(pretrained=str(clip_path))  # the float16 round trip, as users load it
    loaded.eval()
    clip_eval = CM.evaluate_clip(loaded, world, clip_eval_scenes, clip_eval_images, vocabulary,
                                 stream_seed(seed, "clip-eval"))
    clip_stats.update(clip_eval)
    lap("clip_evaluation", t1)
    log(f"[demo build] CLIP trained ({seconds['clip_training']:.0f}s); on held-out scenes, against the vocabulary:")
    for k, v in CM.summary(clip_eval).items():
        log(f"    {k:20s} {v:.3f}")

    # ---- backbones: the correlated world (default) and the same world without the correlations
    backbones: dict[str, dict[str, Any]] = {}
    nets = {}
    for variant, (scenes, images) in {"default": (train_scenes, train_images),
                                      "uncorrelated": (clip_scenes[:params["train_scenes"]],
                                                       clip_images[:params["train_scenes"]])}.items():
        t2 = time.time()
        net, bb_stats = BB.train_backbone(world, scenes, images, params["backbone_steps"],
                                          params["backbone_batch"], params["backbone_lr"], params["aux_weight"],
                                          stream_seed(seed, "backbone"), log)
        path = out / BACKBONE_FILES[variant]
        atomic_torch_save({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, path)
        metrics, H, truths = BB.backbone_metrics(world, net, eval_scenes, eval_images)
        bb_stats.update(metrics)
        bb_stats["trained_on"] = "the world with its planted correlations" if variant == "default" else \
            "the same world without the planted correlations"
        backbones[variant] = {"file": BACKBONE_FILES[variant], **bb_stats}
        nets[variant] = (net, truths)
        lap(f"backbone_{variant}", t2)
        log(f"[demo build] backbone '{variant}' trained ({seconds[f'backbone_{variant}']:.0f}s): held-out accuracy "
            f"{bb_stats['heldout_acc']:.3f}, clear features {bb_stats['heldout_clear_share']:.2f} "
            f"{bb_stats['heldout_clear_by_attribute']}")
        for p in bb_stats["planted"]:
            log(f"    {p['correlation']}: clear source features {len(p['source_clear_features'])}, "
                f"target AUC without the source {p['mean_target_auc_without_source']}")

    t3 = time.time()
    net, truths = nets["default"]
    clip_stats["gradcam_crops"] = gradcam_crop_eval(world, net, loaded, eval_scenes, eval_images, truths, vocabulary)
    lap("gradcam_evaluation", t3)
    log(f"[demo build] CLIP on the default backbone's GradCAM crops: {clip_stats['gradcam_crops']}")

    files = [CLIP_FILE] + [BACKBONE_FILES[v] for v in backbones]
    manifest = {
        "format": 2,
        "seed": seed,
        "world": world.name,
        "world_hash": world.hash,
        "world_config": world.raw,
        "generator_version": GENERATOR_VERSION,
        "recipe_version": RECIPE_VERSION,
        "threads": int(threads),
        "torch": torch.__version__.split("+")[0],
        "settings": params,
        "clip": {"model_name": CM.CLIP_MODEL_NAME, "config_sha256": sha256_file(CM.CLIP_CONFIG),
                 "dtype": "float16", "trained_on": "the same world without its planted correlations",
                 "box_distribution": {"log_scale_mean_sd": list(CM.BOX_LOG_SCALE),
                                      "log_aspect_sd": CM.BOX_LOG_ASPECT_SD,
                                      "shift_mean_sd_radii": list(CM.BOX_SHIFT)},
                 **clip_stats},
        "backbone": {"arch": "DemoResNet", "widths": list(BB.WIDTHS), "meta": BB.meta(world), **backbones["default"]},
        "backbone_uncorrelated": {"arch": "DemoResNet", "widths": list(BB.WIDTHS), "meta": BB.meta(world),
                                  **backbones["uncorrelated"]},
        "files": {f: sha256_file(out / f) for f in files},
        "sizes": {f: (out / f).stat().st_size for f in files},
    }
    seconds["total"] = round(time.time() - t0, 1)
    # measured, so not reproducible: the only part of the manifest that differs between two builds.
    # cpu_seconds / threads is what the wall time would be on that many quiet cores.
    manifest[TIMING_KEY] = {"seconds": seconds, "cpu_seconds": round(time.process_time() - cpu0, 1),
                            "threads": int(threads), "cpus": os.cpu_count(),
                            "load_average_at_end": [round(x, 1) for x in os.getloadavg()]}
    manifest["recipe_sha256"] = recipe_hash(manifest_recipe(manifest))
    atomic_write_bytes(out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    log(f"[demo build] wrote {', '.join(files)} and {MANIFEST_FILE} to {out} in {seconds['total']:.0f}s")
    return manifest
