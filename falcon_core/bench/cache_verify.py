"""What verifying a cached file costs, against reading it.

    python -m falcon_core.bench cache-verify [--rows 50000] [--cols 2048] [--repeat 9] [--cold]

Writes a ``rows x cols`` float32 representation matrix (50,000 x 2,048: 400 MB) through
:class:`falcon_core.cache.DiskCache` (checksummed) and the same array with plain ``np.save``,
then reads both, alternating, ``--repeat`` times:

* ``plain read``: ``np.load`` of the plain file (what a cache without checks does);
* ``verified read``: ``DiskCache.read_npy`` — the same bytes read in 8 MB blocks, each hashed
  (xxh3-128) right after it is read, plus the header, length, shape and dtype checks;
* ``verified mmap``: ``DiskCache.read_npy(mmap=True)`` — the file mapped and hashed through the
  mapping (the pages it touches are then in memory for the reader);

and, inside the verified read's loop (the same blocks, timed call by call), the time spent hashing
against the time spent reading: the cost of the check itself, without what reading in blocks
instead of at once changes (``split``). It prints the median and best times and the cost of
verification as a ratio to the plain read:
``(verified - plain) / plain``, in wall-clock time and in CPU time of the process, all threads (the
second is what a busy shared machine disturbs least: time spent waiting for a core is not in it). ``--cold`` evicts both files from the page cache before each read
(``posix_fadvise(DONTNEED)``), which is what the first read after a restart sees; without it the
files are read from the page cache (the harder case for the check: reading is then a memory copy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xxhash

from falcon_core.cache import DiskCache


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _split(path: Path, nbytes: int) -> tuple[float, float]:
    """(seconds reading, seconds hashing) of one verified read, timed call by call: the loop of
    ``falcon_core.cache_format.read_npy`` (blocks of READ_BLOCK, each hashed right after it is read)."""
    from falcon_core.cache_format import READ_BLOCK

    read = hashing = 0.0
    with open(path, "rb", buffering=0) as f:
        head = f.read(128)
        out = np.empty(nbytes, np.uint8)
        mv = memoryview(out)
        h = xxhash.xxh3_128(head)
        pos = 0
        while pos < nbytes:
            t0 = time.perf_counter()
            got = f.readinto(mv[pos:pos + READ_BLOCK])
            t1 = time.perf_counter()
            h.update(mv[pos:pos + got])
            hashing += time.perf_counter() - t1
            read += t1 - t0
            pos += got
    return read, hashing


def measure(rows: int, cols: int, repeat: int, cold: bool, folder: Path) -> dict:
    cache = DiskCache(folder / "cache")
    arr = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    cache.write_npy("representations", "bench", arr)
    plain = folder / "plain.npy"
    np.save(plain, arr)
    verified = cache.path("representations", "bench", ".npy")
    hash_only = []
    flat = memoryview(arr.reshape(-1).view(np.uint8))
    for _ in range(3):
        t0 = time.perf_counter()
        xxhash.xxh3_128_digest(flat)
        hash_only.append(time.perf_counter() - t0)
    del arr, flat

    def timed(fn, path, kind):
        if cold:
            _evict(path)
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        assert out.shape == (rows, cols)
        del out
        times[kind].append(dt)
        cpu[kind].append(dc)

    kinds = ("plain read", "verified read", "verified mmap")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    split: list[float] = []
    for _ in range(repeat):  # alternate, so a busy machine slows all of them alike
        if cold:
            _evict(verified)
        r, hsh = _split(verified, rows * cols * 4)
        split.append(hsh / r)
        timed(lambda: np.load(plain), plain, "plain read")
        timed(lambda: cache.read_npy("representations", "bench", shape=(rows, cols),
                                     dtype=np.float32), verified, "verified read")
        timed(lambda: cache.read_npy("representations", "bench", mmap=True, shape=(rows, cols),
                                     dtype=np.float32), verified, "verified mmap")
    assert not cache.notices, cache.notices
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "rows": rows, "cols": cols, "megabytes": rows * cols * 4 / 1e6, "repeat": repeat,
        "page_cache": "cold" if cold else "warm",
        "median_s": med, "best_s": best, "cpu_median_s": cpu_med,
        "hash_alone_s": min(hash_only),
        "verify_cost_ratio_median": (med["verified read"] - med["plain read"]) / med["plain read"],
        "verify_cost_ratio_best": (best["verified read"] - best["plain read"]) / best["plain read"],
        "verify_cost_ratio_cpu": ((cpu_med["verified read"] - cpu_med["plain read"])
                                  / cpu_med["plain read"]),
        "mmap_verify_to_plain_read_median": med["verified mmap"] / med["plain read"],
        "hash_to_read_in_loop_median": statistics.median(split),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m falcon_core.bench cache-verify",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=50000)
    p.add_argument("--cols", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--cold", action="store_true", help="evict the files from the page cache "
                                                        "before each read")
    p.add_argument("--dir", default=None, help="folder for the test files (default: a temp "
                                               "folder, removed at the end)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        r = measure(args.rows, args.cols, max(1, args.repeat), args.cold, Path(d))
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['rows']} x {r['cols']} float32 ({r['megabytes']:.0f} MB), page cache "
          f"{r['page_cache']}, {r['repeat']} reads each, alternating")
    for k in ("plain read", "verified read", "verified mmap"):
        print(f"  {k:<14} median {r['median_s'][k] * 1e3:8.1f} ms   best "
              f"{r['best_s'][k] * 1e3:8.1f} ms   CPU (median) {r['cpu_median_s'][k] * 1e3:8.1f} ms")
    print(f"  xxh3-128 of the array alone (in memory): {r['hash_alone_s'] * 1e3:.1f} ms")
    print(f"verify/read, inside the verified read (hashing / reading the same blocks): "
          f"{r['hash_to_read_in_loop_median'] * 100:.1f} % (median)")
    print(f"verify/read: verification costs {r['verify_cost_ratio_median'] * 100:.1f} % of "
          f"reading in wall time (median; best {r['verify_cost_ratio_best'] * 100:.1f} %), "
          f"{r['verify_cost_ratio_cpu'] * 100:.1f} % in CPU time (median)")
    print(f"verified mmap (hash through the mapping) / plain read: "
          f"{r['mmap_verify_to_plain_read_median'] * 100:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
