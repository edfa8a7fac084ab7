"""The orchestrator behind ``python -m generator tune``: search serving settings on a live Triton.

:func:`run_tune` builds the spec's repository (into a scratch copy, so the real one is untouched until a
winner is confirmed), serves it with the embedded Triton (or uses ``--url``, any Triton started with
``--model-control-mode=explicit``), and for each model:

1. measures the start config (the one the spec builds now) at every load level, until steady, and once
   more: the two measurements give each level's noise;
2. asks the search strategy for candidates; loads each with Triton's model control (the candidate's config
   JSON in place of ``config.pbtxt``, no restart) and measures it the same way; a candidate Triton refuses
   is a failed trial carrying Triton's reason; unless ``trade_levels``, a candidate worse than the start at
   any level beyond the noise counts as breaking a constraint;
3. measures the best trial and the start config once more, side by side: the winner is confirmed only when
   it still beats the start, and (unless ``trade_levels``) is worse at no level and better at one;
4. reloads the model with the repository's own config.

A model with the response cache on is measured with it off (the load test's few distinct requests would
otherwise be answered from the cache); the report says so. Every trial goes to ``tune.json`` as soon as it
is measured, so a server that dies or a Ctrl-C keeps what was measured. Confirmed winners are written to
the tuned file beside the spec and the repository is rebuilt through the ordinary atomic build; nothing is
written otherwise. The scratch copy lives in the temporary directory; a tune first removes those that
killed tunes left there (:mod:`~generator.tune.scratch`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator import __version__
from generator.build.child import ChildBuild, build_in_child
from generator.core.errors import GeneratorError, LoadTestError, TuneError
from generator.core.gpus import NvmlUnavailable, detect_gpus
from generator.core.repository import MANIFEST, link_or_copy_tree
from generator.loadtest.steady import Steadiness
from generator.loadtest.target import require_loopback, resolve_target
from generator.serve.control import ServerControl
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import Spec, bundled_example, default_spec_path
from generator.spec.tuned import TunedEntry, load_spec_with_tuned, tuned_path, write_tuned
from generator.tune.objective import Objective
from generator.tune.options import default
from generator.tune.report import write_tune_report
from generator.tune.scratch import clear_stale_scratch, make_scratch
from generator.tune.space import (
    THREAD_PARAMETER,
    SpaceOptions,
    cpu_count,
    spec_settings,
    thread_parameter,
)
from generator.tune.trials import ModelTuner, Stop, Trial, TuneContext, TuneProgress, TuneProgressCallback

__all__ = ["Trial", "TuneConfig", "TuneInterrupted", "TuneProgress", "TuneResult", "run_tune"]

logger = logging.getLogger(__name__)

_LOAD_TIMEOUT = 600.0


@dataclass
class TuneConfig:
    """What ``python -m generator tune`` was asked to do; each field's option, default and help are
    declared once in :data:`generator.tune.options.OPTIONS` (see ``tune --help``).

    Attributes:
        models: The models to tune (``--model``).
        steadiness: When a level's measurement is steady (``--trial-seconds``, ``--warmup``,
            ``--stability-pct``, ``--stability-windows``, ``--max-windows``).
        space: The values to search (``--instances``, ``--threads``, ...; None: chosen for the model).
        write: Write the winner back and rebuild (``--no-write`` turns it off).
    """

    models: list[str]
    spec: str | Path | None = default("spec")
    output: str | Path | None = default("output")
    users: list[int] = field(default_factory=lambda: default("users"))
    objective: str = default("objective")
    max_p99_ms: float | None = default("max_p99_ms")
    min_throughput: float | None = default("min_throughput")
    max_memory: str | None = default("max_memory")
    constraints: list[str] = field(default_factory=lambda: default("constraints"))
    search: str = default("search")
    budget_minutes: float | None = default("budget_minutes")
    steadiness: Steadiness = field(default_factory=Steadiness)
    space: SpaceOptions = field(default_factory=SpaceOptions)
    device: str = default("device")
    url: str | None = default("url")
    protocol: str | None = default("protocol")
    batch_size: int = default("batch_size")
    data: str | Path | None = default("data")
    out: str | Path = default("out")
    write: bool = default("write")
    allow_remote: bool = default("allow_remote")
    seed: int = default("seed")
    request_timeout: float = default("request_timeout")
    templates: str | Path | None = default("templates")
    trade_levels: bool = default("trade_levels")


class TuneInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) ended the tune; nothing was written back.

    Attributes:
        trials: How many trials had been recorded.
        report: ``tune.json`` holding them, or None when there were none (no report was written).
    """

    def __init__(self, trials: int, report: Path | None) -> None:
        self.trials, self.report = trials, report
        plural = "s" if trials != 1 else ""
        super().__init__(
            f"the {trials} trial{plural} so far are in {report}"
            if report is not None
            else "no trial was measured, so no report was written"
        )


