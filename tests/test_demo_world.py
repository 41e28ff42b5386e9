"""The demo world's generator, captions, config validation and ground truth."""

import copy
import json

import numpy as np
import pytest

from falcon_core.demo import captions as C
from falcon_core.demo.ground_truth import attribute_matrix, auc_table, ground_truth
from falcon_core.demo.world import ALT_WORLD, DEFAULT_WORLD, World, WorldConfigError, load_world


@pytest.fixture(scope="module")
def world():
    return load_world()


def test_same_seed_same_scene_and_pixels(world):
    a = world.sample_scenes(5, seed=11)
    b = world.sample_scenes(5, seed=11)
    assert a == b
    for sa, sb in zip(a, b):
        ia, ib = world.render(sa), world.render(sb)
        assert ia.dtype == np.uint8 and ia.shape == (world.image_size, world.image_size, 3)
        assert np.array_equal(ia, ib)
    # the scene dict alone determines the pixels (JSON round trip)
    s = json.loads(json.dumps(a[0]))
    assert np.array_equal(world.render(s), world.render(a[0]))


def test_different_seeds_differ(world):
    a, b = world.sample_scenes(5, seed=1), world.sample_scenes(5, seed=2)
    assert a != b
    assert not np.array_equal(world.render(a[0]), world.render(b[0]))


def test_render_any_size(world):
    s = world.sample_scenes(1, seed=3)[0]
    assert world.render(s, 96).shape == (96, 96, 3)


def test_scenes_use_the_config_values_and_correlations(world):
    scenes = world.sample_scenes(3000, seed=5)
    for s in scenes[:200]:
        assert s["background"] in world.values("background")
        assert 1 <= len(s["objects"]) <= 2
        for o in s["objects"]:
            for a in ("shape", "color", "pattern", "size"):
                assert o[a] in world.values(a)
            assert 0 < o["cx"] - o["r"] and o["cx"] + o["r"] < 1
    # planted: stars mostly on grass, far above the base rate
    stars = [s for s in scenes if s["objects"][0]["shape"] == "star"]
    others = [s for s in scenes if s["objects"][0]["shape"] not in ("star", "heart")]
    p_star = np.mean([s["background"] == "grass" for s in stars])
    p_other = np.mean([s["background"] == "grass" for s in others])
    assert p_star > 0.7 and p_other < 0.25
    assert any(len(s["objects"]) == 2 for s in scenes)


def test_both_shipped_worlds_load():
    for p in (DEFAULT_WORLD, ALT_WORLD):
        w = load_world(p)
        assert len(w.class_names) >= 4
        assert w.hash == load_world(p).hash


def _raw():
    return copy.deepcopy(load_world().raw)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("attributes"), "missing key 'attributes'"),
    (lambda d: d["attributes"].pop("color"), "must have exactly"),
    (lambda d: d["attributes"]["shape"]["star"].update(draw="blob"), "'draw' must be one of"),
    (lambda d: d["attributes"]["color"]["red"].update(rgb=[300, 0, 0]), "'rgb' must be"),
    (lambda d: d["attributes"]["color"]["blue"]["words"].append("red"), "names both"),
    (lambda d: d["attributes"]["background"]["grass"]["phrases"].append("green grass"), "not among its words"),
    (lambda d: d["correlations"].append({"if": {"shape": "blob"}, "then": {"background": "grass"}, "p": 0.5}),
     "not an attribute value"),
    (lambda d: d.update(image_size=8), "image_size"),
])
def test_bad_config_gives_a_clear_error(mutate, message, tmp_path):
    d = _raw()
    mutate(d)
    with pytest.raises(WorldConfigError, match=message):
        World.from_dict(d)
    p = tmp_path / "w.json"
    p.write_text(json.dumps(d))
    with pytest.raises(WorldConfigError) as e:
        load_world(p)
    assert str(p) in str(e.value)


def test_not_json_and_missing_file(tmp_path):
    p = tmp_path / "w.json"
    p.write_text("{ nope")
    with pytest.raises(WorldConfigError, match="not valid JSON"):
        load_world(p)
    with pytest.raises(WorldConfigError, match="not found"):
        load_world(tmp_path / "missing.json")


