"""Command line: ``python -m falcon_core explain|groups|failures|precompute|info|report|compare``.

Runs the same pipeline as the app, without a browser. With no workspace flags it uses the offline
demo world.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import FalconError
from .report import groups_hint_text, input_notes
from .settings import HIGH_RULES, LIMITS, FalconSettings
from .workspace import WorkspaceConfig

STARTED = time.perf_counter()  # when the command started (main() sets it again)

WORKSPACE_HELP = {
    "backbone": "demo, resnet18, resnet50, or timm:<model name>",
    "weights": "imagenet, random, or a checkpoint file (state dict)",
    "layer": "module to explain (default: the pooled output before the head)",
    "token_pool": "ViT features: cls token or mean of patch tokens",
    "class_names": "classes of a checkpoint's head, in order: 'a,b,c', id=name pairs "
                   "('n02012849=crane,n03126707=crane'), or a file, one a line (name, id=name, "
                   "or ImageNet's 'n01440764 tench, ...'); labels are matched by id",
    "clip": "demo or an open_clip model name (e.g. ViT-B-32)",
    "clip_pretrained": "open_clip pretrained tag (e.g. openai) or a local checkpoint file",
    "probe": "demo, cifar10, stl10, imagenette, or an image folder",
    "vocabulary": "demo, a caption file (one per line), or laion:<folder of shards>",
    "world": "demo world config (default: assets/world.json)",
    "seed": "demo probe set seed",
    "probe_size": "demo probe set size",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_workspace_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workspace (default: the offline demo world)")
    for f in dataclasses.fields(WorkspaceConfig):
        kind = int if f.name in ("seed", "probe_size") else str
        g.add_argument(_flag(f.name), dest=f"ws_{f.name}", type=kind, default=None,
                       help=WORKSPACE_HELP.get(f.name))
    g.add_argument("--cache-dir", default=None,
                   help="cache folder (default: $FALCON_CACHE or ~/.cache/falcon)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where Stage 1, text embeddings, the precompute and index parts run: "
                        "in this process (default) or on Ray")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster to use with --engine ray (default: $RAY_ADDRESS, else a "
                        "local Ray on this machine's cores)")


def _add_settings_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("settings (defaults: the authors')")
    defaults = FalconSettings()
    for f in dataclasses.fields(FalconSettings):
        default = getattr(defaults, f.name)
        limit = LIMITS.get(f.name)
        allowed = f"; {limit.describe()}" if limit is not None and limit.choices is None else ""
        help_text = f"{limit.what if limit else ''}{allowed} [default: {default}]"
        if f.name in ("high_rule", "top_k"):
            help_text += " (demo backbone: topk, 20)"
        if isinstance(default, bool):
            g.add_argument(_flag(f.name), dest=f"set_{f.name}", default=None,
                           action=argparse.BooleanOptionalAction, help=help_text)
        elif f.name == "high_rule":
            g.add_argument("--rule", _flag(f.name), dest=f"set_{f.name}", choices=HIGH_RULES,
                           default=None, help=help_text)
        elif limit is not None and limit.choices is not None:  # caption_index, low_rule, ...
            g.add_argument(_flag(f.name), dest=f"set_{f.name}", choices=limit.allowed(),
                           default=None, help=help_text)
        elif f.name == "low_threshold":
            g.add_argument("--epsilon", _flag(f.name), dest=f"set_{f.name}", type=float,
                           default=None, help=help_text)
        else:
            g.add_argument(_flag(f.name), dest=f"set_{f.name}", type=type(default),
                           default=None, help=help_text)


def _common(p: argparse.ArgumentParser) -> None:
    _add_workspace_args(p)
    _add_settings_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m falcon_core",
        description="FALCON: explain the features of a vision model in words. "
                    "With no workspace flags, everything runs on the offline demo world.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("explain", help="explain a feature, or a group of features together",
                       description="Explain a feature (one index) or a group (several indices: "
                                   "explained together, as in Stage 8).")
    p.add_argument("features", nargs="+", type=int, help="feature index, or several for a group")
    p.add_argument("--out", help="also save the explanation to this file (.json or .csv)")
    p.add_argument("--timings", action="store_true", help="print the seconds spent per stage")
    _common(p)

    p = sub.add_parser("groups", help="discover groups of features (Stage 8)",
                       description="Groups: images whose set of high features is the same.")
    p.add_argument("--limit", type=int, default=20, help="show at most this many groups")
    p.add_argument("--explain", type=int, default=0, metavar="N",
                   help="also explain the N largest groups (coherence, concepts)")
    _common(p)

    p = sub.add_parser("failures", help="explain a classifier's mistakes (Stage 9)",
                       description="List misclassified probe images, or explain one of them "
                                   "through the features that drove the wrong prediction.")
    p.add_argument("--image", type=int, default=None, help="probe image index to explain")
    p.add_argument("--top", type=int, default=3, help="features per side")
    p.add_argument("--limit", type=int, default=20,
                   help="list at most this many failures (0: all)")
    _common(p)

    p = sub.add_parser("precompute", help="explain many features ahead (resumable)")
    p.add_argument("--features", type=int, nargs="*", default=None,
                   help="feature indices (default: all)")
    _common(p)

    p = sub.add_parser("info", help="describe the workspace and what is cached")
    _common(p)

    p = sub.add_parser("report", help="write a self-contained HTML report to hand out",
                       description="One HTML file (images inlined, no network) with the "
                                   "workspace, every feature explained so far sorted by "
                                   "coherence, the discovered groups and the failure summary.")
    p.add_argument("--out", required=True, help="the HTML file to write, e.g. model.html")
    p.add_argument("--images", type=int, default=6, help="highly activating images per feature")
    p.add_argument("--image-px", type=int, default=128,
                   help="longest side of each picture in the file, in pixels")
    p.add_argument("--no-explain", action="store_true",
                   help="use only cached explanations (by default the features that drive the "
                        "most common failures and the largest groups are explained first)")
    _common(p)

    p = sub.add_parser("index", help="build the IVF-PQ caption index of a vocabulary (LAION)",
                       description="Build (or finish building: it resumes) the IVF-PQ index that "
                                   "--caption-index ivfpq searches, once per CLIP model and "
                                   "vocabulary. Zero means: chosen from the vocabulary's size.")
    p.add_argument("action", choices=("build",))
    p.add_argument("--nlist", type=int, default=0,
                   help="inverted lists (0: 4·sqrt(rows) as a power of two)")
    p.add_argument("--m", type=int, default=64, help="PQ bytes a caption (divides the width)")
    p.add_argument("--no-opq", action="store_true", help="no OPQ rotation before PQ")
    p.add_argument("--train-rows", type=int, default=0, help="rows sampled to train")
    p.add_argument("--part-rows", type=int, default=1_000_000,
                   help="rows added per part (the unit of resuming and of Ray tasks)")
    p.add_argument("--nprobe", type=int, default=0, help="lists visited per query (0: nlist/128, at least 8)")
    p.add_argument("--rerank", type=int, default=0,
                   help="candidates per query scored exactly (0: the default)")
    _common(p)

    p = sub.add_parser(
        "compare", help="compare two models on the same probe set, CLIP and vocabulary",
        description="Model A is the workspace (--backbone ...), model B the same workspace with "
                    "another backbone (--backbone-b ...). Fits the linear map between the two "
                    "representations (ridge, held-out R²) and summarises the concepts one model "
                    "encodes and the other does not. With --feature (or --feature-b): that "
                    "feature's best matches in the other model, both explanations side by side.")
    g = p.add_argument_group("model B (default: model A's value)")
    for name in COMPARE_B_FIELDS:
        g.add_argument(_flag(name) + "-b", dest=f"b_{name}", default=None,
                       help=WORKSPACE_HELP.get(name))
    p.add_argument("--feature", type=int, default=None, help="a feature of A: its matches in B")
    p.add_argument("--feature-b", type=int, default=None, help="a feature of B: its matches in A")
    p.add_argument("--features", type=int, nargs="*", default=None,
                   help="features explained for the summary, on both sides (default: all)")
    p.add_argument("--top", type=int, default=3, help="matches per feature")
    _common(p)
    return parser


# The fields of a workspace that say which model it is (model B's flags: --backbone-b, ...).
COMPARE_B_FIELDS = ("backbone", "weights", "layer", "token_pool", "class_names")


def _workspace(args) -> WorkspaceConfig:
    changes = {k[3:]: v for k, v in vars(args).items() if k.startswith("ws_") and v is not None}
    return WorkspaceConfig(**changes)


def _settings(args) -> FalconSettings:
    """The workspace's default settings (the authors', or top-k on the demo) with the flags."""
    changes = {k[4:]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None}
    return _workspace(args).default_settings().replace(**changes)


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _engine(args):
    from .engines import create_engine

    return create_engine(getattr(args, "engine", "local"), getattr(args, "ray_address", None))


def _falcon(args):
    from .pipeline import Falcon
    from .progress import null_progress, tqdm_progress

    progress = null_progress if args.no_progress else tqdm_progress()
    falcon = Falcon.from_config(_workspace(args), settings=_settings(args),
                                cache_dir=args.cache_dir, progress=progress,
                                engine=_engine(args))
    # damaged cache files moved aside, a cache folder that cannot be written: said once each
    falcon.cache.on_notice = _note
    for text in falcon.cache.notices:
        _note(text)
    for text in (getattr(falcon.vocabulary, "report", None) or {}).get("notes", []):
        _note(text)
    return falcon


def _save(path: str, text: str, what: str = "the result") -> int:
    """Write an export (atomically) and say where it went (the full path); on failure say why
    and what to do. Returns the exit code."""
    from .cache_format import atomic_write

    out = Path(path).expanduser()
    data = text.encode("utf-8")
    try:
        if not out.parent.is_dir():
            what = ("is a file, not a folder" if out.parent.exists() else "does not exist")
            raise FalconError(f"Cannot save to {path}: the folder {out.parent} {what}.",
                              "Create the folder first, or give --out a path in an existing "
                              "folder. The result is printed above.")
        if out.is_dir():
            raise FalconError(f"Cannot save to {path}: it is a folder.",
                              "Give --out a file name ending in .json or .csv.")
        atomic_write(out, lambda f: f.write(data))
    except FalconError as e:
        print(f"error: {e.message}", file=sys.stderr)
        print(f"what to do: {e.hint}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot save to {path}: {e.strerror or e}.", file=sys.stderr)
        print("what to do: give --out a path you can write to (and a disk with room). "
              "The result is printed above.", file=sys.stderr)
        return 2
    print(f"saved {what} to {_where(out)}", file=sys.stderr)
    return 0


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.3f}"


def format_explanation(exp, input_notes: Sequence[str] = ()) -> str:
    """The explanation as the command line's table; ``input_notes``: what to know about the
    inputs (unreadable images, what the vocabulary's cleaning dropped), as the JSON has them."""
    lines = [f"FALCON explanation of {exp.label}",
             f"  high images: {exp.high_selection['description']}",
             f"  counterfactuals: {exp.low_selection['description']}",
             f"  coherence: {_fmt(exp.coherence)} "
             f"({'interpretable' if exp.interpretable else 'below the threshold'})"]
    from .faithfulness_view import concept_auc, summary_line

    lines.append(f"  {summary_line(exp)}")
    removed = exp.spurious_words + exp.spurious_phrases
    for title, items in (("words", exp.words), ("phrases", exp.phrases),
                         ("removed as spurious", removed)):
        lines.append(f"\n  {title:<28} {'T score':>8} {'L score':>8} {'faithful':>8}")
        for c in items:
            lines.append(f"  {c.text:<28} {c.score:>8.3f} {c.l_score:>8.3f} "
                         f"{concept_auc(exp, c.text):>8}")
        if not items:
            lines.append("  (none)")
    lines.append("\n  highly activating images (crop box in the backbone's view):")
    for r in exp.high[:10]:
        caps = "; ".join(c.text for c in r.captions[:2])
        lines.append(f"    {r.id:<24} act {r.activation:.3f} box {r.box}"
                     f"{' (whole image)' if r.box_fallback else ''}  {caps[:80]}")
    if len(exp.high) > 10:
        lines.append(f"    ... and {len(exp.high) - 10} more")
    for note in list(exp.notes) + list(input_notes):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def _where(path: Path) -> str:
    return str(path.resolve())


def _cmd_explain(args) -> int:
    falcon = _falcon(args)
    loaded = time.perf_counter()
    features = args.features if len(args.features) > 1 else args.features[0]
    exp = falcon.cached_explanation(features)
    cached = exp is not None
    if exp is None:
        exp = falcon.explain(features)
    done = time.perf_counter()
    note = sys.stderr if args.json else sys.stdout
    if args.json:
        print(exp.to_json())
    else:
        print(format_explanation(exp, input_notes(falcon)))
    total = done - STARTED
    if cached:
        print(f"\n  (from the cache: {done - loaded:.2f} s; {total:.1f} s in all, "
              f"{loaded - STARTED:.1f} s of it loading the models and data)", file=note)
    else:
        print(f"\n  (explained in {done - loaded:.1f} s; {total:.1f} s in all, with "
              f"{loaded - STARTED:.1f} s loading the models and data)", file=note)
    sys.stdout.flush()
    if args.timings:
        for stage, sec in sorted(falcon.timings.items()):
            print(f"  {stage:<32} {sec:8.2f} s", file=sys.stderr)
        print(f"  {'total':<32} {done - loaded:8.2f} s", file=sys.stderr)
    if args.out:  # after printing: a path that cannot be written loses nothing
        csv = Path(args.out).suffix.lower() == ".csv"
        return _save(args.out, exp.to_csv() if csv else exp.to_json(),
                     "the concepts (CSV)" if csv else "the explanation (JSON)")
    return 0


def _cmd_groups(args) -> int:
    falcon = _falcon(args)
    groups = falcon.groups()
    s = falcon.settings
    rule = {"global": f"features above α = {falcon.alpha:.4f}",
            "topk": f"features whose top {s.top_k} images hold the image",
            "quantile": f"features above their own {s.quantile:g} quantile"}[s.high_rule]
    rows: list[dict[str, Any]] = []
    for n, g in enumerate(groups[: args.limit]):
        row: dict[str, Any] = {"features": list(g.features), "images": int(len(g.indices))}
        if n < args.explain:
            exp, err = falcon.try_explain(list(g.features))
            row["coherence"] = None if exp is None or exp.coherence != exp.coherence else exp.coherence
            row["interpretable"] = bool(exp.interpretable) if exp else False
            row["words"] = [c.text for c in exp.words] if exp else []
            if err:
                row["error"] = err
        rows.append(row)
    if args.json:
        out = {"rule": rule, "alpha": falcon.alpha, "total": len(groups), "groups": rows}
        if not groups:
            out["hint"] = falcon.groups_hint()
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(groups)} groups with at least {falcon.settings.group_min_images} images "
          f"(signatures: {rule}); showing {len(rows)}")
    if not groups:
        print("  " + groups_hint_text(falcon.groups_hint(), falcon.settings))
    for row in rows:
        extra = ""
        if "coherence" in row:
            extra = f"  coherence {_fmt(row['coherence'] if row['coherence'] is not None else float('nan'))}  " \
                    + ", ".join(row["words"][:5])
        print(f"  {str(row['features']):<24} {row['images']:>6} images{extra}")
    return 0


