"""A report to hand out: one self-contained HTML file of what FALCON found in a workspace.

    python -m falcon_core report --out model.html          (the app: "Download the report")

The file holds the workspace (backbone, layer, CLIP, probe set, vocabulary, settings), every
feature explained so far (with these settings) sorted by coherence, each with its concepts (the
kept words and phrases and the concepts removed as spurious, with their T and L scores), its
highly activating images with the crop box and the crops; the discovered groups; and the failure
summary (accuracy, the most common confusions, the features that drive each).

Self-contained and offline: no script, no font, no request. Each probe image is stored once, as
a JPEG data URI in a CSS class, and drawn wherever it is used: whole with the crop box on top, or
cropped to the box (CSS background position), so a picture shared by several features costs its
bytes once. A Content-Security-Policy meta tag forbids every fetch but ``data:`` images, so
nothing can leave the file even if a browser would try. Bars are plain CSS; the coherence
histogram is inline SVG.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import FalconError
from .explanation import Concept, Explanation
from .progress import Progress, null_progress
from .settings import FalconSettings

__all__ = ["ReportOptions", "ReportResult", "build_report", "write_report", "input_notes",
           "groups_hint_text"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class ReportOptions:
    images: int = 6  # highly activating images (and crops) per feature
    image_px: int = 128  # longest side of each stored picture
    jpeg_quality: int = 80
    confusions: int = 5  # most common confusions in the failure summary
    drivers: int = 3  # features shown per confusion
    examples: int = 4  # example images per confusion
    groups: int = 20  # discovered groups listed
    explain_groups: int = 5  # the largest groups explained (when explain_missing)
    explain_missing: bool = True  # explain drivers/groups that are not cached yet


@dataclass
class ReportResult:
    html: str
    features: int  # explained features in the report
    pictures: int  # distinct pictures stored
    notes: list[str] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


# ----------------------------------------------------------------------------- pictures

class _Pictures:
    """Each probe image once (a CSS class with a JPEG data URI), drawn whole or cropped."""

    def __init__(self, view: Callable[[int], Any], px: int, quality: int):
        self.view = view
        self.px = px
        self.quality = quality
        self.classes: dict[int, tuple[str, int, int, int, int]] = {}  # index -> (css, w, h, vw, vh)
        self.css: list[str] = []

    def _get(self, index: int):
        if index not in self.classes:
            from PIL import Image

            im = self.view(int(index)).convert("RGB")
            vw, vh = im.size
            s = min(1.0, self.px / max(vw, vh))
            w, h = max(1, round(vw * s)), max(1, round(vh * s))
            if (w, h) != (vw, vh):
                im = im.resize((w, h), Image.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=self.quality, optimize=True)
            name = f"p{len(self.classes)}"
            uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
            self.css.append(f".{name}{{background-image:url({uri})}}")
            self.classes[index] = (name, w, h, vw, vh)
        return self.classes[index]

    def whole(self, index: int, box=None, caption: str = "", size: int = 112,
              fallback: bool = False) -> str:
        """The image ``size`` px tall, with the crop box (in the view's pixels) on top."""
        try:
            name, w, h, vw, vh = self._get(index)
        except FalconError:  # an unreadable probe image (BadImageError) must not lose the report
            return f'<figure class="pic missing" title="unreadable">?<figcaption>{_e(caption)}</figcaption></figure>'
        W = max(1, round(size * w / h))
        over = ""
        if box:
            x0, y0, x1, y1 = (int(v) for v in box)
            over = (f'<i class="box{" fb" if fallback else ""}" style="left:{100 * x0 / vw:.2f}%;'
                    f'top:{100 * y0 / vh:.2f}%;width:{100 * (x1 - x0) / vw:.2f}%;'
                    f'height:{100 * (y1 - y0) / vh:.2f}%"></i>')
        return (f'<figure><div class="pic {name}" style="width:{W}px;height:{size}px">{over}'
                f'</div><figcaption>{_e(caption)}</figcaption></figure>')

    def crop(self, index: int, box, caption: str = "", size: int = 72) -> str:
        """The crop box of the image, ``size`` px on its longer side."""
        try:
            name, w, h, vw, vh = self._get(index)
        except FalconError:
            return f'<figure class="pic missing">?<figcaption>{_e(caption)}</figcaption></figure>'
        x0, y0, x1, y1 = (int(v) for v in (box or (0, 0, vw, vh)))
        bw, bh = max(1, x1 - x0), max(1, y1 - y0)
        s = size / max(bw, bh)  # view pixels -> shown pixels
        cw, ch = max(1, round(bw * s)), max(1, round(bh * s))
        return (f'<figure><div class="pic {name}" style="width:{cw}px;height:{ch}px;'
                f'background-size:{vw * s:.1f}px {vh * s:.1f}px;'
                f'background-position:{-x0 * s:.1f}px {-y0 * s:.1f}px"></div>'
                f'<figcaption>{_e(caption)}</figcaption></figure>')


# ----------------------------------------------------------------------------- pieces

def input_notes(falcon) -> list[str]:
    """What a reader should know about the inputs: unreadable probe images (skipped) and what
    the vocabulary's cleaning dropped."""
    notes = []
    skipped = falcon.skipped_images
    if skipped:
        ids = falcon.probe.ids
        listed = "; ".join(f"{ids[i]} ({why})" for i, why in list(sorted(skipped.items()))[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        notes.append(f"{len(skipped)} probe image(s) could not be read and are skipped: "
                     f"{listed}{more}.")
    rep = getattr(falcon.vocabulary, "report", None) or {}
    dropped = [(rep.get(k, 0), what) for k, what in (
        ("blank_dropped", "blank"), ("duplicates_dropped", "duplicate"),
        ("undecodable", "undecodable"), ("truncated", "over-long (cut)"),
        ("control_chars_cleaned", "with control characters (cleaned)"))]
    dropped = [f"{n} {what}" for n, what in dropped if n]
    if dropped:
        notes.append(f"Vocabulary: {rep.get('lines_read', '?')} lines read, "
                     f"{rep.get('kept', '?')} captions kept; lines " + ", ".join(dropped) + ".")
    notes += [f"Vocabulary: {n}" for n in rep.get("notes", [])]
    return notes


SETTING_LABELS = {"alpha_std": "--alpha-std", "top_k": "--top-k", "quantile": "--quantile",
                  "group_min_images": "--group-min-images"}


def groups_hint_text(hints: Sequence[dict[str, Any]], settings: FalconSettings,
                     name_of: Callable[[str], str] = lambda s: SETTING_LABELS.get(s, s)) -> str:
    """Why no group was found and what to change (from ``Falcon.groups_hint``)."""
    why = (f"No set of two or more features is high on the same {settings.group_min_images} or "
           f"more images (Stage 8 groups the images whose high features are exactly the same).")
    if not hints:
        return why + " No single setting change gives a group: try a larger probe set."
    tries = "; ".join(f"{name_of(h['setting'])} {h['value']:g} gives {h['groups']}"
                      for h in hints)
    return f"{why} To find some, change one setting: {tries}."


def _concept_rows(items: Sequence[Concept], kind: str) -> str:
    if not items:
        return f'<tr><td colspan="3" class="none">no {_e(kind)}</td></tr>'
    rows = []
    for c in items:
        t = max(0.0, min(1.0, c.score))
        lo = max(0.0, min(1.0, c.l_score))
        rows.append(f'<tr><td class="c">{_e(c.text)}</td>'
                    f'<td><span class="bar t" style="width:{60 * t:.0f}px"></span>{c.score:.3f}</td>'
                    f'<td><span class="bar l" style="width:{60 * lo:.0f}px"></span>{c.l_score:.3f}</td></tr>')
    return "".join(rows)


def _concept_table(title: str, items: Sequence[Concept], kind: str, cls: str = "") -> str:
    return (f'<table class="concepts {cls}"><caption>{_e(title)}</caption>'
            f'<tr><th>{_e(kind)}</th><th>T score</th><th>L score</th></tr>'
            f'{_concept_rows(items, kind)}</table>')


def _feature_card(exp: Explanation, pics: _Pictures, n_images: int) -> str:
    from .faithfulness_view import report_html as faithfulness_html  # issue 12

    f = exp.features[0]
    coh = exp.coherence
    badge = ("interpretable" if exp.interpretable else "below the coherence threshold")
    top = ", ".join(exp.top_concepts(5)) or "no concepts kept"
    high = exp.high[:n_images]
    whole = "".join(pics.whole(r.index, r.box, f"#{r.index} · {r.activation:.3f}",
                               fallback=r.box_fallback) for r in high)
    crops = "".join(pics.crop(r.index, r.box, f"#{r.index}") for r in high)
    removed = exp.spurious_words + exp.spurious_phrases
    hs, ls = exp.high_selection, exp.low_selection
    notes = "".join(f"<li>{_e(n)}</li>" for n in exp.notes)
    return (
        f'<section class="feature" id="f{f}"><h3>Feature {f}: {_e(top)}</h3>'
        f'<p class="meta">coherence {_num(coh)} · {badge} · {faithfulness_html(exp)}'
        f' · T: {_e(hs.get("description", ""))}'
        f' · L: {_e(ls.get("description", ""))}</p>'
        f'<div class="cols">{_concept_table("Words", exp.words, "word")}'
        f'{_concept_table("Phrases", exp.phrases, "phrase")}'
        f'{_concept_table("Removed as spurious (L score at or above the threshold)", removed, "concept", "removed")}</div>'
        f'<p class="sub">Highly activating images (crop box) and their crops (what CLIP captioned)</p>'
        f'<div class="grid">{whole}</div><div class="grid crops">{crops}</div>'
        + (f'<ul class="notes">{notes}</ul>' if notes else "") + '</section>')


def _histogram_svg(values: Sequence[float], threshold: float, bins: int = 20) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return ""
    lo, hi = min(min(vals), 0.0), max(max(vals), 1.0)
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    W, H, pad = 360, 120, 18
    top = max(counts)
    bars = []
    for i, c in enumerate(counts):
        h = (H - 2 * pad) * c / top
        x = pad + i * (W - 2 * pad) / bins
        bars.append(f'<rect x="{x:.1f}" y="{H - pad - h:.1f}" width="{(W - 2 * pad) / bins - 1:.1f}" '
                    f'height="{h:.1f}"><title>{c} feature(s)</title></rect>')
    tx = pad + (threshold - lo) / (hi - lo) * (W - 2 * pad)
    right = tx > W / 2  # the label on the side of the line with room
    return (f'<svg class="hist" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
            f'aria-label="Coherence of the explained features">{"".join(bars)}'
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{pad / 2}" y2="{H - pad}" class="thr"/>'
            f'<text x="{tx - 3 if right else tx + 3:.1f}" y="{pad}" class="lab" '
            f'text-anchor="{"end" if right else "start"}">interpretable: &gt; {threshold:g}</text>'
            f'<text x="{pad}" y="{H - 3}" class="lab">{lo:g}</text>'
            f'<text x="{W / 2:.0f}" y="{H - 3}" class="lab" text-anchor="middle">coherence '
            f'(features: {top} in the tallest bar)</text>'
            f'<text x="{W - pad}" y="{H - 3}" class="lab" text-anchor="end">{hi:g}</text></svg>')


def _shown(value: Any) -> str:
    """A value for the reader: a file or folder path by its name (the report is handed out; the
    machine's paths mean nothing to its reader)."""
    text = str(value)
    if text.startswith(("/", "~")) or (len(text) > 2 and text[1] == ":" and text[2] in "\\/"):
        return Path(text).name or text
    if text.startswith("laion:"):
        return "laion:" + (Path(text[6:]).name or text[6:])
    return text


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    return ('<table class="kv">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
                                           for k, v in rows) + "</table>")


def _workspace_section(falcon, settings: FalconSettings, notes: list[str]) -> str:
    d = falcon.describe()
    b, c, p, v = d["backbone"], d["clip"], d["probe"], d["vocabulary"]
    rows = [("Backbone", f"{_shown(b.get('name'))} ({_shown(b.get('weights'))})"),
            ("Explained layer", f"{b.get('layer')}: {b.get('pooling')}; "
                                f"{b.get('num_features')} features"),
            ("Classifier head", b.get("head") or "none"),
            ("CLIP", f"{_shown(c.get('name'))} ({_shown(c.get('pretrained'))})"),
            ("Probe set", _shown(p.get("description") or p.get("root") or p.get("kind"))),
            ("Probe images", f"{falcon.num_images} ({len(falcon.skipped_images)} unreadable)"),
            ("Vocabulary", f"{_shown(v.get('name'))}: {v.get('count')} captions")]
    defaults = FalconSettings()
    srows = [(k, _shown(val) + ("" if getattr(defaults, k) == val else
                                f"  (authors: {getattr(defaults, k)})"))
             for k, val in settings.to_dict().items()]
    note_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return ('<section id="workspace"><h2>Workspace</h2>' + _kv_table(rows)
            + '<details><summary>Settings</summary>' + _kv_table(srows) + '</details>'
            + (f'<ul class="notes">{note_html}</ul>' if note_html else "") + '</section>')


def _concepts_of(exp: Explanation | None, err: str | None = None) -> str:
    if exp is None:
        return f'<span class="none">{_e(err or "not explained yet")}</span>'
    words = ", ".join(exp.top_concepts(5)) or "no concepts kept"
    removed = ", ".join(c.text for c in exp.spurious_words[:4])
    return _e(words) + (f' <span class="removed">(removed: {_e(removed)})</span>' if removed else "")


def _feature_ref(f: int, explained: set[int]) -> str:
    return f'<a href="#f{f}">feature {f}</a>' if f in explained else f"feature {f}"


def _explanation(falcon, features, settings, explain: bool):
    if explain:
        return falcon.try_explain(features, settings)
    return falcon.cached_explanation(features, settings), None


def _groups_section(falcon, settings, opts: ReportOptions, explained: set[int]) -> str:
    groups = falcon.groups(settings)
    head = f'<section id="groups"><h2>Discovered groups ({len(groups)})</h2>'
    if not groups:
        hint = groups_hint_text(falcon.groups_hint(settings), settings)
        return head + f"<p>{_e(hint)}</p></section>"
    rows = []
    for n, g in enumerate(groups[: opts.groups]):
        feats = list(g.features)
        exp, err = _explanation(falcon, feats, settings,
                                opts.explain_missing and n < opts.explain_groups)
        coh = _num(exp.coherence) if exp is not None else "–"
        rows.append("<tr><td>" + " + ".join(_feature_ref(f, explained) for f in feats)
                    + f"</td><td>{g.n_images}</td><td>{coh}</td><td>{_concepts_of(exp, err)}</td></tr>")
    more = (f"<p>… and {len(groups) - opts.groups} more.</p>" if len(groups) > opts.groups else "")
    return (head + "<p>Images whose set of high features is exactly the same, at least "
            f"{settings.group_min_images} of them (Stage 8).</p>"
            "<table class=\"list\"><tr><th>features</th><th>images</th><th>coherence</th>"
            "<th>concepts</th></tr>" + "".join(rows) + "</table>" + more + "</section>")


def _failures_section(falcon, settings, opts: ReportOptions, pics: _Pictures,
                      explained: set[int]) -> str:
    head = '<section id="failures"><h2>Failures</h2>'
    try:
        summary = falcon.failure_summary(top=opts.confusions, k=opts.drivers)
    except FalconError as e:
        return head + f"<p>{_e(e.message)}" + (f" {_e(e.hint)}" if e.hint else "") + "</p></section>"
    acc = summary["accuracy"]
    parts = [head, f'<p class="big">Accuracy {_num(100 * acc, 1)} % on {summary["labelled"]} '
                   f'labelled probe images; {summary["misclassified"]} misclassified.</p>']
    if summary["confusions"]:
        parts.append("<h3>Most common confusions, and the features that drive them</h3>"
                     "<p>Each driving feature is ranked by its mean contribution h·U toward the "
                     "predicted class over the confused images (Stage 9).</p>")
    for conf in summary["confusions"]:
        drivers = []
        for d in conf["drivers"]:
            exp, err = _explanation(falcon, d["feature"], settings, opts.explain_missing)
            drivers.append(f'<li>{_feature_ref(d["feature"], explained)} '
                           f'(contribution {d["contribution"]:+.3f}): {_concepts_of(exp, err)}</li>')
        examples = "".join(pics.whole(i, None, f"#{i}", size=72)
                           for i in conf["images"][: opts.examples])
        parts.append(f'<div class="confusion"><h4>true {_e(conf["true_name"])} → predicted '
                     f'{_e(conf["predicted_name"])}: {conf["count"]} image(s)</h4>'
                     f'<div class="grid">{examples}</div><ul>{"".join(drivers)}</ul></div>')
    parts.append("</section>")
    return "".join(parts)


STYLE = """
*{box-sizing:border-box;-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#222;margin:0 auto;max-width:1200px;padding:16px 24px}
h1{font-size:26px;margin:8px 0}h2{font-size:20px;border-bottom:2px solid #ddd;padding-bottom:4px;
 margin-top:32px}h3{font-size:16px;margin:8px 0}h4{margin:6px 0}
.meta,.sub,.none{color:#666}.sub{margin:6px 0 2px}.big{font-size:16px}
nav a{margin-right:14px}
table{border-collapse:collapse;margin:4px 12px 8px 0}th,td{text-align:left;padding:2px 8px;
 vertical-align:top}.kv th{color:#555;font-weight:600;white-space:nowrap}
.list th,.list td{border-bottom:1px solid #eee}
.cols{display:flex;flex-wrap:wrap;align-items:flex-start}.concepts{min-width:260px}.concepts caption{text-align:left;
 font-weight:600}.concepts td{position:relative;white-space:nowrap}.concepts td.c{white-space:normal}
.bar{display:inline-block;height:8px;margin-right:6px;vertical-align:middle}
.concepts td:not(.c){min-width:112px}
.bar.t{background:#1f77b4}.bar.l{background:#ff7f0e}.removed .bar.t{background:#d62728}
.removed caption,.removed .c,span.removed{color:#a11}
.feature{border:1px solid #e3e3e3;border-radius:8px;padding:8px 14px;margin:14px 0;
 break-inside:avoid}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0}
figure{margin:0;font-size:11px;color:#555;text-align:center}
.pic{position:relative;background-size:100% 100%;background-repeat:no-repeat;
 border-radius:3px;display:inline-block;background-color:#eee}
.pic.missing{width:72px;height:72px;line-height:72px;font-size:20px}
.box{position:absolute;border:2px solid #fff;outline:1px solid #000}.box.fb{border-color:#fa0}
.hist rect{fill:#1f77b4}.hist .thr{stroke:#2ca02c;stroke-dasharray:4 3}.hist .lab{font-size:10px;
 fill:#444}
.confusion{border-left:4px solid #d62728;padding-left:10px;margin:10px 0}
.notes{color:#7a5b00}
footer{color:#888;margin:30px 0 10px;font-size:12px}
"""


def build_report(falcon, settings: FalconSettings | None = None,
                 options: ReportOptions | None = None,
                 progress: Progress | None = None) -> ReportResult:
    """The report of ``falcon``'s workspace (with ``settings``: its explanations so far)."""
    s = settings or falcon.settings
    opts = options or ReportOptions()
    progress = progress or null_progress
    pics = _Pictures(falcon.view, opts.image_px, opts.jpeg_quality)
    notes = input_notes(falcon)
    done = falcon.explained(s)
    order = sorted(done, key=lambda f: (-(done[f].coherence if done[f].coherence == done[f].coherence
                                          else -1e9), f))
    explained = set(order)
    cards = []
    for n, f in enumerate(order):
        cards.append(_feature_card(done[f], pics, opts.images))
        progress(n + 1, len(order), "report: features")
    groups = _groups_section(falcon, s, opts, explained)
    failures = _failures_section(falcon, s, opts, pics, explained)
    cohs = [done[f].coherence for f in order]
    n_interp = sum(bool(done[f].interpretable) for f in order)
    b = falcon.describe()["backbone"]
    title = f"FALCON report: {b.get('name')}, layer {b.get('layer')}"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    summary = (f'<p class="big">{len(order)} of {falcon.num_features} features explained; '
               f'{n_interp} interpretable (coherence &gt; {s.coherence_threshold:g}).</p>'
               + _histogram_svg(cohs, s.coherence_threshold)
               + ("" if len(order) == falcon.num_features else
                  "<p class=\"none\">Only features already explained are listed: run "
                  "<code>python -m falcon_core precompute</code> (or the precompute on the app's "
                  "Setup page) to explain them all.</p>"))
    body = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{STYLE}</style>",
        "<style>" + "".join(pics.css) + "</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Made with FALCON (Kalibhat et al., ICML 2023) on {stamp}. Each feature '
        "is explained by the words of the captions a CLIP model gives to the crops of its most "
        "activating images (T score, Eq. 1); words that also describe lowly activating "
        "counterfactual images (L score, Eq. 2) are removed as spurious.</p>",
        '<nav><a href="#workspace">Workspace</a><a href="#features">Features</a>'
        '<a href="#groups">Groups</a><a href="#failures">Failures</a></nav>',
        _workspace_section(falcon, s, notes),
        f'<section id="features"><h2>Features, by coherence</h2>{summary}{"".join(cards)}</section>',
        groups, failures,
        "<footer>This file is self-contained: it needs no network and no other file.</footer>",
        "</body></html>"]
    return ReportResult(html="".join(body), features=len(order), pictures=len(pics.classes),
                        notes=notes)


def write_report(falcon, path: str | Path, settings: FalconSettings | None = None,
                 options: ReportOptions | None = None,
                 progress: Progress | None = None) -> ReportResult:
    """Build the report and write it to ``path`` (atomically: the cache's ``atomic_write``)."""
    from .cache_format import atomic_write

    path = Path(path)
    if path.is_dir():
        raise FalconError(f"{path} is a folder.", "Give a file name, e.g. model.html.")
    if not path.parent.exists():
        raise FalconError(f"The folder {path.parent} does not exist.",
                          "Create it first, or write the report elsewhere.")
    result = build_report(falcon, settings, options, progress)
    data = result.html.encode("utf-8")
    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise FalconError(f"Cannot write the report to {path}: {e.strerror or e}.") from e
    return result
