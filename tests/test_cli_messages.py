"""What the command line tells its user: where a file went, whether a result came from the cache
and how long it all took, how many failures are listed, whether an image is classified
correctly, what to change when nothing is found, unreadable images and vocabulary notes in the
table, and classes told apart by id (two classes may share a name)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from falcon_core import cli
from makers import (make_captions, make_image_folder, make_tiny_clip,
                    make_torchvision_checkpoint)

CLASS_IDS = ["n02012849", "n03126707"]  # ImageNet's two "crane" classes: the bird, the machine


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Coloured circles and squares in folders named by class id (circle -> the crane bird,
    square -> the crane machine), a random ResNet-18 with a two-class head, a tiny CLIP, and a
    caption file with a blank and a duplicate line; one folder has a corrupt image."""
    base = tmp_path_factory.mktemp("cli-messages")
    shapes = make_image_folder(base / "shapes", n_per_kind=2)
    images = base / "images"
    for folder, cid in (("circle", CLASS_IDS[0]), ("square", CLASS_IDS[1])):
        shutil.copytree(shapes / folder, images / cid)
    (images / CLASS_IDS[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    captions = make_captions(base / "captions.txt")
    config, clip_ckpt = make_tiny_clip(base / "clip")
    backbone = make_torchvision_checkpoint(base / "two_class.pth", num_classes=2)
    return {"images": images, "captions": captions, "clip_config": config,
            "clip_ckpt": clip_ckpt, "backbone": backbone, "cache": base / "cache",
            "classes": f"{CLASS_IDS[0]}=crane,{CLASS_IDS[1]}=crane"}


def run(world, capsys, command, *args, cache=None, classes=True):
    """``python -m falcon_core command ...`` in this process (the tiny world; top-4 rule unless
    ``args`` say otherwise): ``(exit code, stdout, stderr)``."""
    argv = [command, "--backbone", "resnet18", "--weights", str(world["backbone"]),
            "--clip", str(world["clip_config"]), "--clip-pretrained", str(world["clip_ckpt"]),
            "--probe", str(world["images"]), "--vocabulary", str(world["captions"]),
            "--cache-dir", str(cache or world["cache"]), "--no-progress",
            "--rule", "topk", "--top-k", "4", *args]
    if classes:
        argv += ["--class-names", world["classes"]]
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_out_says_where_it_wrote(world, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(world, capsys, "explain", "3", "--out", "f3.csv")
    assert code == 0
    assert f"saved the concepts (CSV) to {(tmp_path / 'f3.csv').resolve()}" in err
    assert (tmp_path / "f3.csv").read_text().startswith("features,kind,concept")
    code, out, err = run(world, capsys, "explain", "3", "--json", "--out", "sub.json",
                         cache=world["cache"])
    assert code == 0 and json.loads(out)["features"] == [3]  # stdout stays JSON
    assert f"saved the explanation (JSON) to {(tmp_path / 'sub.json').resolve()}" in err


def test_a_cached_explanation_says_so_with_the_real_time(world, capsys):
    run(world, capsys, "explain", "5")
    code, out, _ = run(world, capsys, "explain", "5")
    assert code == 0
    m = re.search(r"\(from the cache: ([\d.]+) s; ([\d.]+) s in all, ([\d.]+) s of it loading",
                  out)
    assert m, out[-300:]
    read, total, loading = map(float, m.groups())
    assert total >= loading > 0 and total >= read
    assert "(0.0 s)" not in out
    code, out, _ = run(world, capsys, "explain", "6", "--alpha-std", "1.5", "--rule", "global")
    assert "explained in" in out or code == 2  # computed now (or no image passes α)


def test_table_shows_unreadable_images_and_vocabulary_notes(world, capsys):
    code, out, _ = run(world, capsys, "explain", "3")
    assert code == 0
    assert "could not be read and are skipped" in out and "broken.png" in out
    # captions.txt has a blank line and a duplicate line (tests/makers.py)
    assert re.search(r"Vocabulary: \d+ lines read, \d+ captions kept; lines 1 blank, "
                     r"1 duplicate", out), out[-600:]


def test_failures_are_labelled_by_class_id_and_listed_with_how_many(world, capsys):
    code, out, _ = run(world, capsys, "failures", "--json", "--limit", "0")
    assert code == 0
    data = json.loads(out)
    fails = data["failures"]
    assert data["total"] == len(fails) > 1  # a random head gets some wrong
    names = {f["true_name"] for f in fails} | {f["predicted_name"] for f in fails}
    # the same name, told apart by id: never "true crane, predicted crane"
    assert names <= {f"crane ({CLASS_IDS[0]})", f"crane ({CLASS_IDS[1]})"}
    for f in fails:
        assert f["true_name"] != f["predicted_name"]
        assert f["id"].split("/")[0] == CLASS_IDS[f["true"]]
    code, out, _ = run(world, capsys, "failures", "--limit", "1")
    assert f"showing 1 of {len(fails)} (--limit N for more, --limit 0 for all)" in out


def test_failures_image_says_correct_or_not(world, capsys):
    from falcon_core import Falcon
    from makers import tiny_config

    falcon = Falcon.from_config(tiny_config(
        {"backbone": world["backbone"], "clip_config": world["clip_config"],
         "clip_ckpt": world["clip_ckpt"], "images": world["images"],
         "captions": world["captions"]}, class_names=world["classes"]),
        cache_dir=str(world["cache"]))
    H, valid = falcon.representations()
    head = falcon.backbone.head
    pred = (H @ head.weight.detach().numpy().T + head.bias.detach().numpy()).argmax(axis=1)
    labels = np.array([CLASS_IDS.index(i.split("/")[0]) for i in falcon.probe.ids])
    right = [int(i) for i in np.flatnonzero((pred == labels) & valid)]
    wrong = [int(i) for i in np.flatnonzero((pred != labels) & valid)]
    assert right and wrong
    code, out, _ = run(world, capsys, "failures", "--image", str(right[0]))
    assert code == 0 and "correctly classified" in out.splitlines()[0]
    assert "toward the true class" not in out  # the same as toward the prediction
    code, out, _ = run(world, capsys, "failures", "--image", str(wrong[0]))
    assert code == 0 and out.splitlines()[0].endswith("misclassified")
    assert "toward the true class" in out


def test_failures_checks_labels_before_stage_1(world, capsys, tmp_path):
    cache = tmp_path / "cache"
    code, _, err = run(world, capsys, "failures", cache=cache, classes=False)
    assert code == 2 and "class names are unknown" in err
    assert not list(cache.glob("representations/*")), "Stage 1 ran before the check"


def test_groups_with_none_says_what_to_change(world, capsys):
    code, out, _ = run(world, capsys, "groups", "--group-min-images", "1000")
    assert code == 0
    assert out.startswith("0 groups")
    assert "No set of two or more features is high on the same 1000 or more images" in out
    assert "--group-min-images 5 gives" in out or "No single setting change gives a group" in out
    code, out, _ = run(world, capsys, "groups", "--json", "--group-min-images", "1000")
    hints = json.loads(out)["hint"]
    for h in hints:  # each suggestion really gives that many groups
        flag = "--" + h["setting"].replace("_", "-")
        code, again, _ = run(world, capsys, "groups", "--json", "--group-min-images", "1000",
                             flag, str(h["value"]))
        assert json.loads(again)["total"] == h["groups"] > 0


def test_precompute_says_why_nothing_was_explained(world, capsys):
    code, out, _ = run(world, capsys, "precompute", "--features", "1", "2", "--rule", "global",
                       "--alpha-std", "50")
    assert code == 1
    assert "explained 0 of 2 features" in out
    assert "2 without an explanation (features 1, 2): No highly activating image" in out
