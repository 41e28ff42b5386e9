"""The demo assets' measured figures as Markdown, printed from ``demo_manifest.json``.

The README's figures are never copied by hand: ``python -m falcon_core.demo info --markdown``
prints them and ``python -m falcon_core.demo info --write-readme`` rewrites the blocks between the
``<!-- demo-figures: begin -->`` / ``<!-- demo-figures: end -->`` markers of ``assets/README.md``
(and ``demo-summary`` in ``README.md``), so a rebuild that changes a figure changes the README in
the same diff.

Issue 7's targets for the demo CLIP (after the float16 round trip, on held-out scenes):
crop->caption top-1 >= 0.9 for shape, colour, pattern and size; whole-scene background >= 0.95;
for every shape and every background, "named when absent" <= 0.05.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import FalconError

CROP_TARGET = 0.9
BACKGROUND_TARGET = 0.95
ABSENT_TARGET = 0.05
CROP_ATTRIBUTES = ("shape", "color", "pattern", "size")
CROP_KINDS = {"gradcam": "GradCAM-like box", "tight": "tight (median Stage 3 box)", "margin": "35 % margin"}
ABSENT_KINDS = {"scene": "whole scenes", "gradcam_crop": "GradCAM-like crops"}


def targets(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's CLIP targets against the manifest ``m``: one row per target with ``figure``,
    ``value``, ``target`` (text), ``met`` and ``gap`` (how far the value is from the target; 0 when
    met). Crop figures use the GradCAM-like boxes (the crops Stage 3 makes); "named when absent"
    is checked for whole scenes and for GradCAM-like crops (its worst shape and background)."""
    c = m["clip"]
    rows = []
    for a in CROP_ATTRIBUTES:
        v = c["crop_top1"]["gradcam"][a]
        rows.append({"figure": f"crop top-1, {a}", "value": v, "target": f">= {CROP_TARGET}",
                     "met": v >= CROP_TARGET, "gap": round(max(0.0, CROP_TARGET - v), 4)})
    v = c["scene_top1"]["background"]
    rows.append({"figure": "scene top-1, background", "value": v, "target": f">= {BACKGROUND_TARGET}",
                 "met": v >= BACKGROUND_TARGET, "gap": round(max(0.0, BACKGROUND_TARGET - v), 4)})
    for kind, label in ABSENT_KINDS.items():
        n = c["named_when_absent"][kind]
        rows.append({"figure": f"named when absent, max over shapes x backgrounds, {label} ({n['worst']})",
                     "value": n["max"], "target": f"<= {ABSENT_TARGET}", "met": n["max"] <= ABSENT_TARGET,
                     "gap": round(max(0.0, n["max"] - ABSENT_TARGET), 4)})
    return rows


def planted_absent(m: dict[str, Any], kind: str = "scene") -> list[dict[str, Any]]:
    """For each planted ``shape -> background`` correlation: the "named when absent" rate of the
    shape on its correlated background and its mean over the other backgrounds (an unbiased CLIP
    names an absent shape no more often on the background it is planted on)."""
    rates = m["clip"]["named_when_absent"][kind]["rates"]
    out = []
    for p in m["backbone"]["planted"]:
        src, dst = (s.strip() for s in p["correlation"].split("->"))
        (a1, shape), (a2, bg) = src.split("=", 1), dst.split("=", 1)
        if (a1, a2) != ("shape", "background") or shape not in rates:
            continue
        others = [r for b, r in rates[shape].items() if b != bg and r is not None]
        out.append({"shape": shape, "background": bg, "on_planted": rates[shape].get(bg),
                    "elsewhere": round(sum(others) / len(others), 4) if others else None})
    return out


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _clear_features(b: dict[str, Any]) -> str:
    n = round(b["heldout_clear_share"] * b["meta"]["num_features"])
    return f"{n} ({', '.join(f'{a} {k}' for a, k in b['heldout_clear_by_attribute'].items())})"


def build_time_line(m: dict[str, Any]) -> str:
    t = m.get("build_time") or {}
    s = t.get("seconds") or {}
    if "total" not in s:
        return "Build time: not recorded."
    phases = ", ".join(f"{k.replace('_', ' ')} {v / 60:.1f}" for k, v in s.items() if k != "total")
    cpu = f", {t['cpu_seconds'] / 60:.0f} CPU-minutes" if t.get("cpu_seconds") is not None else ""
    load = f", load average {t['load_average_at_end'][0]} at the end" if t.get("load_average_at_end") else ""
    return (f"Build time: {s['total'] / 60:.0f} min wall on {t.get('cpus')} cores, {t.get('threads')} torch threads"
            f"{cpu}{load} (minutes: {phases}).")


