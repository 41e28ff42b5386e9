import collections

import pytest
import torch
import torchvision
from torch import nn

from falcon_core.errors import FalconError
from falcon_core.models.checkpoints import (NO_HEAD_MESSAGE, apply_checkpoint, load_state_dict_file,
                                            remap_keys)


def _resnet18():
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).eval()


class Custom:  # a custom class in a pickle: weights_only refuses it
    def __init__(self):
        self.w = torch.zeros(3)


def test_prefixed_moco_checkpoint_without_head(tmp_path):
    src = _resnet18()
    sd = {f"module.encoder_q.{k}": v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    sd["module.encoder_q.fc.0.weight"] = torch.zeros(512, 512)  # projection head
    sd["module.encoder_q.fc.2.weight"] = torch.zeros(128, 512)
    sd["module.encoder_k.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    sd["module.queue"] = torch.zeros(128, 16)
    path = tmp_path / "moco.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd}, path)

    model = torchvision.models.resnet18(weights=None)
    report, has_head = apply_checkpoint(model, path, head_name="fc")
    assert has_head is False
    text = "\n".join(report)
    assert "module.encoder_q." in text
    assert NO_HEAD_MESSAGE in report
    assert "fc.0.weight" in text and "queue" in text
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(model.state_dict()[k], v), k


def test_remap_keys_prefixes():
    model_keys = ["conv1.weight", "bn1.weight", "fc.weight", "fc.bias"]
    t = torch.zeros(1)
    for prefix in ["", "module.", "backbone.", "_orig_mod.module.", "model.encoder."]:
        sd = {prefix + k: t for k in model_keys}
        new, report = remap_keys(sd, model_keys)
        assert set(new) == set(model_keys), prefix
        assert NO_HEAD_MESSAGE not in report


def test_dino_teacher_container(tmp_path):
    src = _resnet18()
    sd = {f"backbone.{k}": v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    sd["head.mlp.0.weight"] = torch.zeros(4, 4)
    import argparse

    path = tmp_path / "dino.pth"
    torch.save({"teacher": sd, "student": {}, "args": argparse.Namespace(arch="resnet18")}, path)
    state, report = load_state_dict_file(path)
    assert "backbone.conv1.weight" in state
    model = torchvision.models.resnet18(weights=None)
    report, has_head = apply_checkpoint(model, path)
    assert not has_head
    assert torch.equal(model.conv1.weight, src.conv1.weight)


def test_plain_state_dict_with_head(tmp_path):
    src = _resnet18()
    path = tmp_path / "plain.pth"
    torch.save(src.state_dict(), path)
    model = torchvision.models.resnet18(weights=None)
    report, has_head = apply_checkpoint(model, path)
    assert has_head
    assert torch.equal(model.fc.weight, src.fc.weight)


def test_head_of_another_size_is_resized(tmp_path):
    src = _resnet18()
    src.fc = nn.Linear(512, 10)
    path = tmp_path / "cifar.pth"
    torch.save(src.state_dict(), path)
    model = torchvision.models.resnet18(weights=None)
    report, has_head = apply_checkpoint(model, path)
    assert has_head and model.fc.out_features == 10
    assert any("resized" in r for r in report)


def test_wrong_architecture(tmp_path):
    torch.manual_seed(0)
    r50 = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(r50.state_dict(), path)
    with pytest.raises(FalconError) as ei:
        apply_checkpoint(torchvision.models.resnet18(weights=None), path, arch="resnet18")
    msg = ei.value.message
    assert "another architecture" in msg and "layer1.0.conv1.weight" in msg
    assert "(64, 64, 1, 1)" in msg and "(64, 64, 3, 3)" in msg


def test_tampered_tensor(tmp_path):
    sd = _resnet18().state_dict()
    sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "tampered.pth"
    torch.save(sd, path)
    with pytest.raises(FalconError, match="layer2.0.conv1.weight"):
        apply_checkpoint(torchvision.models.resnet18(weights=None), path)


def test_too_few_matching_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3), "conv1.weight": torch.zeros(64, 3, 7, 7)},
               path)
    with pytest.raises(FalconError, match="does not fit resnet18: only 1 of"):
        apply_checkpoint(torchvision.models.resnet18(weights=None), path, arch="resnet18")


def test_whole_module_pickle_refused(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(_resnet18(), path)
    with pytest.raises(FalconError, match="not a plain state dict") as ei:
        load_state_dict_file(path)
    assert "safety" in ei.value.message
    assert "state_dict()" in ei.value.hint


def test_custom_object_refused(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": collections.OrderedDict(w=torch.zeros(1)), "extra": Custom()}, path)
    with pytest.raises(FalconError, match="refused for safety"):
        load_state_dict_file(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(FalconError, match="not a PyTorch checkpoint"):
        load_state_dict_file(path)
    with pytest.raises(FalconError, match="not found"):
        load_state_dict_file(tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(FalconError, match="empty"):
        load_state_dict_file(empty)
    trunc = tmp_path / "trunc.pth"
    torch.save(_resnet18().state_dict(), tmp_path / "full.pth")
    trunc.write_bytes((tmp_path / "full.pth").read_bytes()[:5000])
    with pytest.raises(FalconError):
        load_state_dict_file(trunc)


def test_no_weights_in_dict(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(FalconError, match="No weights found"):
        load_state_dict_file(path)
