"""``python -m falcon_core.demo build --seed N [--world CONFIG] [--out DIR] [--tiny] ...``,
``python -m falcon_core.demo prefill [--check]`` (the results shipped in ``assets/prefill/``)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import FalconError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m falcon_core.demo", description="The offline demo world.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the demo CLIP and both backbones and write them with a manifest")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--world", default=None, help="world config JSON (default: assets/world.json; 'alt': assets/world_alt.json)")
    b.add_argument("--out", default=None, help="output folder (default: assets/)")
    b.add_argument("--tiny", action="store_true", help="a tiny world and a few steps (a smoke test, seconds)")
    b.add_argument("--threads", type=int, default=2, help="torch threads (part of what makes the build reproducible)")
    settings = [("train-scenes", int), ("clip-scenes", int), ("eval-scenes", int), ("clip-eval-scenes", int),
                ("vocabulary", int), ("clip-steps", int), ("clip-batch", int), ("clip-lr", float), ("clip-visual-lr", float),
                ("clip-hard-negatives", float),
                ("backbone-steps", int), ("backbone-batch", int), ("backbone-lr", float), ("aux-weight", float)]
    for name, typ in settings:
        b.add_argument(f"--{name}", type=typ, default=None)
    i = sub.add_parser("info", help="print the manifest of the committed assets")
    i.add_argument("--dir", default=None)
    i.add_argument("--markdown", action="store_true", help="print the measured figures as Markdown (the README's tables)")
    i.add_argument("--write-readme", action="store_true",
                   help="rewrite the figure blocks of README.md and assets/README.md from the manifest")
    pf = sub.add_parser("prefill", help="compute the default demo world's shipped results again "
                        "(assets/prefill/: Stage 1, text embeddings, document frequencies, view "
                        "embeddings, captions, the Failures page's first explanations) after its models or the code "
                        "that computes them changed")
    pf.add_argument("--out", default=None, help="output folder (default: assets/prefill/)")
    pf.add_argument("--check", action="store_true",
                    help="only say which shipped results this checkout would use (exit 1 if any not)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "prefill":
            from . import prefill

            if args.check:
                got = prefill.check(args.out)
                for name, what in got.items():
                    print(f"{name:20s} {what}")
                return 0 if all(v == "usable" for v in got.values()) else 1
            from ..progress import tqdm_progress

            m = prefill.produce(args.out, progress=tqdm_progress())
            size = sum(e["stored_bytes"] for e in m["entries"].values())
            print(f"wrote {len(m['entries'])} results ({size / 1e6:.1f} MB) to "
                  f"{args.out or prefill.PREFILL_DIR} in {m['compute_seconds']} s")
            return 0
        if args.cmd == "build":
            from .build import build
            from .world import ASSETS_DIR

            overrides = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name, _ in settings}
            m = build(seed=args.seed, world=args.world, out=args.out or ASSETS_DIR, tiny=args.tiny,
                      threads=args.threads, **overrides)
            print(json.dumps({k: m[k] for k in ("seed", "world", "world_hash", "files", "sizes", "build_time")},
                             indent=2))
        elif args.cmd == "info":
            from .assets import read_manifest

            m = read_manifest(args.dir)
            if args.write_readme:
                from . import report
                from .world import ASSETS_DIR

                for rel, (name, fill) in report.README_BLOCKS.items():
                    path = ASSETS_DIR.parent / rel
                    path.write_text(report.replace_block(path.read_text(), name, fill(m)))
                    print(f"updated {path}")
            elif args.markdown:
                from .report import figures_markdown

                print(figures_markdown(m))
            else:
                print(json.dumps(m, indent=2))
    except FalconError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
