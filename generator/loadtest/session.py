"""One load test's Locust environment, driven through the shape's phases and watched.

:class:`Session` plays the phases (spawn, warm up, measure) on a :class:`~generator.loadtest.swarm.Swarm`
(the Locust environment and its runner, in this process or the master of the Locust workers that
:mod:`~generator.loadtest.run` started, and every request's record), opens and closes the measurement
windows (Triton's statistics at both ends, also of an ensemble's steps; the resource sampler in between),
and ends the run early when its :class:`~generator.loadtest.watchdog.Watchdog` sees the server, a worker or
a user die.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent

from generator.core.errors import LoadTestError
from generator.loadtest.distributed import LocalWorkers, RemoteWorkers
from generator.loadtest.metrics import Sampler
from generator.loadtest.pipelines import Step
from generator.loadtest.plan import Plan
from generator.loadtest.recorder import Records
from generator.loadtest.shapes import Phase, total_seconds
from generator.loadtest.steady import SteadyLevel, inferences, settle
from generator.loadtest.swarm import Swarm
from generator.loadtest.watchdog import Aborted, Watchdog
from generator.serve.control import ServerControl
from generator.serve.server import EmbeddedServer

__all__ = ["LoadProgress", "LoadProgressCallback", "Session", "Window"]

logger = logging.getLogger(__name__)

_TICK = 0.1
_SPAWN_GRACE = 30.0


@dataclass(frozen=True)
class LoadProgress:
    """Where a running test is, for a progress display.

    Attributes:
        stage: What is happening (``"starting Triton"``, ``"spawning"``, ``"warming up"``, ``"measuring"``,
            ``"stopping"``, ...).
        users: Users running now.
        level: The current phase or window, from 1.
        levels: Number of phases or windows.
        elapsed: Seconds of the planned schedule done.
        planned: Planned seconds in all (spawning excluded).
        requests: Requests so far.
        failures: Failed requests so far.
        rps: Current requests per second (Locust's moving figure).
    """

    stage: str
    users: float = 0.0
    level: int = 0
    levels: int = 0
    elapsed: float = 0.0
    planned: float = 0.0
    requests: int = 0
    failures: int = 0
    rps: float = 0.0


LoadProgressCallback = Callable[[LoadProgress], None]


@dataclass
class Window:
    """One measurement window: its load, its ends, and what was measured across it."""

    users: float
    start: float
    end: float = 0.0
    stats_before: dict[str, Any] | None = None
    stats_after: dict[str, Any] | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    user_samples: list[float] = field(default_factory=list)


class Session:
    """One Locust environment driven through the phases, with its recorder, watchdog and workers.

    Args:
        plan: The resolved test (its requests already built in this process).
        parsed: Locust's parsed options carrying the harness's options (sent on to workers).
        control: Control-plane connection, for the statistics snapshots.
        probe: A second one with a short timeout, for the liveness watchdog.
        server: The embedded server when the harness started it, else None.
        workers: Started Locust worker processes, workers expected from other machines, or None to run in
            this process.
        sampler: The resource sampler.
        notify: LoadProgress callback.
        stack: Where the runner's shutdown is registered.
    """

    def __init__(
        self,
        plan: Plan,
        parsed: Any,
        control: ServerControl,
        probe: ServerControl,
        server: EmbeddedServer | None,
        workers: LocalWorkers | RemoteWorkers | None,
        sampler: Sampler,
        notify: LoadProgressCallback,
        stack: contextlib.ExitStack,
    ) -> None:
        self.plan = plan
        self.control = control
        self.sampler = sampler
        self.notify = notify
        self.notes: list[str] = []
        self.names = [m.name for m in plan.models]
        self.statistics_names = plan.statistics_models  # the models loaded, then their pipelines' steps
        self.windows: list[Window] = []
        self.swarm = Swarm(plan, parsed, workers, stack, self.notes)
        self.watchdog = Watchdog(plan.target.url, probe, server, workers)
        self._planned = 0.0
        self._done = 0.0

    @property
    def records(self) -> Records:
        """Every request's record so far (complete once the run has returned)."""
        return self.swarm.records

    def run(self, phases: list[Phase]) -> tuple[list[Window], dict[str, Any], str | None]:
        """Play ``phases``; return the windows, whole-test totals, and the reason for aborting (or None)."""
        self._planned = total_seconds(phases)
        runner = self._start_runner()
        aborted = None
        first = self.control.statistics(self.statistics_names)
        started = time.time()
        try:
            for index, phase in enumerate(phases):
                if phase.ramp:
                    self._ramp(runner, phase)
                else:
                    self._step(runner, phase, index + 1, len(phases))
            self._watch(now=True)
            if (
                self.watchdog.probe_failures
            ):  # one failed probe at the very end: look again before trusting it
                gevent.sleep(0.5)
                self._watch(now=True)
        except Aborted as reason:
            aborted = str(reason)
            logger.warning("run cut short: %s", aborted)
            self._close_cut_short()
        self.notify(self._progress("stopping", len(phases), len(phases)))
        ended = self.swarm.stop(runner)
        windows = [w for w in self.windows if w.end > w.start]
        totals = self._totals(first, started, ended, aborted is None)
        return windows, totals, aborted

    def run_steady(
        self, levels: list[int], warmup: float, window: float, tolerance_pct: float, windows: tuple[int, int]
    ) -> tuple[list[SteadyLevel], str | None]:
        """Measure each level in windows until throughput is steady, as perf_analyzer's stability windows do.

        At each level: spawn the users, warm up, then measure window after window until the last
        ``windows[0]`` throughputs are within ``tolerance_pct`` of their mean ((max - min) / mean), or
        ``windows[1]`` windows have been measured (then the last ``windows[0]`` are kept, marked unstable).

        Returns:
            One :class:`SteadyLevel` per level measured, and the reason the run was cut short (or None).
        """
        least, most = windows
        self._planned = sum(warmup + least * window for _ in levels)
        runner = self._start_runner()
        steady: list[SteadyLevel] = []
        aborted = None
        try:
            for index, users in enumerate(levels):
                level = SteadyLevel(users)
                steady.append(level)
                self._spawn(runner, users, float(users), index + 1, len(levels))
                self._hold(warmup, "warming up", index + 1, len(levels))
                while len(level.windows) < most:
                    self._measure_window(level, window, index + 1, len(levels))
                    if settle(level, least, tolerance_pct):
                        break
        except Aborted as reason:
            aborted = str(reason)
            self._close_cut_short()
        self.notify(self._progress("stopping", len(levels), len(levels)))
        self.swarm.stop(runner)
        return steady, aborted

    def _start_runner(self) -> Any:
        return self.swarm.start(lambda: self.notify(LoadProgress("waiting for Locust workers")))

    def _close_cut_short(self) -> None:
        """Close the window an abort interrupted, marked incomplete."""
        last = self.windows[-1] if self.windows else None
        if last is not None and last.end == 0.0:
            last.complete = False
            self._close(last)

    def _measure_window(self, level: SteadyLevel, seconds: float, index: int, levels: int) -> None:
        total = self.swarm.env.stats.total
        requests = total.num_requests - total.num_failures
        window = self._open(float(level.users))
        level.windows.append(window)
        self._hold(seconds, "measuring", index, levels)
        self._close(window)
        elapsed = max(window.end - window.start, 1e-9)
        counted = inferences(window.stats_before, window.stats_after, self.names)
        if counted is None:
            counted = (total.num_requests - total.num_failures - requests) * self.plan.batch_size
        level.throughputs.append(counted / elapsed)

    def _step(self, runner: Any, phase: Phase, level: int, levels: int) -> None:
        self._spawn(runner, phase.users, phase.spawn_rate, level, levels)
        self._hold(phase.warmup, "warming up", level, levels)
        window = self._open(float(phase.users))
        self._hold(phase.hold, "measuring", level, levels)
        self._close(window)

    def _spawn(self, runner: Any, users: int, rate: float, level: int, levels: int) -> None:
        runner.start(users, rate)
        deadline = time.monotonic() + users / rate + _SPAWN_GRACE
        while runner.user_count != users or runner.state == "spawning":
            if time.monotonic() > deadline:
                self.notes.append(
                    f"only {runner.user_count} of {users} users were running when the level was measured"
                )
                break
            self._wait(_TICK, "spawning", level, levels)

    def _ramp(self, runner: Any, phase: Phase) -> None:
        runner.start(phase.users, phase.spawn_rate)
        length = phase.hold / phase.windows
        for index in range(phase.windows):
            window = self._open(0.0)
            until = time.monotonic() + length
            while (left := until - time.monotonic()) > 0:
                window.user_samples.append(float(runner.user_count))
                self._wait(min(_TICK, left), "measuring (ramp)", index + 1, phase.windows)
                self._done += min(_TICK, left)
            self._close(window)

    def _open(self, users: float) -> Window:
        stats = self._statistics()
        self.sampler.open()
        window = Window(users=users, start=time.time(), stats_before=stats)
        self.windows.append(window)
        return window

    def _close(self, window: Window) -> None:
        window.end = time.time()
        window.resources = self.sampler.close()
        window.stats_after = self._statistics()
        if window.user_samples:  # a ramp window: its average user count
            window.users = round(sum(window.user_samples) / len(window.user_samples), 1)

    def _statistics(self) -> dict[str, Any] | None:
        try:
            return self.control.statistics(self.statistics_names)
        except LoadTestError as error:
            logger.warning("%s", error)
            return None

    def _hold(self, seconds: float, stage: str, level: int, levels: int) -> None:
        until = time.monotonic() + seconds
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            self._wait(min(_TICK, left), stage, level, levels)
            self._done += min(_TICK, left)

    def _wait(self, seconds: float, stage: str, level: int, levels: int) -> None:
        gevent.sleep(seconds)
        self.sampler.tick()
        self._watch()
        self.notify(self._progress(stage, level, levels))

    def _watch(self, now: bool = False) -> None:
        """End the run (raise :class:`Aborted`) when the server, a worker or a user has died."""
        self.watchdog.check(self.swarm.env.runner, now)

    def _progress(self, stage: str, level: int, levels: int) -> LoadProgress:
        env = self.swarm.env
        total = env.stats.total
        return LoadProgress(
            stage=stage,
            users=float(env.runner.user_count) if env.runner else 0.0,
            level=level,
            levels=levels,
            elapsed=min(self._done, self._planned),
            planned=self._planned,
            requests=total.num_requests,
            failures=total.num_failures,
            rps=float(total.current_rps),
        )

    def _totals(self, first: dict[str, Any], started: float, ended: float, complete: bool) -> dict[str, Any]:
        """The whole test's figures, from every request recorded, with the server's count beside the client's.

        The requests that closed sequences at the stop (:meth:`~generator.loadtest.lanes.Lanes.close`) are
        requests and inferences here, as the server counts them, and ``sequences_closed``, not completed
        sequences.
        """
        rows = self.records.rows
        ok = rows[rows["error"] < 0]
        totals: dict[str, Any] = {
            "seconds": round(ended - started, 3),
            "requests": len(rows),
            "failures": int(len(rows) - len(ok)),
            "inferences": int(ok["inferences"].sum()),
            "server_inferences": None,
            "server_cache_hits": None,
        }
        if self.plan.has_sequences:  # sequences ended: completed, failed part-way, and closed at the stop
            ended = rows[rows["sequence"] > 0]
            totals["sequences"] = int((ended["error"] < 0).sum())
            totals["sequence_failures"] = int((ended["error"] >= 0).sum())
            totals["sequences_closed"] = int((ok["closing"] > 0).sum())
        if self.plan.has_streams:
            totals["output_tokens"] = int(ok["tokens"].sum())
        if complete:
            # Triton counts a request just after replying: wait (a little) until it has counted them all.
            deadline = time.monotonic() + 5.0
            last = self._statistics()
            while (
                last is not None
                and time.monotonic() < deadline
                and (
                    sum(last[n]["inference_count"] - first[n]["inference_count"] for n in self.names)
                    < totals["inferences"]
                    or not _steps_counted(self.plan.pipelines, first, last)
                )
            ):
                gevent.sleep(0.05)
                last = self._statistics()
            if last is not None:
                for key, name in (
                    ("server_inferences", "inference_count"),
                    ("server_cache_hits", "cache_hit_count"),
                ):
                    totals[key] = sum(last[n][name] - first[n][name] for n in self.names)
                steps = [n for n in self.statistics_names if n not in self.names]
                if steps:  # what each step of an ensemble ran, over the whole test
                    totals["server_step_inferences"] = {
                        n: last[n]["inference_count"] - first[n]["inference_count"] for n in steps
                    }
        return totals


def _steps_counted(
    pipelines: dict[str, tuple[Step, ...]], first: dict[str, Any], last: dict[str, Any]
) -> bool:
    """Whether every step of each ensemble has counted the inferences the ensemble counted."""
    for ensemble, steps in pipelines.items():
        done = last[ensemble]["inference_count"] - first[ensemble]["inference_count"]
        for step in steps:
            if last[step.model]["inference_count"] - first[step.model]["inference_count"] < done * step.calls:
                return False
    return True
