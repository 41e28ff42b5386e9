"""Stage 2's rules for the highly activating images T, one module each, registered by name.

=============  =====================================================  =====================
name           T                                                      module
=============  =====================================================  =====================
``global``     every feature of the group > one global α (authors)    ``global_threshold``
``topk``       the k images with the largest summed activation        ``top_k``
``quantile``   every feature above its own per-feature quantile       ``quantile``
=============  =====================================================  =====================

A new rule is a :class:`HighRule` subclass in its own module, added to :data:`RULES`; the
settings (``FalconSettings.high_rule``), the command line and the app offer every registered
name.
"""

from ...registry import Registry
from .base import HighRule
from .global_threshold import GlobalThreshold
from .quantile import Quantile
from .top_k import TopK

RULES = Registry("rule for highly activating images")
for _rule in (GlobalThreshold, TopK, Quantile):
    RULES.register(_rule.name, _rule)

__all__ = ["RULES", "HighRule", "GlobalThreshold", "TopK", "Quantile"]
