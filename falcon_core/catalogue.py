"""What a workspace holds across features: :class:`Catalogue`.

Everything here looks at many features at once: the explanations already cached (``explained``,
``search``), explaining many features ahead (``precompute``, resumable because each explanation
is cached as soon as it is done), Stage 8's discovered groups and the co-activation map that helps
choose pairs, and what the cache holds for this workspace (``status``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .cache import DiskCache
from .explainer import Explainer
from .explanation import Explanation
from .progress import Progress
from .representation_store import RepresentationStore
from .settings import FalconSettings
from .stages import groups as groups_stage


class Catalogue:
    """Many features of one workspace at once (see the module docstring)."""

    def __init__(self, store: RepresentationStore, explainer: Explainer, cache: DiskCache,
                 settings: FalconSettings, progress: Progress):
        self.store = store
        self.explainer = explainer
        self.cache = cache
        self.settings = settings
        self.progress = progress

    def explained(self, settings: FalconSettings | None = None) -> dict[int, Explanation]:
        """Every single-feature explanation already computed with these settings."""
        out = {}
        for f in range(self.store.num_features):
            exp = self.explainer.cached_explanation(f, settings)
            if exp is not None:
                out[f] = exp
        return out

    def precompute(self, features: Sequence[int] | None = None,
                   settings: FalconSettings | None = None,
                   on_feature: Callable[[int, Explanation | None, str | None], None] | None = None
                   ) -> dict[int, str | None]:
        """Explain many features (resumable: each explanation is cached as soon as it is done).

        Returns ``{feature: None or the message of why it has no explanation}``.
        """
        self.store.representations()
        self.explainer.text_embeddings()
        feats = list(range(self.store.num_features)) if features is None else list(features)
        result: dict[int, str | None] = {}
        for n, f in enumerate(feats):
            exp, err = self.explainer.try_explain(f, settings)
            result[f] = err
            if on_feature:
                on_feature(f, exp, err)
            self.progress(n + 1, len(feats), "features")
        return result

    def search(self, word: str, settings: FalconSettings | None = None,
               include_phrases: bool = True) -> list[dict[str, Any]]:
        """Features whose concepts contain ``word``, over all features explained so far."""
        needle = word.strip().lower()
        if not needle:
            return []
        hits = []
        for f, exp in self.explained(settings).items():
            pools = [("word", exp.words)] + ([("phrase", exp.phrases)] if include_phrases else [])
            for kind, items in pools:
                for rank, c in enumerate(items, 1):
                    if needle == c.text or (kind == "phrase" and needle in c.text.split()):
                        hits.append({"feature": f, "concept": c.text, "kind": kind,
                                     "rank": rank, "score": c.score,
                                     "coherence": exp.coherence})
        hits.sort(key=lambda h: (-h["score"], h["feature"]))
        return hits

    def groups(self, settings: FalconSettings | None = None) -> list[groups_stage.Group]:
        """Stage 8: groups of features discovered by their images' activation signatures."""
        s = settings or self.settings
        Hn = self.store.normalized(s.normalize_rows)
        return groups_stage.discover_groups(Hn, mask=self.store.high_mask(s),
                                            min_images=s.group_min_images,
                                            min_size=s.group_min_size, valid=self.store.valid)

    def groups_hint(self, settings: FalconSettings | None = None, most: int = 3
                    ) -> list[dict[str, Any]]:
        """When no group is discovered: the single setting changes that give some, as
        ``[{"setting", "value", "groups"}]``, most groups first (empty when none helps).

        Tried: a lower k in α = mean + k·std, a larger top-k, a lower quantile (whichever the
        discovery reads), and fewer images per group.
        """
        s = settings or self.settings
        tries: list[tuple[str, Any]] = []
        for k in (s.alpha_std - 1, s.alpha_std - 2, s.alpha_std - 3):
            if k > 0:
                tries.append(("alpha_std", float(k)))
        tries += [("top_k", s.top_k * 2), ("top_k", s.top_k * 5)]
        tries += [("quantile", q) for q in (0.98, 0.95) if q < s.quantile]
        tries += [("group_min_images", n) for n in (5, 3) if n < s.group_min_images]
        found: dict[str, dict[str, Any]] = {}
        for name, value in tries:
            if name in found:
                continue  # the gentlest change of each setting that gives a group
            n = len(self.groups(s.replace(**{name: value})))
            if n:
                found[name] = {"setting": name, "value": value, "groups": n}
        return sorted(found.values(), key=lambda h: -h["groups"])[:most]

    def coactivation(self, features: Sequence[int] | None = None,
                     settings: FalconSettings | None = None) -> np.ndarray:
        """The Jaccard index of the sets T (the settings' rule) of every two of ``features``, in
        the order given; every feature when ``features`` is None."""
        s = settings or self.settings
        feats = (list(range(self.store.num_features)) if features is None
                 else list(self.store.features(features)))
        return groups_stage.jaccard(self.store.high_mask(s)[:, feats])

    def status(self) -> dict[str, Any]:
        """What is already computed for this workspace, and how big the cache is."""
        done = self.explained()
        return {
            "representations": self.store.is_computed(),
            "explained_features": len(done),
            "num_features": self.store.num_features,
            "cache_bytes": self.cache.size_bytes(),
            "cache_root": str(self.cache.root),
        }