def _cmd_failures(args) -> int:
    falcon = _falcon(args)
    if args.image is None:
        fails = falcon.failures()
        shown = fails if args.limit <= 0 else fails[: args.limit]
        if args.json:
            print(json.dumps({"accuracy": falcon.accuracy(), "failures": shown,
                              "total": len(fails)}, indent=2))
            return 0
        print(f"accuracy {falcon.accuracy():.3f}; {len(fails)} misclassified probe images"
              + (f"; showing {len(shown)} of {len(fails)} (--limit N for more, --limit 0 for all)"
                 if len(shown) < len(fails) else ""))
        for f in shown:
            print(f"  {f['index']:>6}  {f['id']:<24} true {f['true_name']:<16} "
                  f"predicted {f['predicted_name']}")
        if fails:
            print(f"\n  why one was misclassified: failures --image {fails[0]['index']}")
        return 0
    fx = falcon.explain_failure(args.image, k=args.top)
    if args.json:
        print(json.dumps(fx.to_dict(), indent=2))
        return 0
    correct = fx.true_class >= 0 and fx.true_class == fx.predicted_class
    verdict = ("correctly classified" if correct else
               "misclassified" if fx.true_class >= 0 else "true class unknown")
    print(f"image {fx.index} ({fx.id}): true {fx.true_name}, predicted {fx.predicted_name}: "
          f"{verdict}")
    sides = [("toward the prediction", fx.toward_predicted)]
    if not correct:
        sides.append(("toward the true class", fx.toward_true))
    for title, side in sides:
        print(f"\n  features {title}:")
        for it in side:
            exp = it["explanation"]
            words = ", ".join(c.text for c in exp.words[:6]) if exp else f"({it['error']})"
            print(f"    feature {it['feature']:>5}  contribution {it['contribution']:+.3f}  {words}")
    if correct:
        print("\n  (the classifier gets this image right; `failures` lists the ones it gets wrong)")
    return 0


