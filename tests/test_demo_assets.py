"""The committed demo assets (assets/) behave as issue 7 requires, measured here independently of
the build's own evaluation code: the CLIP names shapes of GradCAM-like crops and does not name the
planted shapes on their correlated backgrounds when they are absent; the default backbone's
features of planted sources carry the planted targets and the uncorrelated backbone's do not."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from falcon_core.demo import build_demo_backbone_module, load_demo_clip, load_world, vocabulary_captions
from falcon_core.demo.assets import read_manifest

SEED = 987_654  # scenes no build stream uses
ABSENT_BOUND = 0.15  # the build measured at most 0.133 on any shape x background (whole scenes); the old CLIP 0.68


@pytest.fixture(scope="module")
def world():
    w = load_world()
    if read_manifest()["world_hash"] != w.hash:
        pytest.fail("assets/ were built for another world config: rebuild them "
                    "(`python -m falcon_core.demo build --seed 0`)")
    return w


@pytest.fixture(scope="module")
def clip(world):
    import open_clip

    model, _, preprocess = load_demo_clip()
    tok = open_clip.get_tokenizer("falcon-demo-clip")
    vocab = vocabulary_captions(world)
    with torch.no_grad():
        A = torch.cat([model.encode_text(tok(vocab[i:i + 1024]), normalize=True) for i in range(0, len(vocab), 1024)])
    return model, preprocess, vocab, A


def _embed(model, preprocess, images):
    with torch.no_grad():
        return model.encode_image(torch.stack([preprocess(Image.fromarray(im)) for im in images]), normalize=True)


def _words(world, attr, value):
    return set(world.words(attr, value))


def _names(world, text, attr, value):
    toks = set(text.lower().replace(",", " ").replace(".", " ").split())
    return bool(toks & _words(world, attr, value))


@pytest.mark.parametrize("shape, background", [("star", "grass"), ("heart", "brick")])
def test_clip_does_not_name_planted_shapes_that_are_absent(world, clip, shape, background):
    """The same 60 scenes without the shape, rendered on every background: the share whose top-5
    captions name the shape is no higher on the planted background than on the others (issue 7
    measured the old CLIP naming "star" in 68 % of star-less grass scenes, 18 % elsewhere)."""
    model, preprocess, vocab, A = clip
    rng = np.random.default_rng(SEED)
    u = world.uncorrelated()
    scenes = []
    while len(scenes) < 60:
        s = u.sample_scene(rng)
        if all(o["shape"] != shape for o in s["objects"]):
            scenes.append(s)
    named = {}
    for bg in world.values("background"):
        B = _embed(model, preprocess, [world.render({**s, "background": bg}) for s in scenes])
        top5 = torch.topk(B @ A.T, 5, dim=1).indices.numpy()
        named[bg] = float(np.mean([any(_names(world, vocab[j], "shape", shape) for j in row) for row in top5]))
    elsewhere = np.mean([r for bg, r in named.items() if bg != background])
    assert named[background] <= elsewhere + 0.1, named
    assert named[background] <= ABSENT_BOUND, named


def test_clip_names_the_shape_of_a_tight_crop(world, clip):
    # the median Stage 3 box: 0.88 x the object's diameter, centre shifted 0.15 radii down-right
    model, preprocess, vocab, A = clip
    shape_caps = [i for i, t in enumerate(vocab) if any(_names(world, t, "shape", v) for v in world.values("shape"))]
    rng = np.random.default_rng(SEED + 1)
    scenes = world.uncorrelated().sample_scenes(120, seed=SEED + 1)
    crops, truth = [], []
    for s in scenes:
        o, S = s["objects"][0], world.image_size
        img = world.render(s)
        r = o["r"] * S
        cx, cy, h = o["cx"] * S + 0.15 * r, o["cy"] * S + 0.15 * r, 0.88 * r
        box = (max(0, math.floor(cx - h)), max(0, math.floor(cy - h)), min(S, math.ceil(cx + h)), min(S, math.ceil(cy + h)))
        crops.append(np.asarray(Image.fromarray(img).crop(box).resize((64, 64), Image.BICUBIC)))
        truth.append(o["shape"])
    B = _embed(model, preprocess, crops)
    best = (B @ A[shape_caps].T).argmax(1).numpy()
    right = [_names(world, vocab[shape_caps[j]], "shape", t) for j, t in zip(best, truth)]
    assert np.mean(right) >= 0.8, np.mean(right)


def test_backbones_differ_in_what_the_planted_source_features_carry(world):
    """Issue 12's comparison demo: the default backbone's star/heart features fire on grass/bricks
    without a star/heart; the uncorrelated one's do not (ROC AUC over scenes without the source)."""
    from sklearn.metrics import roc_auc_score

    from falcon_core.demo.backbone import features_and_logits
    from falcon_core.demo.ground_truth import attribute_matrix, ground_truth

    scenes = world.sample_scenes(1500, seed=SEED + 2)
    images = np.stack([world.render(s) for s in scenes])
    names, binary = attribute_matrix(scenes, world)
    col = {n: j for j, n in enumerate(names)}
    reliance = {}
    for variant in ("default", "uncorrelated"):
        net, _ = build_demo_backbone_module(variant=variant)
        H, _ = features_and_logits(net, images)
        truths = ground_truth(H, binary, names)
        aucs = []
        for src, dst in [("shape=star", "background=grass"), ("shape=heart", "background=brick")]:
            rows = binary[:, col[src]] == 0
            feats = [t.feature for t in truths if t.clear and t.name == src]
            assert feats, f"{variant}: no clear {src} feature"
            aucs += [roc_auc_score(binary[rows, col[dst]], H[rows, f]) for f in feats]
        reliance[variant] = float(np.mean(aucs))
    assert reliance["default"] > reliance["uncorrelated"] + 0.05, reliance


def test_the_uncorrelated_backbone_is_a_registered_input(world):
    from falcon_core.models.backbones import create_backbone

    a, b = create_backbone("demo"), create_backbone("demo-uncorrelated")
    assert a.weights.endswith("demo_backbone.pt") and b.weights.endswith("demo_backbone_uncorrelated.pt")
    assert a.fingerprint != b.fingerprint  # nothing cached for one is shown for the other
    pa, pb = list(a.model.parameters()), list(b.model.parameters())
    assert len(pa) == len(pb) and not all(torch.equal(p, q) for p, q in zip(pa, pb))


def test_the_committed_models_were_built_with_the_current_recipe():
    """assets/ is used for the default world whatever the code's recipe says: a changed recipe
    (settings, training mix, CLIP config, ...) must come with rebuilt assets."""
    import json

    from falcon_core.demo.build import manifest_recipe, recipe

    assert manifest_recipe(read_manifest()) == json.loads(json.dumps(recipe()))
