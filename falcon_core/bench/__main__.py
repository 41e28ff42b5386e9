"""``python -m falcon_core.bench <benchmark> ...``: recovery | timings | cache-verify | search |
speed | trust.

(The app's latency is measured next to the app: ``python -m benchmarks.app_latency``.)"""

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {"recovery": "recovery", "timings": "timings", "cache-verify": "cache_verify",
             "search": "search", "speed": "speed", "trust": "faithfulness"}
    if not argv or argv[0] not in names:
        print("usage: python -m falcon_core.bench {recovery,timings,cache-verify,search,speed,trust} "
              "[options]\n"
              "  recovery     does FALCON recover the demo world's known concepts?\n"
              "  timings      seconds per stage of one explanation, cold and warm\n"
              "  cache-verify what checking a cached file costs, against reading it\n"
              "  search       caption top-5 and caption text at LAION scale vs bare baselines\n"
              "  speed        issue 9's speed ratios, each against its bare baseline\n"
              "  trust        the faithfulness score's validation and the two demo backbones "
              "compared\n"
              "(the app's latency: python -m benchmarks.app_latency)",
              file=sys.stderr)
        return 2
    import importlib

    if argv[0] == "speed":
        from .speed import quiet_blas_reexec

        quiet_blas_reexec("falcon_core.bench", argv)
    module = importlib.import_module(f"falcon_core.bench.{names[argv[0]]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
