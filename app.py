"""FALCON: explain the features of a vision model in words.

    streamlit run app.py

Opens on the offline demo world; the Setup page switches to real models. Every page is a thin
layer over ``falcon_core`` (see docs/ARCHITECTURE.md); the URL holds the current view.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `streamlit run` from another folder
    sys.path.insert(0, str(ROOT))

from ui import shell  # noqa: E402

st.set_page_config(page_title="FALCON", page_icon=":material/flight:", layout="wide")

PAGES = [
    st.Page("pages/feature_explorer.py", title="Feature explorer", icon=":material/search:", default=True),
    st.Page("pages/pairs_and_groups.py", title="Pairs and groups", icon=":material/join_inner:"),
    st.Page("pages/spurious_concepts.py", title="Spurious concepts", icon=":material/block:"),
    st.Page("pages/failures.py", title="Failures", icon=":material/error:"),
    st.Page("pages/concept_search.py", title="Concept search", icon=":material/manage_search:"),
    st.Page("pages/compare_models.py", title="Compare models", icon=":material/compare:"),
    st.Page("pages/setup.py", title="Setup", icon=":material/settings:"),
]

page = st.navigation(PAGES)
with shell.frame():
    page.run()
