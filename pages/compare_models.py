"""Compare models: the workspace's backbone (A) against another (B) on the same probe set, CLIP
and vocabulary — the linear maps between them, a feature's best matches with both explanations,
and what one model encodes (or has removed as spurious) that the other does not. The layout and
logic are in ui/compare.py."""

from ui import compare, shell

shell.page(compare.run)
