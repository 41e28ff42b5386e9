"""The recovery benchmark's statistics by hand, and its ablations: each replaces exactly one
component of the pipeline and never shares a cached result with the full run."""

from __future__ import annotations

import numpy as np
import pytest

from falcon_core.bench import recovery as R
from falcon_core.settings import FalconSettings
from makers import tiny_falcon

TOPK = FalconSettings(high_rule="topk", top_k=6)


def test_wilson_by_hand():
    # 5/10: centre (0.5 + z^2/20) / (1 + z^2/10) = 0.5; half = z sqrt(0.025 + z^2/400) / (1 + z^2/10)
    z = 1.959964
    half = z * np.sqrt(0.025 + z * z / 400) / (1 + z * z / 10)
    lo, hi = R.wilson(5, 10)
    assert lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    # 0/10: lower end 0, upper z^2/n / (1 + z^2/n) = 3.8415/13.8415
    lo, hi = R.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z * z / (10 + z * z))
    assert R.wilson(0, 0) is None
    p = R.proportion([True, False, True, True])
    assert (p["k"], p["n"], p["value"]) == (3, 4, 0.75)


def test_paired_difference():
    d = R.paired_difference([1, 1, 1, 0], [0, 0, 1, 0])
    assert d["difference"] == 0.5 and d["n"] == 4
    # every resample's mean lies between 0 and 1; with two differences of 1 in 4 the
    # bootstrap interval is inside [0, 1] and holds 0.5
    assert 0.0 <= d["ci95"][0] <= 0.5 <= d["ci95"][1] <= 1.0
    same = R.paired_difference([1, 0, 1], [1, 0, 1])
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0]


@pytest.fixture(scope="module")
def falcon(tmp_path_factory):
    return tiny_falcon(tmp_path_factory.mktemp("bench-world"), TOPK)


def test_no_crop_shows_clip_the_whole_view_and_keeps_its_own_cache(falcon):
    f = 3
    full = falcon.explain(f)
    ab = R.no_crop(falcon)
    assert ab.inputs["ablation"] == "no_crop" and "ablation" not in falcon.inputs
    assert ab.explanation_key(f) != falcon.explanation_key(f)
    exp = ab.explain(f)
    view = falcon.view(exp.high[0].index).size
    assert all(r.box == (0, 0, view[0], view[1]) for r in exp.high)
    # the crop CLIP saw is the whole view: the T captions are the view's top captions
    B = falcon.clip.encode_images([falcon.view(r.index) for r in exp.high])
    A = np.asarray(falcon.text_embeddings(), dtype=np.float32)
    best = np.argsort(-(B @ A.T), axis=1)[:, 0]
    assert [r.captions[0].index for r in exp.high] == [int(b) for b in best]
    # the full run's explanation, read again, is untouched
    again = falcon.explain(f)
    assert [r.box for r in again.high] == [r.box for r in full.high]
    assert any(r.box != (0, 0, view[0], view[1]) for r in full.high)


def test_wrong_cam_aims_gradcam_at_the_other_feature(falcon):
    f, other = 3, 11
    ab = R.wrong_cam(falcon, {f: other})
    high = falcon.select_high(f).indices
    got = ab.explainer._cams((f,), high)
    expected = falcon.explainer._cams((other,), high)  # GradCAM of feature 11 on 3's images
    own = falcon.explainer._cams((f,), high)
    assert np.array_equal(got, expected)
    assert not np.allclose(np.asarray(got, float), np.asarray(own, float))
    exp = ab.explain(f)
    boxes = [b.as_tuple() for b in falcon.explainer._boxes(expected, TOPK.cam_threshold,
                                                          TOPK.cam_box_margin)]
    assert [r.box for r in exp.high] == boxes


def _result(value_k: int, n: int) -> dict:
    """A hand-made result with one world: what ``markdown`` reads."""
    p = R.proportion([True] * value_k + [False] * (n - value_k))
    fig = {"top3_recovery": p, "top3_recovery_no_contrast": p, "spurious_removed": p,
           "spurious_removed_not_encoded": p, "true_kept": p, "filler_top_word": p,
           "by_attribute": {"shape": {"top3_recovery": p}}}
    checks = [{"ablation": a, "difference": 0.5, "ci95": [0.2, 0.8], "ok": True}
              for a in R.ABLATIONS]
    runs = {"full": fig, "oracle_clip": fig, **{a: {"top3_recovery": p} for a in R.ABLATIONS}}
    return {"ok": True, "worlds": [{"world": "w", "num_features": 9, "clear_features": n,
                                    "settings": {"low_rule": "twins", "spurious_rule": "relative",
                                                 "concept_hygiene": True},
                                    "runs": runs, "checks": checks}]}