def test_captions_name_the_scene(world):
    rng = np.random.default_rng(0)
    owner = {w: (a, v) for a in world.attributes for v in world.attributes[a] for w in world.words(a, v)}
    for s in world.sample_scenes(200, seed=8):
        present = {("background", s["background"])}
        for o in s["objects"]:
            present |= {(a, o[a]) for a in ("shape", "color", "pattern", "size")}
        for text in C.scene_captions(world, s, rng, 3) + [C.object_caption(world, s, 0, rng)]:
            named = [owner[t] for t in text.lower().replace(",", " ").replace(".", " ").split() if t in owner]
            assert named, text
            # every attribute word in a caption is true of the scene
            assert all(n in present for n in named), (text, s)
    # the main object's shape is named by (almost) every caption
    texts = [(C.scene_caption(world, s, rng), s) for s in world.sample_scenes(300, seed=9)]
    rate = np.mean([any(w in t.lower().split() for w in world.words("shape", s["objects"][0]["shape"]))
                    or "plus sign" in t.lower() for t, s in texts])
    assert rate > 0.85


def test_captions_vary(world):
    rng = np.random.default_rng(1)
    s = world.sample_scenes(1, seed=4)[0]
    assert len(set(C.scene_captions(world, s, rng, 20))) >= 10


def test_vocabulary_distinct_with_distractors(world):
    probe = world.sample_scenes(500, seed=1)
    v = C.vocabulary(world, probe, seed=2, target=3000)
    assert len(v) == len(set(v)) >= 3000
    assert v == C.vocabulary(world, probe, seed=2, target=3000)


def test_attribute_matrix(world):
    scenes = [
        {"seed": 0, "background": "grass", "objects": [{"shape": "star", "color": "red", "pattern": "plain", "size": "large"}]},
        {"seed": 1, "background": "sand", "objects": [{"shape": "circle", "color": "red", "pattern": "dotted", "size": "small"},
                                                    {"shape": "star", "color": "blue", "pattern": "plain", "size": "small"}]},
    ]
    names, M = attribute_matrix(scenes, world)
    row = dict(zip(names, M[1]))
    assert row["shape=star"] == 1 and row["shape=circle"] == 1 and row["color=blue"] == 1
    assert row["background=grass"] == 0 and row["shape=square"] == 0
    names2, M2 = attribute_matrix(scenes)
    assert "shape=square" not in names2 and M2.sum() == M.sum()


def test_ground_truth_on_a_hand_made_table():
    # 6 images, 2 attribute values; feature 0 tracks "shape=star" perfectly, feature 1 is high
    # on "background=grass" but for one mistake, feature 2 is anti-correlated with "shape=star"
    # (low on stars: its best positive AUC is for grass), feature 3 is constant.
    names = ["shape=star", "background=grass"]
    binary = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [0, 1], [0, 0]])
    H = np.array([
        [5.0, 0.9, 0.0, 1.0],
        [4.0, 0.1, 0.1, 1.0],
        [6.0, 0.8, 0.2, 1.0],
        [0.5, 0.3, 3.0, 1.0],
        [0.2, 0.2, 2.0, 1.0],
        [0.1, 0.4, 4.0, 1.0],
    ])
    # by hand: feature 1 vs grass, positives {0.9, 0.8, 0.2}, negatives {0.1, 0.3, 0.4}:
    # pairs won 3 + 3 + 1 = 7 of 9 -> AUC 7/9; vs star, positives {.9,.1,.8} negatives {.3,.2,.4}: 6/9
    table = auc_table(H, binary)
    assert table[0, 0] == pytest.approx(1.0)
    assert table[1, 1] == pytest.approx(7 / 9)
    assert table[1, 0] == pytest.approx(6 / 9)
    assert table[2, 0] == pytest.approx(0.0)  # anti-correlated: not flipped
    # feature 2 vs grass: positives {0.0, 0.2, 2.0}, negatives {0.1, 3.0, 4.0}: 1 + 0 + 1 = 2 of 9
    assert table[2, 1] == pytest.approx(2 / 9)
    truths = ground_truth(H, binary, names, threshold=0.85)
    assert [(t.attribute, t.value, t.clear) for t in truths[:2]] == [("shape", "star", True), ("background", "grass", False)]
    assert truths[1].auc == pytest.approx(7 / 9)
    assert truths[2].value == "grass" and truths[2].auc == pytest.approx(2 / 9) and not truths[2].clear
    assert truths[3].auc == pytest.approx(0.5) and not truths[3].clear
    assert ground_truth(H, binary, names, threshold=0.75)[1].clear


