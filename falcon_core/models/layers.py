"""Which modules of a model FALCON uses: the explained layer's neighbours and GradCAM's layer.

:func:`dry_run` runs one blank image through the feature model and records every module's output
(its number of dimensions, how often it ran, its spatial size) and which modules ran before the
explained layer; from that, :func:`auto_cam_layer` picks GradCAM's layer (the explained layer
itself when it is a spatial map, a ResNet's ``layer4[-1]``, else the last spatial map before it)
and :func:`vit_cam_layer` a ViT block's ``norm1``.
"""

from __future__ import annotations

import torch
from torch import nn

from falcon_core.errors import FalconError


def first_tensor(x):
    """The first tensor in a module's output (a tensor, tuple, list or dict), or None."""
    while isinstance(x, (tuple, list)):
        if not x:
            return None
        x = x[0]
    if isinstance(x, dict):
        x = next((v for v in x.values() if isinstance(v, torch.Tensor)), None)
    return x if isinstance(x, torch.Tensor) else None


def layer_examples(model: nn.Module) -> list[str]:
    """A few layer names of ``model`` for messages: its children and their last blocks."""
    names = [n for n, _ in model.named_children()]
    extra = []
    for n, m in model.named_children():
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m):
            extra.append(f"{n}.{len(m) - 1}")
    return (names + extra)[:16]


def dry_run(model: nn.Module, feature_model: nn.Module, input_size: int, device,
            model_name: str, module_name: str, use_input: bool):
    """Run a blank image through ``feature_model``; record every module's output.

    Returns ``(records, number of features, ndim of the explained layer's output, the names of
    the modules run before the explained layer)``; ``records[name] = [ndim, calls, spatial size]``.
    """
    records: dict[str, list] = {}
    order: list[str] = []
    handles = []

    def make(name):
        def hook(m, args, out):
            t = first_tensor(out)
            rec = records.setdefault(name, [None, 0, 0])
            rec[1] += 1
            if t is not None:
                spatial = int(t.shape[2] * t.shape[3]) if t.ndim == 4 else 0
                rec[0] = t.ndim
                rec[2] = spatial
            order.append(name)
        return hook

    for name, mod in model.named_modules():
        if name:
            handles.append(mod.register_forward_hook(make(name)))
    marker = {}
    tgt = model.get_submodule(module_name) if module_name else None
    if tgt is not None and use_input:
        def mark(m, a):
            marker.setdefault("pos", len(order))  # returns None: the input is left alone

        handles.append(tgt.register_forward_pre_hook(mark))
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    try:
        with torch.no_grad():
            out = feature_model(x)
    except FalconError:
        raise
    except Exception as e:
        raise FalconError(
            f"The model {model_name} fails on a {input_size}x{input_size} image: "
            f"{type(e).__name__}: {e}",
            "Check the input size and the layer.",
        ) from e
    finally:
        for h in handles:
            h.remove()
    if tgt is not None and not use_input:
        pos = max(i for i, n in enumerate(order) if n == module_name) + 1 if module_name in order else len(order)
    else:
        pos = marker.get("pos", len(order))
    before = list(order[:pos])
    raw_ndim = records.get(module_name, [None])[0] if (module_name and not use_input) else 2
    return records, int(out.shape[1]), raw_ndim, before


def vit_cam_layer(modules: dict, blocks_name: str, module_name: str):
    """GradCAM's layer in a ViT: ``norm1`` of the explained block (default: the last one), or
    None when the explained layer comes before the blocks."""
    blocks = modules.get(blocks_name)
    if blocks is None or not len(blocks):
        return None
    idx = len(blocks) - 1
    prefix = blocks_name + "."
    if module_name.startswith(prefix):
        try:
            idx = int(module_name[len(prefix):].split(".")[0])
        except ValueError:
            pass
    elif module_name in ("patch_embed", "pos_drop", "patch_drop", "norm_pre") or module_name.startswith(
            ("patch_embed.", "cls_token", "pos_embed")):
        return None
    block = blocks[idx]
    norm1 = getattr(block, "norm1", None)
    return norm1 if isinstance(norm1, nn.Module) else block


def auto_cam_layer(modules: dict, records: dict, before: list[str], module_name: str,
                   use_input: bool):
    """GradCAM's layer from a :func:`dry_run` (None when the model has no spatial map)."""
    # the explained layer itself when it is a spatial map
    if module_name and not use_input:
        rec = records.get(module_name)
        if rec and rec[0] == 4 and rec[2] > 1 and rec[1] == 1:
            return modules[module_name]
    # ResNets: the last block of layer4 when the explained layer comes after it
    l4 = modules.get("layer4")
    if isinstance(l4, nn.Sequential) and len(l4) and "layer4" in before:
        return l4[-1]
    # otherwise: the last module run before the explained layer whose output is a spatial map
    for name in reversed(before):
        rec = records.get(name)
        if rec and rec[0] == 4 and rec[2] > 1 and rec[1] == 1:
            return modules[name]
    return None
