"""Search indexes over a vocabulary's text embeddings: Stage 4 from a few captions to LAION-400M.

Two kinds (:data:`INDEX_KINDS`), one interface: ``index.search(B, k) -> (idx (n, k) int64,
scores (n, k) float32)``, best first, ties by the lower caption index.

``exact`` (:class:`ExactIndex`)
    Every caption is scored: one scan of the embeddings, block by block
    (:func:`falcon_core.stages.captions.top_captions`). Nothing to build: the embeddings are the
    index (LAION shards are read where they lie with ``pread``, never mapped: a scan reads block
    by block into one reused buffer, the re-scoring reads only its candidates' rows, so the
    search holds a block and its candidates whatever the size of a shard; the rows' norms are
    computed on the first scan and kept, 4 bytes a row). Results equal the brute force. For up
    to a few million captions.

``ivfpq`` (:class:`IVFPQIndex`)
    faiss ``IVF{nlist},PQ{m}`` with the inner product, on disk, for 100M+ captions: a coarse
    quantizer sends each query to ``nprobe`` of ``nlist`` lists, product-quantised codes
    (``m`` bytes a caption) give ``rerank`` candidates, and those candidates are scored exactly
    from the embeddings (their rows are read, nothing else), so the scores shown are true
    cosines and only the candidate set is approximate. Built once per (CLIP model, vocabulary,
    parameters) by ``python -m falcon_core index build``; resumable (the rows are added in parts
    of ``part_rows``, each part kept in the cache as soon as it is done, and merged into one
    on-disk index: faiss ``OnDiskInvertedLists``, memory-mapped when searched).

Cache (namespace ``caption_index``, key :func:`falcon_core.cache_keys.caption_index`): the trained
empty index, the parts, and the finished index (``.index`` + ``.ivfdata``), each named in a JSON
manifest written after it. Every file is a checksummed cache file (:mod:`falcon_core.cache`: the
payload, then the xxh3 trailer; faiss ignores the bytes after what it reads, and memory-maps only
the inverted lists' own length): the serialised indexes are written through the cache, the
``.ivfdata`` faiss writes itself is sealed with the trailer before it is renamed into place. Every
file is verified before faiss is given its path (:meth:`DiskCache.verified_path`: block by block,
once per process and file version, so a search in a warm process hashes nothing); one that fails
is moved to quarantine and rebuilt.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import cache_keys
from .cache import DiskCache
from .cache_format import atomic_write
from .errors import FalconError
from .progress import Progress, report
from .stages import captions as captions_stage

INDEX_KINDS = ("exact", "ivfpq")
NAMESPACE = "caption_index"
FORMAT_VERSION = 1


def _faiss():
    try:
        import faiss  # noqa: F401
    except ImportError as e:  # pragma: no cover - faiss-cpu is in requirements.txt
        raise FalconError("The IVF-PQ caption index needs faiss.",
                          "pip install faiss-cpu (see requirements.txt).") from e
    return faiss


# ---------------------------------------------------------------------------------- exact

# A vocabulary held as a float16 array (the text embeddings FALCON computes and caches) whose
# float32 copy takes at most this many bytes is converted once, on its first search, and the copy
# kept: each search otherwise converted every block again into a new buffer (on the demo's 24,000
# captions, a fresh 12 MB a call, most of a 32-row search's time in page faults). 128 MiB: 65,536
# captions of 512 dimensions; a larger vocabulary (a LAION-size one above all) is scanned block
# by block as before, so the exact search's memory stays within its bound.
RESIDENT_FLOAT32_BYTES = 128 << 20


class ExactIndex:
    """Every caption scored, in one scan of the embeddings (see the module docstring)."""

    kind = "exact"
    exact = True

    def __init__(self, A, chunk: int = 65536):
        self.A = A
        self.chunk = int(chunk)
        self._scanned = None  # what a search scans: A, or its resident float32 copy

    def _rows(self):
        """The array a search scans and re-scores from: ``A`` itself, or, for a float16 array of
        at most :data:`RESIDENT_FLOAT32_BYTES` as float32, its float32 copy (made once; the same
        values, so the same results)."""
        got = self._scanned
        if got is None:
            A = self.A
            got = A
            if isinstance(A, np.ndarray) and A.ndim == 2 and A.dtype == np.float16 and \
                    A.size * 4 <= RESIDENT_FLOAT32_BYTES:
                got = captions_stage.to_float32(np.ascontiguousarray(A),
                                                np.empty(A.shape, dtype=np.float32))
            self._scanned = got
        return got

    @property
    def ntotal(self) -> int:
        return int(self.A.shape[0])

    @property
    def fingerprint(self) -> None:
        """None: the results are the brute force's, so nothing about the index enters a key."""
        return None

    def search(self, B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The scan finds ``k + MARGIN`` candidates a query; each is scored again on its own
        (:func:`pair_scores`) and the best ``k`` kept, so a query's result does not depend on
        the other queries searched with it."""
        B = np.ascontiguousarray(B, dtype=np.float32)
        if B.ndim == 1:
            B = B[None, :]
        k = int(k)
        if k < 1 or B.shape[0] == 0 or B.ndim != 2:
            return captions_stage.top_captions(B, self.A, k=k, chunk=self.chunk)
        A = self._rows()
        I, _ = captions_stage.top_captions(B, A, k=min(k + MARGIN, self.ntotal),
                                           chunk=self.chunk)
        return rerank_exact(B, I, A, min(k, self.ntotal))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.ntotal, "exact": True}


# ---------------------------------------------------------------------------------- IVF-PQ

@dataclass(frozen=True)
class IVFPQParams:
    """How an IVF-PQ index is built (``0``: chosen from the number of captions, see
    :meth:`resolved`) and searched (``nprobe``, ``rerank``)."""

    nlist: int = 0  # inverted lists; 0: about 4·sqrt(M), a power of two in [16, 65536]
    m: int = 64  # PQ sub-quantizers (bytes a caption): the dimension must be a multiple
    nbits: int = 8
    train_rows: int = 0  # rows sampled to train; 0: min(M, max(40·nlist, 20,000))
    part_rows: int = 1_000_000  # rows added per part (one cache entry, the unit of resuming)
    seed: int = 0
    opq: bool = True  # learn a rotation that balances the variance across the PQ sub-vectors
    nprobe: int = 0  # lists visited per query; 0: nlist / 128 (at least 8), see NPROBE_SHARE
    rerank: int = 64  # candidates per query scored exactly from the embeddings

    def resolved(self, rows: int, dim: int) -> "IVFPQParams":
        nlist = self.nlist or default_nlist(rows)
        nlist = max(1, min(nlist, rows))
        train = self.train_rows or int(min(rows, max(TRAIN_PER_LIST * nlist, 20_000)))
        nprobe = self.nprobe or max(8, nlist // NPROBE_SHARE)
        m = self.m
        if dim % m:
            raise FalconError(f"IVF-PQ: m={m} does not divide the embedding width {dim}.",
                              "Choose m among the divisors of the width (e.g. 32 or 64 for 512).")
        return dataclasses.replace(self, nlist=nlist, train_rows=min(train, rows),
                                   nprobe=min(nprobe, nlist), m=m)

    def build_dict(self) -> dict[str, int]:
        """What determines the built index (not how it is searched, nor part_rows)."""
        return {"nlist": self.nlist, "m": self.m, "nbits": self.nbits, "opq": self.opq,
                "train_rows": self.train_rows, "seed": self.seed, "format": FORMAT_VERSION}


# faiss's guidance for an IVF index over N vectors ("Guidelines to choose an index" in the faiss
# wiki): K = 4·sqrt(N) to 16·sqrt(N) inverted lists, trained on 30·K to 256·K vectors. We take the
# low end, 4·sqrt(N) as a power of two: with the candidates re-scored exactly, fewer and larger
# lists cost less to assign (the coarse quantizer here is a flat scan of the K centroids) and to
# train. At LAION-400M, 4·sqrt(N) = 80,000 -> the cap of 65,536, the size the wiki names for
# 10M-100M vectors (there with an HNSW quantizer; a flat one costs 33.5M multiply-adds a query).
NLIST_PER_SQRT = 4
# Training rows per list (the wiki's 30 to 256): 163,840 rows at 1M captions, 2.6M (5.4 GB of
# float32) at the 65,536 lists of LAION-400M.
TRAIN_PER_LIST = 40
# Lists visited per query: nlist / 128 (32 of 4,096 at 1M captions, 1/128 of the codes scanned).
# Unlike nlist, nprobe is a search setting, a trade of recall for time, and faiss's wiki gives no
# rule for it; it was set from the benchmark's sweep on one built 1M index
# (`python -m falcon_core.bench search --rows --ivfpq`, clustered CLIP-like rows, 64 candidates
# re-scored exactly): recall@5 0.970 / 0.979 / 0.984 / 0.985 / 0.987 / 0.988 at nprobe 8 / 16 /
# 32 / 64 / 128 / 256, at a cost that grows with the codes scanned (about 3x from 32 to 256).
# 32 is the knee: past it, doubling the scan buys under 0.002 of recall. The previous default,
# nlist / 16, cost 3x for +0.004. Users who need more recall raise ``--nprobe`` or ``--rerank``.
NPROBE_SHARE = 128


def default_nlist(rows: int) -> int:
    """``NLIST_PER_SQRT``·sqrt(rows) rounded to a power of two, in [16, 65536]."""
    k = NLIST_PER_SQRT * math.sqrt(max(rows, 1))
    return int(min(65536, max(16, 2 ** round(math.log2(k)))))


def _normalised(x: np.ndarray, inv: Optional[np.ndarray]) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True)
    if inv is None:
        inv = 1.0 / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    x *= inv[:, None]
    return x


def _blocks(A, start: int, stop: int, chunk: int = 65536):
    """Normalised float32 rows ``start:stop`` of ``A``, block by block."""
    for a in range(start, stop, chunk):
        b = min(stop, a + chunk)
        if hasattr(A, "read_raw"):
            raw = A.read_raw(a, b)
            x = raw.astype(np.float32)
        else:
            x = np.asarray(A[a:b], dtype=np.float32)
        yield a, _normalised(x, None)


class IVFPQIndex:
    """A built IVF-PQ index over ``A`` (see the module docstring)."""

    kind = "ivfpq"
    exact = False

    def __init__(self, index, A, params: IVFPQParams, key: str, path: Path):
        self.index = index
        self.A = A
        self.params = params
        self.key = key
        self.path = path
        self._ivf = _faiss().extract_index_ivf(index)
        self._ivf.nprobe = int(params.nprobe)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def fingerprint(self) -> str:
        """The index and how it is searched: part of an explanation's key (results are
        approximate, so they depend on it)."""
        return f"ivfpq:{self.key}:nprobe={self.params.nprobe}:rerank={self.params.rerank}"

    def set_search(self, nprobe: Optional[int] = None, rerank: Optional[int] = None) -> None:
        changes = {}
        if nprobe:
            changes["nprobe"] = int(min(nprobe, self.params.nlist))
        if rerank:
            changes["rerank"] = int(rerank)
        self.params = dataclasses.replace(self.params, **changes)
        self._ivf.nprobe = int(self.params.nprobe)

    def candidates(self, B: np.ndarray, n_candidates: int) -> np.ndarray:
        """The PQ search alone: ``n_candidates`` caption rows per query (-1 where fewer)."""
        B = np.ascontiguousarray(B, dtype=np.float32)
        _, I = self.index.search(B, int(n_candidates))
        return I

    def search(self, B: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        B = np.ascontiguousarray(B, dtype=np.float32)
        if B.ndim == 1:
            B = B[None, :]
        n = B.shape[0]
        k = int(min(k, self.ntotal))
        if n == 0:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        if B.shape[1] != self.index.d:
            raise FalconError(f"Image embeddings have {B.shape[1]} dimensions but the caption "
                              f"index has {self.index.d}.",
                              "Build the index with the CLIP model that embeds the images.")
        I = self.candidates(B, max(k, int(self.params.rerank)))
        return rerank_exact(B, I, self.A, k)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.ntotal, "exact": False,
                **dataclasses.asdict(self.params), "path": str(self.path)}


# Candidates a query beyond the k kept, found by the float32 scan and scored again one pair at a
# time (:func:`pair_scores`): the scan's scores move in their last bits with the batch, so a
# caption at the k-th place could trade places with the next one; MARGIN more candidates make
# the k kept the same whatever the batch, unless k + MARGIN captions are within float32 noise.
MARGIN = 8


def pair_scores(B: np.ndarray, I: np.ndarray, A) -> np.ndarray:
    """The cosine of query ``q`` (row of ``B``) with caption ``I[q, j]`` (-1: none, scored
    -inf), for every pair: the products in float64 (exact for float32 inputs), summed over the
    one row in a fixed order, rounded once to float32. A pair's score therefore depends on
    nothing but its two rows -- unlike a float32 matmul, whose BLAS kernel (and so the order of
    its additions) depends on the shape of the whole batch."""
    B = np.asarray(B, dtype=np.float32)
    n = B.shape[0]
    uniq = np.unique(I[I >= 0])
    if not len(uniq):
        return np.full(I.shape, -np.inf, np.float32)
    rows = np.asarray(A[uniq], dtype=np.float64)
    norms = np.sqrt(np.square(rows).sum(axis=1))
    rows /= np.maximum(norms, 1e-12)[:, None]
    pos = np.searchsorted(uniq, np.where(I >= 0, I, uniq[0]))
    q = np.asarray(B, dtype=np.float64)
    S = np.empty(I.shape, np.float64)
    for a in range(0, n, 256):  # bounded memory: (256, c, d) float64 at a time
        b = min(n, a + 256)
        S[a:b] = (q[a:b, None, :] * rows[pos[a:b]]).sum(axis=-1)
    S = np.where(I >= 0, S, -np.inf).astype(np.float32)
    return np.where(np.isnan(S), -np.inf, S).astype(np.float32)


def rerank_exact(B: np.ndarray, I: np.ndarray, A, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Score the candidate rows ``I`` (n, c; -1: none) of each query exactly (their rows of
    ``A`` are read, normalised; :func:`pair_scores`) and keep the best ``k`` (score desc, index
    asc)."""
    n = B.shape[0]
    sc = pair_scores(B, I, A)
    big = np.iinfo(np.int64).max
    ids = np.where(I >= 0, I, big)
    out_i = np.empty((n, k), np.int64)
    out_s = np.empty((n, k), np.float32)
    for q in range(n):
        # duplicates cannot occur (one list per caption), but be safe: keep the first of each
        order = np.lexsort((ids[q], -sc[q]))[:k]
        out_i[q], out_s[q] = ids[q][order], sc[q][order]
    missing = out_i == big
    if missing.any():
        out_i[missing] = -1
    return out_i, out_s


