"""Two models compared on the same probe set, CLIP model and vocabulary (issue 12).

The paper transfers concepts between representation spaces through a linear map fitted on the
probe set. :class:`Comparison` holds two :class:`~falcon_core.pipeline.Falcon` workspaces that
differ only in the backbone (model A and model B; the probe set, the CLIP model and the
vocabulary are the same objects) and answers:

- :meth:`Comparison.maps`: the ridge maps B → A and A → B (:mod:`.stages.mapping`: λ chosen on
  held-out images, R² on a test split never used to fit or choose), on the row-normalised
  representations FALCON explains, over the images both models could read;
- :meth:`Comparison.matches`: for a feature of one model, its best-matching features in the
  other, by the map (the standardised weights with which the other model's features predict it)
  and by activation correlation (Pearson over the probe set), with the held-out R² of the map
  for that feature (how much of it the other model encodes at all);
- :meth:`Comparison.side_by_side`: the feature's explanation and its matches' explanations;
- :meth:`Comparison.summary`: what a stakeholder reads: the concepts one model's features
  encode (in an explanation's top 3 words) that no feature of the other encodes; the concepts
  removed as spurious (Stage 6) in one model and not in the other; the *companions* the
  explanations show: for a concept both models encode, the concepts its features' explanations
  carry along (kept or removed as spurious) in one model and not in the other; and the
  *reliance* the activations show (:meth:`Comparison.reliance`, :mod:`.stages.reliance`): for
  a concept *c* both models encode and a companion *d*, among the probe images CLIP names *c*,
  does the activation of each model's *c*-features rise when CLIP names *d* too? Mean ROC AUC
  per model, the difference on the same images with DeLong's interval, reported where the
  difference's interval (Bonferroni over every pair tested) excludes 0 and the carrying model's
  own AUC interval lies above 0.5 — "A's *heart* features rise with *brick*; B's do not".

The maps are cheap next to Stage 1 (an SVD of N × r), so they are computed in memory; every
explanation they use is the cached one of its workspace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import FalconError
from .stages import mapping
from .stages import reliance as reliance_stage

SIDES = ("a", "b")
# The summary: a concept is carried by a concept's features when at least this share of them
# hold it, and not carried by the other model's when at most this share of its features do.
CARRIED, NOT_CARRIED = 0.5, 0.2
TOP_ENCODED = 3  # a feature encodes the concepts of its top 3 words (as the recovery benchmark)
# The reliance test: a (concept, companion) pair is tested when at least this many of the images
# CLIP names the concept in also name the companion, and at least this many do not (DeLong's
# normal approximation needs a few dozen on each side); intervals are simultaneous at 95 %.
MIN_NAMED = 20
RELIANCE_ALPHA = 0.05


@dataclass
class FeatureMatch:
    feature: int
    by_map: list[tuple[int, float]]  # (feature of the other model, standardised weight)
    by_correlation: list[tuple[int, float]]  # (feature of the other model, Pearson r)
    r2: float  # held-out R² of the other model's map for this feature

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "r2": _num(self.r2),
                "by_map": [{"feature": int(f), "weight": _num(w)} for f, w in self.by_map],
                "by_correlation": [{"feature": int(f), "r": _num(r)}
                                   for f, r in self.by_correlation]}


@dataclass
class Summary:
    names: dict[str, str]
    explained: dict[str, int]
    unexplained: dict[str, dict[int, str]]
    only: dict[str, list[dict[str, Any]]]  # side -> concepts its features encode, the other's not
    spurious_only: dict[str, list[dict[str, Any]]]  # side -> concepts removed there only
    companions: list[dict[str, Any]]
    maps: dict[str, Any] = field(default_factory=dict)
    # the activation test (Comparison.reliance): pairs whose difference is significant, and how
    # many pairs were tested (the Bonferroni family) with the z of the intervals
    reliance: list[dict[str, Any]] = field(default_factory=list)
    reliance_tests: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "explained": self.explained,
                "unexplained": {s: {str(k): v for k, v in d.items()}
                                for s, d in self.unexplained.items()},
                "only": self.only, "spurious_only": self.spurious_only,
                "companions": self.companions, "reliance": self.reliance,
                "reliance_tests": self.reliance_tests, "maps": self.maps}


def _num(x) -> float | None:
    return None if x is None or x != x else float(x)


class Comparison:
    """Model A and model B on one probe set, CLIP model and vocabulary (see the module)."""

    def __init__(self, a, b, names: tuple[str, str] = ("A", "B")):
        for what in ("probe", "clip", "vocabulary"):
            fa, fb = getattr(a, what).fingerprint, getattr(b, what).fingerprint
            if fa != fb:
                raise FalconError(
                    f"The two models do not share the {what}: a comparison needs the same probe "
                    "set, CLIP model and vocabulary on both sides.",
                    f"Give both models the same {what} (only the backbone may differ).")
        self.falcons = {"a": a, "b": b}
        self.names = {"a": names[0], "b": names[1]}
        self._maps: dict[str, mapping.RidgeMap] | None = None
        self._corr: np.ndarray | None = None
        self._weights: dict[str, np.ndarray] = {}

    @classmethod
    def from_configs(cls, config_a, config_b, settings_a=None, settings_b=None,
                     cache_dir: str | None = None, progress=None,
                     names: tuple[str, str] | None = None) -> "Comparison":
        """Both workspaces; B takes A's CLIP model, probe set and vocabulary (its config's are
        not read), so both models see exactly the same inputs."""
        from .pipeline import Falcon

        a = Falcon.from_config(config_a, settings=settings_a, cache_dir=cache_dir,
                               progress=progress)
        return cls.with_model_b(a, config_b, settings_b, names)

    @classmethod
    def with_model_b(cls, a, config_b, settings_b=None,
                     names: tuple[str, str] | None = None) -> "Comparison":
        """Workspace ``a`` (model A) against the backbone of ``config_b``, which takes A's CLIP
        model, probe set, vocabulary, cache and progress."""
        from .pipeline import Falcon

        b = Falcon(config_b.build_backbone(), a.clip, a.probe, a.vocabulary,
                   settings=settings_b or config_b.default_settings(), cache=a.cache,
                   progress=a.progress, config=config_b)
        name_a = a.config.backbone if a.config is not None else "A"
        return cls(a, b, names or (name_a, config_b.backbone))

    def other(self, side: str) -> str:
        return "b" if side == "a" else "a"

    # ---- representations, maps, correlations ---------------------------------------------
    def _valid(self) -> np.ndarray:
        """The images both models could read (boolean over the probe set)."""
        valid = None
        for side in SIDES:
            _, v = self.falcons[side].representations()
            valid = v if valid is None else valid & v
        return valid

    def _matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(H_A, H_B): the row-normalised representations (as each workspace explains them) of
        the images both models could read."""
        out, valid = [], self._valid()
        for side in SIDES:
            f = self.falcons[side]
            out.append(np.asarray(f.normalized(f.settings.normalize_rows), dtype=np.float64)[valid])
        return out[0], out[1]

    def maps(self) -> dict[str, mapping.RidgeMap]:
        """``{"b_to_a": map predicting A from B, "a_to_b": the way back}``."""
        if self._maps is None:
            HA, HB = self._matrices()
            self._maps = {"b_to_a": mapping.fit_map(HB, HA), "a_to_b": mapping.fit_map(HA, HB)}
            self._weights = {"a": mapping.map_weights(self._maps["b_to_a"], HB, HA),
                             "b": mapping.map_weights(self._maps["a_to_b"], HA, HB)}
        return self._maps

    def correlations(self) -> np.ndarray:
        """(r_A, r_B) Pearson correlations of A's features with B's over the probe set."""
        if self._corr is None:
            self._corr = mapping.correlation(*self._matrices())
        return self._corr

    def map_report(self) -> dict[str, Any]:
        """The maps' λ and held-out R², for a table."""
        out = {}
        for key, m in self.maps().items():
            src, dst = key.split("_to_")
            out[key] = {"from": self.names[src], "to": self.names[dst],
                        "lambda": m.lam, "lambda_relative": m.lam_relative,
                        "r2_test": _num(m.r2_test),
                        "r2_choice": {str(k): _num(v) for k, v in m.r2_choice.items()},
                        "images": {"fit": m.n_fit, "choice": m.n_choice, "test": m.n_test},
                        "features_well_predicted": int(np.sum(m.r2_test_per_feature >= 0.5)),
                        "features": int(len(m.r2_test_per_feature))}
        return out

    # ---- one feature ------------------------------------------------------------------------
    def matches(self, side: str, feature: int, n: int = 3) -> FeatureMatch:
        """Feature ``feature`` of model ``side`` ("a" or "b") and its ``n`` best matches in the
        other model, by the map and by correlation."""
        if side not in SIDES:
            raise FalconError(f"Unknown side {side!r}.", "Use 'a' or 'b'.")
        f = int(self.falcons[side].features(int(feature))[0])  # checks the range
        maps = self.maps()
        m = maps["b_to_a" if side == "a" else "a_to_b"]
        weights = self._weights[side][f]
        corr = self.correlations()
        r = corr[f] if side == "a" else corr[:, f]
        by_map = [(int(j), float(weights[j])) for j in mapping.top_matches(weights[None], n)[0]]
        by_corr = [(int(j), float(r[j])) for j in mapping.top_matches(r[None], n)[0]]
        return FeatureMatch(f, by_map, by_corr, float(m.r2_test_per_feature[f]))

    def side_by_side(self, side: str, feature: int, n: int = 3) -> dict[str, Any]:
        """The feature's match and the explanations of it and of each match (None + the reason
        where a feature cannot be explained)."""
        match = self.matches(side, feature, n)
        other = self.other(side)
        exp, err = self.falcons[side].try_explain(match.feature)
        others = {}
        for j in dict.fromkeys([j for j, _ in match.by_map] + [j for j, _ in match.by_correlation]):
            others[j] = self.falcons[other].try_explain(j)
        return {"side": side, "match": match, "explanation": exp, "error": err,
                "others": others}

    # ---- what CLIP names in each image, and the reliance test --------------------------------
    def naming(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(concepts, named, images)``: ``named[i, j]`` is True when CLIP names concept
        ``concepts[j]`` in image ``images[i]`` (one of the words of its top captions, Stages 4-5
        on the whole view as model A sees it, so both models are tested on one naming), over the
        images both models could read. Cached (it runs the concept extraction on every caption
        the probe images name)."""
        if getattr(self, "_naming", None) is None:
            from . import cache_keys
            from .explainer_stages import score_caption_sets

            a = self.falcons["a"]
            images = np.flatnonzero(self._valid())
            k = int(a.settings.captions_per_image)
            views_key = cache_keys.view_embeddings(a.probe.fingerprint, a.backbone.fingerprint,
                                                   a.clip.fingerprint)
            key = cache_keys.concept_naming(views_key, a.vocabulary.fingerprint,
                                            a.explainer.extractor.fingerprint, k, images)

            def compute() -> dict[str, np.ndarray]:
                views = a.view_embeddings()
                (matches, _, _), = score_caption_sets(
                    [np.asarray(views[images], dtype=np.float32)], a.explainer.caption_index(),
                    a.vocabulary, a.explainer.extractor, k)
                named = [set().union(*(set(m.words) for m in row)) if row else set()
                         for row in matches]
                concepts = sorted(set().union(*named)) if named else []
                col = {c: j for j, c in enumerate(concepts)}
                out = np.zeros((len(images), len(concepts)), dtype=bool)
                for i, ws in enumerate(named):
                    out[i, [col[w] for w in ws]] = True
                return {"concepts": np.asarray(concepts, dtype=str), "named": out,
                        "images": images.astype(np.int64)}

            got = a.cache.get_or_compute_npz("concept_naming", key, compute)
            self._naming = ([str(c) for c in got["concepts"]], np.asarray(got["named"], bool),
                            np.asarray(got["images"], np.int64))
        return self._naming

    def reliance(self, features: dict[str, dict[str, list[int]]],
                 pairs: Sequence[tuple[str, str]] | None = None,
                 min_named: int = MIN_NAMED) -> list[dict[str, Any]]:
        """The concept-conditional test (:mod:`.stages.reliance`) of each (concept c,
        companion d): ``features[side][c]`` are model ``side``'s c-features (for the summary:
        those whose explanation's top 3 words hold c). Among the images CLIP names c in, each
        feature's ROC AUC for "d is named too"; per model the mean over its c-features; the
        difference A − B with its standard error (DeLong, same images for both models).

        ``pairs`` None: every concept both models have features for, against every other
        concept CLIP names in at least ``min_named`` of its images and not in at least
        ``min_named``. Rows have ``z`` (Bonferroni over the pairs tested), the intervals at
        that z, and ``in``: the side that carries d (its interval of the difference excludes 0
        and its own AUC interval lies above 0.5), or None."""
        concepts, named, images = self.naming()
        col = {c: j for j, c in enumerate(concepts)}
        H = dict(zip(SIDES, self._matrices()))  # rows: the same images as `named`
        shared = sorted(set(features["a"]) & set(features["b"]))
        todo = []
        for c in shared:
            if c not in col or not features["a"][c] or not features["b"][c]:
                continue
            rows = named[:, col[c]]
            sub = named[rows]
            count = sub.sum(axis=0)
            cands = [d for d in concepts if d != c and min_named <= count[col[d]]
                     <= len(sub) - min_named] if pairs is None else \
                [d for c2, d in pairs if c2 == c and d in col and d != c]
            for d in cands:
                todo.append((c, d, rows))
        z = reliance_stage.simultaneous_z(len(todo), RELIANCE_ALPHA)
        out = []
        for c, d, rows in todo:
            y = named[rows, col[d]]
            if y.sum() < 2 or (~y).sum() < 2:
                continue
            fa, fb = sorted(features["a"][c]), sorted(features["b"][c])
            r = reliance_stage.conditional_reliance(H["a"][rows][:, fa], H["b"][rows][:, fb], y)
            lo, hi = r.interval("diff", z)
            side = None
            if lo > 0 and r.interval("a", z)[0] > 0.5:
                side = "a"
            elif hi < 0 and r.interval("b", z)[0] > 0.5:
                side = "b"
            out.append({"concept": c, "companion": d, "in": side,
                        "features": {"a": fa, "b": fb},
                        "auc": {"a": round(r.auc_a, 4), "b": round(r.auc_b, 4)},
                        "auc_interval": {x: [round(v, 4) for v in r.interval(x, z)]
                                         for x in SIDES},
                        "difference": round(r.diff, 4),
                        "difference_interval": [round(lo, 4), round(hi, 4)],
                        "images": {"both_named": r.positives, "concept_only": r.negatives},
                        "z": round(z, 3), "tests": len(todo)})
        out.sort(key=lambda r: (r["in"] is None, -abs(r["difference"]), r["concept"],
                                r["companion"]))
        return out

    # ---- the summary --------------------------------------------------------------------------
    def explanations(self, side: str, features: Sequence[int] | None = None
                     ) -> tuple[dict[int, Any], dict[int, str]]:
        """Explanations of ``features`` of one model (all when None), and why others have none."""
        f = self.falcons[side]
        feats = list(range(f.num_features) if features is None else [int(x) for x in features])
        done, failed = {}, {}

        def keep(x: int, exp, err) -> None:
            if exp is None:
                failed[x] = err or "no explanation"
            else:
                done[x] = exp

        # the catalogue's precompute: features already explained are read back; the others share
        # their GradCAM forward passes and CLIP batches, chunk by chunk (resumable)
        f.precompute(feats, on_feature=keep)
        # in the order asked for, not the order precompute reported them (features already
        # cached come first): what the summary lists must not depend on what the cache held
        return {x: done[x] for x in dict.fromkeys(feats) if x in done}, failed

    def to_explain(self) -> dict[str, list[int]]:
        """Per side, the features whose explanation is not cached yet (what :meth:`summary`
        would compute; a file check each, nothing is read)."""
        out = {}
        for side in SIDES:
            f = self.falcons[side]
            ex = f.explainer
            out[side] = [x for x in range(f.num_features) if not f.cache.exists(
                "explanations", ex.explanation_key(f.features(x), f.settings), ".json")]
        return out

    def summary(self, features_a: Sequence[int] | None = None,
                features_b: Sequence[int] | None = None) -> Summary:
        exps, failed = {}, {}
        for side, feats in (("a", features_a), ("b", features_b)):
            exps[side], failed[side] = self.explanations(side, feats)
        s = summarise({k: list(v.items()) for k, v in exps.items()})
        maps = self.map_report()
        encoded = {side: {} for side in SIDES}
        for side in SIDES:
            for f, e in exps[side].items():
                for c in concept_sets(e)["encoded"]:
                    encoded[side].setdefault(c, []).append(f)
        rows = self.reliance(encoded)
        carried = [r for r in rows if r["in"] is not None]
        return Summary(names=dict(self.names), explained={k: len(v) for k, v in exps.items()},
                       unexplained=failed, only=s["only"], spurious_only=s["spurious_only"],
                       companions=s["companions"], maps=maps, reliance=carried,
                       reliance_tests={"tests": rows[0]["tests"] if rows else 0,
                                       "z": rows[0]["z"] if rows else None,
                                       "alpha": RELIANCE_ALPHA, "min_named": MIN_NAMED})


def concept_sets(exp) -> dict[str, set[str]]:
    """What one explanation says: ``encoded`` (its top-3 kept words), ``kept`` (every kept word),
    ``removed`` (the words removed as spurious)."""
    return {"encoded": {c.text for c in exp.words[:TOP_ENCODED]},
            "kept": {c.text for c in exp.words},
            "removed": {c.text for c in exp.spurious_words}}


def summarise(explanations: dict[str, list[tuple[int, Any]]]) -> dict[str, Any]:
    """The summary of two models' explanations (``{"a": [(feature, explanation)], "b": ...}``):

    - ``only[side]``: concepts in the top 3 words of some feature of ``side`` and of no feature
      of the other, most features first;
    - ``spurious_only[side]``: concepts removed as spurious from some feature of ``side`` and
      from none of the other's;
    - ``companions``: for each concept c encoded by features of both models, each concept d
      held (kept or removed) by at least ``CARRIED`` of one model's c-features and at most
      ``NOT_CARRIED`` of the other's, with the counts.
    """
    sets = {side: [(f, concept_sets(e)) for f, e in items]
            for side, items in explanations.items()}

    def index(side: str, kind: str) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for f, cs in sets[side]:
            for c in cs[kind]:
                out.setdefault(c, []).append(f)
        return out

    enc = {s: index(s, "encoded") for s in SIDES}
    rem = {s: index(s, "removed") for s in SIDES}
    only, spurious_only = {}, {}
    for s in SIDES:
        o = "b" if s == "a" else "a"
        only[s] = [{"concept": c, "features": fs} for c, fs in
                   sorted(enc[s].items(), key=lambda kv: (-len(kv[1]), kv[0])) if c not in enc[o]]
        spurious_only[s] = [{"concept": c, "features": fs} for c, fs in
                            sorted(rem[s].items(), key=lambda kv: (-len(kv[1]), kv[0]))
                            if c not in rem[o]]
    companions = []
    for c in sorted(set(enc["a"]) & set(enc["b"])):
        feats = {s: set(enc[s][c]) for s in SIDES}
        held: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SIDES}
        for s in SIDES:
            for f, cs in sets[s]:
                if f not in feats[s]:
                    continue
                for kind in ("kept", "removed"):
                    for d in cs[kind] - {c}:
                        held[s].setdefault(d, {"kept": 0, "removed": 0})[kind] += 1
        for d in sorted(set(held["a"]) | set(held["b"])):
            share = {s: sum(held[s].get(d, {}).values()) / len(feats[s]) for s in SIDES}
            for s in SIDES:
                o = "b" if s == "a" else "a"
                if share[s] >= CARRIED and share[o] <= NOT_CARRIED:
                    companions.append({
                        "concept": c, "companion": d, "in": s,
                        "features": {x: sorted(feats[x]) for x in SIDES},
                        "share": {x: round(share[x], 3) for x in SIDES},
                        "kept": {x: held[x].get(d, {}).get("kept", 0) for x in SIDES},
                        "removed": {x: held[x].get(d, {}).get("removed", 0) for x in SIDES}})
    companions.sort(key=lambda r: (-abs(r["share"]["a"] - r["share"]["b"]), r["concept"],
                                   r["companion"]))
    return {"only": only, "spurious_only": spurious_only, "companions": companions}


def format_summary(s: Summary, limit: int = 12) -> str:
    """The summary as text a stakeholder can read."""
    A, B = s.names["a"], s.names["b"]
    lines = [f"Comparing model A ({A}) with model B ({B}) on the same probe set, CLIP and "
             f"vocabulary: {s.explained['a']} features of A and {s.explained['b']} of B explained."]
    for key, m in s.maps.items():
        lines.append(f"  map {m['from']} -> {m['to']}: held-out R² {_fmt(m['r2_test'])} "
                     f"({m['features_well_predicted']} of {m['features']} features with R² >= "
                     f"0.5; λ = {m['lambda_relative']:g} × mean squared singular value, chosen "
                     f"on {m['images']['choice']} held-out images, tested on "
                     f"{m['images']['test']})")
    for side, o in (("a", "b"), ("b", "a")):
        items = s.only[side][:limit]
        lines.append(f"\nConcepts {s.names[side]} encodes and {s.names[o]} does not "
                     f"(in a feature's top {TOP_ENCODED} words):")
        lines += [f"  {r['concept']:<20} features {_feats(r['features'])}" for r in items] or \
            ["  (none)"]
    for side, o in (("a", "b"), ("b", "a")):
        items = s.spurious_only[side][:limit]
        lines.append(f"\nRemoved as spurious in {s.names[side]}, never in {s.names[o]}:")
        lines += [f"  {r['concept']:<20} features {_feats(r['features'])}" for r in items] or \
            ["  (none)"]
    lines.append("\nWhat the features of a shared concept carry along in one model only "
                 "(kept or removed as spurious):")
    for r in s.companions[:limit]:
        s_, o = r["in"], "b" if r["in"] == "a" else "a"
        lines.append(
            f"  {s.names[s_]}'s '{r['concept']}' features carry '{r['companion']}': "
            f"{_share(r, s_)} ({r['kept'][s_]} kept, {r['removed'][s_]} removed as spurious); "
            f"{s.names[o]}'s: {_share(r, o)}")
    if not s.companions:
        lines.append("  (none)")
    t = s.reliance_tests or {}
    lines.append(f"\nWhat the activations show: among the images CLIP names a shared concept in, "
                 f"the concept's features rise with a companion in one model only (mean ROC AUC "
                 f"per model, difference A - B with its interval; {t.get('tests', 0)} pairs "
                 f"tested, intervals simultaneous at {100 * (1 - t.get('alpha', 0.05)):.0f} %):")
    for r in s.reliance[:limit]:
        s_ = r["in"]
        lo, hi = r["difference_interval"]
        lines.append(
            f"  {s.names[s_]}'s '{r['concept']}' features rise with '{r['companion']}': AUC "
            f"{r['auc']['a']:.2f} in {A}, {r['auc']['b']:.2f} in {B}; difference "
            f"{r['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] over {r['images']['both_named']} + "
            f"{r['images']['concept_only']} images")
    if not s.reliance:
        lines.append("  (none)")
    return "\n".join(lines)


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _feats(fs: Sequence[int], n: int = 8) -> str:
    return ", ".join(map(str, fs[:n])) + (f" … ({len(fs)})" if len(fs) > n else "")


def _share(r: dict, side: str) -> str:
    n = len(r["features"][side])
    return f"{round(r['share'][side] * n)} of {n}"
