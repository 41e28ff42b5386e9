"""Concept-recovery benchmark on the demo worlds, whose ground truth is known, with ablations.

For each backbone feature the ground truth is the attribute value whose presence best separates
its activations over the probe set (ROC AUC, ``falcon_core.demo.ground_truth``); a feature is
*clear* when that AUC is at least 0.85. Every clear feature is explained, and a feature is
*recovered* when its top-3 FALCON words hold the ground-truth value or one of its synonyms
(lemmatised as FALCON lemmatises).

Runs (one world, one command; every run is the pipeline's own code with one component replaced):

``full``         the pipeline with the workspace's settings (and without the contrast step)
``no_crop``      CLIP sees the whole view instead of the GradCAM crop (``Falcon._boxes``); held on
                 the captions naming the other object of two-object views (below)
``wrong_cam``    GradCAM aims at another feature: the clear feature of another attribute whose
                 activation is least correlated with the explained one's (``Falcon._cams``)
``random_clip``  the demo CLIP's architecture with random weights (another ``ClipModel``)
``oracle_clip``  each image's captions are its own ground-truth captions, score 1
                 (``Falcon._match_captions``); a reference, not an ablation
``chance``       the full run's words scored against ground truths shuffled across the clear
                 features (1,000 permutations)

An ablated run gets its own explanation keys (``inputs["ablation"]``) and every derived cache entry
is keyed by what it depends on, so no ablation ever reads or writes the full run's results, while
representations, text embeddings, GradCAM maps and crop embeddings that an ablation does not change
are shared through the cache.

Figures, each with its count and a 95 % Wilson score interval: top-3 recovery (all clear
features, and per attribute); spurious removed (planted correlations ``if -> then``: over the
clear features whose truth is the ``if`` value and whose words hold the ``then`` value without
the contrast step, the share where the contrast step removed it); true kept (over the clear
features whose true value is among the top words without the contrast step, the share still there
with it); features whose top word is a caption filler (a concept word of the vocabulary that names
no attribute value); the pair check over every eligible pair (two individually recovered clear
features with different attributes that fire together on at least ``PAIR_MIN_COFIRE`` images of
the top 1 % of both; held when the pair's words and phrases name both values).

The run fails (exit status 1) when the full pipeline is not clearly above an ablation: for each of
``wrong_cam``, ``random_clip`` and ``chance``, the paired difference in top-3 recovery over the
same clear features must be at least ``MARGIN`` (0.10) and the lower end of its 95 % bootstrap
interval (2,000 resamples of the features) above 0. Why 0.10: a stage that does its job should be
worth more than one feature in ten; a smaller gap is within what two settings of one working
pipeline differ by (the side-by-side table shows such gaps), so it would not say the stage works.

``no_crop`` is held on what the crop is for, not on top-3 recall (decided before it was measured;
:data:`OTHER_OBJECT_FIGURE`, :func:`no_crop_other_object_check`). Most probe views hold one
object on its background, where the whole view is as good a "crop" as any for naming the
feature's value, and top-3 recall does not penalise words about another object; so a recall
difference cannot show whether the crop works. The crop's job is to show CLIP the part of the view
the feature responds to: on a view with two objects, the feature's object and not the other one.
Held figure: over every clear feature whose truth is an object attribute, over its highly
activating images that hold two objects of which exactly one has the feature's value, the share
of each image's kept captions (top 5) that name a shape, colour or pattern value only the *other*
object has (size is not counted: a crop changes the apparent size of what it holds), averaged per
feature; no crop - full must be at least ``MARGIN`` with the lower end of the paired bootstrap
interval (over the features) above 0 -- the same rule, read as "the crop removes the other
object from at least one caption in ten". Top-3 recall under no crop is still reported (``top3``
inside the check), and so is the no-crop recall over the features whose T mostly holds two
objects. Feeding CLIP the whole view inside the full pipeline makes the two runs the same and the
check fail (tests/test_bench_recovery.py).

``--compare`` adds the side-by-side table: the counterfactual rule (authors' Eq. 2 ``global``,
``twins``, ``quantile``, ``clip``) × the spurious threshold on L (``absolute`` 0.1, ``relative``,
``ratio``), and the ``conditional`` rule (which decides without L) once, with the settings'
counterfactual rule (:func:`compare_pairs`), with the demo CLIP and the oracle CLIP.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FalconError
from ..settings import FalconSettings
from ..workspace import WorkspaceConfig
from . import faithfulness as faithfulness_bench
from .planted import RELIANCE_SHARE

REPO = Path(__file__).resolve().parents[2]
DOCS_JSON = REPO / "docs" / "recovery.json"
README = REPO / "README.md"
DOCS_COMMAND = "python -m falcon_core.bench recovery --docs"
README_BEGIN = f"<!-- recovery: begin ({DOCS_COMMAND}) -->"
README_END = "<!-- recovery: end -->"
# the committed worlds, by the name load_world takes, and the file each is
WORLD_FILES = {"default": "assets/world.json", "alt": "assets/world_alt.json"}

MARGIN = 0.10
ABLATIONS = ("no_crop", "wrong_cam", "random_clip", "chance")
PAIR_MIN_COFIRE = 5
ENCODES_AUC = 0.85  # the bar for "clear": a feature encodes a value it separates this well
TOP_N = 3
N_BOOT = 2000
N_PERMUTATIONS = 1000


# ---------------------------------------------------------------------------------- statistics

def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a proportion k/n (None when n = 0)."""
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def proportion(flags: Sequence[bool]) -> dict[str, Any]:
    flags = [bool(x) for x in flags]
    n, k = len(flags), int(sum(flags))
    ci = wilson(k, n)
    return {"value": k / n if n else None, "k": k, "n": n,
            "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)]}


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT,
                      seed: int = 0) -> dict[str, Any]:
    """mean(a - b) over paired items, with a 95 % percentile bootstrap interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    if len(d) == 0:
        return {"difference": None, "ci95": None, "n": 0}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"difference": float(d.mean()), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "n": int(len(d))}


# ---------------------------------------------------------------------------------- ablations

def ablated(base, name: str, **methods: Callable) -> Any:
    """The same Falcon (same store, cache and in-memory state) whose explainer has some methods
    replaced.

    The replacements are bound to a copy of the explainer; its ``inputs`` gain
    ``{"ablation": name}``, so explanations (and the caption scale) are keyed apart from the base
    run's. The store, the concept extractor and the calibration (document frequencies, view
    embeddings) are shared: the replaced methods cannot change them."""
    import copy

    ex = base.explainer
    cls = type(ex)

    class Ablated(cls):  # type: ignore[misc, valid-type]
        @property
        def inputs(self):
            return {**cls.inputs.fget(self), "ablation": name}

    for attr, fn in methods.items():
        setattr(Ablated, attr, fn)
    Ablated.__name__ = f"Ablated_{name}"
    ab = Ablated.__new__(Ablated)
    ab.__dict__.update(ex.__dict__)
    ab.timings = {}
    ab.ablation = name
    out = copy.copy(base)
    out.explainer = ab
    out.timings = ab.timings
    return out


def _whole_boxes(self, cams, threshold, margin=0.0):
    from ..stages.crops import CropBox

    return [CropBox(0, 0, int(c.shape[1]), int(c.shape[0]), fallback=False) for c in cams]


def no_crop(base):
    """CLIP sees the whole view: every crop box is the whole image (``Explainer._boxes``)."""
    return ablated(base, "no_crop", _boxes=_whole_boxes)


def wrong_cam(base, wrong: dict[int, int]):
    """GradCAM of another feature: ``wrong[i]`` for feature i (a group: each of its features)
    (``Explainer._cams``; its cache key names the feature it really aims at)."""
    cls = type(base.explainer)
    r = base.num_features

    def _cams(self, feats, indices):
        other = tuple(wrong.get(int(f), (int(f) + r // 2) % r) for f in feats)
        return cls._cams(self, other, indices)

    return ablated(base, "wrong_cam", _cams=_cams)


def oracle_clip(base, world, scenes, seed: int = 0):
    """Each probe image's captions are its own ground-truth captions (the demo world's caption
    generator on the image's scene), every score 1 (``Explainer._match_captions``)."""
    from ..demo.captions import scene_caption

    def _match_captions(self, B, k, images, settings=None):
        texts = []
        for i in images:
            rng = np.random.default_rng([seed, 7, int(i)])
            texts.append([scene_caption(world, scenes[int(i)], rng) for _ in range(k)])
        n = len(texts)
        return (np.full((n, k), -1, dtype=np.int64), texts, np.ones((n, k), dtype=np.float32))

    return ablated(base, "oracle_clip", _match_captions=_match_captions)