def _cmd_precompute(args) -> int:
    falcon = _falcon(args)
    result = falcon.engine.precompute(falcon, args.features)
    ok = sum(v is None for v in result.values())
    failed = {k: v for k, v in result.items() if v}
    if args.json:
        print(json.dumps({"explained": ok, "total": len(result),
                          "errors": {str(k): v for k, v in failed.items()}}, indent=2))
    else:
        where = (f"cache at {falcon.cache.root}" if falcon.cache.problem is None else
                 "not kept: the cache folder cannot be written")
        print(f"explained {ok} of {len(result)} features; {where}")
        # why the others have no explanation: each reason once, with the features it concerns
        by_reason: dict[str, list[int]] = {}
        for f, msg in failed.items():
            reason = re.sub(rf"\bfeature {f}\b", "the feature", msg.split("\n")[0])
            reason = reason.replace(" for the feature:", ":")
            by_reason.setdefault(reason, []).append(f)
        for msg, feats in by_reason.items():
            shown = ", ".join(map(str, feats[:10])) + (" ..." if len(feats) > 10 else "")
            print(f"  {len(feats)} without an explanation (features {shown}): {msg}")
        hints = {m.split("What to do: ", 1)[1] for m in failed.values() if "What to do: " in m}
        for h in sorted(hints):
            print(f"  what to do: {h}")
    if result and not ok:
        print(f"error: none of the {len(result)} features could be explained (reasons above).",
              file=sys.stderr)
        return 1
    return 0


