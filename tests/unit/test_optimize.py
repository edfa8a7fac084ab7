"""The optimize step on tiny onnx.helper models: settings validation, sample loading, the accuracy gate,
what each pass ships (or, over budget, does not), and the INT8 scheme chosen for this CPU.

INT8 figures depend on the CPU (x86-64 without VNNI saturates some kernels), so the INT8 tests assert
that the gate decided right for the errors it measured, never one CPU's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generator.build import optimize
from generator.build.exporters.base import ExportContext, ExportResult
from generator.build.optimize import PassRecord, judge, optimize_model, read_npz_samples
from generator.build.parity import OutputParity
from generator.build.run import cache_key
from generator.core import cpu_isa
from generator.core.cpu_isa import CpuIsa, int8_schemes
from generator.core.errors import SpecError
from generator.core.manifest import Manifest, int8_portability_warnings
from generator.core.signature import Signature, TensorInfo, read_onnx_signature
from generator.spec.models import Budget, json_schema, parse_spec

from ..conftest import make_linear_onnx

FEATURES, CLASSES = 16, 5


def _spec(optimize_settings: object, **model: object) -> object:
    entry = {"name": "lin", "framework": "onnx", "source": "lin.onnx", "optimize": optimize_settings}
    return parse_spec({"models": [entry | model]}).models[0]


def _export(tmp_path: Path, seed: int = 0) -> ExportResult:
    """A linear model 'exported' into a version directory, as the ONNX exporter leaves it."""
    version_dir = tmp_path / "repo" / "lin" / "1"
    make_linear_onnx(version_dir / "model.onnx", features=FEATURES, classes=CLASSES, seed=seed)
    path = version_dir / "model.onnx"
    return ExportResult([path], "onnxruntime_onnx", read_onnx_signature(path))


def _samples(path: Path, count: int = 200, seed: int = 1) -> np.ndarray:
    data = np.random.default_rng(seed).uniform(-1, 1, (count, FEATURES)).astype(np.float32)
    np.savez(path, x=data)
    return data


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    from generator.build.runners import onnx_runner

    return onnx_runner(path)({"x": x})["y"]


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"quantize": "static"}, "optimize: quantize static needs calibration_data"),
        ({"quantize": "dynamic", "fp16": True}, "quantize dynamic and fp16 are alternatives; keep one"),
        ({"quantize": "int4"}, "optimize.quantize: Input should be 'none', 'dynamic' or 'static'"),
        ({"simplfy": True}, "optimize.simplfy: unknown field; did you mean 'simplify'?"),
        ({"budget": {"min_top1_agreement": 1.5}}, "optimize.budget.min_top1_agreement: must be at most 1"),
        ({"budget": {"atol": -1}}, "optimize.budget.atol: must be at least 0"),
        ("yes", "optimize: must be a mapping of settings, or true/false"),
    ],
)
def test_bad_settings_are_one_line_errors_with_the_field_path(settings: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        _spec(settings)
    assert len(caught.value.problems) == 1 and message in caught.value.problems[0]


def test_optimize_on_a_tensorrt_target_is_an_error_naming_the_fix() -> None:
    with pytest.raises(SpecError, match=r"models\[0\]: optimize applies to format onnx only, not tensorrt; "):
        _spec({"quantize": "dynamic"}, format="tensorrt", framework="torch", source="m.py:build")


def test_defaults_merge_and_false_switches_optimization_off() -> None:
    spec = parse_spec(
        {
            "defaults": {"optimize": {"quantize": "dynamic", "budget": {"atol": 0.5}}},
            "models": [
                {"name": "a", "framework": "onnx", "source": "a.onnx", "optimize": {"budget": {"rtol": 0.1}}},
                {
                    "name": "b",
                    "framework": "torch",
                    "source": "m.py:f",
                    "format": "tensorrt",
                    "optimize": False,
                },
                {"name": "c", "framework": "onnx", "source": "c.onnx", "optimize": True},
                {"name": "d", "framework": "onnx", "source": "d.onnx", "optimize": {"quantize": None}},
            ],
        }
    )
    a, b, c, d = spec.models
    assert a.optimize.passes == ["simplify", "quantize dynamic"]
    assert (a.optimize.budget.atol, a.optimize.budget.rtol) == (0.5, 0.1)
    assert b.optimize is False
    assert c.optimize.passes == ["simplify"]  # `true` means the defaults of the section: simplify only
    assert d.optimize.passes == ["simplify"]


def test_the_json_schema_describes_the_optimize_settings() -> None:
    defs = json_schema()["$defs"]
    assert "calibration_data" in defs["Optimize"]["properties"]
    assert "QDQ" in defs["Optimize"]["properties"]["quantize"]["description"]
    assert "argmax" in defs["Budget"]["properties"]["min_top1_agreement"]["description"]


def test_calibration_and_eval_data_are_in_the_cache_key(tmp_path: Path) -> None:
    make_linear_onnx(tmp_path / "lin.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 4), np.float32))
    model = _spec({"quantize": "static", "calibration_data": "calib.npz"})
    context = ExportContext(spec_dir=tmp_path)
    before = cache_key(model, tmp_path / "lin.onnx", {}, context)
    assert cache_key(model, tmp_path / "lin.onnx", {}, context) == before
    np.savez(tmp_path / "calib.npz", x=np.ones((4, 4), np.float32))
    assert cache_key(model, tmp_path / "lin.onnx", {}, context) != before
    other = _spec({"quantize": "dynamic", "calibration_data": "calib.npz"})
    assert cache_key(other, tmp_path / "lin.onnx", {}, context) != before


def test_an_int8_model_is_built_again_on_another_class_of_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_linear_onnx(tmp_path / "lin.onnx")
    context = ExportContext(spec_dir=tmp_path)
    quantized, simplified = _spec({"quantize": "dynamic"}), _spec({})
    keys = {}
    for isa in (AVX2, VNNI):
        monkeypatch.setattr(cpu_isa, "detect", lambda isa=isa: isa)
        keys[isa.int8_class] = [
            cache_key(m, tmp_path / "lin.onnx", {}, context) for m in (quantized, simplified)
        ]
    assert keys["x86-avx2"][0] != keys["x86-vnni"][0]  # quantized and gated for the CPU at hand
    assert keys["x86-avx2"][1] == keys["x86-vnni"][1]  # no INT8: the same model anywhere


# --- samples --------------------------------------------------------------------------------------

SIGNATURE = Signature((TensorInfo("x", "FP32", (-1, 4)),), (TensorInfo("y", "FP32", (-1, 3)),))


def test_samples_are_cast_and_split_into_batches(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.arange(40, dtype=np.float64).reshape(10, 4), extra=np.zeros(3))
    batches = read_npz_samples(tmp_path / "s.npz", SIGNATURE, 4, "m", "eval_data")
    assert [b["x"].shape for b in batches] == [(4, 4), (4, 4), (2, 4)]
    assert batches[0]["x"].dtype == np.float32
    # Without a batch axis each sample is the model's whole input, fed one at a time.
    np.savez(tmp_path / "fixed.npz", x=np.zeros((10, 1, 4), np.float32))
    fixed = Signature((TensorInfo("x", "FP32", (1, 4)),), (TensorInfo("y", "FP32", (1, 3)),))
    single = read_npz_samples(tmp_path / "fixed.npz", fixed, None, "m", "eval_data")
    assert len(single) == 10 and single[0]["x"].shape == (1, 4)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (None, r"optimize.calibration_data .*s.npz not found; fix the path"),
        ({"pixels": np.zeros((2, 4))}, r"has no array for input\(s\) x \(it has pixels\); key the arrays"),
        ({"x": np.zeros((2, 5))}, r"array 'x' holds 2 samples of shape \[5\] but the model takes \[4\]"),
        ({"x": np.zeros(4)}, r"array 'x' holds 4 samples of shape \[\] but the model takes \[4\]"),
    ],
)
def test_bad_sample_files_are_spec_errors(tmp_path: Path, arrays: dict | None, message: str) -> None:
    if arrays is not None:
        np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(SpecError, match=message):
        read_npz_samples(tmp_path / "s.npz", SIGNATURE, 8, "m", "calibration_data")


def test_a_file_that_is_not_npz_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "s.npz").write_text("not numpy")
    with pytest.raises(SpecError, match=r"is not a readable .npz .*; write it with numpy.savez"):
        read_npz_samples(tmp_path / "s.npz", SIGNATURE, 8, "m", "eval_data")


# --- the gate -------------------------------------------------------------------------------------


def _parity(abs_error: float, mismatched: int) -> OutputParity:
    return OutputParity("y", 8, abs_error, abs_error * 10, mismatched, 80)


def test_within_budget_is_kept() -> None:
    record = judge(PassRecord("simplify", False, 100), [_parity(1e-6, 0)], (8, 8), Budget())
    assert record.kept and record.reason is None
    assert (record.max_abs_error, record.mismatched, record.total, record.top1_agreement) == (
        1e-6,
        0,
        80,
        1.0,
    )


def test_over_budget_names_the_figures_and_the_budget() -> None:
    budget = Budget(atol=0.01, rtol=0.0)
    record = judge(
        PassRecord("quantize dynamic", False, 100), [_parity(0.31, 12), _parity(0.1, 3)], None, budget
    )
    assert not record.kept
    assert record.reason == (
        "max abs error 0.31 (max rel error 3.1): 15 of 160 values over budget atol 0.01 + rtol 0*|ref|"
    )


def test_top1_agreement_is_an_extra_gate() -> None:
    budget = Budget(atol=1.0, rtol=0.0, min_top1_agreement=0.99)
    record = judge(PassRecord("fp16", False, 100), [_parity(0.2, 0)], (97, 100), budget)
    assert not record.kept and record.reason == "top-1 agreement 0.9700 < budget min_top1_agreement 0.99"
    no_classes = judge(PassRecord("fp16", False, 100), [_parity(0.2, 0)], None, budget)
    assert no_classes.kept and no_classes.top1_agreement is None


# --- the passes on a real (tiny) model ------------------------------------------------------------


def test_no_passes_means_no_report(tmp_path: Path) -> None:
    result = _export(tmp_path)
    assert optimize_model(_spec({"simplify": False}), result, 8, tmp_path) is None


def test_simplify_is_exact_and_kept(tmp_path: Path) -> None:
    result = _export(tmp_path)
    x = _samples(tmp_path / "eval.npz")
    before = _run(result.model_file, x)
    report = optimize_model(
        _spec({"eval_data": "eval.npz", "budget": {"atol": 0, "rtol": 0}}), result, 8, tmp_path
    )
    assert report.kept == ["simplify"] and not report.warnings
    record = report.passes[0]
    assert record.max_abs_error == 0.0 and record.total == 200 * CLASSES and record.top1_agreement == 1.0
    assert report.reference == "unoptimized ONNX" and report.samples == "eval_data eval.npz (200 samples)"
    np.testing.assert_array_equal(_run(result.model_file, x), before)
    json.dumps(report.to_dict())  # plain data for the manifest


def test_over_budget_ships_the_unoptimized_model_and_says_so(tmp_path: Path) -> None:
    result = _export(tmp_path)
    original = result.model_file.read_bytes()
    settings = {"simplify": False, "fp16": True, "budget": {"atol": 0, "rtol": 0}}
    report = optimize_model(_spec(settings), result, 8, tmp_path)
    assert result.model_file.read_bytes() == original and report.kept == []
    (record,) = report.passes
    assert not record.kept and record.mismatched > 0 and record.bytes_after > 0
    (warning,) = report.warnings
    assert warning.startswith("lin: fp16 rejected: max abs error ")
    assert warning.endswith("values over budget atol 0 + rtol 0*|ref|; serving the unoptimized model")
    assert report.samples == "seeded random inputs (seed 0; batch 1, 8)"


AVX2 = CpuIsa("x86_64", frozenset({"avx2"}))
AVX512 = CpuIsa("x86_64", frozenset({"avx2", "avx512f", "avx512bw"}))
VNNI = CpuIsa("x86_64", frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"}))


def assert_int8_gate_decided_right(record: PassRecord, budget: dict, mode: str) -> None:
    """Each INT8 try is kept exactly when its measured figures are within budget; the first kept ends it;
    a rejection names the figure measured; the record says which CPU class and scheme it holds."""
    isa = cpu_isa.detect()
    assert record.isa == isa.int8_class and record.cpu_features == sorted(isa.features)
    schemes = [s.name for s in int8_schemes(mode, isa.int8_class)]
    tries = record.tries
    assert [t["scheme"] for t in tries] == schemes[: len(tries)] and tries[-1]["scheme"] == record.scheme
    for attempt in tries:
        within = attempt["mismatched"] == 0 and (
            budget.get("min_top1_agreement") is None
            or attempt["top1_agreement"] >= budget["min_top1_agreement"]
        )
        assert attempt["kept"] == within, attempt
        if attempt["mismatched"]:
            assert f"max abs error {attempt['max_abs_error']:.3g} " in attempt["reason"]
            assert f"{attempt['mismatched']} of {attempt['total']} values over budget" in attempt["reason"]
    assert [t["kept"] for t in tries[:-1]] == [False] * (len(tries) - 1)  # the first kept one ends it
    assert record.kept == tries[-1]["kept"] and record.max_abs_error == tries[-1]["max_abs_error"]


def test_dynamic_quantization_shrinks_the_model_and_keeps_its_signature(tmp_path: Path) -> None:
    import onnx

    result = _export(tmp_path)
    x = _samples(tmp_path / "eval.npz")
    reference = _run(result.model_file, x)
    budget = {"atol": 0.5, "rtol": 0.1}
    report = optimize_model(
        _spec({"quantize": "dynamic", "eval_data": "eval.npz", "budget": budget}), result, 8, tmp_path
    )
    quantize = report.passes[1]
    assert_int8_gate_decided_right(quantize, budget, "dynamic")
    # Some scheme for this CPU is within this budget on any x86-64 CPU (U8U8 and 7-bit weights cannot
    # saturate); with U8S8 alone, x86-64 without VNNI measured max abs error 2.79.
    assert report.kept == ["simplify", "quantize dynamic"], report.warnings
    assert read_onnx_signature(result.model_file) == result.signature
    ops = {node.op_type for node in onnx.load(str(result.model_file)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    np.testing.assert_allclose(_run(result.model_file, x), reference, atol=0.5, rtol=0.1)
    json.dumps(report.to_dict())


def test_static_quantization_is_qdq_calibrated_on_the_samples(tmp_path: Path) -> None:
    import onnx

    result = _export(tmp_path)
    x = _samples(tmp_path / "calib.npz", seed=2)
    budget = {"atol": 0.5, "rtol": 0.1, "min_top1_agreement": 0.9}
    settings = {"quantize": "static", "calibration_data": "calib.npz", "budget": budget}
    reference = _run(result.model_file, x)
    report = optimize_model(_spec(settings), result, 8, tmp_path)
    assert_int8_gate_decided_right(report.passes[1], budget, "static")
    assert report.kept == ["simplify", "quantize static"], report.warnings
    assert report.samples == "calibration_data calib.npz (200 samples)"  # no eval_data: judged on these
    ops = {node.op_type for node in onnx.load(str(result.model_file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    served = _run(result.model_file, x)
    assert (served.argmax(1) == reference.argmax(1)).mean() >= 0.9


def _weight_types(path: Path) -> set[int]:
    import onnx

    model = onnx.load(str(path))
    return {t.data_type for t in model.graph.initializer if t.name.endswith("_quantized")}


@pytest.mark.parametrize(("isa", "weights"), [(AVX2, "UINT8"), (VNNI, "INT8")])
def test_the_first_scheme_for_the_cpu_is_what_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isa: CpuIsa, weights: str
) -> None:
    import onnx

    monkeypatch.setattr(cpu_isa, "detect", lambda: isa)
    result = _export(tmp_path)
    settings = {"simplify": False, "quantize": "dynamic", "budget": {"atol": 1, "rtol": 1}}
    (record,) = optimize_model(_spec(settings), result, 8, tmp_path).passes
    assert record.kept and record.isa == isa.int8_class
    assert record.scheme == int8_schemes("dynamic", isa.int8_class)[0].name
    assert _weight_types(result.model_file) == {getattr(onnx.TensorProto, weights)}


def test_a_rejected_scheme_falls_back_to_the_next_and_each_try_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    def no_seven_bit_weights(
        source: Path, target: Path, settings: object, calibration: object, scheme
    ) -> None:
        if scheme.reduce_range:
            raise RuntimeError("7-bit weights refused")
        quantize(source, target, settings, calibration, scheme)

    quantize = optimize.QUANTIZERS["quantize dynamic"]
    monkeypatch.setitem(optimize.QUANTIZERS, "quantize dynamic", no_seven_bit_weights)
    monkeypatch.setattr(cpu_isa, "detect", lambda: AVX512)  # tries U8S8 reduce_range, then U8U8
    result = _export(tmp_path)
    settings = {"simplify": False, "quantize": "dynamic", "budget": {"atol": 1, "rtol": 1}}
    report = optimize_model(_spec(settings), result, 8, tmp_path)
    (record,) = report.passes
    assert record.kept and record.scheme == "U8U8" and record.isa == "x86-avx512" and not report.warnings
    first, second = record.tries
    assert first["scheme"] == "U8S8 reduce_range" and not first["kept"]
    assert first["reason"] == "the pass failed (RuntimeError: 7-bit weights refused)"
    assert second["kept"] and second["max_abs_error"] is not None
    figures = {k: v for k, v in record.summary().items() if k != "seconds"}  # the record's: every try's
    assert {k: v for k, v in second.items() if k != "seconds"} == figures
    assert record.seconds == pytest.approx(first["seconds"] + second["seconds"], abs=0.002)
    assert _weight_types(result.model_file) == {onnx.TensorProto.UINT8}


def test_when_every_scheme_is_over_budget_the_warning_names_each_figure(tmp_path: Path) -> None:
    result = _export(tmp_path)
    original = result.model_file.read_bytes()
    settings = {"simplify": False, "quantize": "dynamic", "budget": {"atol": 0, "rtol": 0}}
    report = optimize_model(_spec(settings), result, 8, tmp_path)
    (record,) = report.passes
    assert not record.kept and result.model_file.read_bytes() == original
    assert len(record.tries) == len(int8_schemes("dynamic", record.isa))
    (warning,) = report.warnings
    named = "; ".join(
        f"{t['scheme']}: max abs error {t['max_abs_error']:.3g} (max rel error {t['max_rel_error']:.3g}): "
        f"{t['mismatched']} of {t['total']} values over budget atol 0 + rtol 0*|ref|"
        for t in record.tries
    )
    assert warning == f"lin: quantize dynamic rejected: {named}; serving the unoptimized model"


def _entry(passes: list[dict]) -> dict:
    kept = [p["name"] for p in passes if p["kept"]]
    signature = {"inputs": [], "outputs": []}
    return {"cache_key": "k", "signature": signature, "optimize": {"passes": passes, "kept": kept}}


def test_int8_models_checked_where_they_do_not_saturate_are_named_on_a_cpu_where_they_do() -> None:
    quantized = {"name": "quantize dynamic", "kept": True}
    manifest = Manifest.from_dict(
        {
            "models": {
                "vnni_u8s8": {"versions": {"1": _entry([quantized | {"scheme": "U8S8", "isa": "x86-vnni"}])}},
                "vnni_u8u8": {"versions": {"1": _entry([quantized | {"scheme": "U8U8", "isa": "x86-vnni"}])}},
                "avx2_reduced": {
                    "versions": {
                        "2": _entry([quantized | {"scheme": "U8S8 reduce_range", "isa": "x86-avx2"}])
                    }
                },
                "older_build": {"versions": {"3": _entry([{"name": "quantize static", "kept": True}])}},
                "rejected": {"versions": {"1": _entry([quantized | {"kept": False, "scheme": "U8S8"}])}},
                "simplified": {"versions": {"1": _entry([{"name": "simplify", "kept": True}])}},
            }
        }
    )
    found = int8_portability_warnings(manifest, AVX2)
    assert [(model, message.split(":")[0]) for model, message in found] == [
        ("vnni_u8s8", "version 1"),
        ("older_build", "version 3"),
    ]
    assert "INT8 S8S8 was checked on an unrecorded CPU; this CPU is x86-avx2" in found[1][1]
    assert int8_portability_warnings(manifest, VNNI) == []


def test_fp16_keeps_fp32_inputs_and_outputs(tmp_path: Path) -> None:
    import onnx

    result = _export(tmp_path)
    report = optimize_model(
        _spec({"fp16": True, "budget": {"atol": 0.01, "rtol": 0.01}}), result, 8, tmp_path
    )
    assert report.kept == ["simplify", "fp16"], report.warnings
    assert read_onnx_signature(result.model_file) == result.signature
    initializers = onnx.load(str(result.model_file)).graph.initializer
    assert {t.data_type for t in initializers} == {onnx.TensorProto.FLOAT16}


def test_a_pass_that_changes_the_signature_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    def rename_output(source: Path, target: Path, *_: object) -> None:
        model = onnx.load(str(source))
        model.graph.node[-1].output[0] = "renamed"
        model.graph.output[0].name = "renamed"
        onnx.save(model, str(target))

    monkeypatch.setitem(optimize.PASSES, "simplify", rename_output)
    result = _export(tmp_path)
    report = optimize_model(_spec({}), result, 8, tmp_path)
    assert report.kept == []
    assert "the I/O signature changed (output 'y' FP32 [-1, 5] -> absent, output 'renamed' absent -> " in (
        report.passes[0].reason
    )


def _raises(*_: object) -> None:
    raise RuntimeError("no can do\nsecond line")


def _writes_nothing(*_: object) -> None:
    return None


@pytest.mark.parametrize(
    ("broken", "why"), [(_raises, "RuntimeError: no can do"), (_writes_nothing, "FileNotFoundError: ")]
)
def test_a_pass_that_fails_is_rejected_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: object, why: str
) -> None:
    monkeypatch.setitem(optimize.PASSES, "simplify", broken)
    result = _export(tmp_path)
    original = result.model_file.read_bytes()
    report = optimize_model(_spec({}), result, 8, tmp_path)
    (warning,) = report.warnings
    assert warning.startswith(f"lin: simplify rejected: the pass failed ({why}")
    assert warning.endswith("; serving the unoptimized model")
    assert result.model_file.read_bytes() == original


def test_a_calibration_file_missing_an_input_is_an_error(tmp_path: Path) -> None:
    result = _export(tmp_path)
    np.savez(tmp_path / "calib.npz", image=np.zeros((4, FEATURES), np.float32))
    with pytest.raises(SpecError, match=r"calib.npz has no array for input\(s\) x \(it has image\)"):
        optimize_model(_spec({"quantize": "static", "calibration_data": "calib.npz"}), result, 8, tmp_path)


def test_the_quantizer_leaves_the_root_logger_alone(tmp_path: Path) -> None:
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    result = _export(tmp_path)
    optimize_model(_spec({"quantize": "dynamic", "budget": {"atol": 1, "rtol": 1}}), result, 8, tmp_path)
    assert root.handlers == before


def test_a_model_with_external_data_is_served_self_contained(tmp_path: Path) -> None:
    import onnx

    result = _export(tmp_path)
    model = onnx.load(str(result.model_file))
    onnx.save(
        model, str(result.model_file), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    data = result.model_file.parent / "weights.bin"
    result.files.append(data)
    report = optimize_model(
        _spec({"quantize": "dynamic", "budget": {"atol": 1, "rtol": 1}}), result, 8, tmp_path
    )
    assert report.kept == ["simplify", "quantize dynamic"]
    assert report.passes[0].bytes_before > (CLASSES + FEATURES * CLASSES) * 4  # the weights counted too
    assert result.files == [result.model_file] and not data.exists()
    assert not list(result.model_file.parent.glob(".*"))  # no staged leftovers
