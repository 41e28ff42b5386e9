"""Stage 3b: the crop box of the largest connected region of a thresholded GradCAM map.

The CAM is rescaled to [0, 1] (min-max; a constant CAM becomes all zeros) and the mask is
``cam > threshold`` — strictly above, so a pixel exactly at 0.6 is not in the mask. With a
threshold below 1 (``FalconSettings`` requires ``0 <= cam_threshold < 1``) the maximum pixel
(value 1) always passes, so the mask is empty only for a constant CAM. The largest connected region
of the mask (``scipy.ndimage.label``, 8-connectivity; ties: the region holding the highest CAM
value, then the first in raster order) gives the bounding box, ``x1``/``y1`` exclusive. An empty
mask or a CAM with NaN/inf values gives the whole image with ``fallback=True`` (the authors' code
crashed there).

The margin (``margin`` in :func:`crop_box`, not in the paper: ``FalconSettings.cam_box_margin``,
in cells of the CAM layer's grid). GradCAM's map is computed on the CAM layer's grid (a ResNet-50
on 224 px: 7x7; the demo backbone on 64 px: 8x8) and upsampled to the input size, so the edge of
the thresholded region is only known to within one grid cell, ``input size / grid size`` pixels
(:func:`cell_size`). The paper's box cuts the object wherever the upsampled map falls below the
threshold inside that uncertain cell (measured on the demo world: the 0.6 box covers a median
69 % of the object; one cell of margin, 100 %). ``margin`` widens the box by that many cells on
every side (clipped to the image): the start floored, the end ceiled, so a box with a margin
always holds the box without one. 0 is the paper's box. A fallback box (the whole image) is left
as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import FalconError

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class CropBox:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    fallback: bool = False

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Min-max rescale to [0, 1]; a constant map becomes zeros."""
    cam = np.asarray(cam, dtype=np.float64)
    lo, hi = cam.min(), cam.max()
    if not hi > lo:
        return np.zeros_like(cam)
    return (cam - lo) / (hi - lo)


def cell_size(image_size, grid) -> tuple[float, float]:
    """One cell of a CAM layer's ``grid`` = (rows, columns) in pixels of an image of
    ``image_size`` (``int`` for square or ``(width, height)``, like PIL): ``(width / columns,
    height / rows)``."""
    w, h = _size(image_size)
    rows, cols = (int(g) for g in grid)
    if rows <= 0 or cols <= 0:
        raise FalconError(f"A CAM layer's grid must be positive; got {tuple(grid)}.")
    return w / cols, h / rows


def widen_box(box: CropBox, margin, image_size) -> CropBox:
    """``box`` widened by ``margin`` pixels on every side (a number, or ``(x, y)``), clipped to
    an image of ``image_size``; the start floored and the end ceiled. A fallback box is returned
    as it is."""
    mx, my = (float(margin), float(margin)) if np.isscalar(margin) else map(float, margin)
    if box.fallback or (mx <= 0 and my <= 0):
        return box
    w, h = _size(image_size)
    return CropBox(max(0, math.floor(box.x0 - mx + 1e-9)), max(0, math.floor(box.y0 - my + 1e-9)),
                   min(w, math.ceil(box.x1 + mx - 1e-9)), min(h, math.ceil(box.y1 + my - 1e-9)),
                   False)


def crop_box(cam: np.ndarray, threshold: float = 0.6, margin=0.0) -> CropBox:
    """The crop box of ``cam`` (see the module): the bounding box of the largest region of
    ``normalize_cam(cam) > threshold``, widened by ``margin`` pixels on every side (a number, or
    ``(x, y)``; :func:`widen_box`)."""
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim == 3 and cam.shape[0] == 1:
        cam = cam[0]
    if cam.ndim != 2 or cam.size == 0:
        raise FalconError(f"A CAM must be a 2-D map; got shape {cam.shape}.")
    H, W = cam.shape
    whole = CropBox(0, 0, W, H, True)
    if not np.isfinite(cam).all():
        return whole
    scaled = normalize_cam(cam)
    mask = scaled > threshold
    if not mask.any():
        return whole
    labels, n = ndimage.label(mask, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    largest = np.flatnonzero(sizes == sizes.max()) + 1
    if len(largest) > 1:
        peaks = ndimage.maximum(scaled, labels=labels, index=largest)
        best = int(largest[int(np.argmax(peaks))])  # argmax: first of equal peaks
    else:
        best = int(largest[0])
    ys, xs = np.nonzero(labels == best)
    box = CropBox(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, False)
    return widen_box(box, margin, (W, H))


def _size(s) -> tuple[int, int]:
    if isinstance(s, (int, np.integer)):
        return int(s), int(s)
    w, h = s
    return int(w), int(h)


def scale_box(box: CropBox, from_size, to_size) -> CropBox:
    """Map a box between image sizes (``int`` for square or ``(width, height)``, like PIL).

    The start is floored and the (exclusive) end ceiled, so the scaled box covers the original.
    """
    fw, fh = _size(from_size)
    tw, th = _size(to_size)
    sx, sy = tw / fw, th / fh
    x0 = max(0, math.floor(box.x0 * sx + 1e-9))
    y0 = max(0, math.floor(box.y0 * sy + 1e-9))
    x1 = min(tw, math.ceil(box.x1 * sx - 1e-9))
    y1 = min(th, math.ceil(box.y1 * sy - 1e-9))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    return CropBox(x0, y0, x1, y1, box.fallback)


def crop_image(img, box: CropBox, size: int):
    """Crop a PIL image to ``box`` (in its pixel coordinates) and resize to ``size``×``size`` (bicubic)."""
    from PIL import Image

    W, H = img.size
    x0, y0 = max(0, box.x0), max(0, box.y0)
    x1, y1 = min(W, box.x1), min(H, box.y1)
    if x1 <= x0 or y1 <= y0:
        x0, y0, x1, y1 = 0, 0, W, H
    return img.crop((x0, y0, x1, y1)).resize((int(size), int(size)), Image.BICUBIC)
