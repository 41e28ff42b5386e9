"""The demo CLIP: open_clip's own CLIP class with a small registered config, trained on the world.

The architecture is ``assets/falcon-demo-clip.json`` (registered with
``open_clip.add_model_config``; model name ``falcon-demo-clip``): a ModifiedResNet image tower
(64 px) and a text transformer that uses open_clip's real tokenizer (the 49,408-token BPE
vocabulary, context 24). It is trained contrastively (open_clip's ``ClipLoss``) on pairs drawn
from rendered training scenes:

- whole scenes with a scene caption (objects and background), and
- crops around one object with a caption of that object, made the way FALCON makes crops (a box,
  then open_clip's own preprocessing: shortest side resized to 64, centre crop), so crops of a
  single object retrieve captions naming its shape, colour and pattern, and whole scenes retrieve
  captions naming the background.

The checkpoint is a plain state dict stored in float16 (size budget); it loads with
``open_clip.create_model_and_transforms("falcon-demo-clip", pretrained=path)``, the same factory
call as for a real CLIP. Every metric of the build is measured after that float16 round trip.
"""

from __future__ import annotations

import math
import time
import re
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from . import captions as C
from .world import ASSETS_DIR, World, object_box

CLIP_MODEL_NAME = "falcon-demo-clip"
CLIP_CONFIG = ASSETS_DIR / f"{CLIP_MODEL_NAME}.json"
_registered = False


def register() -> str:
    """Register the demo CLIP config with open_clip (once) and return its model name."""
    global _registered
    import open_clip

    if not _registered or CLIP_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CLIP_CONFIG)
        _registered = True
    return CLIP_MODEL_NAME


def create(pretrained: str | None = None):
    """``open_clip.create_model_and_transforms`` for the demo CLIP: (model, train_pp, val_pp)."""
    import open_clip

    name = register()
    return open_clip.create_model_and_transforms(name, pretrained=pretrained)


def tokenizer():
    import open_clip

    return open_clip.get_tokenizer(register())


# --------------------------------------------------------------------------------------------
# training pairs
# --------------------------------------------------------------------------------------------


def random_crop_box(obj: dict[str, Any], size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box around an object like a GradCAM crop: a margin, a shifted centre, any aspect."""
    r = obj["r"] * size
    cx = obj["cx"] * size + rng.uniform(-0.25, 0.25) * r
    cy = obj["cy"] * size + rng.uniform(-0.25, 0.25) * r
    hw = r * rng.uniform(0.95, 1.8) * rng.uniform(0.85, 1.15)
    hh = r * rng.uniform(0.95, 1.8) * rng.uniform(0.85, 1.15)
    x0, y0 = max(0, int(round(cx - hw))), max(0, int(round(cy - hh)))
    x1, y1 = min(size, int(round(cx + hw))), min(size, int(round(cy + hh)))
    return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    x0, y0, x1, y1 = box
    return Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))


def sample_pairs(world: World, scenes: list[dict], images: np.ndarray, n: int, rng: np.random.Generator,
                 crop_share: float = 0.5) -> tuple[list[Image.Image], list[str]]:
    """``n`` (PIL image, caption) pairs: whole scenes and object crops."""
    ims, texts = [], []
    S = images.shape[1]
    for _ in range(n):
        i = int(rng.integers(len(scenes)))
        sc = scenes[i]
        if rng.random() < crop_share:
            k = int(rng.integers(len(sc["objects"])))
            ims.append(crop(images[i], random_crop_box(sc["objects"][k], S, rng)))
            texts.append(C.object_caption(world, sc, k, rng))
        else:
            ims.append(Image.fromarray(images[i]))
            texts.append(C.scene_caption(world, sc, rng))
    return ims, texts


def _param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name or "bn" in name or "ln" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def train_clip(world: World, scenes: list[dict], images: np.ndarray, steps: int, batch: int = 128,
               lr: float = 2e-3, seed: int = 0, log: Callable[[str], None] = print,
               crop_share: float = 0.5) -> tuple[Any, dict]:
    """Train the demo CLIP from scratch; returns (model in eval mode, stats)."""
    import open_clip

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, _, pp = create()
    tok = tokenizer()
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(_param_groups(model, 0.05), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    model.train()
    losses = []
    t_start = time.time()
    for step in range(steps):
        ims, texts = sample_pairs(world, scenes, images, batch, rng, crop_share)
        x = torch.stack([pp(im) for im in ims])
        t = tok(texts)
        img_f, txt_f, scale = model(x, t)[:3]
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"  clip step {step + 1}/{steps}  loss {np.mean(losses[-20:]):.3f}  ({time.time() - t_start:.0f}s)")
    model.eval()
    return model, {"steps": steps, "batch": batch, "lr": lr, "crop_share": crop_share, "final_loss": round(float(np.mean(losses[-20:])), 4)}


def half_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors in float16 (what the checkpoint stores)."""
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
            for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+")


def mentions(world: World, text: str) -> dict[str, set[str]]:
    """Which values of which attributes a caption names (by the config's words)."""
    owner = {w: (a, v) for a in world.attributes for v in world.attributes[a] for w in world.words(a, v)}
    out: dict[str, set[str]] = {}
    for w in _WORD.findall(text.lower()):
        if w in owner:
            a, v = owner[w]
            out.setdefault(a, set()).add(v)
    return out


@torch.no_grad()
def encode_images(model, pp, ims: list[Image.Image], bs: int = 256) -> torch.Tensor:
    out = [model.encode_image(torch.stack([pp(im) for im in ims[i:i + bs]]), normalize=True)
           for i in range(0, len(ims), bs)]
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model, tok, texts: list[str], bs: int = 512) -> torch.Tensor:
    return torch.cat([model.encode_text(tok(texts[i:i + bs]), normalize=True) for i in range(0, len(texts), bs)])


