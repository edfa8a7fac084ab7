"""validate judges for the Triton that serves the repository: its version's schema, its GPUs, its backends.

The schema table against tritonclient's schema and Triton's release numbering; each version's parser
refusing exactly what came after it; the GPU and backend-library rules of Triton's core for the
embedded server on this machine, for a named server on an unknown machine, and for named GPUs; and
ensembles whose outputs come from different decoupled models. The served counterparts, each refusal
made by the real tritonserver, are in ``tests/integration/test_validate_schema_served.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.core.errors import ValidationError
from generator.core.triton import parse_model_config
from generator.validate.artifacts import Serving, check_backend_library, check_gpus
from generator.validate.ensembles import check_ensemble
from generator.validate.run import validate_repository
from generator.validate.schema import (
    ADDED_FIELDS,
    ADDED_VALUES,
    OLDEST,
    WIDENED,
    Server,
    TritonVersion,
    check_schema,
    embedded_version,
    parse_gpu_ids,
    schema_for,
)

from ..conftest import make_linear_onnx

V = TritonVersion


def _descriptor(full_name: str):
    return model_config_pb2.DESCRIPTOR.pool.FindMessageTypeByName(full_name)


def test_every_entry_of_the_table_is_in_tritonclients_schema() -> None:
    for (message, field), added in ADDED_FIELDS.items():
        assert field in _descriptor(message).fields_by_name, (message, field)
        assert added.since > OLDEST
    for (enum, value), added in ADDED_VALUES.items():
        assert value in model_config_pb2.DESCRIPTOR.pool.FindEnumTypeByName(enum).values_by_name
        assert added.since > OLDEST
    for message, field in WIDENED:
        assert _descriptor(message).fields_by_name[field].cpp_type == 4  # CPPTYPE_UINT64


def test_each_version_schema_reads_exactly_what_came_up_to_it() -> None:
    for (message, field), added in ADDED_FIELDS.items():
        before, since = V(2, added.since.minor - 1), added.since
        assert (
            field not in schema_for(before).DESCRIPTOR.file.pool.FindMessageTypeByName(message).fields_by_name
        )
        assert field in schema_for(since).DESCRIPTOR.file.pool.FindMessageTypeByName(message).fields_by_name
    for (enum, value), added in ADDED_VALUES.items():
        before = schema_for(V(2, added.since.minor - 1)).DESCRIPTOR.file.pool.FindEnumTypeByName(enum)
        assert value not in before.values_by_name
        assert value in schema_for(added.since).DESCRIPTOR.file.pool.FindEnumTypeByName(enum).values_by_name


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("2.51", V(2, 51)),
        ("2.51.0", V(2, 51)),
        (" 2.63 ", V(2, 63)),
        ("22.01", V(2, 18)),  # the release branches' TRITON_VERSION files
        ("23.11", V(2, 40)),
        ("24.10", V(2, 51)),
        ("24.11", V(2, 52)),
        ("25.01", V(2, 54)),
        ("25.06", V(2, 59)),
        ("25.07", V(2, 59)),  # 2.59.1
        ("25.08", V(2, 60)),
        ("25.11", V(2, 63)),
        ("26.07", V(2, 71)),
        ("24.10-py3", V(2, 51)),
    ],
)
def test_a_version_or_a_container_release_names_the_triton_version(text: str, version: TritonVersion) -> None:
    assert TritonVersion.parse(text) == version


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("latest", "is not a Triton version"),
        ("2", "is not a Triton version"),
        ("2.17", "older than the oldest version validate knows the schema of (2.18)"),
        ("21.12", "nor a container release from 22.01 on"),
        ("24.13", "nor a container release from 22.01 on"),
    ],
)
def test_a_version_validate_cannot_judge_for_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        TritonVersion.parse(text)


def test_the_embedded_server_is_triton_2_51() -> None:
    assert embedded_version() == V(2, 51)
    assert Server().version == V(2, 51) and not Server().embedded and Server().gpus is None


BASE = 'name: "m"\nplatform: "onnxruntime_onnx"\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'


def test_fields_added_after_2_51_are_named_with_the_version_that_added_them() -> None:
    text = BASE + "model_metrics { metric_control [ { metric_identifier { family: 'f' } } ] }\n"
    assert check_schema(text, V(2, 51)) == [
        "config.pbtxt: model_metrics: Triton 2.51 cannot read this field (added in 2.52); remove it or serve "
        "with Triton >= 2.52"
    ]
    assert check_schema(text, V(2, 52)) == []
    ensemble = (
        'platform: "ensemble"\nensemble_scheduling { max_inflight_requests: 0 step [ { model_name: "a" } ] }'
    )
    assert check_schema(ensemble, V(2, 62)) == [
        "config.pbtxt: ensemble_scheduling.max_inflight_requests: Triton 2.62 cannot read this field "
        "(added in 2.63); remove it or serve with Triton >= 2.63"
    ]
    assert check_schema(ensemble, V(2, 63)) == []


def test_a_field_set_to_its_default_value_is_found_too() -> None:
    """Triton's parser refuses the field name whatever its value, so ``runtime: ""`` counts."""
    text = (
        BASE
        + 'runtime: ""\ninput [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] is_non_linear_format_io: false } ]\n'
    )
    assert check_schema(text, V(2, 41)) == [
        "config.pbtxt: input[1].is_non_linear_format_io: Triton 2.41 cannot read this field (added in 2.49); "
        "remove it or serve with Triton >= 2.49",
        "config.pbtxt: runtime: Triton 2.41 cannot read this field (added in 2.42); remove it or serve with "
        "Triton >= 2.42",
    ]
    with pytest.raises(text_format.ParseError, match='no field named "runtime"'):
        text_format.Parse(text, schema_for(V(2, 41))())


