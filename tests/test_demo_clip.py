"""The demo CLIP's training data (GradCAM-like crops, hard negatives), its loss and the metrics of
the build, each checked against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from falcon_core.demo import clip_model as CM
from falcon_core.demo.world import load_world
from falcon_core.stages.crops import CropBox


@pytest.fixture(scope="module")
def world():
    return load_world()


def test_gradcam_like_boxes_follow_the_measured_stage3_distribution():
    # Measured on the demo probe set (issue 7): box side / object diameter 5/50/95 % quantiles
    # 0.58 / 0.88 / 1.49; centre shifted by 0.15 radii (mean) on each axis.
    rng = np.random.default_rng(0)
    S, obj = 400, {"cx": 0.5, "cy": 0.5, "r": 0.1}  # large canvas: no clipping, little rounding
    sides, dx = [], []
    for _ in range(4000):
        b = CM.gradcam_like_box(obj, S, rng)
        sides.append(math.sqrt(b.width * b.height) / (2 * obj["r"] * S))
        dx.append(((b.x0 + b.x1) / 2 - S / 2) / (obj["r"] * S))
    q5, q50, q95 = np.quantile(sides, [0.05, 0.5, 0.95])
    assert abs(q50 - 0.88) < 0.05 and abs(q5 - 0.58) < 0.06 and abs(q95 - 1.49) < 0.1
    assert abs(np.mean(dx) - 0.15) < 0.04
    assert np.mean(np.asarray(sides) < 1.0) > 0.55  # most Stage 3 boxes cut the object


def _red_disc_scene():
    return {"seed": 5, "background": "water",
            "objects": [{"shape": "circle", "color": "red", "pattern": "plain", "size": "large",
                         "cx": 0.3, "cy": 0.35, "r": 0.2, "angle": 0.0}]}


def test_training_crops_hold_the_object(world):
    sc = _red_disc_scene()
    img = world.render(sc)
    red = lambda im: np.mean((im[..., 0] > 150) & (im[..., 1] < 90) & (im[..., 2] < 90))
    rng = np.random.default_rng(1)
    crops = [np.asarray(CM.sample_pair(world, sc, img, rng, mix={"gradcam": 1.0})[0]) for _ in range(30)]
    wholes = [np.asarray(CM.sample_pair(world, sc, img, rng, mix={"scene": 1.0})[0]) for _ in range(3)]
    assert all(c.shape == (64, 64, 3) for c in crops)
    assert red(img) < 0.15 and np.mean([red(c) for c in crops]) > 0.5
    assert all(np.array_equal(w, img) for w in wholes)
    bg = [np.asarray(CM.sample_pair(world, sc, img, rng, mix={"background": 1.0})[0]) for _ in range(10)]
    assert max(red(c) for c in bg) < 0.02


def test_hard_negatives_change_one_value_to_one_absent_from_the_scene(world):
    rng = np.random.default_rng(2)
    scenes = world.uncorrelated().sample_scenes(200, seed=3)
    changed = 0
    for sc in scenes:
        _, text, neg, kind = CM.sample_pair(world, sc, np.zeros((64, 64, 3), np.uint8), rng, hard_negative=1.0)
        if neg is None:
            continue
        a, b = CM.mentions(world, text), CM.mentions(world, neg)
        diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
        assert len(diff) == 1, (text, neg)
        present = {sc["background"]} if diff[0] == "background" else {o[diff[0]] for o in sc["objects"]}
        new = b.get(diff[0], set()) - a.get(diff[0], set())
        assert new and not new & present, (text, neg)  # the negative says something false
        changed += 1
    assert changed > 120
    # off by default
    assert CM.sample_pair(world, scenes[0], np.zeros((64, 64, 3), np.uint8), rng)[2] is None


def test_contrastive_loss_by_hand_and_against_open_clip():
    import open_clip

    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    neg = torch.tensor([[0.8, 0.6]])
    s = torch.tensor(2.0)
    # by hand: image 0 vs texts (1, 0.6, 0.8) -> logits (2, 1.2, 1.6); image 1 vs (0, 0.8, 0.6) -> (0, 1.6, 1.2)
    li0 = -2 + math.log(math.exp(2) + math.exp(1.2) + math.exp(1.6))
    li1 = -1.6 + math.log(math.exp(0) + math.exp(1.6) + math.exp(1.2))
    # text 0 vs images (1, 0) -> (2, 0); text 1 vs (0.6, 0.8) -> (1.2, 1.6)
    lt0 = -2 + math.log(math.exp(2) + math.exp(0))
    lt1 = -1.6 + math.log(math.exp(1.2) + math.exp(1.6))
    expected = 0.5 * ((li0 + li1) / 2 + (lt0 + lt1) / 2)
    assert CM.contrastive_loss(img, txt, neg, s).item() == pytest.approx(expected, rel=1e-6)
    none = torch.zeros(0, 2)
    assert CM.contrastive_loss(img, txt, none, s).item() == pytest.approx(
        open_clip.ClipLoss()(img, txt, s).item(), rel=1e-6)


def test_retrieval_top1_and_named_when_absent_by_hand(world):
    # captions: 0 "a red star" 1 "a blue heart on grass" 2 "a star and a heart" 3 "grass"
    vocab = ["a red star", "a blue heart on grass", "a star and a heart", "grass"]
    ment = [CM.mentions(world, t) for t in vocab]
    A = torch.eye(4)
    # image 0 is closest to caption 2, then 0; image 1 to caption 1, then 3; image 2 to 3, then 0
    B = torch.tensor([[0.5, 0.0, 0.9, 0.0], [0.0, 0.9, 0.0, 0.5], [0.4, 0.0, 0.0, 0.9]])
    # shape, among captions naming a shape (0, 1, 2): image 0 -> 2 {star, heart}; 1 -> 1 {heart}; 2 -> 0 {star}
    assert CM.retrieval_top1(B, A, ment, "shape", [{"star"}, {"heart"}, {"star"}]) == pytest.approx(2 / 3)
    # a scene with a star and a heart may be named by both
    assert CM.retrieval_top1(B, A, ment, "shape", [{"star", "heart"}, {"heart"}, {"heart"}]) == pytest.approx(2 / 3)
    scenes = [{"background": "grass", "objects": [{"shape": "star"}]},
              {"background": "grass", "objects": [{"shape": "circle"}]},
              {"background": "brick", "objects": [{"shape": "circle"}]}]
    r = CM.named_when_absent(B, A, ment, world, scenes, k=2)
    # top-2: image 0 -> {2, 0}: star, heart; image 1 -> {1, 3}: heart; image 2 -> {3, 0}: star
    assert r["rates"]["heart"]["grass"] == pytest.approx(1.0)  # both grass scenes lack a heart, both named
    assert r["rates"]["star"]["grass"] == pytest.approx(0.0)  # scene 1 lacks a star, not named
    assert r["rates"]["star"]["brick"] == pytest.approx(1.0) and r["counts"]["star"]["brick"] == 1
    assert r["rates"]["star"]["water"] is None and r["counts"]["star"]["water"] == 0
    assert r["max"] == pytest.approx(1.0)


def test_planted_reliance_by_hand(world):
    from falcon_core.demo.backbone import planted_reliance
    from falcon_core.demo.ground_truth import FeatureTruth

    w = load_world()
    w.correlations = [{"if": {"shape": "star"}, "then": {"background": "grass"}, "p": 0.8}]
    obj = lambda s: {"shape": s, "color": "red", "pattern": "plain", "size": "small"}
    scenes = [{"background": b, "objects": [obj(s)]} for s, b in
              [("star", "grass"), ("star", "sand"), ("circle", "grass"), ("circle", "sand"), ("square", "grass"),
               ("square", "wood")]]
    # feature 0: star detector that also fires on grass; feature 1: star detector blind to grass
    H = np.array([[5, 5], [4, 4], [2, 0.1], [0.1, 0.3], [3, 0.2], [0.2, 0.1]], float)
    truths = [FeatureTruth(0, "shape", "star", 1.0, True), FeatureTruth(1, "shape", "star", 1.0, True)]
    (r,) = planted_reliance(w, H, scenes, truths)
    # star-less scenes 2..5; grass in 2 and 4. feature 0: grass (2, 3) vs other (0.1, 0.2) -> AUC 1;
    # feature 1: grass (0.1, 0.2) vs other (0.3, 0.1): 0.1 vs 0.3 lost, 0.1 vs 0.1 tie (0.5),
    # 0.2 vs 0.3 lost, 0.2 vs 0.1 won -> 1.5 / 4
    assert r["source_clear_features"] == [0, 1]
    assert r["target_auc_without_source"] == [pytest.approx(1.0), pytest.approx(0.375)]


def test_the_training_batch_tensor_is_preprocess_bit_for_bit():
    from PIL import Image

    _, _, pp = CM.create()
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(5)]
    ims[0] = Image.fromarray(np.full((64, 64, 3), (255, 0, 128), np.uint8))
    x = CM.images_to_batch(ims, pp)
    assert x.dtype == torch.float32 and x.shape == (5, 3, 64, 64)
    assert torch.equal(x, torch.stack([pp(im) for im in ims]))
    # by hand: (value / 255 - mean) / std per channel, CLIP's mean and std
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    for c, v in enumerate((255, 0, 128)):
        assert x[0, c, 7, 9].item() == pytest.approx((v / 255 - mean[c]) / std[c], abs=1e-6)
    # an image of another size (or mode) goes through the preprocessing itself: resized
    odd = ims[1:3] + [Image.fromarray(np.zeros((40, 40, 3), np.uint8)), ims[3].convert("L")]
    assert torch.equal(CM.images_to_batch(odd, pp), torch.stack([pp(im) for im in odd]))


def test_bucketed_text_tower_equals_encode_text_and_runs_shorter():
    torch.manual_seed(0)
    model, _, _ = CM.create()
    tok = CM.tokenizer()
    caps = ["a star", "a large red striped hexagon lying on the wooden floor next to a small blue circle",
            "sand", "one small dotted diamond on gravel", "a square", "a photo of a green heart on bricks",
            "water with a cross", "a tiny plain triangle"]
    tokens = tok(caps)
    seen = []
    h = model.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        full = model.encode_text(tokens)
        seen.clear()
        for buckets in (1, 2, 3):
            out = CM.encode_text_bucketed(model, tokens, buckets)
            assert torch.allclose(out, full, atol=1e-5), buckets
            assert (torch.nn.functional.normalize(out, dim=-1) @ torch.nn.functional.normalize(full, dim=-1).T
                    ).argmax(1).tolist() == list(range(len(caps)))  # rows in the order given
    finally:
        h.remove()
    longest = int(tokens.argmax(-1).max()) + 1
    assert seen[0] == longest < tokens.shape[1]  # one bucket: cut to the longest caption
    assert sorted(seen[1:3]) == seen[1:3] and seen[1] < longest and seen[2] == longest  # two: short, long
    # the gradient reaches the same parameters with the same values
    g = {}
    for name, fn in (("full", lambda: model.encode_text(tokens)), ("bucketed", lambda: CM.encode_text_bucketed(model, tokens, 2))):
        model.zero_grad()
        fn().square().sum().backward()
        g[name] = model.token_embedding.weight.grad.clone()
    assert torch.allclose(g["full"], g["bucketed"], rtol=1e-4, atol=1e-3) and g["full"].abs().sum() > 0


def test_confusion_weighted_hard_negatives_follow_the_table(world):
    scene = {"background": "grass", "objects": [{"shape": "hexagon", "color": "red", "pattern": "plain",
                                                 "size": "large", "cx": 0.5, "cy": 0.5, "r": 0.2}]}
    table = {"shape": {"hexagon": {"circle": 1.0}}}
    counts = {True: [], False: []}
    for weighted in (True, False):
        rng = np.random.default_rng(4)
        for _ in range(2000):
            out = CM._changed(world, scene, 0, rng, table if weighted else None)
            if out is not None and out[1] == "shape":
                counts[weighted].append(out[2])
    shapes = world.values("shape")
    free = len(shapes) - 1  # every shape but the scene's hexagon
    for weighted, expected in ((True, CM.CONFUSION_SHARE + (1 - CM.CONFUSION_SHARE) / free), (False, 1 / free)):
        got = counts[weighted]
        assert len(got) > 600 and "hexagon" not in got
        assert np.mean([v == "circle" for v in got]) == pytest.approx(expected, abs=0.05), weighted


def test_confusion_weights_are_shares_over_the_other_values(world):
    from falcon_core.demo.build import render_many

    torch.manual_seed(0)
    model, _, pp = CM.create()
    model.train()
    scenes = world.uncorrelated().sample_scenes(40, seed=5)
    images = render_many(world, scenes)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    conf = CM.confusion_weights(model, pp, CM.tokenizer(), world, scenes, images, n=24, seed=1)
    assert model.training  # back in training mode, batch-norm statistics untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert set(conf) == set(CM.CONFUSION_ATTRIBUTES)
    for attr, rows in conf.items():
        values = world.values(attr)
        assert rows and set(rows) <= set(values)
        for v, shares in rows.items():
            assert set(shares) == set(values) - {v}
            assert all(0 <= s <= 1 for s in shares.values()) and sum(shares.values()) < 1
    assert conf == CM.confusion_weights(model, pp, CM.tokenizer(), world, scenes, images, n=24, seed=1)
