"""Seconds per stage of one explanation: cold (empty cache) and warm (everything cached).

    python -m falcon_core.bench timings 7                       # demo world
    python -m falcon_core.bench timings 7 --backbone resnet18 --weights random \
        --clip ViT-B-32 --clip-pretrained random --probe DIR --vocabulary FILE

The cold run uses a fresh temporary cache folder, so it includes Stage 1 over the whole probe set
and the text embeddings of the whole vocabulary (both computed once per workspace); the warm run
repeats the same explanation in a new ``Falcon`` over the same cache (what a second visit costs).
The ratio warm/cold is printed, so figures from different machines compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from ..cli import _add_settings_args, _add_workspace_args, _settings, _workspace
from ..errors import FalconError


def _run(cfg, settings, cache_dir, features) -> tuple[float, dict[str, float], float]:
    from ..pipeline import Falcon

    t0 = time.perf_counter()
    falcon = Falcon.from_config(cfg, settings=settings, cache_dir=cache_dir)
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    falcon.explain(features)
    return time.perf_counter() - t1, dict(falcon.timings), load


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m falcon_core.bench timings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", nargs="+", type=int)
    p.add_argument("--json", action="store_true")
    _add_workspace_args(p)
    _add_settings_args(p)
    args = p.parse_args(argv)
    cfg, settings = _workspace(args), _settings(args)
    features = args.features if len(args.features) > 1 else args.features[0]
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="falcon-bench-")
    try:
        cold, cold_stages, cold_load = _run(cfg, settings, cache_dir, features)
        warm, warm_stages, warm_load = _run(cfg, settings, cache_dir, features)
    except FalconError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"workspace": cfg.to_dict(), "features": args.features,
              "load_models_s": {"cold": round(cold_load, 3), "warm": round(warm_load, 3)},
              "explain_s": {"cold": round(cold, 3), "warm": round(warm, 3),
                            "warm_over_cold": round(warm / cold, 4) if cold else None},
              "stages_cold_s": {k: round(v, 3) for k, v in sorted(cold_stages.items())},
              "stages_warm_s": {k: round(v, 3) for k, v in sorted(warm_stages.items())},
              "cache_dir": cache_dir}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"explain {args.features}: cold {cold:.2f} s, warm {warm:.3f} s "
          f"(warm/cold {warm / cold:.4f}); loading the models {cold_load:.2f} s")
    print(f"  {'stage':<32} {'cold s':>8} {'warm s':>8}")
    for stage in sorted(cold_stages):
        print(f"  {stage:<32} {cold_stages[stage]:>8.2f} {warm_stages.get(stage, 0.0):>8.3f}")
    return 0
