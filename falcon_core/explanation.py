"""One explanation of a feature (or a group of features), as one object saved as JSON or CSV.

Reading one back (:meth:`Explanation.from_dict` / :meth:`Explanation.from_json`) validates it
against the schema these dataclasses define — every field present, of its type, nothing unknown —
with pydantic (strict: ``"3"`` is not a number, ``1`` is not a boolean). A JSON ``null`` in a
number field stands for NaN (the JSON export writes NaN as null). A value that does not fit raises
:class:`ExplanationFormatError` (a :class:`~falcon_core.errors.FalconError` and a ValueError) that
names the first fields that are wrong; the disk cache then moves the file aside and recomputes it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from .errors import FalconError

FORMAT_VERSION = 1
_STRICT = ConfigDict(extra="forbid", strict=True)


def _nan_for_null(value: Any) -> Any:
    return math.nan if value is None else value


#: A float that may be NaN (written as null in JSON).
Number = Annotated[float, BeforeValidator(_nan_for_null)]


class ExplanationFormatError(FalconError, ValueError):
    """A dictionary or JSON text that is not a FALCON explanation of this version."""


@dataclass
class Concept:
    """A word or phrase with its Word Score on the high images (T) and on the counterfactuals (L)."""

    text: str
    score: Number
    l_score: Number = 0.0

    __pydantic_config__ = _STRICT


@dataclass
class CaptionMatch:
    index: int  # row of the caption in the vocabulary
    text: str
    score: Number  # cosine similarity of the image (crop) and the caption
    words: list[str] = field(default_factory=list)  # the caption's concepts (Stage 5)
    phrases: list[str] = field(default_factory=list)

    __pydantic_config__ = _STRICT


@dataclass
class ImageRecord:
    index: int  # row in the probe set
    id: str
    activation: Number  # (summed) normalised activation of the explained feature(s)
    captions: list[CaptionMatch] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None  # crop box in the view image (x0, y0, x1, y1)
    box_fallback: bool = False  # True when the CAM mask was empty and the whole image was used
    similarity: float | None = None  # L images: similarity to the mean of T (Eq. 2)

    __pydantic_config__ = _STRICT


@dataclass
class FaithfulnessScore:
    """How well ranking the probe images by some concepts predicts the feature (issue 12; see
    :mod:`falcon_core.stages.faithfulness`)."""

    concepts: list[str]  # the concepts combined, best first
    weights: list[Number]  # their Word Scores (the weights of the combination)
    auc: Number  # ROC AUC of "top k by concept similarity" vs the rest, by activation
    spearman: Number  # rank correlation of concept similarity and activation, every image
    k: int
    n_images: int

    __pydantic_config__ = _STRICT


@dataclass
class Faithfulness:
    """The faithfulness of the kept concepts and of those removed as spurious."""

    kept: FaithfulnessScore | None  # None: no concept kept
    removed: FaithfulnessScore | None  # None: nothing removed
    per_concept: dict[str, Number]  # each shown concept (kept or removed) alone: its AUC
    method: str  # one sentence: how the score is computed

    __pydantic_config__ = _STRICT


@dataclass
class Explanation:
    features: list[int]
    words: list[Concept]
    phrases: list[Concept]
    spurious_words: list[Concept]
    spurious_phrases: list[Concept]
    high: list[ImageRecord]
    low: list[ImageRecord]
    coherence: Number
    interpretable: bool
    high_selection: dict[str, Any]
    low_selection: dict[str, Any]
    settings: dict[str, Any]
    inputs: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # Word Scores of every concept before the top-n cut (for provenance and the sliders).
    all_word_scores: dict[str, Number] = field(default_factory=dict)
    all_phrase_scores: dict[str, Number] = field(default_factory=dict)
    # Kept concepts ranked below the top-n cut, best first (the Spurious concepts page lists
    # them, so a concept the removal threshold lets back in is shown among the kept ones).
    more_words: list[Concept] = field(default_factory=list)
    more_phrases: list[Concept] = field(default_factory=list)
    # Concept hygiene: words/phrases dropped for being concepts of most captions, with their
    # Word Score on T and document frequency (see Falcon._hygiene_record).
    hygiene: dict[str, Any] = field(default_factory=dict)
    # Does ranking the probe images by the concepts predict the feature? (None: not computed)
    faithfulness: Faithfulness | None = None
    version: int = FORMAT_VERSION

    __pydantic_config__ = _STRICT

    @property
    def label(self) -> str:
        if len(self.features) == 1:
            return f"feature {self.features[0]}"
        return "features " + " + ".join(str(f) for f in self.features)

    def top_concepts(self, n: int = 3) -> list[str]:
        return [c.text for c in self.words[:n]]

    @property
    def faithfulness_auc(self) -> float:
        """The kept concepts' faithfulness AUC (NaN when not computed or nothing was kept)."""
        f = self.faithfulness
        return math.nan if f is None or f.kept is None else float(f.kept.auc)

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The explanation as JSON-ready dicts and lists (what ``dataclasses.asdict`` then
        :func:`_clean` gave, in one walk without asdict's deep copy: same keys, order, values)."""
        return _clean(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Any) -> "Explanation":
        """An explanation from its dictionary (``to_dict``), validated against the schema.

        Raises :class:`ExplanationFormatError` when ``d`` is not an explanation of this version."""
        try:
            text = json.dumps(d, allow_nan=True)
        except (TypeError, ValueError, RecursionError) as e:
            raise ExplanationFormatError(f"Not a FALCON explanation: {e}") from e
        return cls.from_json(text)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Explanation":
        """An explanation from its JSON text, validated against the schema."""
        try:
            exp = _adapter().validate_json(text, strict=True)
        except ValidationError as e:
            problems = []
            for err in e.errors()[:3]:
                where = ".".join(str(x) for x in err.get("loc", ())) or "the top level"
                problems.append(f"{where}: {err.get('msg', 'invalid')}")
            more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
            raise ExplanationFormatError(
                "Not a FALCON explanation: " + "; ".join(problems) + more + ".",
                "Explain the feature again (the JSON was damaged or written by another "
                "program).") from e
        if exp.version != FORMAT_VERSION:
            raise ExplanationFormatError(
                f"An explanation of format version {exp.version}; this version reads "
                f"{FORMAT_VERSION}.", "Explain the feature again.")
        return exp

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

    def provenance(self, concept: str, concept_sets: dict[str, set[str]] | None = None,
                   of: str = "high") -> list[tuple[ImageRecord, CaptionMatch]]:
        """The (image, caption) pairs a concept came from: of the highly activating images T
        (``of="high"``, its Word Score) or of the counterfactuals L (``of="low"``, its L score).

        A caption holds the concept when it is among the caption's extracted words or phrases
        (stored with each caption); ``concept_sets`` (caption text -> its concepts) overrides
        them, and captions stored without concepts fall back to a whole-word test (never a
        substring: "star" is not in "starfish").
        """
        if of not in ("high", "low"):
            raise ValueError(f"of must be 'high' or 'low', not {of!r}")
        out = []
        needle = concept.lower()
        for rec in self.high if of == "high" else self.low:
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


_ADAPTER: TypeAdapter | None = None


def _adapter() -> TypeAdapter:
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(Explanation)
    return _ADAPTER


_PLAIN = (str, int, bool, type(None))
_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return names


def _clean(obj: Any) -> Any:
    """JSON-safe copy: dataclasses -> dicts of their fields (in order, as ``asdict``), NaN ->
    None, numpy scalars -> python, tuples -> lists. Other objects are returned as they are
    (asdict deep-copied them; an explanation holds none: every value is one of these)."""
    t = type(obj)
    if t in _PLAIN:
        return obj
    if t is float:
        return None if obj != obj else obj
    if t is list or t is tuple:
        return [_clean(v) for v in obj]
    if t is dict:
        return {str(k): _clean(v) for k, v in obj.items()}
    if is_dataclass(obj) and not isinstance(obj, type):
        return {name: _clean(getattr(obj, name)) for name in _field_names(t)}
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj
