"""A content-keyed disk cache with atomic writes and resumable chunked arrays.

Layout::

    <root>/<namespace>/<key><suffix>          one finished entry (.npy, .npz, .json, .bin)
    <root>/<namespace>/<key>.parts/           the chunks of an unfinished compute_chunked()
    <root>/<namespace>/*.tmp                  a write in progress (or a killed one)

``root`` defaults to ``$FALCON_CACHE`` or ``~/.cache/falcon``. A key is the sha256 of the canonical
JSON (sorted keys, no whitespace) of everything that determines the entry, so a different model,
probe set, vocabulary or setting gives a different file, and nothing is ever invalidated by hand.

Every write goes to a temporary file (``tempfile.mkstemp(..., suffix=".tmp")``) in the final folder,
is flushed and fsynced, then renamed into place with :func:`os.replace`: a killed run never leaves
a half-written file under a final name, and ``*.tmp`` files are never read. A final file that does
not parse (disk trouble, a file copied by hand) is treated as missing: it is deleted and the value
recomputed, never trusted.

The namespace ``datasets`` (downloaded probe sets, see :mod:`falcon_core.data.probes`) lives
under the same root but is not a cache entry: :meth:`DiskCache.entries`, :meth:`size_bytes` and
:meth:`clear` without a namespace leave it alone (name it explicitly to include it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from .progress import Progress, report

__all__ = [
    "hash_bytes",
    "hash_file",
    "hash_json",
    "canonical_json",
    "fingerprint_files",
    "default_cache_root",
    "DiskCache",
]

RESERVED_NAMESPACES = ("datasets",)
TMP_MAX_AGE_S = 3600.0


# --------------------------------------------------------------------------------------- hashing

def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of a bytes-like object."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's contents, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        # Small arrays only (a list of feature ids, a box); hash big ones with hash_bytes.
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=lambda x: json.dumps(x, sort_keys=True, default=_json_default))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bytes):
        return {"__bytes_sha256__": hash_bytes(obj)}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot hash an object of type {type(obj).__name__} into a cache key")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; numpy scalars, paths and sets are converted."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_json_default, allow_nan=True)


def hash_json(obj: Any) -> str:
    """Hex sha256 of :func:`canonical_json` of ``obj``."""
    return hash_bytes(canonical_json(obj).encode("utf-8"))


def fingerprint_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> str:
    """A cheap fingerprint of many files: hash of (path relative to root, size, mtime_ns) each.

    Does not read the files, so it is fast on large folders; any edit that changes a file's size or
    modification time changes the fingerprint. Paths are sorted first (order does not matter).
    """
    root = Path(root)
    rows = []
    for p in paths:
        p = Path(p)
        st = p.stat()
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:
            rel = p.as_posix()
        rows.append((rel, int(st.st_size), int(st.st_mtime_ns)))
    rows.sort()
    h = hashlib.sha256()
    for rel, size, mtime in rows:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def default_cache_root() -> Path:
    """``$FALCON_CACHE`` or ``~/.cache/falcon``."""
    env = os.environ.get("FALCON_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "falcon"


# ------------------------------------------------------------------------------------ the cache

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # pragma: no cover
        shutil.rmtree(path, ignore_errors=True)


def atomic_write(final_path: str | os.PathLike, writer: Callable[[Any], None]) -> Path:
    """Write ``final_path`` atomically: ``writer(binary_file)`` fills a temp file in the same
    folder, which is fsynced and renamed into place. If ``writer`` raises, the temp file is
    removed and no file appears under ``final_path``."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final_path.parent, prefix=final_path.name + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final_path)
    except BaseException:
        _unlink_quiet(Path(tmp))
        raise
    _fsync_dir(final_path.parent)
    return final_path


