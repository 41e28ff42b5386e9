"""Compare models: the workspace's backbone (A) against another (B) on the same probe set, CLIP
and vocabulary — the linear maps between them, a feature's best matches with both explanations,
and what one model encodes (or has removed as spurious) that the other does not."""

import streamlit as st

from ui import compare, shell


def main() -> None:
    st.title("Compare models")
    st.caption("Model A is the workspace's backbone; model B another one, seen through the same "
               "probe set, CLIP model and vocabulary. A ridge map is fitted from each "
               "representation to the other (λ chosen on held-out images, R² on others); each "
               "feature of A is matched to B's features by the map and by activation "
               "correlation.")
    compare.run()


shell.page(main)
