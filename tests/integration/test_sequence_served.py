"""Stateful models built from a spec and served by the real embedded Triton with sequence batching and
implicit state: the example's digit GRU (Direct strategy, batched slots) and a running sum that reads the
START and CORRID controls (Oldest strategy). Sequences interleaved across client threads over HTTP and
gRPC answer as the torch modules run step by step in-process; Triton's own errors for a sequence without
START, a correlation ID reused while its sequence runs and a sequence that outlived its idle timeout
reach the client, and the server stays healthy after each."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from generator.build.run import build
from generator.core.repository import read_manifest
from generator.serve.server import EmbeddedServer

from ..conftest import free_ports
from ..unit.test_sequence import make_accumulator_onnx

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OUTPUTS = {"running_max": ["logits"], "running_sum": ["total", "seen_id"], "accumulator": ["y"]}
IDLE_SECONDS = 2.0
#: The running-sum model: its START control resets the sum, its CORRID control is echoed back.
RUNNING_SUM = """
import torch
from torch import nn


class RunningSum(nn.Module):
    def forward(self, x, start, corrid, total_in):
        total = torch.where(start == 1, torch.zeros_like(total_in), total_in) + x
        return total, corrid * 1, total


def build():
    return RunningSum()
"""
FACTORY = """
import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("sequence_example", {example!r})
sequence = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sequence)


def build():
    model = sequence.RunningMax()
    model.load_state_dict(torch.load(Path(__file__).with_name("weights.pt"), weights_only=True))
    return model.eval()
"""


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sequence_example", EXAMPLES / "sequence.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return _example()


@pytest.fixture(scope="module")
def trained(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """The example's GRU, trained once, and the spec directory whose factory loads its weights."""
    import torch

    root = tmp_path_factory.mktemp("sequence_spec")
    model = example.train()
    torch.save(model.state_dict(), root / "weights.pt")
    (root / "gru.py").write_text(FACTORY.format(example=str(EXAMPLES / "sequence.py")))
    (root / "running_sum.py").write_text(RUNNING_SUM)
    return model, root