# ----------------------------------------------------------------------------- build / open

class _Store:
    """The files of one IVF-PQ index in the cache (see the module docstring)."""

    def __init__(self, cache: DiskCache, key: str):
        self.cache = cache
        self.key = key
        self.dir = cache.path(NAMESPACE, key, "")  # <root>/caption_index/<key>
        self.folder = self.dir.parent

    def manifest(self, name: str) -> Optional[dict]:
        return self.cache.read_json(NAMESPACE, f"{self.key}-{name}")

    def write_manifest(self, name: str, data: dict) -> None:
        self.cache.write_json(NAMESPACE, f"{self.key}-{name}", data)

    def file(self, suffix: str) -> Path:
        return self.folder / f"{self.key}{suffix}"

    def write_index(self, index, suffix: str) -> dict:
        """Write a faiss index (checksummed, atomically); returns its manifest entry."""
        faiss = _faiss()
        final = self.file(suffix)
        data = faiss.serialize_index(index)
        atomic_write(final, lambda f: f.write(memoryview(data)), checksum=True)
        return {"file": final.name}

    def checked(self, entry: Optional[dict]) -> Optional[Path]:
        """The file of a manifest entry if it is there and passes its check (else None; a
        damaged file is moved to quarantine)."""
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            return None
        return self.cache.verified_path(self.folder / Path(entry["file"]).name)


