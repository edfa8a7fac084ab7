"""Ensembles and Python models against the real embedded Triton: what validate passes, Triton serves;
each mistake validate finds, Triton refuses (or, where Triton loads it, fails the requests).

One server serves a hand-written repository (``tests/ensemble_repo.py``): two Python models, the
``pipeline`` ensemble over them and sound variants (a nested ensemble, a non-batching one, one with
reshaped I/O). Each mistake is then planted beside them as a new model and loaded through Triton's
model control (the server runs with ``--model-control-mode=explicit``), so one start covers every case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from generator.serve.server import EmbeddedServer
from generator.validate.run import validate_repository

from ..conftest import free_ports, load_refusal
from ..ensemble_repo import (
    ADD_SUB,
    CASES,
    F4,
    INPUTS,
    OUTPUTS,
    SCALE,
    STEPS,
    ensemble,
    expected,
    python_model,
    step,
    write_repository,
    write_scale_one,
)

pytestmark = pytest.mark.integration

REFUSED = sorted(name for name, case in CASES.items() if not case.at_inference)
FAILING = sorted(name for name, case in CASES.items() if case.at_inference)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, EmbeddedServer]]:
    repository = write_repository(tmp_path_factory.mktemp("ensembles") / "repository")
    pairs = {"OUT_SUM": "OUT_SUM", "OUT_DIFF": "OUT_DIFF"}
    ensemble(repository, "outer", INPUTS, OUTPUTS, [step("pipeline", {"A": "A", "B": "B"}, pairs)])
    ensemble(repository, "unbatched", INPUTS, OUTPUTS, STEPS, max_batch_size=0)
    ensemble(
        repository,
        "reshaped",
        [("P", "TYPE_FP32", [2, 2])],
        [("R", "TYPE_FP32", [2, 2])],
        [step("scale", {"x": "P"}, {"y": "R"})],
        reshape={"P": [4], "R": [4]},
    )
    report = validate_repository(repository)
    assert not report.problems, [str(p) for p in report.problems]
    with EmbeddedServer(repository, **free_ports(), exit_timeout=5) as server:
        yield repository, server


def _grpc_infer(server: EmbeddedServer, model: str, arrays: dict[str, np.ndarray]) -> grpcclient.InferResult:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        tensors = []
        for name, array in arrays.items():
            tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return client.infer(model, tensors, client_timeout=30)
    finally:
        client.close()


def _http_infer(server: EmbeddedServer, model: str, arrays: dict[str, np.ndarray]) -> httpclient.InferResult:
    client = httpclient.InferenceServerClient(server.endpoints.http)
    try:
        tensors = []
        for name, array in arrays.items():
            tensor = httpclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=False)
            tensors.append(tensor)
        return client.infer(model, tensors)
    finally:
        client.close()


def test_the_pipeline_serves_correct_outputs_over_http_and_grpc(served: tuple[Path, EmbeddedServer]) -> None:
    _, server = served
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((3, 4)).astype(np.float32)
    for model in ("pipeline", "outer"):
        for infer in (_grpc_infer, _http_infer):
            result = infer(server, model, {"A": a, "B": b})
            for name, want in expected(a, b).items():
                np.testing.assert_allclose(result.as_numpy(name), want, rtol=1e-6, err_msg=f"{model} {name}")
    # a non-batching ensemble over batching steps: Triton gives each step a batch of one
    result = _grpc_infer(server, "unbatched", {"A": a[0], "B": b[0]})
    np.testing.assert_allclose(result.as_numpy("OUT_DIFF"), 2 * (a[0] - b[0]), rtol=1e-6)
    # reshaped ensemble I/O: [2, 2] at the edge, [4] inside
    p = a.reshape(3, 2, 2)
    result = _http_infer(server, "reshaped", {"P": p})
    np.testing.assert_allclose(result.as_numpy("R"), 2 * p, rtol=1e-6)


def _validator_finds(repository: Path, name: str) -> None:
    case = CASES[name]
    problems = [p for p in validate_repository(repository).problems if p.model == name]
    assert any(
        p.severity == case.severity and p.message.startswith(case.path) and case.fragment in p.message
        for p in problems
    ), [str(p) for p in problems]


@pytest.mark.parametrize("name", REFUSED)
def test_what_validate_finds_triton_refuses(served: tuple[Path, EmbeddedServer], name: str) -> None:
    repository, server = served
    CASES[name].plant(repository, name)
    _validator_finds(repository, name)
    refusal = load_refusal(server, name)
    assert refusal is not None, f"Triton loaded {name}"
    assert CASES[name].triton in refusal, refusal


def _arrays(server: EmbeddedServer, model: str, batch: int) -> dict[str, np.ndarray]:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        config = client.get_model_config(model).config
    finally:
        client.close()
    return {
        tensor.name: np.ones([batch, *(d if d > 0 else 4 for d in tensor.dims)], dtype=np.float32)
        for tensor in config.input
    }


@pytest.mark.parametrize("name", FAILING)
def test_what_triton_loads_but_cannot_serve(served: tuple[Path, EmbeddedServer], name: str) -> None:
    repository, server = served
    CASES[name].plant(repository, name)
    _validator_finds(repository, name)
    assert load_refusal(server, name) is None
    with pytest.raises(InferenceServerException) as failure:
        _grpc_infer(server, name, _arrays(server, name, 2))
    assert CASES[name].triton in failure.value.message()


def test_a_step_that_takes_batch_size_one_serves_batches_of_one(served: tuple[Path, EmbeddedServer]) -> None:
    """The warning says requests of batch size 1 still work: Triton strips the batch axis for that step.

    The ensemble runs on step models of its own: the cases above send the shared ones requests they
    cannot serve, and what that does to their stubs is not what this test is about.
    """
    repository, server = served
    write_scale_one(repository)
    python_model(
        repository, "add_sub_fresh", ADD_SUB, [("a", *F4), ("b", *F4)], [("sum", *F4), ("diff", *F4)]
    )
    python_model(repository, "scale_fresh", SCALE, [("x", *F4)], [("y", *F4)])
    steps = [
        step("add_sub_fresh", {"a": "A", "b": "B"}, {"sum": "S", "diff": "D"}),
        step("scale_one", {"x": "S"}, {"y": "OUT_SUM"}),
        step("scale_fresh", {"x": "D"}, {"y": "OUT_DIFF"}),
    ]
    ensemble(repository, "batch_one_fresh", INPUTS, OUTPUTS, steps)
    assert load_refusal(server, "batch_one_fresh") is None
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    result = _grpc_infer(server, "batch_one_fresh", {"A": a, "B": a / 2})
    for name, want in expected(a, a / 2).items():
        np.testing.assert_allclose(result.as_numpy(name), want, rtol=1e-6, err_msg=name)
