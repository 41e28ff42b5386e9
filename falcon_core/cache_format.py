"""The cache's file format: every file is its payload followed by a checksum trailer.

A cached file is a plain ``.npy``, ``.npz``, JSON text or bytes, followed by 32 bytes:
``FALCONCK``, the payload's length (uint64, little-endian) and the xxh3-128 digest of the payload
(numpy ignores bytes after an array, so a cached ``.npy`` still opens with ``np.load``). Files are
written atomically (:func:`atomic_write`: a temp file in the same folder, fsynced, renamed). A read
checks the trailer, the length and the digest (an array block by block, right after each block is
read), then the shape and dtype the caller expects; any failure raises :class:`CacheCheckError`.
:class:`~falcon_core.cache.DiskCache` builds on these functions; nothing here knows about keys,
namespaces or quarantine.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import xxhash

__all__ = ["CACHE_FORMAT", "CacheCheckError", "atomic_write", "write_npy", "read_payload", "read_npy",
           "shape_matches", "seal_file", "verify_file", "TRAILER_SIZE", "READ_BLOCK", "WRITE_BLOCK"]

#: Part of every key: files written by another format are never looked up.
#: 2: every file carries a checksum trailer.
CACHE_FORMAT = 2
TRAILER_MAGIC = b"FALCONCK"
_TRAILER = struct.Struct("<8sQ16s")
TRAILER_SIZE = _TRAILER.size
#: Arrays are read (and hashed) in blocks of this many bytes: big enough that a read from disk
#: streams (the kernel reads ahead while a block is hashed), small enough to be hashed from the
#: CPU's last-level cache (``python -m falcon_core.bench cache-verify`` measures both cases).
READ_BLOCK = 1 << 23
#: Writes go out in blocks of this many bytes (so a full disk interrupts a big write early).
WRITE_BLOCK = 1 << 22
_MAX_NPY_HEADER = 1 << 16

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


def write_npy(out, arr: np.ndarray) -> None:
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


def read_trailer(f, size: int) -> tuple[int, bytes]:
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


def read_payload(path: Path) -> bytes:
    """The verified payload of a small file (JSON, npz, bytes)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n, digest = read_trailer(f, size)
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


def read_npy(path: Path, mmap: bool, shape: Optional[tuple], dtype: Any) -> np.ndarray:
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


def seal_file(path: str | os.PathLike) -> Path:
    """Append the checksum trailer to a file another library has written (a faiss index is read
    by faiss from a path, its inverted lists memory-mapped). The file is read once, block by
    block; a reader that knows the payload's length ignores the trailer."""
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


def verify_file(path: str | os.PathLike, size: int) -> None:
    """Check a sealed file of ``size`` bytes: its trailer, then its payload's digest, hashed
    block by block. Raises CacheCheckError."""
    with open(path, "rb", buffering=0) as f:
        n, digest = read_trailer(f, size)
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