@torch.no_grad()
def evaluate_clip(model, world: World, scenes: list[dict], images: np.ndarray, seed: int = 0) -> dict:
    """Retrieval accuracy on held-out scenes, per attribute.

    ``retrieval``: a pool of distinct captions of the held-out scenes (scene and object captions);
    for each held-out image, rank the pool captions that name the attribute at all, and count the
    image right at top-1 (top-5) when the best (one of the five best) names the true value.
    Crops (a box around the main object, margin 35%) are scored on the object attributes; whole
    scenes on the background and the main object's shape.
    ``zero_shot``: accuracy of classifying each attribute by the mean text embedding of 24 random
    captions per value (crops for object attributes, whole scenes for the background)."""
    rng = np.random.default_rng(seed)
    _, _, pp = create()
    tok = tokenizer()
    S = images.shape[1]
    crops = [crop(images[i], object_box(sc["objects"][0], S, 0.35)) for i, sc in enumerate(scenes)]
    wholes = [Image.fromarray(images[i]) for i in range(len(scenes))]
    Bc, Bw = encode_images(model, pp, crops), encode_images(model, pp, wholes)
    pool: dict[str, None] = {}
    for sc in scenes:
        for _ in range(2):
            pool.setdefault(C.scene_caption(world, sc, rng), None)
            pool.setdefault(C.object_caption(world, sc, 0, rng), None)
    texts = list(pool)
    A = encode_texts(model, tok, texts)
    ment = [mentions(world, t) for t in texts]
    out: dict[str, Any] = {"pool_captions": len(texts), "images": len(scenes), "retrieval": {}, "zero_shot": {}}
    plan = [("crop", Bc, a) for a in ("shape", "color", "pattern", "size")] + \
           [("scene", Bw, "background"), ("scene", Bw, "shape")]
    for kind, B, attr in plan:
        cand = np.array([i for i, m in enumerate(ment) if attr in m])
        sims = (B @ A[cand].T).numpy()
        order = np.argsort(-sims, axis=1)[:, :5]
        top1 = top5 = 0
        for q, sc in enumerate(scenes):
            truth = sc["background"] if attr == "background" else sc["objects"][0][attr]
            hits = [truth in ment[cand[j]][attr] for j in order[q]]
            top1 += hits[0]
            top5 += any(hits)
        out["retrieval"][f"{kind}:{attr}"] = {"top1": round(top1 / len(scenes), 4), "top5": round(top5 / len(scenes), 4)}
    for kind, B, attr in [("crop", Bc, a) for a in ("shape", "color", "pattern", "size")] + [("scene", Bw, "background")]:
        vals = world.values(attr)
        protos = []
        for v in vals:
            caps = []
            for _ in range(24):
                sc = world.sample_scene(rng)
                if attr == "background":
                    sc["background"] = v
                    caps.append(C.scene_caption(world, sc, rng))
                else:
                    sc["objects"][0][attr] = v
                    caps.append(C.object_caption(world, sc, 0, rng))
            e = encode_texts(model, tok, caps).mean(0)
            protos.append(e / e.norm())
        pred = (B @ torch.stack(protos).T).argmax(1).numpy()
        truth = np.array([vals.index(sc["background"] if attr == "background" else sc["objects"][0][attr]) for sc in scenes])
        out["zero_shot"][f"{kind}:{attr}"] = round(float((pred == truth).mean()), 4)
    return out
