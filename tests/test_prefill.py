"""Issue 9, the app's first start: results shipped in assets/prefill/ are used only when they
were made from exactly these inputs and this code (else ignored and computed), and the demo probe
set renders its scenes on demand with the same pixels."""

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from falcon_core.cache import DiskCache
from falcon_core.demo import prefill
from falcon_core.demo.assets import probe_scenes, vocabulary_captions
from falcon_core.demo.integration import demo_probe
from falcon_core.demo.world import DEFAULT_WORLD, load_world
from falcon_core.pipeline import Falcon
from falcon_core.workspace import WorkspaceConfig
from makers import make_tiny_world, tiny_config

ENTRIES = list(prefill.CACHE_ENTRIES)


# ------------------------------------------------------------------------------ a tiny workspace

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny workspace, its results shipped into a folder by ``produce`` (fresh computation)."""
    base = tmp_path_factory.mktemp("prefill-world")
    world = make_tiny_world(base)
    config = tiny_config(world)
    shipped = base / "shipped"
    manifest = prefill.produce(shipped, config=config, say=lambda s: None)
    return {"config": config, "shipped": shipped, "manifest": manifest, "base": base}


def _open(config, cache_dir, shipped=None, monkeypatch=None):
    """The workspace opened on an empty cache, installing from ``shipped`` (None: nothing)."""
    monkeypatch.setenv("FALCON_PREFILL", "off")  # from_config must not install the assets' ones
    falcon = Falcon.from_config(config, cache_dir=str(cache_dir))
    monkeypatch.delenv("FALCON_PREFILL")
    got = prefill.install(falcon, shipped) if shipped is not None else {}
    return falcon, got


def _value(falcon, name):
    """The pipeline's value of entry ``name`` (computed unless it is in the cache)."""
    if name == "representations":
        return np.array(falcon.representations()[0])
    if name == "text_embeddings":
        return np.array(falcon.text_embeddings())
    if name == "concept_table":
        return falcon.concept_table().to_json()
    if name == "document_frequency":
        df = falcon.document_frequencies()
        return {"words": df.words, "phrases": df.phrases, "n": df.n_docs}
    if name == "view_embeddings":
        return np.array(falcon.view_embeddings())
    raise KeyError(name)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a == b
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


@pytest.fixture(scope="module")
def fresh(tiny):
    """Every entry's value computed by the pipeline in an empty cache, nothing installed."""
    mp = pytest.MonkeyPatch()
    try:
        falcon, _ = _open(tiny["config"], tiny["base"] / "fresh-cache", None, mp)
        return {name: _value(falcon, name) for name in ENTRIES}
    finally:
        mp.undo()


def _wrong_bytes(tiny, tmp_path, name) -> bytes:
    """A valid cache file of entry ``name`` holding wrong values (the cache would read it)."""
    rec = tiny["manifest"]["entries"][name]
    scratch = DiskCache(tmp_path / "scratch")
    data = gzip.decompress((tiny["shipped"] / rec["file"]).read_bytes())
    if name == "document_frequency":
        value = json.loads(data[:-32])
        value["words"] = {w: c + 7 for w, c in value["words"].items()}
        path = scratch.write_json(rec["namespace"], rec["key"], value)
    elif name == "concept_table":
        value = json.loads(data[:-32])
        value["word_rows"] = value["word_rows"][1:] + value["word_rows"][:1]  # rows shifted
        path = scratch.write_json(rec["namespace"], rec["key"], value)
    else:
        p = tmp_path / "orig.npy"
        p.write_bytes(data[:-32])
        arr = np.load(p)
        path = scratch.write_npy(rec["namespace"], rec["key"], (arr * 2 + 1).astype(arr.dtype))
    return path.read_bytes()