def _cmd_info(args) -> int:
    falcon = _falcon(args)
    status = falcon.status()
    skipped: dict[int, str] = {}
    if status["representations"]:
        # read the cached Stage 1 (verified): it records the images that could not be read
        skipped = falcon.skipped_images
    describe = falcon.describe()  # after Stage 1, so the probe's bad_images are filled in
    info = {"workspace": describe, "status": status,
            "skipped_images": {str(falcon.probe.ids[i]): msg for i, msg in sorted(skipped.items())},
            "num_features": falcon.num_features, "num_images": falcon.num_images}
    if falcon.cache.problem is not None:
        info["cache_problem"] = str(falcon.cache.problem)
    print(json.dumps(info, indent=2, default=str))
    return 0


def _cmd_report(args) -> int:
    from .report import ReportOptions, write_report

    if args.images < 0 or not 16 <= args.image_px <= 1024:
        raise FalconError("--images must be 0 or more and --image-px between 16 and 1024.")
    falcon = _falcon(args)
    opts = ReportOptions(images=args.images, image_px=args.image_px,
                         explain_missing=not args.no_explain)
    result = write_report(falcon, args.out, options=opts)
    out = Path(args.out)
    if args.json:
        print(json.dumps({"path": _where(out), "bytes": result.size_bytes,
                          "features": result.features, "pictures": result.pictures}, indent=2))
    else:
        print(f"wrote the report to {_where(out)} ({result.size_bytes / 1e6:.2f} MB: "
              f"{result.features} of {falcon.num_features} features explained so far, "
              f"{result.pictures} pictures)")
        if result.features < falcon.num_features:
            print("  to include every feature: python -m falcon_core precompute, then report "
                  "again")
    return 0


