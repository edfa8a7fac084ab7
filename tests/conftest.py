"""Shared fixtures: tiny ONNX models made with onnx.helper, the example repository built once, and the
embedded Triton serving it (started once per session, always stopped)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pytest

if TYPE_CHECKING:
    from generator.serve.server import EmbeddedServer

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC = REPO_ROOT / "examples" / "generator.yaml"


def make_linear_onnx(
    path: Path,
    *,
    input_name: str = "x",
    output_name: str = "y",
    features: int = 4,
    classes: int = 3,
    batch_dim: int | str = "batch",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``y = x @ W + b`` as ONNX; return (W, b) so tests can compute the expected output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((features, classes)).astype(np.float32)
    bias = rng.standard_normal(classes).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], [output_name]),
        ],
        "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch_dim, features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch_dim, classes])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return weights, bias


def make_image_classifier_onnx(path: Path, size: tuple[int, int], classes: int = 4) -> np.ndarray:
    """Write a tiny image classifier as ONNX: ``pixel_values`` [batch, 3, H, W] -> the mean of each channel
    over the pixels -> ``logits = means @ W`` [batch, classes]; return W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((3, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["pixel_values"], ["means"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["means", "W"], ["logits"]),
        ],
        "image_classifier",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, *size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return weights


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m generator ARGS`` as a user runs it: a subprocess in ``cwd``, output captured, no colour."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def settle(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Re-read a value until ``done`` holds or ``timeout`` passes; return the last reading.

    Triton updates a request's statistics just after it sends the response, so a client that counts
    its responses can be a few milliseconds ahead of the server's counters.
    """
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


@pytest.fixture(scope="session")
def example_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled example built once into a session temp dir (read-only for tests: copy to modify)."""
    from generator.build.run import build

    repo = tmp_path_factory.mktemp("example") / "model_repository"
    build(EXAMPLE_SPEC, repo)
    return repo


@pytest.fixture
def example_repo_copy(example_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the example repository that a test may change."""
    target = tmp_path / "model_repository"
    shutil.copytree(example_repo, target)
    return target


def imported_modules(source: Path) -> set[str]:
    """The top-level packages a Python file imports anywhere in it (``numpy`` for ``import numpy.linalg``)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    return modules


def free_ports() -> dict[str, int]:
    """``http_port``, ``grpc_port`` and ``metrics_port`` keywords for EmbeddedServer, each a free port."""
    from generator.serve.launch import find_free_port

    return {"http_port": find_free_port(), "grpc_port": find_free_port(), "metrics_port": find_free_port()}


def load_refusal(server: EmbeddedServer, model: str) -> str | None:
    """Load ``model`` on an embedded server through model control; None when it loads, else Triton's error
    and the server's log since the attempt."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    offset = server.log_size()
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        client.load_model(model)
        return None
    except InferenceServerException as exc:
        with server.log_path.open("rb") as log:
            log.seek(offset)
            return f"{exc.message()}\n{log.read().decode('utf-8', 'replace')}"
    finally:
        client.close()


@pytest.fixture(scope="session")
def example_server(example_repo: Path) -> Iterator[object]:
    """The embedded tritonserver serving the example repository on free loopback ports."""
    from generator.serve.server import EmbeddedServer

    with EmbeddedServer(example_repo, **free_ports()) as server:
        yield server