def _tampered_copy(tiny, tmp_path, name, *, source=None, key=None, payload=None,
                   keep_sha=False) -> tuple:
    """A copy of the shipped folder with entry ``name`` changed."""
    d = tmp_path / "tampered"
    shutil.copytree(tiny["shipped"], d)
    m = json.loads((d / prefill.MANIFEST_FILE).read_text())
    rec = m["entries"][name]
    if source:
        rec["source"].update(source)
    if key:
        rec["key"] = key
    if payload is not None:
        (d / rec["file"]).write_bytes(gzip.compress(payload))
        if not keep_sha:
            rec["sha256"] = prefill._sha256(payload)
    (d / prefill.MANIFEST_FILE).write_text(json.dumps(m))
    return d, m


FAILURES = prefill.FAILURES


def test_produce_writes_every_entry_with_its_sources(tiny):
    m = tiny["manifest"]
    # a caption file: no generated vocabulary; class names unknown: no failure explanations
    assert set(m["entries"]) == set(ENTRIES)
    for name, rec in m["entries"].items():
        assert (tiny["shipped"] / rec["file"]).is_file()
        assert rec["source"]["code"] == prefill.code_version(name)
    src = m["entries"]["view_embeddings"]["source"]
    from falcon_core.cache import hash_file

    assert src["backbone_sha256"] == hash_file(tiny["config"].weights)
    assert src["clip_sha256"] == hash_file(tiny["config"].clip_pretrained)


def test_matching_results_are_installed_and_nothing_is_computed(tiny, tmp_path, monkeypatch):
    falcon, got = _open(tiny["config"], tmp_path / "c", tiny["shipped"], monkeypatch)
    assert got == {n: "installed" for n in ENTRIES}

    def boom(*a, **k):
        raise AssertionError("computed although it was shipped")

    import falcon_core.stages.representations as reps

    monkeypatch.setattr(reps, "compute_representations", boom)
    monkeypatch.setattr(falcon.clip, "encode_texts", boom)
    monkeypatch.setattr(falcon.clip, "encode_images", boom)
    monkeypatch.setattr(type(falcon.extractor), "iter_extract", boom)
    for name in ENTRIES:
        assert _value(falcon, name) is not None
    assert prefill.install(falcon, tiny["shipped"]) == {n: "in the cache" for n in ENTRIES}


def test_matching_results_equal_a_fresh_computation(tiny, fresh, tmp_path, monkeypatch):
    falcon, got = _open(tiny["config"], tmp_path / "c", tiny["shipped"], monkeypatch)
    for name in ENTRIES:
        assert got[name] == "installed"
        assert _same(_value(falcon, name), fresh[name]), name


@pytest.mark.parametrize("name,what", [(n, "inputs") for n in ENTRIES] + [
    ("representations", "code"), ("view_embeddings", "code"), ("text_embeddings", "key"),
    ("document_frequency", "bytes"), ("representations", "bytes")])
def test_a_wrong_hash_is_ignored_and_the_result_is_computed(tiny, fresh, tmp_path, monkeypatch,
                                                            caplog, name, what):
    """Wrong values that the cache itself would accept are shipped under a wrong hash of what
    they came from (the weights or the vocabulary, the code, the cache key) or with bytes that do
    not match the manifest: they are ignored (with a warning) and the pipeline's result is the
    fresh computation."""
    wrong = _wrong_bytes(tiny, tmp_path, name)
    src_field = {"representations": "backbone_sha256", "view_embeddings": "clip_sha256",
                 "text_embeddings": "vocabulary", "document_frequency": "concepts",
                 "concept_table": "concepts"}[name]
    changes = {"inputs": dict(source={src_field: "0" * 64}),
               "code": dict(source={"code": "1" * 64}),
               "key": dict(key="2" * 64),
               "bytes": dict(keep_sha=True)}[what]
    shipped, _ = _tampered_copy(tiny, tmp_path, name, payload=wrong, **changes)
    with caplog.at_level(logging.WARNING, logger="falcon_core.demo.prefill"):
        falcon, got = _open(tiny["config"], tmp_path / "c", shipped, monkeypatch)
    assert got[name].startswith("ignored")
    assert any("ignored" in r.getMessage() and name in r.getMessage() for r in caplog.records)
    assert all(v == "installed" for n, v in got.items() if n != name)
    value = _value(falcon, name)
    assert _same(value, fresh[name])
    # the control: the wrong file is one the cache reads, so had it been installed, it is
    # what the pipeline would have returned
    other, _ = _open(tiny["config"], tmp_path / "c2", tiny["shipped"], monkeypatch)
    namespace, suffix = prefill.CACHE_ENTRIES[name]
    path = other.cache.path(namespace, prefill.entry_key(other, name), suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wrong)
    assert not _same(_value(other, name), value)


