import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from falcon_core.errors import FalconError
from falcon_core.models.backbones import Backbone, BackboneSpec, create_backbone
from falcon_core.stages.gradcam import FeatureTarget, compute_cams


@pytest.fixture(scope="module")
def r18():
    return create_backbone(BackboneSpec("resnet18", weights="random"))


def _manual_gradcam(bb, x, features):
    """GradCAM by hand: weights = spatial mean of d(sum of features)/dA over layer4[-1]."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    store = {}
    h = bb.cam_layer.register_forward_hook(lambda m, a, o: store.__setitem__("A", o))
    try:
        with torch.enable_grad():
            f = bb.feature_model(x)
            A = store["A"]
            g, = torch.autograd.grad(f[:, features].sum(), A)
    finally:
        h.remove()
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((w * A).sum(1)).detach().numpy()
    return scale_cam_image(cam, (x.shape[-1], x.shape[-2]))


def test_feature_target():
    t = FeatureTarget([1, 3])
    assert float(t(torch.tensor([1.0, 2.0, 3.0, 4.0]))) == 6.0
    torch.testing.assert_close(t(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]])),
                               torch.tensor([6.0, 2.0]))
    assert FeatureTarget(2).features == [2]
    with pytest.raises(FalconError):
        FeatureTarget([])


def test_resnet_cams_follow_the_feature(r18):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 64, 64)
    cams_a = compute_cams(r18, x, [5], batch_size=2)
    cams_b = compute_cams(r18, x, [300], batch_size=2)
    for cams in (cams_a, cams_b):
        assert cams.shape == (3, 64, 64) and cams.dtype == np.float32
        assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    assert not np.allclose(cams_a, cams_b)
    np.testing.assert_allclose(cams_a, _manual_gradcam(r18, x, [5]), atol=1e-4)
    group = compute_cams(r18, x, [5, 300])
    np.testing.assert_allclose(group, _manual_gradcam(r18, x, [5, 300]), atol=1e-4)
    # eval mode kept, no hook left behind, no gradients kept on the weights
    assert not r18.model.training
    assert not r18.cam_layer._forward_hooks and not r18.cam_layer._forward_pre_hooks
    assert all(p.grad is None for p in r18.model.parameters())
    r18.feature_model.train()
    assert not r18.feature_model.training and not r18.model.training


def test_pil_input_uses_backbone_transform(r18):
    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)) for _ in range(2)]
    cams = compute_cams(r18, imgs, 7)
    assert cams.shape == (2, 224, 224)
    x = torch.stack([r18.transform(i) for i in imgs])
    np.testing.assert_allclose(cams, compute_cams(r18, x, 7), atol=1e-6)
    assert compute_cams(r18, [], 7).shape == (0, 224, 224)


def test_bad_feature(r18):
    with pytest.raises(FalconError, match="does not exist"):
        compute_cams(r18, torch.zeros(1, 3, 64, 64), [512])


class DeadChannel(nn.Module):
    """Channel 0 is killed by a ReLU (always 0): its gradients vanish."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.block[0].weight[0] = 0
            self.block[0].bias[0] = -1.0

    def forward(self, x):
        return self.fc(self.pool(self.block(self.conv(x))).flatten(1))


def test_all_zero_cam_is_zeros_not_nan():
    torch.manual_seed(0)
    bb = Backbone.from_module(DeadChannel(), "dead", input_size=16)
    assert bb.cam_layer is bb.model.block
    x = torch.randn(2, 3, 16, 16)
    dead = compute_cams(bb, x, [0])
    assert dead.shape == (2, 16, 16)
    assert np.isfinite(dead).all() and (dead == 0).all()
    alive = compute_cams(bb, x, [1])
    assert np.isfinite(alive).all() and alive.max() > 0


def test_vit_gradcam_with_reshape():
    vit = create_backbone(BackboneSpec("timm:vit_tiny_patch16_224", weights="random"))
    torch.manual_seed(0)
    cams = compute_cams(vit, torch.randn(1, 3, 224, 224), [3])
    assert cams.shape == (1, 224, 224)
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1 and cams.max() > 0
    assert not vit.model.training and not vit.cam_layer._forward_hooks