@pytest.fixture(scope="module")
def repository(trained: tuple[object, Path]) -> Path:
    _, root = trained
    spec = {
        "repository": "model_repository",
        "defaults": {"dynamic_batching": {"max_queue_delay_microseconds": 100}},  # left out for sequences
        "models": [
            {
                "name": "running_max",
                "framework": "torch",
                "source": "gru.py:build",
                "max_batch_size": 8,
                "inputs": [{"name": "digit", "dtype": "INT64", "dims": [1]}],
                "outputs": [{"name": "logits", "dtype": "FP32", "dims": [10]}],
                "values": {"digit": {"min": 0, "max": 9}},
                "sequence_batching": {
                    "max_sequence_idle_microseconds": 60_000_000,
                    "max_queue_delay_microseconds": 2000,
                    "state": [{"input_name": "h_in", "output_name": "h_out", "dtype": "FP32", "dims": [16]}],
                },
            },
            {
                "name": "running_sum",
                "framework": "torch",
                "source": "running_sum.py:build",
                "max_batch_size": 4,
                "inputs": [{"name": "x", "dtype": "FP32", "dims": [1]}],
                "outputs": [
                    {"name": "total", "dtype": "FP32", "dims": [1]},
                    {"name": "seen_id", "dtype": "INT64", "dims": [1]},
                ],
                "sequence_batching": {
                    "strategy": "oldest",
                    "max_candidate_sequences": 4,
                    "preferred_batch_size": [2, 4],
                    "max_queue_delay_microseconds": 1000,
                    "max_sequence_idle_microseconds": int(IDLE_SECONDS * 1e6),
                    "controls": {"start": "START", "corrid": {"name": "CORRID", "dtype": "INT64"}},
                    "state": [
                        {
                            "input_name": "total_in",
                            "output_name": "total_out",
                            "dtype": "FP32",
                            "dims": [1],
                            "initial_state": {"data_file": "start.npy"},
                        }
                    ],
                },
            },
        ],
    }
    spec["models"].append(
        {
            "name": "accumulator",
            "framework": "onnx",
            "source": "accumulator.onnx",
            "max_batch_size": 0,
            "sequence_batching": {
                "state": [{"input_name": "h_in", "output_name": "h_out", "dtype": "FP32", "dims": [2]}]
            },
        }
    )
    make_accumulator_onnx(root / "accumulator.onnx", batching=False)
    np.save(root / "start.npy", np.array([100.0], dtype=np.float32))  # the sum starts at 100
    (root / "generator.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build(root / "generator.yaml", root / "model_repository")
    return root / "model_repository"


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(repository, **free_ports()) as embedded:
        yield embedded


def _step(
    server: EmbeddedServer, protocol: str, model: str, inputs: dict[str, np.ndarray], **sequence: object
) -> dict[str, np.ndarray]:
    """One request of a sequence (``sequence_id``, ``sequence_start``, ``sequence_end``); its outputs."""
    module = httpclient if protocol == "http" else grpcclient
    url = server.endpoints.http if protocol == "http" else server.endpoints.grpc
    client = module.InferenceServerClient(url)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = module.InferInput(
                name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32"
            )
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer(model, tensors, **sequence)
        outputs = OUTPUTS[model]
        return {name: result.as_numpy(name) for name in outputs}
    finally:
        client.close()


def _healthy(server: EmbeddedServer) -> bool:
    with httpclient.InferenceServerClient(server.endpoints.http) as client:
        return client.is_server_live() and client.is_server_ready() and client.is_model_ready("running_max")


def test_the_build_verified_the_whole_sequence(repository: Path) -> None:
    manifest = read_manifest(repository)
    onnx_source = manifest["models"]["accumulator"]["versions"]["1"]["parity"]["sequence"]
    assert onnx_source["steps"] == 8 and not onnx_source["compared"]  # run through, nothing to compare with
    for name in ("running_max", "running_sum"):
        sequence = manifest["models"][name]["versions"]["1"]["parity"]["sequence"]
        assert sequence["steps"] == 8 and sequence["batch_sizes"] == (
            [1, 8] if name == "running_max" else [1, 4]
        )
        assert sequence["compared"] and set(sequence["outputs"]) >= {
            "h_out" if name == "running_max" else "total_out"
        }
        assert all(entry["mismatched"] == 0 for entry in sequence["outputs"].values())
    assert (repository / "running_sum" / "initial_state" / "start.bin").read_bytes() == np.float32(
        100
    ).tobytes()
    assert not (repository / "running_max" / "initial_state").exists()  # zeros need no file


def test_interleaved_sequences_equal_the_model_run_step_by_step(
    server: EmbeddedServer, example: ModuleType, trained: tuple[object, Path]
) -> None:
    """Six client threads (three over HTTP, three over gRPC), two sequences each, steps interleaved."""
    model, _ = trained
    threads_count, per_thread = 6, 2
    rng = np.random.default_rng(7)
    sequences = {
        1000 + t * per_thread + s: rng.integers(0, 10, size=int(rng.integers(5, 11)))
        for t in range(threads_count)
        for s in range(per_thread)
    }
    served: dict[int, list[np.ndarray]] = {key: [] for key in sequences}
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_count)

    def client_thread(index: int) -> None:
        protocol = "http" if index % 2 == 0 else "grpc"
        mine = [key for key in sequences if (key - 1000) // per_thread == index]
        try:
            barrier.wait(timeout=60)
            longest = max(len(sequences[key]) for key in mine)
            for step in range(longest):  # this thread's sequences, one step of each in turn
                for key in mine:
                    digits = sequences[key]
                    if step < len(digits):
                        outputs = _step(
                            server,
                            protocol,
                            "running_max",
                            {"digit": np.array([[digits[step]]], dtype=np.int64)},
                            sequence_id=key,
                            sequence_start=step == 0,
                            sequence_end=step == len(digits) - 1,
                        )
                        served[key].append(outputs["logits"][0])
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, [str(e) for e in errors[:3]]
    for key, digits in sequences.items():
        expected = example.run_sequence(model, digits[None, :])[0]
        assert len(served[key]) == len(digits)
        np.testing.assert_allclose(np.stack(served[key]), expected, atol=1e-4, rtol=1e-4)
    assert _healthy(server)


def test_controls_and_the_initial_state_file_reach_the_model(server: EmbeddedServer) -> None:
    """The Oldest strategy's sequences: START resets the sum the model keeps, CORRID is each one's ID,
    and the state starts from the spec's data file (100)."""
    values = {7001: [1.0, 2.0, 3.0], 7002: [10.0, 20.0], 7003: [0.5, 0.5, 0.5, 0.5]}
    results: dict[int, list[dict[str, np.ndarray]]] = {key: [] for key in values}
    errors: list[BaseException] = []

    def run(key: int, protocol: str) -> None:
        try:
            for step, x in enumerate(values[key]):
                results[key].append(
                    _step(
                        server,
                        protocol,
                        "running_sum",
                        {"x": np.array([[x]], dtype=np.float32)},
                        sequence_id=key,
                        sequence_start=step == 0,
                        sequence_end=step == len(values[key]) - 1,
                    )
                )
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(key, p))
        for key, p in zip(values, ("http", "grpc", "http"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, [str(e) for e in errors[:3]]
    for key, xs in values.items():
        # START resets the sum inside the model, so the initial state (100) is replaced on step one.
        np.testing.assert_allclose([r["total"][0, 0] for r in results[key]], np.cumsum(xs), rtol=1e-6)
        assert [int(r["seen_id"][0, 0]) for r in results[key]] == [key] * len(xs)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_sequence_without_start_gets_tritons_error(server: EmbeddedServer, protocol: str) -> None:
    with pytest.raises(InferenceServerException, match="must specify the START flag on the first request"):
        _step(server, protocol, "running_max", {"digit": np.array([[3]], dtype=np.int64)}, sequence_id=8101)
    assert _healthy(server)
    outputs = _step(
        server,
        protocol,
        "running_max",
        {"digit": np.array([[3]], dtype=np.int64)},
        sequence_id=8101,
        sequence_start=True,
        sequence_end=True,
    )
    assert outputs["logits"].shape == (1, 10)


def test_a_correlation_id_reused_while_its_sequence_runs(server: EmbeddedServer) -> None:
    """Two clients start sequences under one ID: Triton ends the first at the second's START, so the first
    client's END closes the second's sequence, whose next request is refused without START."""
    digit = {"digit": np.array([[4]], dtype=np.int64)}
    _step(server, "http", "running_max", digit, sequence_id=8200, sequence_start=True)
    _step(server, "grpc", "running_max", digit, sequence_id=8200, sequence_start=True)
    _step(server, "http", "running_max", digit, sequence_id=8200, sequence_end=True)
    with pytest.raises(InferenceServerException, match=r"sequence 8200 .* must specify the START flag"):
        _step(server, "grpc", "running_max", digit, sequence_id=8200)
    assert _healthy(server)


def test_an_idle_expired_sequence_gets_tritons_error(server: EmbeddedServer) -> None:
    x = {"x": np.array([[1.0]], dtype=np.float32)}
    _step(server, "grpc", "running_sum", x, sequence_id=8300, sequence_start=True)
    time.sleep(IDLE_SECONDS * 3)  # past max_sequence_idle_microseconds: Triton releases the sequence
    with pytest.raises(InferenceServerException, match=r"sequence 8300 .* must specify the START flag"):
        _step(server, "grpc", "running_sum", x, sequence_id=8300)
    assert _healthy(server)
    # The ID starts afresh, from the initial state, once it sends START again.
    fresh = _step(server, "http", "running_sum", x, sequence_id=8300, sequence_start=True, sequence_end=True)
    assert fresh["total"][0, 0] == pytest.approx(1.0)


def test_an_onnx_source_without_batching_keeps_its_state(server: EmbeddedServer, repository: Path) -> None:
    """An ONNX file with its state as graph I/O, served with max_batch_size 0: each step equals the same
    file run step by step in-process with ONNX Runtime, the state fed back by hand."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(repository / "accumulator" / "1" / "model.onnx"))
    rng = np.random.default_rng(3)
    for key, protocol in ((9001, "http"), (9002, "grpc")):
        xs = rng.standard_normal((6, 2)).astype(np.float32)
        state = np.zeros(2, dtype=np.float32)
        for step, x in enumerate(xs):
            served = _step(
                server,
                protocol,
                "accumulator",
                {"x": x},
                sequence_id=key,
                sequence_start=step == 0,
                sequence_end=step == len(xs) - 1,
            )
            expected, state = session.run(["y", "h_out"], {"x": x, "h_in": state})
            np.testing.assert_allclose(served["y"], expected, rtol=1e-6)
