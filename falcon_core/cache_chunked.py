"""Resumable chunked arrays: a large array computed in row chunks that survive interruption
(the representations of a probe set, the text embeddings of a vocabulary).

:class:`ChunkedArrays` is mixed into :class:`~falcon_core.cache.DiskCache`; it uses the cache's
paths, verified reads (``_load_npy``), memory fallback (``_remember``) and unusable-folder notice
(``_unusable``). Layout: ``<root>/<namespace>/<key>.parts/`` holds ``meta.json`` (rows, chunk
size, dtype) and one checksummed ``part_<start>_<stop>.npy`` per finished chunk; when every chunk
is there they are streamed into ``<key>.npy`` and the folder is removed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import cache_format as fmt
from .progress import Progress, report


class ChunkedArrays:
    """Mixin of :class:`~falcon_core.cache.DiskCache`: :meth:`compute_chunked` and its helpers."""

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
                        fmt.atomic_write(pf, lambda f, b=block: fmt.write_npy(f, b), checksum=True)
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

        fmt.atomic_write(final, writer, checksum=True)

    def _prepare_parts(self, parts: Path, n_rows: int, chunk_rows: int,
                       dtype: np.dtype) -> bool:
        """The parts folder, ready (parts written with another n_rows / chunk size / dtype are
        thrown away). False when the folder cannot be written (chunks then stay in memory)."""
        if self.problem is not None:
            return False
        meta = {"n_rows": n_rows, "chunk_rows": chunk_rows, "dtype": dtype.str,
                "format": fmt.CACHE_FORMAT}
        mp = parts / "meta.json"
        try:
            old = json.loads(fmt.read_payload(mp).decode("utf-8"))
        except (OSError, ValueError, fmt.CacheCheckError):
            old = None
        if old == meta:
            return True
        try:
            parts.mkdir(parents=True, exist_ok=True)
            for p in parts.iterdir():
                if p.is_file():
                    os.unlink(p)
            data = json.dumps(meta).encode()
            fmt.atomic_write(mp, lambda f: f.write(data), checksum=True)
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
