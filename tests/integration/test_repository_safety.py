"""The repository under hostile and careless use: nothing is written outside the output, the output
always holds a whole repository (builds killed at random, two builds racing, rebuilds watched by a
reader), killed builds leave nothing behind for good, and user text prints literally."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.build.run import build
from generator.core.errors import GeneratorError, RepositoryError, SpecError
from generator.core.repository import MANIFEST, OutputLock, Staging
from generator.spec.models import parse_spec

from ..conftest import make_linear_onnx, run_cli
from ..unit.test_spec_fuzz import plausible_settings

pytestmark = pytest.mark.integration


def _spec(tmp_path: Path, models: int = 2, name: str = "spec.yaml", model_name: str = "m{i}") -> Path:
    make_linear_onnx(tmp_path / "lin.onnx")
    lines = ["models:"]
    for i in range(models):
        lines.append(f"  - {{name: {json.dumps(model_name.format(i=i))}, framework: onnx, source: lin.onnx}}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _whole(repo: Path) -> bool:
    """A complete repository: a manifest, and every model it lists with its config and files."""
    manifest = json.loads((repo / MANIFEST).read_text())
    for name, entry in manifest["models"].items():
        if not (repo / name / "config.pbtxt").is_file():
            return False
        for version, record in entry["versions"].items():
            if not all((repo / name / version / f).is_file() for f in record["files"]):
                return False
    built = {p.name for p in repo.iterdir() if p.is_dir()}
    return built == set(manifest["models"])


def test_a_model_named_dot_dot_writes_nothing_outside(tmp_path: Path) -> None:
    spec = _spec(tmp_path, models=1, model_name="..")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("build", str(spec), "--output", "repo", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stderr.startswith("error: ") and "models[0].name: '..' cannot be a model name" in result.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "config.pbtxt").exists() and not (tmp_path.parent / "config.pbtxt").exists()


@pytest.mark.parametrize("output", ["..", ".", "/"])
def test_an_output_that_holds_the_work_is_refused(tmp_path: Path, output: str) -> None:
    spec = _spec(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("build", str(spec), "--output", output, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: output"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_existing_directory_that_is_not_a_repository_is_refused(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(RepositoryError, match=r"is not a model repository \(it holds notes.txt\)"):
        build(spec, tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"


def test_user_text_prints_literally(tmp_path: Path) -> None:
    configs = tmp_path / "configs" / "[prod]"
    configs.mkdir(parents=True)
    (configs / "x.yaml").write_text('models:\n  - {name: m, framework: onnx, source: "[/x]"}\n')
    result = run_cli("build", "configs/[prod]/x.yaml", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "source '[/x]': no file at" in result.stderr and "configs/[prod]/[/x]" in result.stderr


def test_the_repository_is_readable_by_other_users(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    build(_spec(tmp_path), repo)
    mode = stat.S_IMODE(repo.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask
    assert mode & stat.S_IROTH and mode & stat.S_IXOTH


def test_a_second_build_into_a_locked_output_fails_clearly(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    repo = tmp_path / "repo"
    build(spec, repo)
    before = _tree(repo)
    lock = OutputLock(repo.absolute())
    lock.acquire()
    try:
        result = run_cli("build", str(spec), "--output", "repo", cwd=tmp_path)
    finally:
        lock.release()
    assert result.returncode == 1
    assert (
        f"another build (pid {os.getpid()}) is writing" in result.stderr and "Traceback" not in result.stderr
    )
    assert _tree(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_racing_builds_never_mix_repositories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    spec_a = _spec(tmp_path / "a", models=6, model_name="a{i}")
    spec_b = _spec(tmp_path / "b", models=3, model_name="b{i}")
    repo = tmp_path / "repo"
    env = {**os.environ, "NO_COLOR": "1"}
    outcomes = []
    for _ in range(4):
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "generator", "build", str(spec), "--output", str(repo)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for spec in (spec_a, spec_b)
        ]
        for run in runs:
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0 or "another build" in err, err
            outcomes.append(run.returncode)
        assert _whole(repo)
        names = {p.name for p in repo.iterdir() if p.is_dir()}
        assert names in ({f"a{i}" for i in range(6)}, {f"b{i}" for i in range(3)}), names
    assert 0 in outcomes


def test_rebuilds_never_leave_the_output_missing(tmp_path: Path) -> None:
    spec = _spec(tmp_path, models=3)
    repo = tmp_path / "repo"
    build(spec, repo)
    seen_missing = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (repo / MANIFEST).is_file():
                seen_missing.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for seed in range(8):  # a new model file each time: a real re-export and swap
            make_linear_onnx(tmp_path / "lin.onnx", seed=seed + 1)
            assert build(spec, repo).models[0].status == "exported"
    finally:
        stop.set()
        watcher.join()
    assert seen_missing == []
    assert _whole(repo)


def test_killed_builds_leave_a_whole_repository_and_no_leftovers(tmp_path: Path) -> None:
    spec = _spec(tmp_path, models=12)
    repo = tmp_path / "repo"
    build(spec, repo)
    rng = random.Random(7)
    for attempt in range(6):
        make_linear_onnx(tmp_path / "lin.onnx", seed=attempt + 10)  # forces a real rebuild
        run = subprocess.Popen(
            [sys.executable, "-m", "generator", "build", str(spec), "--output", str(repo)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(1.0, 4.0))
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert _whole(repo), f"attempt {attempt}: the output is not a whole repository"
    report = build(spec, repo)  # reuses what a build killed after its swap wrote for this source
    assert len(report.models) == 12 and _whole(repo)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".repo.")]
    assert leftovers == []


SLOW_FACTORY = """\
import os
import time
from pathlib import Path

