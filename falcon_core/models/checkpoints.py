"""Loading user checkpoints safely and fitting them to a model.

* :func:`load_state_dict_file` reads a file with ``torch.load(weights_only=True)`` (never an
  arbitrary pickle), unwraps the usual containers (``{"state_dict": ...}``, ``{"model": ...}``,
  DINO's ``{"teacher": ...}``, ...) and returns a flat ``{name: tensor}`` dict.
* :func:`remap_keys` strips the prefix that training frameworks add (``module.``,
  ``module.encoder_q.``, ``backbone.``, ``_orig_mod.``, ...; with timm's ``clean_state_dict`` and
  torch's ``consume_prefix_in_state_dict_if_present``) and drops keys the model does not have
  (projection heads of SimCLR/MoCo, DINO heads, MoCo's key encoder and queue).
* :func:`apply_checkpoint` loads the result into a model, refusing checkpoints for another
  architecture with a message that names the offending keys.

Every step appends plain sentences to a report that the UI shows next to the model.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from falcon_core.errors import FalconError

__all__ = [
    "load_state_dict_file",
    "remap_keys",
    "apply_checkpoint",
    "NO_HEAD_MESSAGE",
    "RESAVE_HINT",
]

#: container keys that hold the weights, tried in this order
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "teacher", "net", "backbone", "module")

#: the sentence added to the report when a model has a head and the checkpoint has none
NO_HEAD_MESSAGE = "no classifier head in the checkpoint: features are explained without a head"

RESAVE_HINT = (
    "Load the model in the program that trained it and save only its weights: "
    "`torch.save(model.state_dict(), path)`; then point the tool at that file."
)

_MAX_LIST = 5


# --------------------------------------------------------------------------------------------
# reading the file
# --------------------------------------------------------------------------------------------


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _unwrap(obj, report: list[str], where: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    if _is_tensor_dict(obj):
        return dict(obj)
    if not isinstance(obj, Mapping):
        raise FalconError(
            f"The checkpoint{where} holds a {type(obj).__name__}, not a dictionary of weights.",
            RESAVE_HINT,
        )
    if depth < 3:
        for key in CONTAINER_KEYS:
            value = obj.get(key)
            if isinstance(value, Mapping) and value:
                try:
                    inner = _unwrap(value, report, f"{where}[{key!r}]", depth + 1)
                except FalconError:
                    continue
                report.append(f"weights taken from the checkpoint's {where}[{key!r}] entry")
                return inner
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if tensors:
        others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if others:
            report.append(
                "ignored non-tensor entries of the checkpoint: " + ", ".join(others[:_MAX_LIST])
                + (" ..." if len(others) > _MAX_LIST else "")
            )
        return tensors
    keys = ", ".join(repr(k) for k in list(obj.keys())[:10])
    raise FalconError(
        f"No weights found in the checkpoint{where}: its entries are {keys}.",
        "Expected a state dict (names -> tensors), or a dictionary holding one under "
        + ", ".join(repr(k) for k in CONTAINER_KEYS) + ". " + RESAVE_HINT,
    )


def _torch_load(path: Path):
    # argparse.Namespace (the "args" entry of DINO/MoCo checkpoints) is plain data: allow it.
    safe = getattr(torch.serialization, "safe_globals", None)
    if safe is not None:
        with safe([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    return torch.load(str(path), map_location="cpu", weights_only=True)  # pragma: no cover


def load_state_dict_file(path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict, safely.

    Returns ``(state_dict, report)``. Raises :class:`FalconError` for a missing file, a file that
    is not a PyTorch checkpoint, and a pickle that is not plain data (refused for safety).
    """
    path = Path(os.path.expanduser(str(path)))
    report: list[str] = []
    if not path.exists():
        raise FalconError(
            f"Checkpoint file not found: {path}",
            "Check the path (absolute, or relative to the folder the tool was started in).",
        )
    if path.is_dir():
        raise FalconError(
            f"The checkpoint path is a folder, not a file: {path}",
            "Point at the .pth/.pt/.safetensors file inside it.",
        )
    if path.stat().st_size == 0:
        raise FalconError(f"The checkpoint file is empty: {path}", RESAVE_HINT)

    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - depends on the install
            raise FalconError(
                "Reading .safetensors files needs the `safetensors` package.",
                "pip install safetensors, or save the weights with torch.save.",
            ) from e
        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:
            raise FalconError(f"Cannot read the safetensors file {path}: {e}", RESAVE_HINT) from e
        return _unwrap(sd, report), report

    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive; very old files are a raw pickle (protocol 2: b"\x80\x02")
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and head.startswith(b"PK"):
        raise FalconError(
            f"{path.name} is a damaged archive (truncated or corrupt download?).",
            "Download or copy the checkpoint again.",
        )
    if not is_zip and not head.startswith(b"\x80"):
        raise FalconError(
            f"{path.name} is not a PyTorch checkpoint (it is neither a torch.save archive nor a pickle).",
            "Point at a file written by torch.save (.pth/.pt) or a .safetensors file.",
        )
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.findall(r"GLOBAL ([\w\.]+)", text)
        what = f" (it contains the Python object {found[0]})" if found else ""
        if "Weights only load failed" in text or found:
            raise FalconError(
                f"{path.name} is not a plain state dict{what}: loading it would run code from the file, "
                "so it is refused for safety.",
                RESAVE_HINT,
            ) from e
        raise FalconError(f"{path.name} is not a readable PyTorch checkpoint: {text.splitlines()[0]}",
                          RESAVE_HINT) from e
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, AttributeError,
            TypeError, ImportError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        if "jit" in str(e).lower() or "TorchScript" in str(e) or "constants.pkl" in str(e):
            raise FalconError(
                f"{path.name} is a TorchScript archive, not a state dict.",
                "Load it with torch.jit.load and save `model.state_dict()` with torch.save.",
            ) from e
        raise FalconError(
            f"{path.name} could not be read as a PyTorch checkpoint ({type(e).__name__}: {first}). "
            "It may be truncated or corrupt.",
            RESAVE_HINT,
        ) from e
    if isinstance(obj, nn.Module):  # pragma: no cover - weights_only never returns one
        obj = obj.state_dict()
    sd = _unwrap(obj, report)
    report.insert(0, f"read {len(sd)} tensors from {path.name}")
    return sd, report


