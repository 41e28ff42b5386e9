"""Vocabularies: the captions S that FALCON picks concepts from, and their CLIP text embeddings.

* :class:`CaptionFile` — a text file, one caption a line.
* :class:`ListVocabulary` — a Python list of captions (same cleaning).
* :class:`LaionShards` — LAION-400M's published text-embedding shards (``text_emb_XXXX.npy``,
  float16, ``(n, 512)``, CLIP ViT-B/32) with their ``metadata_XXXX.parquet`` captions.

:func:`create_vocabulary` turns a spec string into one of them, or into a registered vocabulary
(:data:`VOCABULARIES`: the offline demo world's ``demo``; :func:`register_vocabulary` adds more).

Cleaning rules (``CLEANING_VERSION``), for caption files and lists:

1. the file is read as UTF-8 (a UTF-8 BOM is stripped; a UTF-16 BOM switches to UTF-16);
   lines are split on "\\n" only; a line with bytes that do not decode (or with U+FFFD, the
   mark of an earlier failed conversion) is left out — never patched with replacement
   characters — counted, and named in a note; a file where most lines do not decode is
   refused with a message that says how to convert it;
2. every control character (tab, CR, NUL, ESC, ... — Unicode category Cc — and the line/paragraph
   separators U+2028/U+2029) becomes a space; lines that had control characters other than tab
   and CR are counted; the text is NFC-normalised and runs of whitespace collapse to one space,
   leading/trailing whitespace removed;
3. blank lines are dropped;
4. captions longer than ``MAX_CAPTION_CHARS`` (1,000) characters are cut to that length (counted);
5. exact duplicates (after 1–4) are dropped, the first kept, order preserved.

The fingerprint is the sha256 of the cleaned caption list plus the cleaning version, so two files
that differ only in blank lines, duplicates or whitespace have the same fingerprint (they give the
same vocabulary and the same text embeddings), and a change to the rules changes it.

LAION rows are kept exactly as published (no dropping: rows must stay aligned with their
embeddings); only the displayed text gets rule 2.
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import xxhash

from .. import cache_keys
from ..cache import DiskCache, fingerprint_files, hash_json
from ..engines import ConfigParts
from ..errors import FalconError
from ..progress import Progress, report
from ..registry import Registry

__all__ = [
    "CLEANING_VERSION",
    "MAX_CAPTION_CHARS",
    "LAION_EMBEDDING_MODEL",
    "Vocabulary",
    "CaptionFile",
    "ListVocabulary",
    "LaionShards",
    "ShardedEmbeddings",
    "clean_caption",
    "clean_captions",
    "text_embeddings",
    "DocumentFrequencies",
    "document_frequencies",
    "CONCEPT_TABLE_MAX",
    "concept_table",
    "create_vocabulary",
    "register_vocabulary",
    "VOCABULARIES",
]

CLEANING_VERSION = "1"
MAX_CAPTION_CHARS = 1000
LAION_EMBEDDING_MODEL = "ViT-B-32"
LAION_EMBEDDING_PRETRAINED = "openai"

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HARMLESS_CONTROL = set("\t\r")


def _empty_report() -> dict:
    return {"lines_read": 0, "blank_dropped": 0, "duplicates_dropped": 0,
            "control_chars_cleaned": 0, "truncated": 0, "undecodable": 0, "kept": 0,
            "bom_stripped": False, "notes": []}


def clean_caption(text: str, max_chars: int = MAX_CAPTION_CHARS) -> tuple[str, bool, bool]:
    """Rule 2 and 4 for one caption: ``(cleaned, had_control_chars, truncated)``."""
    had_control = False
    if _CONTROL_RE.search(text):
        had_control = any(c not in _HARMLESS_CONTROL for c in _CONTROL_RE.findall(text))
        text = _CONTROL_RE.sub(" ", text)
    text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    truncated = False
    if max_chars and len(text) > max_chars:
        text = text[:max_chars].rstrip()
        truncated = True
    return text, had_control, truncated


def clean_captions(lines: Iterable[str], rep: Optional[dict] = None,
                   max_chars: int = MAX_CAPTION_CHARS) -> tuple[list[str], dict]:
    """Rules 2–5 over an iterable of raw lines; fills and returns the report."""
    rep = rep if rep is not None else _empty_report()
    seen: set[str] = set()
    out: list[str] = []
    for raw in lines:
        rep["lines_read"] += 1
        text, had_control, truncated = clean_caption(str(raw), max_chars)
        if had_control:
            rep["control_chars_cleaned"] += 1
        if not text:
            rep["blank_dropped"] += 1
            continue
        if truncated:
            rep["truncated"] += 1
        if text in seen:
            rep["duplicates_dropped"] += 1
            continue
        seen.add(text)
        out.append(text)
    rep["kept"] = len(out)
    if len(out) == 1:
        rep["notes"].append("The vocabulary has a single caption: every image gets that "
                            "caption, so the explanations cannot tell features apart.")
    return out, rep


def _fingerprint_captions(kind: str, captions: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(f"vocabulary|cleaning={CLEANING_VERSION}|max={MAX_CAPTION_CHARS}|".encode())
    for c in captions:
        h.update(c.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


# ------------------------------------------------------------------------------ base class

class Vocabulary:
    """M captions, with a cleaning report and (for LAION) precomputed text embeddings."""

    kind = "vocabulary"
    name = ""
    embeddings: Any = None
    embedding_model: Optional[str] = None

    def __init__(self) -> None:
        self.report: dict = _empty_report()

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def caption(self, i: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def captions(self, indices: Iterable[int]) -> list[str]:
        return [self.caption(int(i)) for i in indices]

    def iter_captions(self, start: int = 0, stop: Optional[int] = None) -> list[str]:
        stop = len(self) if stop is None else min(stop, len(self))
        return self.captions(range(start, stop))

    @property
    def fingerprint(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        d = {"kind": self.kind, "name": self.name, "count": len(self),
             "precomputed_embeddings": self.embeddings is not None,
             "embedding_model": self.embedding_model}
        d["report"] = dict(self.report)
        return d


class ListVocabulary(Vocabulary):
    """Captions from a Python list, cleaned by the module's rules."""

    kind = "list"

    def __init__(self, captions: Iterable[str], name: str = "list"):
        super().__init__()
        self.name = name
        self._captions, self.report = clean_captions(captions, self.report)
        self._check_nonempty()
        self._fingerprint: Optional[str] = None

    def _check_nonempty(self) -> None:
        if not self._captions:
            raise FalconError(
                f"The vocabulary {self.name} has no captions"
                + (f" ({self.report['lines_read']} line(s), all blank)."
                   if self.report["lines_read"] else " (it is empty)."),
                "Give a text file with one caption per line (UTF-8).")

    def __len__(self) -> int:
        return len(self._captions)

    def caption(self, i: int) -> str:
        return self._captions[int(i)]

    def captions(self, indices: Iterable[int]) -> list[str]:
        c = self._captions
        return [c[int(i)] for i in indices]

    @property
    def all_captions(self) -> list[str]:
        return list(self._captions)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _fingerprint_captions(self.kind, self._captions)
        return self._fingerprint


