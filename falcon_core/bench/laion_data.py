"""LAION-format vocabularies made on this machine, for the search benchmarks and tests.

The published format: ``text_emb/text_emb_XXXX.npy`` (float16, ``(n, 512)``, L2-normalised) and
``metadata/metadata_XXXX.parquet`` (a ``caption`` column among others), paired by number.

Two kinds of embeddings:

* ``uniform``: random unit vectors. Enough to measure speed (every row costs the same), useless
  for recall (every point is about equally far from every other).
* ``clustered``: shaped like CLIP text embeddings, for recall: an anisotropic space (the variance
  of dimension j falls as 1/(j+1)^0.5, like the spectrum of CLIP embeddings), 2,000 topics of
  Zipf-distributed sizes, 16 sub-topics each, and a caption = its sub-topic + noise, normalised.
  Typical cosine between neighbours is high within a topic and low across, as with real captions.
  Queries (:func:`clustered_queries`) are new points of the same process moved by a fixed
  "modality gap" direction and noise, so that a query's best caption has a cosine of about 0.3-0.5,
  as CLIP image-to-text similarities do: a query is not itself a vocabulary row.

    python -m falcon_core.bench.laion_data /tmp/laion5m --rows 5000000 [--kind clustered]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

WORDS = ("red blue green small large old new wooden metal dog cat car house tree river "
         "mountain beach city street table chair flower bird horse boat train plane girl "
         "boy woman man child garden kitchen window door bridge road field forest sky sunset "
         "snow rain book lamp cup bottle guitar piano shoe dress hat bag phone computer").split()


class _Clustered:
    """The generating process of the ``clustered`` kind (same seed, same process)."""

    def __init__(self, dim: int, seed: int, topics: int = 2000, sub: int = 16):
        rng = np.random.default_rng(seed)
        self.dim, self.topics, self.sub = dim, topics, sub
        self.scale = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
        self.scale /= np.sqrt((self.scale ** 2).mean())
        self.centres = rng.standard_normal((topics, dim)).astype(np.float32)
        self.subs = (self.centres[:, None, :]
                     + 0.6 * rng.standard_normal((topics, sub, dim)).astype(np.float32))
        w = 1.0 / np.arange(1, topics + 1) ** 0.8
        self.weights = w / w.sum()
        gap = rng.standard_normal(dim).astype(np.float32)
        self.gap = gap / np.linalg.norm(gap)

    def sample(self, rng, n: int) -> np.ndarray:
        t = rng.choice(self.topics, size=n, p=self.weights)
        s = rng.integers(0, self.sub, size=n)
        x = self.subs[t, s] + 0.55 * rng.standard_normal((n, self.dim), dtype=np.float32)
        x *= self.scale
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def _unit(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _captions(rng, start: int, n: int) -> list[str]:
    w = np.asarray(WORDS, dtype=object)
    a, b, c = (w[rng.integers(0, len(WORDS), n)] for _ in range(3))
    return [f"a {x} {y} near the {z} {start + i}" for i, (x, y, z) in enumerate(zip(a, b, c))]


def make_laion(root: str | os.PathLike, rows: int, shard_rows: int = 1_000_000, dim: int = 512,
               kind: str = "uniform", seed: int = 0, first_shard: int = 0,
               verbose: bool = False) -> Path:
    """Write ``rows`` LAION-format rows into ``root`` (``text_emb/`` and ``metadata/``), in
    shards of ``shard_rows``. Existing complete shards are kept (rerun to resume)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    (root / "text_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    gen = _Clustered(dim, seed) if kind == "clustered" else None
    for s, start in enumerate(range(0, rows, shard_rows)):
        num = first_shard + s
        n = min(shard_rows, rows - start)
        ep = root / "text_emb" / f"text_emb_{num:04d}.npy"
        mp = root / "metadata" / f"metadata_{num:04d}.parquet"
        if ep.is_file() and mp.is_file():
            continue
        rng = np.random.default_rng([seed, num])
        emb = np.empty((n, dim), dtype=np.float16)
        for a in range(0, n, 100_000):  # bounded memory while generating
            b = min(n, a + 100_000)
            emb[a:b] = gen.sample(rng, b - a) if gen else _unit(rng, b - a, dim)
        tmp = ep.with_name(ep.name + ".tmp.npy")
        np.save(tmp, emb)
        del emb
        caps = _captions(rng, start, n)
        table = pa.table({"caption": caps, "url": [f"http://example.invalid/{start + i}.jpg"
                                                   for i in range(n)],
                          "similarity": np.full(n, 0.3, dtype=np.float64)})
        pq.write_table(table, mp)
        os.replace(tmp, ep)
        if verbose:
            print(f"  shard {num}: {n} rows", file=sys.stderr)
    return root


def clustered_queries(n: int, dim: int = 512, seed: int = 0, query_seed: int = 1) -> np.ndarray:
    """``n`` image-like queries for a ``clustered`` vocabulary made with ``seed``."""
    gen = _Clustered(dim, seed)
    rng = np.random.default_rng([seed, 10_000 + query_seed])
    x = gen.sample(rng, n)
    q = 0.45 * x + 0.8 * gen.gap + 0.4 * _unit(rng, n, dim)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def uniform_queries(n: int, dim: int = 512, seed: int = 1) -> np.ndarray:
    return _unit(np.random.default_rng([seed, 20_000]), n, dim)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m falcon_core.bench.laion_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--shard-rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--kind", choices=("uniform", "clustered"), default="uniform")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    make_laion(args.root, args.rows, args.shard_rows, args.dim, args.kind, args.seed,
               verbose=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
