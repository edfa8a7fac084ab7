"""Factories (``file.py:function``) as users write them: real torch exports in the isolated export
process, factories that exit, crash or raise ``BaseException``, helper modules the cache key must
follow, dataclass-using modules, and input dtypes torch cannot take."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from generator.build.run import build
from generator.core.errors import ExportError, GeneratorError
from generator.core.repository import MANIFEST

from ..conftest import make_linear_onnx

pytestmark = pytest.mark.integration


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _torch_model(name: str, source: str, dtype: str = "FP32", dims: str = "[4]") -> str:
    return (
        f"  - {{name: {name}, framework: torch, source: '{source}', max_batch_size: 4,\n"
        f"     inputs: [{{name: x, dtype: {dtype}, dims: {dims}}}]}}\n"
    )


def _staging_dirs(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".building-" in p.name]


def _run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


BAD_FACTORIES = """\
import os
import sys

from torch import nn


def exit_zero():
    sys.exit(0)


def exit_three():
    sys.exit(3)


def hard_exit():
    os._exit(7)


def base_exception():
    raise BaseException


def interrupt():
    raise KeyboardInterrupt


def value_error():
    raise ValueError()


def good():
    return nn.Linear(4, 3).eval()
"""


def test_factories_that_exit_crash_or_raise_fail_the_build_naming_each_model(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "lin.onnx")
    (tmp_path / "good.yaml").write_text("models:\n  - {name: lin, framework: onnx, source: lin.onnx}\n")
    repo = tmp_path / "repo"
    build(tmp_path / "good.yaml", repo)
    before = _tree(repo)
    _write(tmp_path, "bad.py", BAD_FACTORIES)
    names = ["exit_zero", "exit_three", "hard_exit", "base_exception", "interrupt", "value_error", "good"]
    spec = tmp_path / "bad.yaml"
    spec.write_text("models:\n" + "".join(_torch_model(n, f"bad.py:{n}") for n in names))

    with pytest.raises(ExportError) as caught:
        build(spec, repo)

    problems = caught.value.problems
    assert len(problems) == 6, problems
    by_model = {name: [p for p in problems if f"model '{name}'" in p] for name in names}
    assert "raised SystemExit" in by_model["exit_zero"][0] and "fix the factory" in by_model["exit_zero"][0]
    assert "raised SystemExit: 3" in by_model["exit_three"][0]
    assert "the export process exited with code 7" in by_model["hard_exit"][0]
    assert "raised BaseException;" in by_model["base_exception"][0]
    assert "raised KeyboardInterrupt" in by_model["interrupt"][0]
    assert "raised ValueError;" in by_model["value_error"][0]
    assert by_model["good"] == []  # built in a fresh export process after the crash
    assert all("\n" not in p for p in problems)
    assert _tree(repo) == before
    assert _staging_dirs(tmp_path) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [("os._exit(7)", "the export process exited with code 7"), ("sys.exit(0)", "raised SystemExit")],
)
def test_the_cli_reports_an_exiting_factory_in_one_line(tmp_path: Path, body: str, expected: str) -> None:
    _write(tmp_path, "exits.py", f"import os\nimport sys\n\n\ndef build():\n    {body}\n")
    (tmp_path / "spec.yaml").write_text("models:\n" + _torch_model("exits", "exits.py:build"))
    result = subprocess.run(
        [sys.executable, "-m", "generator", "build", "spec.yaml", "--output", "repo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: model 'exits': ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "repo").exists() and _staging_dirs(tmp_path) == []


def test_a_factory_module_with_dataclasses_and_postponed_annotations_builds(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "shapes.py",
        """\
        from __future__ import annotations

        import inspect
        from dataclasses import dataclass

        import torch
        from torch import nn


        @dataclass
        class Settings:
            features: int = 4
            classes: int = 3


        class Head(nn.Module):
            def __init__(self, settings: Settings) -> None:
                super().__init__()
                self.linear = nn.Linear(settings.features, settings.classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.linear(x)


        def build() -> Head:
            assert "class Head" in inspect.getsource(Head)
            return Head(Settings()).eval()
        """,
    )
    (tmp_path / "spec.yaml").write_text("models:\n" + _torch_model("head", "shapes.py:build"))
    report = build(tmp_path / "spec.yaml", tmp_path / "repo")
    assert [m.status for m in report.models] == ["exported"]
    assert report.models[0].parity and report.models[0].parity["compared"]


HELPERS = """\
SCALE = {scale}


def scale(x):
    return x * SCALE
"""

SCALED = """\
import torch
from torch import nn

import helpers


class Scaled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return helpers.scale(x)


def build() -> nn.Module:
    return Scaled()
"""


def test_editing_a_module_the_factory_imports_re_exports_the_model(tmp_path: Path) -> None:
    _write(tmp_path, "helpers.py", HELPERS.format(scale=2.0))
    _write(tmp_path, "scaled.py", SCALED)
    spec = tmp_path / "spec.yaml"
    spec.write_text("models:\n" + _torch_model("scaled", "scaled.py:build"))
    repo = tmp_path / "repo"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    stages: list[tuple[str, str]] = []

    first = build(spec, repo, progress=lambda name, stage: stages.append((name, stage)))
    assert [m.status for m in first.models] == ["exported"]
    assert ("scaled", "export") in stages and ("scaled", "verify") in stages
    np.testing.assert_allclose(_run_onnx(repo / "scaled" / "1" / "model.onnx", {"x": x})[0], x * 2.0)
    entry = json.loads((repo / MANIFEST).read_text())["models"]["scaled"]["versions"]["1"]
    assert sorted(entry["user_files"]) == ["helpers.py", "scaled.py"]
    assert [m.status for m in build(spec, repo).models] == ["reused"]

    _write(tmp_path, "helpers.py", HELPERS.format(scale=3.25))
    again = build(spec, repo)
    assert [m.status for m in again.models] == ["exported"]
    np.testing.assert_allclose(_run_onnx(repo / "scaled" / "1" / "model.onnx", {"x": x})[0], x * 3.25)


NUMERIC = """\
import torch
from torch import nn


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(10, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids).sum(1)


class Mask(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().sum(1, keepdim=True)


def embed():
    return Embed()


def mask():
    return Mask()
"""


def test_integer_bool_and_half_inputs_export_and_match(tmp_path: Path) -> None:
    _write(tmp_path, "numeric.py", NUMERIC)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n"
        + _torch_model("ids64", "numeric.py:embed", "INT64", "[5]")
        + _torch_model("ids32", "numeric.py:embed", "INT32", "[5]")
        + _torch_model("flags", "numeric.py:mask", "BOOL")
        + _torch_model("half", "numeric.py:mask", "FP16")
    )
    report = build(spec, tmp_path / "repo")
    assert [m.status for m in report.models] == ["exported"] * 4
    for model in report.models:
        assert model.parity and model.parity["compared"] and model.parity["max_abs_error"] < 1e-3, model
    assert [t.dtype for t in report.models[0].signature.inputs] == ["INT64"]


def test_string_and_bfloat16_inputs_are_refused_with_the_fix(tmp_path: Path) -> None:
    _write(tmp_path, "numeric.py", NUMERIC)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n"
        + _torch_model("text", "numeric.py:mask", "STRING")
        + _torch_model("brain", "numeric.py:mask", "BF16")
    )
    with pytest.raises(ExportError) as caught:
        build(spec, tmp_path / "repo")
    text, brain = caught.value.problems
    assert text.startswith("model 'text': input 'x' is STRING, but torch models take numeric tensors;")
    assert "declare the input INT64" in text
    assert brain.startswith("model 'brain': input 'x' is BF16") and "declare the input FP32 or FP16" in brain


def test_an_integer_input_into_float_layers_is_a_one_line_error(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "linear.py",
        """\
        from torch import nn


        def build():
            return nn.Linear(4, 2)
        """,
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text("models:\n" + _torch_model("ids", "linear.py:build", "INT64"))
    with pytest.raises(GeneratorError) as caught:
        build(spec, tmp_path / "repo")
    (line,) = caught.value.problems
    assert line.startswith("model 'ids': ") and "int64" in line and "input dtypes" in line, line
    assert ".building-" not in line


def test_a_trace_error_with_an_empty_message_is_an_export_error(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "silent.py",
        """\
        from torch import nn


        class Silent(nn.Module):
            def forward(self, x):
                raise RuntimeError()


        def build():
            return Silent()
        """,
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models:\n"
        "  - {name: silent, framework: torch, format: torchscript, source: 'silent.py:build',\n"
        "     max_batch_size: 4, inputs: [{name: x, dtype: FP32, dims: [4]}]}\n"
    )
    with pytest.raises(ExportError, match=r"^model 'silent': torch.jit.trace failed: RuntimeError; "):
        build(spec, tmp_path / "repo")