def _decode_lines(data: bytes, rep: dict) -> list[str]:
    """The file's lines as text, without the lines that are not valid text in its encoding.

    UTF-8 (or UTF-16 with a BOM). A line with bytes that do not decode, or with U+FFFD (the mark of
    an earlier failed conversion), is left out, never patched with replacement characters: it is
    counted in ``rep["undecodable"]`` (its number in ``rep["first_undecodable_line"]``) and a note
    says so. See :func:`_check_decoding` for a file that is mostly not UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        rep["bom_stripped"] = True
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        rep["bom_stripped"] = True
        rep["encoding"] = "utf-16"
        text = data.decode("utf-16", errors="replace")
        return _drop_bad_lines(text.split("\n"), [False] * (text.count("\n") + 1), rep)
    try:
        lines = data.decode("utf-8").split("\n")
        return _drop_bad_lines(lines, [False] * len(lines), rep)
    except UnicodeDecodeError:
        pass
    lines, bad = [], []
    for raw in data.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            lines.append("")
            bad.append(True)
    return _drop_bad_lines(lines, bad, rep)


def _drop_bad_lines(lines: list[str], bad: list[bool], rep: dict) -> list[str]:
    out = []
    for n, (line, undecodable) in enumerate(zip(lines, bad), 1):
        if undecodable or "\ufffd" in line:
            rep["undecodable"] += 1
            rep.setdefault("first_undecodable_line", n)
            continue
        out.append(line)
    return out


def _check_decoding(path: Path, rep: dict) -> None:
    """A caption file that is mostly not UTF-8 is refused (its captions would be lost); one with a
    few bad lines is used without them, and a note says which."""
    bad = rep["undecodable"]
    if not bad:
        return
    first = rep.get("first_undecodable_line")
    read = rep["lines_read"]
    convert = (f"Convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > "
               f"{path.stem}.utf8{path.suffix}` (use the file's real encoding), then use the "
               "converted file.")
    if rep["kept"] == 0 or bad * 2 > read:
        raise FalconError(f"The caption file {path} is not UTF-8 text: {bad} of its {read} "
                          f"lines do not decode (the first is line {first}).", convert)
    rep["notes"].append(f"{bad} of the {read} lines of {path.name} are not valid UTF-8 and were "
                        f"left out (the first is line {first}). {convert}")


class CaptionFile(ListVocabulary):
    """A caption file: one caption a line (cleaning rules in the module docstring)."""

    kind = "file"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FalconError(f"The caption file {self.path} does not exist.",
                              "Check the path, or use the demo vocabulary.")
        if self.path.is_dir():
            raise FalconError(f"{self.path} is a folder, not a caption file.",
                              "For LAION shards use laion:" + str(self.path) + ".")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise FalconError(f"Cannot read the caption file {self.path}: {e}", None) from e
        Vocabulary.__init__(self)
        self.name = self.path.name
        lines = _decode_lines(data, self.report)
        if lines and lines[-1] == "":
            lines.pop()  # the newline at the end of the last line is not a blank line
        self._captions, self.report = clean_captions(lines, self.report)
        self.report["lines_read"] += self.report["undecodable"]
        if not data or data == codecs.BOM_UTF8:
            raise FalconError(f"The caption file {self.path} is empty (0 bytes).",
                              "Give a text file with one caption per line (UTF-8).")
        _check_decoding(self.path, self.report)
        self._check_nonempty()
        self._fingerprint = None

    def describe(self) -> dict:
        d = super().describe()
        d["path"] = str(self.path)
        return d


# ------------------------------------------------------------------------------ LAION shards

class _NpyShard:
    """One 2-D ``.npy`` file, described by its header only: rows are read with ``os.pread`` into
    the caller's buffer, so nothing of the file stays mapped or resident in this process (the
    operating system's page cache keeps what is hot)."""

    __slots__ = ("path", "rows", "width", "dtype", "data_offset", "row_bytes")

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # pragma: no cover - numpy writes 1.0-3.0
                raise ValueError(f"unsupported .npy version {version}")
            self.data_offset = f.tell()
        if len(shape) != 2 or dtype.kind != "f" or dtype.hasobject:
            raise ValueError(f"shape {shape} and dtype {dtype}; expected a float (n, k) array")
        if fortran and shape[0] > 1 and shape[1] > 1:
            raise ValueError("a Fortran-order array (rows are not contiguous); save it in C order")
        need = self.data_offset + int(shape[0]) * int(shape[1]) * dtype.itemsize
        size = os.path.getsize(self.path)
        if size < need:
            raise ValueError(f"truncated: {size} bytes, {need} expected")
        self.rows, self.width = int(shape[0]), int(shape[1])
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.width * self.dtype.itemsize

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.width)