def test_enum_values_and_wider_numbers_an_older_version_cannot_read() -> None:
    text = (
        BASE + 'output [ { name: "y" data_type: TYPE_BF16 dims: [ 1 ] } ]\n'
        "batch_input [ { kind: BATCH_ITEM_SHAPE target_name: 't' data_type: TYPE_FP32 source_input: 'x' } ]\n"
        "dynamic_batching { priority_levels: 4294967296 priority_queue_policy [ { key: 4294967296 value: { } } ] }\n"
    )
    assert check_schema(text, V(2, 19)) == [
        "config.pbtxt: output[0].data_type: Triton 2.19 cannot read TYPE_BF16 (added in 2.22); use another "
        "value or serve with Triton >= 2.22",
        "config.pbtxt: dynamic_batching.priority_levels: Triton 2.19 reads at most 4294967295 here (2.36 "
        "widened it to 64 bits); lower it or serve with Triton >= 2.36",
        "config.pbtxt: dynamic_batching.priority_queue_policy[4294967296]: Triton 2.19 reads at most "
        "4294967295 here (2.36 widened it to 64 bits); lower it or serve with Triton >= 2.36",
        "config.pbtxt: batch_input[0].kind: Triton 2.19 cannot read BATCH_ITEM_SHAPE (added in 2.20); use "
        "another value or serve with Triton >= 2.20",
    ]
    assert check_schema(text, V(2, 36)) == []
    # a number instead of the name: Triton's proto3 enums take any number, so every version reads it
    assert check_schema(BASE + 'output [ { name: "y" data_type: 14 dims: [ 1 ] } ]\n', V(2, 19)) == []


