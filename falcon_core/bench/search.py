"""Vocabulary search at LAION scale, each figure against a bare baseline measured in the same run.

    python -m falcon_core.bench search                         # 1M and 5M rows, made if missing
    python -m falcon_core.bench search --rows 1000000 --json --data /tmp/laion-bench

What is measured (each variant in its own fresh process, so each peak RSS is its own; min and
median of ``--repeats`` runs, CPU and wall time):

``topk``
    the top-5 captions of 64 crops over M fp16 LAION-format rows (random unit vectors: every row
    costs the same). ``bare``: ``np.load(mmap_mode="r")`` of every shard, then per block of 65,536
    rows ``astype(float32)``, one matmul and ``argpartition``, candidates merged at the end — what
    one would write by hand. ``falcon``: :class:`falcon_core.caption_index.ExactIndex` over
    :class:`LaionShards` (its first scan also computes the rows' norms: reported as ``cold``).
    ``before``: the code of ``main`` before this work (``--before REF``), when given. Also: T and
    L (64 + 10 rows) searched separately vs stacked in one search. The results are checked: the
    index equals the bare computation on normalised rows (indices equal, scores to 1e-5).
``lookup``
    the text of 250 captions found in M rows. ``bare``: pyarrow reads, for each shard touched,
    only the row groups that hold the rows and takes them. ``falcon``: ``LaionShards.captions``
    (its caption text entries built: ``cold`` is the first call, which builds them).
``ivfpq`` (``--ivfpq``; ``--rows`` with no value to measure only this)
    an IVF-PQ index over 1M *clustered* rows (:mod:`falcon_core.bench.laion_data`: CLIP-like
    width 512, float16 LAION shards, an anisotropic spectrum, Zipf-sized topics, queries moved
    by a modality gap so their best caption has a cosine of about 0.3-0.5): build time, recall@5
    against the exact search over 1,024 queries, and ms per 64 queries after warm-up, for the
    index's own search settings and a sweep of ``nprobe`` / ``rerank`` on the same index (a
    search setting, not a build). ``--index-cache DIR`` keeps the built index between runs;
    ``--nlist --m --nprobe --rerank`` choose other parameters.

Peak RSS is the variant's process's own peak (``VmHWM``, :func:`peak_rss_bytes`), next to the raw size
of the embeddings; for ``falcon`` also the search's own increment (that peak minus the RSS just
before the index is made: the interpreter, numpy and torch, which every FALCON process holds,
left out), which does not grow with the size of a shard (nothing is mapped).
The machine's load average is printed with the figures: on a shared machine the ratios are what
count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

K = 5
N_CROPS = 64
N_LOW = 10
CHUNK = 65536


# ------------------------------------------------------------------------------- helpers

def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    """min and median of wall and CPU seconds over ``repeats`` calls; the last result."""
    wall, cpu, out = [], [], None
    for _ in range(max(1, repeats)):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_min": min(wall), "wall_median": float(np.median(wall)),
            "cpu_min": min(cpu), "cpu_median": float(np.median(cpu))}, out


def _status_bytes(field: str) -> int | None:
    """A size field of /proc/self/status (Linux), in bytes; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set: ``VmHWM`` where /proc has it, else ``ru_maxrss``.
    Not ``ru_maxrss`` first: Linux carries it over a fork and an exec, so a variant started by a
    parent that holds 4 GB of models (``bench speed``) would report the parent's 4 GB."""
    hwm = _status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    return _status_bytes("VmRSS") or 0


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _shards(root: Path) -> list[Path]:
    return sorted((root / "text_emb").glob("text_emb_*.npy"))


def _metas(root: Path) -> list[Path]:
    return sorted((root / "metadata").glob("metadata_*.parquet"))


