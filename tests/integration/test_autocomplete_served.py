"""Triton's auto-complete, validate against the real embedded Triton: the configs validate completes load
with the same tensors and batching, and the ones it refuses Triton refuses for the same reason.

One server runs with explicit model control; each case plants a model beside a sound one and loads it.
Who judges: the core of Triton 2.51 checks the tensors after auto-complete ("must specify 'data_type'")
and the config before it (preferred batch sizes); the Python backend runs a model's own
``auto_complete_config`` with Triton's ``pb_utils.ModelConfig``, whose conflicts are Triton's. The ONNX
Runtime and PyTorch backends are the embedded server's Python stand-in (tritongen's code, mirroring the
native backends' rules, not an oracle of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from generator.serve.server import EmbeddedServer
from generator.validate.artifacts import version_dirs
from generator.validate.autocomplete import complete_model, to_json
from generator.validate.run import read_config, validate_repository

from ..conftest import free_ports, load_refusal, make_linear_onnx

pytestmark = pytest.mark.integration

SOUND = (
    'backend: "onnxruntime"\nmax_batch_size: 8\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    'output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
)

PYTHON = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "x", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.add_output({"name": "y", "data_type": "TYPE_FP32", "dims": [4]})
        auto_complete_model_config.set_max_batch_size(8)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("y", 2 * pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
            for r in requests
        ]
"""


def _onnx(config: str | None, batch_dim: int | str = "batch") -> Callable[[Path], None]:
    def write(model_dir: Path) -> None:
        make_linear_onnx(model_dir / "1" / "model.onnx", batch_dim=batch_dim)
        if config is not None:
            (model_dir / "config.pbtxt").write_text(config)

    return write


def _torchscript(config: str | None) -> Callable[[Path], None]:
    def write(model_dir: Path) -> None:
        import torch

        class Add(torch.nn.Module):
            def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return a + b

        (model_dir / "1").mkdir(parents=True)
        torch.jit.script(Add()).save(str(model_dir / "1" / "model.pt"))
        if config is not None:
            (model_dir / "config.pbtxt").write_text(config)

    return write


def _python(config: str | None) -> Callable[[Path], None]:
    def write(model_dir: Path) -> None:
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "1" / "model.py").write_text(PYTHON)
        if config is not None:
            (model_dir / "config.pbtxt").write_text(config)

    return write


@dataclass(frozen=True)
class Case:
    """One model: how to write it, and what both judges say (None: it loads)."""

    write: Callable[[Path], None]
    validate: str | None = None
    triton: str | None = None


NO_TYPE = 'input [ { name: "x" dims: [ 4 ] } ]\noutput [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
TS_OUTPUT = 'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'

LOADED = {
    "onnx_without_config": Case(_onnx(None)),
    "onnx_with_empty_config": Case(_onnx("")),
    "onnx_without_outputs": Case(
        _onnx(
            'platform: "onnxruntime_onnx"\nmax_batch_size: 8\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        )
    ),
    "onnx_without_batching": Case(_onnx('platform: "onnxruntime_onnx"\n', batch_dim=2)),
    "python_without_config": Case(_python(None)),
    "python_with_partial_tensors": Case(_python('backend: "python"\ninput [ { name: "x" } ]\n')),
}

REFUSED = {
    "onnx_tensor_without_data_type": Case(
        _onnx('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n' + NO_TYPE),
        validate="input 'x' has no data_type",
        triton="model input 'x' must specify 'data_type'",
    ),
    "onnx_fixed_batch_axis": Case(
        _onnx('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n', batch_dim=2),
        validate="model does not support batching while non-zero max_batch_size is specified",
        triton="model does not support batching while non-zero max_batch_size is specified",
    ),
    "onnx_preferred_size_before_auto_complete": Case(
        _onnx('platform: "onnxruntime_onnx"\ndynamic_batching { preferred_batch_size: [ 2 ] }\n'),
        validate="preferred_batch_size 2 exceeds max_batch_size 0: Triton checks config.pbtxt before auto-complete",
        triton="dynamic batching preferred size must be <= max batch size",
    ),
    "torchscript_without_inputs": Case(
        _torchscript('platform: "pytorch_libtorch"\n' + TS_OUTPUT),
        validate="configuration expects 0 inputs, model provides 2",
        triton="configuration expects 0 inputs, model provides 2",
    ),
    "torchscript_without_config": Case(
        _torchscript(None),
        validate="configuration expects 0 inputs, model provides 2",
        triton="configuration expects 0 inputs, model provides 2",
    ),
    "python_dims_conflict": Case(
        _python('backend: "python"\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] } ]\n'),
        validate="the model expects dims [4] but the model configuration specifies dims [5]",
        triton="the model expects dims [4] but the model configuration specifies dims [5]",
    ),
    "python_max_batch_size_conflict": Case(
        _python('backend: "python"\nmax_batch_size: 16\n'),
        validate="configuration specified max_batch_size 16, but in auto-complete-config function",
        triton="configuration specified max_batch_size 16, but in auto-complete-config function",
    ),
    "python_scheduler_conflict": Case(
        _python('backend: "python"\nsequence_batching { }\n'),
        validate="Configuration specified scheduling_choice as 'sequence_batching'",
        triton="Configuration specified scheduling_choice as 'sequence_batching'",
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, EmbeddedServer]]:
    repository = tmp_path_factory.mktemp("autocomplete") / "repository"
    _onnx(SOUND)(repository / "sound")
    with EmbeddedServer(repository, **free_ports(), exit_timeout=5) as server:
        yield repository, server


def _served_config(server: EmbeddedServer, model: str) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        return client.get_model_config(model, as_json=True)["config"]
    finally:
        client.close()


def _tensors(config: dict[str, Any], kind: str) -> list[tuple[str, str, list[int], list[int] | None]]:
    return [
        (
            t["name"],
            t.get("data_type", "TYPE_INVALID"),
            [int(d) for d in t.get("dims", [])],
            [int(d) for d in t["reshape"].get("shape", [])] if "reshape" in t else None,
        )
        for t in config.get(kind, [])
    ]


def _batching(config: dict[str, Any]) -> tuple[int, bool]:
    return int(config.get("max_batch_size", 0)), "dynamic_batching" in config


def _infer(server: EmbeddedServer, model: str, x: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor], client_timeout=30).as_numpy("y")
    finally:
        client.close()


