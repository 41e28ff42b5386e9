"""For every namespace of the disk cache: a truncated file, garbage after a valid header, a valid
file of the wrong shape (arrays) or of the wrong structure (JSON) is moved aside and recomputed,
and the explanation is the same as on a clean run.

One tiny world (random ResNet-18, tiny CLIP, 32 images + one unreadable, a caption file): the
models are built once; each case gets a fresh Falcon over the same cache folder, so the damaged
file is read from disk.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import falcon_core.cache_format as fmt
from falcon_core.cache import DiskCache
from falcon_core.cache_format import TRAILER_SIZE
from falcon_core.pipeline import Falcon
from falcon_core.settings import FalconSettings
from makers import garbage_after_header, make_tiny_world, tiny_config, truncate_file

TOPK = FalconSettings(high_rule="topk", top_k=6)
# the relative spurious threshold: the CLIP's caption scale is measured and cached (in a cache
# folder of its own: its image embeddings are not read again once the scale is cached)
RELATIVE = TOPK.replace(spurious_rule="relative")
NAMESPACES = ["representations", "representation_errors", "text_embeddings", "cams",
              "crop_embeddings", "document_frequency", "caption_scale",
              "explanations"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_tiny_world(tmp_path_factory.mktemp("corruption-world"))
    (w["images"] / "circle" / "broken.png").write_bytes(b"\x89PNG not really")
    cfg = tiny_config(w)
    parts = dict(backbone=cfg.build_backbone(), clip=cfg.build_clip())
    parts["probe"] = cfg.build_probe(parts["backbone"])
    parts["vocabulary"] = cfg.build_vocabulary()
    w["parts"] = parts
    w["cache"] = w["base"] / "cache"
    w["relative"] = {"cache": w["base"] / "cache-relative"}
    f = make(w)
    # a feature whose explanation has counterfactual images (so image embeddings are cached)
    w["feature"] = next(i for i in range(64)
                        if len(f.select_low(i, f.select_high(i).indices).indices) > 0)
    exp = f.explain(w["feature"])
    w["clean"] = exp.to_json()
    w["skipped"] = f.skipped_images
    assert w["skipped"], "the broken image is recorded in representation_errors"
    rel = w["relative"]
    rel["clean"] = make(w, relative=True).explain(w["feature"]).to_json()
    rel.update(parts=w["parts"], skipped=w["skipped"])
    for ns in NAMESPACES:
        assert files_of(w, ns) or files_of(rel, ns), f"nothing cached in {ns}"
    return w


def make(w, notes=None, relative: bool = False) -> Falcon:
    root = w["relative"]["cache"] if relative else w["cache"]
    cache = DiskCache(root, on_notice=(notes.append if notes is not None else None))
    return Falcon(**w["parts"], settings=RELATIVE if relative else TOPK, cache=cache)


def files_of(w, ns):
    d = w["cache"] / ns
    return sorted(p for p in d.glob("*") if p.is_file() and p.suffix in (".npy", ".json")) \
        if d.is_dir() else []


def truncated(path):
    truncate_file(path, 2 / 3)


def wrong_shape_or_schema(path):
    """A valid file with a correct checksum, but not what its namespace holds."""
    if path.suffix == ".npy":
        arr = np.load(path)
        wrong = arr[:-1] if arr.shape[0] > 1 else np.concatenate([arr, arr])
        fmt.atomic_write(path, lambda f: fmt.write_npy(f, wrong), checksum=True)
    else:
        data = json.loads(path.read_bytes()[:-TRAILER_SIZE])
        wrong = [1] if isinstance(data, dict) and "features" not in data else \
            {**data, "words": [{"text": 3, "score": "high"}]}
        text = json.dumps(wrong).encode()
        fmt.atomic_write(path, lambda f: f.write(text), checksum=True)


def wrong_width(path):
    """A valid array with one column fewer (rows of another model)."""
    if path.suffix != ".npy":
        data = json.loads(path.read_bytes()[:-TRAILER_SIZE])
        wrong = {"0": 1} if isinstance(data, dict) and "features" not in data else \
            {**data, "version": 99}
        text = json.dumps(wrong).encode()
        fmt.atomic_write(path, lambda f: f.write(text), checksum=True)
        return
    arr = np.load(path)
    wrong = np.ascontiguousarray(arr[..., :-1])
    fmt.atomic_write(path, lambda f: fmt.write_npy(f, wrong), checksum=True)


def wrong_dtype(path):
    if path.suffix != ".npy":
        return wrong_shape_or_schema(path)
    arr = np.load(path).astype(np.float64)
    fmt.atomic_write(path, lambda f: fmt.write_npy(f, arr), checksum=True)


@pytest.mark.parametrize("damage", [truncated, garbage_after_header, wrong_shape_or_schema,
                                    wrong_width, wrong_dtype], ids=lambda d: d.__name__)
@pytest.mark.parametrize("ns", NAMESPACES)
def test_a_damaged_entry_is_recomputed_and_the_result_is_that_of_a_clean_run(world, ns, damage):
    relative = ns == "caption_scale"
    make_ = lambda w, notes=None: make(w, notes, relative)  # noqa: E731
    if relative:
        world = {**world["relative"], "feature": world["feature"], "relative": world["relative"]}
    if ns != "explanations":  # the explanation must be recomputed for the damaged piece to be read
        shutil.rmtree(world["cache"] / "explanations", ignore_errors=True)
    shutil.rmtree(world["cache"] / "quarantine", ignore_errors=True)
    damaged = files_of(world, ns)
    for p in damaged:
        damage(p)
    notes: list[str] = []
    f = make_(world, notes)
    exp = f.explain(world["feature"])
    assert exp.to_json() == world["clean"]
    assert f.skipped_images == world["skipped"]
    # each damaged file: moved aside with a note of why, said once; a good file in its place
    moved = sorted(p.name for p in (world["cache"] / "quarantine" / ns).glob("*")
                   if not p.name.endswith(".txt"))
    assert len(moved) == len(damaged), (moved, damaged)
    assert len([n for n in notes if f"{ns}/" in n]) == len(damaged), notes
    assert all("kept for a bug report" in n for n in notes)
    for p in damaged:
        assert p.is_file() and p.read_bytes()[-TRAILER_SIZE:][:8] == b"FALCONCK"
    # and the next run reads them without a word
    later: list[str] = []
    assert make_(world, later).explain(world["feature"]).to_json() == world["clean"]
    assert later == []
