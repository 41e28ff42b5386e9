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


# ---- the margin: the CAM's resolution (one cell of the CAM layer's grid) -----------------------

def test_margin_widens_the_box_by_pixels_floor_and_ceil():
    cam = np.zeros((16, 20))  # H 16, W 20
    cam[5:9, 6:11] = 1.0      # the paper's box: x 6..10, y 5..8 -> (6, 5, 11, 9)
    assert crop_box(cam, 0.6).as_tuple() == (6, 5, 11, 9)
    assert crop_box(cam, 0.6, 0).as_tuple() == (6, 5, 11, 9)
    # 2.5 px: starts floored (3.5 -> 3, 2.5 -> 2), ends ceiled (13.5 -> 14, 11.5 -> 12)
    assert crop_box(cam, 0.6, 2.5) == CropBox(3, 2, 14, 12, False)
    # (x, y) margins apart: 1 px across, 3 px down
    assert crop_box(cam, 0.6, (1, 3)).as_tuple() == (5, 2, 12, 12)
    # clipped to the image: 6-8 < 0, 5-8 < 0, 11+8 = 19 <= 20, 9+8 = 17 > 16
    assert crop_box(cam, 0.6, 8).as_tuple() == (0, 0, 19, 16)


def test_margin_leaves_a_fallback_whole():
    assert crop_box(np.zeros((5, 7)), 0.6, 3) == CropBox(0, 0, 7, 5, True)


def test_cell_size_is_image_over_grid_per_axis():
    from falcon_core.stages.crops import cell_size

    assert cell_size(64, (8, 8)) == (8.0, 8.0)
    assert cell_size(224, (7, 7)) == (32.0, 32.0)
    assert cell_size((60, 40), (5, 6)) == (10.0, 8.0)  # (width / columns, height / rows)
    with pytest.raises(FalconError):
        cell_size(64, (0, 8))


def _patch_backbone(kernel):
    """A backbone whose CAM layer is one strided convolution: a 64 px input on a grid of
    64 / kernel cells (rows, columns)."""
    import torch
    from torch import nn

    from falcon_core.models.backbones import Backbone

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, kernel, stride=kernel), nn.ReLU())
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))

    return Backbone.from_module(Net(), "patch-net", input_size=64, mean=(0, 0, 0),
                                std=(1, 1, 1), cam_layer="features")


@pytest.mark.parametrize("kernel, grid", [((8, 8), (8, 8)), ((8, 16), (8, 4)),
                                          ((16, 16), (4, 4))])
def test_cam_grid_is_the_cam_layers_output_grid(kernel, grid):
    from falcon_core.stages.gradcam import cam_grid

    assert cam_grid(_patch_backbone(kernel)) == grid


def test_the_explainers_boxes_widen_by_cells_of_the_grid():
    """An 8 x 4 grid (rows x columns) on 64 px: a cell is 16 px wide and 8 px high. The CAM is
    high on rows 24..39 and columns 16..31, so the paper's box is (16, 24, 32, 40); one cell of
    margin: x 16 - 16 = 0 .. 32 + 16 = 48, y 24 - 8 = 16 .. 40 + 8 = 48; half a cell: 8 px
    across, 4 px down."""
    from types import SimpleNamespace

    from falcon_core.explainer_stages import ImageStages

    ex = SimpleNamespace(backbone=_patch_backbone((8, 16)))
    cam = np.zeros((64, 64), dtype=np.float32)
    cam[24:40, 16:32] = 1.0
    cams = np.stack([cam, np.zeros_like(cam)])
    boxes = ImageStages._boxes(ex, cams, 0.6, 0.0)
    assert [b.as_tuple() for b in boxes] == [(16, 24, 32, 40), (0, 0, 64, 64)]
    assert boxes[1].fallback
    assert [b.as_tuple() for b in ImageStages._boxes(ex, cams, 0.6, 1.0)] == \
        [(0, 16, 48, 48), (0, 0, 64, 64)]
    assert ImageStages._boxes(ex, cams, 0.6, 0.5)[0].as_tuple() == (8, 20, 40, 44)
    # three cells: clipped to the image
    assert ImageStages._boxes(ex, cams, 0.6, 3.0)[0].as_tuple() == (0, 0, 64, 64)
