"""Bad input: each case gives a clear FalconError (the words are asserted) and leaves the cache
intact (the same files with the same sizes, no ``*.tmp``, nothing half-written); inputs that can
be used (unreadable images among good ones, odd captions, no counterfactual) work."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from falcon_core import FalconError
from falcon_core.pipeline import Falcon, NoHighImagesError
from falcon_core.settings import FalconSettings
from makers import (cache_snapshot, make_tiny_cnn, make_torchvision_checkpoint, make_tiny_world,
                    tiny_config)

# the authors' Eq. 2 (its ε and β are what these tests push to the edge); the library's default
# counterfactual rule (issue 7) has no ε
TOPK = FalconSettings(high_rule="topk", top_k=6, low_rule="global", spurious_rule="absolute")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("bad-input-world"))


@pytest.fixture(scope="module")
def falcon(world):
    """The tiny world with a warm cache (representations, text embeddings, one explanation)."""
    f = Falcon.from_config(tiny_config(world), settings=TOPK, cache_dir=str(world["base"] / "cache"))
    f.explain(5)
    return f


def no_debris(root):
    files = cache_snapshot(root)
    assert not [k for k in files if k.endswith(".tmp")], files
    assert not [k for k in files if ".parts/" in k], files


def assert_intact(root, before, allow_new=False):
    after = cache_snapshot(root)
    no_debris(root)
    if allow_new:  # new entries are fine, but nothing that was there changed or disappeared
        assert {k: v for k, v in after.items() if k in before} == before
    else:
        assert after == before


def build(world, falcon, settings=TOPK, **changes):
    return Falcon.from_config(tiny_config(world, **changes), settings=settings,
                              cache_dir=str(falcon.cache.root))


def raises(fn, *words, cls=FalconError):
    with pytest.raises(cls) as e:
        fn()
    text = str(e.value)
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in {text!r}"
    assert "Traceback" not in text
    return e.value


# ------------------------------------------------------------------------------- probe sets

def test_a_folder_with_no_images(world, falcon, tmp_path):
    root = falcon.cache.root
    before = cache_snapshot(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    err = raises(lambda: build(world, falcon, probe=empty), "contains no images")
    assert err.hint and ".png" in err.hint
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    (notes / ".hidden.png").write_bytes(b"")
    raises(lambda: build(world, falcon, probe=notes), "no images with a supported extension")
    raises(lambda: build(world, falcon, probe=tmp_path / "missing"), "does not exist")
    assert_intact(root, before)


def test_a_folder_of_only_unreadable_images(world, falcon, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_bytes(b"not a jpeg at all" * 10)
    root = falcon.cache.root
    before = cache_snapshot(root)
    f = build(world, falcon, probe=folder)
    raises(f.representations, "none of the 2 probe images could be read")
    raises(lambda: f.explain(0), "could be read")
    assert_intact(root, before, allow_new=True)


@pytest.fixture(scope="module")
def mixed(world, falcon, tmp_path_factory):
    """Good images with a corrupt, an empty, a truncated, a 1x1 and a 10,000 x 10,000 one."""
    folder = tmp_path_factory.mktemp("mixed")
    good = sorted((world["images"]).rglob("*.png"))[::2]  # 16 good images
    for p in good:
        shutil.copy(p, folder / f"{p.parent.name}_{p.name}")
    (folder / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "empty.jpg").write_bytes(b"")
    data = good[0].read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (1, 1), (200, 20, 20)).save(folder / "tiny.png")
    huge = Image.new("RGB", (10_000, 10_000), (128, 128, 128))
    ImageDraw.Draw(huge).ellipse((2000, 2000, 8000, 8000), fill=(30, 60, 220))
    huge.save(folder / "huge.jpg", quality=60)
    del huge
    root = falcon.cache.root
    before = cache_snapshot(root)
    f = build(world, falcon, probe=folder)
    f.representations()
    return {"falcon": f, "before": before, "folder": folder}


def test_unreadable_images_are_skipped_counted_and_listed(mixed):
    f = mixed["falcon"]
    ids = f.probe.ids
    assert len(ids) == 21
    skipped = f.skipped_images
    assert sorted(ids[i] for i in skipped) == ["corrupt.png", "empty.jpg", "truncated.png"]
    by_id = {ids[i]: msg for i, msg in skipped.items()}
    assert "empty" in by_id["empty.jpg"] and "0 bytes" in by_id["empty.jpg"]
    assert "not a recognised image" in by_id["corrupt.png"]
    assert "the file is truncated" in by_id["truncated.png"]
    H, valid = f.representations()
    assert int((~valid).sum()) == 3
    for i in skipped:
        assert not valid[i] and np.isnan(H[i]).all()
    # the 1x1 and the huge image are processed
    for name in ("tiny.png", "huge.jpg"):
        i = ids.index(name)
        assert valid[i] and np.isfinite(H[i]).all()
        assert f.view(i).size == (224, 224)
    assert f.describe()["probe"]["skipped"] == 3


def test_unreadable_images_are_never_in_T_or_L(mixed):
    f = mixed["falcon"]
    H, valid = f.representations()
    bad = set(np.flatnonzero(~valid).tolist())
    # T = every readable image
    everything = f.explain(2, TOPK.replace(top_k=100, max_low_images=0))
    assert len(everything.high) == int(valid.sum()) == 18
    assert not bad & {r.index for r in everything.high}
    # L as wide as it gets: every readable image outside T is low and similar enough
    s = TOPK.replace(top_k=3, low_threshold=10.0, beta=-1.0, max_low_images=0)
    exp = f.explain(2, s)
    low = {r.index for r in exp.low}
    assert low == set(np.flatnonzero(valid).tolist()) - {r.index for r in exp.high}
    assert not bad & low
    for rule in (FalconSettings(alpha_std=0.5), FalconSettings(high_rule="quantile", quantile=0.5)):
        for feat in range(5):
            sel = f.select_high(feat, rule)
            assert not bad & set(sel.indices.tolist())
    assert_intact(f.cache.root, mixed["before"], allow_new=True)


# ------------------------------------------------------------------------------- features

@pytest.mark.parametrize("features, words", [
    (512, ["feature 512 is out of range", "0 to 511"]),
    (-1, ["feature -1 is out of range", "0 to 511"]),
    ([3, 600], ["feature 600 is out of range"]),
    ([3, 3], ["repeated", "3"]),
    ([], ["no feature"]),
    ("seven", ["not an integer"]),
])
def test_bad_feature_indices(falcon, features, words):
    root = falcon.cache.root
    before = cache_snapshot(root)
    raises(lambda: falcon.explain(features), *words)
    raises(lambda: falcon.cams(features), *words)
    exp, err = falcon.try_explain(features)
    assert exp is None and words[0].lower() in err.lower()
    assert_intact(root, before)


# ------------------------------------------------------------------------------- vocabularies

def test_an_empty_vocabulary(world, falcon, tmp_path):
    root = falcon.cache.root
    before = cache_snapshot(root)
    zero = tmp_path / "zero.txt"
    zero.write_bytes(b"")
    raises(lambda: build(world, falcon, vocabulary=zero), "is empty")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\t\n\n", encoding="utf-8")
    err = raises(lambda: build(world, falcon, vocabulary=blank), "has no captions", "blank")
    assert "one caption per line" in err.hint
    raises(lambda: build(world, falcon, vocabulary=tmp_path / "missing.txt"), "does not exist")
    assert_intact(root, before)


def test_a_vocabulary_of_a_single_caption(world, falcon, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a red circle on a grey background\n", encoding="utf-8")
    root = falcon.cache.root
    before = cache_snapshot(root)
    f = build(world, falcon, vocabulary=one)
    assert len(f.vocabulary) == 1
    assert any("single caption" in n for n in f.vocabulary.report["notes"])
    exp = f.explain(5)
    for r in exp.high + exp.low:
        assert [c.text for c in r.captions] == ["a red circle on a grey background"]
    assert {c.text for c in exp.words + exp.spurious_words} <= {"red", "circle", "grey"}
    assert_intact(root, before, allow_new=True)


def test_captions_with_tabs_control_characters_and_10000_characters(world, falcon, tmp_path):
    long = ("a very long caption about a red circle " * 300)[:10_000]
    lines = ["a red\tcircle\ton grey", "a blue\x07 square\x1b[0m here", "green\x00 circle\r",
             "yellow square\u2028on grey", long, "photo of a small blue circle"]
    path = tmp_path / "odd.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    root = falcon.cache.root
    before = cache_snapshot(root)
    f = build(world, falcon, vocabulary=path)
    caps = [f.vocabulary.caption(i) for i in range(len(f.vocabulary))]
    assert caps[0] == "a red circle on grey"
    assert caps[1] == "a blue square [0m here"
    assert caps[2] == "green circle"
    assert caps[3] == "yellow square on grey"
    assert len(caps[4]) <= 1000 and caps[4].startswith("a very long caption")
    for c in caps:
        assert not any(ord(ch) < 32 or 0x7f <= ord(ch) <= 0x9f for ch in c)
        assert "\u2028" not in c
    rep = f.vocabulary.report
    assert rep["truncated"] == 1 and rep["control_chars_cleaned"] >= 3
    exp = f.explain(5)
    for r in exp.high:
        assert len(r.captions) == 5
        for c in r.captions:
            assert c.text in caps
    assert_intact(root, before, allow_new=True)


# ------------------------------------------------------------------------------- models

def test_a_checkpoint_for_another_architecture(world, falcon, tmp_path):
    ckpt = make_torchvision_checkpoint(tmp_path / "resnet50.pth", arch="resnet50")
    root = falcon.cache.root
    before = cache_snapshot(root)
    err = raises(lambda: build(world, falcon, weights=ckpt), "another architecture",
                 "do not have the shapes of resnet18")
    assert "resnet50" in err.hint
    raises(lambda: build(world, falcon, weights=tmp_path / "missing.pth"), "no such checkpoint")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello, not a checkpoint")
    raises(lambda: build(world, falcon, weights=junk), "not a PyTorch checkpoint")
    assert_intact(root, before)


def test_a_layer_that_does_not_exist(world, falcon):
    root = falcon.cache.root
    before = cache_snapshot(root)
    err = raises(lambda: build(world, falcon, layer="layer9"), "has no layer 'layer9'")
    assert "layer4" in err.hint
    assert_intact(root, before)


# ------------------------------------------------------------------------------- selection

def test_no_highly_activating_image(falcon):
    root = falcon.cache.root
    before = cache_snapshot(root)
    s = FalconSettings(alpha_std=50.0)
    err = raises(lambda: falcon.explain(5, s), "No highly activating image for feature 5",
                 cls=NoHighImagesError)
    assert "top-k" in err.hint.lower()
    assert falcon.cached_explanation(5, s) is None
    exp, msg = falcon.try_explain([5, 6], s)
    assert exp is None and "No highly activating image for group" in msg
    assert_intact(root, before)


@pytest.mark.parametrize("change, words", [
    (dict(beta=1.0), ["none has a similarity ≥ β = 1"]),  # β's highest value (LIMITS)
    (dict(low_threshold=-1.0), ["below ε = -1"]),
])
def test_no_counterfactual_image(falcon, change, words):
    # a feature with low images (so that beta = 1 is what leaves L empty)
    feat = next(f for f in range(64)
                if falcon.select_low(f, falcon.select_high(f).indices).n_candidates > 0)
    root = falcon.cache.root
    before = cache_snapshot(root)
    exp = falcon.explain(feat, TOPK.replace(**change))
    assert exp.low == []
    assert exp.spurious_words == [] and exp.spurious_phrases == []
    note = " ".join(exp.notes)
    assert "No counterfactual images" in note and "Nothing was removed" in note
    for w in words:
        assert w in note
        assert w in exp.low_selection["description"]
    assert exp.low_selection["n_used"] == 0
    # nothing removed: the same concepts as without contrast
    plain = falcon.explain(feat, TOPK.replace(contrast=False, **change))
    assert [(c.text, c.score) for c in exp.words] == [(c.text, c.score) for c in plain.words]
    assert all(c.l_score == 0.0 for c in exp.words)
    assert_intact(root, before, allow_new=True)


# ------------------------------------------------------------------------------- interruption

@pytest.fixture(scope="module")
def small(world):
    """A tiny CNN over 300 in-memory images: Stage 1 runs in two chunks (256 + 44)."""
    from falcon_core.data.probes import ArrayProbe
    from falcon_core.data.vocabulary import CaptionFile
    from falcon_core.models.backbones import Backbone

    backbone = Backbone.from_module(make_tiny_cnn(), "tiny-cnn", input_size=32)
    assert backbone.cam_layer_name and backbone.num_features == 32
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(300, 1, 1, 3))
    images = np.clip(base + rng.integers(-40, 40, size=(300, 32, 32, 3)), 0, 255).astype(np.uint8)
    probe = ArrayProbe(images)
    clip = tiny_config(world).build_clip()
    vocab = CaptionFile(world["captions"])
    return backbone, clip, probe, vocab


def _falcon(small, cache_dir):
    from falcon_core.cache import DiskCache

    backbone, clip, probe, vocab = small
    return Falcon(backbone, clip, probe, vocab, settings=TOPK.replace(batch_size=16),
                  cache=DiskCache(cache_dir))


def test_an_interrupted_stage_1_resumes(small, tmp_path, monkeypatch):
    import falcon_core.stages.representations as reps

    original = reps.compute_representations
    starts = []

    def interrupted(backbone, part, *a, **k):
        starts.append(part.start)
        if part.start == 256:
            raise KeyboardInterrupt
        return original(backbone, part, *a, **k)

    cache = tmp_path / "cache"
    f = _falcon(small, cache)
    monkeypatch.setattr(reps, "compute_representations", interrupted)
    with pytest.raises(KeyboardInterrupt):
        f.explain(7)
    assert starts == [0, 256]
    files = cache_snapshot(cache)
    assert not [k for k in files if k.endswith(".tmp")]
    assert not [k for k in files if k.startswith("representations/") and k.endswith(".npy")
                and ".parts/" not in k]  # no final matrix
    parts = [k for k in files if ".parts/part_" in k]
    assert len(parts) == 1 and "part_000000000000_000000000256.npy" in parts[0]
    assert not [k for k in files if k.startswith("explanations/")]

    # the rerun computes only the missing chunk
    starts.clear()
    monkeypatch.setattr(reps, "compute_representations",
                        lambda backbone, part, *a, **k: (starts.append(part.start),
                                                         original(backbone, part, *a, **k))[1])
    g = _falcon(small, cache)
    resumed = g.explain(7)
    assert starts == [256]
    no_debris(cache)

    # and equals an uninterrupted run
    monkeypatch.setattr(reps, "compute_representations", original)
    h = _falcon(small, tmp_path / "clean")
    clean = h.explain(7)
    assert np.array_equal(np.asarray(g.representations()[0]), np.asarray(h.representations()[0]))
    assert resumed.to_dict() == clean.to_dict()


def test_an_interrupt_inside_a_chunk_leaves_nothing_half_written(small, tmp_path, monkeypatch):
    backbone, clip, probe, vocab = small
    original = type(probe).load
    count = {"n": 0}

    def load(self, i):
        count["n"] += 1
        if count["n"] == 100:
            raise KeyboardInterrupt
        return original(self, i)

    cache = tmp_path / "cache"
    monkeypatch.setattr(type(probe), "load", load)
    with pytest.raises(KeyboardInterrupt):
        _falcon(small, cache).representations()
    files = cache_snapshot(cache)
    assert not [k for k in files if k.endswith(".tmp")]
    assert not [k for k in files if k.endswith(".npy")]  # no chunk, no matrix
    monkeypatch.setattr(type(probe), "load", original)
    H, valid = _falcon(small, cache).representations()
    H2, _ = _falcon(small, tmp_path / "clean").representations()
    assert valid.all() and np.array_equal(np.asarray(H), np.asarray(H2))
    no_debris(cache)


def test_an_interrupted_gradcam_leaves_no_explanation(small, tmp_path, monkeypatch):
    import falcon_core.stages.gradcam as gradcam

    cache = tmp_path / "cache"
    f = _falcon(small, cache)
    f.representations()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gradcam, "compute_cams", boom)
    with pytest.raises(KeyboardInterrupt):
        f.explain(11)
    files = cache_snapshot(cache)
    assert not [k for k in files if k.startswith(("cams/", "explanations/"))]
    assert not [k for k in files if k.endswith(".tmp")]
    monkeypatch.undo()
    again = _falcon(small, cache).explain(11)
    clean = _falcon(small, tmp_path / "clean").explain(11)
    assert again.to_dict() == clean.to_dict()


def test_a_new_falcon_on_the_cached_mixed_folder_still_reports_the_skipped_images(world, mixed):
    f = mixed["falcon"]
    again = build(world, f, probe=mixed["folder"])
    assert again.skipped_images == f.skipped_images  # read back from the cache
    exp = again.explain(2, TOPK.replace(top_k=100))
    assert len(exp.high) == 18
    # what the explanation records about the probe set agrees with skipped_images
    assert exp.inputs["describe"]["probe"]["skipped"] == len(again.skipped_images) == 3
