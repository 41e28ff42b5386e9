import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from falcon_core.errors import FalconError, OfflineError
from falcon_core.models.backbones import (Backbone, BackboneSpec, create_backbone, list_backbones,
                                          register_backbone)
from falcon_core.models.checkpoints import NO_HEAD_MESSAGE


@pytest.fixture(scope="module")
def r18():
    return create_backbone(BackboneSpec("resnet18", weights="random"))


def _by_hand(model, x):
    m = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def test_resnet18_random_features(r18):
    assert r18.num_features == 512
    assert not r18.model.training and not r18.feature_model.training
    assert all(p.requires_grad for p in r18.model.parameters())  # GradCAM needs them
    assert r18.layer == "fc:input"
    assert isinstance(r18.head, nn.Linear) and r18.head is r18.model.fc
    assert r18.cam_layer is r18.model.layer4[-1]
    assert r18.class_names is None
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        f = r18.feature_model(x)
        ref = _by_hand(r18.model, x)
    assert f.shape == (3, 512)
    torch.testing.assert_close(f, ref)
    # no hook left behind
    assert not r18.model.fc._forward_pre_hooks and not r18.model.layer4[-1]._forward_hooks


def test_random_init_is_seeded(r18):
    other = create_backbone(BackboneSpec("resnet18", weights=None))
    assert other.fingerprint == r18.fingerprint
    assert torch.equal(other.model.conv1.weight, r18.model.conv1.weight)
    d = r18.describe()
    assert d["num_features"] == 512 and d["layer"] == "fc:input" and d["cam_layer"] == "layer4.1"


def test_transform_and_view(r18):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    t = r18.transform(img)
    assert t.shape == (3, 224, 224) and t.dtype == torch.float32
    v = r18.view_transform(img)
    assert v.size == (224, 224)
    # the tensor is the view, normalised
    arr = torch.from_numpy(np.asarray(v, dtype=np.float32) / 255).permute(2, 0, 1)
    mean = torch.tensor(r18.mean)[:, None, None]
    std = torch.tensor(r18.std)[:, None, None]
    torch.testing.assert_close(t, (arr - mean) / std, atol=1e-5, rtol=0)
    gray = r18.transform(Image.new("L", (50, 60)))
    assert gray.shape == (3, 224, 224)


def test_named_layer(r18):
    bb = create_backbone(BackboneSpec("resnet18", weights="random", layer="layer3"))
    assert bb.num_features == 256 and bb.head is None
    assert bb.cam_layer is bb.model.layer3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        m = bb.model
        ref = m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))).mean(dim=(2, 3))
        torch.testing.assert_close(bb.feature_model(x), ref)
    assert bb.fingerprint != r18.fingerprint


def test_unknown_layer():
    with pytest.raises(FalconError, match="no layer 'layer9'") as ei:
        create_backbone(BackboneSpec("resnet18", layer="layer9"))
    assert "layer4" in ei.value.hint


def test_unknown_backbone_and_weights(tmp_path):
    with pytest.raises(FalconError, match="Unknown backbone"):
        create_backbone(BackboneSpec("resnet17"))
    with pytest.raises(FalconError, match="no such checkpoint"):
        create_backbone(BackboneSpec("resnet18", weights=str(tmp_path / "nope.pth")))
    with pytest.raises(FalconError, match="timm has no model"):
        create_backbone(BackboneSpec("timm:resnet_does_not_exist"))


def test_imagenet_offline_gives_offline_error(monkeypatch):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(OfflineError) as ei:
        create_backbone(BackboneSpec("resnet18", weights="imagenet"))
    assert "download" in ei.value.message
    assert ei.value.hint


def test_timm_pretrained_offline_gives_offline_error(monkeypatch):
    import timm

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(OfflineError):
        create_backbone(BackboneSpec("timm:resnet18", weights="imagenet"))