def bare_topk(root: Path, B: np.ndarray, k: int = K, normalise: bool = False,
              chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: every shard memory-mapped, blocks converted, matmul + argpartition."""
    arrays = [np.load(p, mmap_mode="r") for p in _shards(root)]
    cand_i, cand_s = [], []
    start = 0
    for arr in arrays:
        for a in range(0, arr.shape[0], chunk):
            x = arr[a:a + chunk].astype(np.float32)
            if normalise:
                x /= np.linalg.norm(x, axis=1, keepdims=True)
            S = B @ x.T
            part = np.argpartition(-S, k - 1, axis=1)[:, :k]
            cand_i.append(part + start + a)
            cand_s.append(np.take_along_axis(S, part, axis=1))
        start += arr.shape[0]
    I, S = np.concatenate(cand_i, axis=1), np.concatenate(cand_s, axis=1)
    order = np.stack([np.lexsort((i, -s))[:k] for i, s in zip(I, S)])
    return np.take_along_axis(I, order, axis=1), np.take_along_axis(S, order, axis=1)


def bare_lookup(root: Path, rows: np.ndarray) -> list[str]:
    """The baseline: only the row groups holding the rows are read, and the rows taken."""
    import pyarrow.parquet as pq

    from ..data.vocabulary import clean_caption

    sizes = [int(np.load(p, mmap_mode="r").shape[0]) for p in _shards(root)]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out: dict[int, str] = {}
    shard = np.searchsorted(offsets, rows, side="right") - 1
    for s in np.unique(shard):
        pf = pq.ParquetFile(_metas(root)[int(s)])
        local = rows[shard == s] - offsets[s]
        rg_sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        rg_off = np.concatenate([[0], np.cumsum(rg_sizes)])
        groups = sorted(set((np.searchsorted(rg_off, local, side="right") - 1).tolist()))
        table = pf.read_row_groups(groups, columns=["caption"])
        base = np.concatenate([[0], np.cumsum([rg_sizes[g] for g in groups])])
        pos = [int(base[groups.index(int(g))] + (r - rg_off[g]))
               for r, g in zip(local, np.searchsorted(rg_off, local, side="right") - 1)]
        col = table.column("caption").take(pos).to_pylist()
        for r, c in zip(rows[shard == s], col):
            out[int(r)] = clean_caption(c or "")[0]
    return [out[int(r)] for r in rows]


def _load_before(ref: str):
    """The vocabulary and caption modules of git ``ref`` (the code before this work)."""
    import importlib.util

    repo = Path(__file__).resolve().parents[2]
    mods = {}
    for name, rel in (("captions", "falcon_core/stages/captions.py"),
                      ("vocabulary", "falcon_core/data/vocabulary.py")):
        src = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{rel}"], check=True,
                             capture_output=True, text=True).stdout
        tmp = Path(tempfile.mkdtemp(prefix="falcon-before-")) / f"{name}.py"
        tmp.write_text(src)
        pkg = "falcon_core.stages" if name == "captions" else "falcon_core.data"
        spec = importlib.util.spec_from_file_location(f"{pkg}._before_{name}", tmp)
        mod = importlib.util.module_from_spec(spec)
        mod.__package__ = pkg
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


# ------------------------------------------------------------------------ one variant each

def child(task: str, variant: str, root: str, repeats: int, before: str | None,
          cache_dir: str | None, stack_test: bool = True) -> dict:
    """One variant in this process (called in a fresh process by :func:`run_variant`)."""
    from ..bench.laion_data import uniform_queries

    root = Path(root)
    out: dict[str, Any] = {"task": task, "variant": variant}
    if task == "topk":
        B = uniform_queries(N_CROPS)
        if variant == "bare":
            t, res = timed(lambda: bare_topk(root, B), repeats)
        elif variant == "falcon":
            import torch  # noqa: F401  (loaded in every FALCON process: CLIP needs it)

            from ..caption_index import ExactIndex
            from ..data.vocabulary import LaionShards

            index = ExactIndex(LaionShards(root).embeddings)
            out["rss_before_search"] = current_rss_bytes()
            out["cold"], _ = timed(lambda: index.search(B, K), 1)
            t, res = timed(lambda: index.search(B, K), repeats)
            if stack_test:
                BL = uniform_queries(N_LOW, seed=7)
                out["separate_T_L"], _ = timed(
                    lambda: (index.search(B, K), index.search(BL, K)), repeats)
                out["stacked_T_L"], _ = timed(
                    lambda: index.search(np.concatenate([B, BL]), K), repeats)
            out["files_opened"] = index.A.files_opened
            out["peak_rss_search"] = peak_rss_bytes()  # before the checks below map everything
            out["search_rss_increment"] = out["peak_rss_search"] - out["rss_before_search"]
            ref_i, ref_s = bare_topk(root, B, normalise=True)
            out["equal_to_bare_normalised"] = bool(np.array_equal(res[0], ref_i)
                                                   and np.allclose(res[1], ref_s, atol=1e-5))
            raw_i, _ = bare_topk(root, B)
            out["same_ids_as_bare_unnormalised"] = float(np.mean(res[0] == raw_i))
        else:  # before
            import torch  # noqa: F401

            mods = _load_before(before)
            v = mods["vocabulary"].LaionShards(root)
            t, res = timed(lambda: mods["captions"].top_captions(B, v.embeddings, k=K), repeats)
            if stack_test:
                BL = uniform_queries(N_LOW, seed=7)
                out["separate_T_L"], _ = timed(
                    lambda: (mods["captions"].top_captions(B, v.embeddings, k=K),
                             mods["captions"].top_captions(BL, v.embeddings, k=K)), 1)
    elif task == "lookup":
        rng = np.random.default_rng(3)
        from ..data.vocabulary import LaionShards

        n = len(LaionShards(root))
        rows = np.sort(rng.choice(n, size=250, replace=False))
        if variant == "bare":
            t, res = timed(lambda: bare_lookup(root, rows), repeats)
        elif variant == "falcon":
            from ..cache import DiskCache

            v = LaionShards(root, cache=DiskCache(cache_dir))
            out["cold"], _ = timed(lambda: v.captions(rows), 1)
            v2 = LaionShards(root, cache=DiskCache(cache_dir))  # a new object: entries on disk
            t, res = timed(lambda: v2.captions(rows), repeats)
            out["bytes_read"] = sum(x.bytes_read for x in v2._texts.values())
            out["equal_to_bare"] = res == bare_lookup(root, rows)
        else:
            mods = _load_before(before)
            t, res = timed(lambda: mods["vocabulary"].LaionShards(root).captions(rows), repeats)
    else:
        raise ValueError(task)
    out["time"] = t
    out["peak_rss"] = out.get("peak_rss_search") or peak_rss_bytes()
    out["raw_embedding_bytes"] = sum(p.stat().st_size for p in _shards(root))
    return out


def run_variant(task: str, variant: str, root: Path, repeats: int, before: str | None = None,
                cache_dir: str | None = None, stack_test: bool = True) -> dict:
    """:func:`child` in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, "-m", "falcon_core.bench.search", "--child", task, variant,
           str(root), "--repeats", str(repeats)] + ([] if stack_test else ["--no-stack-test"])
    if before:
        cmd += ["--before", before]
    if cache_dir:
        cmd += ["--cache-dir", cache_dir]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, env=env)
    if res.returncode:
        raise RuntimeError(f"{task}/{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- IVF-PQ

# nprobe / rerank pairs measured on the one built index (searching is a setting, not a build):
# the index's own settings first, then less and more thorough ones.
SWEEP = ((8, 64), (16, 64), (32, 64), (64, 64), (128, 64), (256, 64), (32, 128), (64, 128),
         (64, 256))


def measure_ivfpq(root: Path, cache_dir: str, queries: int = 1024, repeats: int = 3,
                  params=None, sweep=SWEEP) -> dict:
    """Build time, recall@5 vs exact, and ms per 64 queries of the IVF-PQ index of ``root``
    (built once in ``cache_dir``, reused when there), for its own search settings and for each
    ``(nprobe, rerank)`` of ``sweep``. The ground truth is :class:`ExactIndex` over the same
    rows; RSS is read before and after each step (the index's lists are memory-mapped)."""
    from ..bench.laion_data import clustered_queries
    from ..cache import DiskCache
    from ..caption_index import ExactIndex, IVFPQParams, build_ivfpq, index_disk_bytes
    from ..data.vocabulary import LaionShards

    v = LaionShards(root)
    cache = DiskCache(cache_dir)
    rss0 = current_rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    index = build_ivfpq(v.embeddings, cache, "bench:" + v.fingerprint, params or IVFPQParams())
    build = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
             "peak_rss": peak_rss_bytes()}
    Q = clustered_queries(queries)
    t0 = time.perf_counter()
    exact_i, exact_s = ExactIndex(v.embeddings).search(Q, K)
    exact_wall = time.perf_counter() - t0
    chosen = (index.params.nprobe, index.params.rerank)

    def measure(nprobe: int, rerank: int) -> dict:
        index.set_search(nprobe=nprobe, rerank=rerank)
        got_i, got_s = index.search(Q, K)
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got_i, exact_i)]))
        index.search(Q[:N_CROPS], K)  # warm-up
        per = []
        for r in range(repeats):
            for a in range(0, queries, N_CROPS):
                per.append(timed(lambda: index.search(Q[a:a + N_CROPS], K), 1)[0])
        return {"nprobe": int(index.params.nprobe), "rerank": int(index.params.rerank),
                "recall_at_5": recall,
                "top1_equal": float(np.mean(got_i[:, 0] == exact_i[:, 0])),
                "max_score_diff_found": float(np.abs(np.where(got_i == exact_i,
                                                              got_s - exact_s, 0)).max()),
                "ms_per_64": {k: 1000 * f([p[k.split("_")[0] + "_min"] for p in per]) for k, f in
                              (("wall_min", min), ("wall_median", np.median),
                               ("cpu_min", min), ("cpu_median", np.median))}}

    rows = [measure(*chosen)] + [measure(n, r) for n, r in sweep if (n, r) != chosen]
    index.set_search(*chosen)
    return {"rows": len(v), "build_s": build, "queries": queries, **rows[0],
            "sweep": rows, "exact_search_wall_s": exact_wall, "rss_before_mb": rss0 / 1e6,
            "rss_after_mb": current_rss_bytes() / 1e6, "peak_rss_mb": peak_rss_bytes() / 1e6,
            "params": index.describe(), "disk_bytes": index_disk_bytes(index)}


