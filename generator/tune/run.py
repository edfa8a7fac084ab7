"""The orchestrator behind ``python -m generator tune``: search serving settings on a live Triton.

:func:`run_tune` builds the spec's repository (into a scratch copy, so the real one is untouched until a
winner is confirmed), serves it with the embedded Triton (or uses ``--url``, any Triton started with
``--model-control-mode=explicit``), and for each model:

1. measures the start config (the one the spec builds now) at every load level, until steady;
2. asks the search strategy for candidates; loads each with Triton's model control (the candidate's config
   JSON in place of ``config.pbtxt``, no restart) and measures it the same way; a candidate Triton refuses
   is a failed trial carrying Triton's reason;
3. measures the best trial and the start config once more, side by side: the winner is confirmed only when
   it still beats the start;
4. reloads the model with the repository's own config.

Every trial goes to ``tune.json`` as soon as it is measured, so a server that dies or a Ctrl-C keeps what
was measured. Confirmed winners are written to the tuned file beside the spec and the repository is
rebuilt through the ordinary atomic build; nothing is written otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import __version__
from generator.errors import GeneratorError, LoadTestError, TuneError
from generator.gpus import NvmlUnavailable, detect_gpus
from generator.harness.bench import Measurement, ModelBench, Steadiness
from generator.harness.control import ServerControl
from generator.harness.session import LoadProgress
from generator.harness.target import require_loopback, resolve_target
from generator.repository import MANIFEST, link_or_copy_tree
from generator.server import EmbeddedServer, find_free_port
from generator.spec import Spec, bundled_example, default_spec_path
from generator.tune.objective import Objective
from generator.tune.report import write_tune_report
from generator.tune.search import GridSearch, Outcome, make_search
from generator.tune.space import (
    Settings,
    Space,
    SpaceOptions,
    config_json,
    cpu_count,
    spec_settings,
    start_settings,
)
from generator.tuned import TunedEntry, load_spec_with_tuned, tuned_path, write_tuned

__all__ = ["Trial", "TuneConfig", "TuneProgress", "TuneResult", "run_tune"]

logger = logging.getLogger(__name__)

_LOAD_TIMEOUT = 600.0
_LEVEL_FIGURES = {
    "throughput": ("throughput",),
    "requests_per_s": ("requests_per_s",),
    "p50_ms": ("latency_ms", "p50"),
    "p90_ms": ("latency_ms", "p90"),
    "p99_ms": ("latency_ms", "p99"),
    "mean_ms": ("latency_ms", "mean"),
    "error_rate": ("error_rate",),
    "requests": ("requests",),
    "failures": ("failures",),
    "avg_batch_size": ("server", "avg_batch_size"),
    "queue_us": ("server", "queue_us"),
    "compute_input_us": ("server", "compute_input_us"),
    "compute_infer_us": ("server", "compute_infer_us"),
    "compute_output_us": ("server", "compute_output_us"),
    "cpu_utilization": ("cpu_utilization",),
    "memory_bytes": ("memory_bytes",),
    "gpu_utilization": ("gpu_utilization",),
    "gpu_memory_bytes": ("gpu_memory_bytes",),
}


@dataclass
class TuneConfig:
    """What ``python -m generator tune`` was asked to do (see its ``--help`` for each option)."""

    models: list[str]
    spec: str | Path | None = None
    output: str | Path | None = None
    users: list[int] = field(default_factory=lambda: [1, 16])
    objective: str = "throughput"
    max_p99_ms: float | None = None
    min_throughput: float | None = None
    max_memory: str | None = None
    constraints: list[str] = field(default_factory=list)
    search: str = "quick"
    budget_minutes: float | None = None
    steadiness: Steadiness = field(default_factory=Steadiness)
    space: SpaceOptions = field(default_factory=SpaceOptions)
    device: str = "cpu"
    url: str | None = None
    protocol: str | None = None
    batch_size: int = 1
    data: str | Path | None = None
    out: str | Path = "tune-report"
    write: bool = True
    allow_remote: bool = False
    seed: int = 0
    request_timeout: float = 30.0
    templates: str | Path | None = None
    use_tuned: bool = True


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


@dataclass
class TuneResult:
    """The outcome of :func:`run_tune`.

    Attributes:
        report: tune.json's content.
        files: ``{"json": path, "html": path}``.
        winners: Per model, the confirmed winning trial written back (absent: nothing written).
        unmet: Per model whose trials all broke a constraint, the closest trial as a line.
        tuned_file: The tuned file written, or None.
        build_output: What the rebuild printed, or None.
        stopped: Why the search ended early (the server died, Ctrl-C), or None.
    """

    report: dict[str, Any]
    files: dict[str, Path]
    winners: dict[str, Trial] = field(default_factory=dict)
    unmet: dict[str, str] = field(default_factory=dict)
    tuned_file: Path | None = None
    build_output: str | None = None
    stopped: str | None = None


class _Stop(Exception):
    """The search cannot go on (the server died); the trials so far are kept."""


@dataclass
class _Context:
    """What every trial of a run shares."""

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


def run_tune(config: TuneConfig, progress: TuneProgressCallback | None = None) -> TuneResult:
    """Tune each of ``config.models`` (see the module docstring) and write the report.

    Raises:
        TuneError: Bad options, an unknown model, a server that cannot start, or no trial met the
            constraints (the report is written first); the spec and repository are then unchanged.
        KeyboardInterrupt: Ctrl-C; the trials so far are in the report, nothing else changed.
        GeneratorError: The build or rebuild failed.
    """
    notify = progress or (lambda _: None)
    objective = _check(config)
    spec_path = Path(config.spec) if config.spec else default_spec_path()
    if config.write and spec_path.resolve() == bundled_example().resolve():
        raise TuneError(
            "tune writes the winner beside the spec, and the bundled example lives inside the installed package; "
            "copy it (with its sources) somewhere of yours and pass that spec, or add --no-write"
        )
    spec, _ = load_spec_with_tuned(spec_path)
    names = {m.name for m in spec.models}
    unknown = [m for m in config.models if m not in names]
    if unknown:
        raise TuneError(
            f"--model {', '.join(unknown)}: not in the spec (its models: {', '.join(sorted(names))})"
        )
    device, notes = _device(config)
    out = Path(config.out)
    run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report = _report_head(config, objective, spec_path, run_id, device, notes)
    result = TuneResult(report, {})
    with contextlib.ExitStack() as stack:
        url, server = _target(config, spec, spec_path, device, stack, notify)
        report["target"] = url
        control = stack.enter_context(
            ServerControl(resolve_target(url, config.protocol), timeout=_LOAD_TIMEOUT)
        )
        deadline = time.monotonic() + config.budget_minutes * 60 if config.budget_minutes else None
        context = _Context(config, objective, control, server, url, run_id, notify, deadline, report, out)
        try:
            for index, model in enumerate(config.models):
                report["models"][model] = _tune_model(context, model, len(config.models) - index)
        except _Stop as reason:
            result.stopped = report["stopped"] = str(reason)
        except KeyboardInterrupt:
            report["stopped"] = "interrupted (Ctrl-C)"
            result.files = write_tune_report(report, out)
            raise
    result.files = write_tune_report(report, out)
    if result.stopped is None:
        _decide(result, config)
        if config.write and result.winners:
            _write_back(result, config, spec_path, notify)
            result.files = write_tune_report(report, out)
    return result


def _check(config: TuneConfig) -> Objective:
    if not config.models:
        raise TuneError("name the model(s) to tune with --model NAME")
    if not config.users or any(u < 1 for u in config.users):
        raise TuneError("--users needs load levels of at least 1 user, e.g. --users 1,16")
    if config.search not in ("quick", "grid"):
        raise TuneError(f"--search '{config.search}': use quick or grid")
    if config.budget_minutes is not None and config.budget_minutes <= 0:
        raise TuneError("--budget-minutes must be above 0")
    if config.device not in ("cpu", "gpu"):
        raise TuneError(f"--device '{config.device}': use cpu or gpu")
    if config.batch_size < 1:
        raise TuneError("--batch-size must be at least 1")
    try:
        config.steadiness.check()
    except LoadTestError as error:
        raise TuneError(str(error)) from None
    return Objective.parse(
        config.objective, config.max_p99_ms, config.min_throughput, config.max_memory, config.constraints
    )


def _device(config: TuneConfig) -> tuple[str, list[str]]:
    """The device searched, and a note when ``--device gpu`` finds no GPU."""
    if config.device != "gpu":
        return "cpu", []
    try:
        gpus = detect_gpus()
    except NvmlUnavailable:
        gpus = []
    if gpus:
        if config.space.gpu_sets is None:
            ids = tuple(g.index for g in gpus)
            config.space.gpu_sets = list(dict.fromkeys([ids, ids[:1]]))
        return "gpu", []
    if config.space.gpu_sets:
        return "cpu", [
            "no GPU is visible here; the GPU sets asked for are tried anyway (Triton may refuse them)"
        ]
    return "cpu", ["no GPU is visible here: searching CPU settings (KIND_CPU)"]


def _target(
    config: TuneConfig,
    spec: Spec,
    spec_path: Path | None,
    device: str,
    stack: contextlib.ExitStack,
    notify: TuneProgressCallback,
) -> tuple[str, EmbeddedServer | None]:
    """The endpoint to tune on: ``--url``, or the embedded Triton serving a scratch build of the spec."""
    protocol = config.protocol or "http"
    if config.url:
        target = resolve_target(config.url, config.protocol)
        require_loopback(target, config.allow_remote)
        return target.url, None
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tritongen-tune-")))
    repository = scratch / "model_repository"
    existing = Path(config.output) if config.output else Path(spec.repository)
    if not existing.is_absolute():
        existing = Path.cwd() / existing
    if (existing / MANIFEST).is_file():
        link_or_copy_tree(existing, repository)  # its unchanged models are reused, not exported again
    notify(TuneProgress("building"))
    build_in_child(spec_path, repository, device, config.templates)
    notify(TuneProgress("starting Triton"))
    server = EmbeddedServer(
        repository,
        http_port=find_free_port(),
        grpc_port=find_free_port(),
        metrics_port=find_free_port(),
        supervise=False,
    )
    stack.callback(server.stop)
    server.start()
    endpoint = server.endpoints.grpc if protocol == "grpc" else server.endpoints.http
    return f"{protocol}://{endpoint}", server


def build_in_child(
    spec_path: Path | None, output: str | Path | None, device: str, templates: str | Path | None
) -> str:
    """Run ``python -m generator build`` in a child process; return what it printed.

    The build runs its exports in a worker process of its own; the tune's process runs the load side under
    gevent (Locust), which does not mix with that, and keeps the frameworks out of the measuring process.

    Raises:
        TuneError: The build failed; its error lines are the problems.
    """
    command = [sys.executable, "-m", "generator", "build", "--device", device]
    if spec_path is not None:
        command.append(str(spec_path))
    if output is not None:
        command += ["--output", str(output)]
    if templates is not None:
        command += ["--templates", str(templates)]
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        lines = [
            line.removeprefix("error: ") for line in done.stderr.splitlines() if line.startswith("error")
        ]
        raise TuneError(
            *(lines or [f"the build exited with code {done.returncode}: {done.stderr.strip()[-300:]}"])
        )
    return done.stdout


def _report_head(
    config: TuneConfig,
    objective: Objective,
    spec_path: Path | None,
    run_id: str,
    device: str,
    notes: list[str],
) -> dict[str, Any]:
    steady = config.steadiness
    return {
        "tool": f"tritongen {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": run_id,
        "spec": str(spec_path) if spec_path else None,
        "target": None,
        "protocol": config.protocol
        or (config.url.split("://")[0] if config.url and "://" in config.url else "http"),
        "search": config.search,
        "objective": {
            "metric": objective.metric,
            "direction": "max" if objective.maximise else "min",
            "over_levels": "geometric mean",
            "text": objective.describe(config.users),
        },
        "constraints": [b.text for b in objective.bounds],
        "levels": list(config.users),
        "batch_size": config.batch_size,
        "steadiness": {
            "window_s": steady.window,
            "warmup_s": steady.warmup,
            "tolerance_pct": steady.tolerance_pct,
            "windows": steady.least,
            "max_windows": steady.most,
        },
        "budget_minutes": config.budget_minutes,
        "device": device,
        "machine": {"cpus": cpu_count()},
        "notes": notes,
        "models": {},
        "stopped": None,
    }


def _tune_model(context: _Context, model: str, models_left: int) -> dict[str, Any]:
    """Search one model's settings; return its part of the report (also written as it goes)."""
    config = context.config
    _, base = context.control.model(model)
    start = start_settings(base)
    space = _space(config, base, start)
    search = make_search(config.search, space)
    planned = search.size if isinstance(search, GridSearch) else None
    entry: dict[str, Any] = {
        "space": space.describe(),
        "start": start.as_dict(),
        "trials": [],
        "planned_trials": planned,
    }
    context.report["models"][model] = entry
    trials: list[Trial] = []
    seen: dict[Settings, Trial] = {}
    budget_end = _model_deadline(context, models_left)
    with ModelBench(
        context.url,
        model,
        server=context.server,
        protocol=config.protocol,
        batch_size=config.batch_size,
        data=str(config.data) if config.data else None,
        seed=config.seed,
        request_timeout=config.request_timeout,
        allow_remote=config.allow_remote,
    ) as bench:
        try:
            while (point := search.ask()) is not None:
                settings = space.settings(point)
                if settings in seen:
                    search.tell(point, seen[settings].outcome)
                    continue
                if trials and not _time_for_another(trials, budget_end):
                    entry["budget_reached"] = True
                    break
                trial = _trial(
                    context,
                    bench,
                    base,
                    model,
                    len(trials),
                    settings,
                    "start" if not trials else "search",
                    planned,
                )
                trials.append(trial)
                seen[settings] = trial
                search.tell(point, trial.outcome)
                _record(context, entry, trials)
            _confirm(context, bench, base, model, trials, entry)
        finally:
            _restore(context, model, base)
    return entry