def test_checkpoint_without_head(tmp_path):
    torch.manual_seed(3)
    src = torchvision.models.resnet18(weights=None)
    sd = {f"module.encoder_q.{k}": v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    sd["module.encoder_q.fc.0.weight"] = torch.zeros(512, 512)
    path = tmp_path / "simclr.pth"
    torch.save(sd, path)
    bb = create_backbone(BackboneSpec("resnet18", weights=str(path)))
    assert bb.head is None and bb.num_features == 512
    assert NO_HEAD_MESSAGE in bb.load_report
    assert torch.equal(bb.model.conv1.weight, src.conv1.weight)
    assert not bb.model.training


def test_registry_and_from_module():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    def factory(spec):
        torch.manual_seed(0)
        return Backbone.from_module(Tiny(), "tiny-test", input_size=32, layer=spec.layer,
                                    class_names=["a", "b", "c", "d"])

    register_backbone("tiny-test", factory)
    assert "tiny-test" in list_backbones() and "resnet18" in list_backbones()
    bb = create_backbone("tiny-test")
    assert bb.num_features == 16 and bb.head is bb.model.fc and bb.class_names == ["a", "b", "c", "d"]
    assert bb.cam_layer is bb.model.features  # last spatial module before the head
    assert bb.transform(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
    bb2 = create_backbone(BackboneSpec("tiny-test", layer="features.1"))
    assert bb2.num_features == 8 and bb2.head is None and bb2.class_names is None


@pytest.fixture(scope="module")
def vit():
    return create_backbone(BackboneSpec("timm:vit_tiny_patch16_224", weights="random"))


def test_timm_vit_cls(vit):
    assert vit.num_features == 192 and vit.input_size == 224
    assert vit.cam_layer is vit.model.blocks[-1].norm1
    assert vit.reshape_transform is not None
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        f = vit.feature_model(x)
        tokens = vit.model.forward_features(x)
    torch.testing.assert_close(f, tokens[:, 0])  # the CLS token after the final norm
    grid = vit.reshape_transform(torch.zeros(2, 197, 192))
    assert grid.shape == (2, 192, 14, 14)


def test_timm_vit_named_block_and_mean():
    bb = create_backbone(BackboneSpec("timm:vit_tiny_patch16_224", layer="blocks.3", token_pool="mean"))
    assert bb.num_features == 192 and bb.cam_layer is bb.model.blocks[3].norm1
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        m = bb.model
        t = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        for blk in m.blocks[:4]:
            t = blk(t)
        torch.testing.assert_close(bb.feature_model(x), t[:, 1:].mean(1))


# ---- Stage 1 (falcon_core.stages.representations) ---------------------------------------------

class FakeProbe:
    def __init__(self, images):
        self.images = images
        self.ids = [f"img{i}" for i in range(len(images))]

    def __len__(self):
        return len(self.images)

    def load(self, i):
        from falcon_core.errors import BadImageError

        if self.images[i] is None:
            raise BadImageError(f"image {self.ids[i]} is corrupt", "Remove it.")
        return self.images[i]


def test_compute_representations(r18):
    from falcon_core.stages.representations import compute_representations

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)) for _ in range(4)]
    imgs.insert(2, None)
    calls = []
    H, valid, errors = compute_representations(r18, FakeProbe(imgs), batch_size=2,
                                               progress=lambda d, t, s: calls.append((d, t, s)))
    assert H.shape == (5, 512) and H.dtype == np.float32
    assert valid.tolist() == [True, True, False, True, True]
    assert np.isnan(H[2]).all() and np.isfinite(H[valid]).all()
    assert list(errors) == [2] and "corrupt" in errors[2]
    assert calls == [(2, 5, "representations"), (4, 5, "representations"), (5, 5, "representations")]
    # eval mode: a row does not depend on the rest of its batch
    with torch.no_grad():
        one = r18.feature_model(r18.transform(imgs[3])[None]).numpy()
    np.testing.assert_allclose(H[3], one[0], rtol=1e-4, atol=1e-5)
    H0, valid0, _ = compute_representations(r18, FakeProbe([]))
    assert H0.shape == (0, 512) and valid0.shape == (0,)


def test_normalise_rows():
    from falcon_core.stages.representations import normalise_rows

    H = np.array([[3.0, 4.0], [0.0, 0.0], [np.nan, np.nan]], dtype=np.float32)
    Hn = normalise_rows(H)
    np.testing.assert_allclose(Hn[0], [0.6, 0.8])
    assert (Hn[1] == 0).all() and np.isnan(Hn[2]).all() and Hn.dtype == np.float32
