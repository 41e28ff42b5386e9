"""Stage 3b (crops.py): crop boxes of known masks."""

import numpy as np
import pytest
from PIL import Image

from falcon_core.errors import FalconError
from falcon_core.stages.crops import CropBox, crop_box, crop_image, scale_box


def test_two_islands_larger_wins():
    cam = np.zeros((10, 12))
    cam[1:3, 1:3] = 1.0   # 4 pixels, holds the max
    cam[5:8, 6:9] = 0.8   # 9 pixels, 0.8 > 0.6 after scaling (min 0, max 1)
    b = crop_box(cam, 0.6)
    assert b == CropBox(6, 5, 9, 8, False)
    assert b.as_tuple() == (6, 5, 9, 8)  # x1, y1 exclusive
    assert (b.width, b.height, b.area) == (3, 3, 9)


def test_eight_connectivity():
    cam = np.zeros((6, 6))
    cam[0, 0] = cam[1, 1] = cam[2, 2] = 1.0  # diagonal: one region of 3 with 8-connectivity
    cam[5, 3:5] = 1.0                          # 2 pixels
    assert crop_box(cam).as_tuple() == (0, 0, 3, 3)


def test_one_pixel_island():
    cam = np.zeros((6, 8))
    cam[3, 4] = 5.0
    assert crop_box(cam) == CropBox(4, 3, 5, 4, False)


def test_empty_constant_nan_fall_back_to_whole_image():
    for cam in (np.zeros((5, 7)), np.full((5, 7), 0.9)):
        assert crop_box(cam) == CropBox(0, 0, 7, 5, True)
    cam = np.zeros((5, 7))
    cam[1, 1] = np.nan
    assert crop_box(cam) == CropBox(0, 0, 7, 5, True)


def test_threshold_edge_is_strict():
    cam = np.zeros((8, 8))
    cam[0, 0] = 1.0
    cam[4:7, 4:7] = 0.6  # exactly the threshold after scaling: (0.6-0)/(1-0) = 0.6, not in the mask
    assert crop_box(cam, 0.6).as_tuple() == (0, 0, 1, 1)
    cam[4:7, 4:7] = 0.61  # just above: the 9-pixel block wins
    assert crop_box(cam, 0.6).as_tuple() == (4, 4, 7, 7)
    # scaling: shifting and stretching the CAM does not change the box
    assert crop_box(cam * 3 + 2, 0.6).as_tuple() == (4, 4, 7, 7)


def test_tie_prefers_peak_then_first():
    cam = np.zeros((6, 6))
    cam[0, 0:2] = 0.8
    cam[4, 3:5] = [0.8, 1.0]  # same size, holds the max -> wins although second in raster order
    assert crop_box(cam).as_tuple() == (3, 4, 5, 5)
    cam[4, 4] = 0.8
    cam[2, 5] = 1.0  # a lone max pixel elsewhere; both 2-pixel islands peak at 0.8 -> the first
    assert crop_box(cam).as_tuple() == (0, 0, 2, 1)


def test_bad_cam():
    with pytest.raises(FalconError):
        crop_box(np.zeros(5))


def test_crop_image_and_scale_box():
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    img.paste((255, 0, 0), (2, 3, 12, 8))
    box = CropBox(2, 3, 12, 8, False)
    out = crop_image(img, box, 8)
    assert out.size == (8, 8)
    arr = np.asarray(out)
    assert (arr[..., 0] == 255).all() and (arr[..., 2] == 0).all()
    assert scale_box(box, (20, 10), (40, 20)) == CropBox(4, 6, 24, 16, False)
    # from a 7x7 CAM to a 224x224 view: factor 32
    assert scale_box(CropBox(1, 2, 3, 4, True), 7, 224) == CropBox(32, 64, 96, 128, True)
    # shrinking covers the original: floor the start, ceil the end
    assert scale_box(CropBox(3, 3, 5, 5, False), 10, 4) == CropBox(1, 1, 2, 2, False)
