"""Comparing two models (issue 12): the summary by hand, the comparison and the command on the
tiny world (one model against itself, and against another checkpoint)."""

from types import SimpleNamespace

import numpy as np
import pytest

from falcon_core.compare import Comparison, format_summary, summarise
from falcon_core.errors import FalconError
from falcon_core.explanation import Concept


def _exp(words, removed=()):
    return SimpleNamespace(words=[Concept(w, 1.0 - 0.1 * i) for i, w in enumerate(words)],
                           spurious_words=[Concept(w, 0.5, 0.4) for w in removed])


def test_summary_by_hand():
    a = [(0, _exp(["star", "red", "big", "grass"])),  # grass kept, 4th word: not "encoded"
         (1, _exp(["star", "small"], removed=["grass"])),
         (2, _exp(["heart", "brick"])),
         (3, _exp(["star", "plain"]))]
    b = [(10, _exp(["star", "blue"])),
         (11, _exp(["star", "plain"], removed=["sand"])),
         (12, _exp(["circle", "wood"]))]
    s = summarise({"a": a, "b": b})
    # encoded (top 3): A star, red, big, small, heart, brick, plain; B star, blue, plain, circle,
    # wood
    assert [r["concept"] for r in s["only"]["a"]] == ["big", "brick", "heart", "red", "small"]
    assert [r["concept"] for r in s["only"]["b"]] == ["blue", "circle", "wood"]
    assert s["spurious_only"] == {"a": [{"concept": "grass", "features": [1]}],
                                  "b": [{"concept": "sand", "features": [11]}]}
    # shared concepts: star and plain. A's star features 0, 1, 3 hold grass in 2 of 3 (0 kept,
    # 1 removed) >= 0.5; B's star features 10, 11 in 0 of 2 -> a companion in A
    rows = {(r["concept"], r["companion"], r["in"]): r for r in s["companions"]}
    g = rows[("star", "grass", "a")]
    assert g["share"] == {"a": pytest.approx(2 / 3, abs=1e-3), "b": 0.0}
    assert (g["kept"]["a"], g["removed"]["a"]) == (1, 1)
    assert g["features"] == {"a": [0, 1, 3], "b": [10, 11]}
    # B's star features: blue in 1 of 2 (0.5) and A's in 0 of 3 -> a companion in B; plain is
    # in 1 of 2 B star features but also in 1 of 3 A star features (0.33 > 0.2): not a companion
    assert ("star", "blue", "b") in rows
    assert not any(k[1] == "plain" and k[0] == "star" for k in rows)
    # sand: 1 of 2 of B's star features, removed
    assert rows[("star", "sand", "b")]["removed"]["b"] == 1
    # red: 1 of 3 A star features (0.33 < 0.5): not carried
    assert ("star", "red", "a") not in rows
    # what a stakeholder reads
    from falcon_core.compare import Summary

    text = format_summary(Summary(names={"a": "default", "b": "unbiased"},
                                  explained={"a": 4, "b": 3}, unexplained={"a": {}, "b": {}},
                                  **s))
    assert ("default's 'star' features carry 'grass': 2 of 3 (1 kept, 1 removed as spurious); "
            "unbiased's: 0 of 2") in text
    assert "Removed as spurious in default, never in unbiased:\n  grass" in text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from makers import make_tiny_world, make_torchvision_checkpoint

    w = make_tiny_world(tmp_path_factory.mktemp("compare-world"))
    w["other"] = make_torchvision_checkpoint(w["base"] / "other.pth", seed=1)
    return w


def _falcon(world, **changes):
    from falcon_core.pipeline import Falcon
    from falcon_core.settings import FalconSettings
    from makers import tiny_config

    return Falcon.from_config(tiny_config(world, **changes),
                              settings=FalconSettings(high_rule="topk", top_k=5),
                              cache_dir=str(world["base"] / "cache"))


def test_a_model_against_itself_matches_each_feature_to_itself(world):
    a = _falcon(world)
    cmp = Comparison(a, _falcon(world), names=("A", "A again"))
    for f in (0, 7, 100):
        m = cmp.matches("a", f, n=2)
        assert m.by_correlation[0][0] == f and m.by_correlation[0][1] == pytest.approx(1.0)
        assert cmp.matches("b", f).by_correlation[0] == (f, pytest.approx(1.0))
    report = cmp.map_report()
    # a representation predicts itself (19 fitting images for 512 features: not exactly)
    assert report["b_to_a"]["r2_test"] > 0.8
    # 32 images: round(19.2) = 19 fit, round(6.4) = 6 choose λ, the other 7 test
    assert report["b_to_a"]["images"] == {"fit": 19, "choice": 6, "test": 7}
    with pytest.raises(FalconError):
        cmp.matches("a", 10_000)


def test_two_checkpoints_and_a_different_probe_set(world, tmp_path):
    from makers import make_image_folder

    a, b = _falcon(world), _falcon(world, weights=str(world["other"]))
    cmp = Comparison(a, b)
    corr = cmp.correlations()
    HA = np.asarray(a.normalized(True), dtype=np.float64)
    HB = np.asarray(b.normalized(True), dtype=np.float64)
    # one entry by hand (numpy's corrcoef, not the code under test)
    assert corr[3, 5] == pytest.approx(np.corrcoef(HA[:, 3], HB[:, 5])[0, 1], abs=1e-9)
    m = cmp.matches("a", 3, n=3)
    assert m.by_correlation[0][0] == int(np.argmax(corr[3]))
    side = cmp.side_by_side("a", 3, n=2)
    assert side["explanation"] is not None and set(side["others"]) >= {m.by_map[0][0]}
    other_probe = make_image_folder(tmp_path / "images", n_per_kind=1)
    with pytest.raises(FalconError, match="probe"):
        Comparison(a, _falcon(world, probe=str(other_probe)))


