"""config.pbtxt rendering: golden files, Triton's protobuf parse, device profiles, user templates."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from generator import __version__
from generator.build.config import SECTIONS, ConfigSource, DeviceProfile, build_config, check_rendered, render
from generator.build.pipelines import ensemble_config
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


# One golden per path through the config's sections, written by the build before its sections were
# split into one function each: a change to how a section is computed must not change a byte.
EVERY_SECTION = {
    "name": "ranker",
    "framework": "onnx",
    "source": "m.onnx",
    "max_batch_size": 16,
    "inputs": [
        {"name": "ids", "dtype": "INT64", "dims": [-1]},
        {"name": "mask", "dtype": "INT64", "dims": [-1], "optional": True},
        {"name": "scale", "dtype": "FP32", "dims": [1], "reshape": []},
    ],
    "outputs": [{"name": "scores", "dtype": "FP32", "dims": [3], "label_filename": "data/labels.txt"}],
    "version_policy": {"specific": [1, 3]},
    "dynamic_batching": {"preserve_ordering": True, "default_queue_policy": {"max_queue_size": 0}},
    "instance_group": {"count": 1, "kind": "gpu", "gpus": [1]},
    "parameters": {"execution_mode": 0, "enable_mem_pattern": False},
    "warmup": {"batch_size": 32, "data": "random", "count": 2},
    "values": {"ids": {"min": 5, "max": 9}},
    "response_cache": True,
    "accelerators": [
        {"name": "tensorrt", "parameters": {"precision_mode": "FP16", "trt_engine_cache_enable": True}},
        {"name": "cuda", "parameters": {"gpu_mem_limit": 1 << 30}},
        {"name": "openvino"},
    ],
}
FROM_SIGNATURE = {
    "name": "scorer",
    "framework": "torch",
    "source": "m.py:build",
    "max_batch_size": 0,
    "dynamic_batching": {"max_queue_delay_microseconds": 100},  # dropped: the model does not batch
    "version_policy": {"all": True},
    "warmup": {"data": "zero", "batch_size": 4},
}
SCALAR_SIGNATURE = Signature(
    (TensorInfo("x", "FP32", (4,)), TensorInfo("n", "INT32", ())),
    (TensorInfo("out", "FP32", (2,)), TensorInfo("count", "INT64", ())),
)
PLAN = {"name": "engine", "framework": "onnx", "source": "m.onnx", "format": "tensorrt"}
STATE_SIGNATURE = Signature(
    (
        TensorInfo("x", "FP32", (-1, 3)),
        TensorInfo("START", "BOOL", (-1, 1)),
        TensorInfo("CORRID", "UINT64", (-1, 1)),
        TensorInfo("h_in", "FP32", (-1, 4)),
    ),
    (TensorInfo("y", "FP32", (-1, 3)), TensorInfo("h_out", "FP32", (-1, 4))),
)
# A stateful model: its I/O from the signature without the control and state tensors; the inherited
# dynamic batcher left out for the sequence batcher.
SEQUENCE_DIRECT = {
    "name": "gru",
    "framework": "torch",
    "source": "m.py:build",
    "max_batch_size": 4,
    "sequence_batching": {
        "max_sequence_idle_microseconds": 5000000,
        "max_queue_delay_microseconds": 100,
        "minimum_slot_utilization": 0.5,
        "controls": {"start": {"name": "START", "dtype": "BOOL"}, "corrid": "CORRID"},
        "state": [
            {"input_name": "h_in", "output_name": "h_out", "dtype": "FP32", "dims": [4]},
            {
                "input_name": "steps_in",
                "output_name": "steps_out",
                "dtype": "INT64",
                "dims": [-1],
                "initial_state": {"data_file": "data/steps.npy", "dims": [2]},
                "use_same_buffer_for_input_output": True,
            },
        ],
    },
}
SEQUENCE_OLDEST = {
    "name": "ranker",
    "framework": "onnx",
    "source": "m.onnx",
    "max_batch_size": 8,
    "inputs": [{"name": "x", "dtype": "FP32", "dims": [3]}],
    "outputs": [{"name": "y", "dtype": "FP32", "dims": [3]}],
    "sequence_batching": {
        "strategy": "oldest",
        "max_candidate_sequences": 16,
        "preferred_batch_size": [8, 4],
        "max_queue_delay_microseconds": 2000,
        "preserve_ordering": True,
        "controls": {
            "START": {"name": "S", "dtype": "int32"},
            "END": {"name": "E", "dtype": "fp32"},
            "READY": "R",
            "CORRID": {"name": "ID", "dtype": "STRING"},
        },
    },
}
SECTION_GOLDENS = {
    "sequence_direct_state.pbtxt": (
        SEQUENCE_DIRECT,
        STATE_SIGNATURE,
        "onnxruntime_onnx",
        DeviceProfile(),
        "model.onnx",
        None,
    ),
    "sequence_oldest_controls.pbtxt": (
        SEQUENCE_OLDEST,
        SIGNATURE,
        "onnxruntime_onnx",
        DeviceProfile(),
        "model.onnx",
        None,
    ),
    "every_section.pbtxt": (
        EVERY_SECTION,
        SIGNATURE,
        "onnxruntime_onnx",
        DeviceProfile.parse("gpu", "0,1"),
        "model.int8.onnx",
        None,
    ),
    "libtorch_from_signature.pbtxt": (
        FROM_SIGNATURE,
        SCALAR_SIGNATURE,
        "pytorch_libtorch",
        DeviceProfile.parse("auto"),
        "model.pt",
        None,
    ),
    "plan_per_compute_capability.pbtxt": (
        PLAN,
        SIGNATURE,
        "tensorrt_plan",
        DeviceProfile.parse("gpu"),
        "model_sm80.plan",
        {"9.0": "model_sm90.plan", "8.0": "model_sm80.plan"},
    ),
    "python_backend.pbtxt": (
        {
            "name": "post",
            "framework": "python",
            "source": "p.py",
            "inputs": [{"name": "TEXT", "dtype": "BYTES", "dims": [1]}],
            "outputs": [{"name": "LEN", "dtype": "INT64", "dims": [1]}],
            "dynamic_batching": False,
        },
        SIGNATURE,
        "python",
        DeviceProfile(),
        "model.py",
        None,
    ),
}


def _assert_golden(text: str, golden: str) -> None:
    stable = text.replace(f"tritongen {__version__} ", "tritongen VERSION ", 1)
    assert stable != text
    if os.environ.get("UPDATE_GOLDEN"):
        (GOLDEN / golden).write_text(stable)
    assert stable == (GOLDEN / golden).read_text()


@pytest.mark.parametrize("golden", sorted(SECTION_GOLDENS))
def test_each_section_renders_as_its_golden(golden: str) -> None:
    data, signature, platform, profile, filename, cc_filenames = SECTION_GOLDENS[golden]
    model = parse_spec({"models": [data]}).models[0]
    config = build_config(model, signature, platform, profile, filename, cc_filenames)
    text = render(config, environment(), spec_name="spec.yaml")
    _assert_golden(text, golden)
    check_rendered(text, config, golden)


def test_an_ensemble_renders_as_its_golden() -> None:
    """The ensemble's sections (I/O typed by its steps, the scheduling) from its steps' rendered configs."""
    tokenizer = {
        "name": "tok",
        "framework": "python",
        "source": "t.py",
        "max_batch_size": 8,
        "inputs": [{"name": "text", "dtype": "BYTES", "dims": [1]}],
        "outputs": [{"name": "ids", "dtype": "INT64", "dims": [-1]}],
    }
    classifier = {
        "name": "clf",
        "framework": "onnx",
        "source": "m.onnx",
        "max_batch_size": 4,
        "inputs": [{"name": "ids", "dtype": "INT64", "dims": [-1]}],
        "outputs": [{"name": "logits", "dtype": "FP32", "dims": [3]}],
    }
    spec = parse_spec(
        {
            "models": [tokenizer, classifier],
            "ensembles": [
                {
                    "name": "pipeline",
                    "steps": [
                        {"model": "tok", "input_map": {"text": "TEXT"}, "output_map": {"ids": "ids"}},
                        {
                            "model": "clf",
                            "version": 1,
                            "input_map": {"ids": "ids"},
                            "output_map": {"logits": "LOGITS"},
                        },
                    ],
                }
            ],
        }
    )
    env = environment()
    platforms = {"tok": "python", "clf": "onnxruntime_onnx"}
    steps = {
        model.name: parse_config_text(
            render(build_config(model, SIGNATURE, platforms[model.name], DeviceProfile()), env)
        )
        for model in spec.models
    }
    config = ensemble_config(spec.ensembles[0], steps)
    text = render(config, env, spec_name="spec.yaml")
    _assert_golden(text, "ensemble.pbtxt")
    check_rendered(text, config, "ensemble.pbtxt")


@pytest.mark.parametrize("golden", sorted(SECTION_GOLDENS))
def test_each_field_comes_from_one_section(golden: str) -> None:
    """A section adds fields and never rewrites another's: the config is the sections' fields, in order."""
    data, signature, platform, profile, filename, cc_filenames = SECTION_GOLDENS[golden]
    model = parse_spec({"models": [data]}).models[0]
    source = ConfigSource(model, signature, platform, profile, filename, cc_filenames)
    built: dict = {}
    for section in SECTIONS:
        fields = section(source, built)
        assert not set(fields) & set(built), (section.__name__, sorted(set(fields) & set(built)))
        built.update(fields)
    assert built == build_config(model, signature, platform, profile, filename, cc_filenames)
    assert list(built) == list(build_config(model, signature, platform, profile, filename, cc_filenames))


def _sequence_config(entry: dict, defaults: dict | None = None) -> dict:
    spec = parse_spec({"defaults": defaults or {}, "models": [entry]})
    return build_config(spec.models[0], STATE_SIGNATURE, "onnxruntime_onnx", DeviceProfile())


def test_a_sequence_batcher_replaces_the_inherited_dynamic_batcher() -> None:
    defaults = {"dynamic_batching": {"max_queue_delay_microseconds": 100}}
    config = _sequence_config(SEQUENCE_DIRECT, defaults)
    assert "dynamic_batching" not in config and "sequence_batching" in config
    parsed = parse_config_text(render(config, environment()))
    assert parsed.WhichOneof("scheduling_choice") == "sequence_batching"
    assert [t.name for t in parsed.input] == ["x"] and [t.name for t in parsed.output] == ["y"]
    switched_off = _sequence_config({**SEQUENCE_DIRECT, "sequence_batching": False}, defaults)
    assert "sequence_batching" not in switched_off and "dynamic_batching" in switched_off


def test_a_decoupled_python_model_renders_its_transaction_policy() -> None:
    entry = {
        "name": "gen",
        "framework": "python",
        "source": "g.py",
        "decoupled": True,
        "inputs": [{"name": "prompt", "dtype": "BYTES", "dims": [1]}],
        "outputs": [{"name": "token", "dtype": "BYTES", "dims": [1]}],
    }
    config = build_config(parse_spec({"models": [entry]}).models[0], SIGNATURE, "python", DeviceProfile())
    text = render(config, environment())
    assert check_rendered(text, config, "gen").model_transaction_policy.decoupled


def test_triton_scheduling_rules_are_reported_at_the_spec_field() -> None:
    """Validate's rules (Triton's) run on the built config, each at the spec field it is about."""
    entry = {**SEQUENCE_OLDEST, "max_batch_size": 2}  # preferred sizes 4 and 8 exceed it
    with pytest.raises(ConfigError) as caught:
        _sequence_config(entry)
    assert len(caught.value.problems) == 2
    assert all(
        line.startswith("model 'ranker': sequence_batching.preferred_batch_size: ")
        and "<= max batch size (2)" in line
        for line in caught.value.problems
    )
    with pytest.raises(ConfigError, match=r"model 'gru': response_cache: response_cache does not support"):
        _sequence_config({**SEQUENCE_DIRECT, "response_cache": True})