class DiskCache:
    """Content-keyed cache of arrays and JSON values on disk (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r})"

    # ---------------------------------------------------------------- keys and paths
    @staticmethod
    def key(namespace: str, **parts: Any) -> str:
        """The key of an entry: sha256 of the canonical JSON of ``{namespace, parts}``."""
        return hash_json({"namespace": namespace, "parts": parts})

    def _ns_dir(self, namespace: str) -> Path:
        ns = Path(namespace)
        if not namespace or ns.is_absolute() or ".." in ns.parts:
            raise ValueError(f"bad cache namespace {namespace!r}")
        return self.root / ns

    def path(self, namespace: str, key: str, suffix: str = "") -> Path:
        """Where the entry ``key`` of ``namespace`` lives (the file may not exist)."""
        if not key or "/" in key or "\\" in key or key in (".", ".."):
            raise ValueError(f"bad cache key {key!r}")
        return self._ns_dir(namespace) / f"{key}{suffix}"

    def exists(self, namespace: str, key: str, suffix: str) -> bool:
        return self.path(namespace, key, suffix).is_file()

    def _discard(self, path: Path) -> None:
        _unlink_quiet(path)

    # ---------------------------------------------------------------- writers
    def write_bytes(self, namespace: str, key: str, data: bytes, suffix: str = ".bin") -> Path:
        return atomic_write(self.path(namespace, key, suffix), lambda f: f.write(data))

    def write_json(self, namespace: str, key: str, obj: Any) -> Path:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=True, default=_json_default)
        data = text.encode("utf-8")
        return atomic_write(self.path(namespace, key, ".json"), lambda f: f.write(data))

    def write_npy(self, namespace: str, key: str, arr: Any) -> Path:
        arr = np.asarray(arr)
        return atomic_write(self.path(namespace, key, ".npy"),
                            lambda f: np.save(f, arr, allow_pickle=False))

    def write_npz(self, namespace: str, key: str, **arrays: Any) -> Path:
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        return atomic_write(self.path(namespace, key, ".npz"),
                            lambda f: np.savez(f, **arrays))

    # ---------------------------------------------------------------- readers
    def read_bytes(self, namespace: str, key: str, suffix: str = ".bin") -> Optional[bytes]:
        p = self.path(namespace, key, suffix)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            return None

    def read_json(self, namespace: str, key: str) -> Any:
        """The stored value, or None when missing or corrupt (a corrupt file is deleted).

        Note: a stored JSON ``null`` is indistinguishable from a missing entry here; use
        :meth:`get_or_compute_json`, which handles that case.
        """
        found, value = self._read_json(namespace, key)
        return value if found else None

    def _read_json(self, namespace: str, key: str) -> tuple[bool, Any]:
        p = self.path(namespace, key, ".json")
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return False, None
        try:
            return True, json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            self._discard(p)
            return False, None

    def read_npy(self, namespace: str, key: str, mmap: bool = False) -> Optional[np.ndarray]:
        """The stored array (memory-mapped read-only when ``mmap``), or None when missing or
        corrupt (a corrupt file is deleted)."""
        p = self.path(namespace, key, ".npy")
        if not p.is_file():
            return None
        return self._load_npy_file(p, mmap=mmap)

    def _load_npy_file(self, p: Path, mmap: bool) -> Optional[np.ndarray]:
        try:
            if mmap:
                arr = np.load(p, mmap_mode="r", allow_pickle=False)
                if arr.size == 0:
                    # An empty array cannot be memory-mapped reliably; a plain array is fine.
                    arr = np.load(p, allow_pickle=False)
            else:
                arr = np.load(p, allow_pickle=False)
            if not isinstance(arr, np.ndarray):
                raise ValueError("not an array")
            return arr
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError, TypeError):
            self._discard(p)
            return None

    def read_npz(self, namespace: str, key: str) -> Optional[dict[str, np.ndarray]]:
        """The stored arrays (loaded into memory), or None when missing or corrupt."""
        p = self.path(namespace, key, ".npz")
        if not p.is_file():
            return None
        try:
            with open(p, "rb") as f:  # we own the handle: numpy leaks it on a bad zip
                with np.load(f, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
        except FileNotFoundError:
            return None
        except Exception:  # zipfile.BadZipFile, ValueError, OSError, EOFError, ...
            self._discard(p)
            return None

    # ---------------------------------------------------------------- get or compute
    def get_or_compute_npy(self, namespace: str, key: str, fn: Callable[[], Any],
                           mmap: bool = False) -> np.ndarray:
        """The cached array, or ``fn()`` computed, stored atomically and returned."""
        arr = self.read_npy(namespace, key, mmap=mmap)
        if arr is not None:
            return arr
        value = np.asarray(fn())
        self.write_npy(namespace, key, value)
        if mmap:
            again = self.read_npy(namespace, key, mmap=True)
            if again is not None:
                return again
        return value

    def get_or_compute_json(self, namespace: str, key: str, fn: Callable[[], Any]) -> Any:
        """The cached JSON value, or ``fn()`` computed, stored and returned as read back (so the
        first and later calls return the same types: tuples come back as lists)."""
        found, value = self._read_json(namespace, key)
        if found:
            return value
        value = fn()
        self.write_json(namespace, key, value)
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=True,
                                     default=_json_default))

    def get_or_compute_npz(self, namespace: str, key: str,
                           fn: Callable[[], dict[str, Any]]) -> dict[str, np.ndarray]:
        """The cached dict of arrays, or ``fn()`` (a dict of arrays) computed, stored, returned."""
        got = self.read_npz(namespace, key)
        if got is not None:
            return got
        arrays = {k: np.asarray(v) for k, v in dict(fn()).items()}
        self.write_npz(namespace, key, **arrays)
        return arrays

    # ---------------------------------------------------------------- resumable chunked arrays
    def parts_dir(self, namespace: str, key: str) -> Path:
        return self.path(namespace, key, ".parts")

    def compute_chunked(self, namespace: str, key: str, n_rows: int, chunk_rows: int,
                        fn: Callable[[int, int], Any], dtype: Any,
                        progress: Optional[Progress] = None,
                        stage: Optional[str] = None) -> np.ndarray:
        """A large array computed in row chunks that survive interruption.

        ``fn(start, stop)`` returns rows ``start:stop`` (shape ``(stop - start, ...)``). Each chunk
        is stored atomically as ``<key>.parts/part_<start>_<stop>.npy``; a rerun skips the chunks
        already there (a part that does not parse, or has the wrong shape/dtype, is recomputed).
        When every chunk exists they are copied into one ``.npy`` (written through
        ``np.lib.format.open_memmap`` on a temp file, then renamed), the parts are removed, and the
        result is returned memory-mapped read-only (an ``np.memmap``).

        ``progress(done_rows, n_rows, stage)`` is called after each chunk (stage defaults to the
        namespace). With ``n_rows == 0`` the result is ``fn(0, 0)`` as a plain array (nothing to
        map); it is not stored.
        """
        n_rows = int(n_rows)
        chunk_rows = max(1, int(chunk_rows))
        dtype = np.dtype(dtype)
        stage = stage or namespace
        final = self.path(namespace, key, ".npy")

        if n_rows <= 0:
            return np.asarray(fn(0, 0), dtype=dtype)

        if final.is_file():
            arr = self._load_npy_file(final, mmap=True)
            if arr is not None and arr.shape[:1] == (n_rows,) and arr.dtype == dtype:
                report(progress, n_rows, n_rows, stage)
                return arr
            if arr is not None:  # a different shape/dtype under this key: not ours to trust
                del arr
                self._discard(final)

        parts = self.parts_dir(namespace, key)
        parts.mkdir(parents=True, exist_ok=True)
        self._check_parts_meta(parts, n_rows, chunk_rows, dtype)

        bounds = [(s, min(n_rows, s + chunk_rows)) for s in range(0, n_rows, chunk_rows)]
        trailing: Optional[tuple] = None
        done = 0
        part_files = []
        for start, stop in bounds:
            pf = parts / f"part_{start:012d}_{stop:012d}.npy"
            part_files.append(pf)
            existing = self._load_npy_file(pf, mmap=True) if pf.is_file() else None
            if existing is not None and (existing.shape[:1] != (stop - start,)
                                         or existing.dtype != dtype
                                         or (trailing is not None
                                             and existing.shape[1:] != trailing)):
                del existing
                self._discard(pf)
                existing = None
            if existing is None:
                block = np.asarray(fn(start, stop))
                if block.shape[:1] != (stop - start,):
                    raise ValueError(f"compute_chunked: fn({start}, {stop}) returned shape "
                                     f"{block.shape}, expected {stop - start} rows")
                block = block.astype(dtype, copy=False)
                if trailing is not None and block.shape[1:] != trailing:
                    raise ValueError(f"compute_chunked: fn({start}, {stop}) returned rows of "
                                     f"shape {block.shape[1:]}, earlier chunks {trailing}")
                atomic_write(pf, lambda f, b=block: np.save(f, b, allow_pickle=False))
                shape_rest = block.shape[1:]
                del block
            else:
                shape_rest = existing.shape[1:]
                del existing
            if trailing is None:
                trailing = tuple(shape_rest)
            done = stop
            report(progress, done, n_rows, stage)

        # assemble
        assert trailing is not None
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=final.name + ".", suffix=".tmp")
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype,
                                            shape=(n_rows,) + trailing)
            for (start, stop), pf in zip(bounds, part_files):
                part = np.load(pf, mmap_mode="r", allow_pickle=False)
                out[start:stop] = part
                del part
            out.flush()
            del out
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except FileNotFoundError:
            # another process finished the same entry first and removed the parts
            _unlink_quiet(Path(tmp))
            arr = self._load_npy_file(final, mmap=True) if final.is_file() else None
            if arr is not None and arr.shape[:1] == (n_rows,) and arr.dtype == dtype:
                return arr
            raise
        except BaseException:
            _unlink_quiet(Path(tmp))
            raise
        _fsync_dir(final.parent)
        shutil.rmtree(parts, ignore_errors=True)
        return np.load(final, mmap_mode="r", allow_pickle=False)

    def _check_parts_meta(self, parts: Path, n_rows: int, chunk_rows: int,
                          dtype: np.dtype) -> None:
        """Parts written with another n_rows/chunk size/dtype are thrown away."""
        meta = {"n_rows": n_rows, "chunk_rows": chunk_rows, "dtype": dtype.str}
        mp = parts / "meta.json"
        old = None
        try:
            old = json.loads(mp.read_text("utf-8"))
        except (OSError, ValueError):
            old = None
        if old != meta:
            for p in parts.iterdir():
                if p.is_file():
                    _unlink_quiet(p)
            data = json.dumps(meta).encode()
            atomic_write(mp, lambda f: f.write(data))

    def chunked_progress(self, namespace: str, key: str) -> tuple[int, int]:
        """(parts done, 0) for an unfinished chunked entry; (1, 1) when finished; (0, 0) when
        nothing exists. Only a coarse indicator for the app."""
        if self.path(namespace, key, ".npy").is_file():
            return 1, 1
        parts = self.parts_dir(namespace, key)
        if not parts.is_dir():
            return 0, 0
        return len(list(parts.glob("part_*.npy"))), 0

    # ---------------------------------------------------------------- housekeeping
    def _namespaces(self, namespace: Optional[str]) -> list[Path]:
        if namespace is not None:
            d = self._ns_dir(namespace)
            return [d] if d.is_dir() else []
        if not self.root.is_dir():
            return []
        return sorted(d for d in self.root.iterdir()
                      if d.is_dir() and d.name not in RESERVED_NAMESPACES)

    @staticmethod
    def _tree_size(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        total = 0
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        return total

    def entries(self, namespace: Optional[str] = None) -> list[dict]:
        """What is stored: one dict per entry with ``namespace``, ``key``, ``suffix``, ``path``,
        ``size_bytes``, ``mtime`` and ``complete`` (False for an unfinished chunked array).
        Temp files are not listed."""
        out = []
        for ns_dir in self._namespaces(namespace):
            ns = ns_dir.relative_to(self.root).as_posix()
            for p in sorted(ns_dir.iterdir()):
                if p.name.endswith(".tmp"):
                    continue
                if p.is_dir():
                    if not p.name.endswith(".parts"):
                        continue
                    key, suffix, complete = p.name[: -len(".parts")], ".parts", False
                else:
                    key, dot, ext = p.name.partition(".")
                    suffix, complete = (dot + ext if dot else ""), True
                try:
                    mtime = p.stat().st_mtime
                except OSError:
                    continue
                out.append({"namespace": ns, "key": key, "suffix": suffix, "path": str(p),
                            "size_bytes": self._tree_size(p), "mtime": mtime,
                            "complete": complete})
        return out

    def size_bytes(self, namespace: Optional[str] = None) -> int:
        """Total bytes on disk of one namespace, or of every cache namespace."""
        return sum(self._tree_size(d) for d in self._namespaces(namespace))

    def clear(self, namespace: Optional[str] = None) -> int:
        """Delete one namespace, or every cache namespace (not ``datasets``). Returns the number
        of bytes freed (approximately)."""
        freed = 0
        for d in self._namespaces(namespace):
            freed += self._tree_size(d)
            shutil.rmtree(d, ignore_errors=True)
        return freed

    def clear_tmp(self, max_age_s: float = TMP_MAX_AGE_S) -> int:
        """Remove ``*.tmp`` files (left by killed writes) older than ``max_age_s`` seconds.
        Younger ones may belong to a write in progress and are kept. Returns how many were
        removed."""
        if not self.root.is_dir():
            return 0
        now = time.time()
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.endswith(".tmp"):
                    continue
                p = os.path.join(dirpath, name)
                try:
                    if now - os.stat(p).st_mtime > max_age_s:
                        os.unlink(p)
                        removed += 1
                except OSError:
                    pass
        return removed


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'`` (for the app's cache listing)."""
    if n < 1024:
        return f"{int(n)} B"
    units = ["KB", "MB", "GB", "TB"]
    exp = min(int(math.log(n, 1024)), len(units))
    return f"{n / 1024 ** exp:.1f} {units[exp - 1]}"
