"""Probe sets: the images D whose representations FALCON explains.

Three kinds, one interface (:class:`ProbeSet`): ``len()``, ``.ids``, ``.load(i) -> PIL RGB``
(raises :class:`~falcon_core.errors.BadImageError` for an unreadable image; the pipeline skips,
counts and lists those), ``.labels`` (int array, ``-1`` = unknown, or None), ``.class_names``,
``.fingerprint`` and ``.describe()``.

* :class:`ImageFolderProbe` — a folder of images, searched recursively.
* :class:`TorchvisionProbe` — CIFAR-10 / STL-10 / Imagenette through ``torchvision.datasets``.
* :class:`ArrayProbe` — an in-memory (or memory-mapped) ``uint8`` array, for generated sets.

:func:`create_probe` turns a spec string into one of them: a registered name (:data:`PROBES`:
``cifar10``, ``stl10``, ``imagenette`` and the offline demo world's ``demo``; :func:`register_probe`
adds more), else a folder path.

Image loading rules (:func:`load_image_file`), loader version ``LOADER_VERSION``:

* Any PIL colour mode becomes RGB: grey (L), 1-bit, palette (P), CMYK, YCbCr and 16/32-bit
  integer images (scaled to 8 bits); images with transparency (RGBA, LA, PA, P with a transparent
  colour) are composited on a **white** background. The EXIF orientation tag is applied.
* Unreadable files (0 bytes, corrupt, truncated) raise ``BadImageError`` naming the file and the
  reason. Truncated images are never "repaired": ``ImageFile.LOAD_TRUNCATED_IMAGES`` is not set
  and every image is decoded in full (``img.load()``) while the file is open.
* Pixel limit: images with more than ``MAX_PIXELS`` (200 M) pixels are refused with a
  ``BadImageError`` before any decoding. Pillow's own decompression-bomb limit is raised to the
  same value when this module is imported, so a 10,000 x 10,000 photo loads without a warning.
* Size limit: the returned image's longest side is at most ``max_side`` (1024 px by default;
  ``None`` keeps the full size). JPEGs are decoded at reduced scale with ``Image.draft`` (a
  10,000 x 10,000 JPEG never occupies 300 MB); other formats are decoded in full, then shrunk
  with ``Image.reduce`` (integer factor) and a final LANCZOS resize. Backbones resize to ~224 px
  anyway, so nothing the method uses is lost.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import re
import socket
import struct
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.error import URLError

import numpy as np
from PIL import ExifTags, Image, ImageOps

from ..cache import default_cache_root, fingerprint_files, hash_json
from ..errors import OFFLINE_HINT, BadImageError, FalconError, OfflineError
from ..registry import Registry

__all__ = [
    "LOADER_VERSION",
    "MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "IMAGE_EXTENSIONS",
    "ProbeSet",
    "ImageFolderProbe",
    "TorchvisionProbe",
    "ArrayProbe",
    "create_probe",
    "register_probe",
    "available_probes",
    "PROBES",
    "load_image_file",
    "load_image_bytes",
    "to_rgb",
    "normalize_class_name",
]

LOADER_VERSION = "1"
MAX_PIXELS = 200_000_000
DEFAULT_MAX_SIDE = 1024
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# Project-level pixel limit: Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that.
# We check MAX_PIXELS ourselves (BadImageError) right after reading the header, before decoding,
# and raise Pillow's threshold to ours (never lower it; leave it alone if disabled with None), so
# images up to MAX_PIXELS open without a DecompressionBombWarning. Above MAX_PIXELS Pillow may
# still warn (up to 2x) or refuse (beyond) inside Image.open; both become BadImageError.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                Image.DecompressionBombError, IndexError, ZeroDivisionError, MemoryError,
                TypeError, KeyError)


# ------------------------------------------------------------------------------ image loading

def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float single-channel image -> 8-bit grey."""
    arr = np.asarray(im)
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64))
        hi = float(arr.max()) if arr.size else 0.0
        arr = arr * 255.0 if hi <= 1.0 else arr
        out = np.clip(arr, 0, 255)
    else:
        arr = arr.astype(np.int64)
        hi = int(arr.max()) if arr.size else 0
        if hi <= 255:
            out = np.clip(arr, 0, 255)
        elif hi <= 65535:
            out = arr // 257  # 16-bit -> 8-bit (65535 -> 255)
        else:
            out = arr * 255 // hi
    return Image.fromarray(out.astype(np.uint8), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB (transparency composited on white; 16-bit scaled)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in im.info) or (
            mode in ("L", "RGB") and "transparency" in im.info):
        return _composite_on_white(im)
    if mode.startswith("I") or mode == "F":
        return _high_bit_to_l(im).convert("RGB")
    return im.convert("RGB")