def figures_markdown(m: dict[str, Any]) -> str:
    """The full block for ``assets/README.md``: targets, crop and scene accuracy, named-when-absent
    tables, GradCAM crops, both backbones with their planted reliance, build time."""
    c = m["clip"]
    st = m["settings"]
    out = [f"Seed {m['seed']}, world `{m['world']}` ({m['world_hash'][:12]}), CLIP {st['clip_steps']} steps of "
           f"{st['clip_batch']} pairs from {c['train_scenes']} uncorrelated scenes; measured on "
           f"{c['images']} held-out uncorrelated scenes against the app's {c['vocabulary_captions']} "
           f"vocabulary captions.", "",
           "| issue 7 target | measured | target | met |", "|---|---|---|---|"]
    for r in targets(m):
        out.append(f"| {r['figure']} | {_f(r['value'])} | {r['target']} | {'yes' if r['met'] else 'no'} |")
    out += ["", "| crop top-1 | " + " | ".join(CROP_ATTRIBUTES) + " |", "|---|" + "---|" * len(CROP_ATTRIBUTES)]
    for k, label in CROP_KINDS.items():
        out.append(f"| {label} | " + " | ".join(_f(c["crop_top1"][k][a]) for a in CROP_ATTRIBUTES) + " |")
    g = c["gradcam_crops"]
    out += ["", f"Whole scenes: background top-1 {_f(c['scene_top1']['background'])}, shape top-1 "
                f"{_f(c['scene_top1']['shape'])}. The default backbone's real GradCAM crops ({g['features']} clear "
                f"shape features x their 10 most activating held-out scenes = {g['crops']} crops): shape top-1 "
                f"{_f(g['shape_top1'])}; box side / object diameter (5/25/50/75/95 %) "
                f"{' / '.join(f'{q:.2f}' for q in g['box_side_over_object_diameter_quantiles_5_25_50_75_95'])}.", ""]
    for kind, label in ABSENT_KINDS.items():
        n = c["named_when_absent"][kind]
        bgs = list(next(iter(n["rates"].values())))
        out += [f"Named when absent (top-{n['k']} captions name the shape, no object has it), {label}: "
                f"max {_f(n['max'])} ({n['worst']}).", "",
                "| shape | " + " | ".join(bgs) + " |", "|---|" + "---|" * len(bgs)]
        for s, row in n["rates"].items():
            out.append(f"| {s} | " + " | ".join(_f(row[b]) for b in bgs) + " |")
        out.append("")
    pa = planted_absent(m)
    if pa:
        out += ["Planted shape -> background, whole scenes without the shape: named on the planted background "
                "vs elsewhere (mean): " + "; ".join(f"{p['shape']} on {p['background']} {_f(p['on_planted'])} vs "
                                                    f"{_f(p['elsewhere'])}" for p in pa) + ".", ""]
    planted = m["backbone"]["planted"]
    out += ["| backbone | held-out accuracy | clear features | " +
            " | ".join(p["correlation"].replace("->", "→") for p in planted) + " |",
            "|---|---|---|" + "---|" * len(planted)]
    for key in ("backbone", "backbone_uncorrelated"):
        b = m.get(key)
        if b is None:
            continue
        cells = [f"{_f(p['mean_target_auc_without_source'])} ({len(p['source_clear_features'])})" for p in b["planted"]]
        out.append(f"| `{b['file']}` | {_f(b['heldout_acc'])} | {_clear_features(b)} | " + " | ".join(cells) + " |")
    out += ["", "Planted columns: mean ROC AUC of the source's clear features for the target, over held-out "
                "scenes without the source (number of such features); 0.5 = the features ignore the target.", "",
            build_time_line(m)]
    return "\n".join(out)


def summary_markdown(m: dict[str, Any]) -> str:
    """The short paragraph for the top README."""
    c = m["clip"]
    crop = c["crop_top1"]["gradcam"]
    missed = [r["figure"].split(" (")[0] for r in targets(m) if not r["met"]]
    n = c["named_when_absent"]
    return (f"Measured on held-out scenes after the float16 round trip (seed {m['seed']}): the CLIP's top-1 caption "
            f"of a GradCAM-like crop names the shape {_f(crop['shape'])}, colour {_f(crop['color'])}, pattern "
            f"{_f(crop['pattern'])}, size {_f(crop['size'])} of the time, a whole scene's background "
            f"{_f(c['scene_top1']['background'])}; the most any shape is named when absent on any background is "
            f"{_f(n['scene']['max'])} for whole scenes and {_f(n['gradcam_crop']['max'])} for crops (top-5 captions). "
            + (f"Issue 7 targets missed: {'; '.join(missed)}. " if missed else "Every issue 7 CLIP target is met. ")
            + build_time_line(m))


README_COMMAND = "python -m falcon_core.demo info --write-readme"


def _markers(name: str, command: str = README_COMMAND) -> tuple[str, str]:
    return (f"<!-- {name}: begin ({command}) -->", f"<!-- {name}: end -->")


def replace_block(text: str, name: str, block: str, command: str = README_COMMAND) -> str:
    """``text`` with the lines between ``name``'s markers (which name the ``command`` that
    writes the block) replaced by ``block``."""
    begin, end = _markers(name, command)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
    if len(pattern.findall(text)) != 1:
        raise FalconError(f"Expected one '{name}' block (between {begin} and {end}).",
                          "Put the two marker lines back where the figures belong.")
    return pattern.sub(lambda _: f"{begin}\n{block}\n{end}", text)


def block(text: str, name: str) -> str:
    """The lines between ``name``'s markers."""
    begin, end = _markers(name)
    found = re.findall(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), text, re.S)
    if len(found) != 1:
        raise FalconError(f"Expected one '{name}' block (between {begin} and {end}).")
    return found[0]


README_BLOCKS = {"README.md": ("demo-summary", summary_markdown), "assets/README.md": ("demo-figures", figures_markdown)}
"""Which block of which README (relative to the repository root) each function fills."""
