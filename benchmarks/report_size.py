"""How large the HTML report is (``python -m falcon_core report``; the app's "Download the report").

    python -m benchmarks.report_size [--explain 3] [--features 512] [--cache DIR]

1. The demo world as explained so far (the ``--explain`` busiest features are explained first;
   explanations already in the cache are reused): the report as the command line writes it.
2. The demo world's 128 features and a model of ``--features`` features (512 by default): the
   demo world's explanations repeated as features 0..N-1, each given its own top images drawn at
   random from the 5,000 probe images (distinct top images: the most pictures a report of that
   many features can hold, and the report's size is mostly pictures). Only the list of
   explanations is made up; pictures, groups, the failure summary and the HTML are the report's
   own code on the demo world. (Explaining all 128 demo features for real: ``python -m
   falcon_core precompute`` first, then ``python -m falcon_core report``.)

Each row prints the size, the share of it that is pictures, the bytes per feature, and the size
against the demo world's report at the default options (the baseline of this run).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import time
from typing import Any


class _ManyFeatures:
    """The demo world's Falcon as if it had ``n`` features explained (see the module docstring);
    every other call goes to the real Falcon."""

    def __init__(self, falcon: Any, n: int, per_feature: int, seed: int = 0):
        self._falcon = falcon
        self.num_features = n
        real = list(falcon.explained().values())
        rng = random.Random(seed)
        self._done = {}
        for f in range(n):
            exp = dataclasses.replace(real[f % len(real)], features=[f])
            picks = rng.sample(range(falcon.num_images), min(per_feature, len(exp.high)))
            exp.high = [dataclasses.replace(r, index=i) for r, i in zip(exp.high, picks)]
            self._done[f] = exp

    def explained(self, settings=None):
        return dict(self._done)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._falcon, name)


def measure(falcon: Any, **options: Any) -> dict[str, Any]:
    from falcon_core.report import ReportOptions, build_report

    t0 = time.perf_counter()
    result = build_report(falcon, options=ReportOptions(explain_missing=False, **options))
    seconds = time.perf_counter() - t0
    pictures = sum(len(m) for m in re.findall(r"\.p\d+\{background-image:url\([^)]*\)\}",
                                              result.html))
    return {"bytes": result.size_bytes, "features": result.features,
            "pictures": result.pictures, "picture_bytes": pictures, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--explain", type=int, default=3,
                    help="explain at least this many features for real (the busiest first)")
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--cache", default=None, help="FALCON_CACHE folder (default: the usual)")
    args = ap.parse_args(argv)
    if not 1 <= args.features <= 100_000 or not 1 <= args.explain <= 128:
        ap.error("--features must be between 1 and 100000, --explain between 1 and 128")

    from falcon_core import Falcon, WorkspaceConfig

    import numpy as np

    falcon = Falcon.from_config(WorkspaceConfig.demo(), cache_dir=args.cache)
    t0 = time.perf_counter()
    n_high = np.asarray(falcon.feature_stats()["n_high"])
    busiest = [int(f) for f in np.argsort(-n_high, kind="stable")][:args.explain]
    result = falcon.precompute(busiest)
    print(f"demo world: {len(falcon.explained())} of {falcon.num_features} features explained "
          f"({sum(v is None for v in result.values())} of the {len(busiest)} busiest now or "
          f"before; {time.perf_counter() - t0:.0f} s)")

    rows = [("demo world, as explained so far", falcon, {}),
            (f"{falcon.num_features} features (the demo world's)",
             _ManyFeatures(falcon, falcon.num_features, 6), {}),
            (f"{args.features} features", _ManyFeatures(falcon, args.features, 6), {}),
            (f"{args.features} features, --images 3 --image-px 96",
             _ManyFeatures(falcon, args.features, 3), {"images": 3, "image_px": 96})]
    base = None
    print(f"{'report':<44} {'features':>8} {'pictures':>8} {'size':>9} {'pictures':>9} "
          f"{'per feature':>11} {'vs demo':>8} {'built in':>8}")
    for name, source, opts in rows:
        m = measure(source, **opts)
        base = base or m["bytes"]
        print(f"{name:<44} {m['features']:>8} {m['pictures']:>8} {m['bytes'] / 1e6:>7.2f}MB "
              f"{100 * m['picture_bytes'] / m['bytes']:>8.0f}% "
              f"{m['bytes'] / max(1, m['features']) / 1e3:>9.1f}kB {m['bytes'] / base:>7.2f}x "
              f"{m['seconds']:>7.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