def test_write_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{R.README_BEGIN}\nold figures\n{R.README_END}\noutro\n")
    assert R.write_readme(_result(3, 4), readme)
    text = readme.read_text()
    assert text.startswith("intro\n" + R.README_BEGIN) and text.endswith(R.README_END + "\noutro\n")
    assert "old figures" not in text
    assert "| top-3 recovery, all clear features | 75 % (3/4; " in text
    assert "| settings: counterfactuals / spurious threshold / hygiene | twins / relative / on |" \
        in text
    assert R.readme_block(readme) == R.markdown(_result(3, 4))
    # again with other figures: the block changes, the rest does not
    assert R.write_readme(_result(1, 4), readme)
    text = readme.read_text()
    assert "25 % (1/4; " in text and text.count(R.README_BEGIN) == text.count(R.README_END) == 1
    assert text.startswith("intro\n") and text.endswith(R.README_END + "\noutro\n")
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no block\n")
    assert not R.write_readme(_result(3, 4), plain) and plain.read_text() == "no block\n"
    assert R.readme_block(plain) is None


def test_the_readme_figures_are_the_committed_result():
    """The README's recovery block is what ``--from-json docs/recovery.json --write-readme``
    prints: nobody edits a figure by hand, and a new result changes both in one diff."""
    import json

    res = json.loads(R.DOCS_JSON.read_text(encoding="utf-8"))
    assert R.readme_block() == R.markdown(res)
    # the committed result says what it ran and checked
    assert res["worlds"] and all("compare" in w and "pairs" in w for w in res["worlds"])
    assert res["ok"] == all(c["ok"] for c in res["checks"])


def _compare_world(world_file: str, rows: dict) -> dict:
    """A world result whose ``--compare`` table (demo CLIP) has ``rows``:
    {"rule/threshold": (top-3 k, spurious removed k, true kept k)} over 10 / 5 / 10 features."""
    def p(k, n):
        return R.proportion([True] * k + [False] * (n - k))
    table = {key: {"top3_recovery": p(a, 10), "spurious_removed": p(b, 5), "true_kept": p(c, 10)}
             for key, (a, b, c) in rows.items()}
    return {"world_file": world_file, "compare": {"demo_clip": table, "oracle_clip": {}}}


def test_choose_default_by_hand():
    rows = {"global/absolute": (9, 5, 6),    # best recovery, but true kept 0.6 < 0.9: not eligible
            "twins/relative": (7, 1, 10),
            "quantile/absolute": (7, 3, 9),  # ties twins/relative on recovery, removes more
            "quantile/ratio": (6, 5, 10)}
    alt = _compare_world(R.CHOICE_WORLD, rows)
    c = R.choose_default({"worlds": [alt]})
    assert (c["low_rule"], c["spurious_rule"]) == ("quantile", "absolute")
    assert c["eligible"] == ["twins/relative", "quantile/absolute", "quantile/ratio"]
    # an exact tie on both: the authors' order decides (twins before quantile)
    rows["twins/relative"] = (7, 3, 10)
    c = R.choose_default({"worlds": [_compare_world(R.CHOICE_WORLD, rows)]})
    assert (c["low_rule"], c["spurious_rule"]) == ("twins", "relative")
    # the default world's table never chooses; nothing eligible keeps the authors' rule
    assert R.choose_default({"worlds": [_compare_world("assets/world.json", rows)]}) is None
    none = {k: (a, b, 8) for k, (a, b, _) in rows.items()}
    c = R.choose_default({"worlds": [_compare_world(R.CHOICE_WORLD, none)]})
    assert (c["low_rule"], c["spurious_rule"]) == ("global", "absolute") and c["eligible"] == []


