"""config.pbtxt rendering: golden files, Triton's protobuf parse, device profiles, user templates."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from generator import __version__
from generator.build.config import DeviceProfile, build_config, check_rendered, render
from generator.core.errors import ConfigError
from generator.core.resources import templates_dir
from generator.core.signature import Signature, TensorInfo
from generator.core.templating import environment
from generator.core.triton import parse_config_text
from generator.spec.models import parse_spec

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SIGNATURE = Signature(
    (TensorInfo("image", "FP32", (-1, 1, 8, 8)),),
    (TensorInfo("logits", "FP32", (-1, 10)), TensorInfo("label", "INT64", (-1,))),
)
FULL = {
    "defaults": {
        "max_batch_size": 64,
        "dynamic_batching": {
            "preferred_batch_size": [32, 16],
            "max_queue_delay_microseconds": 500,
            "priority_levels": 2,
            "default_priority_level": 1,
            "default_queue_policy": {"timeout_action": "DELAY", "default_timeout_microseconds": 100000},
        },
        "instance_group": {"count": 2},
    },
    "models": [
        {
            "name": "cnn",
            "framework": "torch",
            "source": "m.py:build",
            "version_policy": {"latest": 2},
            "parameters": {"intra_op_thread_count": 1, "enable_mem_arena": True},
            "warmup": {"batch_size": 4, "data": "zero"},
            "response_cache": True,
        }
    ],
}


def _render(data: dict, profile: DeviceProfile) -> tuple[str, dict]:
    model = parse_spec(data).models[0]
    config = build_config(model, SIGNATURE, "onnxruntime_onnx", profile)
    return render(config, environment(), spec_name="spec.yaml"), config


@pytest.mark.parametrize(
    ("golden", "profile"),
    [
        ("cnn_cpu.pbtxt", DeviceProfile.parse("cpu")),
        ("cnn_gpu01.pbtxt", DeviceProfile.parse("gpu", "0,1")),
    ],
)
def test_golden_configs(golden: str, profile: DeviceProfile) -> None:
    text, config = _render(FULL, profile)
    # The goldens hold VERSION where the header names the tool's version: a release changes no golden.
    stable = text.replace(f"tritongen {__version__} ", "tritongen VERSION ", 1)
    assert stable != text
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / golden).write_text(stable)
    assert stable == (GOLDEN / golden).read_text()
    parsed = check_rendered(text, config, golden)
    assert parsed.max_batch_size == 64
    assert list(parsed.dynamic_batching.preferred_batch_size) == [16, 32]
    assert parsed.output[1].dims == [1] and parsed.output[1].HasField("reshape")
    assert list(parsed.output[1].reshape.shape) == []
    assert parsed.version_policy.latest.num_versions == 2
    assert parsed.parameters["enable_mem_arena"].string_value == "true"
    assert parsed.model_warmup[0].inputs["image"].zero_data
    assert parsed.response_cache.enable


def test_gpu_profile_renders_kind_gpu_on_each_listed_gpu() -> None:
    text, _ = _render(FULL, DeviceProfile.parse("gpu", "1,0"))
    group = parse_config_text(text).instance_group[0]
    assert group.kind == group.KIND_GPU and list(group.gpus) == [0, 1] and group.count == 2


def test_auto_and_spec_kind_override_the_profile() -> None:
    data = {**FULL, "models": [{**FULL["models"][0], "instance_group": {"count": 3, "kind": "auto"}}]}
    text, _ = _render(data, DeviceProfile.parse("gpu"))
    group = parse_config_text(text).instance_group[0]
    assert group.kind == group.KIND_AUTO and group.count == 3


def test_io_from_the_signature_when_the_spec_is_silent() -> None:
    text, _ = _render({"models": [{"name": "m", "framework": "onnx", "source": "m.onnx"}]}, DeviceProfile())
    parsed = parse_config_text(text)
    assert parsed.max_batch_size == 8  # the model has a batch axis; the spec sets no size
    assert [t.name for t in parsed.input] == ["image"] and list(parsed.input[0].dims) == [1, 8, 8]
    assert parsed.HasField("dynamic_batching")


def test_rendering_is_deterministic() -> None:
    assert _render(FULL, DeviceProfile())[0] == _render(FULL, DeviceProfile())[0]


def test_a_user_template_that_drops_a_field_is_caught(tmp_path: Path) -> None:
    shutil.copytree(templates_dir(), tmp_path / "mine", ignore=shutil.ignore_patterns("__*"))
    template = tmp_path / "mine" / "config.pbtxt.j2"
    template.write_text(template.read_text().replace("max_batch_size: {{ config.max_batch_size }}", ""))
    model = parse_spec(FULL).models[0]
    config = build_config(model, SIGNATURE, "onnxruntime_onnx", DeviceProfile())
    text = render(config, environment(tmp_path / "mine"))
    with pytest.raises(ConfigError, match="max_batch_size: intended 64, rendered None"):
        check_rendered(text, config, "cnn/config.pbtxt")


def test_a_user_template_may_reformat(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt.j2").write_text(
        "# my house style\n{% import 'tensors.pbtxt.j2' as t %}"
        "name: {{ config.name | pbtxt }} platform: {{ config.platform | pbtxt }} "
        "max_batch_size: {{ config.max_batch_size }}\n"
        "input [ {% for x in config.input %}{{ t.tensor(x, loop.last) }}{% endfor %} ]\n"
        "output [ {% for x in config.output %}{{ t.tensor(x, loop.last) }}{% endfor %} ]\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
    model = parse_spec(
        {"models": [{"name": "m", "framework": "onnx", "source": "m.onnx", "dynamic_batching": False}]}
    ).models[0]
    config = build_config(model, SIGNATURE, "onnxruntime_onnx", DeviceProfile())
    check_rendered(render(config, environment(tmp_path)), config, "m/config.pbtxt")


@pytest.mark.parametrize(
    ("device", "gpus", "message"),
    [
        ("tpu", None, "unknown"),
        ("cpu", "0", "only applies with --device gpu"),
        ("gpu", "a,b", "comma-separated"),
    ],
)
def test_device_profile_errors(device: str, gpus: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeviceProfile.parse(device, gpus)


def test_unparsable_text_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"does not parse .*2:"):
        parse_config_text('name: "x"\nmax_batch_size: "eight"\n')