def random_clip(base, world: str | None):
    """The same pipeline with the demo CLIP's architecture, randomly initialised (seed 0): a
    Falcon built on another CLIP model (its own fingerprint, so its own cache entries)."""
    from ..demo.assets import demo_clip_spec, ensure_assets
    from ..models.clip import ClipSpec, create_clip
    from ..pipeline import Falcon

    name, _ = demo_clip_spec(ensure_assets(world))
    clip = create_clip(ClipSpec(name=name, pretrained=None))
    f = Falcon(base.backbone, clip, base.probe, base.vocabulary, settings=base.settings,
               cache=base.cache, progress=base.progress, config=base.config)
    f.explainer._extractor = base.explainer.extractor  # spaCy and its memo of captions
    f.text_embeddings()
    f.view_embeddings()
    return f


def wrong_features(falcon, clear) -> dict[int, int]:
    """For each clear feature, the clear feature of another attribute least correlated with it."""
    from ..stages.contrast import column_correlations

    Hn = falcon.normalized()
    _, valid = falcon.representations()
    out = {}
    for t in clear:
        corr = column_correlations(Hn, Hn[:, t.feature], valid)
        others = [u.feature for u in clear if u.attribute != t.attribute]
        if others:
            out[t.feature] = int(min(others, key=lambda f: (corr[f], f)))
    return out


# ---------------------------------------------------------------------------------- the crop check

# issue 7: a stage check must look where the stage can have an effect. The crop can only change
# what CLIP sees where the view holds something besides the feature's object: on a one-object
# scene (about 80 % of the demo worlds' probe sets) the whole view is the object on its
# background. So "no crop" is also measured over the clear features whose highly activating
# images hold two objects or more in at least this share of the images (the full run's T).
# Reported, not held: measured with the paper's box, the whole view names the truth there as
# often as the crop (a two-object scene's captions name both objects), and the demo worlds have
# 4 and 6 such features, too few for a 0.10 margin to mean anything; no_crop_check holds it to
# the ablations' rule so the figure says whether it would pass.
CROP_SCOPE_SHARE = 0.5
CROP_SCOPE = (f"clear features whose T holds two objects or more in >= {CROP_SCOPE_SHARE:g} of "
              "its images (where the crop can change what CLIP sees)")


def two_object_share(world, exp) -> float | None:
    """The share of ``exp``'s highly activating images whose scene holds two objects or more
    (None without an explanation or images)."""
    if exp is None or not exp.high:
        return None
    return float(np.mean([len(world.scenes[r.index]["objects"]) >= 2 for r in exp.high]))


def crop_scope(world, rows) -> np.ndarray:
    """Per row of the full run (``World.explain_all``): is the feature in :data:`CROP_SCOPE`?"""
    shares = [two_object_share(world, r["exp"]) for r in rows]
    return np.array([sh is not None and sh >= CROP_SCOPE_SHARE for sh in shares], bool)


def no_crop_check(world_name: str, scope: np.ndarray, full_hits, no_crop_hits) -> dict[str, Any]:
    """The "no crop" difference where the crop can matter: full - no crop over the features in
    :data:`CROP_SCOPE` (``scope``), with ``ok`` by the ablations' rule (at least :data:`MARGIN`,
    the interval's lower end above 0), and over every clear feature (``all_features``)."""
    full_hits, no_crop_hits = np.asarray(full_hits, float), np.asarray(no_crop_hits, float)
    d = paired_difference(full_hits[scope], no_crop_hits[scope])
    ok = d["difference"] is not None and d["difference"] >= MARGIN and d["ci95"][0] > 0
    return {"world": world_name, "ablation": "no_crop", **d, "margin": MARGIN, "ok": bool(ok),
            "scope": CROP_SCOPE, "full_in_scope": proportion(full_hits[scope] > 0),
            "no_crop_in_scope": proportion(no_crop_hits[scope] > 0),
            "all_features": paired_difference(full_hits, no_crop_hits)}


# ---------------------------------------------------------------------------------- the crop check held

# issue 7: what GradCAM's crop is for. On a view with two objects the crop should show CLIP the
# object the feature responds to, not the other one; on a one-object view (about 80 % of the
# demo worlds' probe sets) the whole view is that object on its background, so top-3 recall
# cannot tell a crop from no crop there. The exit status's "no crop" check therefore holds a
# precision figure, decided before it was measured: over every clear feature whose truth is an
# object attribute, over its highly activating images that hold two objects of which exactly one
# has the feature's value, the share of the image's kept captions (top 5) that name a shape,
# colour or pattern value only the *other* object has. Size is not counted: a crop changes the
# apparent size of what it holds by construction. Per feature: the mean over its such images;
# held when no crop - full >= MARGIN over those features with the lower end of the paired
# bootstrap interval above 0 (the other ablations' rule: one caption in ten). Top-3 recall under
# no crop is still measured and reported.
OTHER_OBJECT_ATTRIBUTES = ("shape", "color", "pattern")
OTHER_OBJECT_FIGURE = (f"share of the kept captions of T's two-object images that name a "
                       f"{'/'.join(OTHER_OBJECT_ATTRIBUTES)} value only the other object has")


def other_object_words(scene: dict[str, Any], truth: str,
                       syn: dict[str, set[str]]) -> set[str] | None:
    """The words (synonyms, as FALCON lemmatises them) of the shape, colour and pattern values
    that only the *other* object of ``scene`` has, where ``truth`` ("attribute=value", an object
    attribute) picks out the feature's object: exactly one object of the scene must have it.
    None when the image says nothing about the crop: one object, a scene attribute, the value on
    no object or on both, or no value the other object alone has."""
    from ..demo.world import OBJECT_ATTRIBUTES

    attr, value = truth.split("=", 1)
    objs = scene.get("objects") or []
    if attr not in OBJECT_ATTRIBUTES or len(objs) < 2:
        return None
    own = [o for o in objs if o.get(attr) == value]
    if len(own) != 1:
        return None
    me = own[0]
    words: set[str] = set()
    for o in objs:
        if o is me:
            continue
        for a in OTHER_OBJECT_ATTRIBUTES:
            if o.get(a) != me.get(a):
                words |= set(syn.get(f"{a}={o.get(a)}", ()))
    return words or None