def test_the_default_rule_is_the_documented_choice():
    """The library's default counterfactual rule and spurious threshold are what the criterion
    picks from the committed result on world_alt (docs/recovery.json), or the authors' Eq. 2 with
    the absolute 0.1 while that result has no world_alt table. Changing the default without a
    new committed result (or the result without the default) fails here."""
    import json

    res = json.loads(R.DOCS_JSON.read_text(encoding="utf-8"))
    choice = R.choose_default(res) or {"low_rule": "global", "spurious_rule": "absolute"}
    s = FalconSettings()
    assert (s.low_rule, s.spurious_rule) == (choice["low_rule"], choice["spurious_rule"])
    # the demo backbone's preset does not override them
    from falcon_core.workspace import WorkspaceConfig
    d = WorkspaceConfig.demo().default_settings()
    assert (d.low_rule, d.spurious_rule) == (choice["low_rule"], choice["spurious_rule"])


def test_spurious_figures_split_by_reliance_by_hand():
    """Five features whose truth is the planted ``if`` value (star -> grass): 1 and 2 do not
    name grass without the contrast step (not cases); of the cases 3, 4, 5, 6: 3 and 4 do not
    rely on grass (re-rendered), 3 removed, 4 kept -> removed over not relied on 1/2; 5 relies and
    kept, 6 relies and removed -> kept over relied on 1/2; 7's reliance is unclear (in neither)."""
    from types import SimpleNamespace

    world = SimpleNamespace(
        w=SimpleNamespace(correlations=[{"if": {"shape": "star"}, "then": {"background": "grass"},
                                         "p": 0.8}]),
        syn={"shape=star": {"star"}, "background=grass": {"grass", "lawn"}},
        fillers=[], encodes={},
        reliance={(3, "background=grass"): {"relies": False, "reliance": 0.1},
                  (4, "background=grass"): {"relies": False, "reliance": 0.2},
                  (5, "background=grass"): {"relies": True, "reliance": 0.9},
                  (6, "background=grass"): {"relies": True, "reliance": 0.5},
                  (7, "background=grass"): {"relies": None, "reliance": None}})

    def row(f, before, after):
        return {"feature": f, "truth": "shape=star", "top_words": after, "hit": True,
                "truth_in_top": True, "top_words_no_contrast": before, "hit_no_contrast": True,
                "truth_in_top_no_contrast": True}

    scored = [row(1, ["star"], ["star"]), row(2, ["star", "red"], ["star"]),
              row(3, ["star", "grass"], ["star"]), row(4, ["star", "lawn"], ["star", "lawn"]),
              row(5, ["star", "grass"], ["star", "grass"]), row(6, ["grass", "star"], ["star"]),
              row(7, ["star", "grass"], ["star"])]
    fig = R._figures(world, scored)
    assert (fig["spurious_removed"]["k"], fig["spurious_removed"]["n"]) == (3, 5)
    assert (fig["spurious_removed_not_relied"]["k"], fig["spurious_removed_not_relied"]["n"]) == (1, 2)
    assert (fig["spurious_kept_relied"]["k"], fig["spurious_kept_relied"]["n"]) == (1, 2)
    case = {c["feature"]: c for c in fig["planted"][0]["cases"]}
    assert case[4]["relies"] is False and case[5]["reliance"] == 0.9 and case[7]["relies"] is None
    # the tables show them (and results without them keep the old tables)
    res = _result(3, 4)
    res["worlds"][0]["runs"]["full"].update(spurious_removed_not_relied=fig["spurious_removed_not_relied"],
                                            spurious_kept_relied=fig["spurious_kept_relied"])
    md = R.markdown(res)
    assert "does not respond to it (re-rendered, reliance < 0.33) | 50 % (1/2; " in md
    assert "kept where the feature responds to it (reliance ≥ 0.33) | 50 % (1/2; " in md
    assert "re-rendered" not in R.markdown(_result(3, 4))


def _scope_world():
    """Scenes 0 and 3 hold one object, 1 and 2 two; four features' T by hand."""
    from types import SimpleNamespace as NS

    world = NS(scenes=[{"objects": ["a"]}, {"objects": ["a", "b"]}, {"objects": ["a", "b"]},
                       {"objects": ["a"]}])
    exp = lambda idx: NS(high=[NS(index=i) for i in idx])  # noqa: E731
    rows = [{"exp": exp([1, 2])},   # two objects in 2 of 2: in scope
            {"exp": exp([0, 1])},   # 1 of 2 = 0.5, the bar itself: in scope
            {"exp": exp([0, 3])},   # 0 of 2: out
            {"exp": None}]          # no explanation: out
    return world, rows


