"""The CPU-side logic of GPU targets: TensorRT optimization profiles, plan names per compute
capability, GPU lists (NVML), ONNX Runtime accelerators, all rendered and validated without a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from generator.build.config import DeviceProfile, build_config, check_rendered, render
from generator.build.exporters.base import ExportContext
from generator.build.exporters.tensorrt import TensorRTExporter, optimization_profile, plan_filenames
from generator.core.errors import ConfigError, ExportError, MissingDependencyError
from generator.core.gpus import Gpu, NvmlUnavailable, detect_gpus
from generator.core.signature import Signature, TensorInfo
from generator.core.templating import environment
from generator.spec.models import parse_spec
from generator.validate.run import validate_repository

from ..conftest import make_linear_onnx

SIGNATURE = Signature(
    (TensorInfo("image", "FP32", (-1, 1, 8, 8)),), (TensorInfo("logits", "FP32", (-1, 10)),)
)
TOKENS = Signature(
    (TensorInfo("tokens", "INT64", (-1, -1)), TensorInfo("mask", "INT64", (-1, -1))),
    (TensorInfo("scores", "FP32", (-1, 2)),),
)


def _model(**extra: object):
    return parse_spec({"models": [{"name": "m", "framework": "onnx", "source": "m.onnx", **extra}]}).models[0]


def test_profile_spans_one_to_max_batch_with_the_largest_preferred_size_as_opt() -> None:
    model = _model(max_batch_size=64, dynamic_batching={"preferred_batch_size": [8, 32]}, format="tensorrt")
    assert optimization_profile(model, SIGNATURE, 64) == {
        "image": ([1, 1, 8, 8], [32, 1, 8, 8], [64, 1, 8, 8])
    }
    no_preferred = _model(max_batch_size=16, format="tensorrt")
    assert optimization_profile(no_preferred, SIGNATURE, 16)["image"][1] == [16, 1, 8, 8]


def test_profile_takes_dynamic_axes_from_the_spec() -> None:
    shapes = {"min": [1], "opt": [128], "max": [512]}
    model = _model(
        max_batch_size=8, format="tensorrt", tensorrt={"shapes": {"tokens": shapes, "mask": shapes}}
    )
    profile = optimization_profile(model, TOKENS, 8)
    assert profile["tokens"] == ([1, 1], [8, 128], [8, 512]) and profile["mask"] == profile["tokens"]


def test_profile_without_a_range_for_a_dynamic_axis_says_what_to_add() -> None:
    model = _model(max_batch_size=8, format="tensorrt")
    with pytest.raises(
        ExportError, match=r"input 'tokens' has dynamic dims \[-1\]; give their range in shapes.tokens"
    ):
        optimization_profile(model, TOKENS, 8)


def test_the_model_level_shapes_win_over_tensorrt_shapes_and_tied_inputs_share_them() -> None:
    model = _model(
        max_batch_size=8,
        format="tensorrt",
        dynamic_batching={"preferred_batch_size": [4]},
        shapes={"tokens": {"min": [2], "opt": [16], "max": [128]}},
        tensorrt={"shapes": {"tokens": {"min": [1], "opt": [8], "max": [512]}}},
    )
    profile = optimization_profile(model, TOKENS, 8)
    # mask has no entry of its own: it takes the one input entry with as many -1 axes (tokens').
    assert profile == {"tokens": ([1, 2], [4, 16], [8, 128]), "mask": ([1, 2], [4, 16], [8, 128])}


def test_a_range_gives_the_minus_one_axes_only_or_every_axis() -> None:
    image = Signature((TensorInfo("image", "FP32", (-1, 3, -1, -1)),), (TensorInfo("y", "FP32", (-1, 2)),))
    only_free = _model(
        format="tensorrt", shapes={"image": {"min": [8, 8], "opt": [64, 48], "max": [256, 256]}}
    )
    every_axis = _model(
        format="tensorrt", shapes={"image": {"min": [3, 8, 8], "opt": [3, 64, 48], "max": [3, 256, 256]}}
    )
    expected = {"image": ([1, 3, 8, 8], [4, 3, 64, 48], [4, 3, 256, 256])}
    assert optimization_profile(only_free, image, 4) == expected
    assert optimization_profile(every_axis, image, 4) == expected
    from generator.core.errors import SpecError

    fixed_changed = _model(
        format="tensorrt", shapes={"image": {"min": [1, 8, 8], "opt": [1, 8, 8], "max": [1, 8, 8]}}
    )
    with pytest.raises(SpecError, match=r"shapes.image changes a fixed axis of input 'image' \[3, -1, -1\]"):
        optimization_profile(fixed_changed, image, 4)
    wrong_rank = _model(format="tensorrt", shapes={"image": {"min": [8], "opt": [8], "max": [8]}})
    with pytest.raises(
        SpecError, match=r"shapes.image gives 1 sizes but input 'image' has dims \[3, -1, -1\]"
    ):
        optimization_profile(wrong_rank, image, 4)
    unknown = _model(format="tensorrt", shapes={"pixels": {"min": [8, 8], "opt": [8, 8], "max": [8, 8]}})
    with pytest.raises(SpecError, match=r"shapes.pixels names no input of the model \(it has image\)"):
        optimization_profile(unknown, image, 4)


def test_shape_ranges_and_int8_are_validated_in_the_spec() -> None:
    from generator.core.errors import SpecError

    with pytest.raises(SpecError, match="need 1 <= min <= opt <= max"):
        _model(tensorrt={"shapes": {"x": {"min": [4], "opt": [2], "max": [8]}}})
    with pytest.raises(SpecError, match="int8 needs calibration_data"):
        _model(tensorrt={"precision": "int8"})
    with pytest.raises(SpecError, match="format torchscript needs framework torch"):
        _model(format="torchscript")


def test_one_plan_per_compute_capability() -> None:
    assert plan_filenames(["8.0"]) == {"8.0": "model.plan"}
    assert plan_filenames(["8.0", "9.0", "8.0"]) == {"8.0": "model_sm80.plan", "9.0": "model_sm90.plan"}


def test_cc_model_filenames_render_and_parse() -> None:
    model = _model(max_batch_size=8)
    config = build_config(
        model,
        SIGNATURE,
        "tensorrt_plan",
        DeviceProfile.parse("gpu", "0,1"),
        "model_sm80.plan",
        {"9.0": "model_sm90.plan", "8.0": "model_sm80.plan"},
    )
    parsed = check_rendered(render(config, environment()), config, "m/config.pbtxt")
    assert dict(parsed.cc_model_filenames) == {"8.0": "model_sm80.plan", "9.0": "model_sm90.plan"}
    assert parsed.default_model_filename == "model_sm80.plan" and parsed.platform == "tensorrt_plan"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_the_exporter_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match=r"TensorRT is not installed.*tritongen\[tensorrt\]"):
        TensorRTExporter(ExportContext()).export(
            _model(format="tensorrt"), tmp_path / "m.onnx", tmp_path / "1"
        )
    assert not (tmp_path / "1").exists()  # never a placeholder


def test_gpus_all_uses_the_detected_gpus() -> None:
    def two_architectures() -> list[Gpu]:
        return [Gpu(0, "A100", (8, 0), 80 << 30), Gpu(1, "H100", (9, 0), 80 << 30)]

    profile = DeviceProfile.parse("gpu", "all", detect=two_architectures)
    assert profile.gpus == (0, 1) and [g.cc for g in profile.detected] == ["8.0", "9.0"]


def test_gpus_all_without_a_driver_is_a_clear_error() -> None:
    try:
        found = detect_gpus()
    except NvmlUnavailable:
        with pytest.raises(ConfigError, match="--gpus all: cannot list GPUs here"):
            DeviceProfile.parse("gpu", "all")
    else:
        assert DeviceProfile.parse("gpu", "all").gpus == tuple(g.index for g in found)


def test_accelerators_render_with_only_accepted_parameters() -> None:
    model = _model(
        accelerators=[
            {
                "name": "tensorrt",
                "parameters": {
                    "precision_mode": "FP16",
                    "max_workspace_size_bytes": 1 << 30,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": "/cache",
                },
            },
            {"name": "openvino"},
        ]
    )
    config = build_config(model, SIGNATURE, "onnxruntime_onnx", DeviceProfile.parse("gpu"))
    parsed = check_rendered(render(config, environment()), config, "m/config.pbtxt")
    gpu = parsed.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert gpu.name == "tensorrt" and dict(gpu.parameters) == {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": "1073741824",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/cache",
    }
    assert parsed.optimization.execution_accelerators.cpu_execution_accelerator[0].name == "openvino"


def test_a_hand_written_accelerator_with_a_wrong_parameter_is_caught(tmp_path: Path) -> None:
    model_dir = tmp_path / "repo" / "lin"
    make_linear_onnx(model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx" max_batch_size: 4\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
        "instance_group [ { kind: KIND_GPU gpus: [ 7 ] } ]\n"
        "optimization { execution_accelerators { gpu_execution_accelerator : [ {\n"
        '  name : "tensorrt" parameters { key: "precision" value: "FP16" } } ] } }\n'
    )
    report = validate_repository(tmp_path / "repo")
    assert [p.message for p in report.errors] == [
        "accelerator 'tensorrt' has no parameter 'precision'; did you mean 'precision_mode'?"
    ]
    assert any("GPU" in w.message and "7" in w.message for w in report.warnings)
