"""Small models, images and captions that the tests make themselves (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60),
           "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")


def make_image_folder(root: Path, n_per_kind: int = 4, size: int = 64) -> Path:
    """Coloured circles and squares on grey, in class subfolders named after the shape."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for shape in SHAPES:
        (root / shape).mkdir(exist_ok=True)
        for colour, rgb in COLOURS.items():
            for k in range(n_per_kind):
                img = Image.new("RGB", (size, size), (128, 128, 128))
                d = ImageDraw.Draw(img)
                x, y = rng.integers(4, size // 3, size=2)
                w = int(rng.integers(size // 3, size // 2))
                box = (int(x), int(y), int(x) + w, int(y) + w)
                (d.ellipse if shape == "circle" else d.rectangle)(box, fill=rgb)
                img.save(root / shape / f"{colour}_{k}.png")
    return root


def make_captions(path: Path) -> Path:
    lines = []
    for colour in COLOURS:
        for shape in SHAPES:
            lines += [f"a {colour} {shape} on a grey background",
                      f"photo of a small {colour} {shape}",
                      f"the {shape} is {colour}"]
    lines += ["", "a red circle on a grey background", "dogs running\tin the park"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tiny_clip(folder: Path, name: str = "falcon-test-tiny-clip") -> tuple[Path, Path]:
    """An open_clip config file and a random-weight checkpoint for it."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_CLIP), encoding="utf-8")
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    ckpt = folder / f"{name}.pt"
    torch.save(model.state_dict(), ckpt)
    return config, ckpt


def make_resnet18_checkpoint(path: Path, prefix: str = "") -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    return path
