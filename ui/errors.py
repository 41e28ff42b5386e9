"""How a page shows what went wrong.

* :func:`call`: a call into the library whose failure the page reports where it happened: a
  problem with the input (``FalconError``) becomes its message and what to do; anything else is a
  bug, shown as one (a short summary, the details folded away for a report).
* :func:`or_none`: a call whose expected failure (``FalconError``) only means "show less"; a bug
  is not swallowed: it reaches the page's frame (``shell.frame``), which shows it like ``call``.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

import streamlit as st

from falcon_core.errors import FalconError, OfflineError

FAILED = None


def show_falcon_error(e: FalconError, what: str | None = None) -> None:
    msg = e.message if getattr(e, "message", None) else str(e)
    st.error(f"{what}: {msg}" if what else msg, icon=":material/warning:")
    hint = getattr(e, "hint", None)
    if isinstance(e, OfflineError) and not hint:
        from falcon_core.errors import OFFLINE_HINT

        hint = OFFLINE_HINT
    if hint:
        st.info(f"**What to do:** {hint}", icon=":material/lightbulb:")


def show_unexpected(e: BaseException, what: str | None = None) -> None:
    summary = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip(": ")
    st.error(f"{what or 'Something went wrong'} ({summary}).", icon=":material/block:")
    st.info("**What to do:** check the inputs on the Setup page, or go back to the demo world. "
            "If it keeps happening, report it with the details below.", icon=":material/lightbulb:")
    with st.expander("Details for a bug report"):
        st.code("".join(traceback.format_exception(type(e), e, e.__traceback__))[-6000:],
                language="text")


def show(e: BaseException, what: str | None = None) -> None:
    if isinstance(e, FalconError):
        show_falcon_error(e, what)
    else:
        show_unexpected(e, what)


def call(fn: Callable[..., Any], *args: Any, what: str | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None after showing why it failed.

    ``FalconError`` (bad input, offline, ...) -> its message and hint; anything else -> a short
    summary with the details folded away. Streamlit's own control flow (rerun, stop) passes.
    """
    try:
        return fn(*args, **kwargs)
    except FalconError as e:
        show_falcon_error(e, what)
    except Exception as e:  # noqa: BLE001 - the app must not show a raw traceback
        show_unexpected(e, what)
    return FAILED


def or_none(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None when it raises a :class:`FalconError` (an expected
    problem, e.g. no classifier head: the caller shows less). Anything else is a bug and is
    raised: the page's frame shows it as one, with its details for a report."""
    try:
        return fn(*args, **kwargs)
    except FalconError:
        return None
