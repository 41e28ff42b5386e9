"""Progress callbacks.

A progress callback is ``progress(done: int, total: int, stage: str) -> None``. Library code calls
it as work advances (``done`` out of ``total`` units of the named ``stage``); the command line
uses :func:`tqdm_progress` (one bar per stage, on stderr), the app a ``st.progress`` adapter, and
tests :func:`null_progress` or a list-appending lambda.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

Progress = Callable[[int, int, str], None]


def null_progress(done: int, total: int, stage: str) -> None:
    """A progress callback that does nothing."""
    return None


def report(progress: Optional[Progress], done: int, total: int, stage: str) -> None:
    """Call ``progress`` if it is not None (helper for library code)."""
    if progress is not None:
        progress(int(done), int(total), stage)


def tqdm_progress(file=None, leave: bool = True) -> Progress:
    """A callback driving one tqdm bar per stage name (written to stderr by default).

    A bar is created the first time a stage is reported, updated to ``done`` on later calls, and
    closed when ``done >= total``. A new report for a stage whose bar was closed starts a new bar.
    """
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    bars: dict = {}

    def _progress(done: int, total: int, stage: str) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = tqdm(total=max(int(total), 0), desc=stage, file=stream, leave=leave,
                       dynamic_ncols=True)
            bars[stage] = bar
        if total != bar.total:
            bar.total = max(int(total), 0)
        delta = int(done) - bar.n
        if delta:
            bar.update(delta)
        if total and done >= total:
            bar.close()
            del bars[stage]

    return _progress
