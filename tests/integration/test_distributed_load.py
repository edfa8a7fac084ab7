"""Load from many machines: ``loadtest --master`` and its workers, started with the commands a user runs.

A master and two workers (one ``python -m generator loadtest-worker``, one plain ``locust --worker -f`` on the
packaged locustfile), all on 127.0.0.1, load the embedded Triton serving the example; the one report they
write counts exactly the requests Triton counted. Everything runs as subprocesses (Locust patches the
standard library for gevent, which must not happen inside pytest), and every process is stopped by the
test, also when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient

from generator.serve.launch import find_free_port

from ..conftest import REPO_ROOT

pytestmark = pytest.mark.integration

MODEL = "digits_cnn"


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT),
    }


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes the test starts (each in its own session); all are killed on the way out."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _start(started: list[subprocess.Popen[str]], command: list[str], cwd: Path, log: str) -> None:
    with (cwd / log).open("w") as out:
        started.append(
            subprocess.Popen(
                command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=_env(),
                start_new_session=True,
            )
        )


def _success_count(http: str, model: str) -> int:
    with httpclient.InferenceServerClient(http) as client:
        stats = client.get_inference_statistics(model)["model_stats"]
    return sum(int(entry["inference_stats"]["success"]["count"]) for entry in stats)


def _generator(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _logs(directory: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in directory.glob("*.log")
    )


def test_master_and_two_workers_write_one_report_that_counts_what_triton_counted(
    example_server: Any, tmp_path: Path
) -> None:
    port = find_free_port()
    http = example_server.endpoints.http
    locustfile = _generator("loadtest-worker", "--print-locustfile", cwd=tmp_path)
    assert locustfile.returncode == 0, locustfile.stderr
    path = Path(locustfile.stdout.strip())
    assert path.is_file() and path.name == "locustfile.py"
    master = [
        sys.executable, "-m", "generator", "loadtest", "--master", "--expect-workers", "2",
        "--master-bind-port", str(port), "--model", MODEL, "--url", http, "--users", "4",
        "--duration", "2", "--warmup", "0.5", "--out", "out",
    ]  # fmt: skip
    workers = [
        [sys.executable, "-m", "generator", "loadtest-worker", "--master-host", "127.0.0.1",
         "--master-port", str(port)],
        [sys.executable, "-m", "locust", "--worker", "-f", str(path), "--master-host", "127.0.0.1",
         "--master-port", str(port)],
    ]  # fmt: skip
    before = _success_count(http, MODEL)
    with _processes() as started:
        _start(started, master, tmp_path, "master.log")
        for index, command in enumerate(workers):
            _start(started, command, tmp_path, f"worker-{index}.log")
        deadline = time.monotonic() + 180
        while started[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert started[0].poll() == 0, _logs(tmp_path)
        for process in started[1:]:  # the master's quit ends its workers
            assert process.wait(timeout=30) == 0, _logs(tmp_path)
    after = _success_count(http, MODEL)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["workers"] == 2 and report["master"] == f"127.0.0.1:{port}"
    [run] = report["runs"]
    assert run["requests"] > 0 and run["error_rate"] == 0
    totals = report["totals"]
    assert totals["failures"] == 0
    # Triton counted, over the whole command, the load's requests plus the one request per model that the
    # master sends to check the replies before the load starts.
    assert list(report["replies"]) == [MODEL]
    assert after - before == totals["requests"] + 1
    assert totals["requests"] == totals["server_inferences"]
    assert "waiting for 2 Locust workers on 127.0.0.1:" in (tmp_path / "master.log").read_text()


def test_a_worker_with_no_master_exits_with_one_line(tmp_path: Path) -> None:
    port = find_free_port()
    started = time.monotonic()
    result = _generator(
        "loadtest-worker", "--master-host", "127.0.0.1", "--master-port", str(port), "--connect-timeout", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert 2 <= time.monotonic() - started < 30
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ") and f"no Locust master at 127.0.0.1:{port}" in line, line
    assert "--master-host" in line


def test_master_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    cases = [
        (("--master",), "--expect-workers N"),
        (("--expect-workers", "2"), "needs --master"),
        (("--master", "--expect-workers", "2", "--workers", "2"), "not both"),
    ]
    for args, expected in cases:
        result = _generator("loadtest", "--model", MODEL, *args, "--out", "out", cwd=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        [line] = [line for line in result.stderr.splitlines() if line.strip()]
        assert line.startswith("error: ") and expected in line, line
        assert not (tmp_path / "out").exists()


def test_a_master_without_its_workers_gives_up_with_the_command_to_start_them(
    example_server: Any, tmp_path: Path
) -> None:
    port = find_free_port()
    result = _generator(
        "loadtest", "--master", "--expect-workers", "1", "--expect-workers-max-wait", "2",
        "--master-bind-port", str(port), "--model", MODEL, "--url", example_server.endpoints.http,
        "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "only 0 of 1 Locust workers connected" in line and "loadtest-worker --master-host" in line, line
