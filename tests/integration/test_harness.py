"""The load-test harness against the real embedded Triton: the ``loadtest`` command and plain Locust on
``perf/locustfile.py``, run as users run them (subprocesses: Locust patches the standard library for gevent,
which must not happen inside pytest). Every process a test starts is stopped, also when it fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import tritonclient.http as httpclient

from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

from ..conftest import REPO_ROOT, free_ports

pytestmark = pytest.mark.integration

SHORT = ("--duration", "2", "--warmup", "0.5")


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def _loadtest(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", "loadtest", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _report(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "report.json").read_text())


def _inference_count(http: str, model: str) -> int:
    with httpclient.InferenceServerClient(http) as client:
        stats = client.get_inference_statistics(model)["model_stats"]
    return sum(int(entry["inference_count"]) for entry in stats)


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def _worker_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "--worker" in cmdline and "harness/locustfile.py" in cmdline:
            found.append(process)
    return found


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_short_run_reports_throughput_and_agrees_with_the_server(
    example_server: Any, tmp_path: Path, protocol: str
) -> None:
    endpoint = example_server.endpoints.http if protocol == "http" else example_server.endpoints.grpc
    before = _inference_count(example_server.endpoints.http, "digits_cnn")
    result = _loadtest(
        "--model", "digits_cnn", "--url", f"{protocol}://{endpoint}", "--users", "2", *SHORT,
        "--batch-size", "2", "--price-per-hour", "2.5", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    after = _inference_count(example_server.endpoints.http, "digits_cnn")
    assert result.returncode == 0, result.stderr
    report = _report(tmp_path / "out")
    [run] = report["runs"]
    assert report["protocol"] == protocol and report["server"]["version"] and report["batch_size"] == 2
    assert run["users"] == 2 and run["throughput"] > 0 and run["error_rate"] == 0 and run["failures"] == 0
    assert run["inferences"] == 2 * run["requests"]
    latency = run["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    server = run["server"]
    assert all(server[key] is not None for key in ("queue_us", "compute_infer_us", "compute_output_us"))
    assert server["avg_batch_size"] >= 2
    assert run["cpu_utilization"] > 0 and run["memory_bytes"] > 0 and run["cost_per_1k"] > 0
    totals = report["totals"]
    assert totals["failures"] == 0 and totals["inferences"] > 0
    assert report["replies"]["digits_cnn"]["logits"] == {"datatype": "FP32", "shape": [2, 10]}
    # one request (of batch 2) checked the reply before the load; then the server saw every inference
    assert after - before - 2 == totals["inferences"] == totals["server_inferences"]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.json", "report.csv", "report.html"}
    assert "digits_cnn" in (tmp_path / "out" / "report.html").read_text()


def test_several_models_by_weight_a_baseline_and_the_gate(example_server: Any, tmp_path: Path) -> None:
    url = f"grpc://{example_server.endpoints.grpc}"
    first = _loadtest(
        "--model", "digits_cnn:3", "--model", "digits_linear:1", "--url", url, "--sweep", "1,2", *SHORT,
        "--out", "first", "--fail-if", "error_rate>0.001", cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    report = _report(tmp_path / "first")
    assert [run["users"] for run in report["runs"]] == [1, 2] and report["gate"]["passed"]
    per_model = report["runs"][1]["per_model"]
    assert per_model["digits_cnn"]["requests"] > per_model["digits_linear"]["requests"] > 0

    second = _loadtest(
        "--model", "digits_cnn:3", "--model", "digits_linear:1", "--url", url, "--users", "2", *SHORT,
        "--out", "second", "--baseline", "first/report.json",
        "--fail-if", "p50_ms>0", "--fail-if", "throughput_change_pct<-99.9", cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode == 1
    assert (
        _errors(second)
        == [
            line
            for line in _errors(second)
            if line.startswith("error: --fail-if p50_ms>0 breached: p50_ms = ")
        ]
        and len(_errors(second)) == 1
    )
    report = _report(tmp_path / "second")
    comparison = report["runs"][0]["baseline"]["figures"]["throughput"]
    assert comparison["better"] == "higher" and comparison["old"] > 0 and comparison["new"] > 0
    assert report["gate"]["passed"] is False


def test_a_ramp_is_measured_in_windows(example_server: Any, tmp_path: Path) -> None:
    result = _loadtest(
        "--model", "digits_linear", "--url", example_server.endpoints.http, "--shape", "ramp", "--users", "4",
        "--duration", "2.5", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    users = [run["users"] for run in _report(tmp_path / "out")["runs"]]
    assert len(users) == 5 and users == sorted(users) and users[-1] > users[0]


@pytest.fixture
def doomed_server(example_repo: Path) -> Iterator[EmbeddedServer]:
    """A server of the test's own, to be killed mid-run."""
    with EmbeddedServer(example_repo, **free_ports(), supervise=False) as server:
        yield server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_that_dies_mid_run_ends_it_with_a_report_and_an_error(
    doomed_server: EmbeddedServer, tmp_path: Path, protocol: str
) -> None:
    http = doomed_server.endpoints.http
    url = f"grpc://{doomed_server.endpoints.grpc}" if protocol == "grpc" else http
    start = _inference_count(http, "digits_cnn")
    process = subprocess.Popen(
        [sys.executable, "-m", "generator", "loadtest", "--model", "digits_cnn", "--url", url,
         "--users", "2", "--duration", "30", "--warmup", "0", "--out", "out"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _inference_count(http, "digits_cnn") < start + 200:  # the load has started
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        time.sleep(0.5)
        assert doomed_server.pid is not None
        os.kill(doomed_server.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, stdout + stderr
    assert "the run was cut short" in stderr and "Traceback" not in stderr
    report = _report(tmp_path / "out")
    assert report["aborted"] and report["totals"]["requests"] > 0
    [run] = report["runs"]
    assert run["complete"] is False and run["inferences"] > 0
    assert report["totals"]["failures"] >= run["failures"] > 0
    assert any("Connection" in message or "connect" in message for message in run["errors"]), run["errors"]


def test_plain_locust_runs_the_locustfile_headless(example_server: Any, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "perf" / "locustfile.py"), "--headless",
         "-u", "2", "-r", "2", "-t", "3s", "--host", f"http://{example_server.endpoints.http}",
         "--protocol", "grpc", "--grpc-url", example_server.endpoints.grpc, "--model", "digits_cnn",
         "--json", "--skip-log"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["name"] == "digits_cnn" and entry["method"] == "grpc"
    assert entry["num_requests"] > 0 and entry["num_failures"] == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_workers_share_the_load_and_are_all_stopped(
    example_repo: Path, tmp_path: Path, protocol: str
) -> None:
    result = _loadtest(
        "--model", "digits_cnn", "--serve", str(example_repo), "--protocol", protocol, "--workers", "2",
        "--users", "4", *SHORT, "--out", "out", cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = _report(tmp_path / "out")
    [run] = report["runs"]
    assert report["protocol"] == protocol and report["workers"] == 2
    assert run["throughput"] > 0 and run["error_rate"] == 0
    assert report["totals"]["inferences"] == report["totals"]["server_inferences"]
    assert run["resource_source"] == "process" and run["memory_bytes"] > 0
    assert not _worker_processes()


def test_bad_targets_fail_before_any_load(example_server: Any, tmp_path: Path) -> None:
    cases = [
        (
            ("--model", "no_such_model", "--url", example_server.endpoints.http),
            ("'no_such_model'", "digits_cnn"),
        ),
        (("--model", "digits_cnn", "--url", f"127.0.0.1:{find_free_port()}"), ("cannot reach Triton",)),
        (("--model", "digits_cnn", "--url", "192.0.2.10:8000"), ("not on this machine", "--allow-remote")),
        (("--model", "digits_cnn", "--fail-if", "p98>1"), ("unknown metric 'p98'", "p99_ms")),
    ]
    for args, expected in cases:
        result = _loadtest(*args, "--out", "out", cwd=tmp_path, timeout=60)
        assert result.returncode == 1, (args, result.stderr)
        [line] = _errors(result)
        assert line.startswith("error: ") and all(text in line for text in expected), line
        assert not (tmp_path / "out").exists()
