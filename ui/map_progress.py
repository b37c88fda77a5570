"""Staged progress for long background work (the map's UMAP): a bar that moves even while nothing reports.

A job is a list of :class:`Stage` s, each with a share of the bar. A stage that reports its own progress (UMAP's
epochs) moves the bar by that; a stage that cannot (numba compiling, a neighbour graph) moves it by the time spent
against the stage's typical duration, ``TIME_SHARE * (1 - exp(-t / estimate))`` of the stage: the bar keeps
moving, slows down when the stage runs long, and never reaches the stage's end before the stage does. The bar
never goes back and never shows 100 % before the job has finished. No Streamlit here: the job's thread writes,
the page's progress fragment reads (:meth:`StagedProgress.view`), and tests drive it with their own clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Share of a stage that the elapsed time alone may fill (the rest only the stage's end does).
TIME_SHARE = 0.9
#: The bar's highest value before the job has finished.
MAX_BEFORE_DONE = 0.99


@dataclass(frozen=True)
class Stage:
    """One step of a job.

    Attributes
    ----------
    key : str
        The step's name in code.
    label : str
        What the user reads (e.g. "compiling UMAP's numba kernels (first time only)").
    weight : float
        Its share of the bar (the weights of a job are normalised to sum to 1).
    estimate_s : float or None
        Its typical duration in seconds on this kind of machine; it moves the bar while the stage reports nothing.
        None: only the stage's own reports move it.
    """

    key: str
    label: str
    weight: float
    estimate_s: float | None = None


@dataclass(frozen=True)
class ProgressView:
    """What the progress bar shows at one moment.

    Attributes
    ----------
    fraction : float
        The bar, in [0, 1]; 1 only when ``done``.
    step : int
        The current stage, 1-based (0 before the first stage starts).
    steps : int
        How many stages the job has.
    label : str
        The current stage's label ('' before the first).
    detail : str
        The current stage's last message ('' when none).
    stage_elapsed_s : float
        Seconds in the current stage.
    elapsed_s : float
        Seconds since the job started.
    estimate_s : float or None
        The current stage's typical duration.
    done : bool
        Whether the job has finished.
    """

    fraction: float
    step: int
    steps: int
    label: str
    detail: str
    stage_elapsed_s: float
    elapsed_s: float
    estimate_s: float | None
    done: bool

    def text(self) -> str:
        """One line for the bar: the step, its label, the seconds spent and an honest estimate."""
        if self.done:
            return f"done in {self.elapsed_s:.0f} s"
        if self.step == 0:
            return f"starting ({self.elapsed_s:.0f} s)"
        out = f"step {self.step} of {self.steps}: {self.label}"
        if self.detail:
            out += f" · {self.detail}"
        out += f" — {self.stage_elapsed_s:.0f} s"
        if self.estimate_s is not None:
            if self.stage_elapsed_s <= self.estimate_s:
                out += f" of usually about {self.estimate_s:.0f} s"
            else:
                out += f", longer than the usual {self.estimate_s:.0f} s (the machine is busy)"
        return out


class StagedProgress:
    """Progress through fixed stages, written by one thread and read by any (thread-safe).

    Parameters
    ----------
    stages : sequence of Stage
        In the order they run (at least one; keys unique; weights > 0).
    clock : callable, optional
        Seconds, monotonic (default ``time.perf_counter``); tests pass their own.
    """

    def __init__(self, stages: Sequence[Stage], *, clock: Callable[[], float] = time.perf_counter) -> None:
        if not stages:
            raise ValueError("a staged progress needs at least one stage")
        keys = [s.key for s in stages]
        if len(set(keys)) != len(keys):
            raise ValueError(f"stage keys repeat: {keys}")
        if any(not s.weight > 0 for s in stages):
            raise ValueError("every stage's weight must be > 0")
        total = float(sum(s.weight for s in stages))
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._starts = [0.0]  # the bar's value where each stage begins
        for s in self.stages:
            self._starts.append(self._starts[-1] + s.weight / total)
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._finished: float | None = None
        self._index = -1
        self._stage_started = self._started
        self._within = 0.0
        self._detail = ""
        self._shown = 0.0

    @property
    def stage(self) -> Stage | None:
        """The current stage (None before the first)."""
        return self.stages[self._index] if self._index >= 0 else None

    def enter(self, key: str, *, detail: str = "") -> None:
        """Start stage ``key`` (stages skipped over count as done; entering the current one again does nothing).

        Raises
        ------
        ValueError
            When ``key`` is not a stage, or comes before the current one.
        """
        index = next((i for i, s in enumerate(self.stages) if s.key == key), None)
        if index is None:
            raise ValueError(f"no stage {key!r}; the stages are {[s.key for s in self.stages]}")
        with self._lock:
            if index < self._index:
                raise ValueError(f"stage {key!r} comes before the current stage {self.stages[self._index].key!r}")
            if index > self._index:
                self._index = index
                self._stage_started = self._clock()
                self._within = 0.0
                self._detail = detail
            elif detail:
                self._detail = detail

    def report(self, within: float, detail: str = "") -> None:
        """The current stage's own progress, in [0, 1] (clipped; never lowers what it reported before)."""
        with self._lock:
            self._within = max(self._within, min(max(float(within), 0.0), 1.0))
            if detail:
                self._detail = detail

    def finish(self) -> None:
        """The job has ended (done or failed): the bar shows 100 %."""
        with self._lock:
            if self._finished is None:
                self._finished = self._clock()

    def view(self) -> ProgressView:
        """The bar now: monotone over calls, below ``MAX_BEFORE_DONE`` until :meth:`finish`."""
        with self._lock:
            now = self._clock() if self._finished is None else self._finished
            stage = self.stage
            stage_elapsed = max(now - self._stage_started, 0.0) if stage is not None else 0.0
            if self._finished is not None:
                fraction = 1.0
            elif stage is None:
                fraction = 0.0
            else:
                within = self._within
                if stage.estimate_s is not None and stage.estimate_s > 0:
                    within = max(within, TIME_SHARE * (1.0 - math.exp(-stage_elapsed / stage.estimate_s)))
                start, end = self._starts[self._index], self._starts[self._index + 1]
                fraction = min(start + (end - start) * min(within, 1.0), MAX_BEFORE_DONE)
            self._shown = max(self._shown, fraction)
            return ProgressView(
                fraction=self._shown,
                step=self._index + 1,
                steps=len(self.stages),
                label=stage.label if stage is not None else "",
                detail=self._detail,
                stage_elapsed_s=stage_elapsed,
                elapsed_s=max(now - self._started, 0.0),
                estimate_s=stage.estimate_s if stage is not None else None,
                done=self._finished is not None,
            )