def test_compare_command(world, capsys):
    from falcon_core.cli import main

    ws = ["--backbone", "resnet18", "--weights", str(world["backbone"]),
          "--clip", str(world["clip_config"]), "--clip-pretrained", str(world["clip_ckpt"]),
          "--probe", str(world["images"]), "--vocabulary", str(world["captions"]),
          "--cache-dir", str(world["base"] / "cache"), "--rule", "topk", "--top-k", "5",
          "--no-progress"]
    assert main(["compare", *ws, "--weights-b", str(world["other"]), "--features", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out R²" in out and "Concepts" in out
    assert main(["compare", *ws, "--weights-b", str(world["other"]), "--feature", "1",
                 "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Feature 1 of resnet18") and "by activation correlation" in out
    assert main(["compare", *ws]) == 2  # model B = model A
    assert "Model B is the same" in capsys.readouterr().err


def test_reliance_by_hand(monkeypatch):
    """Comparison.reliance on ten images whose naming and activations are set by hand."""
    from falcon_core.stages.reliance import simultaneous_z

    concepts = ["brick", "heart", "sand"]
    named = np.zeros((10, 3), dtype=bool)
    named[0:8, 1] = True  # heart in images 0-7
    named[[0, 1, 2, 3, 8], 0] = True  # brick in 0-3 (and 8, which has no heart)
    named[[4, 5, 6, 7, 9], 2] = True  # sand in 4-7 (and 9, no heart)
    HA = np.zeros((10, 2))
    HA[:, 0] = [5, 6, 7, 8, 1, 2, 3, 4, 0, 9]  # A's heart feature: higher with brick
    HB = np.zeros((10, 2))
    HB[:, 0] = [1, 5, 2, 6, 3, 7, 4, 8, 9, 0]
    cmp = Comparison.__new__(Comparison)
    cmp.names = {"a": "A", "b": "B"}
    cmp._naming = (concepts, named, np.arange(10))
    monkeypatch.setattr(cmp, "_matrices", lambda: (HA, HB))
    rows = cmp.reliance({"a": {"heart": [0]}, "b": {"heart": [0], "sand": [1]}}, min_named=2)
    # heart is the only concept with features in both models; among its 8 images brick is named
    # in 4 (and not in 4), sand likewise: two tests
    assert [(r["concept"], r["companion"]) for r in rows] == [("heart", "brick"), ("heart", "sand")]
    z = simultaneous_z(2)
    brick, sand = rows
    assert brick["z"] == pytest.approx(z, abs=1e-3) and brick["tests"] == 2
    # brick: A's 5,6,7,8 all above 1,2,3,4 -> 1 (no variance); B's 1,5,2,6 vs 3,7,4,8 -> 4/16
    assert brick["auc"] == {"a": 1.0, "b": 0.25}
    assert brick["images"] == {"both_named": 4, "concept_only": 4}
    # B: V10 = [0, .5, 0, .5], V01 = [.5, 0, .5, 0]: var = (1/12)/4 + (1/12)/4 = 1/24
    se = np.sqrt(1 / 24)
    assert brick["difference"] == pytest.approx(0.75)
    assert brick["difference_interval"] == pytest.approx([0.75 - z * se, 0.75 + z * se],
                                                         abs=1e-4)
    assert brick["in"] == "a"  # the interval excludes 0 and A's AUC interval is above 0.5
    # sand: A's 1, 2, 3, 4 below 5, 6, 7, 8 -> 0; B's 3, 7, 4, 8 vs 1, 5, 2, 6 -> 12/16. The
    # difference (-0.75, same error as brick's) excludes 0, but B's own AUC interval reaches
    # below 0.5 (0.75 - z * 0.204): B's sand is not shown as carried
    assert sand["auc"] == pytest.approx({"a": 0.0, "b": 0.75}, abs=1e-4)
    assert sand["difference_interval"][1] < 0
    assert sand["auc_interval"]["b"][0] < 0.5
    assert sand["in"] is None
    # asking for one pair tests only that pair (a family of one)
    one = cmp.reliance({"a": {"heart": [0]}, "b": {"heart": [0]}}, pairs=[("heart", "brick")])
    assert len(one) == 1 and one[0]["z"] == pytest.approx(1.96, abs=1e-3)


def test_explanations_come_in_the_order_asked_whatever_the_cache_held(world):
    """The summary lists each concept's features in the order of ``explanations``; a feature
    explained earlier (read back from the cache, which the precompute reports first) must not
    move ahead of the others."""
    a = _falcon(world)
    cmp = Comparison(a, _falcon(world))
    a.explain(5)  # cached before the others
    done, failed = cmp.explanations("a", [2, 5, 3])
    assert failed == {}
    assert list(done) == [2, 5, 3]
    assert done[5].to_dict() == a.explain(5).to_dict()
