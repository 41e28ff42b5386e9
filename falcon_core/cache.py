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
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import shutil
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import xxhash

from .errors import FalconError
from .progress import Progress, report

__all__ = [
    "hash_bytes",
    "hash_file",
    "hash_json",
    "canonical_json",
    "fingerprint_files",
    "default_cache_root",
    "atomic_write",
    "cache_problem",
    "DiskCache",
    "CACHE_FORMAT",
]

#: Part of every key: files written by another format are never looked up.
#: 2: every file carries a checksum trailer.
CACHE_FORMAT = 2
QUARANTINE = "quarantine"
#: Folders under the root that hold no cache entries: downloaded data sets, files that failed
#: their check, and the app's list of workspaces chosen on this server (see ``ui/links.py``).
RESERVED_NAMESPACES = ("datasets", QUARANTINE, "workspaces")
TMP_MAX_AGE_S = 3600.0

TRAILER_MAGIC = b"FALCONCK"
_TRAILER = struct.Struct("<8sQ16s")
TRAILER_SIZE = _TRAILER.size
#: Arrays are read (and hashed) in blocks of this many bytes: big enough that a read from disk
#: streams (the kernel reads ahead while a block is hashed), small enough to be hashed from the
#: CPU's last-level cache (``python -m falcon_core.bench cache-verify`` measures both cases).
READ_BLOCK = 1 << 23
#: Writes go out in blocks of this many bytes (so a full disk interrupts a big write early).
WRITE_BLOCK = 1 << 22
#: Values kept in memory when the folder cannot be written (oldest dropped first beyond this).
MEMORY_LIMIT_BYTES = 1 << 30
_MAX_NPY_HEADER = 1 << 16

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


# ------------------------------------------------------------------------------- low-level I/O

class CacheCheckError(Exception):
    """A cached file failed its check (the cache moves it aside and recomputes the value)."""


def _write_chunk(f, data) -> None:
    """Every byte the cache writes goes through here (a test replaces it to simulate a full
    disk)."""
    f.write(data)


def _bytes_view(data) -> memoryview:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    mv = memoryview(data)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


class _ChecksumWriter:
    """A binary file wrapper: hashes and counts what goes through, writes the trailer at the end."""

    def __init__(self, f):
        self.f = f
        self.h = xxhash.xxh3_128()
        self.n = 0

    def write(self, data) -> int:
        mv = _bytes_view(data)
        for s in range(0, len(mv), WRITE_BLOCK):
            block = mv[s:s + WRITE_BLOCK]
            self.h.update(block)
            _write_chunk(self.f, block)
        self.n += len(mv)
        return len(mv)

    def finish(self) -> None:
        _write_chunk(self.f, _TRAILER.pack(TRAILER_MAGIC, self.n, self.h.digest()))


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
    except OSError:  # a read-only folder: nothing can be removed (nor was anything written)
        pass


def atomic_write(final_path: str | os.PathLike, writer: Callable[[Any], None],
                 checksum: bool = False) -> Path:
    """Write ``final_path`` atomically: ``writer(binary_file)`` fills a temp file in the same
    folder, which is fsynced and renamed into place. If anything raises (the writer, a full disk,
    a folder that cannot be written), the temp file is removed and no file appears under
    ``final_path``. With ``checksum`` the file gets the cache's checksum trailer."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final_path.parent, prefix=final_path.name + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if checksum:
                out = _ChecksumWriter(f)
                writer(out)
                out.finish()
            else:
                writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final_path)
    except BaseException:
        _unlink_quiet(Path(tmp))
        raise
    _fsync_dir(final_path.parent)
    return final_path


def _write_npy(out, arr: np.ndarray) -> None:
    """A plain ``.npy`` (C order) written through ``out`` (so every byte is hashed)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.hasobject:
        raise TypeError("the cache stores numeric arrays only, not object arrays")
    header = np.lib.format.header_data_from_array_1_0(arr)
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # pragma: no cover - a header over 64 KB
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    out.write(buf.getvalue())
    out.write(arr)


def _read_trailer(f, size: int) -> tuple[int, bytes]:
    if size < TRAILER_SIZE:
        raise CacheCheckError(f"truncated: {size} bytes, shorter than its checksum")
    f.seek(size - TRAILER_SIZE)
    magic, n, digest = _TRAILER.unpack(f.read(TRAILER_SIZE))
    if magic != TRAILER_MAGIC:
        raise CacheCheckError("no checksum at its end (truncated, appended to, or not written "
                              "by this version)")
    if n != size - TRAILER_SIZE:
        raise CacheCheckError(f"its length does not match its checksum ({size - TRAILER_SIZE} "
                              f"bytes, {n} expected: truncated?)")
    return n, digest


