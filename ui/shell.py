"""What every page run does around the page itself: URL -> state, the sidebar, errors that
escape a page, state -> URL.

``app.py`` wraps ``st.navigation(...).run()`` in :func:`frame`. Each page also calls
:func:`page`, which copes with a page file run on its own: because the pages live in a folder
named ``pages/``, Streamlit starts in its older multipage mode (each file of ``pages/`` is a page,
``app.py`` is skipped) until ``st.navigation`` has run once. That happens on a fresh server's first
request for a page URL (an opened link), and on every ``AppTest`` rerun. The page then switches
Streamlit to ``st.navigation`` mode (what ``st.navigation`` itself does) and reruns once, so
``app.py`` runs; if that is not possible it renders itself inside its own frame.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import streamlit as st
from streamlit.errors import StreamlitAPIException

from . import errors, loaders, state, views

_local = threading.local()


def active() -> bool:
    return bool(getattr(_local, "depth", 0))


def sidebar() -> None:
    with st.sidebar:
        st.markdown("### FALCON")
        st.caption("Explains each feature of a vision model with words, from its highly "
                   "activating images, and removes spurious concepts with counterfactuals.")
        st.caption(f"**Workspace:** {loaders.describe_workspace(state.workspace())}")
        try:
            st.page_link("pages/setup.py", label="Change models and data", icon=":material/settings:")
        except StreamlitAPIException:  # the page registry is not ready (older multipage mode)
            pass


def report() -> None:
    """The report's download button at the end of the sidebar, once the page has opened the
    workspace (nothing when it could not)."""
    falcon = loaders.opened()
    if falcon is not None:
        with st.sidebar:
            views.report_button(falcon, state.settings())


@contextmanager
def frame() -> Iterator[None]:
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        state.begin_run()
        loaders.forget_opened()
        sidebar()
        try:
            yield
            report()
        except Exception as e:  # noqa: BLE001 - never a raw traceback as a page's content
            errors.show(e, "This page could not be shown")
        finally:
            state.end_run()
    finally:
        _local.depth -= 1


def _under_apptest() -> bool:
    try:
        from streamlit import config

        return bool(config.get_option("global.appTest"))
    except RuntimeError:  # no such option in this Streamlit
        return False


def _leave_pages_folder_mode() -> bool:
    """Tell Streamlit to run app.py (st.navigation) from now on; True if it was needed.

    Not under AppTest: it starts every run in the pages-folder mode again, and a rerun there
    would drop the run's widget events (a button click); the page renders itself instead.
    """
    if _under_apptest():
        return False
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a future Streamlit
        return False
    if not PagesManager.uses_pages_directory:
        return False
    PagesManager.uses_pages_directory = False
    return True


def page(main: Callable[[], None]) -> None:
    """Run a page's ``main`` inside the frame (see the module docstring)."""
    if active():
        _local.reran = False
        main()
        return
    if _leave_pages_folder_mode() and not getattr(_local, "reran", False):
        _local.reran = True
        st.rerun()  # the same page again, now through app.py
    _local.reran = False
    try:
        st.set_page_config(page_title="FALCON", page_icon=":material/flight:", layout="wide")
    except StreamlitAPIException:  # already set
        pass
    with frame():
        main()
