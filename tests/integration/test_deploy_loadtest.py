"""`deploy --loadtest`: the rendered Locust master Job and worker Deployment, run here with their exact commands.

The commands are read from the rendered manifests and started as processes on this machine, with only
what a cluster provides swapped for loopback: the master's Service name for 127.0.0.1, Locust's port for
a free one, the fleet's Service URL for the embedded server's, and the pod's report directory for a
temporary one. The master's single report must count what Triton counted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from generator.deploy.manifests import (
    LOADTEST_MASTER_PORT,
    DeployConfig,
    LoadtestPlan,
    deploy,
    validate_documents,
)
from generator.serve.launch import find_free_port

from ..conftest import EXAMPLE_SPEC
from .test_distributed_load import _logs, _processes, _start, _success_count

MODEL = "digits_cnn"


def _swap(command: list[str], swaps: dict[str, str]) -> list[str]:
    return [sys.executable if part == "python" else swaps.get(part, part) for part in command]


def test_rendered_loadtest_runs_with_its_exact_commands(
    example_repo: Path, example_server: Any, tmp_path: Path
) -> None:
    plan = LoadtestPlan(MODEL, workers=2, args=("--users", "4", "--duration", "2", "--warmup", "0.5"))
    config = DeployConfig(
        "s3://bucket/repo/x", EXAMPLE_SPEC, tmp_path / "deploy", repository=example_repo, loadtest=plan
    )
    result = deploy(config)
    out = result.out / "loadtest"
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile", "master.yaml", "workers.yaml"]
    texts = {name: (out / name).read_text() for name in ("master.yaml", "workers.yaml")}
    assert validate_documents(texts) == 3  # the Job, its Service and the workers' Deployment, strict
    job, service = yaml.safe_load_all(texts["master.yaml"])
    (workers,) = yaml.safe_load_all(texts["workers.yaml"])
    assert service["spec"]["selector"] == job["spec"]["template"]["metadata"]["labels"]
    assert workers["spec"]["replicas"] == 2
    master_command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    worker_command = workers["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "http://triton:8000" in master_command and "--allow-remote" in master_command
    assert worker_command[-4:] == [
        "--master-host",
        service["metadata"]["name"],
        "--master-port",
        str(LOADTEST_MASTER_PORT),
    ]

    port = str(find_free_port())
    http = example_server.endpoints.http
    swaps = {
        "0.0.0.0": "127.0.0.1",
        str(LOADTEST_MASTER_PORT): port,
        "http://triton:8000": f"http://{http}",
        "/reports": str(tmp_path / "reports"),
        service["metadata"]["name"]: "127.0.0.1",
    }
    before = _success_count(http, MODEL)
    with _processes() as started:
        _start(started, _swap(master_command, swaps), tmp_path, "master.log")
        for index in range(workers["spec"]["replicas"]):
            _start(started, _swap(worker_command, swaps), tmp_path, f"worker-{index}.log")
        deadline = time.monotonic() + 180
        while started[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert started[0].poll() == 0, _logs(tmp_path)
        for process in started[1:]:
            assert process.wait(timeout=30) == 0, _logs(tmp_path)
    after = _success_count(http, MODEL)
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert report["workers"] == 2
    [run] = report["runs"]
    assert run["requests"] > 0 and run["error_rate"] == 0
    # Triton counted the whole command's requests (warm-up included) plus the one reply check the master
    # sends before the load.
    totals = report["totals"]
    assert after - before == totals["requests"] + 1 and totals["failures"] == 0