def embeddings_id(vocabulary, clip, dim: int) -> str:
    """What identifies a vocabulary's text embeddings (an index's first key part): the
    vocabulary's fingerprint for precomputed (LAION) embeddings, else the text-embeddings key."""
    if getattr(vocabulary, "embeddings", None) is not None:
        return "precomputed:" + vocabulary.fingerprint
    return cache_keys.text_embeddings(clip.fingerprint, vocabulary.fingerprint, int(dim))


def ivfpq_key(emb_id: str, params: IVFPQParams) -> str:
    return cache_keys.caption_index(emb_id, "ivfpq", params.build_dict())


def _current_key(emb_id: str) -> str:
    return cache_keys.caption_index(emb_id, "ivfpq-current", {})


def index_disk_bytes(index: IVFPQIndex) -> int:
    """Bytes on disk of a built index (its ``.index`` and ``.ivfdata`` files)."""
    p = Path(index.path)
    return sum(f.stat().st_size for f in (p, p.with_suffix(".ivfdata")) if f.is_file())


def open_ivfpq(A, cache: DiskCache, emb_id: str, params: IVFPQParams | None = None
               ) -> Optional[IVFPQIndex]:
    """The built index for these embeddings and parameters (default: those of the last build
    for these embeddings), or None when it is not built."""
    faiss = _faiss()
    rows, dim = int(A.shape[0]), int(A.shape[1])
    if params is None:
        cur = cache.read_json(NAMESPACE, _current_key(emb_id))
        try:
            params = IVFPQParams(**cur["params"]) if isinstance(cur, dict) else None
        except (TypeError, KeyError):
            params = None
        if params is None:  # never built for these embeddings
            return None
    p = params.resolved(rows, dim)
    key = ivfpq_key(emb_id, p)
    st = _Store(cache, key)
    man = st.manifest("final")
    if not isinstance(man, dict) or man.get("ntotal") != rows:
        return None
    idx_path = st.checked(man.get("index"))
    data_path = st.checked(man.get("ivfdata"))
    if idx_path is None or data_path is None:
        return None
    index = faiss.read_index(str(idx_path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    return IVFPQIndex(index, A, p, key, idx_path)


def build_ivfpq(A, cache: DiskCache, emb_id: str, params: IVFPQParams | None = None,
                progress: Optional[Progress] = None, engine=None) -> IVFPQIndex:
    """Build (or finish building) the IVF-PQ index of ``A`` in ``cache`` and open it.

    Steps, each kept in the cache as soon as it is done: train on ``train_rows`` rows sampled
    with ``seed``; add the rows part by part (``engine.map_parts`` runs the parts elsewhere,
    e.g. on Ray; in this process by default); merge the parts into the on-disk index."""
    faiss = _faiss()
    rows, dim = int(A.shape[0]), int(A.shape[1])
    if rows == 0:
        raise FalconError("The caption vocabulary is empty.", "Use a vocabulary with captions.")
    p = (params or IVFPQParams()).resolved(rows, dim)
    done = open_ivfpq(A, cache, emb_id, p)
    if done is not None:
        cache.write_json(NAMESPACE, _current_key(emb_id), {"params": dataclasses.asdict(p)})
        report(progress, 1, 1, "caption index")
        return done
    key = ivfpq_key(emb_id, p)
    st = _Store(cache, key)

    # 1. train
    trained_path = st.checked((st.manifest("trained") or {}).get("index")) if st.manifest("trained") else None
    if trained_path is None:
        rng = np.random.default_rng(p.seed)
        sample = np.sort(rng.choice(rows, size=p.train_rows, replace=False))
        x = _normalised(np.asarray(A[sample], dtype=np.float32), None)
        index = faiss.index_factory(dim, (f"OPQ{p.m}," if p.opq else "")
                                    + f"IVF{p.nlist},PQ{p.m}x{p.nbits}",
                                    faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = int(p.seed)
        report(progress, 0, 1, "caption index: training")
        index.train(x)
        del x
        st.write_manifest("trained", {"index": st.write_index(index, ".trained")})
        trained_path = st.file(".trained")
    report(progress, 1, 1, "caption index: training")

    # 2. parts (resumable; may run elsewhere)
    bounds = [(a, min(rows, a + p.part_rows)) for a in range(0, rows, p.part_rows)]
    todo = [(a, b) for a, b in bounds
            if st.checked((st.manifest(f"part-{a}-{b}") or {}).get("index")) is None]
    job = _AddPart(trained_path, A, st.cache.root, key)
    n_done = len(bounds) - len(todo)
    report(progress, n_done, len(bounds), "caption index: adding")
    results = (engine.map_parts(job, todo) if engine is not None else map(job, todo))
    for (a, b), entry in zip(todo, results):
        st.write_manifest(f"part-{a}-{b}", {"index": entry})
        n_done += 1
        report(progress, n_done, len(bounds), "caption index: adding")

    # 3. merge into the on-disk index
    part_files = []
    for a, b in bounds:
        pth = st.checked((st.manifest(f"part-{a}-{b}") or {}).get("index"))
        if pth is None:
            raise FalconError(f"Part {a}-{b} of the caption index is missing or damaged.",
                              "Run the build again: it redoes what is missing.")
        part_files.append(str(pth))
    from faiss.contrib.ondisk import merge_ondisk

    trained = faiss.read_index(str(trained_path))
    building = st.folder / f"{key}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    ivfdata_name = f"{key}.ivfdata"
    merge_ondisk(trained, part_files, str(building / ivfdata_name))
    faiss.write_index(trained, str(building / f"{key}.index"))
    del trained
    for suffix in (".ivfdata", ".index"):  # checksummed like every cache file, then in place
        cache.seal(building / f"{key}{suffix}")
        os.replace(building / f"{key}{suffix}", st.file(suffix))
    shutil.rmtree(building, ignore_errors=True)
    st.write_manifest("final", {
        "ntotal": rows, "params": dataclasses.asdict(p), "built": time.time(),
        "index": {"file": st.file(".index").name}, "ivfdata": {"file": st.file(".ivfdata").name}})
    for (a, b), pf in zip(bounds, part_files):  # the parts are in the merged index now
        try:
            os.unlink(pf)
        except OSError:
            pass
    cache.write_json(NAMESPACE, _current_key(emb_id), {"params": dataclasses.asdict(p)})
    report(progress, 1, 1, "caption index")
    out = open_ivfpq(A, cache, emb_id, p)
    if out is None:  # pragma: no cover - just written
        raise FalconError("The caption index could not be read back after building it.",
                          "Check the cache folder's disk.")
    return out


class _AddPart:
    """Add rows ``a:b`` of ``A`` to a copy of the trained index and store it as a part
    (picklable: an engine may run it in another process or machine sharing the cache)."""

    def __init__(self, trained_path: Path, A, cache_root: Path, key: str):
        self.trained_path, self.A, self.cache_root, self.key = trained_path, A, cache_root, key

    def __call__(self, bounds: tuple[int, int]) -> dict:
        faiss = _faiss()
        a, b = bounds
        index = faiss.read_index(str(self.trained_path))
        for start, x in _blocks(self.A, a, b):
            index.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
        st = _Store(DiskCache(self.cache_root), self.key)
        return st.write_index(index, f".part-{a}-{b}")


# ----------------------------------------------------------------------------- choosing

def open_index(kind: str, A, cache: DiskCache, emb_id: str,
               params: IVFPQParams | None = None) -> ExactIndex | IVFPQIndex:
    """The index of ``kind`` over ``A``; an IVF-PQ index must have been built (else a message
    with the command that builds it)."""
    if kind == "exact":
        return ExactIndex(A)
    if kind == "ivfpq":
        got = open_ivfpq(A, cache, emb_id, params)
        if got is None:
            raise FalconError(
                "The IVF-PQ caption index of this vocabulary is not built yet.",
                "Build it once: python -m falcon_core index build --vocabulary <the same> "
                "--clip <the same> (add the same --cache-dir), or use --caption-index exact.")
        return got
    raise FalconError(f"Unknown caption index {kind!r}.", f"Use one of {', '.join(INDEX_KINDS)}.")
