"""Every constant of FALCON, as one settings object whose defaults are the authors'.

See the table at the end of FALCON.md. Deviations from the authors' code that are not constants
(off-diagonal coherence, cosine scores instead of per-shard softmax, eval mode) are not settings:
they are fixes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import FalconError
from .stages.high_rules import RULES

HIGH_RULES = tuple(RULES.names())  # the registered rules for Stage 2's T (stages/high_rules/)


@dataclass(frozen=True)
class FalconSettings:
    # Stage 1
    normalize_rows: bool = True  # authors: L2-normalise each row of H before thresholding
    batch_size: int = 64
    # Stage 2: which images are "highly activating"
    high_rule: str = "global"  # "global": alpha = mean + alpha_std * std of Hn (authors)
    alpha_std: float = 5.0
    top_k: int = 20  # for high_rule == "topk"
    quantile: float = 0.99  # for high_rule == "quantile" (per feature)
    max_high_images: int = 0  # cap on |T| (best first); 0 = no cap (authors)
    # Stage 3
    cam_threshold: float = 0.6
    # Stage 4
    captions_per_image: int = 5
    # Stage 5
    top_words: int = 8
    top_phrases: int = 8
    # Stage 6
    contrast: bool = True
    low_threshold: float | None = None  # epsilon; None = global mean of Hn (authors)
    beta: float = 0.3
    max_low_images: int = 10
    spurious_threshold: float = 0.1
    # Stage 7
    coherence_threshold: float = 0.8
    # Stage 8
    group_min_images: int = 11
    group_min_size: int = 2

    def __post_init__(self) -> None:
        if self.high_rule not in RULES:
            raise FalconError(
                f"Unknown rule for highly activating images: {self.high_rule!r}.",
                f"Use one of {', '.join(RULES.names())}.",
            )
        checks = [
            ("batch_size", self.batch_size >= 1),
            ("top_k", self.top_k >= 1),
            ("quantile", 0.0 < self.quantile < 1.0),
            ("max_high_images", self.max_high_images >= 0),
            ("cam_threshold", 0.0 <= self.cam_threshold < 1.0),
            ("captions_per_image", self.captions_per_image >= 1),
            ("top_words", self.top_words >= 0),
            ("top_phrases", self.top_phrases >= 0),
            ("max_low_images", self.max_low_images >= 0),
            ("group_min_images", self.group_min_images >= 1),
            ("group_min_size", self.group_min_size >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise FalconError(f"Setting {name}={getattr(self, name)!r} is out of range.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FalconSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise FalconError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
        return cls(**data)

    def replace(self, **changes: Any) -> "FalconSettings":
        return dataclasses.replace(self, **changes)