def test_another_workspace_is_left_alone(tiny, tmp_path, monkeypatch, caplog):
    other = tiny["config"].replace(layer="layer3")  # another backbone output: H and views differ
    with caplog.at_level(logging.WARNING, logger="falcon_core.demo.prefill"):
        falcon, got = _open(other, tmp_path / "c", tiny["shipped"], monkeypatch)
    # CLIP and vocabulary are shared
    assert set(got) == {"text_embeddings", "concept_table", "document_frequency"}
    assert all(v == "installed" for v in got.values())
    assert not any("ignored" in r.getMessage() for r in caplog.records)


def test_off_switch(tiny, tmp_path, monkeypatch):
    falcon, _ = _open(tiny["config"], tmp_path / "c", None, monkeypatch)
    monkeypatch.setenv("FALCON_PREFILL", "off")
    assert prefill.install(falcon, tiny["shipped"]) == {}


# ------------------------------------------------------------------------------ the committed ones

def test_the_committed_results_are_current():
    """Fails after the demo models, the world or the code that computes a shipped result changed
    without ``python -m falcon_core.demo prefill`` (then the app computes them again on first
    start, minutes on 2 cores)."""
    got = prefill.check()
    assert all(v == "usable" for v in got.values()), (
        f"{got}: run `python -m falcon_core.demo prefill` and commit assets/prefill/")


def test_the_committed_vocabulary_is_the_generated_one(tmp_path, monkeypatch, caplog):
    world = load_world(DEFAULT_WORLD)
    shipped = prefill.shipped_captions(world, 0)
    assert shipped is not None and len(shipped) == 24001
    assert shipped == vocabulary_captions(world, seed=0)  # generated in the test cache
    # wrong code hash, wrong captions with a matching sha256: ignored, generated instead
    d = tmp_path / "p"
    shutil.copytree(prefill.PREFILL_DIR, d)
    m = json.loads((d / prefill.MANIFEST_FILE).read_text())
    rec = m["entries"]["vocabulary"]
    bad = "\n".join(["a wrong caption"] * 10).encode()
    (d / rec["file"]).write_bytes(gzip.compress(bad))
    rec["sha256"] = prefill._sha256(bad)
    rec["source"]["code"] = "3" * 64
    (d / prefill.MANIFEST_FILE).write_text(json.dumps(m))
    with caplog.at_level(logging.WARNING, logger="falcon_core.demo.prefill"):
        assert prefill.shipped_captions(world, 0, d) is None
    assert any("vocabulary ignored" in r.getMessage() for r in caplog.records)
    # another seed: not made for it, nothing said
    assert prefill.shipped_captions(world, 1) is None


def test_the_committed_representations_and_views_equal_a_fresh_chunk(monkeypatch):
    """The first chunk of the shipped H and view embeddings, computed again the way the
    pipeline computes them (same rows, same batches): equal to the last bit."""
    from falcon_core.calibration import VIEW_CHUNK
    from falcon_core.representation_store import CHUNK_ROWS, Stage1Chunk

    monkeypatch.setenv("FALCON_PREFILL", "off")
    falcon = Falcon.from_config(WorkspaceConfig.demo())
    m = prefill.read_manifest()

    def shipped(name):
        rec = m["entries"][name]
        data = gzip.decompress((prefill.PREFILL_DIR / rec["file"]).read_bytes())[:-32]
        import io

        return np.load(io.BytesIO(data))

    H = shipped("representations")
    job = Stage1Chunk(falcon.backbone, falcon.probe, falcon.settings.batch_size)
    fresh, errors = job(0, CHUNK_ROWS)
    assert not errors and np.array_equal(H[:CHUNK_ROWS], fresh)
    V = shipped("view_embeddings")
    views = falcon.clip.encode_images([falcon.store.view(i) for i in range(VIEW_CHUNK)])
    assert np.array_equal(V[:VIEW_CHUNK], views.astype(np.float32))