@pytest.mark.parametrize("name", sorted(LOADED))
def test_what_validate_completes_triton_loads_with_the_same_config(
    served: tuple[Path, EmbeddedServer], name: str
) -> None:
    repository, server = served
    model_dir = repository / name
    LOADED[name].write(model_dir)
    report = validate_repository(repository)
    mine = [p for p in report.problems if p.model == name]
    assert all(p.severity == "info" for p in mine) and mine, [str(p) for p in mine]
    config, _ = read_config(model_dir)
    completed = to_json(complete_model(config, model_dir, version_dirs(model_dir)[0]).config)

    assert load_refusal(server, name) is None
    loaded = _served_config(server, name)
    for kind in ("input", "output"):
        assert _tensors(loaded, kind) == _tensors(completed, kind), kind
    assert _batching(loaded) == _batching(completed)
    y = _infer(server, name, np.ones((2, 4), dtype=np.float32))  # a batch of 2, or the fixed [2, 4]
    assert list(y.shape) == [2, _tensors(completed, "output")[0][2][-1]]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_validate_refuses_triton_refuses_for_the_same_reason(
    served: tuple[Path, EmbeddedServer], name: str
) -> None:
    repository, server = served
    case = REFUSED[name]
    case.write(repository / name)
    errors = [p.message for p in validate_repository(repository).errors if p.model == name]
    assert any(case.validate in e for e in errors), errors
    refusal = load_refusal(server, name)
    assert refusal is not None, f"Triton loaded {name}"
    assert case.triton in refusal, refusal


def test_a_config_less_onnx_model_serves_its_own_outputs(served: tuple[Path, EmbeddedServer]) -> None:
    repository, server = served
    weights, bias = make_linear_onnx(repository / "linear" / "1" / "model.onnx", seed=3)
    assert not [p for p in validate_repository(repository).errors if p.model == "linear"]
    assert load_refusal(server, "linear") is None
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(_infer(server, "linear", x), x @ weights + bias, rtol=1e-5, atol=1e-5)


PLAIN_STEP = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
"""
OVER_PLAIN = """platform: "ensemble"
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [ { model_name: "plain_step" model_version: -1
  input_map { key: "x" value: "X" } output_map { key: "y" value: "Y" } } ] }
"""


def test_an_ensemble_over_a_config_less_python_step_is_refused_by_both(
    served: tuple[Path, EmbeddedServer],
) -> None:
    """Without config.pbtxt and auto_complete_config a Python model loads with no tensors at all."""
    repository, server = served
    (repository / "plain_step" / "1").mkdir(parents=True)
    (repository / "plain_step" / "1" / "model.py").write_text(PLAIN_STEP)
    (repository / "over_plain" / "1").mkdir(parents=True)
    (repository / "over_plain" / "config.pbtxt").write_text(OVER_PLAIN)
    report = validate_repository(repository)
    assert not [p for p in report.errors if p.model == "plain_step"]
    errors = [p.message for p in report.errors if p.model == "over_plain"]
    assert any("'x' is not an input of model 'plain_step'" in e for e in errors), errors
    assert load_refusal(server, "plain_step") is None
    refusal = load_refusal(server, "over_plain")
    assert refusal is not None and "is mapping to non-existing input x in model plain_step" in refusal


def test_a_generated_repository_gets_no_auto_complete_finding(example_repo: Path) -> None:
    report = validate_repository(example_repo)
    assert report.ok and not report.infos, [str(p) for p in report.infos]
