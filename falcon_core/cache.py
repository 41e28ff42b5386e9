"""A content-keyed disk cache that verifies everything it reads: atomic writes, checksums,
expected shapes and schemas, resumable chunked arrays, and a clear message when the folder cannot
be used.

Layout::

    <root>/<namespace>/<key><suffix>          one finished entry (.npy, .npz, .json, .bin)
    <root>/<namespace>/<key>.parts/           the chunks of an unfinished compute_chunked()
    <root>/<namespace>/*.tmp                  a write in progress (or a killed one)
    <root>/quarantine/<namespace>/...         entries that failed their check (+ a .txt: why)

``root`` defaults to ``$FALCON_CACHE`` or ``~/.cache/falcon``. A key is the sha256 of the canonical
JSON (sorted keys, no whitespace) of everything that determines the entry and of the cache's file
format (:data:`CACHE_FORMAT`), so a different model, probe set, vocabulary or setting gives a
different file, and nothing is ever invalidated by hand.

**Writes** go to a temporary file (``*.tmp``) in the final folder, are flushed and fsynced, then
renamed into place with :func:`os.replace`: a killed run never leaves a half-written file under a
final name, and ``*.tmp`` files are never read.

**Every file carries its checksum.** A cached file is its payload (a plain ``.npy``, ``.npz``,
JSON text or bytes) followed by a 32-byte trailer: ``FALCONCK``, the payload's length
(uint64, little-endian) and the xxh3-128 digest of the payload. (numpy ignores bytes after an
array, so a cached ``.npy`` still opens with ``np.load``.) A read checks the trailer, the length
and the digest — an array is hashed block by block right after each block is read (8 MB blocks:
on a read from disk the kernel reads ahead meanwhile); a memory-mapped one is hashed through the
mapping — and then what the
caller expects: an array's shape and dtype, a JSON value's schema (``schema=``). A file that fails
any check (truncated, garbage after a valid header, no trailer, the wrong shape, the wrong
structure) is moved to ``<root>/quarantine/`` for a bug report, reported once
(:attr:`DiskCache.notices`, ``on_notice``) and treated as missing, so it is recomputed. Nothing
the cache returns comes from a file it has not verified.

**An unusable folder** (read-only, a regular file, a full disk): a write that fails leaves nothing
behind (its temp file is removed), :attr:`DiskCache.problem` says what is wrong and what to do
(reported once), and the value is kept in memory for the rest of the process, so results are
still computed and returned; they are just not kept for the next run.

The namespaces ``datasets`` (downloaded probe sets, see :mod:`falcon_core.data.probes`),
``quarantine`` and ``workspaces`` (the app's opaque workspace ids) live under the same root but
hold no cache entries: :meth:`DiskCache.entries`, :meth:`size_bytes` and :meth:`clear` without a
namespace leave them alone (name one explicitly to include it).

Where the parts live: the file format (trailer, atomic writes, verified reads) is
:mod:`falcon_core.cache_format`; resumable chunked arrays :mod:`falcon_core.cache_chunked`;
listing, clearing and quarantine :mod:`falcon_core.cache_housekeeping`; this module holds the
keys, the hashing helpers and :class:`DiskCache`, which brings them together.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from . import cache_format as fmt
from .cache_chunked import ChunkedArrays
from .cache_external import ExternalFiles
from .cache_format import CACHE_FORMAT, CacheCheckError, atomic_write, shape_matches
from .cache_housekeeping import FILE_DIGESTS, CacheHousekeeping
from .errors import FalconError

__all__ = [
    "hash_bytes",
    "hash_file",
    "file_digest",
    "file_identity",
    "hash_json",
    "canonical_json",
    "fingerprint_files",
    "default_cache_root",
    "cache_problem",
    "DiskCache",
    "CACHE_FORMAT",
]

#: Values kept in memory when the folder cannot be written (oldest dropped first beyond this).
MEMORY_LIMIT_BYTES = 1 << 30

log = logging.getLogger("falcon_core.cache")


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


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What changes whenever a file's contents can have changed: its real path, device, inode,
    size, and modification and status-change times in ns. (Writing a file moves its ctime, which
    no user call can set back, and replacing it gives a new inode; so an unchanged identity means
    unchanged contents.)"""
    real = os.path.realpath(path)
    st = os.stat(real)
    return {"path": real, "dev": st.st_dev, "inode": st.st_ino, "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def file_digest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """:func:`hash_file` of ``path``, read from a digest stored under the file's identity
    (:func:`file_identity`) in ``<cache root>/file_digests/`` when there is one, so model weights
    are hashed once, not in every process (issue 9: "warm is warm"). The stored entry holds the
    identity too and is used only when it is the file's identity now; a changed file has another
    identity, so it is hashed again. A cache folder that cannot be written only costs the hash."""
    ident = file_identity(path)
    cache = DiskCache(root or default_cache_root())
    key = hash_json(ident)

    def check(value: Any) -> str:
        if not isinstance(value, dict) or value.get("identity") != ident or \
                not isinstance(value.get("sha256"), str) or len(value["sha256"]) != 64:
            raise ValueError("not the digest of this file")
        return value["sha256"]

    found, digest = cache._read_json(FILE_DIGESTS, key, check)
    if found:
        return digest
    digest = hash_file(ident["path"])
    if file_identity(path) == ident:  # not changed while it was read
        cache.write_json(FILE_DIGESTS, key, {"identity": ident, "sha256": digest})
    return digest


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


# ------------------------------------------------------------------------------ problems

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def cache_problem(root: str | os.PathLike, error: OSError, kept_in_memory: bool = True
                  ) -> FalconError:
    """A message and what to do for a cache folder that cannot be written (``kept_in_memory``:
    the cache goes on without it, and the message says so)."""
    root = Path(root)
    cause = error.strerror or str(error) or type(error).__name__
    if root.exists() and not root.is_dir():
        what = f"The cache folder {root} is a file, not a folder."
        fix = "Set FALCON_CACHE (or --cache-dir) to a folder, or move that file away."
    elif error.errno in _FULL:
        what = f"The disk of the cache folder {root} is full ({cause})."
        fix = ("Free some disk space, or set FALCON_CACHE (or --cache-dir) to a folder on a disk "
               "with room.")
    elif error.errno in _DENIED:
        what = f"The cache folder {root} cannot be written ({cause})."
        fix = ("Set FALCON_CACHE (or --cache-dir) to a folder you can write to, or make this one "
               "writable.")
    else:
        what = f"The cache folder {root} cannot be used ({cause})."
        fix = "Set FALCON_CACHE (or --cache-dir) to a writable local folder."
    if kept_in_memory:
        what += " Results are computed but not kept: the next run computes them again."
    return FalconError(what, fix)


# ------------------------------------------------------------------------------------ the cache

_CHECK_ERRORS = (CacheCheckError, ValueError, TypeError, KeyError, AttributeError, IndexError,
                 RecursionError, FalconError, UnicodeDecodeError, EOFError)


class DiskCache(ChunkedArrays, CacheHousekeeping, ExternalFiles):
    """Content-keyed cache of arrays and JSON values on disk (see the module docstring).

    ``on_notice(text)`` is called once for each thing the user should know (a damaged file moved
    aside, a folder that cannot be written); the texts are also kept in :attr:`notices`.
    """

    def __init__(self, root: str | os.PathLike | None = None,
                 on_notice: Optional[Callable[[str], None]] = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.on_notice = on_notice
        self.notices: list[str] = []
        self.problem: Optional[FalconError] = None  # set when the folder cannot be written
        self.quarantined: list[dict[str, str]] = []
        self._memory: "OrderedDict[str, tuple[Any, int]]" = OrderedDict()
        self._memory_bytes = 0
        self._ignored: set[tuple[str, int, int]] = set()
        self._verified_files: set[tuple[str, int, int, int]] = set()  # verified_path()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r})"

    # ---------------------------------------------------------------- keys and paths
    @staticmethod
    def key(namespace: str, **parts: Any) -> str:
        """The key of an entry: sha256 of the canonical JSON of ``{namespace, parts, format}``."""
        return hash_json({"namespace": namespace, "parts": parts, "format": CACHE_FORMAT})

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
        """Whether an entry is there (in memory or on disk; not verified: use a read for that)."""
        p = self.path(namespace, key, suffix)
        return str(p) in self._memory or p.is_file()

    # ---------------------------------------------------------------- notices
    def _notice(self, text: str) -> None:
        with self._lock:
            if text in self.notices:
                return
            self.notices.append(text)
        log.warning("%s", text)
        if self.on_notice is not None:
            try:
                self.on_notice(text)
            except Exception:  # noqa: BLE001 - a notice must never break a computation
                log.exception("on_notice failed")

    def check_usable(self) -> Optional[FalconError]:
        """Try the folder now (made if missing, a file written and removed): the problem, said
        once, or None. Lets a caller say so before any result is written (an app page that only
        reads shipped or cached results would otherwise never find out)."""
        if self.problem is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = self.root / f".probe-{os.getpid()}-{threading.get_ident()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as e:
                self._unusable(e)
        return self.problem

    def _unusable(self, error: OSError) -> None:
        """A write failed: say once what is wrong; from now on values live in memory."""
        if self.problem is None:
            self.problem = cache_problem(self.root, error)
            self._notice(f"{self.problem.message} What to do: {self.problem.hint}")

    # ---------------------------------------------------------------- values kept in memory
    def _remember(self, path: Path, value: Any, nbytes: int) -> None:
        with self._lock:
            old = self._memory.pop(str(path), None)
            if old is not None:
                self._memory_bytes -= old[1]
            self._memory[str(path)] = (value, nbytes)
            self._memory_bytes += nbytes
            while self._memory_bytes > MEMORY_LIMIT_BYTES and len(self._memory) > 1:
                _, (_, n) = self._memory.popitem(last=False)
                self._memory_bytes -= n

    def _recall(self, path: Path) -> tuple[bool, Any]:
        with self._lock:
            got = self._memory.get(str(path))
        return (False, None) if got is None else (True, got[0])

    def _store(self, path: Path, writer: Callable[[Any], None], value: Any,
               nbytes: int) -> Optional[Path]:
        """Write an entry (checksummed, atomically); when the folder cannot be written, keep
        ``value`` in memory instead and say so once. Returns the path, or None."""
        if self.problem is None:
            try:
                return atomic_write(path, writer, checksum=True)
            except OSError as e:
                self._unusable(e)
        self._remember(path, value, nbytes)
        return None

    # ---------------------------------------------------------------- writers
    def write_bytes(self, namespace: str, key: str, data: bytes, suffix: str = ".bin"
                    ) -> Optional[Path]:
        data = bytes(data)
        return self._store(self.path(namespace, key, suffix), lambda f: f.write(data), data,
                           len(data))

    def write_json(self, namespace: str, key: str, obj: Any) -> Optional[Path]:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=True, default=_json_default)
        data = text.encode("utf-8")
        return self._store(self.path(namespace, key, ".json"), lambda f: f.write(data),
                           json.loads(text), len(data))

    def write_npy(self, namespace: str, key: str, arr: Any) -> Optional[Path]:
        arr = np.ascontiguousarray(np.asarray(arr))
        return self._store(self.path(namespace, key, ".npy"), lambda f: fmt.write_npy(f, arr),
                           arr, arr.nbytes)

    def write_npz(self, namespace: str, key: str, **arrays: Any) -> Optional[Path]:
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        return self._store(self.path(namespace, key, ".npz"), lambda f: f.write(data),
                           arrays, len(data))

    # ---------------------------------------------------------------- readers
    def _checked(self, path: Path, read: Callable[[], Any]) -> tuple[bool, Any]:
        """``(True, read())``, or ``(False, None)`` when missing or failing its check (then the
        file is moved aside)."""
        found, value = self._recall(path)
        if found:
            return True, value
        if self._skip(path):
            return False, None
        try:
            return True, read()
        except (FileNotFoundError, NotADirectoryError):
            return False, None
        except _CHECK_ERRORS as e:
            self._quarantine(path, _reason(e))
            return False, None
        except OSError as e:  # EIO and the like: the file cannot be trusted either
            self._quarantine(path, f"unreadable ({e.strerror or e})")
            return False, None

    def read_bytes(self, namespace: str, key: str, suffix: str = ".bin") -> Optional[bytes]:
        p = self.path(namespace, key, suffix)
        return self._checked(p, lambda: fmt.read_payload(p))[1]

    def read_json(self, namespace: str, key: str,
                  schema: Optional[Callable[[Any], Any]] = None) -> Any:
        """The stored value, or None when missing or failing its check (the file is moved aside).

        ``schema(value)`` checks the value's structure and returns what to hand back (it may
        convert it, e.g. into an :class:`~falcon_core.explanation.Explanation`); it raises
        (ValueError, TypeError, KeyError, FalconError, ...) when the structure is wrong. Note: a
        stored JSON ``null`` is indistinguishable from a missing entry here; use
        :meth:`get_or_compute_json`, which handles that case.
        """
        found, value = self._read_json(namespace, key, schema)
        return value if found else None

    def _read_json(self, namespace: str, key: str,
                   schema: Optional[Callable[[Any], Any]] = None) -> tuple[bool, Any]:
        p = self.path(namespace, key, ".json")

        def read():
            value = json.loads(fmt.read_payload(p).decode("utf-8"))
            return schema(value) if schema is not None else value

        found, value = self._recall(p)
        if found:  # kept in memory (unusable folder): still goes through the schema
            return True, schema(value) if schema is not None else value
        return self._checked(p, read)

    def read_npy(self, namespace: str, key: str, mmap: bool = False,
                 shape: Optional[tuple] = None, dtype: Any = None) -> Optional[np.ndarray]:
        """The stored array (memory-mapped read-only when ``mmap``), or None when missing or
        failing its check: checksum, ``shape`` (``None`` entries match any size, a final ``...``
        any trailing dimensions) and ``dtype``. A file that fails is moved aside."""
        p = self.path(namespace, key, ".npy")
        return self._load_npy(p, mmap, shape, dtype)

    def _load_npy(self, p: Path, mmap: bool, shape: Optional[tuple] = None,
                  dtype: Any = None) -> Optional[np.ndarray]:
        found, value = self._recall(p)
        if found:
            if (dtype is None or value.dtype == np.dtype(dtype)) and shape_matches(value.shape,
                                                                                   shape):
                return value
            with self._lock:
                self._memory.pop(str(p), None)
            return None
        return self._checked(p, lambda: fmt.read_npy(p, mmap, shape, dtype))[1]

    def read_npz(self, namespace: str, key: str) -> Optional[dict[str, np.ndarray]]:
        """The stored arrays (loaded into memory), or None when missing or failing its check."""
        p = self.path(namespace, key, ".npz")

        def read():
            with np.load(io.BytesIO(fmt.read_payload(p)), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}

        return self._checked(p, read)[1]

    # ---------------------------------------------------------------- get or compute
    def get_or_compute_npy(self, namespace: str, key: str, fn: Callable[[], Any],
                           mmap: bool = False, shape: Optional[tuple] = None,
                           dtype: Any = None) -> np.ndarray:
        """The cached array (verified, with the expected ``shape`` and ``dtype`` when given), or
        ``fn()`` computed, stored atomically and returned."""
        arr = self.read_npy(namespace, key, mmap=mmap, shape=shape, dtype=dtype)
        if arr is not None:
            return arr
        value = np.asarray(fn())
        stored = self.write_npy(namespace, key, value)
        if mmap and stored is not None:
            again = self.read_npy(namespace, key, mmap=True, shape=shape, dtype=dtype)
            if again is not None:
                return again
        return value

    def get_or_compute_json(self, namespace: str, key: str, fn: Callable[[], Any],
                            schema: Optional[Callable[[Any], Any]] = None) -> Any:
        """The cached JSON value (through ``schema`` when given), or ``fn()`` computed, stored and
        returned as read back (so the first and later calls return the same types: tuples come
        back as lists)."""
        found, value = self._read_json(namespace, key, schema)
        if found:
            return value
        value = fn()
        self.write_json(namespace, key, value)
        value = json.loads(json.dumps(value, ensure_ascii=False, allow_nan=True,
                                      default=_json_default))
        return schema(value) if schema is not None else value

    def get_or_compute_npz(self, namespace: str, key: str,
                           fn: Callable[[], dict[str, Any]]) -> dict[str, np.ndarray]:
        """The cached dict of arrays, or ``fn()`` (a dict of arrays) computed, stored, returned."""
        got = self.read_npz(namespace, key)
        if got is not None:
            return got
        arrays = {k: np.asarray(v) for k, v in dict(fn()).items()}
        self.write_npz(namespace, key, **arrays)
        return arrays


def _reason(e: BaseException) -> str:
    if isinstance(e, CacheCheckError):
        return str(e)
    if isinstance(e, FalconError):
        return f"wrong structure: {e.message}"
    if isinstance(e, (UnicodeDecodeError,)):
        return "not UTF-8 text"
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON ({e.msg})"
    if isinstance(e, RecursionError):
        return "wrong structure: nested too deeply"
    text = str(e).splitlines()[0] if str(e) else ""
    return f"wrong structure: {type(e).__name__}" + (f": {text[:200]}" if text else "")


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KB'`` (for the app's cache listing)."""
    if n < 1024:
        return f"{int(n)} B"
    units = ["KB", "MB", "GB", "TB"]
    exp = min(int(math.log(n, 1024)), len(units))
    return f"{n / 1024 ** exp:.1f} {units[exp - 1]}"