# ------------------------------------------------------------------------------ the probe set

def _forget_render(n: int, seed: int) -> Path:
    """Remove the all-at-once render of (n, seed) from the demo cache (FALCON_TEST_CACHE may
    keep it between runs); its path."""
    from falcon_core.demo import assets

    key = assets._key("probe", load_world(None).hash, seed, n, 64)
    npy = assets.cache_dir() / f"probe-{key}.npy"
    npy.unlink(missing_ok=True)
    npy.with_suffix(".json").unlink(missing_ok=True)
    return npy


def test_scenes_render_on_demand_with_the_same_pixels():
    world = load_world(DEFAULT_WORLD)
    _forget_render(12, 4)
    probe = demo_probe(n=12, seed=4)
    assert probe.renders == 0
    first = [np.asarray(probe.load(i)) for i in (3, 0, 3)]
    assert probe.renders == 2  # 3 twice: rendered once
    images, _, labels, names = probe_scenes(world, n=12, seed=4)  # all at once (cached)
    assert np.array_equal(first[0], images[3]) and np.array_equal(first[1], images[0])
    assert np.array_equal(probe.labels, labels) and probe.class_names == names
    again = demo_probe(n=12, seed=4)  # the all-at-once render is cached now: read, not rendered
    assert np.array_equal(np.asarray(again.load(7)), images[7]) and again.renders == 0
    assert again.fingerprint == probe.fingerprint


def test_many_scenes_switch_to_one_cached_render(monkeypatch):
    from falcon_core.demo import scene_probe

    monkeypatch.setattr(scene_probe, "MATERIALISE_AFTER", 3)
    npy = _forget_render(10, 11)
    probe = demo_probe(n=10, seed=11)
    got = [np.asarray(probe.load(i)) for i in range(10)]
    assert probe.renders == 3  # then the whole set at once
    assert npy.exists()
    images = probe_scenes(n=10, seed=11)[0]
    assert all(np.array_equal(g, images[i]) for i, g in enumerate(got))


# ------------------------------------------------------------------------------ the Failures page's

@pytest.fixture(scope="module")
def classed(tmp_path_factory):
    """A tiny workspace whose head's classes are known (so it has failures) and whose settings
    explain its features (the top-k rule), its results shipped by ``produce``."""
    from falcon_core.settings import FalconSettings
    from makers import SHAPES

    base = tmp_path_factory.mktemp("prefill-classed")
    world = make_tiny_world(base)
    names = base / "classes.txt"  # the tiny backbone's head has 1000 outputs
    names.write_text("\n".join(list(SHAPES) + [f"other{i}" for i in range(998)]) + "\n")
    config = tiny_config(world, class_names=str(names))
    settings = FalconSettings(high_rule="topk", top_k=6, low_rule="global",
                              spurious_rule="absolute")
    shipped = base / "shipped"
    manifest = prefill.produce(shipped, config=config, say=lambda s: None, settings=settings)
    return {"config": config, "settings": settings, "shipped": shipped, "manifest": manifest,
            "base": base}


def _open_with(ws, cache_dir, shipped, monkeypatch):
    monkeypatch.setenv("FALCON_PREFILL", "off")
    falcon = Falcon.from_config(ws["config"], settings=ws["settings"], cache_dir=str(cache_dir))
    monkeypatch.delenv("FALCON_PREFILL")
    return falcon, (prefill.install(falcon, shipped) if shipped is not None else {})


