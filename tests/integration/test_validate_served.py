"""validate against the real embedded Triton: what validate passes, Triton serves; what it refuses,
Triton refuses too.

Each test writes a small repository, validates it, then starts the real ``tritonserver`` on it and
either infers with ``tritonclient`` or watches the start fail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from generator.core.errors import ServerError
from generator.serve.server import EmbeddedServer
from generator.validate.run import validate_repository

from ..conftest import free_ports, make_linear_onnx

pytestmark = pytest.mark.integration

CONFIG = """name: "{name}"
{serving}
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""
ONNX_PLATFORM = 'platform: "onnxruntime_onnx"'
WARMUP = (
    'model_warmup [ {{ name: "w" batch_size: 2 inputs {{ key: "x" '
    "value: {{ data_type: TYPE_FP32 dims: {dims} zero_data: true }} }} }} ]\n"
)

#: Backend parameters with values the ONNX Runtime backend reads, a user's own one beside them.
THREADS = "".join(
    f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    for key, value in [
        ("intra_op_thread_count", "1"),
        ("execution_mode", "0"),
        ("enable_mem_arena", "ON"),
        ("team", "x"),
    ]
)


def write_model(repository: Path, name: str, config: bytes, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write ``name``/1/model.onnx (y = x @ W + b, x [-1, 4] -> y [-1, 3]) and its config; return (W, b)."""
    weights = make_linear_onnx(repository / name / "1" / "model.onnx", seed=seed)
    (repository / name / "config.pbtxt").write_bytes(config)
    return weights


def config(name: str, serving: str = ONNX_PLATFORM, extra: str = "") -> bytes:
    return (CONFIG.format(name=name, serving=serving) + extra).encode()


def test_what_validate_passes_triton_serves(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    models = {
        "backend_only": write_model(
            repository, "backend_only", config("backend_only", 'backend: "onnxruntime"'), 1
        ),
        "latin1_comment": write_model(
            repository,
            "latin1_comment",
            b"# r\xe9sum\xe9: \xff\xfe not UTF-8\n" + config("latin1_comment"),
            2,
        ),
        "warmed_up": write_model(
            repository, "warmed_up", config("warmed_up", extra=WARMUP.format(dims="[ 4 ]")), 3
        ),
        "tuned_threads": write_model(repository, "tuned_threads", config("tuned_threads", extra=THREADS), 4),
    }
    (repository / "README.md").write_text("plain files in the root are ignored\n")
    report = validate_repository(repository)
    assert report.ok and not report.problems, [str(p) for p in report.problems]
    assert report.models == sorted(models)

    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 10.0
    with EmbeddedServer(repository, **free_ports()) as server:
        client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        try:
            for name, (weights, bias) in models.items():
                assert client.is_model_ready(name)
                tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                result = client.infer(name, [tensor]).as_numpy("y")
                np.testing.assert_allclose(result, x @ weights + bias, rtol=1e-5, atol=1e-5)
        finally:
            client.close()


def _plant_git(repository: Path) -> None:
    (repository / ".git" / "objects").mkdir(parents=True)


def _plant_warmup_dims(repository: Path) -> None:
    (repository / "lin" / "config.pbtxt").write_bytes(config("lin", extra=WARMUP.format(dims="[ 5 ]")))


def _plant_missing_version(repository: Path) -> None:
    policy = "version_policy { specific { versions: [ 2 ] } }\n"
    (repository / "lin" / "config.pbtxt").write_bytes(config("lin", extra=policy))


def _plant_config_directory(repository: Path) -> None:
    (repository / "lin" / "config.pbtxt").unlink()
    (repository / "lin" / "config.pbtxt").mkdir()


def _plant_dangling_link(repository: Path) -> None:
    (repository / "old_model").symlink_to("removed_model")


def _plant_zero_latest(repository: Path) -> None:
    policy = "version_policy { latest { num_versions: 0 } }\n"
    (repository / "lin" / "config.pbtxt").write_bytes(config("lin", extra=policy))


def _plant_thread_count(repository: Path) -> None:
    parameter = 'parameters { key: "intra_op_thread_count" value: { string_value: "x" } }\n'
    (repository / "lin" / "config.pbtxt").write_bytes(config("lin", extra=parameter))


REFUSED: dict[str, tuple[Callable[[Path], None], str]] = {
    "a .git directory in the root": (_plant_git, "is not a model (a hidden directory)"),
    "warm-up dims that disagree with the input": (
        _plant_warmup_dims,
        "dims [5] do not fit the input's dims [4]",
    ),
    "a specific version with no directory": (_plant_missing_version, "version_policy names version(s) 2"),
    "config.pbtxt that is a directory": (_plant_config_directory, "config.pbtxt is a directory"),
    "a dangling symlink in the root": (_plant_dangling_link, "is a broken symbolic link"),
    "latest with num_versions 0": (_plant_zero_latest, "num_versions 0"),
    "a thread count that is no number": (_plant_thread_count, "parameters 'intra_op_thread_count'"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_validate_refuses_triton_refuses(tmp_path: Path, case: str) -> None:
    plant, expected = REFUSED[case]
    repository = tmp_path / "repository"
    write_model(repository, "lin", config("lin"))
    plant(repository)
    errors = [str(p) for p in validate_repository(repository).errors]
    assert any(expected in e for e in errors), errors

    server = EmbeddedServer(repository, **free_ports(), startup_timeout=60)
    try:
        with pytest.raises(ServerError, match="Triton did not start"):
            server.start()
    finally:
        server.stop()