from torch import nn


def build():
    here = Path(__file__).parent
    (here / "export.pid").write_text(str(os.getpid()))
    time.sleep(4)
    (here / "returned").write_text("the factory returned")
    return nn.Linear(4, 2)
"""


def test_a_killed_build_takes_its_export_process_along(tmp_path: Path) -> None:
    """SIGKILL the build while a factory runs: its export process ends with it, so the factory never
    returns and nothing more is written into the dead build's staging directory."""
    (tmp_path / "slow.py").write_text(SLOW_FACTORY)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n  - {name: slow, framework: torch, source: 'slow.py:build', max_batch_size: 4,\n"
        "     inputs: [{name: x, dtype: FP32, dims: [4]}]}\n"
    )
    marker = tmp_path / "export.pid"
    run = subprocess.Popen(
        [sys.executable, "-m", "generator", "build", str(spec), "--output", str(tmp_path / "repo")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    export: psutil.Process | None = None
    try:
        deadline = time.monotonic() + 180
        while not marker.is_file() or not marker.read_text():
            assert run.poll() is None and time.monotonic() < deadline, "the factory never started"
            time.sleep(0.05)
        export = psutil.Process(int(marker.read_text()))
        staged = {str(p): p.stat().st_size for p in tmp_path.glob(".repo.building-*/**/*")}
        run.kill()
        run.wait()
        with contextlib.suppress(psutil.NoSuchProcess):
            export.wait(timeout=60)  # before the fix it lived on until its export was written
        assert not (tmp_path / "returned").exists(), "the export process outlived the build it served"
        assert {str(p): p.stat().st_size for p in tmp_path.glob(".repo.building-*/**/*")} == staged
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if export is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                export.kill()


def test_an_interrupted_two_rename_swap_is_undone_on_the_next_build(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    repo = tmp_path / "repo"
    build(spec, repo)
    before = _tree(repo)
    # What a crash between "repo -> backup" and "staging -> repo" leaves: no output, a backup, a staging.
    os.rename(repo, tmp_path / ".repo.old-0123456789ab")
    (tmp_path / ".repo.building-0123456789ab" / "m0").mkdir(parents=True)
    with Staging(repo) as staging:
        assert _tree(repo) == before
        assert not (tmp_path / ".repo.building-0123456789ab").exists()
        assert staging.path.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text() + "models: []\n")
    with pytest.raises(SpecError, match="appears twice"):
        build(spec, tmp_path / "repo")


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(plausible_settings, st.sampled_from(["cpu", "gpu", "auto"]))
def test_any_plausible_spec_builds_or_fails_with_a_generator_error(
    tmp_path_factory: pytest.TempPathFactory, extra: dict, device: str
) -> None:
    work = tmp_path_factory.mktemp("fuzz")
    make_linear_onnx(work / "m.onnx")
    data = {"models": [{"name": "m", "framework": "onnx", "source": "m.onnx", **extra}]}
    try:
        spec = parse_spec(data, base_dir=work)
    except SpecError:
        return
    try:
        build(spec=spec, output=work / "repo", device=device)
    except GeneratorError as error:
        assert all(line and "\n" not in line for line in error.problems)
        assert not (work / "repo").exists()
    else:
        assert _whole(work / "repo")
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []
