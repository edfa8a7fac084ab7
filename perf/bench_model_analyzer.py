"""Benchmark: ``tune --search quick`` against NVIDIA Model Analyzer's search, same server, model and space.

Model Analyzer 1.46.0 (the release paired with Triton 2.51) drives the embedded tritonserver in its ``local``
launch mode: it starts the server through a wrapper script that gives it the embedded server's environment
and backend directory, and measures with perf_analyzer 2.51 (through a wrapper that sets its libraries).
Then tritongen's tune searches the same model on the same server build. For ``digits_cnn`` of the bundled
example both are limited to one space: instance counts 1, 2, 4; ``max_batch_size`` 64; dynamic batching on;
concurrency 1 and 16; objective throughput under ``p99 <= 50 ms``; gRPC. For each search the script prints
the configs profiled, the wall time, the best throughput and its p99 at each concurrency, and the config
it picked. Each search measures with its own client (perf_analyzer; the harness, whose gRPC client costs
more CPU), so their figures do not compare across searches; last, the start config and every pick are
loaded in turn on one server and measured by perf_analyzer in alternating rounds (``--rounds``), which do.

Where Model Analyzer cannot express that space, it gets the nearest it can:

- quick mode takes no lists: instance counts are a range (1 to 4, so 3 is in it too) and so is concurrency.
  Its search measures each config at ``2 x max_batch_size x instances`` clamped to 16, the default config
  at ``2 x 64 x 2 = 256``; the concurrency sweep of its top configs afterwards stops after 1, 2, 4, 8 (in
  1.46 the sweep never receives its measurements, so it always reads "throughput is decreasing" after
  four steps). ``max_batch_size`` is pinned at 64: from 1 up, every config below the model's preferred
  batch size 32 is illegal to it and skipped.
- brute mode takes the exact lists (``model_config_parameters`` and ``concurrency: [1, 16]``); it runs when
  quick mode measured only the default config (``--brute auto``), or always (``--brute always``).

tritongen's tune searches the queue delay and the preferred batch sizes too (Model Analyzer keeps the
model's own), keeps the backend's own thread count, and measures over gRPC here, as Model Analyzer does.

perf_analyzer fails a measurement it cannot get steady (``--stability-percentage``, 10 % by default, over
3 windows); Model Analyzer retries with more requests per window and after 10 tries records nothing for
that config, and its quick search then stops where it is. ``--pa-stability PCT`` passes a looser percentage
for a shared or noisy machine (tune's rule: 3 windows within 10 % of each other; after 8 windows a level
counts as measured, marked unsteady).

Model Analyzer goes into a venv of its own in the cache directory (``pip install``, once: it pins old numpy
and protobuf, so it never shares the project's environment); perf_analyzer comes from
``perf/bench_harness.py``'s fetch. When Model Analyzer cannot run, the script says at which step and why,
and still runs the tune.

Run: ``python perf/bench_model_analyzer.py [--brute auto|always|never] [--pa-stability PCT] [--rounds 2]
[--duration 6] [--skip-tune] [--skip-model-analyzer] [--save DIR]``. Takes 15-30 minutes on a 2-core
machine (the client and the server share its cores: compare figures from one run).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Locust (under the tune) patches the standard library for gevent; import it before the rest.
from generator.tune.run import TuneConfig, run_tune  # isort: skip

import argparse
import contextlib
import csv
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import yaml
from bench_harness import PerfAnalyzerUnavailable, fetch_perf_analyzer, library_dir, perf_analyzer

from generator.build.child import build_in_child
from generator.core.errors import GeneratorError, LoadTestError
from generator.loadtest.target import resolve_target
from generator.serve.control import ServerControl
from generator.serve.launch import find_free_port, launch_files
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example
from generator.tune.space import Settings, SpaceOptions, config_json, start_settings

MA_VERSION = "1.46.0"
# The client wheel of the server's release; Model Analyzer would otherwise take the newest.
MA_REQUIREMENTS = [f"triton-model-analyzer=={MA_VERSION}", "numpy<2", "tritonclient[all]==2.51.0"]
MODEL = "digits_cnn"
INSTANCES = [1, 2, 4]
MAX_BATCH_SIZE = 64
CONCURRENCY = [1, 16]
MAX_P99_MS = 50.0
MA_TIMEOUT_S = 3600


class ModelAnalyzerFailed(Exception):
    """Model Analyzer cannot run here; the message names the step and the error."""


@dataclass
class Row:
    """One measurement: a config at one concurrency."""

    config: str
    describe: str
    concurrency: int
    throughput: float
    p99_ms: float

    @property
    def passed(self) -> bool:
        return self.p99_ms <= MAX_P99_MS


@dataclass
class Outcome:
    """One search's figures for the comparison."""

    label: str
    seconds: float = 0.0
    tried: list[str] = field(default_factory=list)  # configs created (or trials run), in order
    measured: dict[str, Settings] = field(default_factory=dict)  # the configs measured, in order
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    picked: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None


# ---------------------------------------------------------------------------------------------- set-up


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tritongen" / f"model-analyzer-{MA_VERSION}"


def model_analyzer() -> Path:
    """The ``model-analyzer`` command of a venv of its own in the cache, set up once.

    Raises:
        ModelAnalyzerFailed: The venv or the install failed (the step and pip's last lines).
    """
    venv = _cache_dir() / "venv"
    command = venv / "bin" / "model-analyzer"
    done = venv / ".installed"
    if done.is_file() and command.is_file():
        return command
    shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted set-up
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"setting up Model Analyzer {MA_VERSION} in its own venv ({venv}), once: about a minute ...")
    steps = [
        ("python -m venv", [sys.executable, "-m", "venv", str(venv)]),
        ("pip install", [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *MA_REQUIREMENTS]),
    ]
    for step, argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ModelAnalyzerFailed(f"set-up ({step}) exited with {result.returncode}: {_tail(result)}")
    if not command.is_file():
        raise ModelAnalyzerFailed(f"set-up: pip installed triton-model-analyzer but there is no {command}")
    done.write_text(" ".join(MA_REQUIREMENTS) + "\n")
    return command


def _tail(result: subprocess.CompletedProcess[str], lines: int = 4) -> str:
    text = (result.stderr or result.stdout or "").strip().splitlines()
    return " | ".join(text[-lines:]) or "(no output)"


@dataclass
class Wrappers:
    server: Path
    analyzer: Path
    pids: Path  # each wrapper appends "<pid> <program>" before it execs
    shm_prefix: str


def write_wrappers(scratch: Path) -> Wrappers:
    """The tritonserver and perf_analyzer wrappers that Model Analyzer runs.

    tritonserver runs as the embedded server runs it: the same backend directory (the Python backend with
    this interpreter's stub, tritongen's ONNX/TorchScript backend), this interpreter's libpython and the
    wheel's libraries on LD_LIBRARY_PATH, this interpreter's bin first on PATH. Model Analyzer adds the
    repository, the ports and ``--model-control-mode=explicit``.

    Raises:
        ModelAnalyzerFailed: perf_analyzer or the Triton files are not available.
    """
    binary, backends, env = launch_files(scratch / "triton")
    pids = scratch / "pids"
    shm_prefix = f"tritongen_ma{os.getpid()}_"
    server = scratch / "tritonserver"
    server.write_text(
        "#!/bin/sh\n"
        "# tritonserver with the embedded server's environment and backends.\n"
        f'echo "$$ tritonserver" >> {shlex.quote(str(pids))}\n'
        f"export LD_LIBRARY_PATH={shlex.quote(env['LD_LIBRARY_PATH'])}\n"
        f"export PATH={shlex.quote(env['PATH'])}\n"
        f'exec {shlex.quote(str(binary))} "$@" --backend-directory={shlex.quote(str(backends))} '
        f"--backend-config=python,shm-region-prefix-name={shm_prefix} --allow-gpu-metrics=false\n"
    )
    try:
        binary, libs = perf_analyzer_tools(scratch)
    except PerfAnalyzerUnavailable as error:
        raise ModelAnalyzerFailed(f"perf_analyzer 2.51: {error}") from error
    ld_path = os.pathsep.join(filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")]))
    analyzer = scratch / "perf_analyzer"
    analyzer.write_text(
        "#!/bin/sh\n"
        "# perf_analyzer 2.51 with the libraries it needs.\n"
        f'echo "$$ perf_analyzer" >> {shlex.quote(str(pids))}\n'
        f"export LD_LIBRARY_PATH={shlex.quote(ld_path)}\n"
        f'exec {shlex.quote(str(binary))} "$@"\n'
    )
    for script in (server, analyzer):
        script.chmod(0o755)
    check = subprocess.run([str(analyzer), "--help"], capture_output=True, text=True, timeout=60)
    if "error while loading shared libraries" in check.stderr:
        raise ModelAnalyzerFailed(f"perf_analyzer 2.51 does not start: {check.stderr.strip()}")
    return Wrappers(server, analyzer, pids, shm_prefix)


def perf_analyzer_tools(scratch: Path) -> tuple[Path, Path]:
    """perf_analyzer 2.51 and a directory of the libraries it needs, as bench_harness.py provides them.

    Raises:
        PerfAnalyzerUnavailable: It cannot be fetched, or a library is missing.
    """
    binary = fetch_perf_analyzer()
    libs = scratch / "pa-libs"
    if not libs.is_dir():
        libs.mkdir()
        library_dir(libs)
    return binary, libs


def ma_config(
    scratch: Path, repository: Path, mode: str, wrappers: Wrappers, stability: float | None
) -> Path:
    """Model Analyzer's profile config for ``mode`` (quick or brute), in ``scratch/<mode>/``."""
    out = scratch / mode
    out.mkdir()
    model: dict[str, Any] = {
        "cpu_only": True,
        "objectives": {"perf_throughput": 10},
        "constraints": {"perf_latency_p99": {"max": MAX_P99_MS}},
    }
    config: dict[str, Any] = {
        "model_repository": str(repository),
        "output_model_repository_path": str(out / "output_model_repository"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(out / "checkpoints"),
        "export_path": str(out / "export"),
        "triton_output_path": str(out / "triton.log"),
        "triton_launch_mode": "local",
        "triton_server_path": str(wrappers.server),
        "perf_analyzer_path": str(wrappers.analyzer),
        "triton_http_endpoint": f"127.0.0.1:{find_free_port()}",
        "triton_grpc_endpoint": f"127.0.0.1:{find_free_port()}",
        "triton_metrics_url": f"http://127.0.0.1:{find_free_port()}/metrics",
        "triton_server_flags": {
            "http-address": "127.0.0.1",
            "grpc-address": "127.0.0.1",
            "metrics-address": "127.0.0.1",
        },
        "client_protocol": "grpc",
        "run_config_search_mode": mode,
        "skip_detailed_reports": True,
        "profile_models": {MODEL: model},
    }
    if stability is not None:
        config["perf_analyzer_flags"] = {"stability-percentage": stability}
    if mode == "quick":
        config.update(
            run_config_search_min_instance_count=min(INSTANCES),
            run_config_search_max_instance_count=max(INSTANCES),
            run_config_search_min_model_batch_size=MAX_BATCH_SIZE,
            run_config_search_max_model_batch_size=MAX_BATCH_SIZE,
            run_config_search_min_concurrency=min(CONCURRENCY),
            run_config_search_max_concurrency=max(CONCURRENCY),
        )
    else:
        # The exact space: these values over the model's own config (whose dynamic batching stays on).
        model["model_config_parameters"] = {
            "max_batch_size": [MAX_BATCH_SIZE],
            "instance_group": [{"kind": "KIND_CPU", "count": INSTANCES}],
        }
        model["parameters"] = {"concurrency": CONCURRENCY}
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------- Model Analyzer


def run_model_analyzer(command: Path, config: Path, wrappers: Wrappers, label: str) -> Outcome:
    """``model-analyzer profile -f config``, timed; its measurements read back from its checkpoint."""
    outcome = Outcome(label)
    out = config.parent
    log = out / "model-analyzer.log"
    print(f"running: {command.name} profile -f {config}  ({label}) ...", flush=True)
    started = time.monotonic()
    code: int | None = None
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(command), "profile", "-f", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=MA_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_group(process)
            stop_logged(wrappers)
    outcome.seconds = time.monotonic() - started
    lines = log.read_text(errors="replace").splitlines()
    outcome.tried, outcome.failures, outcome.notes = _read_ma_log(lines)
    if code != 0:
        outcome.error = _ma_failure(code, lines, out / "triton.log")
    try:
        outcome.rows, outcome.measured = read_ma_checkpoint(out)
    except (OSError, KeyError, ValueError, IndexError, TypeError) as error:
        if outcome.error is None:
            outcome.error = f"reading its checkpoint failed: {type(error).__name__}: {error}"
        return outcome
    outcome.picked = _ma_ranked_first(out) or _best_config(outcome.rows)
    return outcome


_PA_FAILURES = (
    "Ran perf_analyzer",
    "Running perf_analyzer failed",
    "perf_analyzer took",
    "perf_analyzer used significant amount of CPU",
)


def _read_ma_log(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The configs created, the measurements that failed (and why), and notes, from its log."""
    tried: list[str] = []
    failures: list[str] = []
    notes: list[str] = []
    current = ""
    for line in lines:
        text = line.removeprefix("[Model Analyzer] ").strip()
        if match := re.match(r"(?:Creating|Found existing) model config: (\S+)", text):
            current = match.group(1)
            if current not in tried:
                tried.append(current)
        elif match := re.match(r"Profiling (\S+): (.+)", text):
            current = f"{match.group(1)} at {match.group(2)}"
        elif text.startswith(_PA_FAILURES):
            failures.append(f"{current}: {text}")
        elif text.startswith(("Skipping illegal", "Terminating concurrency sweep", "No coordinate")):
            notes.append(f"{current}: {text}" if current else text)
        elif text.startswith(("WARNING: Requested top", "Profile complete")) and text not in notes:
            notes.append(text)
    return tried, failures, notes


def _ma_failure(code: int | None, lines: list[str], triton_log: Path) -> str:
    if code is None:
        return f"model-analyzer profile ran past {MA_TIMEOUT_S} s and was stopped"
    errors = [line for line in lines if re.search(r"ERROR|Error|Exception|Traceback", line)]
    reason = " | ".join(line.strip() for line in (errors or lines)[-4:]) or "(no output)"
    server = triton_log.read_text(errors="replace").strip().splitlines()[-3:] if triton_log.is_file() else []
    extra = f"; tritonserver's log ends: {' | '.join(server)}" if server else ""
    return f"model-analyzer profile exited with {code}: {reason}{extra}"


def read_ma_checkpoint(out: Path) -> tuple[list[Row], dict[str, Settings]]:
    """Every measurement in Model Analyzer's checkpoint, and the settings of each config measured."""
    [checkpoint] = sorted((out / "checkpoints").glob("*.ckpt"))
    state = json.loads(checkpoint.read_text())
    results = state["ResultManager.results"]["_results"].get(MODEL, {})
    rows: list[Row] = []
    measured: dict[str, Settings] = {}
    for name, (run_config, measurements) in results.items():
        variant = run_config["_model_run_configs"][0]["_model_config_variant"]["model_config"]
        measured[name] = _ma_settings(variant)
        for measurement in measurements.values():
            [per_model] = measurement["_model_config_measurements"]
            figures = {tag: value["_value"] for tag, value in per_model["_non_gpu_data"]}
            rows.append(
                Row(
                    name,
                    measured[name].describe(),
                    int(per_model["_model_specific_pa_params"]["concurrency-range"]),
                    float(figures["perf_throughput"]),
                    float(figures["perf_latency_p99"]),
                )
            )
    return rows, measured


def _ma_settings(config: dict[str, Any]) -> Settings:
    """A model config as Model Analyzer stores it (protobuf JSON names) as tune's settings."""
    batcher = config.get("dynamicBatching")
    return Settings(
        instances=sum(int(g.get("count", 1)) for g in config.get("instanceGroup") or [{"count": 1}]),
        threads=None,
        max_batch_size=int(config.get("maxBatchSize", 0)),
        batching=batcher is not None,
        queue_delay_us=int((batcher or {}).get("maxQueueDelayMicroseconds", 0)),
        preferred=tuple(int(p) for p in (batcher or {}).get("preferredBatchSize", [])),
    )


def _ma_ranked_first(out: Path) -> str:
    """The config of the first row of the exported inference table: the one Model Analyzer ranks best."""
    table = out / "export" / "results" / "metrics-model-inference.csv"
    if not table.is_file():
        return ""
    with table.open() as stream:
        for row in csv.DictReader(stream):
            return row.get("Model Config Path") or ""
    return ""


def _best_config(rows: list[Row]) -> str:
    best = max(rows, key=lambda r: (r.passed, r.throughput), default=None)
    return best.config if best else ""


# ---------------------------------------------------------------------------------------------- processes


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and its process group (it leads one), if it still runs."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_logged(wrappers: Wrappers) -> None:
    """Stop every tritonserver / perf_analyzer the wrappers started that still runs, then their shm files."""
    lines = wrappers.pids.read_text().splitlines() if wrappers.pids.is_file() else []
    for line in lines:
        pid_text, _, program = line.partition(" ")
        pid = int(pid_text)
        if not _runs(pid, program):
            continue
        group = os.getpgid(pid) == pid  # tritonserver leads a session of its own (its backend stubs)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig) if group else os.kill(pid, sig)
            deadline = time.monotonic() + 30
            while _runs(pid, program) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _runs(pid, program):
                break
    for leftover in Path("/dev/shm").glob(f"{wrappers.shm_prefix}*"):
        leftover.unlink(missing_ok=True)


def _runs(pid: int, program: str) -> bool:
    """Whether ``pid`` is alive and still ``program`` (not a reused pid)."""
    try:
        first = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and first.decode(errors="replace").endswith(program)


# ---------------------------------------------------------------------------------------------- tune


def run_tritongen_tune(spec: Path, repository: Path, out: Path) -> Outcome:
    """tritongen's quick tune over the same space, on the embedded server, over gRPC."""
    outcome = Outcome("tritongen tune, quick")
    config = TuneConfig(
        models=[MODEL],
        spec=spec,
        output=repository,
        users=CONCURRENCY,
        max_p99_ms=MAX_P99_MS,
        search="quick",
        space=SpaceOptions(
            instances=INSTANCES, max_batch_sizes=[MAX_BATCH_SIZE], batching=[True], threads=[None]
        ),
        protocol="grpc",
        write=False,
        out=out,
    )
    print("running: tritongen tune (quick) ...", flush=True)
    started = time.monotonic()
    try:
        result = run_tune(config)
    except GeneratorError as error:
        outcome.seconds = time.monotonic() - started
        outcome.error = f"tune failed: {error}"
        return outcome
    outcome.seconds = time.monotonic() - started
    entry = result.report["models"][MODEL]
    searched = [t for t in entry["trials"] if t["role"] != "confirm"]
    for trial in searched:
        name = f"trial {trial['number']}"
        outcome.tried.append(name)
        if trial["status"] != "measured":
            outcome.failures.append(f"{name}: {trial['status']}: {trial['error']}")
            continue
        outcome.measured[name] = settings = _tune_settings(trial["settings"])
        outcome.rows += [
            Row(name, settings.describe(), int(level["users"]), level["throughput"], level["p99_ms"])
            for level in trial["levels"]
            if level.get("throughput") is not None and level.get("p99_ms") is not None
        ]
    # The confirmed winner; without one the tune keeps the start config (trial 0).
    winner = entry.get("winner")
    outcome.picked = f"trial {winner if winner is not None else 0}"
    confirms = len(entry["trials"]) - len(searched)
    if confirms:
        outcome.notes.append(f"and {confirms} confirmation re-measurements (the best and the start again)")
    outcome.notes.append(f"verdict: {entry.get('verdict')}")
    outcome.notes.append(f"space searched: {entry['space']}")
    if result.stopped:
        outcome.notes.append(f"stopped: {result.stopped}")
    return outcome


def _tune_settings(data: dict[str, Any]) -> Settings:
    return Settings(
        data["instances"], data["threads"], data["max_batch_size"], data["batching"], data["queue_delay_us"],
        tuple(data["preferred"]), tuple(data["gpus"]) if data["gpus"] is not None else None,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- printing


def best_at(rows: list[Row], concurrency: int) -> Row | None:
    """The highest throughput at ``concurrency`` that kept the p99 bound."""
    return max(
        (r for r in rows if r.concurrency == concurrency and r.passed),
        key=lambda r: r.throughput,
        default=None,
    )


def print_outcome(outcome: Outcome) -> None:
    print(f"\n== {outcome.label} ==")
    if outcome.error:
        print(f"FAILED: {outcome.error}")
    print(f"wall time:      {outcome.seconds:.0f} s")
    distinct = sorted({r.concurrency for r in outcome.rows})
    print(
        f"configs:        {len(outcome.tried)} tried, {len(outcome.measured)} measured "
        f"({len(set(outcome.measured.values()))} distinct), {len(outcome.rows)} measurements "
        f"(concurrency {', '.join(map(str, distinct)) or '-'})"
    )
    for name, settings in outcome.measured.items():
        print(f"                {name}: {settings.describe()}")
    for failure in outcome.failures:
        print(f"failed:         {failure}")
    for concurrency in CONCURRENCY:
        row = best_at(outcome.rows, concurrency)
        any_at = [r for r in outcome.rows if r.concurrency == concurrency]
        if row:
            text = f"{row.throughput:,.0f} infer/s, p99 {row.p99_ms:.1f} ms  ({row.config}: {row.describe})"
        elif any_at:
            text = f"no measurement kept p99 <= {MAX_P99_MS:g} ms"
        else:
            text = "not measured"
        print(f"concurrency {concurrency:<3} {text}")
    if outcome.picked:
        own = [r for r in outcome.rows if r.config == outcome.picked]
        figures = ", ".join(
            f"c={r.concurrency}: {r.throughput:,.0f} infer/s p99 {r.p99_ms:.1f} ms"
            for r in sorted(own, key=lambda r: r.concurrency)
        )
        settings = outcome.measured.get(outcome.picked)
        describe = f" ({settings.describe()})" if settings else ""
        print(f"picked:         {outcome.picked}{describe}{': ' + figures if figures else ''}")
    for note in outcome.notes:
        print(f"note:           {note}")


def print_summary(outcomes: list[Outcome]) -> None:
    print(
        f"\n{MODEL}, embedded Triton 2.51 on {os.cpu_count()} CPUs (shared by client and server); throughput "
        f"objective, p99 <= {MAX_P99_MS:g} ms; best kept at each concurrency"
    )
    header = f"{'search':34} {'configs':>8} {'meas.':>6} {'wall s':>7}"  # configs: distinct ones measured
    for concurrency in CONCURRENCY:
        header += f" {'c=' + str(concurrency) + ' infer/s (p99 ms)':>24}"
    print(header + "  picked")
    for outcome in outcomes:
        configs = len(set(outcome.measured.values()))
        line = f"{outcome.label:34} {configs:>8} {len(outcome.rows):>6} {outcome.seconds:7.0f}"
        for concurrency in CONCURRENCY:
            row = best_at(outcome.rows, concurrency)
            cell = f"{row.throughput:,.0f} ({row.p99_ms:.1f})" if row else "-"
            line += f" {cell:>24}"
        picked = outcome.measured.get(outcome.picked)
        print(f"{line}  {picked.describe() if picked else ('failed' if outcome.error else '-')}")


# ---------------------------------------------------------------------------------------------- side by side


def side_by_side(
    scratch: Path, repository: Path, outcomes: list[Outcome], rounds: int, seconds: float
) -> tuple[list[tuple[Settings, list[str]]], dict[Settings, dict[int, list[dict]]], list[str]]:
    """The start config and each search's pick, loaded in turn on one server and measured by one client.

    Each search measured with its own client (perf_analyzer for Model Analyzer, the harness for tune) at
    its own time on a shared machine; here perf_analyzer measures every pick over gRPC in alternating
    rounds, so the picks compare with each other.

    Returns:
        The configs with the searches that picked them (the start config first), the figures of each per
        concurrency and round, and the problems met (a measurement that failed 3 times, a server error).
    """
    picks: dict[Settings, list[str]] = {}
    for outcome in outcomes:
        if outcome.picked in outcome.measured:
            picks.setdefault(outcome.measured[outcome.picked], []).append(outcome.label)
    configs = list(picks.items())
    figures: dict[Settings, dict[int, list[dict]]] = {}
    problems: list[str] = []
    try:
        binary, libs = perf_analyzer_tools(scratch)
        server = EmbeddedServer(
            repository, http_port=find_free_port(), grpc_port=find_free_port(), metrics_port=find_free_port(),
            supervise=False,
        )  # fmt: skip
        with (
            server,
            ServerControl(
                resolve_target(f"http://{server.endpoints.http}"), timeout=600, error=LoadTestError
            ) as control,
        ):
            _, base = control.model(MODEL)
            start = start_settings(base)
            configs = [(start, ["start config", *picks.pop(start, [])]), *picks.items()]
            print(f"measuring {len(configs)} configs side by side, {rounds} rounds ...", flush=True)
            for round_index in range(rounds):
                for settings, _ in configs:
                    control.load(MODEL, config_json(base, settings))
                    for concurrency in CONCURRENCY:
                        measured = _measure(
                            binary, libs, server.endpoints.grpc, concurrency, seconds, problems
                        )
                        if measured is not None:
                            figures.setdefault(settings, {}).setdefault(concurrency, []).append(measured)
                print(f"side by side: round {round_index + 1}/{rounds} done", flush=True)
    except (PerfAnalyzerUnavailable, GeneratorError) as error:
        problems.append(f"stopped: {type(error).__name__}: {error}")
    return configs, figures, problems


def _measure(
    binary: Path, libs: Path, url: str, concurrency: int, seconds: float, problems: list[str]
) -> dict | None:
    """One perf_analyzer measurement; up to 3 tries (it fails a measurement it cannot get steady)."""
    for attempt in range(3):
        try:
            return perf_analyzer(binary, libs, url, "grpc", concurrency, seconds)
        except PerfAnalyzerUnavailable as error:
            if attempt == 2:
                problems.append(f"concurrency {concurrency}: 3 tries failed, the last: {error}")
    return None


def print_side_by_side(
    configs: list[tuple[Settings, list[str]]], figures: dict[Settings, dict[int, list[dict]]], rounds: int,
    problems: list[str],
) -> None:  # fmt: skip
    print(
        f"\n== the picks side by side: one server, perf_analyzer over gRPC, median of {rounds} alternating "
        "rounds =="
    )
    for problem in problems:
        print(f"problem: {problem}")
    start = figures.get(configs[0][0], {}) if configs else {}
    header = f"{'config':72}"
    for concurrency in CONCURRENCY:
        header += f" {'c=' + str(concurrency) + ' infer/s':>13} {'p99 ms':>7} {'vs start':>8}"
    print(header + "  picked by")
    for settings, labels in configs:
        line = f"{settings.describe():72}"
        for concurrency in CONCURRENCY:
            runs = figures.get(settings, {}).get(concurrency, [])
            if not runs:
                line += f" {'-':>13} {'-':>7} {'-':>8}"
                continue
            throughput = statistics.median(r["throughput"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            base = start.get(concurrency)
            ratio = f"{throughput / statistics.median(r['throughput'] for r in base):.2f}x" if base else "-"
            line += f" {throughput:13,.0f} {p99:7.2f} {ratio:>8}"
        print(f"{line}  {', '.join(labels)}")


# ---------------------------------------------------------------------------------------------- main


def prepare(scratch: Path) -> tuple[Path, Path, Path]:
    """A copy of the bundled example (spec and sources), its built repository, and one with only MODEL."""
    spec_dir = scratch / "spec"
    shutil.copytree(bundled_example().parent, spec_dir, ignore=shutil.ignore_patterns("__pycache__"))
    spec = spec_dir / bundled_example().name
    built = scratch / "model_repository"
    print("building the bundled example ...", flush=True)
    build_in_child(spec, built, "cpu", None)  # generator.build.run.build, in a child as tune runs it
    only = scratch / "ma_repository"
    only.mkdir()
    shutil.copytree(built / MODEL, only / MODEL)
    return spec, built, only


def profile_with_model_analyzer(scratch: Path, repository: Path, args: argparse.Namespace) -> list[Outcome]:
    try:
        command = model_analyzer()
        wrappers = write_wrappers(scratch)
    except (ModelAnalyzerFailed, GeneratorError) as error:
        return [Outcome(f"Model Analyzer {MA_VERSION}", error=f"set-up: {error}")]
    outcomes = []
    try:
        config = ma_config(scratch, repository, "quick", wrappers, args.pa_stability)
        quick = run_model_analyzer(command, config, wrappers, f"Model Analyzer {MA_VERSION}, quick")
        outcomes.append(quick)
        only_default = len(set(quick.measured.values())) <= 1
        if args.brute == "always" or (args.brute == "auto" and only_default):
            if only_default:
                quick.notes.append("quick mode measured only the default config: brute mode runs too")
            config = ma_config(scratch, repository, "brute", wrappers, args.pa_stability)
            outcomes.append(
                run_model_analyzer(command, config, wrappers, f"Model Analyzer {MA_VERSION}, brute")
            )
    finally:
        stop_logged(wrappers)
    return outcomes


def save(scratch: Path, target: Path) -> None:
    """Keep the configs, logs, checkpoints and exports of Model Analyzer and the tune's report."""
    target.mkdir(parents=True, exist_ok=True)
    for mode in ("quick", "brute"):
        source = scratch / mode
        if source.is_dir():
            shutil.copytree(
                source,
                target / f"model-analyzer-{mode}",
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("output_model_repository"),
            )
    if (scratch / "tune").is_dir():
        shutil.copytree(scratch / "tune", target / "tune", dirs_exist_ok=True)
    print(f"\nkept Model Analyzer's and the tune's outputs in {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--brute",
        choices=["auto", "always", "never"],
        default="auto",
        help="brute mode too: when quick measured only the default config (auto), always, never",
    )
    parser.add_argument(
        "--pa-stability",
        type=float,
        default=None,
        metavar="PCT",
        help="perf_analyzer's --stability-percentage for Model Analyzer (default: its own, 10)",
    )
    parser.add_argument("--skip-tune", action="store_true", help="Model Analyzer only")
    parser.add_argument("--skip-model-analyzer", action="store_true", help="the tune only")
    parser.add_argument(
        "--rounds", type=int, default=2, help="side-by-side rounds of the picks (0: skip that step)"
    )
    parser.add_argument(
        "--duration", type=float, default=6.0, help="seconds per side-by-side measurement (perf_analyzer)"
    )
    parser.add_argument("--save", default=None, metavar="DIR", help="keep the outputs of both here")
    args = parser.parse_args()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-ma-") as tmp:
        scratch = Path(tmp)
        spec, built, only = prepare(scratch)
        if not args.skip_model_analyzer:
            outcomes += profile_with_model_analyzer(scratch, only, args)
        if not args.skip_tune:
            outcomes.append(run_tritongen_tune(spec, built, scratch / "tune"))
        side = side_by_side(scratch, only, outcomes, args.rounds, args.duration) if args.rounds > 0 else None
        for outcome in outcomes:
            print_outcome(outcome)
        print_summary(outcomes)
        if side is not None:
            configs, figures, problems = side
            print_side_by_side(configs, figures, args.rounds, problems)
        if args.save:
            save(scratch, Path(args.save))


if __name__ == "__main__":
    main()
