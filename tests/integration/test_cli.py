"""The CLI as users run it: real subprocesses, exit codes, one-line errors, no tracebacks, and an
existing repository left byte-for-byte intact when a build fails."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ..conftest import EXAMPLE_SPEC, run_cli

pytestmark = pytest.mark.integration


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr + result.stdout
    for text in expected:
        assert text in lines[0], lines[0]


def test_build_writes_the_repository(tmp_path: Path) -> None:
    result = run_cli("build", str(EXAMPLE_SPEC), "--output", "repo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "digits_cnn v1: exported" in result.stdout and "digits_linear v1: exported" in result.stdout
    assert (tmp_path / "repo" / "digits_cnn" / "config.pbtxt").is_file()
    again = run_cli(
        "build", str(EXAMPLE_SPEC), "--output", "repo", "--device", "gpu", "--gpus", "0,1", cwd=tmp_path
    )
    assert again.returncode == 0 and "digits_cnn v1: reused" in again.stdout
    assert "gpus: [ 0, 1 ]" in (tmp_path / "repo" / "digits_cnn" / "config.pbtxt").read_text()


def test_build_with_no_arguments_builds_the_bundled_example(tmp_path: Path) -> None:
    result = run_cli("build", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from generator.spec.models import load_spec

    spec = load_spec(EXAMPLE_SPEC)
    names = sorted({m.name for m in spec.models} | {e.name for e in spec.ensembles})
    assert sorted(p.name for p in (tmp_path / "model_repository").iterdir()) == [
        *names,
        "tritongen-manifest.json",
    ]


@pytest.mark.parametrize(
    ("spec_text", "expected"),
    [
        ("models:\n  - name: a\n    framework: [torch\n", ("bad.yaml:4:", "YAML does not parse")),
        (
            "models:\n  - {name: a, framework: onnx, source: a.onnx, max_batchsize: 4}\n",
            ("models[0].max_batchsize: unknown field; did you mean 'max_batch_size'?",),
        ),
        (
            "models:\n  - {name: a, framework: torch, source: nowhere/f.py:build}\n",
            ("no file at", "fix the path"),
        ),
        ("models:\n  - {name: a, framework: torch, source: f.py:build}\n", ("f.py has no function 'build'",)),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_repository_intact(
    example_repo_copy: Path, tmp_path: Path, spec_text: str, expected: tuple[str, ...]
) -> None:
    (tmp_path / "f.py").write_text("def other():\n    return None\n")
    (tmp_path / "bad.yaml").write_text(spec_text)
    before = _tree(example_repo_copy)
    result = run_cli("build", "bad.yaml", "--output", str(example_repo_copy), cwd=tmp_path)
    _one_line_error(result, *expected)
    assert _tree(example_repo_copy) == before
    assert not [p for p in example_repo_copy.parent.iterdir() if p.name.startswith(".")]


def test_validate_lists_every_problem(example_repo_copy: Path, tmp_path: Path) -> None:
    good = run_cli("validate", str(example_repo_copy), cwd=tmp_path)
    assert good.returncode == 0 and "12 model(s), valid" in good.stdout
    config = example_repo_copy / "digits_cnn" / "config.pbtxt"
    config.write_text(
        config.read_text().replace('name: "image"', 'name: "img"').replace("[ 16, 32 ]", "[ 128 ]")
    )
    bad = run_cli("validate", str(example_repo_copy), cwd=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "input 'img' is not an input of 1/model.onnx; did you mean 'image'?" in bad.stdout
    assert "preferred_batch_size 128 exceeds max_batch_size 64" in bad.stdout


def test_schema_prints_json(tmp_path: Path) -> None:
    result = run_cli("schema", cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)["title"] == "tritongen spec"


def test_no_command_prints_usage(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2 and "build" in result.stdout


def test_serve_with_a_port_in_use_is_one_line(example_repo: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", str(example_repo), "--http-port", str(port), cwd=tmp_path, timeout=120)
    _one_line_error(result, f"port {port}", "--http-port")


def test_serve_starts_answers_and_stops_cleanly_on_sigterm(example_repo: Path, tmp_path: Path) -> None:
    from generator.serve.launch import find_free_port

    ports = [str(find_free_port()) for _ in range(3)]
    env = {**os.environ, "NO_COLOR": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "generator",
            "serve",
            str(example_repo),
            "--http-port",
            ports[0],
            "--grpc-port",
            ports[1],
            "--metrics-port",
            ports[2],
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any(f"127.0.0.1:{ports[0]}" in line for line in lines), (lines, process.stderr.read())
        import tritonclient.http as httpclient

        with httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}") as client:
            assert client.is_model_ready("digits_cnn") and client.is_model_ready("digits_linear")
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "serve started no tritonserver"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_stops_cleanly_on_a_sigterm_while_it_starts(example_repo: Path, tmp_path: Path) -> None:
    """SIGTERM before the server is ready (a supervisor stopping it at once) is a clean stop too: exit 0,
    nothing left running (before, Python's default action killed serve with -15 until the handler was in)."""
    from generator.serve.launch import find_free_port

    flags = [arg for port in ("http", "grpc", "metrics") for arg in (f"--{port}-port", str(find_free_port()))]
    process = subprocess.Popen(
        [sys.executable, "-m", "generator", "serve", str(example_repo), *flags],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline and process.poll() is None:
            children = [c for c in psutil.Process(process.pid).children() if "tritonserver" in c.name()]
            time.sleep(0.05)
        assert children, "serve started no tritonserver"
        process.send_signal(signal.SIGTERM)  # tritonserver is loading the models: serve is not ready yet
        assert process.wait(timeout=60) == 0, process.stderr.read()
        descendants = children + [d for c in children if c.is_running() for d in c.children(recursive=True)]
        _, alive = psutil.wait_procs(descendants, timeout=30)
        assert not alive, f"left running: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_reports_a_model_triton_refuses_in_one_line(example_repo_copy: Path, tmp_path: Path) -> None:
    from generator.serve.launch import find_free_port

    # A refusal only the server sees (validate never runs initialize): the model's initialize raises.
    model_dir = example_repo_copy / "refuses_init"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise ValueError('no weights for this model')\n\n"
        "    def execute(self, requests):\n"
        "        return []\n"
    )
    (model_dir / "config.pbtxt").write_text(
        'name: "refuses_init"\nbackend: "python"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
    ports = [str(find_free_port()) for _ in range(3)]
    result = run_cli(
        "serve",
        str(example_repo_copy),
        "--http-port",
        ports[0],
        "--grpc-port",
        ports[1],
        "--metrics-port",
        ports[2],
        cwd=tmp_path,
        timeout=120,
    )
    _one_line_error(result, "Triton did not start: model 'refuses_init'", "version 1 failed to load")
    assert "no weights for this model" in result.stderr


def test_demo_runs_the_main_job(tmp_path: Path) -> None:
    from generator.serve.launch import find_free_port

    ports = [str(find_free_port()) for _ in range(3)]
    result = run_cli(
        "demo",
        "--http-port",
        ports[0],
        "--grpc-port",
        ports[1],
        "--metrics-port",
        ports[2],
        cwd=tmp_path,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "digits_cnn: 450 held-out digits over gRPC in batches of 64: accuracy 0.98" in result.stdout
    assert "labels equal to the pipeline run in-process: yes" in result.stdout
    assert (
        "text_pipeline: 9 unseen sentences over HTTP (one batch) and gRPC (one by one): accuracy 1.000"
        in result.stdout
    )
    assert "hf_topics: 9 unseen sentences over HTTP (one batch) and gRPC (one by one)" in result.stdout
    assert "running_max: 8 sequences of 10 digits, interleaved over HTTP and gRPC" in result.stdout
    assert "tokens equal to the same generation in-process: yes" in result.stdout
    report = json.loads((tmp_path / "loadtest-report" / "report.json").read_text())
    assert [run["users"] for run in report["runs"]] == [1, 4, 16]
    assert all(run["throughput"] > 0 and run["error_rate"] == 0 for run in report["runs"])
    assert (tmp_path / "loadtest-report" / "report.html").stat().st_size > 10_000
    text = json.loads((tmp_path / "loadtest-report-text" / "report.json").read_text())
    assert [run["users"] for run in text["runs"]] == [1, 16]
    assert all(run["error_rate"] == 0 for run in text["runs"])
    (pipeline,) = text["runs"][0]["steps"]  # Triton's figures of each step of the ensemble
    assert pipeline["ensemble"] == "text_pipeline"
    assert [step["model"] for step in pipeline["steps"]] == [
        "text_tokenizer",
        "text_classifier",
        "text_postprocess",
    ]
    assert "tritonserver stopped" in result.stdout
    sequence = json.loads((tmp_path / "loadtest-report-sequence" / "report.json").read_text())
    assert [run["users"] for run in sequence["runs"]] == [1, 4]
    assert all(run["error_rate"] == 0 and run["throughput"] > 0 for run in sequence["runs"])
    stream = json.loads((tmp_path / "loadtest-report-stream" / "report.json").read_text())
    assert [run["users"] for run in stream["runs"]] == [1, 2]
    assert all(run["error_rate"] == 0 and run["throughput"] > 0 for run in stream["runs"])


@pytest.mark.parametrize("args", [("serve", "--http-port", "70000"), ("demo", "--grpc-port", "0")])
def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and "out of range; use 1-65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_validation_errors_once(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("serve", "empty", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: empty: the repository holds no model directory"