# ----------------------------------------------------------------------------- the run

def ensure_data(base: Path, rows: int, kind: str = "uniform") -> Path:
    """LAION-format shards of ``rows`` rows under ``base`` (1M-row shards, made if missing;
    a smaller set links to the shards of a larger one of the same kind)."""
    from .laion_data import make_laion

    root = base / f"{kind}-{rows}"
    shard_rows = 1_000_000
    if rows % shard_rows == 0 and not (root / "text_emb").is_dir():
        for other in sorted(base.glob(f"{kind}-*")):  # the same shards, made already
            try:
                big = int(other.name.split("-")[-1])
            except ValueError:
                continue
            n = rows // shard_rows
            have = [(other / "text_emb" / f"text_emb_{i:04d}.npy",
                     other / "metadata" / f"metadata_{i:04d}.parquet") for i in range(n)]
            if big > rows and all(e.is_file() and m.is_file() for e, m in have):
                for sub in ("text_emb", "metadata"):
                    (root / sub).mkdir(parents=True, exist_ok=True)
                for e, m in have:
                    (root / "text_emb" / e.name).symlink_to(e.resolve())
                    (root / "metadata" / m.name).symlink_to(m.resolve())
                break
    make_laion(root, rows, shard_rows=shard_rows, kind=kind, verbose=True)
    return root


