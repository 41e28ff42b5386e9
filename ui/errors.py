"""Every call into the library from a page goes through :func:`call`: a problem with the input
becomes a message and what to do, never a traceback as the page's main content."""

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


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, error)`` without showing anything (the caller decides)."""
    try:
        return fn(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001
        return None, e