def _read_payload(path: Path) -> bytes:
    """The verified payload of a small file (JSON, npz, bytes)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n, digest = _read_trailer(f, size)
        f.seek(0)
        payload = f.read(n)
    if len(payload) != n or xxhash.xxh3_128_digest(payload) != digest:
        raise CacheCheckError("checksum mismatch: the file was changed or damaged")
    return payload


def _parse_npy_header(head: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    bio = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(bio)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(bio)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(bio)
        else:
            raise CacheCheckError(f"unsupported .npy version {version}")
    except CacheCheckError:
        raise
    except Exception as e:  # ValueError, SyntaxError, EOFError, ... from a damaged header
        raise CacheCheckError(f"not a readable .npy header ({type(e).__name__})") from e
    if fortran:
        raise CacheCheckError("a Fortran-order array (the cache writes C order)")
    if dtype.hasobject:
        raise CacheCheckError("an object array (the cache stores numeric arrays only)")
    return tuple(int(x) for x in shape), dtype, bio.tell()


def shape_matches(shape: tuple[int, ...], expected: Optional[tuple]) -> bool:
    """``expected`` is a shape whose ``None`` entries match any size; a final ``...`` matches any
    number of trailing dimensions. None matches every shape."""
    if expected is None:
        return True
    expected = tuple(expected)
    if expected and expected[-1] is Ellipsis:
        head = expected[:-1]
        return len(shape) >= len(head) and all(e is None or e == s for s, e in zip(shape, head))
    return len(shape) == len(expected) and all(e is None or e == s
                                               for s, e in zip(shape, expected))


def _show_shape(expected: tuple) -> str:
    return "(" + ", ".join("…" if e is Ellipsis else "?" if e is None else str(e)
                           for e in expected) + ")"


def _check_trailer(trailer: bytes, n: int, digest: bytes) -> None:
    magic, length, stored = _TRAILER.unpack(trailer)
    if magic != TRAILER_MAGIC:
        raise CacheCheckError("no checksum at its end (truncated, appended to, or not written "
                              "by this version)")
    if length != n:
        raise CacheCheckError(f"its length does not match its checksum ({n} bytes, {length} "
                              "expected: truncated?)")
    if stored != digest:
        raise CacheCheckError("checksum mismatch: the data was changed or damaged")


def _read_npy(path: Path, mmap: bool, shape: Optional[tuple], dtype: Any) -> np.ndarray:
    """A verified array: checksum, then the expected shape and dtype. Raises CacheCheckError.

    The file is read front to back once (header, data, then the trailer that follows it), so a
    read from disk streams; each block of data is hashed right after it is read."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size < TRAILER_SIZE:
            raise CacheCheckError(f"truncated: {size} bytes, shorter than its checksum")
        head = f.read(min(size - TRAILER_SIZE, 4096))
        if len(head) >= 10 and head[6:8] == b"\x01\x00":
            need = 10 + int.from_bytes(head[8:10], "little")
        elif len(head) >= 12 and head[6:8] == b"\x02\x00":
            need = 12 + int.from_bytes(head[8:12], "little")
        else:
            need = len(head)
        if need > size - TRAILER_SIZE:
            raise CacheCheckError(f"truncated: {size} bytes, its header alone needs {need}")
        if len(head) < need <= _MAX_NPY_HEADER:
            head += f.read(need - len(head))
        arr_shape, arr_dtype, offset = _parse_npy_header(head)
        nbytes = int(np.prod(arr_shape, dtype=np.int64)) * arr_dtype.itemsize
        n = offset + nbytes
        if size == n:
            raise CacheCheckError("no checksum at its end (not written by this version, or "
                                  "copied by hand)")
        if size < n + TRAILER_SIZE:
            raise CacheCheckError(f"truncated: {size} bytes, {n + TRAILER_SIZE} expected")
        if size > n + TRAILER_SIZE:
            raise CacheCheckError(f"{size} bytes, {n + TRAILER_SIZE} expected: appended to")
        if dtype is not None and arr_dtype != np.dtype(dtype):
            raise CacheCheckError(f"dtype {arr_dtype}, expected {np.dtype(dtype)}")
        if not shape_matches(arr_shape, shape):
            raise CacheCheckError(f"shape {arr_shape}, expected {_show_shape(shape)}")
        h = xxhash.xxh3_128(head[:offset])
        if nbytes == 0:
            out = np.empty(arr_shape, arr_dtype)  # an empty array cannot be memory-mapped
            f.seek(offset)
        elif mmap:
            out = np.memmap(path, dtype=arr_dtype, mode="r", offset=offset, shape=arr_shape)
            flat = out.reshape(-1).view(np.uint8)
            for s in range(0, nbytes, 1 << 24):
                h.update(flat[s:s + (1 << 24)])
            f.seek(offset + nbytes)
        else:
            out = np.empty(arr_shape, arr_dtype)
            mv = memoryview(out.reshape(-1).view(np.uint8))
            pos = min(len(head) - offset, nbytes)  # the first bytes came with the header
            mv[:pos] = head[offset:offset + pos]
            h.update(mv[:pos])
            f.seek(offset + pos)
            while pos < nbytes:  # hash each block right after it is read (still in the cache)
                got = f.readinto(mv[pos:pos + READ_BLOCK])
                if not got:
                    raise CacheCheckError("truncated while reading")
                h.update(mv[pos:pos + got])
                pos += got
        _check_trailer(f.read(TRAILER_SIZE), n, h.digest())
    return out


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