# --------------------------------------------------------------------------------------------
# fitting the keys
# --------------------------------------------------------------------------------------------


def _fmt_keys(keys: Iterable[str], n: int = _MAX_LIST) -> str:
    keys = list(keys)
    s = ", ".join(keys[:n])
    if len(keys) > n:
        s += f", ... ({len(keys)} in all)"
    return s


def _best_prefix(ckpt_keys: Iterable[str], model_keys: set[str]) -> tuple[str, int]:
    """The key prefix (ending at a dot) whose removal matches the most model keys."""
    counts: Counter[str] = Counter()
    for k in ckpt_keys:
        seen = set()
        if k in model_keys:
            seen.add("")
        i = k.find(".")
        while i != -1:
            if k[i + 1:] in model_keys:
                seen.add(k[: i + 1])
            i = k.find(".", i + 1)
        counts.update(seen)
    if not counts:
        return "", 0
    # most matches; on ties the shorter prefix (usually "")
    prefix, n = max(counts.items(), key=lambda kv: (kv[1], -len(kv[0])))
    return prefix, n


def remap_keys(state_dict: Mapping[str, torch.Tensor], model_keys: Iterable[str],
               head_name: str | None = "fc") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip the training prefix and keep only keys the model has.

    The wrappers of DistributedDataParallel and ``torch.compile`` (``module.``, ``_orig_mod.``)
    are removed by timm's ``clean_state_dict``; then the prefix of the training framework
    (``backbone.``, ``encoder_q.``, ``model.encoder.``, ...) is the one whose removal matches the
    most model keys, and torch's ``consume_prefix_in_state_dict_if_present`` removes it. Keys
    outside that prefix, or that the model does not have, are dropped.

    Returns ``(new_state_dict, report)``. The report says which prefix was removed, which keys were
    dropped (projection heads, key encoders, queues, ...), which model keys are missing, and
    whether the classifier head (``head_name``) is absent.
    """
    from timm.models import clean_state_dict
    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

    model_keys = list(model_keys)
    mk = set(model_keys)
    report: list[str] = []
    unwrapped = {next(iter(clean_state_dict({k: None}))): k for k in state_dict}  # -> original
    prefix, _ = _best_prefix(unwrapped, mk)
    originals = OrderedDict((k, orig) for k, orig in unwrapped.items() if k.startswith(prefix))
    consume_prefix_in_state_dict_if_present(originals, prefix)  # model key -> original key
    new = {k: state_dict[orig] for k, orig in originals.items() if k in mk}
    removed = Counter(orig[: len(orig) - len(k)] for k, orig in originals.items() if k in mk)
    if removed and removed.most_common(1)[0][0]:
        report.append(f"removed the key prefix {removed.most_common(1)[0][0]!r}")
    kept = {originals[k] for k in new}
    dropped = [k for k in state_dict if k not in kept]
    if dropped:
        report.append(f"ignored {len(dropped)} checkpoint keys the model does not have "
                      f"(projection heads, key encoders, ...): {_fmt_keys(dropped)}")
    missing = [k for k in model_keys if k not in new and not k.endswith("num_batches_tracked")]
    head_keys = [k for k in missing if head_name and (k == head_name or k.startswith(head_name + "."))]
    other_missing = [k for k in missing if k not in head_keys]
    if other_missing:
        report.append(f"{len(other_missing)} model weights are not in the checkpoint and keep their "
                      f"initial values: {_fmt_keys(other_missing)}")
    if head_name and any(k.startswith(head_name + ".") for k in model_keys):
        if head_keys:
            report.append(NO_HEAD_MESSAGE)
    return new, report


def _get_module(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except (AttributeError, TypeError):
        return None


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_checkpoint(model: nn.Module, path, head_name: str | None = "fc",
                     arch: str | None = None) -> tuple[list[str], bool]:
    """Load the checkpoint at ``path`` into ``model`` (in place).

    Returns ``(report, has_head)``: ``has_head`` is False when the model has a classifier head
    (``head_name``) and the checkpoint does not provide it. A linear head of another size (a model
    fine-tuned on another number of classes) is replaced by one of the checkpoint's size.
    Raises :class:`FalconError` when shapes disagree or when too few weights match.
    """
    arch = arch or type(model).__name__
    sd, report = load_state_dict_file(path)
    model_sd = model.state_dict()
    new, remap_report = remap_keys(sd, model_sd.keys(), head_name=head_name)
    report += remap_report

    def is_head(k: str) -> bool:
        return bool(head_name) and (k == head_name or k.startswith(head_name + "."))

    # a classifier head for another number of classes: rebuild it to the checkpoint's size
    head_mod = _get_module(model, head_name) if head_name else None
    w = new.get(f"{head_name}.weight") if head_name else None
    if (isinstance(head_mod, nn.Linear) and w is not None and w.ndim == 2
            and w.shape[1] == head_mod.in_features and w.shape[0] != head_mod.out_features):
        _set_module(model, head_name, nn.Linear(head_mod.in_features, w.shape[0],
                                                bias=f"{head_name}.bias" in new))
        report.append(f"classifier head resized from {head_mod.out_features} to {w.shape[0]} "
                      "classes to fit the checkpoint")
        model_sd = model.state_dict()

    mismatched = [k for k, v in new.items() if tuple(v.shape) != tuple(model_sd[k].shape)]
    if mismatched:
        lines = "; ".join(f"{k}: checkpoint {tuple(new[k].shape)} vs model {tuple(model_sd[k].shape)}"
                          for k in mismatched[:_MAX_LIST])
        more = f" ({len(mismatched)} in all)" if len(mismatched) > _MAX_LIST else ""
        raise FalconError(
            f"The checkpoint's weights do not have the shapes of {arch}: {lines}{more}. "
            "Is the checkpoint for another architecture?",
            "Choose the architecture the checkpoint was trained with (e.g. resnet50 instead of resnet18).",
        )

    body = [k for k in model_sd if not is_head(k) and not k.endswith("num_batches_tracked")]
    matched = [k for k in body if k in new]
    if len(body) and len(matched) < 0.5 * len(body):
        first = _fmt_keys(list(sd.keys()), 5)
        raise FalconError(
            f"This checkpoint does not fit {arch}: only {len(matched)} of {len(body)} weights matched "
            f"(first keys of the checkpoint: {first}).",
            "Choose the architecture the checkpoint was trained with, or re-save its weights with "
            "`torch.save(model.state_dict(), path)`.",
        )

    model.load_state_dict(new, strict=False)
    head_present = bool(head_name) and any(is_head(k) for k in model_sd)
    has_head = head_present and all(k in new for k in model_sd if is_head(k)
                                    and not k.endswith("num_batches_tracked"))
    report.append(f"loaded {len(matched)} of {len(body)} backbone weights"
                  + (" and the classifier head" if has_head else ""))
    return report, has_head


def hash_state_dict(model) -> str:
    """A digest of every tensor of a module's state dict: names, dtypes, shapes and bytes.

    xxh3-128 over the tensors' memory (no copy): ~10x faster than sha256, so fingerprinting a
    ResNet-50 or a CLIP held in memory costs milliseconds, not a second (issue 9). Prefixed
    ``xxh3:`` so it is never confused with a sha256 of the same weights."""
    import xxhash

    h = xxhash.xxh3_128()
    for k, t in model.state_dict().items():
        h.update(k.encode())
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        t = t.detach().cpu().contiguous().reshape(-1)
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    return "xxh3:" + h.hexdigest()
