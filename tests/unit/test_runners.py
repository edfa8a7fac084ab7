"""The runner layer and the Triton facts: real ONNX Runtime and torch runs, no framework at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generator.build.runners import check_cuda_call, flatten_outputs, named_outputs, onnx_runner, torch_runner
from generator.core import triton
from generator.core.errors import ConfigError, ExportError
from generator.core.signature import Signature, TensorInfo

from ..conftest import make_linear_onnx


def test_onnx_runner_runs_by_tensor_name(tmp_path: Path) -> None:
    weights, bias = make_linear_onnx(tmp_path / "m.onnx", input_name="features", output_name="logits")
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    got = onnx_runner(tmp_path / "m.onnx")({"features": x})
    assert list(got) == ["logits"]
    np.testing.assert_allclose(got["logits"], x @ weights + bias, rtol=1e-5, atol=1e-6)


def test_named_outputs_keys_a_list_by_name_and_refuses_a_count_mismatch() -> None:
    run = named_outputs(lambda feeds: [feeds["a"] + 1, feeds["a"] * 2], ["plus", "twice"])
    out = run({"a": np.array([1, 2])})
    assert out["plus"].tolist() == [2, 3] and out["twice"].tolist() == [2, 4]
    with pytest.raises(ValueError):
        named_outputs(lambda feeds: [feeds["a"]], ["one", "two"])({"a": np.array([1])})


def test_flatten_outputs_keeps_order_through_nesting() -> None:
    assert flatten_outputs((1, [2, {"k": 3, "j": (4,)}], 5)) == [1, 2, 3, 4, 5]


def test_torch_runner_names_outputs_and_reports_a_failing_module() -> None:
    torch = pytest.importorskip("torch")

    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x + 1, x.sum(dim=1)

    run = torch_runner("model 'pair': the torch module", Pair().eval(), ["x"], ["plus", "total"])
    out = run({"x": np.ones((2, 3), dtype=np.float32)})
    assert out["plus"].shape == (2, 3) and out["total"].tolist() == [3.0, 3.0]
    with pytest.raises(ExportError, match="model 'pair': the torch module fails on the parity inputs"):
        run({"x": np.ones((2,), dtype=np.float32)})


def test_check_cuda_call_returns_values_and_raises_on_an_error_code() -> None:
    assert check_cuda_call((0, 42)) == 42
    assert check_cuda_call((0, 1, 2)) == [1, 2]
    with pytest.raises(ExportError, match="CUDA call failed"):
        check_cuda_call((2, None))


def test_triton_facts() -> None:
    assert triton.DEFAULT_MODEL_FILENAMES[triton.ONNX_PLATFORM] == "model.onnx"
    assert triton.DEFAULT_MODEL_FILENAMES[triton.TENSORRT_PLATFORM] == "model.plan"
    assert triton.DEFAULT_MODEL_FILENAMES[triton.LIBTORCH_PLATFORM] == "model.pt"
    assert triton.PLATFORM_BACKENDS[triton.LIBTORCH_PLATFORM] == "pytorch"
    batched = Signature((TensorInfo("x", "FP32", (-1, 4)),), (TensorInfo("y", "FP32", (-1, 3)),))
    fixed = Signature((TensorInfo("x", "FP32", (4,)),), (TensorInfo("y", "FP32", (3,)),))

    class Asks:
        def __init__(self, size: int | None) -> None:
            self.max_batch_size = size

    assert triton.resolve_max_batch_size(Asks(None), batched) == triton.DEFAULT_MAX_BATCH_SIZE
    assert triton.resolve_max_batch_size(Asks(None), fixed) == 0
    assert triton.resolve_max_batch_size(Asks(32), batched) == 32
    assert triton.parse_config_text('name: "m"\nmax_batch_size: 4\n').max_batch_size == 4
    with pytest.raises(ConfigError, match=r"m/config\.pbtxt: does not parse as a Triton ModelConfig"):
        triton.parse_config_text("max_batch_size: four\n", "m/config.pbtxt")


def test_runner_and_triton_modules_import_no_framework() -> None:
    code = (
        "import sys, generator.build.runners, generator.core.triton, generator.build.exporters.tensorrt\n"
        "heavy = ('torch', 'tensorflow', 'onnxruntime', 'tensorrt', 'tritonclient', 'jinja2')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
