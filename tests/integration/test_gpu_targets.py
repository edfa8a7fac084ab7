"""Other targets built for real: TorchScript here; TensorRT plans where TensorRT and a GPU exist
(skipped elsewhere, with the reason)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from generator.build.run import build
from generator.core.repository import MANIFEST
from generator.validate.run import validate_repository

from ..conftest import EXAMPLE_SPEC

pytestmark = pytest.mark.integration


def _spec(tmp_path: Path, **model: object) -> Path:
    entry = {
        "name": "digits",
        "framework": "torch",
        "source": f"{EXAMPLE_SPEC.parent / 'digits.py'}:build",
        "max_batch_size": 32,
        "dynamic_batching": {"preferred_batch_size": [8, 16]},
        "inputs": [{"name": "image", "dtype": "FP32", "dims": [1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "FP32", "dims": [10]}],
        **model,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps({"models": [entry]}))  # JSON is YAML
    return path


def test_torchscript_target_uses_libtorch_naming_and_passes_parity(tmp_path: Path) -> None:
    report = build(_spec(tmp_path, format="torchscript"), tmp_path / "repo")
    model = report.models[0]
    assert model.platform == "pytorch_libtorch" and model.files == ["model.pt"]
    assert model.parity["compared"] and model.parity["batch_sizes"] == [1, 32]
    assert model.parity["max_abs_error"] < 1e-5
    config = (tmp_path / "repo" / "digits" / "config.pbtxt").read_text()
    assert 'platform: "pytorch_libtorch"' in config
    assert 'name: "image__0"' in config and 'name: "logits__0"' in config
    assert validate_repository(tmp_path / "repo").ok


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'tritongen[tensorrt]' on a GPU machine)"
    from generator.core.gpus import NvmlUnavailable, detect_gpus

    try:
        if not detect_gpus():
            return "NVML sees no GPU"
    except NvmlUnavailable as exc:
        return f"no NVIDIA GPU: {exc}"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_plan_builds_validates_and_matches_pytorch(tmp_path: Path, precision: str) -> None:
    tolerance = {"fp32": {"atol": 1e-3, "rtol": 1e-3}, "fp16": {"atol": 5e-2, "rtol": 5e-2}}[precision]
    spec = _spec(tmp_path, format="tensorrt", tensorrt={"precision": precision}, verify=tolerance)
    report = build(spec, tmp_path / "repo", device="gpu", gpus="all")
    model = report.models[0]
    assert model.platform == "tensorrt_plan" and model.parity["compared"]
    manifest = json.loads((tmp_path / "repo" / MANIFEST).read_text())
    details = manifest["models"]["digits"]["versions"]["1"]["details"]
    assert details["profile"]["image"] == [[1, 1, 8, 8], [16, 1, 8, 8], [32, 1, 8, 8]]
    report = validate_repository(tmp_path / "repo")
    assert report.ok, [str(p) for p in report.problems]
