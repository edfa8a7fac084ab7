"""Real exports with an opset the exporter may not honour, and torch export failures as a user sees
them: one plain line on the terminal, naming the cause and the user's code (no colour codes, none of
torch's own printed graphs or logged tracebacks)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from generator.build.run import build
from generator.core.errors import ExportError

from ..conftest import run_cli

pytestmark = pytest.mark.integration

LINEAR = """\
import torch

def build():
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
"""
DATA_DEPENDENT = """\
import torch

class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1

def build():
    return Branchy()
"""
KERAS = """\
import keras

def build():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu")])
"""


def _spec(directory: Path, framework: str, source: str, opset: int | None) -> Path:
    extra = f", opset: {opset}" if opset is not None else ""
    spec = directory / "spec.yaml"
    spec.write_text(
        "models:\n"
        f"  - {{name: m, framework: {framework}, source: '{source}', max_batch_size: 4{extra},\n"
        "     inputs: [{name: x, dtype: FP32, dims: [4]}], outputs: [{name: y, dtype: FP32, dims: [3]}]}\n"
    )
    return spec


def _written_opset(repository: Path) -> int:
    import onnx

    model = onnx.load(str(repository / "m" / "1" / "model.onnx"), load_external_data=False)
    return {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}["ai.onnx"]


def test_torch_writes_the_opset_asked_for_or_refuses_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "lin.py").write_text(LINEAR)
    build(_spec(tmp_path, "torch", "lin.py:build", 17), tmp_path / "repo17")  # converted down from 18
    assert _written_opset(tmp_path / "repo17") == 17
    with pytest.raises(ExportError) as caught:  # ONNX's converter cannot bring Gemm/Relu down to 13
        build(_spec(tmp_path, "torch", "lin.py:build", 13), tmp_path / "repo13")
    assert caught.value.problems == [
        "model 'm': torch.onnx.export wrote opset 18, not the opset 13 the spec asks for; it writes opset 18 "
        "and later, and older ones only where ONNX's version converter can rewrite the model, which it could "
        "not for this one; use opset 18 to 21, or leave it unset"
    ]
    assert not (tmp_path / "repo13").exists()


def test_a_torch_export_failure_is_one_plain_line_on_the_terminal(tmp_path: Path) -> None:
    (tmp_path / "branchy.py").write_text(DATA_DEPENDENT)
    done = run_cli("build", str(_spec(tmp_path, "torch", "branchy.py:build", None)), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: model 'm': torch.onnx.export failed: GuardOnDataDependentSymNode: Could not guard on "
        "data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)). (Size-like symbols: none) (at branchy.py:5 "
        "in forward: if x.sum() > 0:); make the module exportable with torch.export (no data-dependent "
        "control flow)"
    ], done.stderr


def test_tf2onnx_writes_the_opset_asked_for_or_refuses_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip(
        "tf2onnx", reason="the tensorflow extra is not installed: pip install '.[tensorflow]'"
    )
    (tmp_path / "dense.py").write_text(textwrap.dedent(KERAS))
    build(_spec(tmp_path, "tensorflow", "dense.py:build", 9), tmp_path / "repo9")
    assert _written_opset(tmp_path / "repo9") == 9
    with pytest.raises(
        ExportError, match=r"tf2onnx [\d.]+ writes opsets up to 18, not 19; use opset 7 to 18"
    ):
        build(_spec(tmp_path, "tensorflow", "dense.py:build", 19), tmp_path / "repo19")