def test_no_crop_is_measured_where_the_crop_can_matter():
    world, rows = _scope_world()
    assert R.CROP_SCOPE_SHARE == 0.5
    assert [R.two_object_share(world, r["exp"]) for r in rows] == [1.0, 0.5, 0.0, None]
    scope = R.crop_scope(world, rows)
    assert scope.tolist() == [True, True, False, False]
    # the crop wins on both features in scope (differences 1, 1) and loses elsewhere
    c = R.no_crop_check("w", scope, [1, 1, 1, 0], [0, 0, 1, 1])
    assert (c["difference"], c["n"], c["ok"]) == (1.0, 2, True)
    assert c["ci95"] == [1.0, 1.0]
    assert c["all_features"]["difference"] == 0.25  # (1 + 1 + 0 - 1) / 4, reported only
    assert (c["full_in_scope"]["k"], c["no_crop_in_scope"]["k"]) == (2, 0)
    # over every feature the crop is 0.5 above, but in scope it is not (1 - 1 = 0): not ok
    c = R.no_crop_check("w", scope, [1, 0, 1, 1], [0, 1, 0, 0])
    assert c["all_features"]["difference"] == 0.5
    assert (c["difference"], c["ok"]) == (0.0, False)
    line = "\n".join(R._scope_lines(c))
    assert "over the 2 clear features whose T holds two objects" in line
    assert "difference +0.00" in line and "would not pass" in line


# ---- the held no-crop check: captions naming the other object (issue 7) ----------------------

SYN = {"shape=star": {"star"}, "shape=circle": {"circle", "disc"}, "shape=square": {"square"},
       "color=red": {"red", "crimson"}, "color=blue": {"blue"}, "pattern=striped": {"stripe"},
       "pattern=dotted": {"dot", "dotted"}, "size=large": {"large"}, "size=small": {"small"},
       "background=grass": {"grass"}}
STAR = {"shape": "star", "color": "red", "pattern": "striped", "size": "large"}
CIRCLE = {"shape": "circle", "color": "blue", "pattern": "striped", "size": "small"}


def test_other_object_words_by_hand():
    two = {"background": "grass", "objects": [dict(STAR), dict(CIRCLE)]}
    # the star is the feature's object; the circle alone has circle and blue; both are striped
    # (not counted) and size is never counted
    assert R.other_object_words(two, "shape=star", SYN) == {"circle", "disc", "blue"}
    # the feature's object picked by colour, by size: the same other object
    assert R.other_object_words(two, "color=red", SYN) == {"circle", "disc", "blue"}
    assert R.other_object_words(two, "size=large", SYN) == {"circle", "disc", "blue"}
    # seen from the circle's features, the star is the other object
    assert R.other_object_words(two, "color=blue", SYN) == {"star", "red", "crimson"}
    # nothing to say: one object, a scene attribute, the value on no object or on both
    assert R.other_object_words({"objects": [dict(STAR)]}, "shape=star", SYN) is None
    assert R.other_object_words(two, "background=grass", SYN) is None
    assert R.other_object_words(two, "shape=square", SYN) is None
    assert R.other_object_words(two, "pattern=striped", SYN) is None
    # an other object that differs only in size: no word it alone has
    twin = {"objects": [dict(STAR), {**STAR, "size": "small"}]}
    assert R.other_object_words(twin, "size=large", SYN) is None


def _exp(images):
    """An explanation's T by hand: {image: [each kept caption's words]}."""
    from types import SimpleNamespace as NS

    return NS(high=[NS(index=i, captions=[NS(words=w) for w in caps])
                    for i, caps in images.items()])