class ShardedEmbeddings:
    """A lazily concatenated view of per-shard ``(n_s, k)`` arrays (``.npy`` files).

    Only the headers are read when it is made. Rows are read when asked for, with ``os.pread``
    into a buffer, so memory stays bounded whatever the number of shards: no shard is mapped, at
    most ``max_open`` file handles are open at once (least recently used closed first);
    scattered rows (a gather, :meth:`_rows`) are read run by run, so a read holds in memory
    only the rows asked for (the file's pages stay in the page cache, which is not this
    process's resident memory); and
    :attr:`files_opened` / :attr:`bytes_read` count what was touched (tests and benchmarks read
    them).

    ``len()``, ``.shape``, ``.dtype`` (float32: what slicing returns) and ``[a:b]`` / ``[i]`` /
    ``[index array]`` indexing, which reads only the rows asked for and returns float32 rows,
    L2-normalised (LAION's are already; renormalising guards against float16 rounding and
    shards that are not). :meth:`blocks` is what Stage 4 scans: raw blocks and each row's
    inverse norm (computed on the first scan and kept: 4 bytes a row), so a scan never
    rescales a block.
    """

    def __init__(self, paths: Sequence[Path], normalize: bool = True, max_open: int = 8):
        self.paths = [Path(p) for p in paths]
        self.normalize = normalize
        self._shards = [_NpyShard(p) for p in self.paths]
        widths = {s.width for s in self._shards}
        self.width = widths.pop() if len(widths) == 1 else None
        counts = [s.rows for s in self._shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.dtype = np.dtype(np.float32)
        self.max_open = max(1, int(max_open))
        self._fds: "OrderedDict[int, int]" = OrderedDict()
        self._fd_lock = threading.Lock()
        self._inv_norms: dict[int, np.ndarray] = {}
        self.files_opened = 0
        self.bytes_read = 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), int(self.width))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def raw_dtype(self) -> np.dtype:
        """The dtype stored in the shards (LAION: float16)."""
        return self._shards[0].dtype

    # ---- raw reads ------------------------------------------------------------------------
    def _fd(self, s: int) -> int:
        with self._fd_lock:
            fd = self._fds.get(s)
            if fd is not None:
                self._fds.move_to_end(s)
                return fd
            fd = os.open(self._shards[s].path, os.O_RDONLY)
            self.files_opened += 1
            self._fds[s] = fd
            while len(self._fds) > self.max_open:
                _, old = self._fds.popitem(last=False)
                os.close(old)
            return fd

    def close(self) -> None:
        """Close the open shard files (reads reopen them)."""
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def __del__(self):  # pragma: no cover - interpreter shutdown
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):  # pickled for other processes (Ray): no file handles travel
        d = dict(self.__dict__)
        d["_fds"], d["_fd_lock"] = OrderedDict(), None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._fd_lock = threading.Lock()

    def _preadv(self, fd: int, buf: memoryview, pos: int) -> int:
        """The one place bytes are read from a shard (``os.preadv``): tests wrap it to see
        every read's offset and length and the buffer it lands in."""
        return os.preadv(fd, [buf], pos)

    def _read_exact(self, s: int, fd: int, buf: memoryview, pos: int) -> None:
        """``len(buf)`` bytes of shard ``s`` at byte ``pos`` into ``buf`` (short reads resumed)."""
        got, want = 0, len(buf)
        while got < want:
            n = self._preadv(fd, buf[got:], pos + got)
            if n <= 0:
                raise OSError(f"{self._shards[s].path.name}: unexpected end of file")
            got += n

    def _pread_into(self, s: int, a: int, b: int, out: np.ndarray) -> None:
        """Rows ``a:b`` of shard ``s`` (local indices), raw dtype, into ``out`` (contiguous)."""
        sh = self._shards[s]
        want = (b - a) * sh.row_bytes
        if want == 0:
            return
        mv = memoryview(out.reshape(-1).view(np.uint8))[:want]
        self._read_exact(s, self._fd(s), mv, sh.data_offset + a * sh.row_bytes)
        self.bytes_read += want

    def read_raw(self, a: int, b: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Rows ``a:b`` as stored (raw dtype), read across shard boundaries."""
        a, b = max(0, int(a)), min(len(self), int(b))
        n = max(0, b - a)
        if out is None:
            out = np.empty((n, self.width), dtype=self.raw_dtype)
        out = out[:n]
        s = int(np.searchsorted(self.offsets, a, side="right") - 1) if n else 0
        pos = a
        while pos < b:
            start, stop = int(self.offsets[s]), int(self.offsets[s + 1])
            take = min(b, stop) - pos
            if take > 0:
                if self._shards[s].dtype == out.dtype:
                    self._pread_into(s, pos - start, pos - start + take, out[pos - a:pos - a + take])
                else:  # a shard stored in another float dtype
                    tmp = np.empty((take, self.width), dtype=self._shards[s].dtype)
                    self._pread_into(s, pos - start, pos - start + take, tmp)
                    out[pos - a:pos - a + take] = tmp
                pos += take
            s += 1
        return out

    def _rows(self, ind: np.ndarray) -> np.ndarray:
        """Raw rows at the global indices ``ind`` (any order, repeats allowed): each run of
        consecutive rows is read with one ``pread`` into the result, so a gather reads those
        rows' bytes and nothing else, and maps nothing. (A memory-mapped gather counted the
        pages it faulted in, but a kernel maps more than the touched page at a fault --
        fault-around, large page-cache folios: on Linux 6.18, 832 rows scattered over a 1 GB
        shard whose pages were cached made 580 MB of the mapping resident; in the bench the
        same CPU time as this loop.)"""
        out_dtype = self.raw_dtype
        if not ind.size:
            return np.empty((0, self.width), dtype=out_dtype)
        uniq, inv = np.unique(ind, return_inverse=True)
        got = np.empty((uniq.size, self.width), dtype=out_dtype)
        shard = np.searchsorted(self.offsets, uniq, side="right") - 1
        # runs: consecutive rows of one shard
        brk = np.flatnonzero((np.diff(uniq) != 1) | (np.diff(shard) != 0)) + 1
        starts = np.concatenate([[0], brk]).astype(np.int64)
        stops = np.concatenate([brk, [uniq.size]]).astype(np.int64)
        run_shard = shard[starts]
        # uniq is sorted, so the rows (and the runs) of one shard are contiguous
        cuts = np.flatnonzero(np.diff(run_shard)) + 1
        for g0, g1 in zip(np.concatenate([[0], cuts]).tolist(),
                          np.concatenate([cuts, [len(starts)]]).tolist()):
            s = int(run_shard[g0])
            sh = self._shards[s]
            i0, i1 = int(starts[g0]), int(stops[g1 - 1])
            same = sh.dtype == out_dtype  # else a shard stored in another float dtype
            dst = got[i0:i1] if same else np.empty((i1 - i0, self.width), dtype=sh.dtype)
            mv = memoryview(dst.reshape(-1).view(np.uint8))
            fd, rb = self._fd(s), sh.row_bytes
            base = sh.data_offset - int(self.offsets[s]) * rb  # byte of global row 0, shard s
            pread = self._preadv
            for a, b, pos in zip(((starts[g0:g1] - i0) * rb).tolist(),
                                 ((stops[g0:g1] - i0) * rb).tolist(),
                                 (base + uniq[starts[g0:g1]] * rb).tolist()):
                if pread(fd, mv[a:b], pos) != b - a:  # a short read: resume it
                    self._read_exact(s, fd, mv[a:b], pos)
            if not same:
                got[i0:i1] = dst
            self.bytes_read += (i1 - i0) * rb
        if uniq.size == ind.size and np.array_equal(uniq, ind):
            return got
        return got[inv.reshape(-1)]

    # ---- float32, normalised ----------------------------------------------------------------
    def _finish(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32)
        if self.normalize and rows.size:
            norms = np.linalg.norm(rows, axis=-1, keepdims=True)
            rows = rows / np.maximum(norms, 1e-12)
        return rows

    def _range(self, a: int, b: int) -> np.ndarray:
        return self.read_raw(a, b)

    def __getitem__(self, idx: Any) -> np.ndarray:
        n = len(self)
        if isinstance(idx, tuple):
            first, rest = idx[0], idx[1:]
            rows = self[first]
            if isinstance(first, (int, np.integer)):
                return rows[rest]
            return rows[(slice(None),) + rest]
        if isinstance(idx, slice):
            a, b, step = idx.indices(n)
            if step == 1:
                return self._finish(self._range(a, b))
            return self[np.arange(a, b, step)]
        if isinstance(idx, (int, np.integer)):
            i = int(idx)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(f"row {idx} out of range for {n} rows")
            return self._finish(self._range(i, i + 1))[0]
        ind = np.asarray(idx)
        if ind.dtype == bool:
            ind = np.flatnonzero(ind)
        ind = ind.astype(np.int64).reshape(-1)
        ind = np.where(ind < 0, ind + n, ind)
        if ind.size and (ind.min() < 0 or ind.max() >= n):
            raise IndexError("row index out of range")
        return self._finish(self._rows(ind))

    def __array__(self, dtype=None, copy=None):
        arr = self[0:len(self)]
        return arr if dtype is None else arr.astype(dtype)

    def iter_chunks(self, chunk_rows: int = 65536):
        for a in range(0, len(self), chunk_rows):
            yield a, self[a:a + chunk_rows]

    def blocks(self, chunk_rows: int = 65536):
        """``(start, float32 rows (not rescaled), inverse row norms or None)`` for every block of
        ``chunk_rows`` rows, in order: what a scan of the vocabulary reads. Two buffers are
        reused, so a scan holds two blocks at a time, never a shard. The inverse norms of a
        block are computed the first time it is read and kept (4 bytes a row)."""
        from ..stages.captions import to_float32

        chunk_rows = max(1, int(chunk_rows))
        raw = np.empty((min(chunk_rows, len(self)), self.width), dtype=self.raw_dtype)
        f32 = np.empty(raw.shape, dtype=np.float32)
        for a in range(0, len(self), chunk_rows):
            b = min(len(self), a + chunk_rows)
            r = self.read_raw(a, b, raw)
            x = to_float32(r, f32[:b - a])
            inv = None
            if self.normalize:
                inv = self._inv_norms.get((a, b))
                if inv is None:
                    sq = np.einsum("ij,ij->i", x, x)
                    inv = (1.0 / np.maximum(np.sqrt(sq), 1e-12)).astype(np.float32)
                    self._inv_norms[(a, b)] = inv
            yield a, x, inv


class CaptionText:
    """The caption column of one LAION metadata parquet file, as one cache entry that any row
    is read from without reading the others.

    Built once per file (one pass of pyarrow over the ``caption`` column: no Python per row):
    the int64 offsets of the rows, then their UTF-8 bytes one after the other, as published
    (cleaning, rule 2, is applied to the rows read). Stored in the cache namespace
    ``caption_text`` (key: the file's name, size and modification time,
    :func:`falcon_core.cache_keys.caption_text`) with the xxh3 digest of every ``BLOCK`` bytes.
    Its three files are cache files (checksummed); the digests and the row count are verified
    when read, but the text file's whole-file checksum is not, since that would read the whole
    column, which is what this class exists to avoid: a row is read with ``os.pread`` (its two
    offsets, then its bytes), and every block a read touches is checked against its digest the
    first time (a block that fails: the text goes to quarantine and the entry is built again).
    :attr:`bytes_read` counts the bytes read.
    """

    BLOCK = 1 << 14
    VERSION = 2  # 2: xxh3 block digests

    def __init__(self, meta_path: Path, cache: DiskCache, root: Optional[Path] = None):
        self.meta_path = Path(meta_path)
        self.cache = cache
        self.key = cache_keys.caption_text(
            fingerprint_files([self.meta_path], root or self.meta_path.parent), self.VERSION)
        self.bytes_read = 0
        self._verified: set[int] = set()
        self._fd: Optional[int] = None
        self._open()

    # ---- build ------------------------------------------------------------------------------
    def _build(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        col = pq.read_table(self.meta_path, columns=["caption"]).column("caption")
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())  # numbers or binary published as captions
        col = pc.fill_null(col.cast(pa.large_string()), "").combine_chunks()
        if isinstance(col, pa.ChunkedArray):  # pragma: no cover - an empty column
            col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], pa.large_string())
        n = len(col)
        bufs = col.buffers()
        offs = np.frombuffer(bufs[1], dtype=np.int64, count=n + 1, offset=8 * col.offset).copy()
        data = (bufs[2].to_pybytes()[int(offs[0]):int(offs[-1])] if bufs[2] is not None and n
                else b"")
        offs -= offs[0]
        payload = offs.tobytes() + data
        digests = np.frombuffer(b"".join(
            xxhash.xxh3_128_digest(payload[p:p + self.BLOCK])
            for p in range(0, len(payload), self.BLOCK)), dtype=np.uint8).reshape(-1, 16)
        self.cache.write_bytes("caption_text", self.key, payload, ".bin")
        self.cache.write_npy("caption_text", self.key, digests)
        self.cache.write_json("caption_text", self.key,  # written last: the entry is complete
                              {"rows": n, "bytes": len(payload), "block": self.BLOCK})

    def _open(self, retry: bool = True) -> None:
        meta = self.cache.read_json("caption_text", self.key)
        digests = self.cache.read_npy("caption_text", self.key) if meta else None
        path = self.cache.path("caption_text", self.key, ".bin")
        ok = (isinstance(meta, dict) and digests is not None and path.is_file()
              and meta.get("block") == self.BLOCK
              and isinstance(meta.get("rows"), int) and isinstance(meta.get("bytes"), int)
              and digests.shape == (-(-meta["bytes"] // self.BLOCK), 16)
              and os.path.getsize(path) >= meta["bytes"])
        if not ok:
            if not retry:
                raise FalconError(f"Cannot build the caption text of {self.meta_path.name} in "
                                  f"the cache {self.cache.root}.",
                                  "Check that the cache folder is writable and has room.")
            self._discard()
            self._build()
            return self._open(retry=False)
        self.rows, self.nbytes = int(meta["rows"]), int(meta["bytes"])
        self._digests = np.asarray(digests)
        self._path = path
        self._verified = set()

    def _discard(self, reason: str = "") -> None:
        """Drop the entry (to build it again); with a ``reason`` its text is moved to
        quarantine first, like any cache file that fails its check."""
        self.close()
        if reason:
            self.cache.quarantine(self.cache.path("caption_text", self.key, ".bin"), reason)
        for suffix in (".json", ".npy", ".bin"):
            try:
                os.unlink(self.cache.path("caption_text", self.key, suffix))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass

    # ---- reads ------------------------------------------------------------------------------
    def _read(self, pos: int, n: int) -> bytes:
        """Bytes ``pos:pos+n`` of the entry, every block they touch checked once."""
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY)
        b0, b1 = pos // self.BLOCK, (pos + max(n, 1) - 1) // self.BLOCK
        todo = [b for b in range(b0, b1 + 1) if b not in self._verified]
        if todo:
            for b in todo:
                start = b * self.BLOCK
                block = os.pread(self._fd, min(self.BLOCK, self.nbytes - start), start)
                self.bytes_read += len(block)
                if xxhash.xxh3_128_digest(block) != self._digests[b].tobytes():
                    raise _DamagedEntry(f"block {b} of {self.nbytes // self.BLOCK + 1} fails its "
                                        "checksum")
                self._verified.add(b)
        data = os.pread(self._fd, n, pos) if n else b""
        self.bytes_read += len(data)
        if len(data) != n:
            raise _DamagedEntry("short read")
        return data

    def get(self, rows: Sequence[int]) -> list[str]:
        """The captions of the local ``rows`` (cleaned by rule 2)."""
        try:
            return self._get(rows)
        except _DamagedEntry as e:
            self._discard(str(e))  # damaged on disk since it was built: build it again, once
            self._open(retry=True)
            return self._get(rows)

    def _get(self, rows: Sequence[int]) -> list[str]:
        out = []
        for r in rows:
            r = int(r)
            if not 0 <= r < self.rows:
                raise IndexError(f"row {r} out of range for {self.rows} captions")
            a, b = np.frombuffer(self._read(8 * r, 16), dtype=np.int64)
            start = 8 * (self.rows + 1)
            if not 0 <= a <= b <= self.nbytes - start:
                raise _DamagedEntry(f"offsets of row {r}")
            text = self._read(start + int(a), int(b - a)).decode("utf-8", errors="replace")
            out.append(clean_caption(text)[0])
        return out


class _DamagedEntry(Exception):
    pass


_SHARD_NUM = re.compile(r"(\d+)")


def _shard_number(path: Path, prefix: str) -> Optional[int]:
    stem = path.stem
    if not stem.startswith(prefix):
        return None
    m = _SHARD_NUM.search(stem[len(prefix):])
    return int(m.group(1)) if m else None


class LaionShards(Vocabulary):
    """LAION-400M caption embeddings as published: ``text_emb/text_emb_XXXX.npy`` (float16,
    ``(n, 512)``, L2-normalised CLIP ViT-B/32 text embeddings) and
    ``metadata/metadata_XXXX.parquet`` (a ``caption`` column), paired by shard number. The two
    kinds of files may also sit side by side in ``root``.

    ``embeddings`` is a :class:`ShardedEmbeddings` (headers read now, rows read when asked for);
    captions are read row by row from a :class:`CaptionText` entry per metadata file, built
    into the cache (``cache``, or the one given to :meth:`use_cache`, or the default folder) the
    first time a row of that file is asked for; at most ``cache_shards`` of them keep a file
    open."""

    kind = "laion"
    embedding_model = LAION_EMBEDDING_MODEL
    embedding_pretrained = LAION_EMBEDDING_PRETRAINED

    def __init__(self, root: str | os.PathLike, cache_shards: int = 16,
                 cache: Optional[DiskCache] = None):
        super().__init__()
        self.root = Path(root).expanduser()
        self.name = f"laion:{self.root.name}"
        if not self.root.is_dir():
            raise FalconError(f"The LAION shard folder {self.root} does not exist.",
                              "Give the folder holding text_emb/ and metadata/ (or the "
                              "text_emb_XXXX.npy and metadata_XXXX.parquet files).")
        emb, meta = self._find()
        if not emb and not meta:
            raise FalconError(f"No LAION shards (text_emb_XXXX.npy + metadata_XXXX.parquet) "
                              f"in {self.root}.",
                              "Download the text embeddings and metadata of LAION-400M into "
                              "text_emb/ and metadata/ of that folder.")
        for num in sorted(set(emb) ^ set(meta)):
            have = emb.get(num) or meta.get(num)
            missing = "metadata_%04d.parquet" % num if num in emb else "text_emb_%04d.npy" % num
            raise FalconError(f"LAION shard {have.name} has no partner file {missing} "
                              f"in {self.root}.",
                              "Each text_emb_XXXX.npy needs its metadata_XXXX.parquet "
                              "(same number); remove the incomplete shard or add its partner.")
        self.shard_numbers = sorted(emb)
        self.emb_paths = [emb[n] for n in self.shard_numbers]
        self.meta_paths = [meta[n] for n in self.shard_numbers]
        self._check_shards()
        self.embeddings = ShardedEmbeddings(self.emb_paths)
        self._offsets = [int(x) for x in self.embeddings.offsets]
        self._texts: "OrderedDict[int, CaptionText]" = OrderedDict()
        self._cache_size = max(1, int(cache_shards))
        self._disk_cache: Optional[DiskCache] = cache
        self._lock = threading.Lock()
        self._fingerprint: Optional[str] = None
        self.report.update({"lines_read": len(self), "kept": len(self),
                            "shards": len(self.shard_numbers),
                            "embedding_dim": int(self.embeddings.width)})
        self.report["notes"].append("LAION rows are used as published (no blank or duplicate "
                                    "removal: rows must stay aligned with the embeddings).")

    def _find(self) -> tuple[dict[int, Path], dict[int, Path]]:
        emb: dict[int, Path] = {}
        meta: dict[int, Path] = {}
        # text_emb/ + metadata/ (this project's layout), texts/ + metadata/ (LAION's release)
        for folder in (self.root, self.root / "text_emb", self.root / "texts",
                       self.root / "metadata"):
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.name.startswith("."):
                    continue
                kind = {".npy": ("text_emb", emb, "embedding"),
                        ".parquet": ("metadata", meta, "metadata")}.get(p.suffix)
                if kind is None:
                    continue
                stem, found, what = kind
                n = _shard_number(p, stem)
                if n is None:
                    continue
                if n in found and found[n] != p:
                    raise FalconError(f"Two {what} files for shard {n}: {found[n]} and {p}.",
                                      "Keep one of them.")
                found[n] = p
        return emb, meta

    def _check_shards(self) -> None:
        import pyarrow.parquet as pq

        width = None
        for ep, mp in zip(self.emb_paths, self.meta_paths):
            try:
                arr = _NpyShard(ep)  # the header only: nothing is mapped or read
            except Exception as e:
                raise FalconError(f"LAION shard {ep.name} is not a readable .npy file of "
                                  f"float (n, k) embeddings: {e}",
                                  "Download the shard again.") from e
            if width is None:
                width = arr.shape[1]
            elif arr.shape[1] != width:
                raise FalconError(f"LAION shard {ep.name} has {arr.shape[1]}-dimensional "
                                  f"embeddings, the others {width}.",
                                  "All shards must come from the same CLIP model.")
            try:
                pf = pq.ParquetFile(mp)
                rows = pf.metadata.num_rows
                names = pf.schema_arrow.names
            except Exception as e:
                raise FalconError(f"LAION metadata {mp.name} is not a readable parquet file: "
                                  f"{e}", "Download the shard again.") from e
            if "caption" not in names:
                raise FalconError(f"LAION metadata {mp.name} has no 'caption' column "
                                  f"(columns: {', '.join(names)}).",
                                  "Use the metadata parquet files published with the "
                                  "embeddings.")
            if rows != arr.shape[0]:
                raise FalconError(f"LAION shard {ep.name} has {arr.shape[0]} rows but "
                                  f"{mp.name} has {rows} captions.",
                                  "The embeddings and captions of a shard must line up; "
                                  "download that shard again or remove it.")

    def __len__(self) -> int:
        return self._offsets[-1]

    def use_cache(self, cache: DiskCache) -> None:
        """Keep the caption text entries (:class:`CaptionText`) in ``cache`` (default: the
        default cache folder)."""
        with self._lock:
            if cache is not self._disk_cache:
                for t in self._texts.values():
                    t.close()
                self._texts.clear()
                self._disk_cache = cache

    def caption_text(self, s: int) -> CaptionText:
        """The caption text of shard ``s`` (built into the cache on first use)."""
        with self._lock:
            got = self._texts.get(s)
            if got is not None:
                self._texts.move_to_end(s)
                return got
            if self._disk_cache is None:
                self._disk_cache = DiskCache()
            got = CaptionText(self.meta_paths[s], self._disk_cache, self.root)
            self._texts[s] = got
            while len(self._texts) > self._cache_size:
                self._texts.popitem(last=False)[1].close()
            return got

    def caption(self, i: int) -> str:
        return self.captions([i])[0]

    def captions(self, indices: Iterable[int]) -> list[str]:
        """The captions of ``indices``: only those rows are read (see :class:`CaptionText`)."""
        n = len(self)
        idx = []
        for i in indices:
            try:
                idx.append(range(n)[int(i)])  # negative indices count from the end
            except IndexError:
                raise IndexError(f"caption {i} out of range for {n} captions") from None
        if not idx:
            return []
        ind = np.asarray(idx, dtype=np.int64)
        shard = np.searchsorted(self.embeddings.offsets, ind, side="right") - 1
        out: list[str] = [""] * len(idx)
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            texts = self.caption_text(int(s)).get(ind[sel] - self._offsets[int(s)])
            for k, t in zip(sel, texts):
                out[int(k)] = t
        return out

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hash_json({
                "kind": "laion", "cleaning": CLEANING_VERSION,
                "files": fingerprint_files(self.emb_paths + self.meta_paths, self.root)})
        return self._fingerprint

    def describe(self) -> dict:
        d = super().describe()
        d.update({"root": str(self.root), "shards": len(self.shard_numbers),
                  "embedding_dim": int(self.embeddings.width)})
        return d


# --------------------------------------------------------------------------- text embeddings

def _norm_model_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _parameters(fn) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def text_embeddings(vocab: Vocabulary, clip: Any, cache: DiskCache, batch_size: int = 256,
                    progress: Optional[Progress] = None, chunk_batches: int = 32,
                    engine: Any = None, config: Any = None) -> Any:
    """The vocabulary's L2-normalised CLIP text embeddings A, ``(M, k)``.

    Precomputed embeddings (LAION) are returned as they are (a lazily sliced
    :class:`ShardedEmbeddings`, float32 rows) after checking that their width equals
    ``clip.embed_dim`` (and, when the CLIP model exposes ``name``, that it is the model they came
    from). Otherwise they are computed with ``clip.encode_texts`` in batches of ``batch_size``,
    stored as float16 in the cache (namespace ``text_embeddings``, keyed by the CLIP and
    vocabulary fingerprints; resumable in chunks of ``batch_size * chunk_batches`` rows) and
    returned memory-mapped. ``engine`` (:mod:`falcon_core.engines`) runs the chunks elsewhere
    (Ray); the default runs them here. ``config`` (the workspace's) lets the engine's workers
    rebuild CLIP and the vocabulary instead of receiving them.
    """
    stage = "text embeddings"
    pre = getattr(vocab, "embeddings", None)
    if pre is not None:
        width = int(pre.shape[1])
        model = getattr(vocab, "embedding_model", None) or "the model they were made with"
        if width != int(clip.embed_dim):
            raise FalconError(
                f"The vocabulary's precomputed text embeddings are {width}-dimensional "
                f"({model}), but the CLIP model gives {clip.embed_dim}-dimensional embeddings.",
                f"Use CLIP {model} with this vocabulary, or a caption file (its embeddings are "
                f"computed with the chosen CLIP model).")
        clip_name = getattr(clip, "name", None) or getattr(clip, "model_name", None)
        vocab_model = getattr(vocab, "embedding_model", None)
        if isinstance(clip_name, str) and vocab_model and \
                _norm_model_name(clip_name) != _norm_model_name(vocab_model):
            raise FalconError(
                f"The vocabulary's text embeddings come from CLIP {vocab_model}, but the chosen "
                f"CLIP model is {clip_name}; their embeddings are not comparable.",
                f"Use CLIP {vocab_model} with this vocabulary, or a caption file.")
        report(progress, len(vocab), len(vocab), stage)
        return pre

    m = len(vocab)
    k = int(clip.embed_dim)
    batch_size = max(1, int(batch_size))
    key = cache_keys.text_embeddings(clip.fingerprint, vocab.fingerprint, k)
    chunk_rows = batch_size * max(1, int(chunk_batches))
    job = TextChunk(vocab, clip, batch_size, progress=progress, total=m, config=config)
    bounds = [(a, min(m, a + chunk_rows)) for a in range(0, m, chunk_rows)]
    run = engine.chunk_fn(job, bounds) if engine is not None else job

    def compute(start: int, stop: int) -> np.ndarray:
        out = run(start, stop)
        if engine is not None:
            report(progress, stop, m, stage)
        return out

    return cache.compute_chunked("text_embeddings", key, n_rows=m, chunk_rows=chunk_rows,
                                 fn=compute, dtype=np.float16, progress=progress, stage=stage,
                                 row_shape=(k,))


class TextChunk(ConfigParts):
    """CLIP text embeddings of captions ``start:stop`` of a vocabulary, float16 ``(n, k)``, in
    batches of ``batch_size``. Picklable (as the workspace config when there is one), so an
    engine (:mod:`falcon_core.engines`) may run it elsewhere."""

    PARTS = ("vocabulary", "clip")

    def __init__(self, vocab: Vocabulary, clip: Any, batch_size: int,
                 progress: Optional[Progress] = None, total: int = 0, config: Any = None):
        self.vocabulary, self.clip, self.batch_size = vocab, clip, batch_size
        self.progress, self.total, self.config = progress, total, config

    def __call__(self, start: int, stop: int) -> np.ndarray:
        k = int(self.clip.embed_dim)
        out = np.empty((stop - start, k), dtype=np.float16)
        # A ClipModel sorts a chunk's captions by length and embeds each batch only up to its
        # longest caption (ClipModel.encode_texts): the whole chunk goes in one call so the
        # batches are length-bucketed. Any other encoder gets one batch per call.
        whole_chunk = "batch_size" in _parameters(getattr(self.clip, "encode_texts", None))
        step = (stop - start) if whole_chunk else self.batch_size
        for a in range(start, stop, step):
            b = min(stop, a + step)
            texts = self.vocabulary.captions(range(a, b))
            if whole_chunk:
                emb = self.clip.encode_texts(texts, batch_size=self.batch_size, progress=(
                    None if self.progress is None else
                    lambda d, _t, _s, a=a: report(self.progress, a + d, self.total,
                                                  "text embeddings")))
            else:
                emb = self.clip.encode_texts(texts)
            emb = np.asarray(emb, dtype=np.float32)
            if emb.shape != (b - a, k):
                raise RuntimeError(f"clip.encode_texts returned shape {emb.shape} for "
                                   f"{b - a} captions (expected ({b - a}, {k}))")
            out[a - start:b - start] = emb
            report(self.progress, b, self.total, "text embeddings")
        return out


# ------------------------------------------------------------------------- document frequency

DF_SAMPLE = 200_000  # captions counted at most (evenly spaced); SE of a share <= 0.0011
DF_CHUNK = 10_000  # captions per resumable chunk
# Vocabularies up to this many captions get a concept table (every caption's concepts, by row:
# concept_table): the document-frequency pass parses each of their captions anyway (they are
# within DF_SAMPLE, so it counts from the table: no second pass), and the table is small (the
# demo's 24,001 captions: 0.9 MB, read in 0.04 s; built in 17 s of CPU, 0.7 ms a caption).
# Above it (LAION-400M) the table would mean spaCy over every caption -- ~3 CPU-days and
# ~15 GB for 400M at those rates -- where an explanation meets a few hundred captions: those
# are extracted as they come (the extractor's in-process memo), the same concepts.
CONCEPT_TABLE_MAX = DF_SAMPLE


class DocumentFrequencies:
    """How many captions of a vocabulary each concept (word or phrase) is a concept of.

    ``n_docs`` captions were counted: all of them, or, for vocabularies larger than the sample
    (LAION: 400 million), ``sample`` captions evenly spaced over the whole vocabulary (every
    shard), so a share is estimated within ±0.0022 (95 %) whatever the vocabulary's size, and
    memory holds one chunk's captions and the counts of the sample's distinct concepts.
    """

    def __init__(self, words: dict[str, int], phrases: dict[str, int], n_docs: int,
                 total: int):
        self.words, self.phrases = dict(words), dict(phrases)
        self.n_docs, self.total = int(n_docs), int(total)

    @property
    def sampled(self) -> bool:
        return self.n_docs < self.total

    def share(self, concept: str, phrase: bool = False) -> float:
        counts = self.phrases if phrase else self.words
        return counts.get(concept, 0) / self.n_docs if self.n_docs else 0.0

    def frequent(self, max_share: float) -> tuple[dict[str, float], dict[str, float]]:
        """``({word: share}, {phrase: share})`` of the concepts above ``max_share``."""
        from ..stages.concepts import frequent

        return (frequent(self.words, self.n_docs, max_share),
                frequent(self.phrases, self.n_docs, max_share))

    def top(self, n: int = 20, phrase: bool = False) -> list[tuple[str, float]]:
        counts = self.phrases if phrase else self.words
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [(w, c / self.n_docs) for w, c in items]

    def describe(self) -> dict:
        return {"captions_counted": self.n_docs, "vocabulary_size": self.total,
                "sampled": self.sampled}


def _df_rows(total: int, sample: int) -> np.ndarray | None:
    """The caption rows counted: None for all of them, else ``sample`` evenly spaced rows."""
    if sample <= 0 or total <= sample:
        return None
    return np.unique(np.linspace(0, total - 1, sample).round().astype(np.int64))


def _counts(value: Any, name: str) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(c, int) and not isinstance(c, bool) and c >= 0
            for k, c in value.items()):
        raise ValueError(f"{name}: not a table of concept counts")
    return value


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}: not a count")
    return value


def _df_schema(value: Any) -> DocumentFrequencies:
    """A cached ``document_frequency`` entry, checked (the cache moves a wrong one aside)."""
    if not isinstance(value, dict) or set(value) != {"words", "phrases", "n_docs", "total"}:
        raise ValueError("not a document frequency table")
    n_docs, total = _count(value["n_docs"], "n_docs"), _count(value["total"], "total")
    if n_docs > total:
        raise ValueError("more captions counted than the vocabulary holds")
    return DocumentFrequencies(_counts(value["words"], "words"),
                               _counts(value["phrases"], "phrases"), n_docs, total)


def _df_part_schema(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"words", "phrases", "n"}:
        raise ValueError("not the counts of a chunk of captions")
    _counts(value["words"], "words"), _counts(value["phrases"], "phrases"), _count(value["n"], "n")
    return value


def concept_table(vocab: Vocabulary, extractor: Any, cache: DiskCache,
                  progress: Optional[Progress] = None, chunk: int = DF_CHUNK,
                  limit: Optional[int] = None):
    """The concepts of every caption of ``vocab`` by row
    (:class:`~falcon_core.stages.concepts.ConceptTable`), or None for a vocabulary of more than
    ``limit`` (:data:`CONCEPT_TABLE_MAX`) captions, whose explanations extract their captions'
    concepts as they meet them (the extractor's memo; the same concepts).

    Computed once per (vocabulary, concept extractor) and cached next to the text embeddings and
    the document frequencies (namespace ``concept_table``, keyed by the vocabulary's and the
    extractor's fingerprints: spaCy pipeline, POS set, boilerplate; checked when read, a wrong
    entry is moved aside and built again); resumable in chunks of ``chunk`` captions (namespace
    ``concept_table_parts``, removed once the table is whole); ``progress(done, total, stage)``.
    """
    from ..stages.concepts import ConceptTable

    total = len(vocab)
    if total > (CONCEPT_TABLE_MAX if limit is None else int(limit)):
        return None
    key = cache_keys.concept_table(vocab.fingerprint, extractor.fingerprint)
    found = cache.read_json("concept_table", key,
                            schema=lambda v: ConceptTable.from_json(v, total))
    if found is not None:
        return found
    stage = "concepts of every caption"
    rows: list = []
    for a in range(0, total, chunk):
        b = min(total, a + chunk)
        part_key = cache_keys.concept_table_part(key, a)
        part = cache.read_json("concept_table_parts", part_key,
                               schema=lambda v, n=b - a: ConceptTable.from_json(v, n))
        if part is None:
            part = ConceptTable.from_concepts(extractor.iter_extract(vocab.captions(range(a, b))))
            cache.write_json("concept_table_parts", part_key, part.to_json())
        rows.extend(part.rows())
        report(progress, b, total, stage)
    table = ConceptTable.from_concepts(rows)
    cache.write_json("concept_table", key, table.to_json())
    for a in range(0, total, chunk):  # the parts are in the whole table now
        try:
            cache.path("concept_table_parts", cache_keys.concept_table_part(key, a),
                       ".json").unlink(missing_ok=True)
        except OSError:  # an unusable cache folder (kept in memory): nothing on disk to remove
            pass
    return table


def document_frequencies(vocab: Vocabulary, extractor: Any, cache: DiskCache,
                         sample: int = DF_SAMPLE, progress: Optional[Progress] = None,
                         chunk: int = DF_CHUNK) -> DocumentFrequencies:
    """Each concept's document frequency over ``vocab`` (see :class:`DocumentFrequencies`).

    Computed once per (vocabulary, concept extractor, sample) and cached next to the text
    embeddings (namespace ``document_frequency``, keyed by the vocabulary's fingerprint like
    them, plus the extractor's fingerprint: spaCy pipeline, POS set, boilerplate); resumable in
    chunks of ``chunk`` captions. Caption files and LAION shards go through the same code
    (``vocab.captions(rows)``). When every caption is counted and the vocabulary is within
    :data:`CONCEPT_TABLE_MAX`, the counts are taken from its :func:`concept_table` (built by the
    same spaCy pass if it is not cached): one pass over the captions gives both."""
    from ..stages.concepts import document_frequency

    total = len(vocab)
    rows = _df_rows(total, int(sample))
    n = total if rows is None else len(rows)
    key = cache_keys.document_frequency(vocab.fingerprint, extractor.fingerprint,
                                        int(sample) if rows is not None else 0)
    found = cache.read_json("document_frequency", key, schema=_df_schema)
    if found is not None:
        return found
    table = concept_table(vocab, extractor, cache, progress=progress, chunk=chunk) \
        if rows is None else None
    if table is not None:
        words, phrases, counted = document_frequency(table.rows())
        cache.write_json("document_frequency", key,
                         {"words": words, "phrases": phrases, "n_docs": counted, "total": total})
        return DocumentFrequencies(words, phrases, counted, total)
    stage = "word document frequency"
    words: dict[str, int] = {}
    phrases: dict[str, int] = {}
    counted = 0
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        part_key = cache_keys.document_frequency_part(key, a)
        part = cache.read_json("document_frequency_parts", part_key, schema=_df_part_schema)
        if part is None or part["n"] != b - a:
            idx = range(a, b) if rows is None else rows[a:b]
            w, p, m = document_frequency(extractor.iter_extract(vocab.captions(idx)))
            part = {"words": w, "phrases": p, "n": m}
            cache.write_json("document_frequency_parts", part_key, part)
        for k, c in part["words"].items():
            words[k] = words.get(k, 0) + int(c)
        for k, c in part["phrases"].items():
            phrases[k] = phrases.get(k, 0) + int(c)
        counted += int(part["n"])
        report(progress, b, n, stage)
    cache.write_json("document_frequency", key,
                     {"words": words, "phrases": phrases, "n_docs": counted, "total": total})
    for a in range(0, n, chunk):  # the chunks' counts are in the whole now
        try:
            cache.path("document_frequency_parts", cache_keys.document_frequency_part(key, a),
                       ".json").unlink(missing_ok=True)
        except OSError:  # an unusable cache folder (kept in memory): nothing on disk to remove
            pass
    return DocumentFrequencies(words, phrases, counted, total)


# ------------------------------------------------------------------------------ registry

VOCABULARIES = Registry("vocabulary")


def register_vocabulary(name: str, factory: Callable[..., Vocabulary] | str) -> None:
    """Make ``create_vocabulary(name, **kw)`` call ``factory(**kw it accepts)`` (see
    :mod:`falcon_core.registry`)."""
    VOCABULARIES.register(name.lower(), factory)


# The offline demo world's captions (falcon_core/demo); kw: world.
register_vocabulary("demo", "falcon_core.demo.integration:demo_vocabulary")


def create_vocabulary(spec: str, **kw: Any) -> Vocabulary:
    """A vocabulary from a spec: ``laion:/path/to/shards`` or a folder of LAION shards, a
    registered name (``demo``; ``kw`` go to its factory), or a caption file path."""
    if isinstance(spec, Vocabulary):
        return spec
    spec = str(spec).strip()
    if not spec:
        raise FalconError("No vocabulary given.",
                          "Give a caption file (one caption a line), laion:/path, or demo.")
    low = spec.lower()
    if low.startswith("laion:"):
        return LaionShards(spec[len("laion:"):])
    if low in VOCABULARIES:
        return VOCABULARIES.create(low, **kw)
    path = Path(spec).expanduser()
    if path.is_dir():
        return LaionShards(path)
    return CaptionFile(path)
