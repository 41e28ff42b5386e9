"""The command line's error paths: an export that cannot be written, bad settings (NaN, out of
range), a precompute that explains nothing, what `info` shows of unreadable images, a cache
folder that cannot be used, caption files that are not UTF-8, CLIP checkpoints that do not fit.
Each case: a message and what to do, never a traceback, and what could be computed is printed."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

import falcon_core.cache_format as fmt
from falcon_core import cli
from makers import cache_snapshot, make_tiny_world

F = "5"
TOPK = ["--rule", "topk", "--top-k", "6"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_tiny_world(tmp_path_factory.mktemp("cli-safety"))
    (w["images"] / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (w["images"] / "square" / "empty.jpg").write_bytes(b"")
    w["cache"] = w["base"] / "cache"
    return w


def run(world, capsys, *args, cache=None, **changes):
    ws = {"backbone": "resnet18", "weights": world["backbone"], "clip": world["clip_config"],
          "clip-pretrained": world["clip_ckpt"], "probe": world["images"],
          "vocabulary": world["captions"]}
    ws.update({k.replace("_", "-"): v for k, v in changes.items()})
    argv = list(args)
    for k, v in ws.items():
        argv += [f"--{k}", str(v)]
    argv += ["--cache-dir", str(cache or world["cache"]), "--no-progress"]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_out_to_a_missing_folder_prints_the_result_and_says_why(world, capsys, tmp_path):
    target = tmp_path / "no" / "such" / "f.csv"
    rc, out, err = run(world, capsys, "explain", F, *TOPK, "--out", str(target))
    assert rc == 2
    assert "FALCON explanation of feature 5" in out  # the computed result is still printed
    assert f"the folder {target.parent} does not exist" in err
    assert "what to do: Create the folder first" in err
    assert not target.parent.exists()


def test_out_under_a_file_or_onto_a_folder(world, capsys, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    rc, out, err = run(world, capsys, "explain", F, *TOPK, "--json", "--out",
                       str(blocker / "f.json"))
    assert rc == 2 and json.loads(out)["features"] == [5]
    assert "is a file, not a folder" in err
    rc, out, err = run(world, capsys, "explain", F, *TOPK, "--out", str(tmp_path))
    assert rc == 2 and "it is a folder" in err


def test_out_on_a_full_disk_leaves_no_half_file(world, capsys, tmp_path, monkeypatch):
    real = fmt.atomic_write

    def full(path, writer, checksum=False):
        def half(f):
            f.write(b"{\"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, half, checksum)

    monkeypatch.setattr(fmt, "atomic_write", full)
    target = tmp_path / "f.json"
    rc, out, err = run(world, capsys, "explain", F, *TOPK, "--out", str(target))
    assert rc == 2 and "FALCON explanation" in out
    assert "No space left on device" in err
    assert not target.exists() and not list(tmp_path.glob("*.tmp"))


def test_out_works(world, capsys, tmp_path):
    rc, out, err = run(world, capsys, "explain", F, *TOPK, "--out", str(tmp_path / "f.csv"))
    assert rc == 0 and (tmp_path / "f.csv").read_text().startswith("features,kind,concept")


@pytest.mark.parametrize("flags, words", [
    (["--epsilon", "nan"], "low_threshold=nan is not a finite number"),
    (["--alpha-std", "nan"], "alpha_std=nan is not a finite number"),
    (["--alpha-std", "inf"], "alpha_std=inf is not a finite number"),
    (["--beta", "5"], "beta=5.0 is out of range: it must be between -1 and 1"),
    (["--top-k", "0"], "top_k=0 is out of range: it must be between 1 and 1000"),
])
def test_bad_settings_get_a_message_and_a_hint(world, capsys, flags, words):
    rc, out, err = run(world, capsys, "explain", F, *flags)
    assert rc == 2 and out == ""
    assert f"error: Setting {words}" in err
    assert "what to do:" in err and "default" in err


def test_precompute_that_explains_nothing_says_why_and_fails(world, capsys):
    rc, out, err = run(world, capsys, "precompute", "--features", "3", "4",
                       "--alpha-std", "100")
    assert rc == 1
    assert "explained 0 of 2 features" in out
    assert "2 without an explanation (features 3, 4): No highly activating image: No image " \
           "has the feature > α" in out
    assert "what to do:" in out and "top-k" in out
    assert "none of the 2 features could be explained" in err
    rc, out, err = run(world, capsys, "precompute", "--features", "3", *TOPK)
    assert rc == 0 and "explained 1 of 1" in out


def test_info_lists_the_unreadable_images_from_the_cache(world, capsys):
    run(world, capsys, "explain", F, *TOPK)  # Stage 1 is cached, with its unreadable images
    rc, out, err = run(world, capsys, "info")
    assert rc == 0
    info = json.loads(out)
    assert info["status"]["representations"] is True
    bad = info["workspace"]["probe"]["bad_images"]
    assert set(bad) == {"square/broken.png", "square/empty.jpg"}, bad
    assert set(info["skipped_images"]) == set(bad)
    assert all(bad.values())


def test_a_cache_folder_that_is_a_file(world, capsys, tmp_path):
    root = tmp_path / "cache-file"
    root.write_text("not a folder")
    rc, out, err = run(world, capsys, "explain", F, *TOPK, cache=root)
    assert rc == 0 and "FALCON explanation of feature 5" in out
    assert err.count("is a file, not a folder") == 1  # said once
    assert "What to do: Set FALCON_CACHE (or --cache-dir)" in err
    assert root.read_text() == "not a folder"


def test_a_full_disk_still_prints_the_result(world, capsys, tmp_path, monkeypatch):
    room = [200_000]

    def write(f, data):
        n = len(memoryview(data).cast("B"))
        if n > room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= n
        f.write(data)

    monkeypatch.setattr(fmt, "_write_chunk", write)
    root = tmp_path / "small-disk"
    rc, out, err = run(world, capsys, "explain", F, *TOPK, "--json", cache=root)
    assert rc == 0 and json.loads(out)["features"] == [5]
    assert err.count("is full") == 1 and "Free some disk space" in err
    files = cache_snapshot(root)
    assert not [k for k in files if k.endswith(".tmp")]
    for k in files:  # only complete files with their checksum
        assert (root / k).read_bytes()[-32:][:8] == b"FALCONCK", k


def test_a_read_only_cache_still_prints_the_result(world, capsys, tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fmt.tempfile, "mkstemp", denied)
    rc, out, err = run(world, capsys, "explain", F, *TOPK, cache=tmp_path / "ro")
    assert rc == 0 and "FALCON explanation" in out
    assert err.count("cannot be written (Permission denied)") == 1


def test_a_latin1_caption_file(world, capsys, tmp_path):
    lines = [f"a {c} {s} on a grey background" for c in ("red", "blue", "green", "yellow")
             for s in ("circle", "square")] * 2
    lines[3] = "un café crème près du carré rouge"  # Latin-1 below
    lines = list(dict.fromkeys(lines))
    path = tmp_path / "latin1.txt"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    rc, out, err = run(world, capsys, "explain", F, *TOPK, "--json", vocabulary=path)
    assert rc == 0
    assert "1 of the 9 lines of latin1.txt are not valid UTF-8 and were left out " \
           "(the first is line 4)" in err
    assert "iconv" in err
    assert "\ufffd" not in out  # never a replacement character in concepts or captions
    mostly = tmp_path / "mostly.txt"
    mostly.write_bytes("\n".join(["café", "thé", "crème", "a red car"]).encode("latin-1"))
    rc, out, err = run(world, capsys, "explain", F, *TOPK, vocabulary=mostly)
    assert rc == 2 and "is not UTF-8 text: 3 of its 4 lines do not decode" in err


def test_clip_checkpoints_that_do_not_fit_name_their_keys(world, capsys, tmp_path):
    sd = torch.load(world["clip_ckpt"], weights_only=True)
    keys = sorted(sd)
    bad = {k: v for k, v in sd.items() if k not in keys[:3]}
    bad["extra.head.weight"] = torch.zeros(2)
    torch.save(bad, tmp_path / "keys.pt")
    rc, out, err = run(world, capsys, "explain", F, clip_pretrained=tmp_path / "keys.pt")
    assert rc == 2
    assert "does not fit the CLIP model" in err
    assert "3 weights of the model are not in the file (" + ", ".join(keys[:3]) + ")" in err
    assert "1 weights in the file are not in the model (extra.head.weight)" in err
    (tmp_path / "random.pt").write_bytes(os.urandom(3000))
    rc, out, err = run(world, capsys, "explain", F, clip_pretrained=tmp_path / "random.pt")
    assert rc == 2 and "cannot be used" in err and "not a PyTorch checkpoint" in err
    assert "weights_only" not in err

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w": Payload()}, tmp_path / "pickle.pt")
    rc, out, err = run(world, capsys, "explain", F, clip_pretrained=tmp_path / "pickle.pt")
    assert rc == 2 and "refused for safety" in err and "weights_only" not in err


def test_the_demo_world_with_a_cache_folder_that_is_a_file(capsys, tmp_path, monkeypatch):
    """The demo world renders its scenes on demand and ships its heavy inputs, so it runs
    without a cache folder: the explanation is printed, computed in memory, and the problem is
    said with what to do (no traceback)."""
    root = tmp_path / "cache-file"
    root.write_text("not a folder")
    monkeypatch.setenv("FALCON_CACHE", str(root))
    rc = cli.main(["explain", "7", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err
    assert "FALCON explanation of feature 7" in out
    assert f"note: The cache folder {root} is a file, not a folder." in err
    assert "What to do: Set FALCON_CACHE (or --cache-dir)" in err
    assert root.read_text() == "not a folder"  # nothing written over the user's file