def test_no_crop_check_counts_the_other_objects_captions_by_hand():
    one = {"objects": [dict(STAR)]}
    two = {"objects": [dict(STAR), dict(CIRCLE)]}
    both = {"objects": [dict(STAR), {**CIRCLE, "shape": "star"}]}  # two stars: says nothing
    scenes = [two, two, one, both, two]
    full_t = {0: [["red", "star"], ["star", "circle"], ["blue", "small"], ["small", "star"],
                  ["dot", "stripe"]],                      # circle, blue: 2 of 5 (small, dot not)
              1: [["star"], ["star", "grass"], ["disc"], ["star"], ["star"]],  # disc: 1 of 5
              2: [["circle"]] * 5,                         # one object: not counted
              3: [["circle"]] * 5}                         # two stars: not counted
    nocrop_t = {0: [["star", "circle"], ["blue"], ["red", "star"], ["disc", "star"], ["star"]],
                1: [["circle", "blue"], ["star", "disc"], ["star", "blue"], ["red"], ["star"]],
                2: [["star"]] * 5, 3: [["star"]] * 5}      # 3 of 5 and 3 of 5
    # a second feature (colour=blue, the circle's): image 4 only; full 0 of 5, no crop 5 of 5
    full_b = {4: [["blue", "circle"]] * 5}
    nocrop_b = {4: [["red", "blue"]] * 5}
    # a background feature: never counted
    full_g = {0: [["grass"]] * 5}
    full = [{"feature": 1, "truth": "shape=star", "exp": _exp(full_t)},
            {"feature": 2, "truth": "color=blue", "exp": _exp(full_b)},
            {"feature": 3, "truth": "background=grass", "exp": _exp(full_g)},
            {"feature": 4, "truth": "shape=star", "exp": None}]
    nocrop = [{"feature": 1, "truth": "shape=star", "exp": _exp(nocrop_t)},
              {"feature": 2, "truth": "color=blue", "exp": _exp(nocrop_b)},
              {"feature": 3, "truth": "background=grass", "exp": _exp(full_g)},
              {"feature": 4, "truth": "shape=star", "exp": None}]
    c = R.no_crop_other_object_check("w", scenes, SYN, full, nocrop)
    per = {r["feature"]: r for r in c["per_feature"]}
    assert sorted(per) == [1, 2]
    # feature 1: full (2/5 + 1/5) / 2 = 0.3, no crop (3/5 + 3/5) / 2 = 0.6 (a mean of the
    # images' shares: the same as pooling here, 3/10 and 6/10)
    assert per[1]["images"] == 2 and per[1]["full"] == pytest.approx(0.3)
    assert per[1]["no_crop"] == pytest.approx(0.6)
    assert per[1]["naming"] == [3, 6] and per[1]["captions"] == [10, 10]
    assert (per[2]["full"], per[2]["no_crop"]) == (0.0, 1.0)  # blue is its own: star, red count
    # over the two features: no crop - full = (0.3 + 1.0) / 2 = 0.65; pooled captions 3/15, 11/15
    assert c["difference"] == pytest.approx(0.65) and c["n"] == 2 and c["images"] == 3
    assert (c["full_share"], c["no_crop_share"]) == (pytest.approx(0.15), pytest.approx(0.8))
    assert (c["full_captions"]["k"], c["full_captions"]["n"]) == (3, 15)
    assert (c["no_crop_captions"]["k"], c["no_crop_captions"]["n"]) == (11, 15)
    assert c["ci95"][0] == pytest.approx(0.3) and c["ci95"][1] == pytest.approx(1.0)
    assert c["ok"] and c["ablation"] == "no_crop"
    assert set(c["by_attribute"]) == {"shape", "color"}
    assert c["by_attribute"]["shape"]["difference"] == pytest.approx(0.3)
    # the whole view in the full run too: no difference, the check fails
    same = R.no_crop_other_object_check("w", scenes, SYN, nocrop, nocrop)
    assert same["difference"] == 0.0 and not same["ok"]
    # a crop that names the other object a little less, by less than the margin: fails
    less = {**nocrop_t, 1: [["circle", "blue"], ["star", "disc"], ["star", "blue"], ["red"],
                            ["star", "red"]]}
    near = [dict(nocrop[0], exp=_exp(less))]
    c2 = R.no_crop_other_object_check("w", scenes, SYN, near, nocrop[:1])
    assert c2["difference"] == pytest.approx(0.0) and not c2["ok"]
    # the check replaces no crop's top-3 check, which it keeps inside, reported
    top3 = [{"ablation": a, "difference": 0.0, "ci95": [-0.1, 0.1], "n": 2, "ok": False}
            for a in R.ABLATIONS]
    held = R.hold_no_crop_on_other_objects(top3, c)
    nc = next(x for x in held if x["ablation"] == "no_crop")
    assert nc["ok"] and nc["figure"] == "other_object_captions" and nc["top3"]["ok"] is False
    assert [x["ablation"] for x in held] == list(R.ABLATIONS)
    # the tables show it; a result without it keeps the old rows
    res = _result(3, 4)
    res["worlds"][0]["checks"] = held
    md = R.markdown(res)
    assert "held: captions naming the other object no crop − full +0.65 [+0.30, +1.00] ok" in md
    assert "full 20 % (3/15; " in md and "no crop 73 % (11/15; " in md
    assert "other object" not in R.markdown(_result(3, 4))
    text = "\n".join(R._other_object_lines({"value": 0.5, "k": 2, "n": 4, "ci95": [0.1, 0.9]}, nc))
    assert "no crop - full +0.65 [+0.30, +1.00]  ok" in text


