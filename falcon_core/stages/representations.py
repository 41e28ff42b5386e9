"""Stage 1: the representation matrix H (N x r) of the probe set, and its row normalisation.

The backbone runs in eval mode (BatchNorm uses its running statistics; the authors' code forgot
this) under ``torch.inference_mode``, with ``backbone.transform`` — the one preprocessing that
GradCAM uses too. Unreadable images do not stop the run: their rows are NaN and ``valid`` is False.
"""

from __future__ import annotations

import numpy as np
import torch

from falcon_core.errors import BadImageError
from falcon_core.progress import Progress

__all__ = ["compute_representations", "normalise_rows", "normalize_rows"]


def compute_representations(
    backbone,
    probe,
    batch_size: int = 64,
    progress: Progress | None = None,
    indices=None,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Features of every probe image.

    Returns ``(H float32 (N, r), valid bool (N,), errors {index: message})``; ``indices`` (optional)
    restricts the computation to those probe indices (rows follow that order).
    """
    idx = np.arange(len(probe)) if indices is None else np.asarray(indices, dtype=np.int64)
    N = len(idx)
    r = int(backbone.num_features)
    H = np.full((N, r), np.nan, dtype=np.float32)
    valid = np.zeros(N, dtype=bool)
    errors: dict[int, str] = {}
    model = backbone.feature_model
    model.eval()
    device = backbone.device
    batch_size = max(1, int(batch_size))
    done = 0
    for start in range(0, N, batch_size):
        rows, tensors = [], []
        for row in range(start, min(start + batch_size, N)):
            i = int(idx[row])
            try:
                img = probe.load(i)
                t = backbone.transform(img)
            except BadImageError as e:
                errors[i] = getattr(e, "message", str(e))
                continue
            except (OSError, ValueError) as e:  # a probe set that did not wrap its error
                errors[i] = f"cannot read image {i}: {e}"
                continue
            rows.append(row)
            tensors.append(t)
        if tensors:
            with torch.inference_mode():
                feats = model(torch.stack(tensors).to(device))
            H[rows] = feats.detach().float().cpu().numpy()
            valid[rows] = True
        done = min(start + batch_size, N)
        if progress is not None:
            progress(done, N, "representations")
    if progress is not None and N == 0:
        progress(0, 0, "representations")
    return H, valid, errors


def normalise_rows(H: np.ndarray) -> np.ndarray:
    """L2-normalise each row; zero rows stay zero and NaN rows stay NaN."""
    H = np.asarray(H, dtype=np.float32)
    norms = np.linalg.norm(H, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        Hn = np.where(norms > 0, H / np.where(norms > 0, norms, 1.0), H)
    return Hn.astype(np.float32, copy=False)


normalize_rows = normalise_rows
