"""Optimization passes on the example digits CNN, exported from PyTorch: simplification, dynamic and static
INT8 quantization (calibrated on real digits) with the scheme chosen for this CPU, FP16, a budget no pass
can meet, and the optimized repository served by the real embedded Triton.

INT8 figures depend on the CPU, so the INT8 tests assert the gate's decision for the errors it measured
and that some INT8 scheme is kept for the example CNN (as on any x86-64 CPU), not one CPU's numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from generator.build.exporters.base import load_factory
from generator.build.optimize import PassRecord
from generator.build.run import BuildReport, build
from generator.build.runners import onnx_runner
from generator.core import cpu_isa
from generator.core.cpu_isa import CpuIsa
from generator.core.repository import MANIFEST
from generator.core.signature import read_onnx_signature
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.validate.run import validate_repository

from ..conftest import EXAMPLE_SPEC
from ..unit.test_optimize import assert_int8_gate_decided_right

pytestmark = pytest.mark.integration

DIGITS = EXAMPLE_SPEC.parent / "digits.py"
MODELS = {
    "cnn_plain": None,
    "cnn_simplify": "{eval_data: eval.npz, budget: {atol: 1.0e-4, rtol: 1.0e-3}}",
    "cnn_dynamic": "{quantize: dynamic, eval_data: eval.npz, budget: {atol: 0.5, rtol: 0.1, min_top1_agreement: 0.99}}",
    "cnn_static": "{quantize: static, per_channel: true, calibration_data: calib.npz, eval_data: eval.npz, "
    "budget: {atol: 1.5, rtol: 0.1, min_top1_agreement: 0.99}}",
    "cnn_fp16": "{fp16: true, eval_data: eval.npz, budget: {atol: 0.02, rtol: 0.01, min_top1_agreement: 1.0}}",
    "cnn_strict": "{quantize: dynamic, budget: {atol: 0, rtol: 0}}",
}


def _spec_text() -> str:
    lines = ["models:"]
    for name, optimize in MODELS.items():
        lines += [
            f"  - name: {name}",
            "    framework: torch",
            f"    source: {DIGITS}:build",
            "    max_batch_size: 64",
            "    instance_group: {count: 1}",
            "    inputs:  [{name: image, dtype: FP32, dims: [1, 8, 8]}]",
            "    outputs: [{name: logits, dtype: FP32, dims: [10]}]",
        ]
        if optimize:
            lines.append(f"    optimize: {optimize}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, ...]:
    """(train images, held-out images, train labels, held-out labels) of the 8x8 digits."""
    return load_factory(DIGITS, "load_data", "tests")()


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, ...]
) -> tuple[Path, BuildReport]:
    """Every variant built once: calibration on the training digits, the gate on the held-out ones."""
    work = tmp_path_factory.mktemp("optimize")
    x_train, x_test, _, _ = digits
    np.savez(work / "calib.npz", image=x_train)
    np.savez(work / "eval.npz", image=x_test)
    (work / "spec.yaml").write_text(_spec_text())
    report = build(work / "spec.yaml", work / "repo")
    return work, report


def _entry(repo: Path, name: str) -> dict:
    manifest = json.loads((repo / MANIFEST).read_text())
    return manifest["models"][name]["versions"]["1"]


def _model(repo: Path, name: str) -> Path:
    return repo / name / "1" / "model.onnx"


def _accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    logits = onnx_runner(path)({"image": images})["logits"]
    return float((logits.argmax(1) == labels).mean())


def _ops(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_the_optimized_repository_is_valid(built: tuple[Path, BuildReport]) -> None:
    work, report = built
    assert validate_repository(work / "repo").ok
    assert [m.status for m in report.models] == ["exported"] * len(MODELS)
    assert _entry(work / "repo", "cnn_plain")["optimize"] is None
    for name in MODELS:
        assert read_onnx_signature(_model(work / "repo", name)) == read_onnx_signature(
            _model(work / "repo", "cnn_plain")
        )


def test_simplify_keeps_parity(built: tuple[Path, BuildReport], digits: tuple[np.ndarray, ...]) -> None:
    work, _ = built
    record = _entry(work / "repo", "cnn_simplify")["optimize"]
    assert record["kept"] == ["simplify"] and record["reference"] == "source framework"
    assert record["samples"] == "eval_data eval.npz (450 samples)"
    (simplify,) = record["passes"]
    assert simplify["max_abs_error"] < 1e-4 and simplify["top1_agreement"] == 1.0
    assert simplify["bytes_after"] < simplify["bytes_before"]
    _, x_test, _, y_test = digits
    plain = _accuracy(_model(work / "repo", "cnn_plain"), x_test, y_test)
    assert _accuracy(_model(work / "repo", "cnn_simplify"), x_test, y_test) == plain


def test_dynamic_quantization_shrinks_the_model_within_budget(
    built: tuple[Path, BuildReport], digits: tuple[np.ndarray, ...]
) -> None:
    work, _ = built
    record = _entry(work / "repo", "cnn_dynamic")["optimize"]
    assert_int8_gate_decided_right(PassRecord(**record["passes"][1]), record["budget"], "dynamic")
    assert record["kept"] == ["simplify", "quantize dynamic"], record["warnings"]
    served = _model(work / "repo", "cnn_dynamic")
    assert served.stat().st_size < 0.5 * record["bytes_before"]
    assert record["bytes_after"] == served.stat().st_size
    assert "DynamicQuantizeLinear" in _ops(served)
    _, x_test, _, y_test = digits
    plain = _accuracy(_model(work / "repo", "cnn_plain"), x_test, y_test)
    quantized = _accuracy(served, x_test, y_test)
    assert quantized >= plain - 0.01, f"held-out accuracy {quantized:.4f} vs {plain:.4f} unoptimized"


def test_static_quantization_is_calibrated_on_real_digits(
    built: tuple[Path, BuildReport], digits: tuple[np.ndarray, ...]
) -> None:
    work, _ = built
    record = _entry(work / "repo", "cnn_static")["optimize"]
    assert_int8_gate_decided_right(PassRecord(**record["passes"][1]), record["budget"], "static")
    assert record["kept"] == ["simplify", "quantize static"], record["warnings"]
    served = _model(work / "repo", "cnn_static")
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(served)
    assert served.stat().st_size < 0.5 * record["bytes_before"]
    _, x_test, _, y_test = digits
    plain = _accuracy(_model(work / "repo", "cnn_plain"), x_test, y_test)
    quantized = _accuracy(served, x_test, y_test)
    assert quantized >= plain - 0.01, f"held-out accuracy {quantized:.4f} vs {plain:.4f} unoptimized"


def test_fp16_halves_the_weights_and_keeps_fp32_io(built: tuple[Path, BuildReport]) -> None:
    import onnx

    work, _ = built
    record = _entry(work / "repo", "cnn_fp16")["optimize"]
    assert record["kept"] == ["simplify", "fp16"], record["warnings"]
    assert record["passes"][1]["max_abs_error"] < 0.02
    model = onnx.load(str(_model(work / "repo", "cnn_fp16")))
    kinds = {t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds
    assert _entry(work / "repo", "cnn_fp16")["signature"]["inputs"][0]["dtype"] == "FP32"


def test_an_impossible_budget_ships_the_unoptimized_model_with_a_warning(
    built: tuple[Path, BuildReport],
) -> None:
    work, report = built
    record = _entry(work / "repo", "cnn_strict")["optimize"]
    assert record["kept"] == [] and [p["kept"] for p in record["passes"]] == [False, False]
    assert record["bytes_after"] == record["bytes_before"]
    assert _model(work / "repo", "cnn_strict").stat().st_size == record["bytes_before"]
    lines = [w for w in report.warnings if w.startswith("cnn_strict: ")]
    assert len(lines) == 2 and lines == record["warnings"]
    quantize = record["passes"][1]
    assert_int8_gate_decided_right(PassRecord(**quantize), record["budget"], "dynamic")
    assert len(quantize["tries"]) == 2  # every scheme for this CPU, each measured and over budget
    assert (
        lines[1]
        == "cnn_strict: quantize dynamic rejected: "
        + "; ".join(f"{t['scheme']}: {t['reason']}" for t in quantize["tries"])
        + "; serving the unoptimized model"
    )
    assert all(" values over budget atol 0 + rtol 0*|ref|" in t["reason"] for t in quantize["tries"])
    assert all(not w.startswith(("cnn_dynamic", "cnn_static", "cnn_fp16")) for w in report.warnings)


def test_validate_names_an_int8_model_checked_on_a_cpu_where_its_kernels_do_not_saturate(
    built: tuple[Path, BuildReport], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, _ = built
    repo = tmp_path / "repo"
    shutil.copytree(work / "repo", repo)
    manifest = json.loads((repo / MANIFEST).read_text())
    recorded = {"cnn_dynamic": "U8S8", "cnn_static": "U8U8"}  # as a VNNI machine's build would have
    for name, scheme in recorded.items():
        quantize = manifest["models"][name]["versions"]["1"]["optimize"]["passes"][1]
        quantize.update(scheme=scheme, isa="x86-vnni")
    (repo / MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(cpu_isa, "detect", lambda: CpuIsa("x86_64", frozenset({"avx2"})))
    report = validate_repository(repo)
    assert report.ok
    assert [(w.model, w.message) for w in report.warnings] == [
        (
            "cnn_dynamic",
            "version 1: INT8 U8S8 was checked on an x86-vnni CPU; this CPU is x86-avx2 (no VNNI), where U8S8 "
            "kernels can saturate: rebuild here to re-run the accuracy gate (it picks U8U8 or 7-bit weights)",
        )
    ]
    monkeypatch.setattr(cpu_isa, "detect", lambda: CpuIsa("x86_64", frozenset({"avx2", "avx_vnni"})))
    assert validate_repository(repo).warnings == []


def test_a_rebuild_reuses_the_optimized_models_and_repeats_the_warnings(
    built: tuple[Path, BuildReport],
) -> None:
    work, first = built
    before = {name: _model(work / "repo", name).read_bytes() for name in MODELS}
    again = build(work / "spec.yaml", work / "repo")
    assert [m.status for m in again.models] == ["reused"] * len(MODELS)
    assert again.warnings == first.warnings
    assert {name: _model(work / "repo", name).read_bytes() for name in MODELS} == before


def test_the_embedded_triton_serves_every_optimized_model(
    built: tuple[Path, BuildReport], digits: tuple[np.ndarray, ...]
) -> None:
    work, _ = built
    _, x_test, _, y_test = digits
    ports = {"http_port": find_free_port(), "grpc_port": find_free_port(), "metrics_port": find_free_port()}
    with (
        EmbeddedServer(work / "repo", **ports) as server,
        httpclient.InferenceServerClient(server.endpoints.http) as client,
    ):
        for name in MODELS:
            local = onnx_runner(_model(work / "repo", name))
            served = []
            for start in range(0, len(x_test), 64):
                batch = x_test[start : start + 64]
                tensor = httpclient.InferInput("image", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch, binary_data=True)
                answer = client.infer(name, [tensor], outputs=[httpclient.InferRequestedOutput("logits")])
                served.append(answer.as_numpy("logits"))
                # Batch by batch: dynamic quantization scales activations over the whole batch it runs.
                want = local({"image": batch})["logits"]
                np.testing.assert_allclose(served[-1], want, atol=1e-4, rtol=1e-4, err_msg=name)
            assert (np.concatenate(served).argmax(1) == y_test).mean() > 0.95, name
