"""Build the demo world's models: ``python -m falcon_core.demo build --seed N``.

Renders training scenes (seed stream "train", separate from the probe set's), trains the demo
CLIP and the backbone on the CPU, measures them on held-out scenes (stream "heldout") and writes,
each atomically (temporary file + rename):

- ``demo_clip.pt``: the CLIP state dict (float16), for ``falcon-demo-clip``;
- ``demo_backbone.pt``: the backbone state dict (float32), ``DemoResNet`` with head ``fc``;
- ``demo_manifest.json`` (last): seed, world name and hash, generator version, every training
  setting, the metrics, and the sha256 of both weight files.

Deterministic: fixed seeds per stream, ``torch.use_deterministic_algorithms(True)`` and a fixed
thread count (``--threads``, default 2, recorded in the manifest: a different thread count may
change float reductions and so the bytes). Same command, same machine type -> same files.
"""

from __future__ import annotations

import copy
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
MANIFEST_FILE = "demo_manifest.json"
DEFAULT_SEED = 0

FULL = dict(train_scenes=6000, eval_scenes=1000, clip_steps=900, clip_batch=128, clip_lr=2e-3,
            clip_crop_share=0.65, backbone_steps=1200, backbone_batch=96, backbone_lr=6e-3, aux_weight=0.1)
TINY = dict(train_scenes=48, eval_scenes=24, clip_steps=3, clip_batch=16, clip_lr=2e-3,
            clip_crop_share=0.65, backbone_steps=3, backbone_batch=16, backbone_lr=6e-3, aux_weight=0.1)


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
    """A tiny world derived from the default one: 3 shapes, 2 values of everything else."""
    raw = copy.deepcopy(load_world(DEFAULT_WORLD).raw)
    keep = {"shape": 3, "color": 2, "pattern": 2, "size": 2, "background": 2}
    for a, k in keep.items():
        raw["attributes"][a] = dict(list(raw["attributes"][a].items())[:k])
    raw["name"] = "shapes-tiny"
    raw["correlations"] = [
        r for r in raw.get("correlations", [])
        if all(v in raw["attributes"][a] for part in ("if", "then") for a, v in r[part].items())]
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


def build(seed: int = DEFAULT_SEED, world: World | str | Path | None = None, out: str | Path = ASSETS_DIR,
          tiny: bool = False, threads: int = 2, log: Callable[[str], None] | None = None,
          **overrides: Any) -> dict[str, Any]:
    """Train both models and write them with the manifest into ``out``; returns the manifest."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    params = dict(TINY if tiny else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise TypeError(f"unknown build settings: {sorted(unknown)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    if not isinstance(world, World):
        world = tiny_world() if (tiny and world is None) else load_world(world)
    out = Path(out)
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    t0 = time.time()

    log(f"[demo build] world {world.name} ({world.hash[:12]}), seed {seed}, out {out}")
    train_scenes = world.sample_scenes(params["train_scenes"], stream_seed(seed, "train"))
    eval_scenes = world.sample_scenes(params["eval_scenes"], stream_seed(seed, "heldout"))
    train_images = render_many(world, train_scenes)
    eval_images = render_many(world, eval_scenes)
    log(f"[demo build] rendered {len(train_scenes)} training + {len(eval_scenes)} held-out scenes "
        f"({time.time() - t0:.0f}s)")

    # ---- CLIP
    t1 = time.time()
    clip, clip_stats = CM.train_clip(world, train_scenes, train_images, params["clip_steps"],
                                     params["clip_batch"], params["clip_lr"], stream_seed(seed, "clip"), log,
                                     crop_share=params["clip_crop_share"])
    clip_path = out / CLIP_FILE
    atomic_torch_save(CM.half_state_dict(clip), clip_path)
    loaded, _, _ = CM.create(pretrained=str(clip_path))  # the float16 round trip, as users load it
    loaded.eval()
    clip_eval = CM.evaluate_clip(loaded, world, eval_scenes, eval_images, stream_seed(seed, "clip-eval"))
    clip_stats.update(clip_eval)
    clip_stats["seconds"] = None
    log(f"[demo build] CLIP trained ({time.time() - t1:.0f}s); retrieval on held-out scenes:")
    for k, v in clip_eval["retrieval"].items():
        log(f"    {k:18s} top1 {v['top1']:.3f}  top5 {v['top5']:.3f}   zero-shot {clip_eval['zero_shot'].get(k, float('nan')):.3f}")

    # ---- backbone
    t2 = time.time()
    net, bb_stats = BB.train_backbone(world, train_scenes, train_images, params["backbone_steps"],
                                      params["backbone_batch"], params["backbone_lr"], params["aux_weight"],
                                      stream_seed(seed, "backbone"), log)
    bb_path = out / BACKBONE_FILE
    atomic_torch_save({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, bb_path)
    H, logits = BB.features_and_logits(net, eval_images)
    labels = np.array([world.label(s) for s in eval_scenes])
    names, binary = attribute_matrix(eval_scenes, world)
    truths = ground_truth(H, binary, names)
    bb_stats["heldout_acc"] = round(float((logits.argmax(1) == labels).mean()), 4)
    bb_stats["heldout_clear_share"] = round(clear_share(truths), 4)
    by_attr: dict[str, int] = {}
    for t in truths:
        if t.clear:
            by_attr[t.attribute] = by_attr.get(t.attribute, 0) + 1
    bb_stats["heldout_clear_by_attribute"] = dict(sorted(by_attr.items()))
    bb_stats["heldout_clear_values"] = len({t.name for t in truths if t.clear})
    log(f"[demo build] backbone trained ({time.time() - t2:.0f}s): held-out accuracy {bb_stats['heldout_acc']:.3f}, "
        f"clear features {bb_stats['heldout_clear_share']:.2f} {bb_stats['heldout_clear_by_attribute']}")

    manifest = {
        "format": 1,
        "seed": seed,
        "world": world.name,
        "world_hash": world.hash,
        "world_config": world.raw,
        "generator_version": GENERATOR_VERSION,
        "threads": int(threads),
        "torch": torch.__version__.split("+")[0],
        "settings": params,
        "clip": {"model_name": CM.CLIP_MODEL_NAME, "config_sha256": sha256_file(CM.CLIP_CONFIG),
                 "dtype": "float16", **{k: v for k, v in clip_stats.items() if k != "seconds"}},
        "backbone": {"arch": "DemoResNet", "widths": list(BB.WIDTHS), "meta": BB.meta(world), **bb_stats},
        "files": {CLIP_FILE: sha256_file(clip_path), BACKBONE_FILE: sha256_file(bb_path)},
        "sizes": {CLIP_FILE: clip_path.stat().st_size, BACKBONE_FILE: bb_path.stat().st_size},
    }
    atomic_write_bytes(out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    log(f"[demo build] wrote {out / CLIP_FILE} ({manifest['sizes'][CLIP_FILE] / 1e6:.1f} MB), "
        f"{out / BACKBONE_FILE} ({manifest['sizes'][BACKBONE_FILE] / 1e6:.1f} MB), {out / MANIFEST_FILE} "
        f"in {time.time() - t0:.0f}s")
    return manifest