def test_validate_refuses_a_field_the_server_cannot_read_and_a_named_newer_server_reads(
    tmp_path: Path,
) -> None:
    repository = tmp_path / "repository"
    make_linear_onnx(repository / "lin" / "1" / "model.onnx")
    (repository / "lin" / "config.pbtxt").write_text(
        'name: "lin"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        'model_metrics { metric_control [ { metric_identifier { family: "nv_inference_request_duration" } '
        "histogram_options { buckets: [ 1, 10 ] } } ] }\n"
    )
    assert [str(p) for p in validate_repository(repository).errors] == [
        "error: lin: config.pbtxt: model_metrics: Triton 2.51 cannot read this field (added in 2.52); remove "
        "it or serve with Triton >= 2.52"
    ]
    assert validate_repository(repository, Server.named(V(2, 52))).ok


def test_gpu_ids_as_validate_takes_them() -> None:
    assert parse_gpu_ids("0,1") == frozenset({0, 1})
    assert parse_gpu_ids("none") == frozenset()
    for bad in ("all", "0,x", "-1"):
        with pytest.raises(ValidationError, match="--gpus"):
            parse_gpu_ids(bad)


def _groups(text: str) -> model_config_pb2.ModelConfig:
    return parse_model_config(f'name: "m"\ninstance_group [ {text} ]\n')


def test_gpu_placement_is_an_error_where_the_serving_machine_is_known() -> None:
    no_gpu = Server(V(2, 51), True, frozenset(), "this machine")
    found = check_gpus(_groups("{ kind: KIND_GPU }"), no_gpu)
    assert [s for s, _ in found] == ["error"]
    assert "instance_group[0] is KIND_GPU but this machine has no GPU" in found[0][1]
    assert "no GPUs are available" in found[0][1] and "--triton-version" in found[0][1]
    two = Server.named(V(2, 51), frozenset({0, 1}))
    found = check_gpus(_groups("{ kind: KIND_CPU }, { kind: KIND_GPU gpus: [ 1, 2 ] }"), two)
    assert found == [
        (
            "error",
            "instance_group[1] names GPU 2 but the serving machine (--gpus) has GPUs [0, 1], so Triton refuses "
            "the model (invalid or unsupported gpu id 2; judged for the GPUs --gpus names); name GPUs it has, "
            "or drop gpus to use them all",
        )
    ]
    assert check_gpus(_groups("{ kind: KIND_GPU }, { kind: KIND_GPU gpus: [ 1 ] }"), two) == []
    assert check_gpus(_groups("{ kind: KIND_AUTO }, { kind: KIND_CPU }"), no_gpu) == []


def test_gpu_placement_is_a_warning_where_the_serving_machine_is_unknown() -> None:
    found = check_gpus(_groups("{ kind: KIND_GPU gpus: [ 64 ] }"), Server.named(V(2, 51)))
    assert [s for s, _ in found] == ["warning"]
    assert "GPU(s) [64]" in found[0][1] and "the serving machine is unknown" in found[0][1]


EMBEDDED = Server(V(2, 51), True, frozenset(), "this machine")
CONTAINER = Server.named(V(2, 51))
ONNX = Serving("onnxruntime_onnx", "onnxruntime", "model.onnx")
PYTHON = Serving("", "python", "model.py")


def _model(tmp_path: Path, runtime: str = "", files: dict[str, bytes] | None = None) -> tuple:
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    for name, data in (files or {}).items():
        (model_dir / name).write_bytes(data)
    config = parse_model_config(f'name: "m"\nruntime: "{runtime}"\n')
    return config, model_dir, model_dir / "1"


@pytest.mark.parametrize("runtime", ["", "model.py", "/model.py", "./model.py"])
def test_backend_libraries_the_embedded_server_has(tmp_path: Path, runtime: str) -> None:
    config, model_dir, version = _model(tmp_path, runtime)
    assert check_backend_library(config, ONNX, model_dir, version, EMBEDDED) == []


@pytest.mark.parametrize(
    ("serving", "runtime", "files", "fragment", "anywhere"),
    [
        (ONNX, "libtriton_missing.so", {}, "(unable to find backend library)", False),
        (ONNX, "libtriton_python.so", {}, "(unable to find backend library)", False),
        (ONNX, "../model.py", {}, "(unable to find backend library)", False),
        (ONNX, "../python/libtriton_python.so", {}, "(backend library escapes backend directory)", False),
        (
            ONNX,
            "../libtriton_up.so",
            {"libtriton_up.so": b"\x7fELF"},
            "resolves to libtriton_up.so outside 1/",
            True,
        ),
        (ONNX, "libtriton_x.so", {"libtriton_x.so": b"text"}, "libtriton_x.so is not a shared library", True),
        (PYTHON, "model.py", {}, "has no python/model.py", True),
        (Serving("tensorrt_plan", "tensorrt", "model.plan"), "", {}, "has no 'tensorrt' backend", False),
    ],
)
def test_backend_libraries_triton_cannot_load(
    tmp_path: Path, serving: Serving, runtime: str, files: dict[str, bytes], fragment: str, anywhere: bool
) -> None:
    """Refused by the embedded server; ``anywhere`` also by a Triton whose backend directory is unknown."""
    config, model_dir, version = _model(tmp_path, runtime, files)
    found = check_backend_library(config, serving, model_dir, version, EMBEDDED)
    assert [s for s, _ in found] == ["error"] and fragment in found[0][1], found
    elsewhere = check_backend_library(config, serving, model_dir, version, CONTAINER)
    assert bool(elsewhere) == anywhere, elsewhere


def test_a_runtime_linked_out_of_the_model_directory_escapes(tmp_path: Path) -> None:
    outside = tmp_path / "libtriton_outside.so"
    outside.write_bytes(b"\x7fELF")
    config, model_dir, version = _model(tmp_path, "libtriton_linked.so")
    (model_dir / "libtriton_linked.so").symlink_to(outside)
    found = check_backend_library(config, ONNX, model_dir, version, CONTAINER)
    assert [s for s, _ in found] == ["error"] and "escapes backend directory" in found[0][1]


def _ensemble(outputs: str, steps: str) -> model_config_pb2.ModelConfig:
    return parse_model_config(
        'name: "e"\nplatform: "ensemble"\nmax_batch_size: 8\n'
        'input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        f"output [ {outputs} ]\nensemble_scheduling {{ step [ {steps} ] }}\n"
    )


def _step_model(decoupled: bool) -> model_config_pb2.ModelConfig:
    policy = "model_transaction_policy { decoupled: true }\n" if decoupled else ""
    return parse_model_config(
        'name: "s"\nbackend: "python"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n' + policy
    )


OUT2 = '{ name: "P" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "Q" data_type: TYPE_FP32 dims: [ 4 ] }'


def _step(model: str, source: str, target: str) -> str:
    return f'{{ model_name: "{model}" input_map {{ key: "x" value: "{source}" }} output_map {{ key: "y" value: "{target}" }} }}'


def test_ensemble_outputs_from_two_decoupled_steps_are_refused() -> None:
    steps = {"dec": _step_model(True), "plain": _step_model(False)}
    config = _ensemble(OUT2, f"{_step('dec', 'A', 'P')}, {_step('dec', 'A', 'Q')}")
    found = check_ensemble(config, steps)
    assert [(f.severity, f.path) for f in found] == [("error", ("output", 1))]
    assert (
        "come from decoupled step 0 (model 'dec') and from decoupled step 1 (model 'dec')" in found[0].message
    )
    # one decoupled step and one that is not: refused too
    config = _ensemble(OUT2, f"{_step('dec', 'A', 'P')}, {_step('plain', 'A', 'Q')}")
    assert [f.path for f in check_ensemble(config, steps)] == [("output", 1)]
    # every output from one decoupled step's responses, directly or through a step after it: loads
    config = _ensemble(OUT2, f"{_step('dec', 'A', 'P')}, {_step('plain', 'P', 'Q')}")
    assert check_ensemble(config, steps) == []
