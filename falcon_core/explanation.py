"""One explanation of a feature (or a group of features), as one object saved as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1


@dataclass
class Concept:
    """A word or phrase with its Word Score on the high images (T) and on the counterfactuals (L)."""

    text: str
    score: float
    l_score: float = 0.0


@dataclass
class CaptionMatch:
    index: int  # row of the caption in the vocabulary
    text: str
    score: float  # cosine similarity of the image (crop) and the caption
    words: list[str] = field(default_factory=list)  # the caption's concepts (Stage 5)
    phrases: list[str] = field(default_factory=list)


@dataclass
class ImageRecord:
    index: int  # row in the probe set
    id: str
    activation: float  # (summed) normalised activation of the explained feature(s)
    captions: list[CaptionMatch] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None  # crop box in the view image (x0, y0, x1, y1)
    box_fallback: bool = False  # True when the CAM mask was empty and the whole image was used
    similarity: float | None = None  # L images: similarity to the mean of T (Eq. 2)


@dataclass
class Explanation:
    features: list[int]
    words: list[Concept]
    phrases: list[Concept]
    spurious_words: list[Concept]
    spurious_phrases: list[Concept]
    high: list[ImageRecord]
    low: list[ImageRecord]
    coherence: float
    interpretable: bool
    high_selection: dict[str, Any]
    low_selection: dict[str, Any]
    settings: dict[str, Any]
    inputs: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # Word Scores of every concept before the top-n cut (for provenance and the sliders).
    all_word_scores: dict[str, float] = field(default_factory=dict)
    all_phrase_scores: dict[str, float] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def label(self) -> str:
        if len(self.features) == 1:
            return f"feature {self.features[0]}"
        return "features " + " + ".join(str(f) for f in self.features)

    def top_concepts(self, n: int = 3) -> list[str]:
        return [c.text for c in self.words[:n]]

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Explanation":
        d = dict(d)
        for key in ("words", "phrases", "spurious_words", "spurious_phrases"):
            d[key] = [Concept(**c) for c in d.get(key, [])]
        for key in ("high", "low"):
            records = []
            for r in d.get(key, []):
                r = dict(r)
                r["captions"] = [CaptionMatch(**c) for c in r.get("captions", [])]
                if r.get("box") is not None:
                    r["box"] = tuple(r["box"])
                records.append(ImageRecord(**r))
            d[key] = records
        if d.get("coherence") is None:
            d["coherence"] = float("nan")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Explanation":
        return cls.from_dict(json.loads(text))

    def concept_rows(self) -> list[dict[str, Any]]:
        """Every concept, kept and spurious, as flat rows (the CSV export)."""
        rows = []
        for kind, kept, removed in (
            ("word", self.words, self.spurious_words),
            ("phrase", self.phrases, self.spurious_phrases),
        ):
            for rank, c in enumerate(kept, 1):
                rows.append(dict(features=" ".join(map(str, self.features)), kind=kind,
                                 concept=c.text, rank=rank, t_score=round(c.score, 6),
                                 l_score=round(c.l_score, 6), status="kept"))
            for c in removed:
                rows.append(dict(features=" ".join(map(str, self.features)), kind=kind,
                                 concept=c.text, rank="", t_score=round(c.score, 6),
                                 l_score=round(c.l_score, 6), status="spurious"))
        return rows

    def to_csv(self) -> str:
        buf = io.StringIO()
        fields = ["features", "kind", "concept", "rank", "t_score", "l_score", "status"]
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.concept_rows())
        return buf.getvalue()

    def provenance(self, concept: str, concept_sets: dict[str, set[str]] | None = None
                   ) -> list[tuple[ImageRecord, CaptionMatch]]:
        """The (T image, caption) pairs a concept came from.

        A caption holds the concept when it is among the caption's extracted words or phrases
        (stored with each caption); ``concept_sets`` (caption text -> its concepts) overrides
        them, and captions stored without concepts fall back to a whole-word test.
        """
        out = []
        needle = concept.lower()
        for rec in self.high:
            for cap in rec.captions:
                if concept_sets is not None:
                    hit = needle in concept_sets.get(cap.text, set())
                elif cap.words or cap.phrases:
                    hit = needle in cap.words or needle in cap.phrases
                else:
                    hit = f" {needle} " in f" {' '.join(cap.text.lower().split())} "
                if hit:
                    out.append((rec, cap))
        return out


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN -> None, numpy scalars -> python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj
