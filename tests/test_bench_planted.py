"""The planted-reliance test of the recovery benchmark (falcon_core/bench/planted.py), on a toy
world whose renders and backbone are simple enough to work the answer out by hand."""

import numpy as np
import pytest
import torch

from falcon_core.bench import planted as P


class ToyWorld:
    """Renders a scene as one flat colour: red 120 when a star is in it, green 60 on grass."""

    def values(self, attribute):
        return {"shape": ["star", "circle", "square"],
                "background": ["grass", "sand", "snow"]}[attribute]

    def render(self, scene):
        img = np.zeros((4, 4, 3), np.uint8)
        img[..., 0] = 120 if P.has_value(scene, "shape", "star") else 0
        img[..., 1] = 60 if scene["background"] == "grass" else 0
        return img


class ToyModel(torch.nn.Module):
    """Three features of the mean colour (R, G in [0, 1]): f0 = R, f1 = R + G, f2 = R + G / 4."""

    def forward(self, x):
        r, g = x[:, 0].mean(dim=(1, 2)), x[:, 1].mean(dim=(1, 2))
        return torch.stack([r, r + g, r + g / 4], dim=1)


class ToyBackbone:
    device = "cpu"
    num_features = 3

    def __init__(self):
        self.feature_model = ToyModel()

    @staticmethod
    def transform(img):
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def scene(shape, background, second=None):
    objs = [{"shape": shape, "color": "red"}]
    if second:
        objs.append({"shape": second, "color": "blue"})
    return {"seed": 1, "background": background, "objects": objs}


def test_swap_value_replaces_every_occurrence_and_nothing_else():
    s = scene("star", "grass", second="star")
    out = P.swap_value(s, "shape", "star", "circle")
    assert [o["shape"] for o in out["objects"]] == ["circle", "circle"]
    assert [o["color"] for o in out["objects"]] == ["red", "blue"] and out["background"] == "grass"
    assert [o["shape"] for o in s["objects"]] == ["star", "star"]  # the original is untouched
    assert P.swap_value(s, "background", "grass", "sand")["background"] == "sand"
    assert P.swap_value(s, "background", "snow", "sand")["background"] == "grass"
    assert P.has_value(scene("circle", "sand", second="star"), "shape", "star")
    assert not P.has_value(scene("circle", "sand"), "shape", "star")


def test_reliance_by_hand():
    """Star on grass: swapping the star away costs every feature 120/255 of red; swapping grass
    away costs f0 nothing, f1 60/255 (reliance 0.5: relies) and f2 15/255 (0.125: does not).
    The star-on-sand image shows only one of the two values and is left out."""
    w, bb = ToyWorld(), ToyBackbone()
    scenes = [scene("star", "grass"), scene("star", "sand"), scene("star", "grass", second="circle")]
    R, G = 120 / 255, 60 / 255
    H = np.array([[R, R + G, R + G / 4], [R, R, R], [R, R + G, R + G / 4]], np.float32)
    got = [P.reliance_case(bb, w, scenes, H, f, [0, 1, 2], "shape=star", "background=grass")
           for f in range(3)]
    assert [g["images"] for g in got] == [2, 2, 2] and got[0]["high"] == 3
    for g in got:
        assert g["drop_true"] == pytest.approx(R, abs=1e-4)
    assert got[0]["drop_spurious"] == pytest.approx(0.0, abs=1e-4)
    assert got[1]["drop_spurious"] == pytest.approx(G, abs=1e-4)
    assert got[2]["drop_spurious"] == pytest.approx(G / 4, abs=1e-4)
    assert [g["reliance"] for g in got] == pytest.approx([0.0, 0.5, 0.125], abs=1e-3)
    assert [g["relies"] for g in got] == [False, True, False]


def test_reliance_is_unclear_without_a_working_control():
    """No top image shows both values, or swapping the truth does not lower the activation:
    the case is in neither figure (relies is None)."""
    w, bb = ToyWorld(), ToyBackbone()
    scenes = [scene("star", "sand"), scene("circle", "grass")]
    H = np.zeros((2, 3), np.float32)
    none = P.reliance_case(bb, w, scenes, H, 1, [0, 1], "shape=star", "background=grass")
    assert none["images"] == 0 and none["relies"] is None
    # roles swapped (truth grass, planted star) on f0, which sees red only: swapping its
    # "truth" away costs it nothing, so there is no control
    scenes = [scene("star", "grass")]
    H = np.array([[120 / 255, 0, 0]], np.float32)
    g = P.reliance_case(bb, w, scenes, H, 0, [0], "background=grass", "shape=star")
    assert g["drop_true"] == pytest.approx(0.0, abs=1e-4) and g["relies"] is None
