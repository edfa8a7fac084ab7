"""One model's search: its trials, each loaded and measured on the live server, and the confirmation.

:class:`ModelTuner` asks the search strategy for settings, loads each candidate with Triton's model control
(the candidate's config JSON in place of ``config.pbtxt``), measures it at every load level until steady
(:class:`~generator.harness.bench.ModelBench`), scores it against the objective and the constraints, and
writes ``tune.json`` after every trial. At the end it measures the best trial and the start config again,
side by side, and loads the model back with the config it had.
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

from generator.errors import LoadTestError
from generator.harness.bench import Measurement, ModelBench
from generator.harness.control import ServerControl
from generator.harness.session import LoadProgress
from generator.loadreport.figures import figure_value
from generator.server import EmbeddedServer
from generator.tune.objective import Objective
from generator.tune.report import write_tune_report
from generator.tune.search import GridSearch, Outcome, make_search
from generator.tune.space import Settings, Space, config_json, cpu_count, start_settings

if TYPE_CHECKING:
    from generator.tune.run import TuneConfig

_SETTLE_SECONDS = 30.0

__all__ = ["ModelTuner", "Stop", "Trial", "TuneContext", "TuneProgress", "TuneProgressCallback"]

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
        stage: ``"building"``, ``"starting Triton"``, ``"loading"``, ``"measuring"``, ``"confirming"``,
            ``"rebuilding"``, ...
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
        start = start_settings(self.base)
        self.space = self._space(start)
        self.search = make_search(self.config.search, self.space)
        self.planned = self.search.size if isinstance(self.search, GridSearch) else None
        self.trials: list[Trial] = []
        self.entry: dict[str, Any] = {
            "space": self.space.describe(),
            "start": start.as_dict(),
            "trials": [],
            "planned_trials": self.planned,
        }
        context.report["models"][model] = self.entry
        self.deadline = None
        if context.deadline is not None:
            self.deadline = time.monotonic() + max(0.0, context.deadline - time.monotonic()) / models_left
        self.bench: ModelBench | None = None
        self.winner: Trial | None = None
        # The embedded server runs one stub process per instance: those of the other models stay.
        self._other_stubs = context.server.stub_count() - start.instances if context.server else 0

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
                self._confirm()
            finally:
                self._restore()
        return self.entry

    def _search(self) -> None:
        seen: dict[Settings, Trial] = {}
        while (point := self.search.ask()) is not None:
            settings = self.space.settings(point)
            if settings in seen:
                self.search.tell(point, seen[settings].outcome)
                continue
            if self.trials and not self._time_for_another():
                self.entry["budget_reached"] = True
                break
            first = not self.trials
            # The start config is measured as it is loaded; every other candidate is loaded first.
            trial = self._trial(
                settings, "start" if first else "search", None if first else config_json(self.base, settings)
            )
            self.trials.append(trial)
            seen[settings] = trial
            self.search.tell(point, trial.outcome)
            self._record()

    def _time_for_another(self) -> bool:
        """Whether one more trial and the confirmation (two trials) fit before the deadline."""
        if self.deadline is None:
            return True
        typical = sorted(t.seconds for t in self.trials)[len(self.trials) // 2]
        return time.monotonic() + 3 * typical <= self.deadline

    def _trial(self, settings: Settings, role: str, config: str | None) -> Trial:
        """Load ``config`` (None: measure what is loaded) and measure the model at every level."""
        context, number = self.context, len(self.trials)
        trial = Trial(self.model, number, role, settings)
        started = time.monotonic()
        planned = self.planned if role != "confirm" else None
        show = TuneProgress("loading", self.model, number, planned, settings.describe(), self._best_line())
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
            self._record()
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
        objective = self.context.objective
        runs = measurement.levels
        trial.levels = [_condensed(run) for run in runs]
        trial.constraints = {
            text: {"value": c["value"], "passed": c["passed"]}
            for text, c in objective.constraints(runs).items()
        }
        trial.outcome = objective.outcome(runs, len(self.config.users))
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

    def _best(self) -> Trial | None:
        measured = [t for t in self.trials if t.role != "confirm" and t.outcome.score is not None]
        return max(measured, key=lambda t: t.outcome.key()) if measured else None

    def _best_line(self) -> str:
        best = self.entry.get("best")
        if not best or best.get("objective") is None:
            return ""
        unit = "infer/s" if self.context.objective.maximise else "ms"
        return f"best {best['objective']:.4g} {unit} (trial {best['number']})"

    def _record(self) -> None:
        """Put the trials and the best so far in the report, and write tune.json now (nothing measured is lost)."""
        context = self.context
        self.entry["trials"] = [t.as_dict(context.run_id, context.objective) for t in self.trials]
        best = self._best()
        self.entry["best"] = best.as_dict(context.run_id, context.objective) if best else None
        self.entry["best_per_level"] = self._best_per_level()
        write_tune_report(context.report, context.out, html=False)

    def _best_per_level(self) -> dict[str, Any]:
        metric = self.context.objective.metric
        sign = 1.0 if self.context.objective.maximise else -1.0
        best: dict[str, Any] = {}
        for index, users in enumerate(self.config.users):
            candidates = [
                (sign * t.levels[index][metric], t)
                for t in self.trials
                if t.role != "confirm"
                and t.outcome.feasible
                and index < len(t.levels)
                and t.levels[index].get(metric) is not None
            ]
            if candidates:
                value, trial = max(candidates, key=lambda c: c[0])
                best[str(users)] = {
                    "trial": trial.number,
                    metric: sign * value,
                    "describe": trial.settings.describe(),
                }
        return best

    def _confirm(self) -> None:
        """Measure the best trial and the start config again, side by side; the best must still win."""
        best, entry = self._best(), self.entry
        start = self.trials[0] if self.trials else None
        entry["winner"] = None
        if best is None or start is None:
            entry["verdict"] = "no trial was measured"
            return
        if not best.outcome.feasible:
            entry["verdict"] = "no trial met the constraints"
            return
        if best is start:
            entry["verdict"] = "the start config is the best measured; nothing to change"
            return
        # The start config is loaded as Triton first reported it: a load without a config after one with a
        # config keeps the last one (Triton sees the repository unchanged and does not reload it).
        again_start = self._trial(start.settings, "confirm", json.dumps(self.base))
        self.trials.append(again_start)
        again_best = self._trial(best.settings, "confirm", config_json(self.base, best.settings))
        self.trials.append(again_best)
        confirmed = again_best.outcome.feasible and again_best.outcome.beats(again_start.outcome)
        entry["confirmation"] = {
            "start": again_start.number,
            "best": again_best.number,
            "confirmed": confirmed,
        }
        if confirmed:
            self.winner = best
            entry["winner"] = best.number
            entry["verdict"] = f"trial {best.number} confirmed: it beat the start config again"
        else:
            entry["verdict"] = (
                f"trial {best.number} did not beat the start config when both were measured again; nothing to change"
            )
        self._record()

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