def _space(config: TuneConfig, base: dict[str, Any], start: Settings) -> Space:
    limit = start.max_batch_size
    if limit > 0 and base.get("platform") != "tensorrt_plan" and base.get("backend") != "tensorrt":
        limit = 2**16  # the batch axis is dynamic; a plan keeps the batch its engine was built for
    warmups = [int(w.get("batch_size", 1)) for w in base.get("model_warmup") or []]
    smallest = max([config.batch_size, *warmups])
    return Space(start, config.space, limit, smallest, cpu_count())


def _model_deadline(context: _Context, models_left: int) -> float | None:
    if context.deadline is None:
        return None
    return time.monotonic() + max(0.0, context.deadline - time.monotonic()) / models_left


def _time_for_another(trials: list[Trial], deadline: float | None) -> bool:
    """Whether one more trial and the confirmation (two trials) fit before the deadline."""
    if deadline is None:
        return True
    typical = sorted(t.seconds for t in trials)[len(trials) // 2]
    return time.monotonic() + 3 * typical <= deadline


def _trial(
    context: _Context,
    bench: ModelBench,
    base: dict[str, Any],
    model: str,
    number: int,
    settings: Settings,
    role: str,
    planned: int | None,
) -> Trial:
    """Load ``settings`` (the start config is measured as loaded) and measure it at every level."""
    trial = Trial(model, number, role, settings)
    started = time.monotonic()
    show = TuneProgress("loading", model, number, planned, settings.describe(), _best_line(context, model))
    context.notify(show)
    if role != "start":
        mark = context.server.log_size() if context.server else 0
        try:
            # The start config is loaded as Triton first reported it: a load without a config after one with
            # a config keeps the last one (Triton sees the repository unchanged and does not reload it).
            context.control.load(model, json.dumps(base) if role == "restart" else config_json(base, settings))
        except LoadTestError as error:
            reason = context.server.reason_since(mark) if context.server else ""
            trial.status, trial.error = "failed", f"{error}: {reason}" if reason else str(error)
            trial.seconds = time.monotonic() - started
            _check_alive(context, model, number)
            return trial
    trial.load_seconds = time.monotonic() - started

    def relay(load: LoadProgress) -> None:
        context.notify(TuneProgress("measuring", model, number, planned, show.settings, show.best, load))

    measurement = bench.measure(context.config.users, context.config.steadiness, relay)
    _score(context, trial, measurement)
    trial.seconds = time.monotonic() - started
    if measurement.aborted:
        trial.status, trial.error = "aborted", measurement.aborted
        raise _Stop(f"{measurement.aborted} (trial {number} of model '{model}')")
    return trial


def _score(context: _Context, trial: Trial, measurement: Measurement) -> None:
    runs = measurement.levels
    trial.levels = [_condensed(run) for run in runs]
    trial.constraints = {
        text: {"value": c["value"], "passed": c["passed"]}
        for text, c in context.objective.constraints(runs).items()
    }
    trial.outcome = context.objective.outcome(runs, len(context.config.users))
    if runs and all(run.get("requests", 0) == run.get("failures", 0) for run in runs):
        trial.status = "failed"
        first = next((e for run in runs for e in run.get("errors", [])), None)
        trial.error = f"every request failed: {first.get('message') if isinstance(first, dict) else first}"
        trial.outcome = Outcome(None)


def _condensed(run: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {"users": run.get("users")}
    for name, path in _LEVEL_FIGURES.items():
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        figures[name] = value
    figures["stability"] = run.get("stability")
    return figures


def _check_alive(context: _Context, model: str, number: int) -> None:
    server = context.server
    if server is not None and not server.is_running():
        raise _Stop(f"the Triton server process exited while loading trial {number} of model '{model}'")
    if server is None and not context.control.is_live():
        raise _Stop(
            f"Triton at {context.url} stopped answering while loading trial {number} of model '{model}'"
        )


def _best(trials: list[Trial]) -> Trial | None:
    measured = [t for t in trials if t.role != "confirm" and t.outcome.score is not None]
    return max(measured, key=lambda t: t.outcome.key()) if measured else None


def _best_line(context: _Context, model: str) -> str:
    entry = context.report["models"].get(model) or {}
    best = entry.get("best")
    if not best or best.get("objective") is None:
        return ""
    unit = "infer/s" if context.objective.maximise else "ms"
    return f"best {best['objective']:.4g} {unit} (trial {best['number']})"


def _record(context: _Context, entry: dict[str, Any], trials: list[Trial]) -> None:
    """Put the trials and the best so far in the report, and write tune.json now (nothing measured is lost)."""
    entry["trials"] = [t.as_dict(context.run_id, context.objective) for t in trials]
    best = _best(trials)
    entry["best"] = best.as_dict(context.run_id, context.objective) if best else None
    entry["best_per_level"] = _best_per_level(context, trials)
    write_tune_report(context.report, context.out, html=False)


def _best_per_level(context: _Context, trials: list[Trial]) -> dict[str, Any]:
    metric = context.objective.metric
    sign = 1.0 if context.objective.maximise else -1.0
    best: dict[str, Any] = {}
    for index, users in enumerate(context.config.users):
        candidates = [
            (sign * t.levels[index][metric], t)
            for t in trials
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


def _confirm(
    context: _Context,
    bench: ModelBench,
    base: dict[str, Any],
    model: str,
    trials: list[Trial],
    entry: dict[str, Any],
) -> None:
    """Measure the best trial and the start config again, side by side; the best must still win."""
    best = _best(trials)
    start = trials[0] if trials else None
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
    again_start = _trial(context, bench, base, model, len(trials), start.settings, "restart", None)
    again_start.role = "confirm"
    again_best = _trial(context, bench, base, model, len(trials) + 1, best.settings, "confirm", None)
    trials += [again_start, again_best]
    confirmed = again_best.outcome.feasible and again_best.outcome.beats(again_start.outcome)
    entry["confirmation"] = {"start": again_start.number, "best": again_best.number, "confirmed": confirmed}
    if confirmed:
        entry["winner"] = best.number
        entry["verdict"] = f"trial {best.number} confirmed: it beat the start config again"
    else:
        entry["verdict"] = (
            f"trial {best.number} did not beat the start config when both were measured again; nothing to change"
        )
    _record(context, entry, trials)


def _restore(context: _Context, model: str, base: dict[str, Any]) -> None:
    """Load the model with the config it had before the tune (as Triton reported it)."""
    with contextlib.suppress(LoadTestError):
        context.control.load(model, json.dumps(base))


def _decide(result: TuneResult, config: TuneConfig) -> None:
    """The winners to write, and the models whose trials all broke a constraint (the closest named)."""
    for model in config.models:
        entry = result.report["models"].get(model) or {}
        trials = entry.get("trials", [])
        winner = entry.get("winner")
        if winner is not None:
            trial = next(t for t in trials if t["number"] == winner)
            result.winners[model] = _trial_back(model, trial)
            continue
        measured = [t for t in trials if t["objective"] is not None and t["role"] != "confirm"]
        if measured and not any(t["feasible"] for t in measured):
            closest = min(measured, key=lambda t: t["violation"])
            broken = [
                f"{k} ({v['value']:.4g})"
                for k, v in closest["constraints"].items()
                if not v["passed"] and v["value"] is not None
            ]
            result.unmet[model] = (
                f"model '{model}': no trial met the constraints; the closest was trial {closest['number']} "
                f"({closest['describe']}), which broke {', '.join(broken) or 'a constraint'}"
            )


def _trial_back(model: str, data: dict[str, Any]) -> Trial:
    s = data["settings"]
    settings = Settings(
        instances=s["instances"],
        threads=s["threads"],
        max_batch_size=s["max_batch_size"],
        batching=s["batching"],
        queue_delay_us=s["queue_delay_us"],
        preferred=tuple(s["preferred"]),
        gpus=tuple(s["gpus"]) if s["gpus"] is not None else None,
    )
    trial = Trial(model, data["number"], data["role"], settings, levels=data["levels"])
    trial.outcome = Outcome(data["objective"], data["violation"])
    return trial


def _write_back(
    result: TuneResult, config: TuneConfig, spec_path: Path | None, notify: TuneProgressCallback
) -> None:
    """Write the winners to the tuned file and rebuild the repository; on a failed rebuild, undo the file."""
    path = tuned_path(spec_path)
    before = path.read_bytes() if path.is_file() else None
    run_id = result.report["run"]
    entries = {
        model: TunedEntry(
            settings=spec_settings(trial.settings),
            trial=f"{run_id}/{trial.number}",
            objective=result.report["objective"]["text"],
            measured=_measured(trial),
            tuned_at=result.report["created"],
        )
        for model, trial in result.winners.items()
    }
    write_tuned(spec_path, entries)
    result.tuned_file = path
    notify(TuneProgress("rebuilding"))
    try:
        result.build_output = build_in_child(
            spec_path, config.output, "cpu" if result.report["device"] == "cpu" else "gpu", config.templates
        )
    except (GeneratorError, KeyboardInterrupt):
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        result.tuned_file = None
        raise
    for model in result.winners:
        result.report["models"][model]["written"] = str(path)


def _measured(trial: Trial) -> dict[str, Any]:
    figures = {}
    for level in trial.levels:
        users = level.get("users")
        for name in ("throughput", "p50_ms", "p99_ms"):
            if level.get(name) is not None:
                figures[f"{name}@{users}"] = round(float(level[name]), 3)
    return figures