def test_break_check_whole_view_in_the_full_pipeline_fails_the_no_crop_check(tmp_path,
                                                                            monkeypatch):
    """Feed CLIP the whole view inside the full pipeline (every crop box the whole image): the
    bench's no-crop check, on the pipeline's own explanations, must then fail. Hand-made scenes
    give each tiny probe image two objects: its own (shape and colour from its folder and file
    name) and a blue-or-red square or circle of the other shape."""
    from falcon_core.explainer import Explainer

    falcon = tiny_falcon(tmp_path / "w", TOPK)
    syn = {f"{a}={v}": {v} for a, vals in (("shape", ("circle", "square")),
                                           ("color", ("red", "green", "blue"))) for v in vals}
    scenes = []
    for i in range(falcon.num_images):
        p = falcon.probe.path_of(i)
        shape, colour = p.parent.name, p.name.split("_")[0]
        other = {"shape": "square" if shape == "circle" else "circle",
                 "color": "blue" if colour != "blue" else "red", "pattern": "plain"}
        scenes.append({"objects": [{"shape": shape, "color": colour, "pattern": "plain"}, other]})

    def rows(f):
        return [{"feature": k, "truth": f"shape={scenes[f.select_high(k).indices[0]]['objects'][0]['shape']}",
                 "exp": f.explain(k)} for k in range(4)]

    full, nocrop = rows(falcon), rows(R.no_crop(falcon))
    whole = (0, 0, *falcon.view(0).size)
    # unbroken, the crop changes what CLIP sees (so the check can pass at all)
    assert any(r.box != whole for row in full for r in row["exp"].high)
    assert any([c.index for c in a.captions] != [c.index for c in b.captions]
               for x, y in zip(full, nocrop) for a, b in zip(x["exp"].high, y["exp"].high))
    c = R.no_crop_other_object_check("tiny", scenes, syn, full, nocrop)
    # the captions counted are the ones whose text names the other object's shape or colour
    for x in full:
        for r in x["exp"].high:
            o = scenes[r.index]["objects"][1]
            if scenes[r.index]["objects"][0]["shape"] != x["truth"].split("=")[1]:
                continue
            assert R.other_object_counts(x["exp"], scenes, x["truth"], syn)[r.index][0] == sum(
                o["shape"] in c.text.split() or o["color"] in c.text.split() for c in r.captions)
    assert c["n"] == 4
    # broken: CLIP sees the whole view in the full pipeline (fresh cache, same keys)
    broken = tiny_falcon(tmp_path / "b", TOPK)
    with monkeypatch.context() as m:
        m.setattr(Explainer, "_boxes", R._whole_boxes)
        full_b = rows(broken)
    assert all(r.box == whole for row in full_b for r in row["exp"].high)
    b = R.no_crop_other_object_check("tiny", scenes, syn, full_b, rows(R.no_crop(broken)))
    assert b["difference"] == 0.0 and not b["ok"]


def test_compare_pairs_run_the_conditional_rule_once():
    """The side-by-side table: every counterfactual rule with each threshold on L (absolute,
    relative, ratio), and the conditional rule (which decides without L) once, with the settings'
    own counterfactual rule."""
    pairs = R.compare_pairs("quantile")
    assert len(pairs) == len(set(pairs)) == 4 * 3 + 1
    assert [p for p in pairs if p[1] == "conditional"] == [("quantile", "conditional")]
    assert {p for p in pairs if p[1] != "conditional"} == {
        (r, t) for r in ("global", "twins", "quantile", "clip")
        for t in ("absolute", "relative", "ratio")}
