"""Pictures for the app: GradCAM overlays (pytorch-grad-cam's), crop boxes, crops and PNG grids."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BOX_COLOUR = (255, 255, 255)
BOX_SHADOW = (0, 0, 0)
FALLBACK_COLOUR = (255, 170, 0)


def _resize_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    cam = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    if cam.shape[::-1] == tuple(size):
        return cam
    im = Image.fromarray(cam, mode="F")
    return np.clip(np.asarray(im.resize(size, Image.BILINEAR), dtype=np.float32), 0.0, 1.0)


def show_cam_on_image(img: np.ndarray, mask: np.ndarray, image_weight: float) -> np.ndarray:
    """pytorch-grad-cam's ``show_cam_on_image(img, mask, use_rgb=True, image_weight)``, the same
    operations on the same OpenCV colormap (tests/test_app_latency_pieces.py checks the pixels
    against it). Not imported from there: ``import pytorch_grad_cam`` loads scikit-learn,
    matplotlib and more, several seconds of the app's first page (issue 9)."""
    import cv2

    heatmap = cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET)
    heatmap = np.float32(cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)) / 255
    cam = (1 - image_weight) * heatmap + image_weight * img
    cam = cam / np.max(cam)
    return np.uint8(255 * cam)


def overlay(image: Image.Image, cam: np.ndarray | None, alpha: float = 0.45) -> Image.Image:
    """The image with the CAM on top as a jet heatmap, as pytorch-grad-cam draws it
    (:func:`show_cam_on_image`; ``alpha``: the heatmap's weight). The image itself when there is
    no CAM."""
    image = image.convert("RGB")
    if cam is None:
        return image.copy()
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    mixed = show_cam_on_image(rgb, _resize_cam(cam, image.size), image_weight=1.0 - alpha)
    return Image.fromarray(mixed)


def draw_box(image: Image.Image, box: Sequence[int] | None, fallback: bool = False,
             width: int | None = None) -> Image.Image:
    """A copy of ``image`` with the crop box (x0, y0, x1 exclusive, y1 exclusive) drawn."""
    out = image.convert("RGB").copy()
    if not box:
        return out
    x0, y0, x1, y1 = (int(v) for v in box)
    w = width or max(2, round(min(out.size) / 80))
    draw = ImageDraw.Draw(out)
    colour = FALLBACK_COLOUR if fallback else BOX_COLOUR
    draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=BOX_SHADOW, width=w + 2)
    draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=w)
    return out


def crop(image: Image.Image, box: Sequence[int] | None) -> Image.Image:
    if not box:
        return image.convert("RGB").copy()
    x0, y0, x1, y1 = (int(v) for v in box)
    W, H = image.size
    x0, y0 = max(0, min(x0, W - 1)), max(0, min(y0, H - 1))
    x1, y1 = max(x0 + 1, min(x1, W)), max(y0 + 1, min(y1, H))
    return image.convert("RGB").crop((x0, y0, x1, y1))


def annotated(image: Image.Image, cam: np.ndarray | None, box: Sequence[int] | None,
              fallback: bool = False, alpha: float = 0.45) -> Image.Image:
    """CAM overlay + crop box: what a highly activating image shows in the explorer."""
    return draw_box(overlay(image, cam, alpha), box, fallback)


def fit(image: Image.Image, size: int) -> Image.Image:
    """Resized so that its longer side is ``size`` (aspect kept)."""
    w, h = image.size
    s = size / max(w, h)
    return image.convert("RGB").resize((max(1, round(w * s)), max(1, round(h * s))),
                                       Image.BILINEAR)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def grid(images: Sequence[Image.Image], labels: Sequence[str] | None = None, cols: int = 6,
         cell: int = 160, title: str | None = None, pad: int = 6) -> Image.Image:
    """One PNG-ready picture of ``images`` in a grid, with a label under each (export)."""
    n = len(images)
    cols = max(1, min(cols, n or 1))
    rows = (n + cols - 1) // cols
    label_h = 18 if labels else 0
    title_h = 26 if title else 0
    W = pad + cols * (cell + pad)
    H = title_h + pad + max(rows, 1) * (cell + label_h + pad)
    out = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((pad, 6), title, fill=(0, 0, 0), font=_font(14))
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        x = pad + c * (cell + pad)
        y = title_h + pad + r * (cell + label_h + pad)
        thumb = fit(im, cell)
        out.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        if labels and k < len(labels):
            text = str(labels[k])
            max_chars = max(4, cell // 7)
            if len(text) > max_chars:
                text = text[: max_chars - 1] + "…"
            draw.text((x, y + cell + 2), text, fill=(40, 40, 40), font=_font(11))
    if n == 0:
        draw.text((pad, title_h + pad), "(no images)", fill=(120, 120, 120), font=_font(12))
    return out


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def placeholder(size: int = 128, text: str = "unreadable") -> Image.Image:
    """Shown in place of an image that cannot be loaded."""
    im = Image.new("RGB", (size, size), (235, 235, 235))
    ImageDraw.Draw(im).text((8, size // 2 - 6), text, fill=(120, 120, 120), font=_font(12))
    return im
