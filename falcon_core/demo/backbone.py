"""The demo backbone: a small ResNet with torchvision's module names, trained on the world.

``DemoResNet`` has ``conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc`` like
``torchvision.models.ResNet`` (and uses its ``BasicBlock``), so the default GradCAM layer
``layer4[-1]`` and the pooled layer before the head work unchanged. It is sized for 64 px scenes:
``conv1`` has stride 2 and ``maxpool`` is an identity, ``layer4`` keeps stride 1, so GradCAM maps
are 8x8 at 64 px (a plain ResNet would give 2x2). Widths 16-32-64-128: the explained
representation (``avgpool`` output) has r = 128 features.

The classification head ``fc`` predicts the class attribute of the main object (the shape). During
training, auxiliary linear heads on the same pooled features also predict the main object's colour,
pattern and size and the background (weight ``aux_weight``, 0.1 in the build: a light weight, so
that most features still come to stand for shapes while some stand for colours, backgrounds, sizes
and patterns; at 0.5 the easy attributes took over and shape stayed near chance), and they are
*not* part of the checkpoint: the saved model has the one linear head ``fc`` of Stage 9.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from .world import World

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
WIDTHS = (16, 32, 64, 128)
AUX_ATTRIBUTES = ("color", "pattern", "size", "background")


def _layer(inplanes: int, planes: int, stride: int, blocks: int = 1) -> nn.Sequential:
    down = None
    if stride != 1 or inplanes != planes:
        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    layers = [BasicBlock(inplanes, planes, stride, down)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DemoResNet(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        w = widths
        self.conv1 = nn.Conv2d(3, w[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = _layer(w[0], w[0], 1)
        self.layer2 = _layer(w[0], w[1], 2)
        self.layer3 = _layer(w[1], w[2], 2)
        self.layer4 = _layer(w[2], w[3], 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> normalised float (N, 3, S, S), the backbone's preprocessing."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def targets(world: World, scenes: list[dict]) -> dict[str, np.ndarray]:
    out = {"class": np.array([world.label(s) for s in scenes], np.int64)}
    for a in AUX_ATTRIBUTES:
        vals = world.values(a)
        out[a] = np.array([vals.index(s["background"] if a == "background" else s["objects"][0][a])
                           for s in scenes], np.int64)
    return out


def train_backbone(world: World, scenes: list[dict], images: np.ndarray, steps: int, batch: int = 128,
                   lr: float = 3e-3, aux_weight: float = 0.5, seed: int = 0,
                   log: Callable[[str], None] = print) -> tuple[DemoResNet, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DemoResNet(len(world.class_names))
    aux = nn.ModuleDict({a: nn.Linear(WIDTHS[-1], len(world.values(a))) for a in AUX_ATTRIBUTES})
    params = list(model.parameters()) + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    y = {k: torch.from_numpy(v) for k, v in targets(world, scenes).items()}
    ce = nn.CrossEntropyLoss()
    model.train()
    losses, accs = [], []
    t_start = time.time()
    for step in range(steps):
        idx = np.sort(rng.choice(len(scenes), size=min(batch, len(scenes)), replace=False))
        x = to_tensor(images[idx])
        if rng.random() < 0.5:  # horizontal flip keeps every attribute's value
            x = torch.flip(x, dims=[3])
        ti = torch.from_numpy(idx)
        h = model.features(x)
        logits = model.fc(h)
        loss = ce(logits, y["class"][ti])
        for a in AUX_ATTRIBUTES:
            loss = loss + aux_weight * ce(aux[a](h), y[a][ti])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        accs.append(float((logits.argmax(1) == y["class"][ti]).float().mean()))
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"  backbone step {step + 1}/{steps}  loss {np.mean(losses[-20:]):.3f}  acc {np.mean(accs[-20:]):.3f}  ({time.time() - t_start:.0f}s)")
    model.eval()
    return model, {"steps": steps, "batch": batch, "lr": lr, "aux_weight": aux_weight,
                   "aux_heads": list(AUX_ATTRIBUTES), "final_loss": round(float(np.mean(losses[-20:])), 4),
                   "train_acc_last": round(float(np.mean(accs[-20:])), 4)}


@torch.no_grad()
def features_and_logits(model: DemoResNet, images: np.ndarray, bs: int = 256) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    H, L = [], []
    for i in range(0, len(images), bs):
        h = model.features(to_tensor(images[i:i + bs]))
        H.append(h.numpy())
        L.append(model.fc(h).numpy())
    return np.concatenate(H), np.concatenate(L)


def meta(world: World) -> dict[str, Any]:
    return {"input_size": world.image_size, "mean": list(MEAN), "std": list(STD),
            "class_names": world.class_names, "head": "fc", "cam_layer": "layer4[-1]",
            "feature_layer": "avgpool", "num_features": WIDTHS[-1]}


def planted_reliance(world: World, H: np.ndarray, scenes: list[dict], truths: list) -> list[dict[str, Any]]:
    """For each planted correlation ``if {a1: v1} then {a2: v2}``: the clear features whose ground
    truth is the source ``a1=v1`` and how much each one *also* responds to the target where the
    source is absent: the ROC AUC of its activation for "the scene has ``a2=v2``" over the scenes
    with no ``a1=v1``. About 0.5: the feature ignores the target; well above: the feature carries
    the spurious concept (a backbone trained on the correlated world should show it, one trained
    without the correlations should not)."""
    from sklearn.metrics import roc_auc_score

    from .ground_truth import attribute_matrix

    names, binary = attribute_matrix(scenes, world)
    col = {n: j for j, n in enumerate(names)}
    out = []
    for rule in world.correlations:
        for (a1, v1) in rule["if"].items():
            for (a2, v2) in rule["then"].items():
                src, dst = f"{a1}={v1}", f"{a2}={v2}"
                feats = [t.feature for t in truths if t.clear and t.name == src]
                rows = binary[:, col[src]] == 0
                y = binary[rows, col[dst]].astype(bool)
                aucs = [round(float(roc_auc_score(y, H[rows, f])), 4) for f in feats] if 0 < y.sum() < len(y) else []
                out.append({"correlation": f"{src} -> {dst}", "p": rule["p"], "source_clear_features": feats,
                            "target_auc_without_source": aucs,
                            "mean_target_auc_without_source": round(float(np.mean(aucs)), 4) if aucs else None})
    return out


def backbone_metrics(world: World, model: DemoResNet, scenes: list[dict], images: np.ndarray
                     ) -> tuple[dict[str, Any], np.ndarray, list]:
    """(metrics, H, ground truths) on held-out scenes: accuracy, clear features (per attribute)
    and :func:`planted_reliance`."""
    from .ground_truth import attribute_matrix, clear_share, ground_truth

    H, logits = features_and_logits(model, images)
    labels = np.array([world.label(s) for s in scenes])
    names, binary = attribute_matrix(scenes, world)
    truths = ground_truth(H, binary, names)
    by_attr: dict[str, int] = {}
    for t in truths:
        if t.clear:
            by_attr[t.attribute] = by_attr.get(t.attribute, 0) + 1
    return {"heldout_acc": round(float((logits.argmax(1) == labels).mean()), 4),
            "heldout_clear_share": round(clear_share(truths), 4),
            "heldout_clear_by_attribute": dict(sorted(by_attr.items())),
            "heldout_clear_values": len({t.name for t in truths if t.clear}),
            "planted": planted_reliance(world, H, scenes, truths)}, H, truths
