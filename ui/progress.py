"""Library progress -> an ``st.progress`` bar with the stage and the time left.

A Falcon object is shared by every session (``st.cache_resource``), so its ``progress`` callback
is a :class:`ProgressRouter` that sends each report to the bar of the thread (session) that asked.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from falcon_core.progress import Progress


class ProgressRouter:
    """``progress(done, total, stage)`` that forwards to the current thread's target, if any."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, done: int, total: int, stage: str) -> None:
        target = getattr(self._local, "target", None)
        if target is not None:
            target(done, total, stage)

    @contextmanager
    def route(self, target: Progress) -> Iterator[None]:
        previous = getattr(self._local, "target", None)
        self._local.target = target
        try:
            yield
        finally:
            self._local.target = previous


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class EtaTracker:
    """Per stage: the fraction done and an estimate of the time left (pure; tested alone)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started: dict[str, tuple[float, int]] = {}

    def update(self, done: int, total: int, stage: str) -> tuple[float, str]:
        now = self.clock()
        if stage not in self.started or done < self.started[stage][1]:
            self.started[stage] = (now, done)
        t0, d0 = self.started[stage]
        frac = min(max(done / total, 0.0), 1.0) if total else 0.0
        text = f"{stage}: {done} / {total}" if total else stage
        if total and done >= total:
            return frac, text + " — done"
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else 0.0
        if rate > 0:
            text += f" — about {format_seconds((total - done) / rate)} left"
        return frac, text


@contextmanager
def progress_bar(falcon, label: str = "Working…", main_stage: str | None = None,
                 min_interval: float = 0.15) -> Iterator[None]:
    """Show the library's progress reports as a bar with the time left (removed when the work
    is done). ``falcon``: a Falcon (its router) or a :class:`ProgressRouter` itself. With ``main_stage`` (e.g. ``"features"`` for a precompute) the bar follows that
    stage only and the other stages (GradCAM, text embeddings, ...) go to a line under it."""
    import streamlit as st

    holder = st.empty()
    with holder.container():
        bar = st.progress(0.0, text=label)
        line = st.empty()
    tracker = EtaTracker()
    last = [0.0]

    def target(done: int, total: int, stage: str) -> None:
        frac, text = tracker.update(done, total, stage)
        now = time.monotonic()
        if now - last[0] < min_interval and not (total and done >= total):
            return
        last[0] = now
        if main_stage is None or stage == main_stage:
            bar.progress(frac, text=f"{label} {text}")
        else:
            line.caption(f"Working on: {text}")

    router = falcon if isinstance(falcon, ProgressRouter) else getattr(falcon, "progress", None)
    try:
        if isinstance(router, ProgressRouter):
            with router.route(target):
                yield
        else:
            yield
    finally:
        holder.empty()


class StepTracker:
    """Progress over a known list of steps (opening a workspace: its models, Stage 1, the text
    embeddings, ...), each of which may report its own stages: the fraction of all the steps
    done, and a line that says the step, the stage within it and the time left for that stage
    from its measured throughput so far (pure; tested alone)."""

    def __init__(self, steps: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.steps = list(steps)
        self.clock = clock
        self.started = clock()
        self.index = 0
        self.eta = EtaTracker(clock)
        self.frac_in_step = 0.0
        self.detail = ""

    def begin(self, index: int) -> tuple[float, str]:
        """Step ``index`` starts (the previous ones are done)."""
        self.index = min(max(int(index), 0), len(self.steps))
        self.eta = EtaTracker(self.clock)  # each step's throughput is its own
        self.frac_in_step, self.detail = 0.0, ""
        return self.state()

    def update(self, done: int, total: int, stage: str) -> tuple[float, str]:
        """A report of the library (``progress(done, total, stage)``) within the current step."""
        frac, text = self.eta.update(done, total, stage)
        self.frac_in_step = frac if total else self.frac_in_step
        self.detail = text
        return self.state()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def state(self) -> tuple[float, str]:
        n = max(len(self.steps), 1)
        if self.index >= len(self.steps):
            return 1.0, f"done in {format_seconds(self.elapsed())}"
        frac = min((self.index + self.frac_in_step) / n, 1.0)
        text = f"step {self.index + 1} of {len(self.steps)}: {self.steps[self.index]}"
        if self.detail:
            text += f" ({self.detail})"
        return frac, text + f" · {format_seconds(self.elapsed())} so far"


class StepsBar:
    """What :func:`steps_bar` yields: ``step(i)`` starts step ``i``; ``tracker`` says how far."""

    def __init__(self, tracker: StepTracker, show: Callable[[float, str], None]) -> None:
        self.tracker, self._show = tracker, show

    def step(self, index: int) -> None:
        self._show(*self.tracker.begin(index))


@contextmanager
def steps_bar(router: "ProgressRouter | None", label: str, steps: list[str],
              min_interval: float = 0.15) -> Iterator[StepsBar]:
    """A bar over ``steps`` (created here, by the page: never inside a cached function), fed by
    the library's reports routed from ``router`` to this thread, with the current step, its stage
    and the time left as text. Removed when the block ends."""
    import streamlit as st

    holder = st.empty()
    with holder.container():
        bar = st.progress(0.0, text=f"{label} {steps[0] if steps else ''}")
    tracker = StepTracker(steps)
    last = [0.0]

    def show(frac: float, text: str, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - last[0] < min_interval:
            return
        last[0] = now
        bar.progress(frac, text=f"{label} {text}")

    def target(done: int, total: int, stage: str) -> None:
        frac, text = tracker.update(done, total, stage)
        show(frac, text, force=bool(total) and done >= total)

    handle = StepsBar(tracker, show)
    try:
        if isinstance(router, ProgressRouter):
            with router.route(target):
                yield handle
        else:
            yield handle
    finally:
        holder.empty()
