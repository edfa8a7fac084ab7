"""The export process: results, progress and errors cross back; exits and crashes become ExportError;
the files a step imports or reads from the user's directories are reported and forgotten."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from generator.build.worker import ExportWorker
from generator.core.errors import ExportError, VerificationError


def _pid(*, progress: Callable[[str], None]) -> int:
    progress("working")
    return os.getpid()


def _exits(code: int, *, progress: Callable[[str], None]) -> None:
    os._exit(code)


def _sys_exit(*, progress: Callable[[str], None]) -> None:
    sys.exit(0)


def _two_problems(*, progress: Callable[[str], None]) -> None:
    raise VerificationError(
        "model 'm' output 'y' at batch 1: differs", "model 'm' output 'y' at batch 8: differs"
    )


def _lookup_error(*, progress: Callable[[str], None]) -> None:
    raise LookupError("not ours")


def _imports(directory: str, *, progress: Callable[[str], None]) -> float:
    sys.path.insert(0, directory)
    try:
        helper = importlib.import_module("helper_for_worker_test")
        data = (Path(directory) / "data.txt").read_text()
    finally:
        sys.path.remove(directory)
    return helper.SCALE * float(data)


def test_steps_run_in_one_reused_process_and_relay_progress() -> None:
    stages: list[str] = []
    with ExportWorker(in_process=False) as worker:
        first = worker.run("model 'm'", _pid, (), [], [], stages.append).value
        second = worker.run("model 'm'", _pid, (), [], [], stages.append).value
    assert first == second != os.getpid()
    assert stages == ["working", "working"]


def test_an_exit_is_an_export_error_and_the_next_step_gets_a_fresh_process() -> None:
    with ExportWorker(in_process=False) as worker:
        with pytest.raises(ExportError, match=r"^model 'm': the export process exited with code 7 before"):
            worker.run("model 'm'", _exits, (7,), [], [], lambda stage: None)
        with pytest.raises(ExportError, match=r"^model 'n': the export step raised SystemExit\(0\); fix"):
            worker.run("model 'n'", _sys_exit, (), [], [], lambda stage: None)
        assert worker.run("model 'o'", _pid, (), [], [], lambda stage: None).value != os.getpid()


def test_errors_cross_back_as_themselves() -> None:
    with ExportWorker(in_process=False) as worker:
        with pytest.raises(VerificationError) as caught:
            worker.run("model 'm'", _two_problems, (), [], [], lambda stage: None)
        assert len(caught.value.problems) == 2
        with pytest.raises(LookupError, match="not ours") as other:
            worker.run("model 'm'", _lookup_error, (), [], [], lambda stage: None)
        assert "_lookup_error" in str(other.value.__cause__)


@pytest.mark.parametrize("in_process", [True, False])
def test_user_files_are_reported_and_their_modules_forgotten(tmp_path: Path, in_process: bool) -> None:
    (tmp_path / "helper_for_worker_test.py").write_text("SCALE = 2.0\n")
    (tmp_path / "data.txt").write_text("3\n")
    written = tmp_path / "out"
    written.mkdir()
    (written / "model.onnx").write_text("not read\n")
    with ExportWorker(in_process=in_process) as worker:
        outcome = worker.run(
            "model 'm'", _imports, (str(tmp_path),), [tmp_path], [written], lambda stage: None
        )
        assert outcome.value == 6.0
        assert sorted(Path(p).name for p in outcome.user_files) == ["data.txt", "helper_for_worker_test.py"]
        (tmp_path / "helper_for_worker_test.py").write_text(
            "SCALE = 5.25\n"
        )  # another size: a same-second edit defeats pyc mtimes
        assert (
            worker.run("model 'm'", _imports, (str(tmp_path),), [tmp_path], [], lambda s: None).value == 15.75
        )
    assert "helper_for_worker_test" not in sys.modules
