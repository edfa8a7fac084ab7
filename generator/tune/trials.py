"""One model's search: its trials, each loaded and measured on the live server.

:class:`ModelTuner` measures the start config twice (how far its measurements come apart is each level's
noise: :func:`~generator.tune.objective.level_noise`), then asks the
search strategy for settings, loads each candidate with Triton's model control (the candidate's config JSON
in place of ``config.pbtxt``), measures it at every load level until steady
(:class:`~generator.loadtest.bench.ModelBench`), scores it against the objective, the constraints and (unless
``--trade-levels``) the start config level by level, and records it (:class:`~generator.tune.ledger.TrialLedger`
writes ``tune.json`` after every trial). At the end the confirmation round
(:class:`~generator.tune.confirm.Confirmation`) measures the best trial and the start config again, side by
side, and the model is loaded back with the config it had.

A model whose config turns the response cache on is measured with it off: the load test sends a few
distinct requests over and over, and with the cache Triton would answer them without running the model.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent

from generator.core.errors import LoadTestError
from generator.loadtest.bench import Measurement, ModelBench
from generator.loadtest.report.figures import figure_value
from generator.loadtest.session import LoadProgress
from generator.serve.control import ServerControl
from generator.serve.server import EmbeddedServer
from generator.tune.confirm import Confirmation
from generator.tune.ledger import TrialLedger
from generator.tune.objective import LevelChange, LevelGuard, Objective
from generator.tune.search import GridSearch, Outcome, make_search
from generator.tune.space import (
    Settings,
    Space,
    config_json,
    cpu_count,
    start_settings,
    without_response_cache,
)

if TYPE_CHECKING:
    from generator.tune.run import TuneConfig

_SETTLE_SECONDS = 30.0

__all__ = [
    "ModelTuner",
    "Stop",
    "Trial",
    "TuneContext",
    "TuneProgress",
    "TuneProgressCallback",
]

#: The load-test figures each level of a trial keeps (names and places as in report.json's runs).
_LEVEL_FIGURES = (
    "throughput", "requests_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "error_rate", "avg_batch_size",
    "queue_us", "compute_input_us", "compute_infer_us", "compute_output_us", "cpu_utilization", "memory_bytes",
    "gpu_utilization", "gpu_memory_bytes",
)  # fmt: skip


@dataclass(frozen=True)
class TuneProgress:
    """Where a tune is, for a progress display.

    Attributes:
        stage: ``"building"``, ``"starting Triton"``, ``"loading"``, ``"measuring"``, ``"measuring again"``
            (the start config, for the noise), ``"rebuilding"``, ...
        model: The model being tuned ("" outside a model).
        trial: The trial's number within the model.
        trials: Trials planned for the model (the grid's size), or None when the search decides as it goes.
        settings: The trial's settings, as a short line.
        best: The best objective value so far, as a short line.
        load: The load test's own progress while it measures.
    """

    stage: str
    model: str = ""
    trial: int = 0
    trials: int | None = None
    settings: str = ""
    best: str = ""
    load: LoadProgress | None = None


TuneProgressCallback = Callable[[TuneProgress], None]


@dataclass
class Trial:
    """One measured (or failed) candidate.

    Attributes:
        model: The model.
        number: Its number within the model's trials, from 0 (the start config).
        role: ``"start"``, ``"search"`` or ``"confirm"``.
        settings: What was loaded.
        status: ``"measured"``, ``"failed"`` (Triton refused it, or no request succeeded) or ``"aborted"``.
        error: Why it failed, or None.
        levels: The figures at each load level (condensed from the load-test runs) with their stability.
        constraints: Each constraint's worst value over the levels and whether it held.
        outcome: The score the search saw.
        seconds: How long the trial took, loading included.
        load_seconds: How long Triton took to load the candidate.
        vs_start: Each level against the start config, in the objective's figure, with the level's noise.
    """

    model: str
    number: int
    role: str
    settings: Settings
    status: str = "measured"
    error: str | None = None
    levels: list[dict[str, Any]] = field(default_factory=list)
    constraints: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=lambda: Outcome(None))
    seconds: float = 0.0
    load_seconds: float = 0.0
    vs_start: list[LevelChange] = field(default_factory=list)

    @property
    def within_constraints(self) -> bool:
        """Measured, and every one of the user's constraints held (the per-level rule aside)."""
        return self.outcome.score is not None and all(c["passed"] for c in self.constraints.values())

    def as_dict(self, run_id: str, objective: Objective) -> dict[str, Any]:
        """Plain data for tune.json."""
        return {
            "number": self.number,
            "id": f"{run_id}/{self.number}",
            "role": self.role,
            "settings": self.settings.as_dict(),
            "describe": self.settings.describe(),
            "status": self.status,
            "error": self.error,
            "objective": objective.value(self.outcome),
            "feasible": self.outcome.feasible,
            "violation": self.outcome.violation,
            "constraints": self.constraints,
            "levels": self.levels,
            "vs_start": [c.as_dict() for c in self.vs_start],
            "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
        }


class Stop(Exception):
    """The search cannot go on (the server died); the trials so far are kept."""


@dataclass
class TuneContext:
    """What every model's search of one run shares."""

    config: TuneConfig
    objective: Objective
    control: ServerControl
    server: EmbeddedServer | None
    url: str
    run_id: str
    notify: TuneProgressCallback
    deadline: float | None
    report: dict[str, Any]
    out: Path


class ModelTuner:
    """The search of one model (see the module docstring).

    Args:
        context: The run.
        model: The model.
        models_left: Models still to tune, this one included (they share what is left of the budget).
    """

    def __init__(self, context: TuneContext, model: str, models_left: int) -> None:
        self.context = context
        self.model = model
        self.config = context.config
        _, self.base = context.control.model(model)
        self.measured_base = self._without_cache(self.base)
        start = start_settings(self.base)
        self.space = self._space(start)
        self.search = make_search(self.config.search, self.space)
        self.planned = self.search.size if isinstance(self.search, GridSearch) else None
        entry: dict[str, Any] = {
            "space": self.space.describe(),
            "start": start.as_dict(),
            "trials": [],
            "planned_trials": self.planned,
        }
        self.ledger = TrialLedger(context, entry)
        context.report["models"][model] = entry
        if self.measured_base is not self.base:
            entry["response_cache"] = "off while measuring (on in the model's config)"
        self.deadline = None
        if context.deadline is not None:
            self.deadline = time.monotonic() + max(0.0, context.deadline - time.monotonic()) / models_left
        self.bench: ModelBench | None = None
        self.winner: Trial | None = None
        # The embedded server runs one stub process per instance: those of the other models stay.
        self._other_stubs = context.server.stub_count() - start.instances if context.server else 0

    @property
    def trials(self) -> list[Trial]:
        """Every trial so far, the start config first (the ledger's)."""
        return self.ledger.trials

    @property
    def entry(self) -> dict[str, Any]:
        """The model's part of the report (the ledger's)."""
        return self.ledger.entry

    def _without_cache(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` with the response cache off, and a note in the report, when it has the cache on."""
        off = without_response_cache(base)
        if off is None:
            return base
        note = (
            f"model '{self.model}' has the response cache on: tune measured it with the cache off, so that "
            "every request runs the model (the load test repeats a few distinct requests, which the cache "
            "would answer without running it); the tuned config keeps the cache on"
        )
        self.context.report["notes"].append(note)
        return off

    def _space(self, start: Settings) -> Space:
        limit = start.max_batch_size
        base = self.base
        if limit > 0 and base.get("platform") != "tensorrt_plan" and base.get("backend") != "tensorrt":
            limit = 2**16  # the batch axis is dynamic; a plan keeps the batch its engine was built for
        warmups = [int(w.get("batch_size", 1)) for w in base.get("model_warmup") or []]
        smallest = max([self.config.batch_size, *warmups])
        return Space(start, self.config.space, limit, smallest, cpu_count())

    def run(self) -> dict[str, Any]:
        """Search, confirm, restore; return the model's part of the report (also written as it goes).

        Raises:
            Stop: The server died; the trials so far are in the report.
        """
        config = self.config
        with ModelBench(
            self.context.url,
            self.model,
            server=self.context.server,
            protocol=config.protocol,
            batch_size=config.batch_size,
            data=str(config.data) if config.data else None,
            seed=config.seed,
            request_timeout=config.request_timeout,
            allow_remote=config.allow_remote,
        ) as self.bench:
            try:
                self._search()
                self.winner = Confirmation(self.ledger, self.measured_base, self._trial, self.deadline).run()
            finally:
                self._restore()
        return self.entry

    def _search(self) -> None:
        seen: dict[Settings, Trial] = {}
        ledger = self.ledger
        while (point := self.search.ask()) is not None:
            settings = self.space.settings(point)
            if settings in seen:
                self.search.tell(point, seen[settings].outcome)
                continue
            # One more trial and the confirmation (two trials) must fit before the deadline.
            if ledger.trials and not ledger.time_for(3, self.deadline):
                self.entry["budget_reached"] = True
                break
            first = not ledger.trials
            # The start config is measured as it is loaded (unless the cache must be turned off for it);
            # every other candidate is loaded first.
            if first:
                loaded = None if self.measured_base is self.base else json.dumps(self.measured_base)
            else:
                loaded = config_json(self.measured_base, settings)
            trial = self._trial(settings, "start" if first else "search", loaded)
            ledger.trials.append(trial)
            seen[settings] = trial
            if first:
                ledger.record()  # kept even if the second measurement is cut short
                self._measure_noise(trial)
            self.search.tell(point, trial.outcome)
            ledger.record()

    def _measure_noise(self, start: Trial) -> None:
        """Measure the start config once more, as it is loaded; how far the two measurements come apart is
        each level's noise (at least the search's 3% margin)."""
        if start.outcome.score is None or self.bench is None:
            return
        context, ledger, started = self.context, self.ledger, time.monotonic()
        show = TuneProgress("measuring again", self.model, 0, self.planned, "the start config, for the noise")
        context.notify(show)

        def relay(load: LoadProgress) -> None:
            context.notify(
                TuneProgress("measuring again", self.model, 0, self.planned, show.settings, "", load)
            )

        measurement = self.bench.measure(self.config.users, self.config.steadiness, relay)
        if measurement.aborted:
            raise Stop(f"{measurement.aborted} (the start config of model '{self.model}', measured again)")
        ledger.start_measurements = [start.levels, [_condensed(run) for run in measurement.levels]]
        ledger.guard = LevelGuard.from_start(context.objective, self.config.users, ledger.start_measurements)
        ledger.holds_levels = (
            ledger.guard is not None and not self.config.trade_levels and start.outcome.feasible
        )
        if ledger.guard is not None:
            start.vs_start = ledger.guard.compare(ledger.values(start))
        self.entry["noise"] = ledger.noise_entry(time.monotonic() - started)

    def _trial(self, settings: Settings, role: str, config: str | None) -> Trial:
        """Load ``config`` (None: measure what is loaded) and measure the model at every level."""
        context, number = self.context, len(self.trials)
        trial = Trial(self.model, number, role, settings)
        started = time.monotonic()
        planned = self.planned if role != "confirm" else None
        show = TuneProgress(
            "loading", self.model, number, planned, settings.describe(), self.ledger.best_line()
        )
        context.notify(show)
        if config is not None:
            mark = context.server.log_size() if context.server else 0
            try:
                context.control.load(self.model, config)
            except LoadTestError as error:
                reason = context.server.reason_since(mark) if context.server else ""
                trial.status, trial.error = "failed", f"{error}: {reason}" if reason else str(error)
                trial.seconds = time.monotonic() - started
                self._check_alive(number)
                return trial
            self._settle(settings)
        trial.load_seconds = time.monotonic() - started

        def relay(load: LoadProgress) -> None:
            context.notify(
                TuneProgress("measuring", self.model, number, planned, show.settings, show.best, load)
            )

        assert self.bench is not None
        measurement = self.bench.measure(self.config.users, self.config.steadiness, relay)
        self._score(trial, measurement)
        trial.seconds = time.monotonic() - started
        if measurement.aborted:
            trial.status, trial.error = "aborted", measurement.aborted
            self.trials.append(trial)
            self.ledger.record()
            raise Stop(f"{measurement.aborted} (trial {number} of model '{self.model}')")
        return trial

    def _settle(self, settings: Settings) -> None:
        """Wait until the instances a reload replaced have exited (Triton ends them a few seconds after the
        load returns): until then they hold memory and CPU that the new config would be charged with."""
        server = self.context.server
        if server is None:
            return
        deadline = time.monotonic() + _SETTLE_SECONDS
        while server.stub_count() > self._other_stubs + settings.instances and time.monotonic() < deadline:
            gevent.sleep(0.1)

    def _score(self, trial: Trial, measurement: Measurement) -> None:
        objective, ledger = self.context.objective, self.ledger
        runs = measurement.levels
        trial.levels = [_condensed(run) for run in runs]
        trial.constraints = {
            text: {"value": c["value"], "passed": c["passed"]}
            for text, c in objective.constraints(runs).items()
        }
        hold = ledger.guard if ledger.holds_levels and trial.role == "search" else None
        trial.outcome = objective.outcome(runs, len(self.config.users), hold)
        if ledger.guard is not None:
            trial.vs_start = ledger.guard.compare(ledger.values(trial))
        if runs and all(run.get("requests", 0) == run.get("failures", 0) for run in runs):
            trial.status = "failed"
            first = next((e for run in runs for e in run.get("errors", [])), None)
            trial.error = (
                f"every request failed: {first.get('message') if isinstance(first, dict) else first}"
            )
            trial.outcome = Outcome(None)

    def _check_alive(self, number: int) -> None:
        server, where = self.context.server, f"trial {number} of model '{self.model}'"
        if server is not None and not server.is_running():
            raise Stop(f"the Triton server process exited while loading {where}")
        if server is None and not self.context.control.is_live():
            raise Stop(f"Triton at {self.context.url} stopped answering while loading {where}")

    def _restore(self) -> None:
        """Load the model with the config it had before the tune (as Triton reported it)."""
        with contextlib.suppress(LoadTestError):
            self.context.control.load(self.model, json.dumps(self.base))


def _condensed(run: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "users": run.get("users"),
        "requests": run.get("requests"),
        "failures": run.get("failures"),
    }
    figures.update({name: figure_value(run, name) for name in _LEVEL_FIGURES})
    figures["stability"] = run.get("stability")
    return figures
