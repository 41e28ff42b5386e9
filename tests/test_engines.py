"""The engines: Ray runs Stage 1, the text embeddings and the precompute with results identical
to the in-process engine (a local Ray with 2 CPUs; skipped where Ray is not installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from falcon_core import representation_store
from falcon_core.cache import DiskCache
from falcon_core.data.vocabulary import text_embeddings
from falcon_core.engines import LocalEngine, create_engine
from falcon_core.errors import FalconError
from falcon_core.pipeline import Falcon
from falcon_core.settings import FalconSettings
from makers import make_tiny_world, tiny_config

TOPK = FalconSettings(high_rule="topk", top_k=6, max_low_images=4)
FEATURES = [0, 1, 2, 5, 9]


def test_unknown_engine_is_a_message():
    with pytest.raises(FalconError, match="Unknown engine"):
        create_engine("spark")
    assert isinstance(create_engine(None), LocalEngine)


@pytest.fixture(scope="module")
def ray_engine():
    ray = pytest.importorskip("ray")
    from falcon_core.engines import RayEngine

    engine = RayEngine(num_cpus=2, object_store_memory=100 * 1024 * 1024)
    yield engine
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_tiny_world(tmp_path_factory.mktemp("engine-world"))


@pytest.fixture(scope="module")
def pair(world, ray_engine):
    """The same workspace twice, on separate caches: in-process and on Ray (Stage 1 in chunks
    of 8 rows, so the 32 images are 4 tasks)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(representation_store, "CHUNK_ROWS", 8)
    cfg = tiny_config(world)
    local = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "c-local"))
    remote = Falcon.from_config(cfg, settings=TOPK, cache_dir=str(world["base"] / "c-ray"),
                                engine=ray_engine)
    yield local, remote
    mp.undo()


def test_stage1_on_ray_equals_in_process(pair):
    local, remote = pair
    H1, v1 = local.representations()
    H2, v2 = remote.representations()
    assert H1.shape == (32, 512)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(H1, H2)
    # merged into the same content-keyed cache: one finished entry under the same key
    key = local.store.representations_key()
    assert remote.cache.exists("representations", key, ".npy")


def test_text_embeddings_on_ray_equal_in_process(pair, ray_engine, world, tmp_path):
    local, remote = pair
    # 4 captions a chunk: several tasks
    a1 = text_embeddings(local.vocabulary, local.clip, DiskCache(tmp_path / "a"),
                         batch_size=4, chunk_batches=1)
    a2 = text_embeddings(remote.vocabulary, remote.clip, DiskCache(tmp_path / "b"),
                         batch_size=4, chunk_batches=1, engine=ray_engine,
                         config=tiny_config(world))
    assert len(a1) == len(local.vocabulary) > 8
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))


def test_precompute_on_ray_equals_in_process(pair, ray_engine):
    local, remote = pair
    r1 = LocalEngine().precompute(local, FEATURES)
    r2 = ray_engine.precompute(remote, FEATURES)
    assert r1 == r2 and set(r2) == set(FEATURES)
    for f in FEATURES:
        e1, e2 = local.cached_explanation(f), remote.cached_explanation(f)
        assert (e1 is None) == (e2 is None) == (r1[f] is not None)
        if e1 is not None:
            same(e1.to_dict(), e2.to_dict(), str(f))


def same(a, b, where):
    """Equal, floats to 1e-6 relative: a Ray task runs torch and BLAS on one thread (Ray's
    default for a task of one CPU), this process on two, and a sum taken in another order can
    differ in float32's last bit (1e-8 here). Everything else (words, their order, images, boxes,
    counts, notes) must be identical."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (where, a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)
