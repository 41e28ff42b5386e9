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


def make_torchvision_checkpoint(path: Path, arch: str = "resnet18", seed: int = 0,
                                num_classes: int = 1000, prefix: str = "") -> Path:
    """A random-weight torchvision state dict (``seed`` picks the weights; ``num_classes`` the
    size of the ``fc`` head)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    return path


def make_tiny_world(base: Path, n_per_kind: int = 4) -> dict:
    """The tiny world of the pipeline tests: an image folder of coloured shapes, a caption file,
    a random ResNet-18 checkpoint and a tiny open_clip config + random checkpoint."""
    base.mkdir(parents=True, exist_ok=True)
    images = make_image_folder(base / "images", n_per_kind=n_per_kind)
    captions = make_captions(base / "captions.txt")
    config, clip_ckpt = make_tiny_clip(base / "clip")
    backbone = make_resnet18_checkpoint(base / "resnet18.pth")
    return {"base": base, "images": images, "captions": captions, "clip_config": config,
            "clip_ckpt": clip_ckpt, "backbone": backbone}


def tiny_config(world: dict, **changes):
    """``WorkspaceConfig`` of :func:`make_tiny_world` (``changes`` override its fields)."""
    from falcon_core.workspace import WorkspaceConfig

    fields = dict(backbone="resnet18", weights=str(world["backbone"]),
                  clip=str(world["clip_config"]), clip_pretrained=str(world["clip_ckpt"]),
                  probe=str(world["images"]), vocabulary=str(world["captions"]))
    fields.update({k: (str(v) if isinstance(v, Path) else v) for k, v in changes.items()})
    return WorkspaceConfig(**fields)


def cache_snapshot(root: Path) -> dict[str, int]:
    """Every file under a cache folder (relative path -> size)."""
    root = Path(root)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*")
            if p.is_file()}


def make_tiny_cnn(seed: int = 0, width: int = 32, num_classes: int = 2):
    """A two-block CNN with a ResNet-like layout (``layer1``, ``layer2``, ``avgpool``, ``fc``):
    cheap enough to run on hundreds of images in a test."""
    import torch
    from torch import nn

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
            self.layer2 = nn.Sequential(nn.Conv2d(16, width, 3, stride=2, padding=1), nn.ReLU())
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.avgpool(self.layer2(self.layer1(x))), 1))

    torch.manual_seed(seed)
    return TinyCNN().eval()


def tiny_falcon(base: Path, settings):
    """A Falcon over :func:`make_tiny_world` made in ``base``, with ``settings``."""
    from falcon_core.pipeline import Falcon

    world = make_tiny_world(base)
    return Falcon.from_config(tiny_config(world), settings=settings,
                              cache_dir=str(world["base"] / "cache"))


# ---- damaged cache files (the cache's checksum trailer is the last 32 bytes) --------------------

def npy_header_len(path) -> int:
    """Bytes of a .npy file's header (magic, version, header dict)."""
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def truncate_file(path, keep: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def garbage_after_header(path, trailer: int = 32) -> None:
    """Same size, the .npy header (or the first bytes of a JSON) and the checksum trailer intact;
    only the data in between is random bytes."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    start = npy_header_len(path) if path.suffix == ".npy" else 2
    n = len(data) - trailer - start
    data[start:start + n] = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