def _fit(im: Image.Image, max_side: Optional[int]) -> Image.Image:
    if not max_side:
        return im
    w, h = im.size
    longest = max(w, h)
    if longest <= max_side:
        return im
    factor = longest // max_side
    if factor >= 2:
        im = im.reduce(factor)
        w, h = im.size
        longest = max(w, h)
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
    return im


_FIT_MODES = ("RGB", "L", "RGBA", "LA", "I", "F")


def _upright(out: Image.Image, source: Image.Image) -> Image.Image:
    """``out`` turned by ``source``'s EXIF orientation (``ImageOps.exif_transpose``); the
    conversions that made ``out`` may have dropped its copy of the EXIF block."""
    try:
        orientation = int(source.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    except Exception:  # a broken EXIF block does not make the pixels unreadable
        return out
    out.getexif()[ExifTags.Base.Orientation] = orientation
    return ImageOps.exif_transpose(out)


def load_image_file(path: str | os.PathLike, max_side: Optional[int] = DEFAULT_MAX_SIDE,
                    max_pixels: int = MAX_PIXELS, name: Optional[str] = None) -> Image.Image:
    """Read one image file as RGB (rules in the module docstring); ``BadImageError`` if not."""
    path = Path(path)
    name = name or path.name
    hint = "The image is skipped. Re-export it, or remove it from the folder."
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadImageError(f"Cannot read image {name}: {e.strerror or e}", hint) from e
    if size == 0:
        raise BadImageError(f"Cannot read image {name}: the file is empty (0 bytes).", hint)
    return _decode(path, name, hint, max_side, max_pixels,
                   "Downscale the image before adding it to the probe set.")


def load_image_bytes(data: bytes, name: str = "the image", max_side: Optional[int] = DEFAULT_MAX_SIDE,
                     max_pixels: int = MAX_PIXELS,
                     hint: str = "Use a JPEG, PNG, WebP or BMP image.") -> Image.Image:
    """The bytes of one image file (an upload) as RGB, by the same rules as
    :func:`load_image_file`; ``BadImageError`` (with ``hint``) if they are not an image."""
    if not data:
        raise BadImageError(f"Cannot read image {name}: the file is empty (0 bytes).", hint)
    return _decode(io.BytesIO(data), name, hint, max_side, max_pixels, "Downscale the image first.")


def _decode(source, name: str, hint: str, max_side: Optional[int], max_pixels: int,
            big_hint: str) -> Image.Image:
    """Decode ``source`` (a path or a file object) in full, by the module's rules."""
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise BadImageError(f"Cannot read image {name}: it has no pixels ({w}x{h}).",
                                    hint)
            if w * h > max_pixels:
                raise BadImageError(
                    f"Cannot read image {name}: it is {w}x{h} pixels, more than the limit of "
                    f"{max_pixels:,} pixels.",
                    big_hint)
            if max_side and im.format == "JPEG" and max(w, h) > max_side:
                scale = max_side / max(w, h)
                im.draft(im.mode if im.mode in ("RGB", "L") else None,
                         (max(1, int(w * scale)), max(1, int(h * scale))))
            im.load()  # decode fully now: truncated/corrupt data raises here
            if im.mode in _FIT_MODES:
                out = to_rgb(_fit(im, max_side))
            else:
                out = _fit(to_rgb(im), max_side)
            out = _upright(out, im)
            if out is im:
                out = im.copy()
            out.load()
            return out
    except BadImageError:
        raise
    except FileNotFoundError as e:
        raise BadImageError(f"Cannot read image {name}: the file disappeared.", hint) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own check fires in Image.open before ours for images far above the limit
        # (its threshold is set to MAX_PIXELS: warning above, error above twice that).
        raise BadImageError(f"Cannot read image {name}: it has more pixels than the limit of "
                            f"{max_pixels:,} ({e}).",
                            big_hint) from e
    except Image.UnidentifiedImageError as e:
        raise BadImageError(f"Cannot read image {name}: not a recognised image file "
                            f"(corrupt, or not an image).", hint) from e
    except _READ_ERRORS as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower():
            reason = f"the file is truncated ({reason})"
        raise BadImageError(f"Cannot read image {name}: {reason}", hint) from e


# --------------------------------------------------------------------------------- base class

class ProbeSet:
    """A probe set: N images with ids, optional labels (``-1`` = unknown) and class names."""

    kind = "probe"

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.labels: Optional[np.ndarray] = None
        self.class_names: Optional[list[str]] = None
        self.class_ids: Optional[list[str]] = None  # what labels were matched by (None: names)
        self.bad_images: dict[str, str] = {}  # id -> reason, for images that failed in load()

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_index(self, i: int) -> int:
        """``i`` as a non-negative index (negative ones count from the end, as in a list)."""
        try:
            return range(len(self))[int(i)]
        except IndexError:
            raise IndexError(f"image index {i} out of range (probe set has {len(self)} images)") \
                from None

    def _note_bad(self, i: int, err: BadImageError) -> None:
        self.bad_images[self.ids[i]] = err.message

    def label_summary(self) -> dict:
        if self.labels is None:
            return {"labelled": 0}
        return {"labelled": int((self.labels >= 0).sum()),
                "unlabelled": int((self.labels < 0).sum())}

    def describe(self) -> dict:
        d = {"kind": self.kind, "count": len(self),
             "classes": len(self.class_names) if self.class_names is not None else None,
             "skipped": len(self.bad_images), "bad_images": dict(self.bad_images)}
        d.update(self.label_summary())
        return d


# ------------------------------------------------------------------------------- image folder

def normalize_class_name(name: str) -> str:
    """Fold case and runs of spaces/underscores/hyphens: 'Great_White-shark' -> 'great white
    shark'."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().casefold()


_WNID_RE = re.compile(r"^n\d{8}$")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


class ImageFolderProbe(ProbeSet):
    """All images under ``root`` (recursive, sorted by relative path).

    Extensions: jpg, jpeg, png, webp, bmp (any case). Hidden files and folders (name starting with
    ".") are skipped. ``ids`` are the paths relative to ``root`` (with "/").

    Labels: when ``class_names_for_labels`` (e.g. the backbone's class names) is given, the
    first-level subfolder name of each image is its class: matched first against
    ``class_ids_for_labels`` (the classes' ids, e.g. ImageNet wnids such as ``n03126707``; case
    ignored), then against the names, case-insensitively with spaces/underscores/hyphens folded
    (:func:`normalize_class_name`). A name that several classes share (ImageNet's two "crane"
    classes) matches none of them: such a folder is listed in ``ambiguous_folders`` (name the
    folder by the class id instead). An ImageNet wnid folder also maps through ``wnid_to_index``
    when given. Unmatched folders, and images directly in ``root``, get ``-1``. When no image
    matched, ``labels`` is None. Without ``class_names_for_labels`` there are no labels (the
    folder names are still listed in ``folder_classes`` and ``describe()``).

    ``fingerprint`` hashes every image's (relative path, size, mtime_ns), the loader version and
    ``max_side`` — not the root path, so a moved folder keeps its cache.
    """

    kind = "folder"

    def __init__(self, root: str | os.PathLike,
                 class_names_for_labels: Optional[Sequence[str]] = None,
                 wnid_to_index: Optional[dict[str, int]] = None,
                 max_side: Optional[int] = DEFAULT_MAX_SIDE,
                 max_pixels: int = MAX_PIXELS,
                 class_ids_for_labels: Optional[Sequence[str]] = None):
        super().__init__()
        self.root = Path(root).expanduser()
        self.max_side = max_side
        self.max_pixels = max_pixels
        if not self.root.exists():
            raise FalconError(f"The image folder {self.root} does not exist.",
                              "Check the path (it is relative to the folder the tool was "
                              "started in), or use a built-in probe set: cifar10, stl10, "
                              "imagenette, demo.")
        if not self.root.is_dir():
            raise FalconError(f"{self.root} is a file, not a folder of images.",
                              "Give the folder that contains the images.")
        files, skipped = self._scan()
        self.skipped_files = skipped
        if not files:
            if skipped:
                msg = (f"The folder {self.root} contains {skipped} file(s), but no images with "
                       f"a supported extension.")
            else:
                msg = f"The folder {self.root} contains no images."
            raise FalconError(msg, "Supported: " + ", ".join(IMAGE_EXTENSIONS) + " (any case), "
                              "in the folder or its subfolders; hidden files are ignored.")
        self._files = files
        self.ids = [p.relative_to(self.root).as_posix() for p in files]
        folders = [Path(i).parts[0] if len(Path(i).parts) > 1 else None for i in self.ids]
        self._folders = folders
        self.folder_classes = sorted({f for f in folders if f is not None})
        self.labels = None
        self.class_names = None
        self.class_ids = None
        self.unmatched_folders: list[str] = []
        self.ambiguous_folders: dict[str, list[str]] = {}  # folder -> the ids sharing its name
        if class_names_for_labels is not None:
            names = list(class_names_for_labels)
            ids = list(class_ids_for_labels) if class_ids_for_labels is not None else names
            if len(ids) != len(names):
                raise FalconError(f"{len(ids)} class ids for {len(names)} class names.")
            self._assign_labels(names, ids, wnid_to_index or {})
        self._fingerprint: Optional[str] = None

    def _scan(self) -> tuple[list[Path], int]:
        files: list[Path] = []
        skipped = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
            for name in filenames:
                if _is_hidden(name):
                    continue
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    files.append(Path(dirpath) / name)
                else:
                    skipped += 1
        files.sort(key=lambda p: p.relative_to(self.root).as_posix())
        return files, skipped

    def _assign_labels(self, class_names: list[str], class_ids: list[str],
                       wnid_to_index: dict[str, int]) -> None:
        by_id = {str(cid).casefold(): idx for idx, cid in enumerate(class_ids)}
        by_name: dict[str, list[int]] = {}
        for idx, cname in enumerate(class_names):
            by_name.setdefault(normalize_class_name(cname), []).append(idx)
        wnids = {str(k).lower(): int(v) for k, v in wnid_to_index.items()}
        folder_label: dict[str, int] = {}
        for folder in self.folder_classes:
            key = normalize_class_name(folder)
            named = by_name.get(key, [])
            if folder.casefold() in by_id:
                folder_label[folder] = by_id[folder.casefold()]
            elif len(named) == 1:
                folder_label[folder] = named[0]
            elif _WNID_RE.match(folder.lower()) and folder.lower() in wnids:
                folder_label[folder] = wnids[folder.lower()]
            else:
                folder_label[folder] = -1
                if len(named) > 1:
                    self.ambiguous_folders[folder] = [str(class_ids[i]) for i in named]
                else:
                    self.unmatched_folders.append(folder)
        labels = np.array([folder_label.get(f, -1) if f is not None else -1
                           for f in self._folders], dtype=np.int64)
        self.class_names = list(class_names)
        self.class_ids = list(class_ids)
        self.labels = labels if (labels >= 0).any() else None

    def path_of(self, i: int) -> Path:
        return self._files[self._check_index(i)]

    def load(self, i: int) -> Image.Image:
        i = self._check_index(i)
        try:
            return load_image_file(self._files[i], max_side=self.max_side,
                                   max_pixels=self.max_pixels, name=self.ids[i])
        except BadImageError as e:
            self._note_bad(i, e)
            raise

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hash_json({
                "kind": "folder", "files": fingerprint_files(self._files, self.root),
                "loader": LOADER_VERSION, "max_side": self.max_side,
                "max_pixels": self.max_pixels})
        return self._fingerprint

    def describe(self) -> dict:
        d = super().describe()
        d.update({"root": str(self.root), "skipped_files": self.skipped_files,
                  "folders": len(self.folder_classes),
                  "unmatched_folders": list(self.unmatched_folders),
                  "ambiguous_folders": dict(self.ambiguous_folders),
                  "max_side": self.max_side})
        return d


# -------------------------------------------------------------------------- torchvision sets

def default_datasets_root() -> Path:
    """Where downloaded datasets go: ``<cache root>/datasets`` (``~/.cache/falcon/datasets``)."""
    return default_cache_root() / "datasets"


def _dataset_classes():
    import torchvision.datasets as tvd

    return {
        "cifar10": (lambda root, split, download: tvd.CIFAR10(
            root, train=(split == "train"), download=download), "test",
            ("train", "test"), "cifar-10-batches-py"),
        "stl10": (lambda root, split, download: tvd.STL10(
            root, split=split, download=download), "test", ("train", "test"), "stl10_binary"),
        "imagenette": (lambda root, split, download: tvd.Imagenette(
            root, split=split, size="320px", download=download), "val", ("train", "val"),
            "imagenette2-320"),
    }


TORCHVISION_SETS = ("cifar10", "stl10", "imagenette")


class TorchvisionProbe(ProbeSet):
    """CIFAR-10 (test split by default), STL-10 (test) or Imagenette (320 px, val), through
    ``torchvision.datasets``; downloaded into ``root`` (default ``~/.cache/falcon/datasets``)
    when missing. A failed download raises :class:`OfflineError` naming the folder where the
    files would go, so they can be placed there by hand."""

    kind = "torchvision"

    def __init__(self, name: str, root: str | os.PathLike | None = None,
                 split: Optional[str] = None, download: bool = True,
                 max_side: Optional[int] = DEFAULT_MAX_SIDE):
        super().__init__()
        name = name.lower().replace("-", "").replace("_", "")
        specs = _dataset_classes()
        if name not in specs:
            raise FalconError(f"Unknown dataset {name!r}.",
                              "Built-in datasets: " + ", ".join(TORCHVISION_SETS) + ".")
        factory, default_split, splits, folder = specs[name]
        split = split or default_split
        if split not in splits:
            raise FalconError(f"{name} has no split {split!r}.",
                              "Use one of: " + ", ".join(splits) + ".")
        self.name, self.split, self.max_side = name, split, max_side
        self.root = Path(root).expanduser() if root is not None else default_datasets_root()
        self.data_folder = self.root / folder
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FalconError(f"Cannot create the dataset folder {self.root}: {e}",
                              "Choose another folder (root=...) or set FALCON_CACHE.") from e
        try:
            ds = factory(str(self.root), split, download)
        except FalconError:
            raise
        except (KeyError, ValueError, EOFError, pickle.UnpicklingError) as e:
            raise FalconError(
                f"The {name} files in {self.data_folder} are damaged ({type(e).__name__}: {e}).",
                f"Delete {self.data_folder} and run again to download it afresh.") from e
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            network = isinstance(e, (URLError, ConnectionError, TimeoutError, socket.error)) \
                and not isinstance(e, (FileNotFoundError, PermissionError))
            if download and not network and self.data_folder.exists():
                raise FalconError(
                    f"The {name} files in {self.data_folder} are damaged or incomplete: {e}",
                    f"Delete {self.data_folder} and run again to download it afresh, or place "
                    f"the original files there.") from e
            if download:
                raise OfflineError(
                    f"Could not download {name} ({split}) into {self.root} "
                    f"(expected folder {self.data_folder}): {e}",
                    OFFLINE_HINT + f" Or place the {name} files in {self.data_folder} yourself."
                ) from e
            raise FalconError(
                f"{name} ({split}) was not found in {self.data_folder}: {e}",
                f"Place the {name} files there, or allow the download.") from e
        self._ds = ds
        self._setup(ds)
        self._fingerprint: Optional[str] = None

    def _setup(self, ds: Any) -> None:
        n = len(ds)
        self.ids = [f"{self.name}/{self.split}/{i:06d}" for i in range(n)]
        labels = None
        if self.name == "cifar10":
            labels = np.asarray(ds.targets, dtype=np.int64)
        elif self.name == "stl10":
            labels = np.asarray(ds.labels, dtype=np.int64)
        elif self.name == "imagenette":
            labels = np.asarray([lab for _p, lab in ds._samples], dtype=np.int64)
        self.labels = labels
        classes = getattr(ds, "classes", None)
        if classes is not None:
            self.class_names = [c[0] if isinstance(c, (tuple, list)) else str(c)
                                for c in classes]

    def load(self, i: int) -> Image.Image:
        i = self._check_index(i)
        try:
            if self.name == "imagenette":
                path = self._ds._samples[i][0]
                return load_image_file(path, max_side=self.max_side, name=self.ids[i])
            img, _ = self._ds[i]
            if not isinstance(img, Image.Image):
                img = Image.fromarray(np.asarray(img))
            return to_rgb(img)
        except BadImageError as e:
            self._note_bad(i, e)
            raise
        except _READ_ERRORS as e:
            err = BadImageError(f"Cannot read image {self.ids[i]}: {e}",
                                "The dataset files may be damaged; delete "
                                f"{self.data_folder} to download it again.")
            self._note_bad(i, err)
            raise err from e

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            files = [Path(dp) / f for dp, _d, fs in os.walk(self.data_folder) for f in fs]
            self._fingerprint = hash_json({
                "kind": "torchvision", "name": self.name, "split": self.split,
                "files": fingerprint_files(files, self.root), "loader": LOADER_VERSION,
                "max_side": self.max_side if self.name == "imagenette" else None})
        return self._fingerprint

    def describe(self) -> dict:
        d = super().describe()
        d.update({"name": self.name, "split": self.split, "root": str(self.root),
                  "data_folder": str(self.data_folder)})
        return d


# ------------------------------------------------------------------------------- array probe

class ArrayProbe(ProbeSet):
    """Images held in a ``uint8`` array ``(N, H, W, 3)`` (or ``(N, H, W)`` grey), in memory or
    memory-mapped. ``fingerprint`` defaults to a sha256 of the shape and bytes."""

    kind = "array"

    def __init__(self, images: np.ndarray, ids: Optional[Sequence[str]] = None,
                 labels: Optional[Sequence[int]] = None,
                 class_names: Optional[Sequence[str]] = None,
                 fingerprint: Optional[str] = None, description: str = ""):
        super().__init__()
        if not isinstance(images, np.ndarray):
            images = np.asarray(images)
        if images.dtype != np.uint8:
            raise FalconError(f"ArrayProbe needs uint8 images, got {images.dtype}.",
                              "Convert with (x * 255).clip(0, 255).astype(np.uint8).")
        if not (images.ndim == 4 and images.shape[-1] == 3) and images.ndim != 3:
            raise FalconError(f"ArrayProbe needs an (N, H, W, 3) array, got shape "
                              f"{images.shape}.", None)
        if images.shape[0] == 0:
            raise FalconError("ArrayProbe got no images.", None)
        self.images = images
        n = images.shape[0]
        self.ids = list(ids) if ids is not None else [f"{i:06d}" for i in range(n)]
        if len(self.ids) != n:
            raise FalconError(f"ArrayProbe: {len(self.ids)} ids for {n} images.", None)
        if labels is not None:
            lab = np.asarray(labels, dtype=np.int64)
            if lab.shape != (n,):
                raise FalconError(f"ArrayProbe: labels of shape {lab.shape} for {n} images.",
                                  None)
            self.labels = lab
        self.class_names = list(class_names) if class_names is not None else None
        self.description = description
        self._fingerprint = fingerprint

    def load(self, i: int) -> Image.Image:
        i = self._check_index(i)
        arr = np.ascontiguousarray(self.images[i])
        im = Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB")
        return im.convert("RGB") if im.mode != "RGB" else im

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"array|{self.images.shape}|{self.images.dtype.str}|".encode())
            n = self.images.shape[0]
            row_bytes = max(1, int(np.prod(self.images.shape[1:])))
            step = max(1, (64 << 20) // row_bytes)
            for s in range(0, n, step):
                h.update(np.ascontiguousarray(self.images[s:s + step]).tobytes())
            h.update("|".join(self.ids).encode("utf-8"))
            if self.labels is not None:
                h.update(self.labels.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        d = super().describe()
        d.update({"shape": list(self.images.shape), "description": self.description})
        return d


# ------------------------------------------------------------------------------ registry

PROBES = Registry("probe set")


def register_probe(name: str, factory: Callable[..., ProbeSet] | str) -> None:
    """Make ``create_probe(name, **kw)`` call ``factory(**kw it accepts)`` (see
    :mod:`falcon_core.registry`)."""
    PROBES.register(name.lower(), factory)


for _name in TORCHVISION_SETS:  # kw: root, split, download, max_side
    register_probe(_name, functools.partial(TorchvisionProbe, _name))
# The offline demo world's generated scenes (falcon_core/demo); kw: world, n, seed.
register_probe("demo", "falcon_core.demo.integration:demo_probe")


def available_probes() -> list[str]:
    return sorted(PROBES.names())


def create_probe(spec: str, **kw: Any) -> ProbeSet:
    """A probe set from a spec: a registered name (``cifar10`` / ``stl10`` / ``imagenette``, kw:
    root, split, download; ``demo``, kw: world, n, seed), or a folder path (kw:
    class_names_for_labels, class_ids_for_labels, wnid_to_index, max_side). Keywords a kind does not read are ignored,
    so a workspace can pass every kind the same ones."""
    if isinstance(spec, ProbeSet):
        return spec
    spec = str(spec).strip()
    if not spec:
        raise FalconError("No probe set given.",
                          "Give an image folder, or one of: " + ", ".join(available_probes()))
    low = spec.lower()
    if low in PROBES:
        return PROBES.create(low, **kw)
    if spec.startswith("folder:"):
        spec = spec[len("folder:"):]
    folder_kw = {k: kw[k] for k in ("class_names_for_labels", "class_ids_for_labels",
                                    "wnid_to_index", "max_side", "max_pixels") if k in kw}
    if "class_names" in kw and "class_names_for_labels" not in folder_kw:
        folder_kw["class_names_for_labels"] = kw["class_names"]
    path = Path(spec).expanduser()
    if not path.exists() and os.sep not in spec and "/" not in spec:
        raise FalconError(f"{spec!r} is neither a folder nor a known probe set.",
                          "Give an image folder, or one of: " + ", ".join(available_probes()))
    return ImageFolderProbe(path, **folder_kw)
