"""``python -m generator tune`` on the embedded Triton: real trials, the report, the winner written back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.core.gpus import NvmlUnavailable, detect_gpus
from generator.core.triton import parse_config_text
from generator.serve.server import EmbeddedServer
from generator.spec.models import bundled_example
from tests.conftest import free_ports, run_cli

# Short windows keep each trial to a few seconds; the figures are real measurements all the same.
FAST = ["--trial-seconds", "0.75", "--warmup", "0.5", "--max-windows", "5", "--stability-pct", "25"]
ONE_SETTING = ["--instances", "2", "--threads", "auto", "--max-batch-sizes", "64", "--batching", "on"]


@pytest.fixture
def project(tmp_path: Path, example_repo: Path) -> Path:
    """The bundled example's spec and sources in a private directory, with its repository already built."""
    root = tmp_path / "project"
    shutil.copytree(bundled_example().parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(example_repo, root / "model_repository")
    return root


def _config(repository: Path, model: str):
    return parse_config_text((repository / model / "config.pbtxt").read_bytes())


def test_a_two_trial_grid_writes_the_report_and_the_winner_back(project: Path) -> None:
    # At one user a 500 us queue delay makes every request wait for a batch that never fills: 0 us wins.
    # The example ships 0 us, so the project starts from 500 us.
    spec = project / "generator.yaml"
    spec.write_text(
        spec.read_text().replace(
            "max_queue_delay_microseconds: 0\n", "max_queue_delay_microseconds: 500\n", 1
        )
    )
    started = run_cli("build", "generator.yaml", cwd=project)
    assert started.returncode == 0, started.stderr
    before = _config(project / "model_repository", "digits_cnn")
    assert before.dynamic_batching.max_queue_delay_microseconds == 500
    done = run_cli(
        "tune", "generator.yaml", "--model", "digits_cnn", "--search", "grid", *ONE_SETTING,
        "--queue-delays", "0,500", "--preferred", "start", "--users", "1", "--objective", "p50",
        "--out", "report", *FAST,
        cwd=project, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((project / "report" / "tune.json").read_text())
    entry = report["models"]["digits_cnn"]
    searched = [t for t in entry["trials"] if t["role"] != "confirm"]
    assert [t["settings"]["queue_delay_us"] for t in searched] == [500, 0]
    for trial in searched:
        [level] = trial["levels"]
        assert trial["status"] == "measured" and level["users"] == 1
        assert level["throughput"] > 0 and 0 < level["p50_ms"] <= level["p99_ms"]
        assert level["requests"] > 0 and level["failures"] == 0
        assert (
            level["avg_batch_size"] >= 1 and level["queue_us"] is not None and level["compute_infer_us"] > 0
        )
        assert level["cpu_utilization"] is not None and level["memory_bytes"] > 0
        assert level["stability"]["windows"] >= 3
        assert trial["constraints"]["error_rate>0"]["passed"]
    assert entry["best_per_level"]["1"]["trial"] == entry["winner"] == 1
    assert entry["confirmation"]["confirmed"]
    # The start config was measured twice for the noise; the winner is better than it at the level.
    [noise] = entry["noise"]["levels"]
    assert len(noise["start"]) == 3 and noise["noise_pct"] >= 3.0  # twice, then again beside the winner
    assert entry["noise"]["levels_held"]
    [level] = entry["vs_start"]["levels"]
    assert entry["vs_start"]["trial"] == 1 and level["verdict"] == "better" and level["change_pct"] < 0
    assert "p50_ms at 1 user -" in entry["verdict"] and "p50_ms at 1 user -" in done.stdout
    html = (project / "report" / "report.html").read_text()
    assert html.count("<img") == 1 and "Trial 1 against the start config, level by level" in html

    tuned = project / "generator.tuned.yaml"
    assert tuned.is_file() and "Commit it" in tuned.read_text()
    after = _config(project / "model_repository", "digits_cnn")
    assert after.dynamic_batching.max_queue_delay_microseconds == 0
    assert list(after.dynamic_batching.preferred_batch_size) == [16, 32]
    assert after.instance_group[0].count == 2
    manifest = json.loads((project / "model_repository" / "tritongen-manifest.json").read_text())
    assert manifest["models"]["digits_cnn"]["tuned"]["trial"] == f"{report['run']}/1"
    assert manifest["models"]["digits_linear"].get("tuned") is None

    # A later build reproduces the tuned config from the spec and the tuned file alone.
    rebuilt = run_cli("build", "generator.yaml", "--output", "again", cwd=project)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _config(project / "again", "digits_cnn") == after


def test_constraints_no_trial_meets_and_a_candidate_triton_refuses(project: Path) -> None:
    repository = project / "model_repository"
    manifest_before = (repository / "tritongen-manifest.json").read_bytes()
    done = run_cli(
        "tune", "generator.yaml", "--model", "digits_cnn", "--search", "grid", *ONE_SETTING,
        "--queue-delays", "0", "--preferred", "start,128", "--users", "2", "--max-p99-ms", "0.001",
        "--out", "report", *FAST,
        cwd=project, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "no trial met the constraints; the closest was trial 0" in done.stderr
    assert "p99_ms>0.001" in done.stderr
    report = json.loads((project / "report" / "tune.json").read_text())
    trials = report["models"]["digits_cnn"]["trials"]
    assert [t["status"] for t in trials] == ["measured", "failed"]
    refused = trials[1]
    assert refused["settings"]["preferred"] == [128]
    assert "Triton did not load model 'digits_cnn'" in refused["error"]
    assert "preferred" in refused["error"].lower()  # Triton's own reason
    assert trials[0]["constraints"]["p99_ms>0.001"]["passed"] is False
    assert not (project / "generator.tuned.yaml").exists()
    assert (repository / "tritongen-manifest.json").read_bytes() == manifest_before


def test_bad_options_are_one_line_errors(project: Path) -> None:
    for args, message in (
        (["--model", "nope"], "--model nope: not in the spec"),
        (["--model", "digits_cnn", "--users", "0"], "--users"),
        (["--model", "digits_cnn", "--instances", "two"], "--instances 'two'"),
        (["--model", "digits_cnn", "--max-memory", "lots"], "--max-memory 'lots'"),
        (["--model", "digits_cnn", "--constraint", "speed>1"], "--fail-if 'speed>1'"),
        # The build in the child fails: its error comes back as the build's own line.
        (["--model", "digits_cnn", "--templates", "none"], "error: --templates 'none' is not a directory"),
    ):
        done = run_cli("tune", "generator.yaml", *args, cwd=project, timeout=120)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_gpu_search_on_a_machine_without_gpus_says_so(project: Path) -> None:
    try:
        if detect_gpus():
            pytest.skip("this machine has GPUs; the test is about one without")
    except NvmlUnavailable:
        pass
    done = run_cli(
        "tune", "generator.yaml", "--model", "digits_linear", "--device", "gpu", "--search", "grid",
        "--instances", "1", "--threads", "auto", "--batching", "off", "--max-batch-sizes", "64",
        "--users", "1", "--no-write", "--out", "report", *FAST,
        cwd=project, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((project / "report" / "tune.json").read_text())
    assert report["device"] == "cpu"
    assert any("no GPU is visible here: searching CPU settings" in note for note in report["notes"])
    assert all(t["settings"]["gpus"] is None for t in report["models"]["digits_linear"]["trials"])


def _tune_process(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "generator", "tune", "generator.yaml", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
    )


def _wait_for_trials(report: Path, process: subprocess.Popen[str], count: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            data = json.loads(report.read_text())
            if len(data["models"]["digits_cnn"]["trials"]) >= count:
                return data
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no {count} trials in {report} (tune exited with {process.poll()})")


# A grid of many trials, so that the test acts in the middle of it.
LONG_GRID = ["--search", "grid", "--instances", "1,2,4", "--threads", "auto,1", "--users", "1", *FAST]


def test_tune_on_a_running_server_over_grpc_survives_its_death(project: Path) -> None:
    # --url: any Triton with explicit model control; the harness measures over gRPC. The server dies
    # mid-search: the search ends, the trials so far are kept, nothing is written back.
    server = EmbeddedServer(project / "model_repository", supervise=False, **free_ports())
    process = None
    try:
        server.start()
        process = _tune_process(
            project,
            "--model",
            "digits_cnn",
            "--url",
            f"grpc://{server.endpoints.grpc}",
            *LONG_GRID,
            "--out",
            "report",
        )
        data = _wait_for_trials(project / "report" / "tune.json", process, 2)
        assert data["protocol"] == "grpc" and data["target"].startswith("grpc://127.0.0.1:")
        assert data["models"]["digits_cnn"]["trials"][0]["levels"][0]["throughput"] > 0
        os.kill(server.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=120)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()
        server.stop()
    assert process.returncode == 1, out + err
    assert "the search stopped early" in err and "Traceback" not in err
    report = json.loads((project / "report" / "tune.json").read_text())
    assert report["stopped"] and len(report["models"]["digits_cnn"]["trials"]) >= 2
    assert not (project / "generator.tuned.yaml").exists()


def test_ctrl_c_keeps_the_trials_and_changes_nothing(project: Path) -> None:
    repository = project / "model_repository"
    config_before = (repository / "digits_cnn" / "config.pbtxt").read_bytes()
    process = _tune_process(project, "--model", "digits_cnn", *LONG_GRID, "--out", "report")
    try:
        _wait_for_trials(project / "report" / "tune.json", process, 2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, out + err
    assert "trials so far are in report/tune.json" in err and "Traceback" not in err
    report = json.loads((project / "report" / "tune.json").read_text())
    assert report["stopped"] == "interrupted (Ctrl-C)" and len(report["models"]["digits_cnn"]["trials"]) >= 2
    assert not (project / "generator.tuned.yaml").exists()
    assert (repository / "digits_cnn" / "config.pbtxt").read_bytes() == config_before
    assert (
        subprocess.run(["pgrep", "-f", str(project)], capture_output=True).returncode == 1
    )  # no server left


# digits_linear's settings as the example builds them (the space is then the instance counts asked for).
LINEAR_AS_BUILT = [
    "--threads", "auto", "--max-batch-sizes", "64", "--batching", "on", "--queue-delays", "0", "--preferred", "start",
]  # fmt: skip


def _with_response_cache(project: Path, model: str = "digits_linear") -> None:
    """Make sure ``model`` has ``response_cache: true`` in the project's spec (the example has it today)."""
    spec = project / "generator.yaml"
    text = spec.read_text()
    block = text.index(f"- name: {model}\n")
    end = text.find("\n  - name:", block + 1)
    if "response_cache: true" not in text[block : end if end != -1 else None]:
        source = text.index("    source:", block)
        line_end = text.index("\n", source) + 1
        spec.write_text(text[:line_end] + "    response_cache: true\n" + text[line_end:])


def test_a_model_with_the_response_cache_is_measured_with_it_off(project: Path) -> None:
    # With the cache on, the harness's few distinct requests are answered from the cache after their first
    # time: Triton computes nothing and every trial measures the cache, not the settings.
    _with_response_cache(project)
    done = run_cli(
        "tune", "generator.yaml", "--model", "digits_linear", "--search", "grid",
        "--instances", "1,2", *LINEAR_AS_BUILT, "--users", "1", "--no-write", "--out", "report", *FAST,
        cwd=project, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((project / "report" / "tune.json").read_text())
    assert any("response cache" in note and "off" in note for note in report["notes"]), report["notes"]
    assert "response cache" in done.stdout  # said on the command line too
    trials = report["models"]["digits_linear"]["trials"]
    assert len([t for t in trials if t["role"] != "confirm"]) == 2
    for trial in trials:
        [level] = trial["levels"]
        assert trial["status"] == "measured"
        assert level["compute_infer_us"] is not None and level["compute_infer_us"] > 0, trial
    # The repository keeps the cache: only the measurements ran without it.
    assert _config(project / "model_repository", "digits_linear").response_cache.enable


def _scratch_copies(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("tritongen-tune-*"))


def test_a_killed_tunes_scratch_copy_is_cleared_by_the_next_tune(project: Path, tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    process = _tune_process(project, "--model", "digits_cnn", *LONG_GRID, "--out", "report", env=env)
    try:
        _wait_for_trials(project / "report" / "tune.json", process, 1)
        [killed] = _scratch_copies(temp)
        process.kill()  # SIGKILL: no cleanup runs
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert killed.is_dir() and (killed / "model_repository").is_dir()

    # The next tune clears it, and has a scratch copy of its own; a third tune leaves that one alone.
    other = _tune_process(
        project, "--model", "digits_cnn", *LONG_GRID, "--no-write", "--out", "other", env=env
    )
    try:
        data = _wait_for_trials(project / "other" / "tune.json", other, 1)
        assert not killed.exists()
        assert any("removed 1 scratch copy that a killed tune left in" in note for note in data["notes"])
        [live] = _scratch_copies(temp)
        third = _tune_process(
            project, "--model", "digits_linear", "--search", "grid", "--instances", "1", *LINEAR_AS_BUILT,
            "--users", "1", "--no-write", "--out", "third", *FAST, env=env,
        )  # fmt: skip
        try:
            out, err = third.communicate(timeout=600)
        finally:
            if third.poll() is None:
                third.kill()
                third.communicate()
        assert third.returncode == 0, out + err
        assert other.poll() is None and live.is_dir()
        assert _scratch_copies(temp) == [live]
        assert "scratch" not in " ".join(json.loads((project / "third" / "tune.json").read_text())["notes"])
    finally:
        other.kill()
        other.communicate()


def test_ctrl_c_before_any_trial_says_nothing_was_saved(project: Path, tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    process = _tune_process(
        project, "--model", "digits_cnn", *LONG_GRID, "--out", "report", env={"TMPDIR": str(temp)}
    )
    try:
        deadline = time.monotonic() + 120
        while not _scratch_copies(temp) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _scratch_copies(temp), "the tune made no scratch copy"
        process.send_signal(signal.SIGINT)  # while it builds or starts Triton: no trial measured yet
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, out + err
    assert "Traceback" not in err
    assert "trials so far" not in err
    assert "no trial was measured" in err
    assert not (project / "report" / "tune.json").exists()
    assert _scratch_copies(temp) == []
