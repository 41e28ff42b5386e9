"""Stage 1 and everything derived from the representation matrix ``H``.

:class:`RepresentationStore` owns one backbone's representation of one probe set:

- ``H`` (N, r), computed once in resumable chunks and cached on disk, with the mask of the
  images that could be read and the reason each unreadable one was skipped;
- ``Hn``, the matrix the thresholds apply to (row-normalised ``H``, or ``H`` itself), kept in
  memory per normalisation;
- Stage 2's global ``α`` and Stage 6's ``ε``, computed once per setting (they scan all of ``Hn``);
- per-feature overviews (how many images pass α) and the validation of feature indices.

Nothing here looks at images beyond Stage 1: GradCAM, CLIP and captions are the explainer's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import cache_keys
from .cache import DiskCache
from .engines import ConfigParts
from .errors import FalconError
from .progress import Progress
from .settings import FalconSettings
from .stages import common as common_stage
from .stages import groups as groups_stage

# Rows of H computed (and stored) together: the unit of resuming an interrupted Stage 1.
CHUNK_ROWS = 256


class _ProbeRange:
    """A contiguous slice of a probe set (Stage 1 runs chunk by chunk so it can resume)."""

    def __init__(self, probe, start: int, stop: int):
        self.probe, self.start, self.stop = probe, start, stop
        self.ids = probe.ids[start:stop]

    def __len__(self) -> int:
        return self.stop - self.start

    def load(self, i: int):
        return self.probe.load(self.start + i)


class Stage1Chunk(ConfigParts):
    """Stage 1 on rows ``start:stop`` of the probe set: ``(H rows float32, {row: why it was
    skipped})``. Picklable (as the workspace config when there is one), so an engine
    (:mod:`falcon_core.engines`) may run it elsewhere."""

    PARTS = ("backbone", "probe")

    def __init__(self, backbone, probe, batch_size: int, progress: Progress | None = None,
                 config=None):
        self.backbone, self.probe, self.batch_size = backbone, probe, batch_size
        self.progress, self.config = progress, config

    def __call__(self, start: int, stop: int) -> tuple[np.ndarray, dict[int, str]]:
        from .stages.representations import compute_representations

        part = _ProbeRange(self.probe, start, stop)
        prog = None
        if self.progress is not None:
            n = len(self.probe)
            prog = lambda d, t, s: self.progress(start + d, n, "representations")  # noqa: E731
        H, _valid, errors = compute_representations(self.backbone, part,
                                                    batch_size=self.batch_size, progress=prog)
        return H.astype(np.float32), {int(i): str(m) for i, m in errors.items()}


class RepresentationStore:
    """``H`` of one backbone over one probe set, and what is derived from it (see the module)."""

    def __init__(self, backbone, probe, cache: DiskCache, settings: FalconSettings,
                 progress: Progress, engine=None):
        if len(probe) == 0:
            raise FalconError("The probe set is empty.", "Choose a folder or data set with images.")
        self.backbone = backbone
        self.probe = probe
        self.cache = cache
        self.settings = settings
        self.progress = progress
        self.engine = engine  # None: in this process (falcon_core.engines)
        self.config = None  # the workspace config, when known: how an engine rebuilds the models
        self._H: np.ndarray | None = None
        self._valid: np.ndarray | None = None
        self._errors: dict[int, str] = {}
        self._Hn: dict[bool, np.ndarray] = {}
        self._alpha: dict[tuple[bool, float], float] = {}
        self._masks: dict[tuple, np.ndarray] = {}

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    @property
    def num_images(self) -> int:
        return len(self.probe)

    # ---- Stage 1 --------------------------------------------------------------------------
    def representations_key(self) -> str:
        return cache_keys.representations(self.backbone.fingerprint, self.probe.fingerprint)

    def representations(self) -> tuple[np.ndarray, np.ndarray]:
        """``H`` (N, r) and the mask of images that could be read. Cached, resumable."""
        if self._H is None:
            key = self.representations_key()
            n = len(self.probe)
            job = Stage1Chunk(self.backbone, self.probe, self.settings.batch_size, self.progress,
                              config=self.config)
            bounds = [(a, min(n, a + CHUNK_ROWS)) for a in range(0, n, CHUNK_ROWS)]
            run = self.engine.chunk_fn(job, bounds) if self.engine is not None else job

            def compute(start: int, stop: int) -> np.ndarray:
                H, errors = run(start, stop)
                self.cache.write_json("representation_errors",
                                      cache_keys.representation_errors(key, start),
                                      {str(start + i): msg for i, msg in errors.items()})
                if self.engine is not None:
                    self.progress(stop, n, "representations")
                return H.astype(np.float32)

            H = self.cache.compute_chunked("representations", key, n, CHUNK_ROWS, compute,
                                           dtype=np.float32, row_shape=(self.num_features,))
            H = np.asarray(H)
            valid = ~np.isnan(H).any(axis=1)
            errors: dict[int, str] = {}
            for start in range(0, n, CHUNK_ROWS):
                stop = min(n, start + CHUNK_ROWS)
                errors_key = cache_keys.representation_errors(key, start)
                stored = self.cache.read_json(
                    "representation_errors", errors_key,
                    schema=lambda d, a=start, z=stop: _image_errors(d, a, z))
                if stored is None and not valid[start:stop].all():
                    # missing or damaged: the reasons are found again (only bad images load)
                    stored = {i: self._image_error(i) for i in range(start, stop) if not valid[i]}
                    self.cache.write_json("representation_errors", errors_key,
                                          {str(i): m for i, m in stored.items()})
                errors.update(stored or {})
            bad = getattr(self.probe, "bad_images", None)
            if isinstance(bad, dict):  # images skipped in an earlier run, read from the cache
                for i, msg in errors.items():
                    bad.setdefault(str(self.probe.ids[i]), msg)
            if not valid.any():
                raise FalconError(
                    f"None of the {n} probe images could be read.",
                    "Check the folder: the files may be corrupt or not images.")
            self._H, self._valid, self._errors = H, valid, errors
        return self._H, self._valid

    def _image_error(self, i: int) -> str:
        """Why probe image ``i`` could not be read (asked again of the probe set)."""
        from .errors import BadImageError

        try:
            self.probe.load(int(i))
        except BadImageError as e:
            return getattr(e, "message", str(e))
        except (OSError, ValueError) as e:
            return f"cannot read image {i}: {e}"
        return f"image {i} could not be read when the representations were computed"

    def is_computed(self) -> bool:
        """Whether ``H`` is in memory or finished on disk (nothing is computed to say so)."""
        return self._H is not None or self.cache.exists("representations",
                                                        self.representations_key(), ".npy")

    @property
    def valid(self) -> np.ndarray:
        """The images that could be read (never selected otherwise)."""
        return self.representations()[1]

    @property
    def skipped_images(self) -> dict[int, str]:
        """Images that could not be read, with the reason (they are never selected)."""
        self.representations()
        return dict(self._errors)

    def image_features(self, image) -> np.ndarray:
        """``h`` of an image that is not in the probe set (e.g. uploaded in the app)."""
        import torch

        x = self.backbone.transform(image.convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            return self.backbone.feature_model(x)[0].cpu().numpy().astype(np.float32)

    def view(self, i: int):
        """Image ``i`` as the backbone sees it (resized and cropped, not normalised)."""
        return self.backbone.view_transform(self.probe.load(int(i)))

    # ---- derived from H -------------------------------------------------------------------
    def normalized(self, normalize: bool | None = None) -> np.ndarray:
        """The matrix the thresholds apply to: row-normalised ``H`` (authors) or ``H``."""
        from .stages.representations import normalise_rows

        normalize = self.settings.normalize_rows if normalize is None else normalize
        if normalize not in self._Hn:
            H, valid = self.representations()
            M = normalise_rows(H) if normalize else np.array(H, dtype=np.float32)
            M = np.where(valid[:, None], M, 0.0).astype(np.float32)
            self._Hn[normalize] = M
        return self._Hn[normalize]

    def alpha_for(self, settings: FalconSettings | None = None) -> float:
        """Stage 2's global α; computed once per (normalisation, k) since it scans all of H."""
        s = settings or self.settings
        key = (s.normalize_rows, s.alpha_std)
        if key not in self._alpha:
            Hn = self.normalized(s.normalize_rows)
            self._alpha[key] = float(common_stage.global_alpha(Hn, s.alpha_std,
                                                                  valid=self.valid))
        return self._alpha[key]

    @property
    def alpha(self) -> float:
        return self.alpha_for(self.settings)

    def low_threshold_for(self, settings: FalconSettings | None = None) -> float:
        """Stage 6's ε: the setting, or the global mean of ``Hn`` (authors)."""
        s = settings or self.settings
        if s.low_threshold is not None:
            return float(s.low_threshold)
        Hn = self.normalized(s.normalize_rows)
        return float(common_stage.global_mean(Hn, valid=self.valid))

    def features(self, features: int | Sequence[int]) -> tuple[int, ...]:
        """A feature or group checked against this layer, as a tuple of ints."""
        if isinstance(features, (int, np.integer)):
            features = [int(features)]
        return tuple(common_stage.validate_features(list(features), self.num_features))

    def high_mask(self, settings: FalconSettings | None = None) -> np.ndarray:
        """(N, r) bool: image j is in T of feature f under the settings' rule (Stage 2, one
        feature at a time, with the cap on |T|; unreadable images never are). Stage 8's
        signatures, the co-activation map and :meth:`feature_stats` use it, so they follow the
        rule the explanations use."""
        s = settings or self.settings
        rule_option = {"global": s.alpha_std, "topk": s.top_k, "quantile": s.quantile}
        key = (s.normalize_rows, s.high_rule, rule_option.get(s.high_rule), s.max_high_images)
        if key not in self._masks:
            Hn = self.normalized(s.normalize_rows)
            alpha = self.alpha_for(s) if s.high_rule == "global" else None
            if len(self._masks) >= 4:  # (N, r) booleans each: keep the few in use
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = groups_stage.membership(
                Hn, s.high_rule, alpha=alpha, top_k=s.top_k, quantile=s.quantile,
                max_images=s.max_high_images, valid=self.valid, k_std=s.alpha_std)
        return self._masks[key]

    def feature_stats(self, settings: FalconSettings | None = None) -> dict[str, Any]:
        """Per feature: how many images pass the settings' rule, mean and max normalised
        activation."""
        s = settings or self.settings
        Hn = self.normalized(s.normalize_rows)[self.valid]
        return {"n_high": self.high_mask(s).sum(axis=0), "mean": Hn.mean(axis=0),
                "max": Hn.max(axis=0)}


def _image_errors(value: Any, start: int, stop: int) -> dict[int, str]:
    """Schema of a ``representation_errors`` entry: ``{"<image index>": "<reason>"}`` for images
    ``start <= index < stop`` of one chunk."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an object of image errors, got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if not (isinstance(k, str) and k.isdigit() and start <= int(k) < stop):
            raise ValueError(f"image index {k!r} is not in this chunk ({start} to {stop - 1})")
        if not isinstance(v, str):
            raise TypeError(f"the reason for image {k} is not text")
        out[int(k)] = v
    return out
