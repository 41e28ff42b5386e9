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

from .. import cache_keys
from ..cache import DiskCache, fingerprint_files, hash_json
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

class ShardedEmbeddings:
    """A lazily concatenated view of per-shard ``(n_s, k)`` arrays (memory-mapped .npy files).

    ``len()``, ``.shape``, ``.dtype`` (float32: what slicing returns) and ``[a:b]`` / ``[i]`` /
    ``[index array]`` indexing, which reads only the rows asked for and returns float32 rows,
    L2-normalised (LAION's are already; renormalising guards against float16 rounding and
    shards that are not). Stage 4 slices it chunk by chunk, so millions of rows never sit in
    memory at once.
    """

    def __init__(self, paths: Sequence[Path], normalize: bool = True):
        self.paths = [Path(p) for p in paths]
        self.normalize = normalize
        self._arrays = [np.load(p, mmap_mode="r", allow_pickle=False) for p in self.paths]
        widths = {a.shape[1] for a in self._arrays}
        self.width = widths.pop() if len(widths) == 1 else None
        counts = [a.shape[0] for a in self._arrays]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), int(self.width))

    @property
    def ndim(self) -> int:
        return 2

    def _finish(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32)
        if self.normalize and rows.size:
            norms = np.linalg.norm(rows, axis=-1, keepdims=True)
            rows = rows / np.maximum(norms, 1e-12)
        return rows

    def _range(self, a: int, b: int) -> np.ndarray:
        out = np.empty((max(0, b - a), self.width), dtype=np.float32)
        if b <= a:
            return out
        s0 = int(np.searchsorted(self.offsets, a, side="right") - 1)
        pos = 0
        s = s0
        while a < b:
            lo = a - self.offsets[s]
            hi = min(b, self.offsets[s + 1]) - self.offsets[s]
            n = int(hi - lo)
            out[pos:pos + n] = self._arrays[s][lo:hi]
            pos += n
            a += n
            s += 1
        return out

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
        out = np.empty((ind.size, self.width), dtype=np.float32)
        shard = np.searchsorted(self.offsets, ind, side="right") - 1
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            local = ind[sel] - self.offsets[s]
            order = np.argsort(local, kind="stable")
            out[sel[order]] = self._arrays[s][local[order]]
        return self._finish(out)

    def __array__(self, dtype=None, copy=None):
        arr = self[0:len(self)]
        return arr if dtype is None else arr.astype(dtype)

    def iter_chunks(self, chunk_rows: int = 65536):
        for a in range(0, len(self), chunk_rows):
            yield a, self[a:a + chunk_rows]


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

    ``embeddings`` is a :class:`ShardedEmbeddings` (memory-mapped, sliced lazily); captions are
    read from parquet on demand (only the ``caption`` column; the last ``cache_shards`` shards
    read stay in memory)."""

    kind = "laion"
    embedding_model = LAION_EMBEDDING_MODEL
    embedding_pretrained = LAION_EMBEDDING_PRETRAINED

    def __init__(self, root: str | os.PathLike, cache_shards: int = 4):
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
        self._cache: "OrderedDict[int, list[str]]" = OrderedDict()
        self._cache_size = max(1, int(cache_shards))
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
        for folder in (self.root, self.root / "text_emb", self.root / "metadata"):
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
                arr = np.load(ep, mmap_mode="r", allow_pickle=False)
            except Exception as e:
                raise FalconError(f"LAION shard {ep.name} is not a readable .npy file: {e}",
                                  "Download the shard again.") from e
            if arr.ndim != 2 or arr.dtype.kind != "f":
                raise FalconError(f"LAION shard {ep.name} has shape {arr.shape} and dtype "
                                  f"{arr.dtype}; expected a float (n, k) array.",
                                  "Download the shard again.")
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

    def _shard_captions(self, s: int) -> list[str]:
        with self._lock:
            got = self._cache.get(s)
            if got is not None:
                self._cache.move_to_end(s)
                return got
        import pandas as pd

        col = pd.read_parquet(self.meta_paths[s], columns=["caption"])["caption"]
        caps = [clean_caption(c if isinstance(c, str) else "" if c is None or c != c else
                              str(c))[0] for c in col.tolist()]
        with self._lock:
            self._cache[s] = caps
            self._cache.move_to_end(s)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return caps

    def caption(self, i: int) -> str:
        try:
            i = range(len(self))[int(i)]  # negative indices count from the end, as in a list
        except IndexError:
            raise IndexError(f"caption {i} out of range for {len(self)} captions") from None
        s = bisect.bisect_right(self._offsets, i) - 1
        return self._shard_captions(s)[i - self._offsets[s]]

    def captions(self, indices: Iterable[int]) -> list[str]:
        idx = [int(i) for i in indices]
        # group by shard so each shard is read once even with a small cache
        order = sorted(range(len(idx)), key=lambda k: idx[k])
        out: list[str] = [""] * len(idx)
        for k in order:
            out[k] = self.caption(idx[k])
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


def text_embeddings(vocab: Vocabulary, clip: Any, cache: DiskCache, batch_size: int = 256,
                    progress: Optional[Progress] = None, chunk_batches: int = 32) -> Any:
    """The vocabulary's L2-normalised CLIP text embeddings A, ``(M, k)``.

    Precomputed embeddings (LAION) are returned as they are (a lazily sliced
    :class:`ShardedEmbeddings`, float32 rows) after checking that their width equals
    ``clip.embed_dim`` (and, when the CLIP model exposes ``name``, that it is the model they came
    from). Otherwise they are computed with ``clip.encode_texts`` in batches of ``batch_size``,
    stored as float16 in the cache (namespace ``text_embeddings``, keyed by the CLIP and
    vocabulary fingerprints; resumable in chunks of ``batch_size * chunk_batches`` rows) and
    returned memory-mapped.
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

    def compute(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, k), dtype=np.float16)
        for a in range(start, stop, batch_size):
            b = min(stop, a + batch_size)
            emb = np.asarray(clip.encode_texts(vocab.captions(range(a, b))), dtype=np.float32)
            if emb.shape != (b - a, k):
                raise RuntimeError(f"clip.encode_texts returned shape {emb.shape} for "
                                   f"{b - a} captions (expected ({b - a}, {k}))")
            out[a - start:b - start] = emb
            report(progress, b, m, stage)
        return out

    return cache.compute_chunked("text_embeddings", key, n_rows=m,
                                 chunk_rows=batch_size * max(1, int(chunk_batches)),
                                 fn=compute, dtype=np.float16, progress=progress, stage=stage,
                                 row_shape=(k,))


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
