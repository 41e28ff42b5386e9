"""The wiring between the stages, on a world whose answers are known by construction.

A hand-built backbone sees colour: its CAM layer is a 1x1 convolution with a ReLU whose channel 0
is ``R - G - B`` (positive on the images' shades of red, 0 on grey or blue), channel 1 ``B - R - G`` (blue) and channel 2
``G - R - B`` (green); the explained features are their spatial means. So the GradCAM map of
feature 0 is exactly the red square of an image, that of feature 1 the blue square, and that of
the group {0, 1} both squares: the crop boxes are known before anything runs. A recording CLIP
stand-in keeps every image it is given, so the tests can check the exact pixels it embedded:

- the crops of T (the box of the explained feature, resized to CLIP's input size), not the whole
  view, not another feature's box, not the crop at its own size;
- the counterfactual images L whole (they are not cropped, and T and L are not swapped).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from falcon_core.cache import DiskCache
from falcon_core.data.probes import ArrayProbe
from falcon_core.data.vocabulary import CaptionFile
from falcon_core.models.backbones import Backbone
from falcon_core.pipeline import Falcon
from falcon_core.settings import FalconSettings
from falcon_core.stages.crops import crop_box
from falcon_core.stages.gradcam import compute_cams

SIZE = 32  # images, the backbone's input and its view: 32 x 32 (the view is the image itself)
CLIP_SIZE = 20  # the stand-in CLIP's input size: neither 32 nor the size of any square
GREY, BLUE, GREEN = (128, 128, 128), (0, 0, 255), (0, 255, 0)


class ColourNet(nn.Module):
    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0],
                                            [-1.0, 1.0, -1.0]])[:, :, None, None])
            conv.bias.zero_()
        self.features = nn.Sequential(conv, nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def colour_backbone() -> Backbone:
    return Backbone.from_module(ColourNet(), "colour-net", input_size=SIZE, mean=(0, 0, 0),
                                std=(1, 1, 1), cam_layer="features")


# (red box, blue box, green box) per image, boxes (x0, y0, x1, y1) with x1, y1 exclusive.
# Images 0-7 hold a red and a blue square (sometimes the red one is larger, sometimes the blue);
# images 8-11 a blue and a green square but no red: counterfactual candidates for feature 0.
SCENES = [
    ((2, 3, 12, 13), (18, 18, 24, 24), None),
    ((20, 2, 29, 11), (3, 16, 15, 28), None),
    ((5, 20, 13, 28), (19, 4, 26, 11), None),
    ((16, 16, 30, 30), (2, 2, 9, 9), None),
    ((1, 1, 7, 7), (10, 10, 22, 22), None),
    ((22, 22, 31, 31), (4, 5, 13, 14), None),
    ((3, 18, 14, 29), (18, 3, 23, 8), None),
    ((12, 1, 20, 9), (6, 14, 20, 28), None),
    (None, (4, 4, 12, 12), (18, 18, 28, 28)),
    (None, (20, 3, 28, 11), (2, 18, 10, 26)),
    (None, (3, 20, 10, 27), (16, 4, 26, 14)),
    (None, (17, 17, 25, 25), (3, 3, 12, 12)),
]


def red(i: int) -> tuple[int, int, int]:
    """Image i's shade of red, so that T's crops differ: R - G - B = 255 - 5 i, at least 220
    (0.86 of the blue squares' B - R - G = 255)."""
    return (255, 5 * i, 0)


def scene_images() -> np.ndarray:
    out = np.empty((len(SCENES), SIZE, SIZE, 3), dtype=np.uint8)
    out[:] = GREY
    for i, (img, boxes) in enumerate(zip(out, SCENES)):
        for box, colour in zip(boxes, (red(i), BLUE, GREEN)):
            if box is not None:
                x0, y0, x1, y1 = box
                img[y0:y1, x0:x1] = colour
    return out


def area(box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


class RecordingClip:
    """A CLIP stand-in: embeds an image by its mean colour and keeps every image it is given."""

    image_size = CLIP_SIZE
    embed_dim = 8
    fingerprint = "recording-clip-v1"

    def __init__(self):
        self.image_calls: list[list[np.ndarray]] = []

    def encode_images(self, images, **kw) -> np.ndarray:
        arrays = [np.asarray(im.convert("RGB")).copy() for im in images]
        self.image_calls.append(arrays)
        out = np.zeros((len(arrays), self.embed_dim), dtype=np.float32)
        for row, a in zip(out, arrays):
            row[:3] = a.reshape(-1, 3).mean(axis=0) / 255.0
            row[3:] = 0.1
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_texts(self, texts, **kw) -> np.ndarray:
        out = np.zeros((len(texts), self.embed_dim), dtype=np.float32)
        for row, t in zip(out, texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            row[:] = np.random.default_rng(seed).normal(size=self.embed_dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def describe(self) -> dict:
        return {"name": "recording clip", "image_size": self.image_size,
                "embed_dim": self.embed_dim, "fingerprint": self.fingerprint}


@pytest.fixture(scope="module")
def images():
    return scene_images()


@pytest.fixture(scope="module")
def backbone():
    return colour_backbone()


@pytest.fixture()
def world(tmp_path, images, backbone):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red square\na blue square\na green square\ngrey background\n",
                        encoding="utf-8")
    clip = RecordingClip()
    # the paper's box (no margin): the boxes are the squares themselves
    falcon = Falcon(backbone, clip, ArrayProbe(images), CaptionFile(captions),
                    settings=FalconSettings(high_rule="topk", top_k=4, beta=0.0,
                                            cam_box_margin=0.0),
                    cache=DiskCache(tmp_path / "cache"))
    return falcon, clip


def test_the_world_is_what_the_tests_assume(world, images):
    falcon, _ = world
    H, valid = falcon.representations()
    assert valid.all()
    for i, (red, blue, green) in enumerate(SCENES):
        # the view is the image itself, so boxes in the image are boxes in the view
        assert np.array_equal(np.asarray(falcon.view(i)), images[i])
        # each feature is the share of the image its colour covers (times the red's R - G - B)
        redness = (255 - 5 * i) / 255
        expected = [area(b) / SIZE ** 2 * w if b else 0.0
                    for b, w in ((red, redness), (blue, 1.0), (green, 1.0))]
        np.testing.assert_allclose(H[i], expected, atol=1e-6)


# ---- Stage 3: GradCAM targets the explained feature(s) ---------------------------------------

def square_mask(box) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), dtype=bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("feature, which", [(0, 0), (1, 1)])
def test_the_cam_of_a_feature_is_its_own_square(backbone, images, feature, which):
    """Feature 0's CAM is the red square and nothing else; feature 1's the blue one."""
    cams = compute_cams(backbone, [Image.fromarray(a) for a in images[:8]], [feature])
    for cam, boxes in zip(cams, SCENES[:8]):
        inside = square_mask(boxes[which])
        assert cam[inside].min() > 0.99, "the CAM is not high over the feature's own square"
        assert cam[~inside].max() < 0.01, "the CAM is high outside the feature's own square"
        assert crop_box(cam, 0.6).as_tuple() == boxes[which]


def test_the_cam_of_a_group_is_the_sum_of_its_features(backbone, images):
    """The group {0, 1}: both squares are in the mask; the box is the larger one's, which is the
    red square on some images and the blue square on others."""
    cams = compute_cams(backbone, [Image.fromarray(a) for a in images[:8]], [0, 1])
    larger = []
    for cam, (red, blue, _) in zip(cams, SCENES[:8]):
        both = square_mask(red) | square_mask(blue)
        # red squares reach 0.86 to 1 of the blue ones: well above the 0.6 threshold
        assert cam[both].min() > 0.85, "a group's CAM must cover every feature's square"
        assert cam[~both].max() < 0.01
        big = red if area(red) > area(blue) else blue
        larger.append(big is red)
        assert crop_box(cam, 0.6).as_tuple() == big
    assert any(larger) and not all(larger)  # so neither feature alone gives every box


def test_the_explanations_boxes_and_cams_are_the_features(world):
    falcon, _ = world
    for feats, pick in (([0], lambda r, b: r), ([1], lambda r, b: b),
                        ([0, 1], lambda r, b: r if area(r) > area(b) else b)):
        exp = falcon.explain(feats)
        assert exp.high, feats
        cams = falcon.cams(feats)
        for rec in exp.high:
            red, blue, _ = SCENES[rec.index]
            assert rec.box == pick(red, blue), (feats, rec.index)
            assert not rec.box_fallback
            squares = {(0,): [red], (1,): [blue], (0, 1): [red, blue]}[tuple(feats)]
            y, x = np.unravel_index(int(np.argmax(cams[rec.index])), (SIZE, SIZE))
            assert any(square_mask(b)[y, x] for b in squares), "the CAM peaks elsewhere"


# ---- Stage 4: CLIP embeds the crops of T and the whole images of L -----------------------------

def expected_crop(images, index, box) -> np.ndarray:
    """The crop by hand: the image (= the view) cut to the box, resized to CLIP's input size."""
    return np.asarray(Image.fromarray(images[index]).crop(box)
                      .resize((CLIP_SIZE, CLIP_SIZE), Image.BICUBIC))


def unpadded(call: list, n: int) -> list:
    """The n images CLIP was given: it embeds in batches of exactly IMAGE_BATCH, the last filled
    with copies of its last image (explainer_stages.embed_images: rows independent of the batch)."""
    from falcon_core.cache_keys import IMAGE_BATCH

    assert len(call) == -(-n // IMAGE_BATCH) * IMAGE_BATCH, (len(call), n)
    assert all(np.array_equal(x, call[n - 1]) for x in call[n:]), "padding is not the last image"
    return call[:n]


def test_clip_embeds_the_crops_of_T_and_the_whole_images_of_L(world, images):
    falcon, clip = world
    exp = falcon.explain(0)
    assert [r.index for r in exp.high] and all(SCENES[r.index][0] for r in exp.high)
    assert exp.low, "the world should give feature 0 counterfactual images"
    assert not {r.index for r in exp.low} & {r.index for r in exp.high}
    # CLIP was called twice: with the crops of T, and once with every probe view, whole, in
    # order (the view embeddings: L's rows are taken from there, and the faithfulness score of
    # issue 12 reads them all), so no image is embedded whole twice
    assert len(clip.image_calls) == 2, [len(c) for c in clip.image_calls]
    t_call, views_call = clip.image_calls
    assert len(views_call) == len(images)
    assert all(np.array_equal(got, images[i]) for i, got in enumerate(views_call))
    t_call = unpadded(t_call, len(exp.high))
    for got, rec in zip(t_call, exp.high):
        assert got.shape == (CLIP_SIZE, CLIP_SIZE, 3), "T crops must be resized to CLIP's size"
        assert np.array_equal(got, expected_crop(images, rec.index, SCENES[rec.index][0])), \
            f"CLIP did not see the red square of image {rec.index}"
    views = falcon.view_embeddings()
    L = falcon.explainer._whole_embeddings([r.index for r in exp.low])
    np.testing.assert_array_equal(L, views[[r.index for r in exp.low]])


def test_clip_embeds_the_group_crop(world, images):
    falcon, clip = world
    exp = falcon.explain([1, 0])
    t_call = unpadded(clip.image_calls[0], len(exp.high))
    assert len(exp.high) >= 2
    for got, rec in zip(t_call, exp.high):
        red, blue, _ = SCENES[rec.index]
        big = red if area(red) > area(blue) else blue
        assert np.array_equal(got, expected_crop(images, rec.index, big))


def widened(box, m: int):
    """A square widened by m pixels on every side, clipped to the image (by hand)."""
    x0, y0, x1, y1 = box
    return (max(0, x0 - m), max(0, y0 - m), min(SIZE, x1 + m), min(SIZE, y1 + m))


def test_clip_embeds_the_crop_widened_by_the_margin(world, images):
    """The CAM layer is a 1x1 convolution on the 32 px image: its grid is 32 x 32, so a cell is
    one pixel and a margin of 3 cells widens every square by 3 px (clipped at the edges: image
    3's red square (16, 16, 30, 30) becomes (13, 13, 32, 32))."""
    from falcon_core.stages.gradcam import cam_grid

    falcon, clip = world
    assert cam_grid(falcon.backbone) == (SIZE, SIZE)
    exp = falcon.explain(0, falcon.settings.replace(cam_box_margin=3.0))
    assert any(max(SCENES[r.index][0][2:]) + 3 > SIZE for r in exp.high), "no box is clipped"
    t_call = unpadded(clip.image_calls[0], len(exp.high))
    for got, rec in zip(t_call, exp.high):
        box = widened(SCENES[rec.index][0], 3)
        assert rec.box == box, rec.index
        assert np.array_equal(got, expected_crop(images, rec.index, box)), \
            f"CLIP did not see the widened red square of image {rec.index}"
    # the paper's box, asked for afterwards, is not the widened crop read back from the cache
    paper = falcon.explain(0)
    assert [r.box for r in paper.high] == [SCENES[r.index][0] for r in paper.high]
    assert len(clip.image_calls) == 3  # the first T, every view (once), this T
    t_call = unpadded(clip.image_calls[2], len(paper.high))
    for got, rec in zip(t_call, paper.high):
        assert np.array_equal(got, expected_crop(images, rec.index, SCENES[rec.index][0]))


def test_captions_and_coherence_come_from_those_embeddings(world):
    """Stages 4 and 7 use the embeddings of exactly those images: each image's captions are the
    top 5 of its embedding against the captions' (cosine, by hand), and the coherence is the
    off-diagonal mean of the T crops' pairwise cosines (by hand)."""
    falcon, clip = world
    exp = falcon.explain(0)
    t_call, views_call = clip.image_calls  # the second: every view, L's rows among them
    t_call = unpadded(t_call, len(exp.high))
    l_call = [views_call[r.index] for r in exp.low]
    captions = [falcon.vocabulary.caption(i) for i in range(len(falcon.vocabulary))]
    A = clip.encode_texts(captions).astype(np.float16).astype(np.float64)  # stored as float16
    A /= np.linalg.norm(A, axis=1, keepdims=True)  # the cosine with the stored (rounded) rows

    def embed(a):
        e = np.r_[a.reshape(-1, 3).mean(axis=0) / 255.0, np.full(5, 0.1)]
        return e / np.linalg.norm(e)

    for recs, call in ((exp.high, t_call), (exp.low, l_call)):
        for rec, pixels in zip(recs, call):
            cos = A @ embed(pixels)
            best = sorted(range(len(captions)), key=lambda j: (-cos[j], j))[:4]
            assert [c.index for c in rec.captions] == best  # 4 captions: k = 5 > M = 4
            np.testing.assert_allclose([c.score for c in rec.captions], cos[best], atol=1e-5)
    B = np.array([embed(p) for p in t_call])
    n = len(B)
    S = B @ B.T
    assert exp.coherence == pytest.approx((S.sum() - np.trace(S)) / (n * (n - 1)), abs=1e-5)
