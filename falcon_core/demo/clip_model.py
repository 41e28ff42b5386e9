"""The demo CLIP: open_clip's own CLIP class with a small registered config, trained on the world.

The architecture is ``assets/falcon-demo-clip.json`` (registered with
``open_clip.add_model_config``; model name ``falcon-demo-clip``): a ModifiedResNet image tower
(64 px) and a text transformer that uses open_clip's real tokenizer (the 49,408-token BPE
vocabulary). It is trained contrastively (open_clip's ``ClipLoss``) the way a real CLIP is: on
data broader than the probe set, so it does not inherit the backbone's spurious correlations.

- **An uncorrelated world.** Its training scenes come from :meth:`World.uncorrelated`: every
  attribute drawn independently (no planted correlation), objects alone and in pairs.
- **Crops at the scales GradCAM produces.** Measured on the demo probe set (issue 7: the 128
  features' top-20 images, CAM of the 64-px backbone = 8x8 upsampled, threshold 0.6, largest
  region): relative to the object it covers most, a Stage 3 box has a side of
  ``exp(N(-0.12, 0.28))`` times the object's diameter (5 %..95 %: 0.58..1.49), a log aspect
  ratio of spread 0.25, and a centre shifted by ``N(0.15, 0.34)`` object radii on each axis
  (towards the drop shadow); 2 % of the boxes hold both objects of a pair, 1 % no object.
  :func:`gradcam_like_box` draws from that distribution; the training mix adds whole scenes,
  boxes with a margin, pair boxes and background boxes (:data:`MIX`).
- Crops are made with Stage 3's own :func:`falcon_core.stages.crops.crop_image` (box, then resized
  to a square of the CLIP's input size), exactly as FALCON makes them.

The checkpoint is a plain state dict stored in float16 (size budget); it loads with
``open_clip.create_model_and_transforms("falcon-demo-clip", pretrained=path)``, the same factory
call as for a real CLIP. Every metric of the build is measured after that float16 round trip
(:func:`evaluate_clip`).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..stages.crops import CropBox, crop_image
from . import captions as C
from .world import ASSETS_DIR, World

CLIP_MODEL_NAME = "falcon-demo-clip"
CLIP_CONFIG = ASSETS_DIR / f"{CLIP_MODEL_NAME}.json"
_registered = False

# The measured Stage 3 box distribution (see the module doc), in object radii.
BOX_LOG_SCALE = (-0.12, 0.28)
BOX_LOG_ASPECT_SD = 0.25
BOX_SHIFT = (0.15, 0.34)

MIX: dict[str, float] = {"scene": 0.35, "gradcam": 0.40, "margin": 0.12, "pair": 0.08, "background": 0.05}
"""Shares of the training pairs: whole scene + scene caption; GradCAM-like box around one object
+ its caption; a box with a margin + its caption; a box around both objects of a pair + a caption
of both; a box with no object + a caption of the background."""


VISION_TOWER = "falcon_demo_resnet"
VISION_WIDTHS = (16, 32, 64, 128)


def falcon_demo_resnet(pretrained: bool = False, **kwargs):
    """The demo CLIP's image tower, a timm ``ResNet`` shaped like the demo backbone: a stem of three
    3x3 convolutions (the first with stride 2) and no max-pool, one BasicBlock per stage (so a 64-px crop keeps a 32x32 map in the
    first stage and 8x8 at the end). open_clip's own ModifiedResNet pools 64 px down to 16x16 in its
    stem and 2x2 at the end; measured on GradCAM-like crops, it learned shapes about twice as
    slowly (supervised: 0.46 vs 0.81 accuracy after 300 steps of 256 crops)."""
    from timm.models.resnet import BasicBlock, ResNet
    from torch import nn

    if pretrained:
        raise ValueError(f"{VISION_TOWER} has no pretrained weights")
    allowed = {"num_classes", "global_pool", "in_chans", "drop_rate", "drop_path_rate"}
    model = ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=VISION_WIDTHS, stem_width=VISION_WIDTHS[0] // 2,
                   stem_type="deep", output_stride=16, **{k: v for k, v in kwargs.items() if k in allowed})
    model.maxpool = nn.Identity()
    model.pretrained_cfg = model.default_cfg = {"architecture": VISION_TOWER, "input_size": (3, 64, 64)}
    return model


def register() -> str:
    """Register the demo CLIP config (and its image tower, with timm) with open_clip (once) and
    return its model name."""
    global _registered
    import open_clip
    import timm
    from timm.models import register_model

    if not timm.is_model(VISION_TOWER):
        register_model(falcon_demo_resnet)
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
# boxes and training pairs
# --------------------------------------------------------------------------------------------


def _clip_box(cx: float, cy: float, hw: float, hh: float, size: int) -> CropBox:
    hw, hh = max(hw, 1.5), max(hh, 1.5)
    x0, y0 = max(0, int(round(cx - hw))), max(0, int(round(cy - hh)))
    x1, y1 = min(size, int(round(cx + hw))), min(size, int(round(cy + hh)))
    if x1 - x0 < 3:
        x0, x1 = (max(0, x1 - 3), x1) if x1 >= 3 else (0, 3)
    if y1 - y0 < 3:
        y0, y1 = (max(0, y1 - 3), y1) if y1 >= 3 else (0, 3)
    return CropBox(x0, y0, x1, y1)


def box_around(obj: dict[str, Any], size: int, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0),
               aspect: float = 1.0) -> CropBox:
    """A box around an object: side ``scale`` x its diameter (``aspect`` = width / height), centre
    shifted by ``shift`` radii."""
    r = obj["r"] * size
    cx, cy = obj["cx"] * size + shift[0] * r, obj["cy"] * size + shift[1] * r
    a = math.sqrt(aspect)
    return _clip_box(cx, cy, scale * r * a, scale * r / a, size)


def gradcam_like_box(obj: dict[str, Any], size: int, rng: np.random.Generator) -> CropBox:
    """A box drawn from the measured distribution of Stage 3 boxes around an object (often tighter
    than the object: GradCAM boxes cut it)."""
    scale = math.exp(rng.normal(*BOX_LOG_SCALE))
    aspect = math.exp(rng.normal(0.0, BOX_LOG_ASPECT_SD))
    shift = (float(rng.normal(*BOX_SHIFT)), float(rng.normal(*BOX_SHIFT)))
    return box_around(obj, size, scale, shift, aspect)


TIGHT = dict(scale=math.exp(BOX_LOG_SCALE[0]), shift=(BOX_SHIFT[0], BOX_SHIFT[0]))
"""The median Stage 3 box (0.89 x the object's diameter, shifted 0.15 radii): "tight"."""
MARGIN = dict(scale=1.35, shift=(0.0, 0.0))
"""A box with a 35 % margin around the object: "margin"."""


def margin_box(obj: dict[str, Any], size: int, rng: np.random.Generator) -> CropBox:
    return box_around(obj, size, float(rng.uniform(1.05, 1.8)), tuple(rng.normal(0.0, 0.15, 2)),
                      math.exp(rng.normal(0.0, 0.15)))


def pair_box(scene: dict[str, Any], size: int, rng: np.random.Generator) -> CropBox:
    """A box around both objects (with a small random margin)."""
    xs = [o["cx"] - o["r"] for o in scene["objects"]] + [o["cx"] + o["r"] for o in scene["objects"]]
    ys = [o["cy"] - o["r"] for o in scene["objects"]] + [o["cy"] + o["r"] for o in scene["objects"]]
    m = float(rng.uniform(0.0, 0.06))
    x0, x1, y0, y1 = (min(xs) - m) * size, (max(xs) + m) * size, (min(ys) - m) * size, (max(ys) + m) * size
    return _clip_box((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, size)


def background_box(scene: dict[str, Any], size: int, rng: np.random.Generator) -> CropBox | None:
    """A box (10..40 % of the image) that touches no object, or None when none is found."""
    for _ in range(20):
        side = float(rng.uniform(0.3, 0.65)) * size
        x0, y0 = rng.uniform(0, size - side, 2)
        b = CropBox(int(x0), int(y0), int(x0 + side), int(y0 + side))
        if all(b.x1 <= (o["cx"] - o["r"]) * size or b.x0 >= (o["cx"] + o["r"]) * size
               or b.y1 <= (o["cy"] - o["r"]) * size or b.y0 >= (o["cy"] + o["r"]) * size
               for o in scene["objects"]):
            return b
    return None


def crop(image: np.ndarray, box: CropBox, size: int = 64) -> Image.Image:
    """Stage 3's crop: the box, resized to a ``size`` square (bicubic)."""
    return crop_image(Image.fromarray(np.ascontiguousarray(image)), box, size)


HARD_NEGATIVES: dict[str, float] = {"shape": 0.45, "pattern": 0.2, "size": 0.15, "background": 0.12, "color": 0.08}
"""Which attribute a hard-negative caption changes (shares). A hard negative is the pair's own
caption, word for word, with one attribute value replaced by a value absent from the scene
(NegCLIP: Yuksekgonul et al., "When and why vision-language models behave like bags-of-words",
ICLR 2023): in-batch negatives alone teach the easy attributes (colour, background) long before
the shape, which is what FALCON needs named most."""


CONFUSION_SHARE = 0.5
"""With confusion-weighted hard negatives (:func:`confusion_weights`), the share of the replacement
value's probability that follows the model's current confusions; the rest is uniform."""


def _changed(world: World, scene: dict, k: int | None, rng: np.random.Generator,
             confusion: dict[str, dict[str, dict[str, float]]] | None = None) -> tuple[dict, str, str] | None:
    """(a copy of ``scene`` with one attribute of object ``k`` (or the background) set to a value
    absent from the scene, the attribute, the new value); None when no such value exists. With
    ``confusion`` (``{attr: {true value: {value: share}}}``) the new value is drawn
    :data:`CONFUSION_SHARE` by those shares (the values the model now confuses with the true one),
    the rest uniformly."""
    attrs = ["background"] if k is None else list(HARD_NEGATIVES)
    w = np.asarray([HARD_NEGATIVES[a] for a in attrs], float)
    attr = attrs[int(rng.choice(len(attrs), p=w / w.sum()))]
    present = {scene["background"]} if attr == "background" else {o[attr] for o in scene["objects"]}
    free = [v for v in world.values(attr) if v not in present]
    if not free:
        return None
    table = (confusion or {}).get(attr, {}).get(scene["objects"][k][attr]) if attr != "background" else None
    if table:
        w = np.asarray([table.get(v, 0.0) for v in free], float)
        p = np.full(len(free), 1.0 / len(free))
        if w.sum() > 0:
            p = (1 - CONFUSION_SHARE) * p + CONFUSION_SHARE * w / w.sum()
        new = free[int(rng.choice(len(free), p=p / p.sum()))]
    else:
        new = free[int(rng.integers(len(free)))]
    out = {**scene, "objects": [dict(o) for o in scene["objects"]]}
    if attr == "background":
        out["background"] = new
    else:
        out["objects"][k][attr] = new
    return out, attr, new


def sample_pair(world: World, scene: dict, image: np.ndarray, rng: np.random.Generator,
                mix: dict[str, float] = MIX, size: int = 64, hard_negative: float = 0.0,
                confusion: dict | None = None) -> tuple[Image.Image, str, str | None, str]:
    """One (image, caption, hard-negative caption or None, kind) training pair from a rendered
    scene. With probability ``hard_negative`` the pair gets a hard-negative caption."""
    kinds = list(mix)
    w = np.asarray([mix[k] for k in kinds], float)
    kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
    S = image.shape[0]
    objs = scene["objects"]
    if kind == "pair" and len(objs) < 2:
        kind = "gradcam"
    box = None
    if kind == "background":
        box = background_box(scene, S, rng)
        if box is None:
            kind = "gradcam"
    k: int | None = None
    if kind == "background":
        def make(sc, r):
            return C.background_caption(world, sc, r)
    elif kind == "scene":
        k = int(rng.integers(len(objs)))

        def make(sc, r):
            return C.scene_caption(world, sc, r)
    elif kind == "pair":
        k = int(rng.integers(2))
        box = pair_box(scene, S, rng)

        def make(sc, r):
            return C.pair_caption(world, sc, r)
    else:
        k = int(rng.integers(len(objs)))
        box = gradcam_like_box(objs[k], S, rng) if kind == "gradcam" else margin_box(objs[k], S, rng)
        obj_index = k

        def make(sc, r):
            return C.object_caption(world, sc, obj_index, r)
    if box is None:
        im = Image.fromarray(np.ascontiguousarray(image))
        im = im if S == size else im.resize((size, size), Image.BICUBIC)
    else:
        im = crop(image, box, size)
    seed = int(rng.integers(2**62))
    text = make(scene, np.random.default_rng(seed))
    negative = None
    if hard_negative > 0 and rng.random() < hard_negative:
        change = _changed(world, scene, k, rng, confusion)
        if change is not None:
            other, attr, new = change
            negative = make(other, np.random.default_rng(seed))  # same draws: only the value differs
            if new not in mentions(world, negative).get(attr, ()):  # it must say something false
                negative = None
    return im, text, negative, kind


def sample_pairs(world: World, scenes: list[dict], images: np.ndarray, n: int, rng: np.random.Generator,
                 mix: dict[str, float] = MIX, size: int = 64, hard_negative: float = 0.0,
                 confusion: dict | None = None) -> tuple[list[Image.Image], list[str], list[str | None]]:
    """``n`` (PIL image, caption, hard negative) triples drawn from random scenes."""
    ims, texts, negs = [], [], []
    for _ in range(n):
        i = int(rng.integers(len(scenes)))
        im, text, neg, _ = sample_pair(world, scenes[i], images[i], rng, mix, size, hard_negative, confusion)
        ims.append(im)
        texts.append(text)
        negs.append(neg)
    return ims, texts, negs


def images_to_batch(ims: Sequence[Image.Image], pp) -> torch.Tensor:
    """``torch.stack([pp(im) for im in ims])``, made for the whole batch at once when every image is
    already an RGB square of the CLIP's input size (every training crop is) and ``pp`` is open_clip's
    Resize / CenterCrop / ToTensor / Normalize: resize and crop are then the identity and the rest
    are the same float32 operations on the same numbers, so the tensor is bit for bit the same.
    Anything else goes through ``pp`` image by image."""
    from torchvision import transforms as T

    steps = list(getattr(pp, "transforms", []))
    norm = next((t for t in steps if isinstance(t, T.Normalize)), None)
    sizes = [t.size for t in steps if isinstance(t, (T.Resize, T.CenterCrop))]
    side = {int(s if isinstance(s, int) else s[0]) for s in sizes} | {int(s[1]) for s in sizes
                                                                       if not isinstance(s, int) and len(s) > 1}
    known = all(isinstance(t, (T.Resize, T.CenterCrop, T.Normalize)) or type(t).__name__ in
                ("MaybeConvertMode", "MaybeToTensor", "ToTensor") for t in steps)
    if (not ims or norm is None or not known or len(side) != 1 or norm.inplace
            or any(im.mode != "RGB" or im.size != (next(iter(side)),) * 2 for im in ims)):
        return torch.stack([pp(im) for im in ims])
    x = torch.from_numpy(np.stack([np.asarray(im) for im in ims])).permute(0, 3, 1, 2).contiguous()
    x = x.to(torch.float32).div(255)
    mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def encode_text_bucketed(model, tokens: torch.Tensor, buckets: int = 1) -> torch.Tensor:
    """``model.encode_text(tokens)`` (not normalised), the captions sorted by length and cut into
    ``buckets`` groups, each run only up to its own longest caption
    (:func:`falcon_core.models.clip.encode_text_trimmed`, issue 9's exact trim: causal mask, so
    the positions after a caption's end never reach its embedding); rows in the order given.
    Differentiable: training runs its text tower through it."""
    from ..models.clip import encode_text_trimmed, text_lengths

    n = tokens.shape[0]
    if buckets <= 1 or n < 2 * buckets:
        return encode_text_trimmed(model, tokens)
    order = torch.argsort(text_lengths(model, tokens), stable=True)
    parts = [encode_text_trimmed(model, tokens[idx]) for idx in torch.tensor_split(order, buckets)]
    return torch.cat(parts)[torch.argsort(order)]


CONFUSION_ATTRIBUTES = ("shape", "pattern", "size")


@torch.no_grad()
def confusion_weights(model, pp, tok, world: World, scenes: list[dict], images: np.ndarray, n: int = 128,
                      seed: int = 0, attributes: Sequence[str] = CONFUSION_ATTRIBUTES
                      ) -> dict[str, dict[str, dict[str, float]]]:
    """How the model now confuses the values of each attribute, on ``n`` GradCAM-like crops of the
    main object of fixed training scenes: for each crop, its caption (:func:`.captions.object_caption`,
    the same draws) with the attribute set to each value in turn; the softmax over those captions
    at the model's logit scale, averaged over the crops whose true value is v, gives
    ``{attr: {v: {u: share}}}`` (u != v). Run with the model in eval mode (batch-norm statistics
    untouched); the crops and captions depend only on ``seed``."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    S, size = images.shape[1], _image_size(model)
    idx = rng.choice(len(scenes), min(n, len(scenes)), replace=False)
    crops = [crop(images[i], gradcam_like_box(scenes[i]["objects"][0], S, rng), size) for i in idx]
    seeds = rng.integers(2**62, size=len(idx))
    B = model.encode_image(images_to_batch(crops, pp), normalize=True)
    scale = model.logit_scale.exp()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for attr in attributes:
        values = world.values(attr)
        caps = []
        for i, sd in zip(idx, seeds):
            for u in values:
                sc = {**scenes[i], "objects": [dict(o) for o in scenes[i]["objects"]]}
                sc["objects"][0][attr] = u
                caps.append(C.object_caption(world, sc, 0, np.random.default_rng(int(sd))))
        T = torch.nn.functional.normalize(encode_text_bucketed(model, tok(caps), 2), dim=-1)
        T = T.view(len(idx), len(values), -1)
        P = torch.softmax(scale * torch.einsum("nd,nvd->nv", B, T), dim=1).numpy()
        truth = np.array([values.index(scenes[i]["objects"][0][attr]) for i in idx])
        out[attr] = {}
        for vi, v in enumerate(values):
            rows = P[truth == vi]
            if len(rows):
                mean = rows.mean(0)
                out[attr][v] = {u: round(float(mean[ui]), 6) for ui, u in enumerate(values) if ui != vi}
    model.train(was_training)
    return out


def _param_groups(named_params, wd: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in named_params:
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name or "bn" in name or "ln" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def contrastive_loss(img_f: torch.Tensor, txt_f: torch.Tensor, neg_f: torch.Tensor, scale: torch.Tensor
                     ) -> torch.Tensor:
    """CLIP's symmetric InfoNCE; the image->text side also ranks the hard negatives ``neg_f``
    (NegCLIP). With no hard negatives it equals open_clip's ``ClipLoss``."""
    labels = torch.arange(img_f.shape[0])
    per_image = scale * img_f @ torch.cat([txt_f, neg_f]).T
    per_text = scale * txt_f @ img_f.T
    return 0.5 * (torch.nn.functional.cross_entropy(per_image, labels)
                  + torch.nn.functional.cross_entropy(per_text, labels))


def _image_size(model) -> int:
    size = model.visual.image_size
    return int(size if isinstance(size, int) else size[0])


def train_clip(world: World, scenes: list[dict], images: np.ndarray, steps: int, batch: int = 256,
               lr: float = 2e-3, seed: int = 0, log: Callable[[str], None] = print,
               mix: dict[str, float] | None = None, hard_negative: float = 1.0, visual_lr: float | None = None,
               on_step: Callable[[int, Any], None] | None = None, text_buckets: int = 2,
               fused: bool = True, confusion_every: int = 0, channels_last: bool = True) -> tuple[Any, dict]:
    """Train the demo CLIP from scratch on ``scenes`` (drawn from the uncorrelated world);
    returns (model in eval mode, stats). ``visual_lr``: the image tower's peak learning rate
    (default ``lr``); ``on_step(step, model)`` is called after every step. ``confusion_every``:
    every that many steps, measure the model's confusions (:func:`confusion_weights`) and draw
    hard negatives' replacement values by them (0: uniformly, as before).

    How a step is computed (none of it changes what is learned beyond float rounding; measured by
    ``python -m benchmarks.clip_step``): the batch tensor is made at once
    (:func:`images_to_batch`), the text tower runs on ``text_buckets`` length-sorted groups cut to
    their longest caption (:func:`encode_text_bucketed`; captions are 4..21 tokens of a 32-token
    context), AdamW runs ``fused`` (one kernel over each parameter; the text tower's
    49,408-row token embedding is most of the parameters) and the image tower runs
    ``channels_last`` (oneDNN's faster convolutions on the CPU; the checkpoint is stored contiguous)."""
    mix = dict(mix or MIX)
    visual_lr = lr if visual_lr is None else visual_lr
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, _, pp = create()
    size = _image_size(model)
    tok = tokenizer()
    visual = {id(p) for p in model.visual.parameters()}
    named = list(model.named_parameters())
    groups = [{**g, "lr": visual_lr} for g in _param_groups([(n, p) for n, p in named if id(p) in visual], 0.05)]
    groups += [{**g, "lr": lr} for g in _param_groups([(n, p) for n, p in named if id(p) not in visual], 0.05)]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=bool(fused))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    if channels_last:
        model.visual.to(memory_format=torch.channels_last)
    model.train()
    losses = []
    t_start = time.time()
    confusion = None
    for step in range(steps):
        if confusion_every and step and step % confusion_every == 0:
            confusion = confusion_weights(model, pp, tok, world, scenes, images, seed=seed)
        ims, texts, negs = sample_pairs(world, scenes, images, batch, rng, mix, size, hard_negative, confusion)
        negs = [t for t in negs if t is not None]
        x = images_to_batch(ims, pp)
        img_f = model.encode_image(x.contiguous(memory_format=torch.channels_last) if channels_last else x,
                                   normalize=True)
        all_t = torch.nn.functional.normalize(encode_text_bucketed(model, tok(texts + negs), text_buckets), dim=-1)
        loss = contrastive_loss(img_f, all_t[:batch], all_t[batch:], model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % max(1, steps // 20) == 0 or step == steps - 1:
            log(f"  clip step {step + 1}/{steps}  loss {np.mean(losses[-50:]):.3f}  ({time.time() - t_start:.0f}s)")
        if on_step is not None:
            on_step(step + 1, model)
    model.eval()
    if channels_last:
        model.visual.to(memory_format=torch.contiguous_format)
    return model, {"steps": steps, "batch": batch, "lr": lr, "visual_lr": visual_lr, "mix": mix,
                   "hard_negative": hard_negative, "text_buckets": int(text_buckets), "fused_adamw": bool(fused), "channels_last": bool(channels_last),
                   **({"confusion_every": int(confusion_every), "confusion_share": CONFUSION_SHARE,
                       "last_confusion": confusion} if confusion_every else {}),
                   "hard_negative_attributes": dict(HARD_NEGATIVES), "train_scenes": len(scenes),
                   "final_loss": round(float(np.mean(losses[-50:])), 4)}


def half_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors in float16 (what the checkpoint stores)."""
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().clone()
            for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+")


_OWNERS: dict[str, dict[str, tuple[str, str]]] = {}
_OWNERS_BY_ID: dict[int, tuple[World, dict[str, tuple[str, str]]]] = {}


def mentions(world: World, text: str) -> dict[str, set[str]]:
    """Which values of which attributes a caption names (by the config's words)."""
    seen = _OWNERS_BY_ID.get(id(world))
    if seen is not None and seen[0] is world:  # World.hash hashes the config's JSON on every call
        owner = seen[1]
    else:
        owner = _OWNERS.get(world.hash)
        if owner is None:
            owner = _OWNERS[world.hash] = {w: (a, v) for a in world.attributes for v in world.attributes[a]
                                           for w in world.words(a, v)}
        _OWNERS_BY_ID[id(world)] = (world, owner)
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
    return torch.cat(out) if out else torch.zeros(0, 1)


@torch.no_grad()
def encode_texts(model, tok, texts: list[str], bs: int = 512) -> torch.Tensor:
    return torch.cat([model.encode_text(tok(texts[i:i + bs]), normalize=True) for i in range(0, len(texts), bs)])


def _present(scene: dict, attr: str) -> set[str]:
    return {scene["background"]} if attr == "background" else {o[attr] for o in scene["objects"]}


def retrieval_top1(B: torch.Tensor, A: torch.Tensor, ment: list[dict[str, set[str]]], attr: str,
                   truths: Sequence[set[str]]) -> float:
    """Share of images whose best caption *among the captions that name ``attr``* names exactly the
    true value(s) of ``attr`` (``truths[q]``: one value for a crop of one object; for a whole
    scene, any non-empty subset of the values present counts)."""
    cand = np.array([i for i, m in enumerate(ment) if attr in m])
    if len(cand) == 0 or len(B) == 0:
        return float("nan")
    best = (B @ A[cand].T).argmax(1).numpy()
    ok = [ment[cand[j]][attr] <= truths[q] and (len(truths[q]) > 1 or ment[cand[j]][attr] == truths[q])
          for q, j in enumerate(best)]
    return float(np.mean(ok))


def named_when_absent(B: torch.Tensor, A: torch.Tensor, ment: list[dict[str, set[str]]], world: World,
                      scenes: Sequence[dict], k: int = 5) -> dict[str, Any]:
    """As Stage 4 works: each image's top-``k`` captions from the whole vocabulary; for each shape s
    and background b, over the images on b with no object of shape s, the share whose top-``k``
    captions name s. Returns ``{"rates": {s: {b: rate}}, "counts": {s: {b: n}}, "max": ...,
    "worst": "s on b"}``."""
    top = torch.topk(B @ A.T, k, dim=1).indices.numpy()
    shapes, bgs = world.values("shape"), world.values("background")
    named = np.zeros((len(scenes), len(shapes)), bool)
    for q, row in enumerate(top):
        for j in row:
            for v in ment[j].get("shape", ()):
                named[q, shapes.index(v)] = True
    rates: dict[str, dict[str, float | None]] = {}
    counts: dict[str, dict[str, int]] = {}
    worst, worst_rate = None, -1.0
    for si, s in enumerate(shapes):
        rates[s], counts[s] = {}, {}
        for b in bgs:
            sel = [q for q, sc in enumerate(scenes)
                   if sc["background"] == b and all(o["shape"] != s for o in sc["objects"])]
            counts[s][b] = len(sel)
            if not sel:
                rates[s][b] = None
                continue
            r = float(named[sel, si].mean())
            rates[s][b] = round(r, 4)
            if r > worst_rate:
                worst, worst_rate = f"{s} on {b}", r
    return {"k": k, "max": round(worst_rate, 4), "worst": worst, "rates": rates, "counts": counts}


@torch.no_grad()
def evaluate_clip(model, world: World, scenes: list[dict], images: np.ndarray, vocabulary: list[str],
                  seed: int = 0) -> dict:
    """The demo CLIP measured on held-out scenes against the demo vocabulary (the captions Stage 4
    ranks), after whatever round trip ``model`` went through.

    - ``crop_top1[kind][attr]``: crops around the main object (``gradcam``: a box drawn from the
      measured Stage 3 distribution; ``tight``: the median Stage 3 box; ``margin``: a 35 % margin),
      top-1 caption among those naming ``attr`` names exactly the object's value;
    - ``scene_top1``: whole scenes, the background and the shapes (best caption names only
      shapes present);
    - ``named_when_absent``: see :func:`named_when_absent`, for whole scenes (what Eq. 2 encodes)
      and for GradCAM-like crops (what Eq. 1 encodes)."""
    rng = np.random.default_rng(seed)
    _, _, pp = create()
    tok = tokenizer()
    S = images.shape[1]
    size = _image_size(model)
    A = encode_texts(model, tok, vocabulary)
    ment = [mentions(world, t) for t in vocabulary]
    objs = [sc["objects"][0] for sc in scenes]
    boxes = {"gradcam": [gradcam_like_box(o, S, rng) for o in objs],
             "tight": [box_around(o, S, **TIGHT) for o in objs],
             "margin": [box_around(o, S, **MARGIN) for o in objs]}
    out: dict[str, Any] = {"vocabulary_captions": len(vocabulary), "images": len(scenes), "crop_top1": {}}
    B_crops = {}
    for kind, bxs in boxes.items():
        B = encode_images(model, pp, [crop(images[i], b, size) for i, b in enumerate(bxs)])
        B_crops[kind] = B
        out["crop_top1"][kind] = {a: round(retrieval_top1(B, A, ment, a, [{o[a]} for o in objs]), 4)
                                  for a in ("shape", "color", "pattern", "size")}
    wholes = [Image.fromarray(np.ascontiguousarray(images[i])) for i in range(len(scenes))]
    Bw = encode_images(model, pp, wholes)
    out["scene_top1"] = {a: round(retrieval_top1(Bw, A, ment, a, [_present(sc, a) for sc in scenes]), 4)
                         for a in ("background", "shape")}
    out["named_when_absent"] = {"scene": named_when_absent(Bw, A, ment, world, scenes),
                                "gradcam_crop": named_when_absent(B_crops["gradcam"], A, ment, world, scenes)}
    return out


def summary(ev: dict) -> dict[str, float]:
    """The headline figures of :func:`evaluate_clip` (one line each in the build log)."""
    return {**{f"crop:{a}": v for a, v in ev["crop_top1"]["gradcam"].items()},
            "tight:shape": ev["crop_top1"]["tight"]["shape"], "margin:shape": ev["crop_top1"]["margin"]["shape"],
            "scene:background": ev["scene_top1"]["background"], "scene:shape": ev["scene_top1"]["shape"],
            "absent_max:scene": ev["named_when_absent"]["scene"]["max"],
            "absent_max:crop": ev["named_when_absent"]["gradcam_crop"]["max"]}
