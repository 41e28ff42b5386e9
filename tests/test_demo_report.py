"""The README's demo figures come from the committed manifest (never hand-copied), and issue 7's
targets are checked against it with the right thresholds and directions."""

import pytest

from falcon_core.demo import report
from falcon_core.demo.assets import read_manifest
from falcon_core.demo.world import ASSETS_DIR
from falcon_core.errors import FalconError


def _manifest(shape=0.95, color=0.9, pattern=0.8999, size=1.0, background=0.95, absent_scene=0.05,
              absent_crop=0.0501):
    crop = {"shape": shape, "color": color, "pattern": pattern, "size": size}
    rates = {"star": {"grass": 0.3, "brick": 0.1, "sand": None, "wood": 0.2},
             "heart": {"grass": 0.0, "brick": 0.4, "sand": 0.2, "wood": 0.0}}
    return {"clip": {"crop_top1": {"gradcam": crop},
                     "scene_top1": {"background": background, "shape": 0.5},
                     "named_when_absent": {"scene": {"k": 5, "max": absent_scene, "worst": "star on grass",
                                                     "rates": rates},
                                           "gradcam_crop": {"k": 5, "max": absent_crop, "worst": "heart on brick",
                                                            "rates": rates}}},
            "backbone": {"planted": [{"correlation": "shape=star -> background=grass"},
                                     {"correlation": "shape=cross -> pattern=checkered"},
                                     {"correlation": "shape=heart -> background=brick"},
                                     {"correlation": "color=purple -> background=sand"}]}}


def test_targets_thresholds_and_directions():
    rows = {r["figure"].split(" (")[0]: r for r in report.targets(_manifest())}
    met = {k: r["met"] for k, r in rows.items()}
    assert met == {"crop top-1, shape": True, "crop top-1, color": True, "crop top-1, pattern": False,
                   "crop top-1, size": True, "scene top-1, background": True,
                   "named when absent, max over shapes x backgrounds, whole scenes": True,
                   "named when absent, max over shapes x backgrounds, GradCAM-like crops": False}
    assert rows["crop top-1, pattern"]["gap"] == pytest.approx(0.0001)
    assert rows["named when absent, max over shapes x backgrounds, GradCAM-like crops"]["gap"] == pytest.approx(0.0001)
    assert rows["crop top-1, shape"]["gap"] == 0
    low = {r["figure"]: r["met"] for r in report.targets(_manifest(background=0.9499))}
    assert low["scene top-1, background"] is False


def test_planted_absent_compares_the_planted_background_with_the_others():
    pa = report.planted_absent(_manifest())
    # only shape -> background correlations; star: grass 0.3 vs (0.1, 0.2) (sand has no scene);
    # heart: brick 0.4 vs (0.0, 0.2, 0.0)
    assert [(p["shape"], p["background"]) for p in pa] == [("star", "grass"), ("heart", "brick")]
    assert pa[0]["on_planted"] == 0.3 and pa[0]["elsewhere"] == pytest.approx(0.15)
    assert pa[1]["on_planted"] == 0.4 and pa[1]["elsewhere"] == pytest.approx(0.0667, abs=1e-4)


def test_replace_block_keeps_the_rest_and_needs_its_markers():
    b, e = report._markers("demo-figures")
    text = f"intro\n{b}\nold figures\nmore\n{e}\noutro\n"
    new = report.replace_block(text, "demo-figures", "| a | b |")
    assert new == f"intro\n{b}\n| a | b |\n{e}\noutro\n"
    assert report.block(new, "demo-figures") == "| a | b |"
    with pytest.raises(FalconError, match="demo-summary"):
        report.replace_block(text, "demo-summary", "x")
    with pytest.raises(FalconError):
        report.replace_block(text + text, "demo-figures", "x")


@pytest.mark.parametrize("rel", list(report.README_BLOCKS))
def test_committed_readmes_show_the_committed_manifest(rel):
    name, fill = report.README_BLOCKS[rel]
    text = (ASSETS_DIR.parent / rel).read_text()
    assert report.block(text, name) == fill(read_manifest()), (
        f"{rel} is out of date with assets/demo_manifest.json: run `python -m falcon_core.demo info --write-readme`")
