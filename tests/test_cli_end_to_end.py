"""The whole pipeline through the command line, on models and images the test makes itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from makers import make_captions, make_image_folder, make_resnet18_checkpoint, make_tiny_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-world")
    images = make_image_folder(base / "images")
    captions = make_captions(base / "captions.txt")
    config, clip_ckpt = make_tiny_clip(base / "clip")
    backbone = make_resnet18_checkpoint(base / "resnet18.pth", prefix="module.")
    return {"images": images, "captions": captions, "clip_config": config,
            "clip_ckpt": clip_ckpt, "backbone": backbone, "cache": base / "cache"}


def run_cli(world, *args, cache=None):
    cmd = [sys.executable, "-m", "falcon_core", *args,
           "--backbone", "resnet18", "--weights", str(world["backbone"]),
           "--clip", str(world["clip_config"]), "--clip-pretrained", str(world["clip_ckpt"]),
           "--probe", str(world["images"]), "--vocabulary", str(world["captions"]),
           "--cache-dir", str(cache or world["cache"]), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def cache_files(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_size for p in cache.rglob("*") if p.is_file()}


def test_explain_prints_a_full_explanation_as_json(world):
    res = run_cli(world, "explain", "5", "--json", "--rule", "topk", "--top-k", "6")
    assert res.returncode == 0, res.stderr
    exp = json.loads(res.stdout)
    assert exp["features"] == [5]
    assert len(exp["high"]) == 6
    acts = [r["activation"] for r in exp["high"]]
    assert acts == sorted(acts, reverse=True)
    for r in exp["high"]:
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
        assert 1 <= len(r["captions"]) <= 5
        scores = [c["score"] for c in r["captions"]]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= s <= 1.0 for s in scores)
    # every setting that produced it is recorded, with the rule that was asked for
    assert exp["settings"]["high_rule"] == "topk" and exp["settings"]["top_k"] == 6
    assert exp["settings"]["cam_threshold"] == 0.6
    assert exp["high_selection"]["n_used"] == 6
    assert set(exp["inputs"]) >= {"backbone", "clip", "probe", "vocabulary", "layer"}
    # concepts come from the captions (random CLIP: which ones is noise, but they are real words)
    vocab_words = set(world["captions"].read_text().replace("\t", " ").lower().split())
    assert exp["words"], "no concept extracted"
    for c in exp["words"] + exp["spurious_words"]:
        assert c["text"] in vocab_words or c["text"] in {"dog", "run"}
    assert len(exp["words"]) <= 8


def test_explain_table_and_csv_export(world, tmp_path):
    out = tmp_path / "exp.csv"
    res = run_cli(world, "explain", "2", "7", "--rule", "topk", "--top-k", "4", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "FALCON explanation of features 2 + 7" in res.stdout
    header = out.read_text().splitlines()[0]
    assert header == "features,kind,concept,rank,t_score,l_score,status"


def test_second_run_comes_from_the_cache(world):
    args = ("explain", "5", "--json", "--rule", "topk", "--top-k", "6")
    first = run_cli(world, *args)
    before = cache_files(world["cache"])
    second = run_cli(world, *args)
    assert first.returncode == second.returncode == 0
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert cache_files(world["cache"]) == before  # nothing recomputed or rewritten


@pytest.mark.parametrize("args, message", [
    (("explain", "512"), "out of range"),
    (("explain", "-1"), "out of range"),
    (("explain", "3", "3"), "repeat"),
    (("explain", "3", "--layer", "layer9"), "layer9"),
])
def test_bad_input_gives_a_message_and_keeps_the_cache(world, args, message):
    ok = run_cli(world, "explain", "5", "--json", "--rule", "topk", "--top-k", "6")
    assert ok.returncode == 0
    before = cache_files(world["cache"])
    res = run_cli(world, *args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert message in res.stderr.lower()
    after = cache_files(world["cache"])
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k.endswith(".tmp")]


def test_empty_folder_and_missing_vocabulary(world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    w = dict(world, images=empty)
    res = run_cli(w, "explain", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "contains no images" in res.stderr
    w = dict(world, captions=tmp_path / "missing.txt")
    res = run_cli(w, "explain", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_global_rule_with_no_high_image_says_what_to_do(world):
    # alpha = mean + 50 std is above every activation
    res = run_cli(world, "explain", "5", "--alpha-std", "50")
    assert res.returncode == 2
    assert "No highly activating image" in res.stderr
    assert "top-k" in res.stderr


def _groups_by_hand(world, alpha_std, min_images):
    """Stage 8 under the global rule, by hand: each image's set of features above
    alpha = mean + alpha_std * std of the row-normalised representations."""
    from falcon_core.pipeline import Falcon
    from falcon_core.workspace import WorkspaceConfig

    cfg = WorkspaceConfig(backbone="resnet18", weights=str(world["backbone"]),
                          clip=str(world["clip_config"]), clip_pretrained=str(world["clip_ckpt"]),
                          probe=str(world["images"]), vocabulary=str(world["captions"]))
    H, _ = Falcon.from_config(cfg, cache_dir=str(world["cache"])).representations()
    H = np.asarray(H, dtype=np.float64)
    Hn = H / np.linalg.norm(H, axis=1, keepdims=True)
    alpha = Hn.mean() + alpha_std * Hn.std()
    sigs: dict[tuple[int, ...], int] = {}
    for row in Hn:
        sig = tuple(int(f) for f in np.flatnonzero(row > alpha))
        if len(sig) >= 2:
            sigs[sig] = sigs.get(sig, 0) + 1
    return sorted(([list(sig), n] for sig, n in sigs.items() if n >= min_images),
                  key=lambda g: (-g[1], g[0]))


def test_failures_and_groups_commands(world):
    # alpha = mean + 3 std leaves about 4 features per image: several images share a signature
    res = run_cli(world, "groups", "--json", "--alpha-std", "3", "--group-min-images", "2",
                  "--limit", "3")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    expected = _groups_by_hand(world, 3.0, 2)
    assert len(expected) > 3, "the test wants more groups than the limit"
    assert data["total"] == len(expected)
    assert [[g["features"], g["images"]] for g in data["groups"]] == expected[:3]
    assert data["rule"].startswith("features above α = ")
    # the random ResNet-18 checkpoint has an ImageNet-sized head but the folder's classes
    # (circle, square) are not ImageNet classes: a clear message, no traceback
    res = run_cli(world, "failures")
    assert res.returncode == 2 and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["explain", "groups", "failures", "precompute", "info"])
def test_help(command):
    res = subprocess.run([sys.executable, "-m", "falcon_core", command, "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0
    assert "--backbone" in res.stdout and "--cam-threshold" in res.stdout