def _cmd_index(args) -> int:
    from . import caption_index as ci
    from .cache import DiskCache
    from .data.vocabulary import text_embeddings
    from .progress import null_progress, tqdm_progress

    progress = null_progress if args.no_progress else tqdm_progress()
    bounds = {"nlist": (0, 1 << 20), "m": (1, 1024), "train_rows": (0, 100_000_000),
              "part_rows": (1000, 100_000_000), "nprobe": (0, 1 << 20), "rerank": (0, 100_000)}
    for name, (lo, hi) in bounds.items():
        value = getattr(args, name)
        if not lo <= value <= hi:
            raise FalconError(f"--{name.replace('_', '-')} {value} is out of range.",
                              f"Give a value between {lo} and {hi} (0 where allowed: chosen "
                              "from the vocabulary's size).")
    ws = _workspace(args)
    clip, vocab = ws.build_clip(), ws.build_vocabulary()
    cache = DiskCache(args.cache_dir, on_notice=_note)  # damaged files moved aside: said once
    engine = _engine(args)
    if hasattr(vocab, "use_cache"):
        vocab.use_cache(cache)
    t0 = time.perf_counter()
    A = text_embeddings(vocab, clip, cache, progress=progress,
                        engine=None if engine.name == "local" else engine, config=ws)
    params = ci.IVFPQParams(nlist=args.nlist, m=args.m, opq=not args.no_opq,
                            train_rows=args.train_rows, part_rows=args.part_rows,
                            nprobe=args.nprobe, rerank=args.rerank or ci.IVFPQParams.rerank)
    index = ci.build_ivfpq(A, cache, ci.embeddings_id(vocab, clip, A.shape[1]), params,
                           progress=progress, engine=None if engine.name == "local" else engine)
    info = {**index.describe(), "seconds": round(time.perf_counter() - t0, 1),
            "disk_bytes": ci.index_disk_bytes(index)}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"IVF-PQ index of {info['rows']} captions: nlist {info['nlist']}, m {info['m']}, "
              f"nprobe {info['nprobe']}, rerank {info['rerank']}; "
              f"{info['disk_bytes'] / 1e6:.1f} MB on disk, {info['seconds']} s; {info['path']}")
        print("search it with --caption-index ivfpq")
    return 0