def test_the_failures_pages_first_explanations_ship_and_equal_a_fresh_computation(
        classed, tmp_path, monkeypatch):
    """The explanations the Failures page shows first (its first misclassified image, the
    page's default number of features per side) are installed under the keys this checkout
    computes, and with them the page's explain_failure explains nothing: each one is the one a
    fresh computation gives."""
    bundle = json.loads(gzip.decompress(
        (classed["shipped"] / classed["manifest"]["entries"][FAILURES]["file"]).read_bytes()))
    fresh_falcon, _ = _open_with(classed, tmp_path / "fresh", None, monkeypatch)
    index, feats = prefill.failure_explanations(fresh_falcon)  # computed here, nothing shipped
    assert feats and bundle["features"] == feats and bundle["image"] == index
    assert bundle["k"] == prefill.FAILURE_K == 3

    falcon, got = _open_with(classed, tmp_path / "c", classed["shipped"], monkeypatch)
    assert got[FAILURES] == "installed"
    computed = []
    original = type(falcon.explainer)._explain

    def counting(self, feats_, s):
        computed.append(list(feats_))
        return original(self, feats_, s)

    monkeypatch.setattr(type(falcon.explainer), "_explain", counting)
    fx = falcon.explain_failure(index, k=prefill.FAILURE_K, settings=falcon.settings)
    assert computed == []
    shown = {int(it["feature"]): it["explanation"]
             for it in list(fx.toward_predicted) + list(fx.toward_true)}
    for f in feats:
        assert shown[f].to_dict() == fresh_falcon.cached_explanation(f).to_dict(), f
    # the maps the page draws over their images are read, not computed
    import falcon_core.stages.gradcam as gradcam

    def boom(*a, **k):
        raise AssertionError("GradCAM computed although its maps were shipped")

    monkeypatch.setattr(gradcam, "compute_cams", boom)
    for f in feats:
        got, want = falcon.cams(f, falcon.settings), fresh_falcon.cams(f, fresh_falcon.settings)
        assert sorted(got) == sorted(want)
        assert all(np.array_equal(got[i], want[i]) for i in got)


@pytest.mark.parametrize("what", ["settings", "code", "features", "cams"])
def test_shipped_explanations_made_otherwise_are_ignored(classed, tmp_path, monkeypatch, caplog, what):
    """Made with other settings, by other code, or filed under other features' keys: nothing
    is written and the explanations are computed as before."""
    rec = classed["manifest"]["entries"][FAILURES]
    bundle = json.loads(gzip.decompress((classed["shipped"] / rec["file"]).read_bytes()))
    payload, source = None, None
    feats = list(bundle["features"])
    if what == "cams":  # the maps of one explanation's images filed under another key
        k0 = sorted(bundle["cams"])[0]
        bundle["cams"]["3" * 64] = bundle["cams"].pop(k0)
        payload = json.dumps(bundle, sort_keys=True).encode()
    elif what == "settings":
        source = {"settings": {**rec["source"]["settings"], "beta": 0.123}}
    elif what == "code":
        source = {"code": "1" * 64}
    else:  # the first feature's file filed under another feature
        bundle["features"] = [bundle["features"][0] + 1] + bundle["features"][1:]
        payload = json.dumps(bundle, sort_keys=True).encode()
    shipped, _ = _tampered_copy(classed, tmp_path, FAILURES, source=source, payload=payload)
    with caplog.at_level(logging.WARNING, logger="falcon_core.demo.prefill"):
        falcon, got = _open_with(classed, tmp_path / "c", shipped, monkeypatch)
    assert got[FAILURES].startswith("ignored"), got
    assert any("ignored" in r.getMessage() and FAILURES in r.getMessage() for r in caplog.records)
    assert all(falcon.cached_explanation(f) is None for f in feats)
    assert all(v == "installed" for n, v in got.items() if n != FAILURES)