def other_object_counts(exp, scenes, truth: str, syn) -> dict[int, tuple[int, int]]:
    """{T image: (its kept captions that name the other object, its kept captions)} over the
    images of ``exp.high`` where :func:`other_object_words` is not None."""
    out: dict[int, tuple[int, int]] = {}
    if exp is None:
        return out
    for r in exp.high:
        words = other_object_words(scenes[r.index], truth, syn)
        if words is None or not r.captions:
            continue
        out[int(r.index)] = (sum(bool(set(c.words) & words) for c in r.captions), len(r.captions))
    return out


def _share(counts: dict[int, tuple[int, int]]) -> float:
    return float(np.mean([k / n for k, n in counts.values()]))


def no_crop_other_object_check(world_name: str, scenes, syn, full_rows,
                               no_crop_rows) -> dict[str, Any]:
    """The held "no crop" check (see :data:`OTHER_OBJECT_FIGURE`): per feature, the share of
    captions naming the other object, full run and no-crop run over the same T images; the
    difference no crop - full over the features with at least one such image, its 95 % paired
    bootstrap interval, ``ok`` by the ablations' rule; per attribute; and the captions counted
    (k/n with a Wilson interval; captions of one image are not independent, so the per-feature
    bootstrap is the interval the check holds)."""
    per: list[dict[str, Any]] = []
    for rf, rn in zip(full_rows, no_crop_rows):
        cf = other_object_counts(rf["exp"], scenes, rf["truth"], syn)
        cn = other_object_counts(rn["exp"], scenes, rn["truth"], syn)
        both = sorted(set(cf) & set(cn))  # the same T images (T does not depend on the crop)
        if not both:
            continue
        cf, cn = {i: cf[i] for i in both}, {i: cn[i] for i in both}
        per.append({"feature": rf["feature"], "truth": rf["truth"], "images": len(both),
                    "full": round(_share(cf), 4), "no_crop": round(_share(cn), 4),
                    "captions": [sum(v[1] for v in cf.values()), sum(v[1] for v in cn.values())],
                    "naming": [sum(v[0] for v in cf.values()), sum(v[0] for v in cn.values())]})

    def summary(rows):
        d = paired_difference([r["no_crop"] for r in rows], [r["full"] for r in rows])
        cap = [sum(r["captions"][j] for r in rows) for j in (0, 1)]
        nam = [sum(r["naming"][j] for r in rows) for j in (0, 1)]

        def counted(j):
            ci = wilson(nam[j], cap[j])
            return {"value": nam[j] / cap[j] if cap[j] else None, "k": nam[j], "n": cap[j],
                    "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)]}
        return {**d, "features": len(rows), "images": sum(r["images"] for r in rows),
                "full_share": float(np.mean([r["full"] for r in rows])) if rows else None,
                "no_crop_share": float(np.mean([r["no_crop"] for r in rows])) if rows else None,
                "full_captions": counted(0), "no_crop_captions": counted(1)}

    s = summary(per)
    ok = s["difference"] is not None and s["difference"] >= MARGIN and s["ci95"][0] > 0
    attrs = sorted({r["truth"].split("=")[0] for r in per})
    return {"world": world_name, "ablation": "no_crop", "figure": "other_object_captions",
            "description": OTHER_OBJECT_FIGURE, "direction": "no crop - full", **s,
            "margin": MARGIN, "ok": bool(ok),
            "by_attribute": {a: summary([r for r in per if r["truth"].startswith(a + "=")])
                             for a in attrs},
            "per_feature": per}


def hold_no_crop_on_other_objects(checks: list[dict[str, Any]],
                                  crop_check: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks with "no crop"'s top-3 check replaced by :func:`no_crop_other_object_check`'s
    (the top-3 difference is kept inside it as ``top3``, reported)."""
    out = []
    for c in checks:
        if c["ablation"] == "no_crop":
            c = {**crop_check, "top3": {k: c[k] for k in ("difference", "ci95", "n", "ok")}}
        out.append(c)
    return out



# ---------------------------------------------------------------------------------- one world

def _words(exp, n: int | None = None) -> list[str]:
    return [c.text for c in (exp.words if n is None else exp.words[:n])] if exp else []


def _phrase_words(exp) -> set[str]:
    return {w for c in exp.phrases for w in c.text.split()} if exp else set()


def _hit(words, synonyms: set[str]) -> bool:
    return any(w in synonyms for w in words)


class World:
    """One demo world, its pipeline, ground truth and what the figures need."""

    def __init__(self, world: str | None, seed: int, settings: FalconSettings | None,
                 cache_dir: str | None, progress, max_features: int | None):
        from ..demo import attribute_matrix, ground_truth, synonyms
        from ..demo.integration import demo_probe_truth
        from ..pipeline import Falcon

        self.world_arg, self.seed = world, seed
        self.cfg = WorkspaceConfig.demo(world=world, seed=seed)
        self.settings = settings or self.cfg.default_settings()
        self.falcon = Falcon.from_config(self.cfg, settings=self.settings, cache_dir=cache_dir,
                                         progress=progress)
        H, valid = self.falcon.representations()
        self.w, self.scenes = demo_probe_truth(self.cfg.world, n=self.cfg.probe_size,
                                               seed=self.cfg.seed)
        names, binary = attribute_matrix(self.scenes, self.w)
        self.truths = ground_truth(H[valid], binary[valid], names)
        self.clear = [t for t in self.truths if t.clear]
        if max_features:
            self.clear = self.clear[:max_features]
        self.encodes = self._encoded_correlates(H[valid], binary[valid], names)
        self.syn = {k: set(v) for k, v in synonyms(self.w).items()}
        self.falcon.text_embeddings()
        self.falcon.view_embeddings()  # every view once (the faithfulness score of every run)
        df = self.falcon.document_frequencies()
        named = set().union(*self.syn.values())
        self.fillers = sorted(w for w in df.words if w not in named)
        self.progress = progress

    def _encoded_correlates(self, H, binary, names) -> dict[int, float]:
        """For each clear feature whose truth is a planted correlation's ``if`` value: the ROC
        AUC of its activation for the ``then`` value among the images *without* the ``if``
        value. At or above ``ENCODES_AUC`` the feature responds to the correlated value on its
        own, so that value is one of its concepts, not a spurious one (Eq. 2 rightly keeps it:
        the images low on the feature lack it too)."""
        from sklearn.metrics import roc_auc_score

        col = {n: j for j, n in enumerate(names)}
        out: dict[int, float] = {}
        for corr in getattr(self.w, "correlations", []) or []:
            (a1, v1), = corr["if"].items()
            (a2, v2), = corr["then"].items()
            src, dst = f"{a1}={v1}", f"{a2}={v2}"
            rows = binary[:, col[src]] == 0
            y = binary[rows, col[dst]]
            if y.all() or not y.any():
                continue
            for t in self.clear:
                if t.name == src:
                    out[t.feature] = float(roc_auc_score(y, H[rows, t.feature]))
        return out

    def explain_all(self, falcon, settings: FalconSettings, label: str) -> list[dict[str, Any]]:
        rows = []
        for n, t in enumerate(self.clear):
            exp, err = falcon.try_explain(t.feature, settings)
            rows.append({"feature": t.feature, "truth": t.name, "exp": exp, "error": err})
            if self.progress:
                self.progress(n + 1, len(self.clear), label)
        return rows


def _score_rows(world: World, rows, rows_nc=None) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        syn = world.syn[r["truth"]]
        exp = r["exp"]
        d = {"feature": r["feature"], "truth": r["truth"], "top_words": _words(exp, 8),
             "hit": _hit(_words(exp, TOP_N), syn), "truth_in_top": _hit(_words(exp), syn),
             "spurious": [c.text for c in exp.spurious_words] if exp else [],
             "error": r["error"], **faithfulness_bench.feature_fields(exp)}
        if rows_nc is not None:
            e2 = rows_nc[i]["exp"]
            d.update({"top_words_no_contrast": _words(e2, 8),
                      "hit_no_contrast": _hit(_words(e2, TOP_N), syn),
                      "truth_in_top_no_contrast": _hit(_words(e2), syn)})
        out.append(d)
    return out


def _figures(world: World, scored: list[dict[str, Any]], first_exp=None) -> dict[str, Any]:
    attrs = sorted({r["truth"].split("=")[0] for r in scored})
    has_nc = bool(scored) and "hit_no_contrast" in scored[0]
    fig: dict[str, Any] = {"top3_recovery": proportion(r["hit"] for r in scored),
                           "by_attribute": {}}
    for a in attrs:
        rows = [r for r in scored if r["truth"].split("=")[0] == a]
        fig["by_attribute"][a] = {"top3_recovery": proportion(r["hit"] for r in rows)}
        if has_nc:
            fig["by_attribute"][a]["top3_recovery_no_contrast"] = proportion(
                r["hit_no_contrast"] for r in rows)
    fillers = set(world.fillers)
    fig["filler_top_word"] = proportion(bool(r["top_words"]) and r["top_words"][0] in fillers
                                        for r in scored)
    fig["filler_top_words"] = sorted({r["top_words"][0] for r in scored
                                      if r["top_words"] and r["top_words"][0] in fillers})
    if has_nc:
        fig["top3_recovery_no_contrast"] = proportion(r["hit_no_contrast"] for r in scored)
        fig["true_kept"] = proportion(r["truth_in_top"] for r in scored
                                      if r["truth_in_top_no_contrast"])
        planted, cases, cases_free, cases_unrelied, cases_relied = [], [], [], [], []
        for corr in getattr(world.w, "correlations", []) or []:
            (a1, v1), = corr["if"].items()
            (a2, v2), = corr["then"].items()
            src, dst = f"{a1}={v1}", f"{a2}={v2}"
            feats = [r for r in scored if r["truth"] == src]
            present = [r for r in feats if _hit(r["top_words_no_contrast"], world.syn[dst])]
            removed = [r for r in present if not _hit(r["top_words"], world.syn[dst])]
            cases += [r in removed for r in present]
            free = [r for r in present if world.encodes.get(r["feature"], 0.5) < ENCODES_AUC]
            cases_free += [r in removed for r in free]
            rel = _reliance_of(world, dst)
            cases_unrelied += [r in removed for r in present
                               if rel.get(r["feature"], {}).get("relies") is False]
            cases_relied += [r not in removed for r in present
                             if rel.get(r["feature"], {}).get("relies") is True]
            planted.append({"correlation": f"{src} -> {dst} (p={corr.get('p')})",
                            "features": [r["feature"] for r in feats],
                            "cases": [{"feature": r["feature"], "removed": r in removed,
                                       "auc_without_truth": round(world.encodes.get(r["feature"], float("nan")), 3),
                                       "reliance": rel.get(r["feature"], {}).get("reliance"),
                                       "relies": rel.get(r["feature"], {}).get("relies")}
                                      for r in present],
                            "n_cases": len(present), "removed": len(removed)})
        fig["spurious_removed"] = proportion(cases)
        fig["spurious_removed_not_encoded"] = proportion(cases_free)
        # over the cases whose feature does not respond to the planted value (re-rendered with
        # the value swapped: bench/planted.py), the share removed; over those that do, kept
        fig["spurious_removed_not_relied"] = proportion(cases_unrelied)
        fig["spurious_kept_relied"] = proportion(cases_relied)
        fig["planted"] = planted
    return fig


def measure_reliance(world: World) -> dict[tuple[int, str], dict[str, Any]]:
    """For every planted correlation ``if -> then`` and every clear feature whose truth is the
    ``if`` value: does the feature respond to the ``then`` value? Its highly activating images
    (the run's own T) re-rendered with the value swapped, against the control of its truth swapped
    (:func:`falcon_core.bench.planted.reliance_case`). Keyed by (feature, "attribute=value")."""
    from .planted import reliance_case

    f, s = world.falcon, world.settings
    H, _ = f.representations()
    out: dict[tuple[int, str], dict[str, Any]] = {}
    todo = []
    for corr in getattr(world.w, "correlations", []) or []:
        (a1, v1), = corr["if"].items()
        (a2, v2), = corr["then"].items()
        todo += [(t.feature, f"{a1}={v1}", f"{a2}={v2}") for t in world.clear
                 if t.name == f"{a1}={v1}"]
    for n, (feat, src, dst) in enumerate(todo):
        high = f.select_high(feat, s).indices
        out[(feat, dst)] = {"truth": src, "planted": dst,
                            **reliance_case(f.backbone, world.w, world.scenes, H, feat, high, src, dst)}
        if world.progress:
            world.progress(n + 1, len(todo), "reliance (re-rendered)")
    return out


def _reliance_of(world, dst: str) -> dict[int, dict[str, Any]]:
    """The features' reliance on the planted value ``dst`` (empty when it was not measured)."""
    return {feat: v for (feat, d), v in (getattr(world, "reliance", None) or {}).items()
            if d == dst}


def _pair_check(world: World, falcon, settings, scored) -> dict[str, Any]:
    """Every eligible pair (see the module docstring), explained together."""
    recovered = [r for r in scored if r["hit"]]
    Hn = falcon.normalized(settings.normalize_rows)
    _, valid = falcon.representations()
    high = (Hn > np.quantile(Hn[valid], 0.99, axis=0)) & valid[:, None]
    pairs = []
    for i, a in enumerate(recovered):
        for b in recovered[i + 1:]:
            if a["truth"].split("=")[0] == b["truth"].split("=")[0]:
                continue
            co = int((high[:, a["feature"]] & high[:, b["feature"]]).sum())
            if co >= PAIR_MIN_COFIRE:
                pairs.append((a, b, co))
    rows = []
    for n, (a, b, co) in enumerate(pairs):
        exp, err = falcon.try_explain([a["feature"], b["feature"]], settings)
        words = set(_words(exp)) | _phrase_words(exp)
        h1, h2 = bool(words & world.syn[a["truth"]]), bool(words & world.syn[b["truth"]])
        rows.append({"features": [a["feature"], b["feature"]], "truths": [a["truth"], b["truth"]],
                     "cofire": co, "holds_first": h1, "holds_second": h2, "holds_both": h1 and h2,
                     "words": _words(exp), "error": err})
        if world.progress:
            world.progress(n + 1, len(pairs), "pairs")
    return {"eligible": len(pairs), "holds_both": proportion(r["holds_both"] for r in rows),
            "min_cofire": PAIR_MIN_COFIRE, "pairs": rows}


def _chance(world: World, full_scored, n_perm: int = N_PERMUTATIONS, seed: int = 0):
    """Top-3 recovery of the full run's words against truths shuffled across clear features."""
    truths = [r["truth"] for r in full_scored]
    tops = [r["top_words"][:TOP_N] for r in full_scored]
    rng = np.random.default_rng(seed)
    per_feature = np.zeros(len(truths))
    totals = []
    for _ in range(n_perm):
        perm = rng.permutation(len(truths))
        hits = np.array([_hit(tops[i], world.syn[truths[j]]) for i, j in enumerate(perm)], float)
        per_feature += hits
        totals.append(hits.mean())
    per_feature /= max(n_perm, 1)
    lo, hi = np.percentile(totals, [2.5, 97.5]) if totals else (None, None)
    return per_feature, {"value": float(np.mean(totals)) if totals else None, "n": len(truths),
                         "permutations": n_perm,
                         "ci95": None if lo is None else [round(float(lo), 4), round(float(hi), 4)],
                         "interval": "2.5-97.5 percentiles over the permutations"}


def run_world(world: str | None = None, seed: int = 0, settings: FalconSettings | None = None,
              cache_dir: str | None = None, progress=None, max_features: int | None = None,
              compare: bool = False, pairs: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    label = WORLD_FILES.get(str(world or "default"), str(world))
    world = None if world in (None, "default") else world  # the app's name for the default world
    W = World(world, seed, settings, cache_dir, progress, max_features)
    f, s = W.falcon, W.settings
    s_nc = s.replace(contrast=False)
    timings: dict[str, float] = {}
    runs: dict[str, Any] = {}
    hits: dict[str, np.ndarray] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return out

    # does each planted case's feature respond to the planted value? (re-rendered scenes)
    W.reliance = timed("reliance", lambda: measure_reliance(W))
    # full pipeline, with and without the contrast step
    full_rows = timed("full", lambda: W.explain_all(f, s, "full"))
    full_nc = timed("full_no_contrast", lambda: W.explain_all(f, s_nc, "full, no contrast"))
    full_scored = _score_rows(W, full_rows, full_nc)
    runs["full"] = _figures(W, full_scored)
    hits["full"] = np.array([r["hit"] for r in full_scored], float)
    first = next((r["exp"] for r in full_rows if r["exp"] is not None), None)
    if first is not None:
        runs["full"]["spurious_threshold"] = first.low_selection.get("spurious")
        runs["full"]["hygiene"] = {k: v for k, v in first.hygiene.items()
                                   if k not in ("dropped_words", "dropped_phrases")}
    runs["full"]["hygiene_dropped_words"] = sorted({d["text"] for r in full_rows if r["exp"]
                                                    for d in r["exp"].hygiene.get("dropped_words", [])})

    # ablations: one component replaced each
    wrong = wrong_features(f, W.clear)
    variants = {
        "no_crop": lambda: no_crop(f),
        "wrong_cam": lambda: wrong_cam(f, wrong),
        "random_clip": lambda: random_clip(f, world),
    }
    ablation_rows: dict[str, list[dict[str, Any]]] = {}
    for name, make in variants.items():
        fa = make()
        rows = ablation_rows[name] = timed(name, lambda: W.explain_all(fa, s, name))
        scored = _score_rows(W, rows)
        runs[name] = _figures(W, scored)
        hits[name] = np.array([r["hit"] for r in scored], float)
    runs["wrong_cam"]["targets"] = {str(k): v for k, v in wrong.items()}

    # oracle CLIP (a reference: isolates the contrast step from CLIP quality)
    fo = oracle_clip(f, W.w, W.scenes, seed)
    o_rows = timed("oracle_clip", lambda: W.explain_all(fo, s, "oracle"))
    o_nc = timed("oracle_clip_no_contrast", lambda: W.explain_all(fo, s_nc, "oracle, no contrast"))
    o_scored = _score_rows(W, o_rows, o_nc)
    runs["oracle_clip"] = _figures(W, o_scored)
    hits["oracle_clip"] = np.array([r["hit"] for r in o_scored], float)

    # chance
    per_feature, chance = _chance(W, full_scored)
    runs["chance"] = {"top3_recovery": chance}
    hits["chance"] = per_feature

    checks = []
    for name in ABLATIONS:
        d = paired_difference(hits["full"], hits[name])
        ok = d["difference"] is not None and d["difference"] >= MARGIN and d["ci95"][0] > 0
        checks.append({"world": W.w.name, "ablation": name, **d, "margin": MARGIN, "ok": bool(ok)})
    # issue 7: the same difference where the crop can have an effect, reported (not held: on
    # the demo worlds the whole view names the truth of two-object scenes as well as the crop)
    runs["no_crop"]["where_the_crop_can_matter"] = no_crop_check(
        W.w.name, crop_scope(W, full_rows), hits["full"], hits["no_crop"])
    # the exit status's no-crop check: captions naming the other object (see OTHER_OBJECT_FIGURE)
    checks = hold_no_crop_on_other_objects(checks, no_crop_other_object_check(
        W.w.name, W.scenes, W.syn, full_rows, ablation_rows["no_crop"]))
    d = paired_difference(hits["oracle_clip"], hits["full"])
    reference = {"oracle_minus_full": d}

    result: dict[str, Any] = {
        "world": W.w.name, "world_file": label, "seed": seed,
        "num_features": f.num_features, "num_images": f.num_images,
        "clear_features": len(W.clear),
        "clear_by_attribute": {a: sum(t.attribute == a for t in W.clear)
                               for a in sorted({t.attribute for t in W.clear})},
        "fillers": W.fillers,
        "settings": {k: v for k, v in s.to_dict().items() if k != "batch_size"},
        "runs": runs, "checks": checks, "reference": reference,
        "per_feature": [{k: v for k, v in r.items() if k != "error"} for r in full_scored],
        "reliance": {"share": RELIANCE_SHARE, "cases": [v for v in W.reliance.values()]},
    }
    # issue 12: does the faithfulness score tell explanations that hold the truth from the others?
    result["faithfulness"] = faithfulness_bench.validate(full_scored)
    if pairs:
        result["pairs"] = timed("pairs", lambda: _pair_check(W, f, s, full_scored))
    if compare:
        result["compare"] = timed("compare", lambda: _compare(W, full_nc, o_nc, fo))
    timings["total"] = round(time.perf_counter() - t0, 1)
    result["seconds"] = timings
    return result


def _compare(W: World, full_nc, oracle_nc, fo) -> dict[str, Any]:
    """Counterfactual rule × spurious threshold (:func:`compare_pairs`), demo CLIP and oracle
    CLIP (same T, same truths)."""
    out: dict[str, Any] = {}
    for clip_name, falcon, nc in (("demo_clip", W.falcon, full_nc), ("oracle_clip", fo, oracle_nc)):
        rows_out = {}
        for rule, thr in compare_pairs(W.settings.low_rule):
            s = W.settings.replace(low_rule=rule, spurious_rule=thr)
            rows = W.explain_all(falcon, s, f"{clip_name} {rule} {thr}")
            fig = _figures(W, _score_rows(W, rows, nc))
            rows_out[f"{rule}/{thr}"] = {k: fig[k] for k in (
                "top3_recovery", "top3_recovery_no_contrast", "by_attribute",
                "spurious_removed", "spurious_removed_not_encoded",
                "spurious_removed_not_relied", "spurious_kept_relied", "true_kept",
                "filler_top_word")}
        out[clip_name] = rows_out
    return out


def compare_pairs(low_rule: str) -> list[tuple[str, str]]:
    """The (counterfactual rule, spurious rule) pairs of the side-by-side table: every rule with
    every threshold on L, and the ``conditional`` rule once, with the settings' own ``low_rule``
    (it does not use L to decide, so the counterfactual rule changes only what is shown)."""
    from ..stages.contrast import LOW_RULES, SPURIOUS_RULES

    on_l = [thr for thr in SPURIOUS_RULES if thr != "conditional"]
    pairs = [(rule, thr) for rule in LOW_RULES for thr in on_l]
    return pairs + [(low_rule, "conditional")] if "conditional" in SPURIOUS_RULES else pairs


CHOICE_WORLD = "assets/world_alt.json"
TRUE_KEPT_MIN = 0.9  # the target for "true concept kept by the contrast step"
CHOICE_CRITERION = (
    f"on {CHOICE_WORLD} (not the world the rules were developed on), demo CLIP: among the "
    f"counterfactual rule x spurious threshold pairs whose true concept kept is >= "
    f"{TRUE_KEPT_MIN:g}, the highest top-3 recovery; ties: more planted-spurious cases removed, "
    f"then the order of the rules (the authors' first). None eligible: the authors' global / "
    f"absolute.")


def choose_default(result: dict[str, Any]) -> dict[str, Any] | None:
    """The default counterfactual rule and spurious threshold by :data:`CHOICE_CRITERION`, from a
    result (``run``'s or ``--json``'s); None when it has no ``--compare`` table of
    :data:`CHOICE_WORLD`. The criterion was written down before the alt world was measured."""
    from ..stages.contrast import LOW_RULES, SPURIOUS_RULES

    world = next((w for w in result.get("worlds", []) if w.get("world_file") == CHOICE_WORLD
                  and "compare" in w), None)
    if world is None:
        return None
    table = world["compare"]["demo_clip"]

    def k(p):
        return -1 if not p or p.get("value") is None else p["k"]

    def order(key):
        rule, thr = key.split("/")
        return (LOW_RULES.index(rule) if rule in LOW_RULES else len(LOW_RULES),
                SPURIOUS_RULES.index(thr) if thr in SPURIOUS_RULES else len(SPURIOUS_RULES))

    eligible = [key for key, v in table.items()
                if (v.get("true_kept") or {}).get("value") is not None
                and v["true_kept"]["value"] >= TRUE_KEPT_MIN]
    if eligible:
        best = min(eligible, key=lambda key: (-k(table[key]["top3_recovery"]),
                                              -k(table[key]["spurious_removed"]), order(key)))
        why = (f"true kept {table[best]['true_kept']['value']:.2f} >= {TRUE_KEPT_MIN:g}; highest "
               f"top-3 recovery of the {len(eligible)} eligible pairs")
    else:
        best = "global/absolute"
        why = f"no pair keeps the true concept in >= {TRUE_KEPT_MIN:g}: the authors' rule stays"
    rule, thr = best.split("/")
    return {"low_rule": rule, "spurious_rule": thr, "world": CHOICE_WORLD,
            "eligible": sorted(eligible, key=order), "why": why, "criterion": CHOICE_CRITERION}


def run(worlds: Sequence[str | None] = (None,), seed: int = 0, cache_dir: str | None = None,
        progress=None, max_features: int | None = None, compare: bool = False,
        pairs: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    results = [run_world(w, seed=seed, cache_dir=cache_dir, progress=progress,
                         max_features=max_features, compare=compare, pairs=pairs)
               for w in worlds]
    checks = [c for r in results for c in r["checks"]]
    res = {"worlds": results, "checks": checks, "ok": all(c["ok"] for c in checks),
           "margin": MARGIN, "seconds": round(time.perf_counter() - t0, 1),
           "command": None}
    res["choice"] = choose_default(res)
    return res


# ---------------------------------------------------------------------------------- output

def _pct(p: dict[str, Any] | None, pct: str = "%", dash: str = "-", none: str = "n/a") -> str:
    """A proportion as "80% (8/10; 49-94)" (the console) or "80 % (8/10; 49–94)" (markdown)."""
    if not p or p.get("value") is None:
        return none
    ci = p.get("ci95")
    k = f"{p['k']}/{p['n']}" if "k" in p else f"n={p['n']}"
    v = f"{100 * p['value']:.0f}{pct}"
    return f"{v} ({k}; {100 * ci[0]:.0f}{dash}{100 * ci[1]:.0f})" if ci else f"{v} ({k})"


def format_world(r: dict[str, Any]) -> str:
    full = r["runs"]["full"]
    lines = [f"Concept recovery on the demo world '{r['world']}' ({r['world_file']}, seed {r['seed']}): "
             f"{r['num_features']} features, {r['num_images']} probe images, "
             f"{r['clear_features']} clear ({', '.join(f'{a} {n}' for a, n in r['clear_by_attribute'].items())})",
             "  [figure (k/n; 95 % Wilson interval)]",
             f"  top-3 recovery                  {_pct(full['top3_recovery'])}",
             f"  ... without the contrast step   {_pct(full['top3_recovery_no_contrast'])}"]
    for a, v in full["by_attribute"].items():
        lines.append(f"    {a:<12} {_pct(v['top3_recovery'])}   without contrast "
                     f"{_pct(v['top3_recovery_no_contrast'])}")
    lines += [f"  spurious removed                {_pct(full['spurious_removed'])}",
              f"  ... where the feature does not encode the planted value itself (AUC < "
              f"{ENCODES_AUC}): {_pct(full['spurious_removed_not_encoded'])}",
              f"  ... where the feature does not respond to it (re-rendered, reliance < "
              f"{RELIANCE_SHARE:.2f}): {_pct(full.get('spurious_removed_not_relied'))}",
              f"  planted value kept where the feature responds to it (reliance >= "
              f"{RELIANCE_SHARE:.2f}): {_pct(full.get('spurious_kept_relied'))}",
              f"  true concept kept by contrast   {_pct(full['true_kept'])}",
              f"  top word is a caption filler    {_pct(full['filler_top_word'])} "
              f"{full['filler_top_words'] or ''}"]
    st = full.get("spurious_threshold") or {}
    if st.get("description"):
        lines.append(f"  {st['description']}")
    for p in full.get("planted", []):
        lines.append(f"    {p['correlation']}: {p['n_cases']} cases, {p['removed']} removed; "
                     + ", ".join(f"{c['feature']}{'' if c['removed'] else ' kept'} "
                                 f"(AUC {c['auc_without_truth']}, reliance {c.get('reliance')})"
                                 for c in p["cases"]))
    if "pairs" in r:
        pr = r["pairs"]
        lines.append(f"  pairs holding both concepts     {_pct(pr['holds_both'])} of {pr['eligible']} "
                     f"eligible pairs")
    lines.append("  ablations (top-3 recovery; paired difference full - ablation, 95 % bootstrap):")
    for c in r["checks"]:
        run_fig = r["runs"][c["ablation"]]["top3_recovery"]
        if c.get("figure") == "other_object_captions":
            lines += _other_object_lines(run_fig, c)
            lines += _scope_lines(r["runs"][c["ablation"]].get("where_the_crop_can_matter"))
            continue
        lines.append(f"    {c['ablation']:<12} {_pct(run_fig):<28} difference {c['difference']:+.2f} "
                     f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]  {'ok' if c['ok'] else 'NOT CLEARLY BELOW'}")
        lines += _scope_lines(r["runs"][c["ablation"]].get("where_the_crop_can_matter"))
    o = r["runs"]["oracle_clip"]
    lines.append(f"    oracle CLIP  {_pct(o['top3_recovery'])} (without contrast "
                 f"{_pct(o['top3_recovery_no_contrast'])}; true kept {_pct(o['true_kept'])}; "
                 f"spurious removed {_pct(o['spurious_removed'])})")
    if "compare" in r:
        lines.append("  side by side (top-3 recovery | shape | spurious removed | ... not relied on "
                     "| true kept):")
        for clip_name, table in r["compare"].items():
            for key, v in table.items():
                shape = v["by_attribute"].get("shape", {}).get("top3_recovery")
                lines.append(f"    {clip_name:<11} {key:<18} {_pct(v['top3_recovery']):<26} "
                             f"{_pct(shape):<26} {_pct(v['spurious_removed']):<24} "
                             f"{_pct(v.get('spurious_removed_not_relied')):<24} "
                             f"{_pct(v['true_kept'])}")
    if r.get("faithfulness"):
        lines += faithfulness_bench.format_validation(r["faithfulness"])
    lines.append(f"  seconds: {r['seconds']}")
    return "\n".join(lines)


def _diff(d: dict[str, Any]) -> str:
    if d.get("difference") is None:
        return "n/a"
    return f"{d['difference']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"


def _other_object_lines(run_fig: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """The console lines of the held no-crop check (:func:`no_crop_other_object_check`)."""
    t = c.get("top3") or {}
    out = [f"    no_crop      {_pct(run_fig):<28} difference {_diff(t)}  (top-3 recall: "
           "reported, not held)",
           f"      held: {c['description']}, over {c['features']} features ({c['images']} images): "
           f"full {_pct(c['full_captions'])}, no crop {_pct(c['no_crop_captions'])}; per-feature "
           f"mean no crop - full {_diff(c)}  {'ok' if c['ok'] else 'NOT CLEARLY ABOVE'}"]
    for a, v in c.get("by_attribute", {}).items():
        out.append(f"        {a:<10} {v['features']} features, {v['images']} images: full "
                   f"{_pct(v['full_captions'])}, no crop {_pct(v['no_crop_captions'])}, "
                   f"no crop - full {_diff(v)}")
    return out


def _scope_lines(c: dict[str, Any] | None) -> list[str]:
    """No crop over the features where the crop can matter (:func:`no_crop_check`), reported."""
    if not c or c.get("difference") is None:
        return [] if not c else [f"      no clear feature is one of the {c['scope']}"]
    return [f"      over the {c['n']} {c['scope']}: full {_pct(c['full_in_scope'])}, no crop "
            f"{_pct(c['no_crop_in_scope'])}, difference {c['difference']:+.2f} "
            f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] (reported, not held; "
            f"{'would pass' if c['ok'] else 'would not pass'})"]


def _choice_line(res: dict[str, Any]) -> str:
    c = res["choice"] if "choice" in res else choose_default(res)
    if not c:
        return (f"Default rule: not chosen by this result (it needs --compare on {CHOICE_WORLD}; "
                f"criterion: {CHOICE_CRITERION})")
    return (f"Default rule by the criterion: {c['low_rule']} / {c['spurious_rule']} ({c['why']}). "
            f"Criterion: {c['criterion']}")


def format_result(res: dict[str, Any]) -> str:
    parts = [format_world(r) for r in res["worlds"]]
    parts.append(_choice_line(res))
    bad = [c for c in res["checks"] if not c["ok"]]
    parts.append("All ablations clearly below the full pipeline (margin "
                 f"{MARGIN:.2f})." if not bad else
                 "FAILED: the full pipeline is not clearly above: " +
                 ", ".join(f"{c['ablation']} ({c['world']})" for c in bad))
    return "\n\n".join(parts)


def _md(p: dict[str, Any] | None) -> str:
    return _pct(p, " %", "–", "–")


def markdown(res: dict[str, Any]) -> str:
    """The README's tables, from one result (``--json`` output)."""
    out = []
    worlds = res["worlds"]
    names = [f"{w['world']} (`{w.get('world_file', '?')}`)" for w in worlds]
    missing = [f for f in WORLD_FILES.values() if f not in {w.get("world_file") for w in worlds}]
    if missing:
        out += ["Not in this result: " + ", ".join(f"`{f}`" for f in missing) +
                f" (`{DOCS_COMMAND}` runs every committed world).", ""]
    if res.get("command"):
        out += [f"Measured by `{res['command'].strip()}` (seed "
                f"{', '.join(sorted({str(w.get('seed', 0)) for w in worlds}))}).", ""]
    out += [_choice_line(res).replace("--compare", "`--compare`"), ""]
    out.append("| figure (k/n; 95 % Wilson interval) | " + " | ".join(names) + " |")
    out.append("|---|" + "---|" * len(worlds))

    def row(label, get):
        out.append(f"| {label} | " + " | ".join(get(w) for w in worlds) + " |")

    row("settings: counterfactuals / spurious threshold / hygiene",
        lambda w: f"{w['settings'].get('low_rule', 'global')} / "
                  f"{w['settings'].get('spurious_rule', 'absolute')} / "
                  f"{'on' if w['settings'].get('concept_hygiene') else 'off'}")
    row("clear features", lambda w: f"{w['clear_features']} of {w['num_features']}")
    row("top-3 recovery, all clear features", lambda w: _md(w["runs"]["full"]["top3_recovery"]))
    row("… without the contrast step",
        lambda w: _md(w["runs"]["full"]["top3_recovery_no_contrast"]))
    attrs = sorted({a for w in worlds for a in w["runs"]["full"]["by_attribute"]})
    for a in attrs:
        row(f"— {a}", lambda w, a=a: _md(w["runs"]["full"]["by_attribute"].get(a, {})
                                         .get("top3_recovery")))
    row("spurious removed (planted)", lambda w: _md(w["runs"]["full"]["spurious_removed"]))
    row(f"… where the feature does not itself encode the planted value (AUC < {ENCODES_AUC})",
        lambda w: _md(w["runs"]["full"]["spurious_removed_not_encoded"]))
    reliance = any("spurious_removed_not_relied" in w["runs"]["full"] for w in worlds)
    if reliance:  # results older than the re-rendering test do not have these rows
        row(f"… where the feature does not respond to it (re-rendered, reliance < "
            f"{RELIANCE_SHARE:.2f})",
            lambda w: _md(w["runs"]["full"].get("spurious_removed_not_relied")))
        row(f"planted value kept where the feature responds to it (reliance ≥ "
            f"{RELIANCE_SHARE:.2f})", lambda w: _md(w["runs"]["full"].get("spurious_kept_relied")))
    row("true concept kept by the contrast step", lambda w: _md(w["runs"]["full"]["true_kept"]))
    row("top word is a caption filler", lambda w: _md(w["runs"]["full"]["filler_top_word"]))
    row("pairs holding both concepts", lambda w: (_md(w["pairs"]["holds_both"]) + f" of "
                                                  f"{w['pairs']['eligible']} eligible")
        if "pairs" in w else "–")
    for name in ABLATIONS:
        def get(w, name=name):
            c = next(c for c in w["checks"] if c["ablation"] == name)
            if c.get("figure") == "other_object_captions":
                return _other_object_md(w, c)
            return (f"{_md(w['runs'][name]['top3_recovery'])}; full − this {c['difference']:+.2f} "
                    f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] {'ok' if c['ok'] else '**not clearly below**'}")
        row(f"ablation: {name.replace('_', ' ')}", get)
    def scoped(w):
        c = w["runs"]["no_crop"].get("where_the_crop_can_matter")
        if not c or c.get("difference") is None:
            return "–"
        return (f"no crop {_md(c['no_crop_in_scope'])} vs full {_md(c['full_in_scope'])}; full − "
                f"no crop {c['difference']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] "
                "(reported, not held)")
    if any(w["runs"]["no_crop"].get("where_the_crop_can_matter") for w in worlds):
        row(f"… no crop over the {CROP_SCOPE}", scoped)
    held = [w for w in worlds for c in w["checks"] if c.get("figure") == "other_object_captions"]
    if held:  # results older than the held precision check do not have these rows
        _other_object_md_rows(worlds, row)
    row("reference: oracle CLIP", lambda w: _md(w["runs"]["oracle_clip"]["top3_recovery"]))
    row("… without the contrast step",
        lambda w: _md(w["runs"]["oracle_clip"]["top3_recovery_no_contrast"]))
    if all("compare" in w for w in worlds):
        out.append("")
        rel_cols = ["… not relied on", "relied on: kept"] if reliance else []
        cols = ["top-3 recovery"] + attrs + ["spurious removed", "… not encoded"] + rel_cols + [
            "true kept", "filler top word"]
        out.append("| world | CLIP | counterfactuals / threshold | " + " | ".join(cols) + " |")
        out.append("|---|---|---|" + "---|" * len(cols))
        for w in worlds:
            for clip_name, table in w["compare"].items():
                first = next(iter(table.values()))
                cells = [_md(first["top3_recovery_no_contrast"])] + [
                    _md(first["by_attribute"].get(a, {}).get("top3_recovery_no_contrast"))
                    for a in attrs] + ["–"] * (4 + len(rel_cols))
                out.append(f"| {w['world']} | {clip_name.replace('_', ' ')} | no contrast step | "
                           + " | ".join(cells) + " |")
                for key, v in table.items():
                    cells = [_md(v["top3_recovery"])] + [
                        _md(v["by_attribute"].get(a, {}).get("top3_recovery")) for a in attrs] + [
                        _md(v["spurious_removed"]), _md(v["spurious_removed_not_encoded"]),
                        *([_md(v.get("spurious_removed_not_relied")),
                           _md(v.get("spurious_kept_relied"))] if reliance else []),
                        _md(v["true_kept"]), _md(v["filler_top_word"])]
                    out.append(f"| {w['world']} | {clip_name.replace('_', ' ')} | {key} | "
                               + " | ".join(cells) + " |")
    return "\n".join(out)


def _held_no_crop(w: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in w["checks"] if c.get("figure") == "other_object_captions"), None)


def _other_object_md(w: dict[str, Any], c: dict[str, Any]) -> str:
    """The markdown cell of the no-crop ablation when its check is the precision figure."""
    t = c.get("top3") or {}
    return (f"top-3 {_md(w['runs']['no_crop']['top3_recovery'])}; full − this "
            f"{_diff(t)} (reported); held: captions naming the other object "
            f"no crop − full {_diff(c)} "
            f"{'ok' if c['ok'] else '**not clearly above**'}")


def _other_object_md_rows(worlds: list[dict[str, Any]], row: Callable) -> None:
    """Rows of the held no-crop figure: overall and per attribute, full and no crop, counted."""
    def cell(v):
        if not v or v.get("difference") is None:
            return "–"
        return (f"full {_md(v['full_captions'])}, no crop {_md(v['no_crop_captions'])}; "
                f"{v['features']} features, {v['images']} images; no crop − full "
                f"{_diff(v)}")
    row(f"no crop, held: {OTHER_OBJECT_FIGURE}",
        lambda w: cell(_held_no_crop(w)))
    attrs = sorted({a for w in worlds for a in (_held_no_crop(w) or {}).get("by_attribute", {})})
    for a in attrs:
        row(f"… {a} features (captions naming the other object)",
            lambda w, a=a: cell((_held_no_crop(w) or {}).get("by_attribute", {}).get(a)))


def write_readme(res: dict[str, Any], readme: Path = README) -> bool:
    """Rewrite the README's block between :data:`README_BEGIN` and :data:`README_END` with the
    tables of ``res``; False (and nothing written) when the README has no such block."""
    text = readme.read_text(encoding="utf-8")
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return False
    block = f"{README_BEGIN}\n\n{markdown(res)}\n\n{README_END}"
    new = text[:a] + block + text[b + len(README_END):]
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return True


def readme_block(readme: Path = README) -> str | None:
    """The tables in the README's recovery block (None when it has none)."""
    text = readme.read_text(encoding="utf-8")
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return None
    return text[a + len(README_BEGIN):b].strip()


def main(argv=None) -> int:
    from ..progress import null_progress, tqdm_progress

    p = argparse.ArgumentParser(prog="python -m falcon_core.bench recovery",
                                description="Does FALCON recover the demo worlds' known concepts, "
                                            "and does every stage matter?")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--seed", type=int, default=0, help="probe set seed")
    p.add_argument("--world", action="append", default=None,
                   help="world config (repeatable; default: assets/world.json)")
    p.add_argument("--compare", action="store_true",
                   help="also the side-by-side table of counterfactual rules and thresholds")
    p.add_argument("--no-pairs", action="store_true", help="skip the pair check")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--max-features", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--markdown", action="store_true", help="print the README's tables")
    p.add_argument("--from-json", default=None,
                   help="format a saved result (--json/--out output) instead of running")
    p.add_argument("--write-readme", action="store_true",
                   help="rewrite the README's recovery block with this result's tables")
    p.add_argument("--docs", action="store_true",
                   help="the README's figures in one run: both committed worlds "
                        f"({', '.join(WORLD_FILES.values())}), the side-by-side table and the pair "
                        f"check; writes {DOCS_JSON.relative_to(REPO)} and the README's block")
    args = p.parse_args(argv)
    if args.docs:
        if args.world or args.max_features or args.no_pairs or args.from_json:
            p.error("--docs runs the committed worlds in full; leave out --world, "
                    "--max-features, --no-pairs and --from-json")
        args.world, args.compare, args.write_readme = list(WORLD_FILES), True, True
        args.out = args.out or str(DOCS_JSON)
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        if args.write_readme and not write_readme(res):
            print(f"error: {README} has no block {README_BEGIN} ... {README_END}", file=sys.stderr)
            return 2
        print(markdown(res) if args.markdown else format_result(res))
        return 0 if res["ok"] else 1
    try:
        res = run(worlds=args.world or [None], seed=args.seed, cache_dir=args.cache_dir,
                  progress=null_progress if args.no_progress else tqdm_progress(),
                  max_features=args.max_features, compare=args.compare,
                  pairs=not args.no_pairs)
    except FalconError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res["command"] = "python -m falcon_core.bench recovery " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a != "--no-progress")
    text = json.dumps(res, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.write_readme and not write_readme(res):
        print(f"error: {README} has no block {README_BEGIN} ... {README_END}", file=sys.stderr)
        return 2
    print(text if args.json else markdown(res) if args.markdown else format_result(res))
    return 0 if res["ok"] else 1