def _cmd_compare(args) -> int:
    from .compare import Comparison, format_summary
    from .progress import null_progress, tqdm_progress

    config_a = _workspace(args)
    changes = {k[2:]: v for k, v in vars(args).items() if k.startswith("b_") and v is not None}
    if not changes:
        raise FalconError("Model B is the same as model A.",
                          "Give model B with --backbone-b (and --weights-b, --layer-b, ...).")
    config_b = config_a.replace(**changes)
    settings_b = config_b.default_settings().replace(
        **{k[4:]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None})
    progress = null_progress if args.no_progress else tqdm_progress()
    cmp = Comparison.from_configs(config_a, config_b, _settings(args), settings_b,
                                  cache_dir=args.cache_dir, progress=progress)
    for f in cmp.falcons.values():
        f.cache.on_notice = _note
    if args.feature is not None or args.feature_b is not None:
        side, feature = ("a", args.feature) if args.feature is not None else ("b", args.feature_b)
        view = cmp.side_by_side(side, feature, args.top)
        if args.json:
            print(json.dumps(_side_by_side_dict(cmp, view), indent=2))
        else:
            print(format_side_by_side(cmp, view))
        return 0
    summary = cmp.summary(args.features, args.features)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else format_summary(summary))
    return 0


def _side_by_side_dict(cmp, view) -> dict[str, Any]:
    other = cmp.other(view["side"])
    return {"model": cmp.names[view["side"]], "other_model": cmp.names[other],
            **view["match"].to_dict(),
            "explanation": view["explanation"].to_dict() if view["explanation"] else None,
            "error": view["error"],
            "matches": {str(j): (e.to_dict() if e else {"error": err})
                        for j, (e, err) in view["others"].items()}}


