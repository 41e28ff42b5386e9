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


# ---- the stopped backward pass (issue 9): the same maps and boxes as pytorch-grad-cam -------

def _reference_and_boxes(bb, x, feats):
    from falcon_core.stages.crops import crop_box

    fast = compute_cams(bb, x, feats, method="stopped")
    ref = compute_cams(bb, x, feats, method="pytorch-grad-cam")
    return fast, ref, [crop_box(c, 0.6).as_tuple() for c in fast], \
        [crop_box(c, 0.6).as_tuple() for c in ref]


@pytest.mark.parametrize("arch,size", [("resnet18", 96), ("timm:tf_efficientnet_lite0", 96),
                                       ("timm:vit_tiny_patch16_224", 224)])
def test_stopped_backward_gives_pytorch_grad_cams_maps_and_boxes(arch, size):
    bb = create_backbone(BackboneSpec(arch, weights="random"))
    torch.manual_seed(1)
    x = torch.randn(3, 3, size, size)
    for feats in ([4], [2, 9]):
        fast, ref, boxes_fast, boxes_ref = _reference_and_boxes(bb, x, feats)
        assert fast.max() > 0
        np.testing.assert_array_equal(fast, ref)
        assert boxes_fast == boxes_ref
    assert all(p.requires_grad for p in bb.model.parameters())  # unfrozen again
    assert all(p.grad is None for p in bb.model.parameters())
    assert not bb.cam_layer._forward_hooks


def test_stopped_backward_stops_at_the_cam_layer(r18):
    """No gradient reaches a module before the CAM layer (pytorch-grad-cam's backward does)."""
    reached = []
    h = r18.model.layer1.register_full_backward_hook(lambda m, gi, go: reached.append(1))
    try:
        x = torch.randn(1, 3, 64, 64)
        compute_cams(r18, x, [5], method="stopped")
        assert reached == []
        compute_cams(r18, x, [5], method="pytorch-grad-cam")
        assert reached  # the hook itself works
    finally:
        h.remove()


def test_stopped_backward_mixin_keeps_the_classs_arithmetic(r18):
    from pytorch_grad_cam import GradCAMPlusPlus

    from falcon_core.stages.gradcam import FeatureTarget, StoppedBackwardMixin

    class Fast(StoppedBackwardMixin, GradCAMPlusPlus):
        pass

    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    targets = [FeatureTarget([3])] * 2
    ref = GradCAMPlusPlus(model=r18.feature_model, target_layers=[r18.cam_layer])
    fast = Fast(model=r18.feature_model, target_layers=[r18.cam_layer])
    try:
        with torch.enable_grad():
            a, b = fast(input_tensor=x, targets=targets), ref(input_tensor=x, targets=targets)
    finally:
        ref.activations_and_grads.release()
        fast.activations_and_grads.release()
        r18.model.zero_grad(set_to_none=True)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.max() > 0


class Twice(nn.Module):
    """The CAM layer runs twice per forward pass."""

    def __init__(self):
        super().__init__()
        self.block = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.block(self.block(x)).mean((2, 3)))


def test_a_layer_run_twice_falls_back_to_pytorch_grad_cam():
    torch.manual_seed(0)
    bb = Backbone.from_module(Twice(), "twice", input_size=16, cam_layer="block")
    x = torch.randn(2, 3, 16, 16)
    np.testing.assert_array_equal(compute_cams(bb, x, [1]),
                                  compute_cams(bb, x, [1], method="pytorch-grad-cam"))
    with pytest.raises(FalconError, match="Unknown GradCAM method"):
        compute_cams(bb, x, [1], method="nope")


def test_the_default_path_does_not_import_pytorch_grad_cam():
    """Importing pytorch-grad-cam pulls in scikit-learn and matplotlib (seconds): the first
    GradCAM of a fresh process must not pay for it."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from falcon_core.models.backbones import Backbone\n"
            "from falcon_core.stages.gradcam import compute_cams\n"
            "m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),\n"
            "    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
            "bb = Backbone.from_module(m, 'tiny', input_size=16, head_name='4', cam_layer='1')\n"
            "assert compute_cams(bb, torch.randn(1, 3, 16, 16), [0]).shape == (1, 16, 16)\n"
            "print('pytorch_grad_cam' in sys.modules, 'sklearn' in sys.modules)\n")
    import os
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_many_targets_per_image_give_compute_cams_maps_bit_for_bit(r18):
    """compute_cams_many (a whole-layer precompute): each image runs forward once, whatever the
    number of features whose top set holds it, and each (image, group) map is the map
    compute_cams gives for that group on that feature's own images -- to the bit, although the
    batches hold other images (the precompute's bit-equality rests on it)."""
    from falcon_core.stages.gradcam import compute_cams_many

    torch.manual_seed(3)
    x = torch.randn(10, 3, 64, 64)
    sets = {(3,): [0, 1, 2, 5, 8], (5, 7): [1, 2, 3, 9], (11,): [2, 4, 5, 6, 7, 8, 9]}
    wanted = [[g for g, imgs in sets.items() if i in imgs] for i in range(10)]
    rows = []
    h = r18.cam_layer.register_forward_hook(lambda m, a, o: rows.append(o.shape[0]))
    try:
        got = compute_cams_many(r18, x, wanted, batch_size=4)
    finally:
        h.remove()
    assert sum(rows) == 10  # one forward pass per image, not one per (image, feature)
    for g, imgs in sets.items():
        alone = compute_cams(r18, x[imgs], list(g))
        np.testing.assert_array_equal(np.stack([got[i][g] for i in imgs]), alone)
        assert set(got[imgs[0]]) == set(wanted[imgs[0]])


def test_gradcam_maps_of_stacked_maps_are_each_maps_own_bits():
    """compute_cams_many makes a batch's maps of every group in one call of gradcam_maps: each
    map must come out as it does alone (the arithmetic is per map, whatever is stacked with it)."""
    from falcon_core.stages.gradcam import gradcam_maps

    rng = np.random.default_rng(7)
    acts = rng.normal(size=(7, 16, 5, 5)).astype(np.float32)
    grads = rng.normal(size=(7, 16, 5, 5)).astype(np.float32)
    grads[3] = 0.0  # a vanishing gradient: a zero map
    together = gradcam_maps(acts, grads, (40, 40))
    parts = [gradcam_maps(acts[a:b], grads[a:b], (40, 40)) for a, b in ((0, 1), (1, 4), (4, 7))]
    np.testing.assert_array_equal(together, np.concatenate(parts))
    assert together.shape == (7, 40, 40) and not together[3].any()