class DiskCache:
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

    def _unusable(self, error: OSError) -> None:
        """A write failed: say once what is wrong; from now on values live in memory."""
        if self.problem is None:
            self.problem = cache_problem(self.root, error)
            self._notice(f"{self.problem.message} What to do: {self.problem.hint}")

    def _quarantine(self, path: Path, reason: str) -> None:
        """Move a file that failed its check out of the way (kept for a bug report)."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = Path(path.name)
        dest = (self.root / QUARANTINE / rel.parent
                / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}")
        try:
            st = path.stat()
        except OSError:
            return  # gone already (another process moved it)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        except FileNotFoundError:
            return
        except OSError:
            # a read-only folder: the file stays, and this process never reads it again
            self._ignored.add((str(path), st.st_size, st.st_mtime_ns))
            where = "it could not be moved (the folder cannot be written) and is ignored"
        else:
            where = f"it is kept for a bug report in {dest}"
            try:
                dest.with_name(dest.name + ".txt").write_text(
                    f"{rel}: {reason}\n", encoding="utf-8")
            except OSError:
                pass
        self.quarantined.append({"file": str(rel), "reason": reason,
                                 "moved_to": str(dest) if "kept" in where else ""})
        self._notice(f"A cached file failed its check and is recomputed: {rel} — {reason}; "
                     f"{where}.")

    def _skip(self, path: Path) -> bool:
        """True when the file is missing, or one this process already found bad."""
        try:
            st = path.stat()
        except OSError:
            return True
        if not path.is_file():
            return True
        return (str(path), st.st_size, st.st_mtime_ns) in self._ignored

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
        return self._store(self.path(namespace, key, ".npy"), lambda f: _write_npy(f, arr),
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
        return self._checked(p, lambda: _read_payload(p))[1]

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
            value = json.loads(_read_payload(p).decode("utf-8"))
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
        return self._checked(p, lambda: _read_npy(p, mmap, shape, dtype))[1]

    def read_npz(self, namespace: str, key: str) -> Optional[dict[str, np.ndarray]]:
        """The stored arrays (loaded into memory), or None when missing or failing its check."""
        p = self.path(namespace, key, ".npz")

        def read():
            with np.load(io.BytesIO(_read_payload(p)), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}

        return self._checked(p, read)[1]

    # ---------------------------------------------------------------- files other libraries read
    # (a faiss index is read by faiss from a path, and its inverted lists are memory-mapped: such
    # a file is sealed with the same trailer once written, and checked before its path is used)
    def seal(self, path: str | os.PathLike) -> Path:
        """Append the checksum trailer to a file another library has written (in a temporary
        place: rename it into the cache afterwards). The file is read once, block by block."""
        path = Path(path)
        h = xxhash.xxh3_128()
        n = 0
        with open(path, "r+b", buffering=0) as f:
            while True:
                block = f.read(READ_BLOCK)
                if not block:
                    break
                h.update(block)
                n += len(block)
            f.seek(n)
            f.write(_TRAILER.pack(TRAILER_MAGIC, n, h.digest()))
            os.fsync(f.fileno())
        return path

    def verified_path(self, path: str | os.PathLike) -> Optional[Path]:
        """``path`` when the file is there and its trailer and digest check (hashed block by
        block, once per process and version of the file); None when missing or failing its
        check (then it is moved to quarantine, like any cache file). The trailer stays at the
        end of the file: a reader that knows the payload's length ignores it."""
        path = Path(path)
        if self._skip(path):
            return None
        st = path.stat()
        ident = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            if ident in self._verified_files:
                return path

        def check() -> Path:
            with open(path, "rb", buffering=0) as f:
                n, digest = _read_trailer(f, st.st_size)
                f.seek(0)
                h = xxhash.xxh3_128()
                left = n
                while left:
                    block = f.read(min(READ_BLOCK, left))
                    if not block:
                        raise CacheCheckError("truncated while reading")
                    h.update(block)
                    left -= len(block)
                if h.digest() != digest:
                    raise CacheCheckError("checksum mismatch: the file was changed or damaged")
            return path

        ok, got = self._checked(path, check)
        if ok:
            with self._lock:
                self._verified_files.add(ident)
        return got

    def quarantine(self, path: str | os.PathLike, reason: str) -> None:
        """Move a cache file that failed a check made by its reader out of the way (kept for a
        bug report, said once), so it is rebuilt."""
        self._quarantine(Path(path), reason)

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

    # ---------------------------------------------------------------- resumable chunked arrays
    def parts_dir(self, namespace: str, key: str) -> Path:
        return self.path(namespace, key, ".parts")

    def compute_chunked(self, namespace: str, key: str, n_rows: int, chunk_rows: int,
                        fn: Callable[[int, int], Any], dtype: Any,
                        progress: Optional[Progress] = None,
                        stage: Optional[str] = None,
                        row_shape: Optional[tuple] = None) -> np.ndarray:
        """A large array computed in row chunks that survive interruption.

        ``fn(start, stop)`` returns rows ``start:stop`` (shape ``(stop - start, *row_shape)``).
        Each chunk is stored atomically (checksummed) as ``<key>.parts/part_<start>_<stop>.npy``;
        a rerun skips the chunks already there (a part that fails its check, or has the wrong
        shape/dtype, is moved aside and recomputed). When every chunk exists they are streamed
        into one ``.npy`` (temp file, then renamed), the parts are removed, and the result is
        returned memory-mapped read-only (an ``np.memmap``), verified. ``row_shape`` (when given)
        is checked on every read, so a stored array of other rows is recomputed.

        ``progress(done_rows, n_rows, stage)`` is called after each chunk (stage defaults to the
        namespace). With ``n_rows == 0`` the result is ``fn(0, 0)`` as a plain array (nothing to
        map); it is not stored. When the folder cannot be written, the chunks are kept in memory
        and the result is a plain array (parts already on disk stay for a later resume).
        """
        n_rows = int(n_rows)
        chunk_rows = max(1, int(chunk_rows))
        dtype = np.dtype(dtype)
        stage = stage or namespace
        final = self.path(namespace, key, ".npy")
        rows = tuple(row_shape) if row_shape is not None else (...,)
        full_shape = (n_rows,) + rows

        if n_rows <= 0:
            return np.asarray(fn(0, 0), dtype=dtype)

        arr = self._load_npy(final, mmap=True, shape=full_shape, dtype=dtype)
        if arr is not None:
            report(progress, n_rows, n_rows, stage)
            return arr

        parts = self.parts_dir(namespace, key)
        on_disk = self._prepare_parts(parts, n_rows, chunk_rows, dtype)
        bounds = [(s, min(n_rows, s + chunk_rows)) for s in range(0, n_rows, chunk_rows)]
        trailing: Optional[tuple] = tuple(row_shape) if row_shape is not None else None
        blocks: list[Any] = []  # per chunk: its part file (verified, on disk) or its rows
        for start, stop in bounds:
            pf = parts / f"part_{start:012d}_{stop:012d}.npy"
            expect = (stop - start,) + (trailing if trailing is not None else (...,))
            existing = self._load_npy(pf, mmap=True, shape=expect, dtype=dtype) \
                if on_disk else None
            if existing is not None:
                shape_rest = existing.shape[1:]
                del existing
                blocks.append(pf)
            else:
                block = np.asarray(fn(start, stop))
                if block.shape[:1] != (stop - start,):
                    raise ValueError(f"compute_chunked: fn({start}, {stop}) returned shape "
                                     f"{block.shape}, expected {stop - start} rows")
                block = block.astype(dtype, copy=False)
                if trailing is not None and block.shape[1:] != trailing:
                    raise ValueError(f"compute_chunked: fn({start}, {stop}) returned rows of "
                                     f"shape {block.shape[1:]}, expected {trailing}")
                shape_rest = block.shape[1:]
                if on_disk:
                    try:
                        atomic_write(pf, lambda f, b=block: _write_npy(f, b), checksum=True)
                        blocks.append(pf)
                        del block
                    except OSError as e:
                        self._unusable(e)
                        on_disk = False
                        blocks.append(block)
                else:
                    blocks.append(block)
            if trailing is None:
                trailing = tuple(shape_rest)
            report(progress, stop, n_rows, stage)

        assert trailing is not None
        shape = (n_rows,) + trailing

        def rows_of(i: int) -> np.ndarray:
            b = blocks[i]
            if not isinstance(b, Path):
                return b
            a, z = bounds[i]
            got = self._load_npy(b, mmap=True, shape=(z - a,) + trailing, dtype=dtype)
            if got is None:  # damaged since it was written: compute it again
                got = np.asarray(fn(a, z)).astype(dtype, copy=False)
            return got

        if on_disk and self.problem is None:
            try:
                self._assemble(final, shape, dtype, bounds, rows_of)
            except FileNotFoundError:
                # another process finished the same entry first and removed the parts
                arr = self._load_npy(final, mmap=True, shape=shape, dtype=dtype)
                if arr is not None:
                    return arr
                raise
            except OSError as e:
                self._unusable(e)
            else:
                shutil.rmtree(parts, ignore_errors=True)
                arr = self._load_npy(final, mmap=True, shape=shape, dtype=dtype)
                if arr is not None:
                    return arr
        out = np.empty(shape, dtype)
        for i, (a, z) in enumerate(bounds):
            out[a:z] = rows_of(i)
        out.flags.writeable = False
        self._remember(final, out, out.nbytes)
        return out

    def _assemble(self, final: Path, shape: tuple, dtype: np.dtype, bounds: list,
                  rows_of: Callable[[int], np.ndarray]) -> None:
        """Stream the chunks into ``final`` (a checksummed .npy, written atomically)."""
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": shape}
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)

        def writer(out) -> None:
            out.write(buf.getvalue())
            for i in range(len(bounds)):
                block = rows_of(i)
                out.write(np.ascontiguousarray(block))
                del block

        atomic_write(final, writer, checksum=True)

    def _prepare_parts(self, parts: Path, n_rows: int, chunk_rows: int,
                       dtype: np.dtype) -> bool:
        """The parts folder, ready (parts written with another n_rows / chunk size / dtype are
        thrown away). False when the folder cannot be written (chunks then stay in memory)."""
        if self.problem is not None:
            return False
        meta = {"n_rows": n_rows, "chunk_rows": chunk_rows, "dtype": dtype.str,
                "format": CACHE_FORMAT}
        mp = parts / "meta.json"
        try:
            old = json.loads(_read_payload(mp).decode("utf-8"))
        except (OSError, ValueError, CacheCheckError):
            old = None
        if old == meta:
            return True
        try:
            parts.mkdir(parents=True, exist_ok=True)
            for p in parts.iterdir():
                if p.is_file():
                    os.unlink(p)
            data = json.dumps(meta).encode()
            atomic_write(mp, lambda f: f.write(data), checksum=True)
        except OSError as e:
            self._unusable(e)
            return False
        return True

    def chunked_progress(self, namespace: str, key: str) -> tuple[int, int]:
        """(parts done, 0) for an unfinished chunked entry; (1, 1) when finished; (0, 0) when
        nothing exists. Only a coarse indicator for the app."""
        if self.exists(namespace, key, ".npy"):
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
        """Delete one namespace, or every cache namespace (not ``datasets`` nor ``quarantine``).
        Returns the number of bytes freed (approximately)."""
        freed = 0
        for d in self._namespaces(namespace):
            freed += self._tree_size(d)
            shutil.rmtree(d, ignore_errors=True)
        with self._lock:
            self._memory.clear()
            self._memory_bytes = 0
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
