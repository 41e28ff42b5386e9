import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from falcon_core.errors import FalconError, OfflineError
from falcon_core.models.clip import ClipSpec, create_clip

TINY = "FalconTiny-CLIP-test"


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("clipcfg")
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (d / f"{TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    return d


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(3)] + [
        Image.new("L", (32, 32), 128)]


def test_tiny_clip_random_and_roundtrip(tiny_config, tmp_path):
    clip = create_clip(ClipSpec(TINY, pretrained=None))
    assert clip.image_size == 32 and clip.embed_dim == 16
    assert not clip.model.training
    imgs = _images()
    B = clip.encode_images(imgs, batch_size=3)
    A = clip.encode_texts(["a dog", "a cat on a mat", "sky"], batch_size=2)
    assert B.shape == (4, 16) and A.shape == (3, 16)
    assert B.dtype == np.float32 and A.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(B, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1, atol=1e-5)
    assert len(clip.fingerprint) == 64
    assert clip.describe()["embed_dim"] == 16

    path = tmp_path / "tiny_clip.pt"
    torch.save(clip.model.state_dict(), path)
    clip2 = create_clip(ClipSpec(TINY, pretrained=str(path)))
    assert clip2.source == "file"
    np.testing.assert_allclose(clip2.encode_images(imgs), B, atol=1e-5)
    np.testing.assert_allclose(clip2.encode_texts(["a dog", "a cat on a mat", "sky"]), A, atol=1e-5)
    assert clip2.fingerprint != clip.fingerprint


def test_progress_and_empty(tiny_config):
    clip = create_clip(ClipSpec(TINY, pretrained=None))
    calls = []
    clip.encode_texts(["a", "b", "c"], batch_size=2, progress=lambda d, t, s: calls.append((d, t)))
    assert calls == [(2, 3), (3, 3)]
    assert clip.encode_texts([]).shape == (0, 16)
    assert clip.encode_images([]).shape == (0, 16)


def test_bad_path(tiny_config, tmp_path):
    with pytest.raises(FalconError, match="not found"):
        create_clip(ClipSpec(TINY, pretrained=str(tmp_path / "missing.pt")))


def test_unfitting_checkpoint(tiny_config, tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2)}, p)
    with pytest.raises(FalconError, match="does not fit"):
        create_clip(ClipSpec(TINY, pretrained=str(p)))


def test_unknown_model_and_tag(tiny_config):
    with pytest.raises(FalconError, match="no model") as ei:
        create_clip(ClipSpec("ViT-B-33", pretrained=None))
    assert "ViT-B-32" in ei.value.hint
    with pytest.raises(FalconError, match="neither a pretrained tag"):
        create_clip(ClipSpec("ViT-B-32", pretrained="no_such_tag"))


def test_download_failure_is_offline_error(tiny_config, monkeypatch):
    import open_clip.factory as f

    def boom(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(f, "download_pretrained", boom)
    with pytest.raises(OfflineError) as ei:
        create_clip(ClipSpec("RN50", pretrained="openai"))
    assert ei.value.hint


@pytest.mark.skipif(os.environ.get("FALCON_FAST_TESTS") == "1",
                    reason="ViT-B-32 random build (~150M params, ~6 s on 2 CPUs) skipped by FALCON_FAST_TESTS=1")
def test_vit_b32_random_builds():
    t = time.time()
    clip = create_clip(ClipSpec("ViT-B-32", pretrained=None))
    assert clip.embed_dim == 512 and clip.image_size == 224
    assert clip.encode_texts(["a photo of a dog"]).shape == (1, 512)
    print("ViT-B-32 random build + encode:", time.time() - t)