@dataclass
class TuneResult:
    """The outcome of :func:`run_tune`.

    Attributes:
        report: tune.json's content.
        files: ``{"json": path, "html": path}``.
        winners: Per model, the confirmed winning trial written back (absent: nothing written).
        threads_keys: Per winning model, its backend's thread-count parameter.
        unmet: Per model whose trials all broke a constraint, the closest trial as a line.
        tuned_file: The tuned file written, or None.
        rebuild: What the rebuild with the winners wrote, or None.
        stopped: Why the search ended early (the server died, Ctrl-C), or None.
    """

    report: dict[str, Any]
    files: dict[str, Path]
    winners: dict[str, Trial] = field(default_factory=dict)
    threads_keys: dict[str, str] = field(default_factory=dict)
    unmet: dict[str, str] = field(default_factory=dict)
    tuned_file: Path | None = None
    rebuild: ChildBuild | None = None
    stopped: str | None = None


def run_tune(config: TuneConfig, progress: TuneProgressCallback | None = None) -> TuneResult:
    """Tune each of ``config.models`` (see the module docstring) and write the report.

    Raises:
        TuneError: Bad options, an unknown model, a server that cannot start, or no trial met the
            constraints (the report is written first); the spec and repository are then unchanged.
        TuneInterrupted: Ctrl-C; the trials so far (if any) are in the report, nothing else changed.
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
    try:
        _tune(config, objective, spec, spec_path, device, run_id, report, result, notify)
    except KeyboardInterrupt:
        trials = sum(len(entry.get("trials", [])) for entry in report["models"].values())
        saved = None
        if trials:
            report["stopped"] = "interrupted (Ctrl-C)"
            saved = write_tune_report(report, out)["json"]
        raise TuneInterrupted(trials, saved) from None
    return result


def _tune(
    config: TuneConfig,
    objective: Objective,
    spec: Spec,
    spec_path: Path,
    device: str,
    run_id: str,
    report: dict[str, Any],
    result: TuneResult,
    notify: TuneProgressCallback,
) -> None:
    """:func:`run_tune` once the options are checked: serve, search each model, decide, write back."""
    out = Path(config.out)
    cleared = clear_stale_scratch()
    if cleared:
        several = len(cleared) > 1
        report["notes"].append(
            f"removed {len(cleared)} scratch cop{'ies' if several else 'y'} that "
            f"{'killed tunes' if several else 'a killed tune'} left in {cleared[0].parent}"
        )
    with contextlib.ExitStack() as stack:
        url, server = _target(config, spec, spec_path, device, stack, notify)
        target = resolve_target(url, config.protocol)
        report["target"], report["protocol"] = url, target.protocol
        control = stack.enter_context(ServerControl(target, timeout=_LOAD_TIMEOUT, error=LoadTestError))
        deadline = time.monotonic() + config.budget_minutes * 60 if config.budget_minutes else None
        context = TuneContext(config, objective, control, server, url, run_id, notify, deadline, report, out)
        tuners: list[ModelTuner] = []
        try:
            for index, model in enumerate(config.models):
                tuners.append(ModelTuner(context, model, len(config.models) - index))
                tuners[-1].run()
        except Stop as reason:
            result.stopped = report["stopped"] = str(reason)
    result.files = write_tune_report(report, out)
    if result.stopped is None:
        _decide(result, tuners)
        if config.write and result.winners:
            _write_back(result, config, spec_path, notify)
            result.files = write_tune_report(report, out)


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
    scratch = make_scratch()
    stack.callback(shutil.rmtree, scratch, ignore_errors=True)
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
        "protocol": None,
        "search": config.search,
        "objective": {
            "metric": objective.metric,
            "direction": "max" if objective.maximise else "min",
            "over_levels": "geometric mean",
            "levels_traded": config.trade_levels,
            "per_level": (
                "a gain at one level may buy a loss at another (--trade-levels)"
                if config.trade_levels
                else "no level worse than the start config beyond the measured noise"
            ),
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


def _decide(result: TuneResult, tuners: list[ModelTuner]) -> None:
    """The winners to write, and the models whose trials all broke a constraint (the closest named)."""
    for tuner in tuners:
        if tuner.winner is not None:
            result.winners[tuner.model] = tuner.winner
            result.threads_keys[tuner.model] = thread_parameter(tuner.base)
            continue
        measured = [t for t in tuner.trials if t.outcome.score is not None and t.role != "confirm"]
        if measured and not any(t.outcome.feasible for t in measured):
            closest = min(measured, key=lambda t: t.outcome.violation)
            broken = [
                f"{text} ({c['value']:.4g})"
                for text, c in closest.constraints.items()
                if not c["passed"] and c["value"] is not None
            ]
            result.unmet[tuner.model] = (
                f"model '{tuner.model}': no trial met the constraints; the closest was trial {closest.number} "
                f"({closest.settings.describe()}), which broke {', '.join(broken) or 'a constraint'}"
            )


def _write_back(
    result: TuneResult, config: TuneConfig, spec_path: Path | None, notify: TuneProgressCallback
) -> None:
    """Write the winners to the tuned file and rebuild the repository; on a failed rebuild, undo the file."""
    path = tuned_path(spec_path)
    before = path.read_bytes() if path.is_file() else None
    run_id = result.report["run"]
    entries = {
        model: TunedEntry(
            settings=spec_settings(trial.settings, result.threads_keys.get(model, THREAD_PARAMETER)),
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
        result.rebuild = build_in_child(
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