def format_side_by_side(cmp, view) -> str:
    from .faithfulness_view import summary_line

    side, other = view["side"], cmp.other(view["side"])
    m = view["match"]

    def words(exp, err) -> str:
        if exp is None:
            return f"(no explanation: {err})"
        kept = ", ".join(c.text for c in exp.words[:6]) or "(no concepts kept)"
        removed = ", ".join(c.text for c in exp.spurious_words[:4])
        return kept + (f"  [removed: {removed}]" if removed else "")

    lines = [f"Feature {m.feature} of {cmp.names[side]}: "
             f"{words(view['explanation'], view['error'])}"]
    if view["explanation"] is not None:
        lines.append(f"  {summary_line(view['explanation'])}")
    lines.append(f"  {cmp.names[other]} predicts it with held-out R² {_fmt(m.r2)} (ridge map)")
    for title, items, what in (("by the map", m.by_map, "weight"),
                               ("by activation correlation", m.by_correlation, "r")):
        lines.append(f"\n  best matches in {cmp.names[other]} {title}:")
        for j, v in items:
            exp, err = view["others"][j]
            lines.append(f"    feature {j:>5}  {what} {v:+.3f}  {words(exp, err)}")
    return "\n".join(lines)


COMMANDS = {"explain": _cmd_explain, "groups": _cmd_groups, "failures": _cmd_failures,
            "precompute": _cmd_precompute, "info": _cmd_info, "report": _cmd_report,
            "index": _cmd_index, "compare": _cmd_compare}


def main(argv: Sequence[str] | None = None) -> int:
    global STARTED
    STARTED = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FalconError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"what to do: {e.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are cached; run again to resume.", file=sys.stderr)
        return 130
    except OSError as e:  # a folder that cannot be used (the demo world's files, a download)
        from .cache import cache_problem, default_cache_root

        root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_root()
        name = str(getattr(e, "filename", "") or "")
        if name and (name == str(root) or name.startswith(str(root) + "/")):
            err = cache_problem(root, e, kept_in_memory=False)
            print(f"error: {err.message}", file=sys.stderr)
            print(f"what to do: {err.hint}", file=sys.stderr)
        else:
            print(f"error: {e.strerror or e}" + (f": {name}" if name else ""), file=sys.stderr)
            print("what to do: check that the path exists and can be read (and written, for "
                  "the cache folder).", file=sys.stderr)
        return 2
