"""The orchestrator behind ``python -m generator loadtest``: Locust as a library, measured, reported, gated.

:func:`run_loadtest` checks everything it can before any load starts (options, ``--fail-if`` bounds, the
baseline, the target and loopback rule, the server, every model, the inputs, and one request per model
whose reply is decoded and checked: the report's ``replies``), optionally starts the embedded Triton
(``--serve``), then drives Locust's runner through the shape's phases: an in-process ``LocalRunner``, or
with ``--workers K`` an in-process ``MasterRunner`` and K worker processes. For each measurement window
it records every request (:mod:`~generator.loadtest.recorder`), snapshots Triton's statistics at both
ends (of an ensemble's steps too: the run's ``steps``), and samples metrics and the server's processes; a
watchdog ends the run when the server dies. It writes the report and returns the gate's verdict; it
never prints or exits.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import argument_parser

from generator import __version__
from generator.core.errors import LoadTestError
from generator.loadtest.distributed import LocalWorkers, RemoteWorkers
from generator.loadtest.metrics import Sampler, find_listening_pid, server_figures, step_figures
from generator.loadtest.options import default
from generator.loadtest.parameters import parse_params
from generator.loadtest.payloads import parse_input_shapes
from generator.loadtest.pipelines import Step
from generator.loadtest.plan import Plan, build_plan, options_from, parse_models, remember_plan
from generator.loadtest.recorder import Records
from generator.loadtest.report.baseline import compare, load_baseline, mismatches
from generator.loadtest.report.figures import client_figures, cost_per_1k, sequence_figures, stream_figures
from generator.loadtest.report.gate import Bound, check_bounds, parse_bound
from generator.loadtest.report.write import write_report
from generator.loadtest.sequences import SequenceSettings, parse_id_range
from generator.loadtest.session import LoadProgress, LoadProgressCallback, Session, Window
from generator.loadtest.shapes import Phase, parse_levels, schedule
from generator.loadtest.target import PROTOCOLS, is_loopback, require_loopback, resolve_target
from generator.serve.control import ServerControl
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

__all__ = ["LoadProgress", "LoadTestConfig", "LoadTestResult", "run_loadtest"]

logger = logging.getLogger(__name__)


@dataclass
class LoadTestConfig:
    """What ``python -m generator loadtest`` was asked to do (see its ``--help`` for each option).

    Every field is an option of :data:`~generator.loadtest.options.OPTIONS`, and takes its default from there.

    Attributes:
        models: ``NAME`` or ``NAME:WEIGHT`` entries.
        url: The endpoint (``host:port``, ``http://...``, ``grpc://...``); None: loopback default port.
        protocol: ``"http"``, ``"grpc"`` or None (from ``url``, else HTTP).
        batch_size: Samples per request.
        users: Users of a single load level (default 1 without ``sweep``).
        sweep: Load levels, run in order.
        duration: Measured seconds per level (step) or of the ramp.
        warmup: Unmeasured seconds after each level is spawned.
        spawn_rate: Users per second when changing level (default: the whole level at once).
        shape: The load shape, ``"step"`` or ``"ramp"``.
        workers: Locust worker processes (0: one in-process runner).
        master: Be the Locust master for ``expect_workers`` workers that other machines start.
        expect_workers: With ``master``: the workers to wait for.
        expect_workers_max_wait: With ``master``: seconds to wait for them.
        master_bind_host: With ``master``: the address to listen on (None: 127.0.0.1).
        master_bind_port: With ``master``: the port to listen on.
        data: File of real samples (.npz, .json or .txt).
        input_shapes: ``NAME:DIMS`` entries: the dims of inputs with -1 axes (``--shape``).
        params: ``NAME=VALUE`` entries: the input of that name, else a request parameter (``--param``).
        sequence_length: Requests per sequence of a stateful model.
        sequence_length_variation: Each sequence's length varies uniformly by this percentage of it.
        sequence_id_range: ``START[:END]`` of the correlation IDs (None: from 1).
        sequences_per_user: Sequences each user keeps going at once.
        serve: A model repository to serve with the embedded Triton for the run.
        price_per_hour: Price of the serving machine per hour, for the cost per 1,000 inferences.
        baseline: An earlier report.json to compare with.
        fail_if: ``--fail-if`` expressions.
        out: Report directory.
        allow_remote: Allow a target that is not on this machine.
        metrics_url: Triton's metrics page (default: with ``serve`` its own, else the host's port 8002).
        seed: Seed of the random inputs.
        request_timeout: Seconds before a request counts as failed.
    """

    models: list[str]
    url: str | None = default("url")
    protocol: str | None = default("protocol")
    batch_size: int = default("batch_size")
    users: int | None = default("users")
    sweep: list[int] | str | None = default("sweep")
    duration: float = default("duration")
    warmup: float = default("warmup")
    spawn_rate: float | None = default("spawn_rate")
    shape: str = default("shape")
    workers: int = default("workers")
    master: bool = default("master")
    expect_workers: int | None = default("expect_workers")
    expect_workers_max_wait: float = default("expect_workers_max_wait")
    master_bind_host: str | None = default("master_bind_host")
    master_bind_port: int = default("master_bind_port")
    data: str | Path | None = default("data")
    input_shapes: list[str] = field(default_factory=lambda: list(default("input_shapes")))
    params: list[str] = field(default_factory=lambda: list(default("params")))
    sequence_length: int = default("sequence_length")
    sequence_length_variation: float = default("sequence_length_variation")
    sequence_id_range: str | None = default("sequence_id_range")
    sequences_per_user: int = default("sequences_per_user")
    serve: str | Path | None = default("serve")
    price_per_hour: float | None = default("price_per_hour")
    baseline: str | Path | None = default("baseline")
    fail_if: list[str] = field(default_factory=lambda: list(default("fail_if")))
    out: str | Path = default("out")
    allow_remote: bool = default("allow_remote")
    metrics_url: str | None = default("metrics_url")
    seed: int = default("seed")
    request_timeout: float = default("request_timeout")


@dataclass
class LoadTestResult:
    """The outcome of :func:`run_loadtest`.

    Attributes:
        report: The report, as written to report.json.
        files: ``{"json": path, "csv": path, "html": path}``.
        breaches: One line per ``--fail-if`` bound that a run broke (or that could not be checked).
        aborted: Why the run was cut short (the server died), or None.
    """

    report: dict[str, Any]
    files: dict[str, Path]
    breaches: list[str]
    aborted: str | None

    @property
    def passed(self) -> bool:
        """Whether the run completed and no bound was breached."""
        return not self.breaches and self.aborted is None


def run_loadtest(config: LoadTestConfig, progress: LoadProgressCallback | None = None) -> LoadTestResult:
    """Run a load test and write its report (see the module docstring).

    Args:
        config: What to run.
        progress: Called with a :class:`LoadProgress` several times a second while the test runs.

    Returns:
        The report, the files written, the gate's breaches, and whether the run was cut short.

    Raises:
        LoadTestError: The test could not start (bad options, unreachable server, unknown model, bad data,
            a remote target without ``allow_remote``); nothing is left running.
    """
    notify = progress or (lambda _: None)
    bounds, levels, phases, baseline = _checked(config)
    data = str(Path(config.data).resolve()) if config.data else None

    with contextlib.ExitStack() as stack:
        server = None
        url = config.url
        if config.serve:
            notify(LoadProgress("starting Triton"))
            server = _serve(Path(config.serve), stack)
            endpoint = server.endpoints.grpc if config.protocol == "grpc" else server.endpoints.http
            url = f"{config.protocol or 'http'}://{endpoint}"
        target = resolve_target(url, config.protocol)
        require_loopback(target, config.allow_remote)
        workers: LocalWorkers | RemoteWorkers | None = None
        if config.master:
            workers = RemoteWorkers(
                int(config.expect_workers or 0),
                config.master_bind_host or "127.0.0.1",
                config.master_bind_port,
                config.expect_workers_max_wait,
            )
        elif config.workers > 0:
            # Started before this process opens any gRPC channel: gRPC's fork handlers can abort a forked child.
            notify(LoadProgress("starting Locust workers"))
            workers = LocalWorkers(config.workers, find_free_port())
            stack.callback(workers.stop)
            workers.start()
        notify(LoadProgress("checking the server and models"))
        parsed = parsed_options(config, target.url, data)
        plan = build_plan(options_from(parsed, target.url))
        plan.requests(plan.target.protocol)  # build them now: a problem shows before any load starts
        replies = plan.check_replies(plan.target.protocol)
        remember_plan(plan)
        control = stack.enter_context(ServerControl(target, error=LoadTestError))
        probe = stack.enter_context(ServerControl(target, timeout=2.0, error=LoadTestError))
        local = is_loopback(target.host)
        sampler = Sampler(
            config.metrics_url or (server.endpoints.metrics if server else target.default_metrics_url()),
            server.pid if server else (find_listening_pid(target.port) if local else None),
        )
        sampler.check()
        session = Session(plan, parsed, control, probe, server, workers, sampler, notify, stack)
        windows, totals, aborted = session.run(phases)

    notify(LoadProgress("writing the report"))
    notes = sampler.notes + session.notes
    if local:
        notes.append(
            f"the client ran on the same machine as the server ({os.cpu_count()} CPUs): they compete for CPU"
        )
    runs = [
        run_entry(
            w, session.records, config.price_per_hour, plan.pipelines, plan.has_sequences, plan.has_streams
        )
        for w in windows
    ]
    metadata = _metadata(config, plan, levels, target.url, totals, aborted, notes)
    metadata["replies"] = replies
    comparisons = compare(runs, baseline) if baseline else None
    if baseline is not None:
        metadata["baseline"] = {"path": baseline["path"], "notes": mismatches(metadata, baseline)}
        for run, comparison in zip(runs, comparisons or [], strict=False):
            run["baseline"] = comparison
    breaches = check_bounds(bounds, runs, comparisons) if bounds else []
    metadata["gate"] = {"bounds": [b.text for b in bounds], "breaches": breaches, "passed": not breaches}
    report = _rounded({**metadata, "runs": runs})
    files = write_report(report, Path(config.out))
    return LoadTestResult(report, files, breaches, aborted)


def _checked(config: LoadTestConfig) -> tuple[list[Bound], list[int], list[Phase], dict[str, Any] | None]:
    """Check every option that needs no server; return the bounds, levels, phases and baseline.

    Raises:
        LoadTestError: The first problem found.
    """
    bounds = [parse_bound(text) for text in config.fail_if]
    if config.users is not None and config.sweep:
        raise LoadTestError("give either --users N or --sweep LEVELS, not both")
    if config.users is not None and config.users < 1:
        raise LoadTestError(f"--users must be at least 1, not {config.users}")
    levels = parse_levels(config.sweep) if config.sweep else [int(config.users or 1)]
    phases = schedule(levels, config.shape, config.duration, config.warmup, config.spawn_rate)
    if config.workers < 0:
        raise LoadTestError(f"--workers must be 0 or more, not {config.workers}")
    _check_master(config)
    if config.protocol is not None and config.protocol not in PROTOCOLS:
        raise LoadTestError(f"unknown protocol '{config.protocol}'; use one of: {', '.join(PROTOCOLS)}")
    if config.price_per_hour is not None and config.price_per_hour < 0:
        raise LoadTestError("--price-per-hour must be 0 or more")
    if config.serve and config.url:
        raise LoadTestError("give either --serve DIR (start a server) or --url (use a running one), not both")
    parse_models(config.models)
    parse_input_shapes(config.input_shapes)
    parse_params(config.params)
    start, end = parse_id_range(config.sequence_id_range)
    SequenceSettings(
        config.sequence_length, config.sequence_length_variation, start, end, config.sequences_per_user
    ).check(max(levels), _processes(config))
    baseline = load_baseline(config.baseline) if config.baseline else None
    if baseline is None and any(b.on_change for b in bounds):
        raise LoadTestError("a --fail-if bound on a '_change_pct' metric needs --baseline FILE")
    return bounds, levels, phases, baseline


def _check_master(config: LoadTestConfig) -> None:
    """Check the distributed-mode options (``--master`` and what goes with it).

    Raises:
        LoadTestError: The first problem found.
    """
    if not config.master:
        given = [
            flag
            for flag, value in (
                ("--expect-workers", config.expect_workers),
                ("--master-bind-host", config.master_bind_host),
            )
            if value is not None
        ]
        if given:
            raise LoadTestError(f"{given[0]} needs --master (be the Locust master for workers elsewhere)")
        return
    if config.workers:
        raise LoadTestError(
            "give either --workers K (on this machine) or --master (workers elsewhere), not both"
        )
    if config.expect_workers is None or config.expect_workers < 1:
        raise LoadTestError("--master needs --expect-workers N (N at least 1): the workers to wait for")
    if not 0 < config.master_bind_port < 65536:
        raise LoadTestError(f"--master-bind-port must be 1 to 65535, not {config.master_bind_port}")
    if config.expect_workers_max_wait <= 0:
        raise LoadTestError("--expect-workers-max-wait must be more than 0 seconds")


def _processes(config: LoadTestConfig) -> int:
    """The load processes of a test: its Locust workers, or this process alone."""
    return max(1, int(config.expect_workers or 0) if config.master else config.workers)


def _serve(repository: Path, stack: contextlib.ExitStack) -> EmbeddedServer:
    if not repository.is_dir():
        raise LoadTestError(
            f"--serve {repository}: no such model repository; build one with `python -m generator build`"
        )
    server = EmbeddedServer(
        repository, http_port=find_free_port(), grpc_port=find_free_port(), metrics_port=find_free_port()
    )
    stack.callback(server.stop)
    server.start()
    return server


def parsed_options(config: LoadTestConfig, host: str, data: str | None) -> Any:
    """Locust's parsed options with the harness's own (the master sends these to its workers)."""
    parser = argument_parser.get_empty_argument_parser()
    argument_parser.setup_parser_arguments(parser)
    parsed = parser.parse_args(args=[])
    parsed.headless = True
    parsed.host = host
    parsed.models = [f"{name}:{weight:g}" for name, weight in parse_models(config.models)]
    parsed.protocol = config.protocol or resolve_target(host).protocol
    parsed.grpc_url = None
    parsed.batch_size = int(config.batch_size)
    parsed.data = data
    parsed.seed = int(config.seed)
    parsed.input_shapes = list(config.input_shapes)
    parsed.request_timeout = float(config.request_timeout)
    parsed.params = list(config.params)
    parsed.sequence_length = int(config.sequence_length)
    parsed.sequence_length_variation = float(config.sequence_length_variation)
    parsed.sequence_id_range = config.sequence_id_range
    parsed.sequences_per_user = int(config.sequences_per_user)
    parsed.load_processes = _processes(config)
    parsed.record_requests = True
    return parsed


def run_entry(
    window: Window,
    records: Records,
    price: float | None,
    pipelines: dict[str, tuple[Step, ...]] | None = None,
    sequences: bool = False,
    streams: bool = False,
) -> dict[str, Any]:
    """One run of the report (a load level): the client's, the server's and the resource figures of a window.

    Args:
        window: The measurement window.
        records: Every request of the test.
        price: The machine's price per hour, or None.
        pipelines: The steps of each ensemble the test loads (their figures become the run's ``steps``).
        sequences: The test has a stateful model (the run gets ``sequences``).
        streams: The test has a decoupled model (the run gets ``stream``).
    """
    seconds = window.end - window.start
    rows = records.between(window.start, window.end)
    client = client_figures(rows, seconds, records.names, records.messages)
    server: dict[str, Any] = {}
    steps: list[dict[str, Any]] = []
    if window.stats_before is not None and window.stats_after is not None:
        server = server_figures(window.stats_before, window.stats_after, records.names)
        steps = step_figures(window.stats_before, window.stats_after, pipelines or {})
    resources = window.resources or {}
    return {
        "users": int(window.users) if float(window.users).is_integer() else window.users,
        "window_s": round(seconds, 3),
        "complete": window.complete,
        "requests": client["requests"],
        "failures": client["failures"],
        "inferences": client["inferences"],
        "throughput": client["throughput"],
        "requests_per_s": client["requests_per_s"],
        "error_rate": client["error_rate"],
        "latency_ms": client["latency_ms"],
        "sequences": sequence_figures(rows, seconds) if sequences else None,
        "stream": stream_figures(rows, seconds) if streams else None,
        "server": {
            key: server.get(key)
            for key in (
                "queue_us",
                "compute_input_us",
                "compute_infer_us",
                "compute_output_us",
                "avg_batch_size",
                "cache_hit_rate",
                "inference_count",
                "execution_count",
                "success_count",
                "fail_count",
                "cache_hit_count",
                "per_model",
            )
        },
        "steps": steps,
        "cpu_utilization": resources.get("cpu_utilization"),
        "memory_bytes": resources.get("memory_bytes"),
        "gpu_utilization": resources.get("gpu_utilization"),
        "gpu_memory_bytes": resources.get("gpu_memory_bytes"),
        "host_cpu_utilization": resources.get("host_cpu_utilization"),
        "host_memory_used_bytes": resources.get("host_memory_used_bytes"),
        "resource_source": resources.get("resource_source"),
        "cost_per_1k": cost_per_1k(client["throughput"], price),
        "errors": client["errors"],
        "per_model": client["per_model"],
        "latency_histogram": client["latency_histogram"],
    }


def _metadata(
    config: LoadTestConfig,
    plan: Plan,
    levels: list[int],
    target: str,
    totals: dict[str, Any],
    aborted: str | None,
    notes: list[str],
) -> dict[str, Any]:
    return {
        "tool": f"tritongen {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "protocol": plan.target.protocol,
        "models": [{"name": m.name, "weight": w} for m, w in zip(plan.models, plan.weights, strict=True)],
        "batch_size": plan.batch_size,
        "shape": config.shape,
        "levels": levels,
        "duration_s": config.duration,
        "warmup_s": config.warmup if config.shape == "step" else 0.0,
        "workers": config.expect_workers if config.master else config.workers,
        "master": f"{config.master_bind_host or '127.0.0.1'}:{config.master_bind_port}"
        if config.master
        else None,
        "data": str(config.data) if config.data else None,
        "input_shapes": list(config.input_shapes),
        "params": list(config.params),
        "sequences": {
            "length": config.sequence_length,
            "length_variation_pct": config.sequence_length_variation,
            "id_range": config.sequence_id_range,
            "per_user": config.sequences_per_user,
            "models": [m.name for m in plan.models if m.sequence is not None],
        }
        if plan.has_sequences
        else None,
        "streaming": [m.name for m in plan.models if m.decoupled] or None,
        "seed": config.seed,
        "price_per_hour": config.price_per_hour,
        "server": {k: plan.server.get(k) for k in ("name", "version")},
        "totals": totals,
        "aborted": aborted,
        "notes": notes,
        "baseline": None,
    }


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits, recursively: the report reads better and loses nothing measured."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value