def test_ground_truth_from_scenes(world):
    scenes = world.sample_scenes(300, seed=3)
    names, M = attribute_matrix(scenes, world)
    star = M[:, names.index("shape=star")].astype(float)
    H = np.stack([star + 0.01 * np.arange(300) / 300, np.zeros(300)], 1)
    t = ground_truth(H, scenes)
    assert (t[0].attribute, t[0].value, t[0].clear) == ("shape", "star", True)
    assert not t[1].clear


FILLERS = ("lying", "resting", "placed", "sitting", "against", "front", "over", "seen", "photo", "close-up",
           "picture")


def _rates(texts):
    toks = [set(t.lower().replace(".", "").replace(",", "").split()) for t in texts]
    return {f: float(np.mean([f in t for t in toks])) for f in FILLERS}


def test_object_and_scene_captions_share_fillers_at_the_same_rates(world):
    # Issue 7: object captions said "lying on" twice as often as scene captions, so crops matched
    # "lying" captions and "lie" became the top word of 34 of 128 features.
    rng = np.random.default_rng(3)
    scenes = world.uncorrelated().sample_scenes(6000, seed=12)
    objs = _rates([C.object_caption(world, s, 0, rng) for s in scenes])
    whole = _rates([C.scene_caption(world, s, rng) for s in scenes])
    pairs = _rates([C.pair_caption(world, s, rng) for s in scenes if len(s["objects"]) == 2])
    for f in FILLERS:
        # 6000 captions each: a standard error of about 0.004 on a 5 % rate
        assert abs(objs[f] - whole[f]) < 0.015, (f, objs[f], whole[f])
        assert abs(pairs[f] - whole[f]) < 0.025, (f, pairs[f], whole[f])
        assert whole[f] < 0.07, (f, whole[f])  # no filler is in more than 7 % of captions


def test_the_vocabulary_carries_no_dominant_filler(world):
    vocab = C.vocabulary(world, world.sample_scenes(500, seed=1), seed=2, target=6000)
    rates = _rates(vocab)
    assert max(rates.values()) < 0.07, rates


def test_captions_of_a_changed_value_differ_only_in_its_words(world):
    # the CLIP's hard negatives: same generator state, one value changed -> only its words change
    scenes = world.uncorrelated().sample_scenes(300, seed=4)
    for s in scenes:
        t = {**s, "objects": [dict(o) for o in s["objects"]]}
        t["objects"][0]["shape"] = "heart" if s["objects"][0]["shape"] != "heart" else "star"
        t["objects"][0]["pattern"] = "plain"
        for make in (lambda sc, r: C.scene_caption(world, sc, r), lambda sc, r: C.object_caption(world, sc, 0, r)):
            a, b = make(s, np.random.default_rng(7)), make(t, np.random.default_rng(7))
            named = lambda x: {w for w in x.lower().replace(".", "").replace(",", "").split()}
            shape_pattern = {w for v in ("shape", "pattern") for k in world.values(v) for w in world.words(v, k)}
            shape_pattern |= {"with", "covered", "in", "decorated", "a", "an", "one", "sign"}
            assert named(a) - shape_pattern == named(b) - shape_pattern, (a, b)


def test_uncorrelated_world_draws_attributes_independently(world):
    u = world.uncorrelated()
    assert u.correlations == [] and u.attributes == world.attributes and world.correlations
    scenes = u.sample_scenes(4000, seed=6)
    stars = [s for s in scenes if s["objects"][0]["shape"] == "star"]
    assert abs(np.mean([s["background"] == "grass" for s in stars]) - 1 / 6) < 0.06


@pytest.mark.parametrize("path", [DEFAULT_WORLD, ALT_WORLD])
def test_planted_correlations_of_every_kind(path):
    # issue 7: correlations of several kinds (shape -> background, shape -> pattern, shape -> colour,
    # colour -> background) in both worlds, each visible in sampled scenes
    w = load_world(path)
    kinds = set()
    scenes = w.sample_scenes(6000, seed=8)
    get = lambda s, a: s["background"] if a == "background" else s["objects"][0][a]
    for rule in w.correlations:
        (a1, v1), = rule["if"].items()
        (a2, v2), = rule["then"].items()
        kinds.add((a1, a2))
        src = [s for s in scenes if get(s, a1) == v1]
        rest = [s for s in scenes if get(s, a1) != v1]
        assert np.mean([get(s, a2) == v2 for s in src]) > 0.7
        assert np.mean([get(s, a2) == v2 for s in rest]) < 0.3
    assert kinds >= {("shape", "background"), ("shape", "pattern"), ("shape", "color"), ("color", "background")}