def ratio(a: dict, b: dict, key: str) -> float:
    return a[key] / b[key] if b[key] else float("nan")


def search_rows(data: Path, rows_list: list[int], repeats: int = 3, before: str | None = None,
                ivfpq: bool = False, index_cache: str | None = None, params=None) -> dict:
    """Every search figure; what ``bench speed`` calls. Returns a JSON-able dict."""
    out: dict[str, Any] = {"load_before": load(), "repeats": repeats, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="falcon-bench-search-") as cache_dir:
        for n, rows in enumerate(rows_list):
            root = ensure_data(data, rows)
            res: dict[str, Any] = {}
            for task in ("topk", "lookup"):
                variants = ["bare", "falcon"] + (["before"] if before else [])
                res[task] = {v: run_variant(task, v, root, repeats, before, cache_dir,
                                            stack_test=(n == 0))
                             for v in variants}
            out["sizes"][str(rows)] = res
        if ivfpq:
            root = ensure_data(data, 1_000_000, "clustered")
            out["ivfpq"] = measure_ivfpq(root, index_cache or cache_dir, repeats=repeats,
                                         params=params)
    out["load_after"] = load()
    return out


def format_rows(res: dict) -> list[str]:
    lines = [f"load average before {res['load_before']}, after {res['load_after']} "
             f"(2 cores); min/median of {res['repeats']}"]
    for rows, r in res["sizes"].items():
        tk, lk = r["topk"], r["lookup"]
        b, f = tk["bare"], tk["falcon"]
        raw = f["raw_embedding_bytes"]
        lines.append(f"\n{int(rows):,} rows ({raw / 1e9:.2f} GB of fp16 embeddings)")
        lines.append(f"  caption top-5, 64 crops: falcon {f['time']['wall_min']:.2f}/"
                     f"{f['time']['wall_median']:.2f} s wall, {f['time']['cpu_min']:.2f} s CPU; "
                     f"bare {b['time']['wall_min']:.2f}/{b['time']['wall_median']:.2f} s wall")
        lines.append(f"    ratio falcon/bare: wall {ratio(f['time'], b['time'], 'wall_min'):.2f} / "
                     f"{ratio(f['time'], b['time'], 'wall_median'):.2f}, CPU "
                     f"{ratio(f['time'], b['time'], 'cpu_min'):.2f} / "
                     f"{ratio(f['time'], b['time'], 'cpu_median'):.2f} (min / median); "
                     f"first scan (norms) {f['cold']['wall_min']:.2f} s")
        lines.append(f"    peak RSS: falcon {f['peak_rss'] / 1e9:.2f} GB "
                     f"({f['peak_rss'] / raw:.2f} x raw), bare {b['peak_rss'] / 1e9:.2f} GB "
                     f"({b['peak_rss'] / raw:.2f} x raw); the search's own increment "
                     f"{f['search_rss_increment'] / 1e9:.2f} GB (peak - RSS before; "
                     f"{f['search_rss_increment'] / raw:.2f} x raw); equal to the bare "
                     f"computation on normalised rows: {f['equal_to_bare_normalised']}")
        if "stacked_T_L" in f:
            lines.append(f"    T and L (64 + 10): separate / stacked = "
                         f"{ratio(f['separate_T_L'], f['stacked_T_L'], 'wall_min'):.2f} (wall "
                         f"min), {ratio(f['separate_T_L'], f['stacked_T_L'], 'cpu_min'):.2f} "
                         f"(CPU min)")
        if "before" in tk:
            bf = tk["before"]
            sep = (f"; T and L separately {bf['separate_T_L']['wall_min']:.2f} s"
                   if "separate_T_L" in bf else "")
            lines.append(f"    before: {bf['time']['wall_min']:.2f}/{bf['time']['wall_median']:.2f}"
                         f" s wall ({ratio(bf['time'], b['time'], 'wall_min'):.2f} / "
                         f"{ratio(bf['time'], b['time'], 'wall_median'):.2f} x bare), peak RSS "
                         f"{bf['peak_rss'] / 1e9:.2f} GB{sep}")
        b, f = lk["bare"], lk["falcon"]
        lines.append(f"  caption text of 250 rows: falcon {1000 * f['time']['wall_min']:.1f}/"
                     f"{1000 * f['time']['wall_median']:.1f} ms, bare (needed row groups) "
                     f"{1000 * b['time']['wall_min']:.1f}/{1000 * b['time']['wall_median']:.1f} ms:"
                     f" ratio {ratio(f['time'], b['time'], 'wall_min'):.3f} / "
                     f"{ratio(f['time'], b['time'], 'wall_median'):.3f}; first call (builds the "
                     f"entries) {f['cold']['wall_min']:.2f} s; {f['bytes_read'] / 1e6:.2f} MB "
                     f"read; equal: {f['equal_to_bare']}; peak RSS {f['peak_rss'] / 1e9:.2f} GB")
        if "before" in lk:
            bf = lk["before"]
            lines.append(f"    before: {1000 * bf['time']['wall_min']:.0f} ms "
                         f"({ratio(bf['time'], b['time'], 'wall_min'):.1f} x bare), peak RSS "
                         f"{bf['peak_rss'] / 1e9:.2f} GB")
    if "ivfpq" in res:
        iv = res["ivfpq"]
        pr = iv["params"]
        lines.append(f"\nIVF-PQ over {iv['rows']:,} clustered rows (nlist {pr['nlist']}, OPQ "
                     f"{pr['opq']}, PQ {pr['m']}x{pr['nbits']}, trained on {pr['train_rows']:,} "
                     f"rows): build {iv['build_s']['wall']:.0f} s wall / {iv['build_s']['cpu']:.0f}"
                     f" s CPU, {iv['disk_bytes'] / 1e6:.0f} MB on disk; exact search of the "
                     f"{iv['queries']} queries {iv['exact_search_wall_s']:.1f} s; RSS "
                     f"{iv['rss_before_mb']:.0f} MB before, {iv['rss_after_mb']:.0f} MB after, "
                     f"peak {iv['peak_rss_mb']:.0f} MB")
        for i, r in enumerate(iv["sweep"]):
            ms = r["ms_per_64"]
            lines.append(f"  {'chosen ' if i == 0 else '       '}nprobe {r['nprobe']:>4}, rerank "
                         f"{r['rerank']:>4}: recall@5 {r['recall_at_5']:.3f}, top-1 equal "
                         f"{r['top1_equal']:.3f}; per 64 queries {ms['wall_min']:.1f}/"
                         f"{ms['wall_median']:.1f} ms wall, {ms['cpu_min']:.1f}/"
                         f"{ms['cpu_median']:.1f} ms CPU (min/median)")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m falcon_core.bench search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 5_000_000],
                   help="sizes of the exact-search figures (none: --rows with no value)")
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "falcon-laion-bench"),
                   help="where the LAION-format shards are made (kept for later runs)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--before", default=None, metavar="GIT_REF",
                   help="also measure the code of this git ref (e.g. main) in the same run")
    p.add_argument("--ivfpq", action="store_true", help="also the IVF-PQ index (1M clustered)")
    p.add_argument("--index-cache", default=None, metavar="DIR",
                   help="keep the built IVF-PQ index here between runs (default: a temp folder)")
    p.add_argument("--nlist", type=int, default=0, help="IVF-PQ lists (0: the default rule)")
    p.add_argument("--m", type=int, default=64, help="IVF-PQ sub-quantizers (bytes a caption)")
    p.add_argument("--nprobe", type=int, default=0, help="IVF-PQ lists visited (0: the default)")
    p.add_argument("--rerank", type=int, default=64, help="candidates re-scored exactly")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", nargs=3, metavar=("TASK", "VARIANT", "ROOT"), help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-stack-test", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        task, variant, root = args.child
        print(json.dumps(child(task, variant, root, args.repeats, args.before, args.cache_dir,
                               stack_test=not args.no_stack_test)))
        return 0
    from ..caption_index import IVFPQParams

    params = IVFPQParams(nlist=args.nlist, m=args.m, nprobe=args.nprobe, rerank=args.rerank)
    res = search_rows(Path(args.data), args.rows, args.repeats, args.before, args.ivfpq,
                      args.index_cache, params)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print("\n".join(format_rows(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
