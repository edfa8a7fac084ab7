"""Property-based fuzzing of the spec: whatever a user writes either loads or fails with field-path
errors; never another exception. A spec that loads renders a config Triton's schema parses.

Specs are generated as a valid spec (plain, stateful with sequence batchers and implicit state, or
streaming) mutated at random: keys drawn from the real field names (any letter case, empty, bracketed)
and values drawn from what breaks parsers (bounds of int32/int64, huge and negative numbers, NaN, nested
lists, strings with markup and path characters).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from generator.build.config import (
    DeviceProfile,
    build_config,
    check_rendered,
    initial_state_file,
    render,
    sequence_tensors,
)
from generator.core.errors import GeneratorError, SpecError
from generator.core.signature import Signature, TensorInfo
from generator.core.templating import environment
from generator.spec.models import (
    BooleanControl,
    CorrelationControl,
    InitialState,
    ModelSettings,
    ModelSpec,
    SequenceBatching,
    SequenceControls,
    SequenceState,
    field_path,
    json_schema,
    load_spec,
    parse_spec,
)
from generator.spec.names import files_destination
from generator.spec.tuned import TUNABLE, load_spec_with_tuned

FIELDS = sorted(
    set(ModelSpec.model_fields)
    | {"repository", "defaults", "models", "dims", "dtype", "reshape", "optional", "count", "kind"}
    | {"preferred_batch_size", "max_queue_delay_microseconds", "latest", "specific", "all", "seed"}
    | {"batch_sizes", "atol", "rtol", "batch_size", "data", "quantize", "fp16", "simplify", "budget"}
    | {"ensembles", "steps", "model", "input_map", "output_map", "min", "max", "opt", "tokenizer", "labels"}
    # The sequence batcher's settings, controls and implicit state, and the names Triton's config gives them.
    | set(SequenceBatching.model_fields)
    | set(SequenceControls.model_fields)
    | set(BooleanControl.model_fields)
    | set(CorrelationControl.model_fields)
    | set(SequenceState.model_fields)
    | set(InitialState.model_fields)
    | {"decoupled", "direct", "oldest", "zero_data", "control_input", "START", "CORRID", "sequence_steps"}
)
EDGE_NUMBERS = [0, 1, -1, -5, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**12, 10**30]
STRINGS = [
    "",
    "..",
    ".",
    "/",
    "../x",
    "[/x]",
    "[red]x[/]",
    "x" * 300,
    "tritongen-manifest.json",
    "FP32",
    "-1",
    "zeros",
    "oldest",
    "UINT64",
    "s.npy",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(STRINGS),
    st.text(max_size=12),
)
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(FIELDS).map(str.capitalize),
    st.sampled_from(["", "[x]", "Threads", "str"]),
    st.text(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


small = st.integers(-2, 70)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", "", "[/x]"]),
        "dtype": st.sampled_from(["FP32", "INT64", "FP16", "BOOL", "STRING", "BF16", "TYPE_FP32", "FP33"]),
        "dims": st.lists(st.sampled_from([-2, -1, 0, 1, 3, 4, 2**40]), max_size=3),
    },
    optional={
        "reshape": st.lists(st.sampled_from([-1, 1, 4]), max_size=2),
        "optional": st.booleans(),
        "source_name": st.sampled_from(["x", "", "inner:0"]),
        "label_filename": st.sampled_from(["labels.txt", ""]),
    },
)
dims_lists = st.lists(st.sampled_from([-1, 0, 1, 16, 2**40]), max_size=2)
control_names = st.sampled_from(
    ["S", "E", "R", "ID", "S", "E", "x", "y", "h_in", "c_out", "", "[/x]", "a\nb"]
)
controls = st.one_of(
    control_names,
    st.fixed_dictionaries(
        {"name": control_names},
        optional={
            "dtype": st.sampled_from(["BOOL", "INT32", "FP32", "UINT64", "INT64", "STRING", "bool", "FP16"])
        },
    ),
)
initial_dims = st.lists(st.sampled_from([1, 4, 16, -1, 0]), max_size=2)
initial_states = st.one_of(
    st.sampled_from(["zeros", "ones", None]),
    st.fixed_dictionaries(
        {
            "data_file": st.sampled_from(
                ["s.npy", "d/s.npy", "s.bin", "t.npy", "", ".", "..", "/", "d/", "d/..", "a\x00b", "x" * 300]
            )
        },
        optional={"dims": initial_dims},
    ),
    st.fixed_dictionaries({"dims": initial_dims}),
)
#: A valid implicit state (one of two names, small dims), or one with a field changed to an edge value.
states = st.builds(
    lambda name, fields, edit: {"input_name": f"{name}_in", "output_name": f"{name}_out", **fields, **edit},
    st.sampled_from(["h", "c", "k"]),
    st.fixed_dictionaries(
        {
            "dtype": st.sampled_from(["FP32", "INT64", "FP16", "BOOL", "fp32", "UINT8"]),
            "dims": st.lists(st.sampled_from([1, 4, 16]), max_size=2),
        },
        optional={
            "initial_state": initial_states,
            "use_same_buffer_for_input_output": st.booleans(),
            "use_growable_memory": st.booleans(),
        },
    ),
    st.one_of(
        st.just({}),
        st.dictionaries(
            st.sampled_from(["input_name", "output_name", "dtype", "dims", "initial_state", "zero_data"]),
            st.one_of(control_names, st.sampled_from(["STRING", "FP33", "TYPE_FP32"]), dims_lists, values),
            max_size=1,
        ),
    ),
)


def _edited(valid: st.SearchStrategy, edits: st.SearchStrategy) -> st.SearchStrategy:
    """A valid mapping, or one with a key set to an edge value (the edit may add, replace or misspell)."""
    return st.builds(lambda fields, edit: {**fields, **edit}, valid, st.one_of(st.just({}), edits))


def _typed(name: str, dtypes: list[str]) -> st.SearchStrategy:
    return st.one_of(
        st.just(name), st.fixed_dictionaries({"name": st.just(name), "dtype": st.sampled_from(dtypes)})
    )


#: The controls, each named and typed as Triton takes it, now and then one set to something else.
sequence_controls = _edited(
    st.fixed_dictionaries(
        {},
        optional={
            "start": _typed("S", ["BOOL", "INT32", "FP32", "bool"]),
            "END": _typed("E", ["BOOL", "INT32"]),
            "ready": _typed("R", ["FP32", "INT32"]),
            "corrid": _typed("ID", ["UINT64", "INT64", "UINT32", "INT32", "STRING", "uint64"]),
        },
    ),
    st.dictionaries(
        st.sampled_from(["start", "end", "ready", "corrid", "Ready", "x", "CONTROL_SEQUENCE_START"]),
        st.one_of(controls, values),
        max_size=1,
    ),
)
sequence_common = {
    "max_sequence_idle_microseconds": st.sampled_from([0, 1, 5_000_000, 2**63, 2**64 - 1]),
    "max_queue_delay_microseconds": st.sampled_from([0, 100, 2**64 - 1]),
    "controls": sequence_controls,
}
sequence_edits = st.dictionaries(
    st.sampled_from([*SequenceBatching.model_fields, "direct", "control_input", "Strategy"]),
    st.one_of(
        st.sampled_from(["newest", "Direct", -1, 0, 1.5, math.nan, 2**64, 2**31, [0], [2**31], "S", True]),
        values,
    ),
    max_size=1,
)
#: A sequence batcher a user plausibly writes: either strategy with its own fields, controls and states,
#: now and then one field set to an edge value (the other strategy's fields among them).
sequence_batchers = st.one_of(
    st.booleans(),
    _edited(
        st.fixed_dictionaries(
            {"strategy": st.just("direct"), "state": st.lists(states, min_size=1, max_size=2)},
            optional={
                **sequence_common,
                "minimum_slot_utilization": st.sampled_from([0, 0.5, 1, 1e-300, 5e-324]),
            },
        ),
        sequence_edits,
    ),
    _edited(
        st.fixed_dictionaries(
            {"strategy": st.just("oldest"), "state": st.lists(states, min_size=1, max_size=2)},
            optional={
                **sequence_common,
                "max_candidate_sequences": st.integers(1, 70),
                "preferred_batch_size": st.lists(st.integers(1, 70), max_size=3),
                "preserve_ordering": st.booleans(),
            },
        ),
        sequence_edits,
    ),
    _edited(
        st.fixed_dictionaries({}, optional={**sequence_common, "state": st.lists(states, max_size=2)}),
        sequence_edits,
    ),
)
#: A built-in step or a user's Python model, with settings near the edges of what is valid.
python_models = st.fixed_dictionaries(
    {
        "framework": st.just("python"),
        "source": st.sampled_from(
            ["builtin:tokenizer", "builtin:postprocess", "builtin:image", "builtin:x", "p.py"]
        ),
    },
    optional={
        "step": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "tokenizer": st.sampled_from(["t.json", "text.py:tokenizer", ""]),
                    "max_length": small,
                    "padding": st.sampled_from(["max_length", "longest", "left"]),
                    "labels": st.sampled_from(["l.txt", ""]),
                    "top_k": small,
                    "size": st.lists(small, max_size=3),
                    "layout": st.sampled_from(["NCHW", "NHWC", "CHW"]),
                },
            ),
            values,
        ),
        "files": st.one_of(st.lists(st.sampled_from(["a.txt", "", "dir"]), max_size=2), values),
        "decoupled": st.one_of(st.booleans(), values),
        "sequence_batching": sequence_batchers,
    },
)
ensemble_steps = st.lists(
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["m0", "m1", "e", "", "nope"]),
            "input_map": st.dictionaries(
                st.sampled_from(["x", "y", ""]), st.sampled_from(["X", "Y", ""]), max_size=2
            ),
            "output_map": st.dictionaries(
                st.sampled_from(["x", "y", ""]), st.sampled_from(["Y", "Z", ""]), max_size=2
            ),
        },
        optional={"version": st.integers(-2, 2)},
    ),
    max_size=3,
)
ensembles = st.fixed_dictionaries(
    {"name": st.sampled_from(["e", "m0", "", ".x"]), "steps": ensemble_steps},
    optional={
        "max_batch_size": small,
        "inputs": st.lists(tensors, max_size=1),
        "outputs": st.lists(tensors, max_size=1),
    },
)
#: Settings a user plausibly writes: real field names, values near the edges of what is valid.
plausible_settings = st.fixed_dictionaries(
    {},
    optional={
        "max_batch_size": small,
        "dynamic_batching": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={
                    "preferred_batch_size": st.lists(small, max_size=3),
                    "max_queue_delay_microseconds": small,
                    "priority_levels": small,
                    "default_priority_level": small,
                    "preserve_ordering": st.booleans(),
                    "default_queue_policy": st.fixed_dictionaries(
                        {},
                        optional={
                            "max_queue_size": small,
                            "timeout_action": st.sampled_from(["REJECT", "DELAY", "DROP"]),
                        },
                    ),
                },
            ),
        ),
        "instance_group": st.fixed_dictionaries(
            {},
            optional={
                "count": small,
                "kind": st.sampled_from(["cpu", "gpu", "auto"]),
                "gpus": st.lists(small, max_size=2),
            },
        ),
        "version_policy": st.one_of(
            st.fixed_dictionaries({"latest": small}),
            st.fixed_dictionaries({"all": st.booleans()}),
            st.fixed_dictionaries({"specific": st.lists(small, max_size=3)}),
        ),
        "parameters": st.dictionaries(
            st.sampled_from(
                ["intra_op_thread_count", "execution_mode", "enable_mem_arena", "INFERENCE_MODE", "x"]
            ),
            st.one_of(
                small, st.booleans(), st.sampled_from([math.nan, 2.0, "4x", "on", 2**31]), st.text(max_size=3)
            ),
            max_size=2,
        ),
        "warmup": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={"batch_size": small, "count": small, "data": st.sampled_from(["random", "zero"])},
            ),
        ),
        "response_cache": st.booleans(),
        "sequence_batching": sequence_batchers,
        "decoupled": st.booleans(),
        "verify": st.fixed_dictionaries(
            {},
            optional={
                "batch_sizes": st.lists(small, max_size=3),
                "seed": small,
                "enabled": st.booleans(),
                "sequence_steps": st.sampled_from([0, 1, 8, 4096, 4097]),
            },
        ),
        "opset": st.sampled_from([6, 7, 17, 20, 99, 100]),
        "format": st.sampled_from(["onnx", "torchscript", "tensorrt"]),
        "optimize": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={
                    "simplify": st.booleans(),
                    "quantize": st.sampled_from(["none", "dynamic"]),
                    "fp16": st.booleans(),
                },
            ),
        ),
        "inputs": st.lists(tensors, max_size=2),
        "outputs": st.lists(tensors, max_size=2),
        "accelerators": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["openvino", "cuda", "tensorrt"])}), max_size=1
        ),
        "version": st.integers(0, 3),
        "shapes": st.dictionaries(
            st.sampled_from(["x", "y"]),
            st.fixed_dictionaries({"min": dims_lists, "opt": dims_lists, "max": dims_lists}),
            max_size=2,
        ),
        "values": st.dictionaries(
            st.sampled_from(["x", "y"]), st.fixed_dictionaries({"min": small, "max": small}), max_size=2
        ),
    },
)


def _base_model(index: int) -> dict[str, Any]:
    return {
        "name": f"m{index}",
        "framework": "onnx",
        "source": "m.onnx",
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [4]}],
        "outputs": [{"name": "y", "dtype": "FP32", "dims": [3]}],
    }


def _two_models_and_an_ensemble() -> dict[str, Any]:
    return {
        "defaults": {"max_batch_size": 8},
        "models": [_base_model(0), _base_model(1)],
        "ensembles": [
            {
                "name": "e",
                "steps": [
                    {"model": "m0", "input_map": {"x": "X"}, "output_map": {"y": "Y"}},
                    {"model": "m1", "input_map": {"x": "Y"}, "output_map": {"y": "Z"}},
                ],
            }
        ],
    }


def _stateful() -> dict[str, Any]:
    """Two stateful models, one per strategy, with every control, implicit states (zeros, a file, a -1
    axis), and an ensemble over one of them; the dynamic batcher of the defaults is the other models'."""
    direct = {
        "strategy": "direct",
        "max_sequence_idle_microseconds": 5_000_000,
        "max_queue_delay_microseconds": 100,
        "minimum_slot_utilization": 0.5,
        "controls": {
            "start": "S",
            "end": {"name": "E", "dtype": "BOOL"},
            "ready": {"name": "R", "dtype": "FP32"},
            "corrid": {"name": "ID", "dtype": "UINT64"},
        },
        "state": [
            {
                "input_name": "h_in",
                "output_name": "h_out",
                "dtype": "FP32",
                "dims": [4],
                "initial_state": "zeros",
            },
            {
                "input_name": "c_in",
                "output_name": "c_out",
                "dtype": "INT64",
                "dims": [-1, 2],
                "initial_state": {"data_file": "c.npy", "dims": [3, 2]},
                "use_same_buffer_for_input_output": True,
                "use_growable_memory": True,
            },
        ],
    }
    oldest = {
        "strategy": "oldest",
        "max_candidate_sequences": 4,
        "preferred_batch_size": [2, 4],
        "preserve_ordering": True,
        "controls": {"START": "S", "corrid": {"name": "ID", "dtype": "STRING"}},
        "state": [{"input_name": "h_in", "output_name": "h_out", "dtype": "FP16", "dims": [2, 3]}],
    }
    return {
        "defaults": {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 5}},
        "models": [
            {**_base_model(0), "sequence_batching": direct},
            {
                **_base_model(1),
                "max_batch_size": 4,
                "sequence_batching": oldest,
                "verify": {"sequence_steps": 3},
            },
            _base_model(2),
        ],
        "ensembles": [
            {"name": "e", "steps": [{"model": "m0", "input_map": {"x": "X"}, "output_map": {"y": "Y"}}]}
        ],
    }


def _decoupled() -> dict[str, Any]:
    """A decoupled (streaming) Python model, one with controls of a sequence batcher, beside an ONNX model."""
    python = {
        "framework": "python",
        "source": "gen.py",
        "inputs": [{"name": "prompt", "dtype": "STRING", "dims": [1]}],
        "outputs": [{"name": "text", "dtype": "STRING", "dims": [-1]}],
    }
    return {
        "models": [
            _base_model(0),
            {**python, "name": "gen", "decoupled": True, "max_batch_size": 0},
            {
                **python,
                "name": "chat",
                "decoupled": True,
                "sequence_batching": {"controls": {"start": "S", "end": "E", "corrid": "ID"}},
            },
        ]
    }


#: The valid specs the mutations start from.
BASES = (_two_models_and_an_ensemble, _stateful, _decoupled)


def _values_like(value: Any) -> st.SearchStrategy:
    """Values of the kind ``value`` is: a boolean, an edge number, a string that breaks parsers, the list
    with an item dropped or repeated."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(-2, 70))
    if isinstance(value, float):
        return st.floats(allow_nan=True, allow_infinity=True)
    if isinstance(value, str):
        return st.one_of(st.sampled_from(STRINGS), st.text(max_size=6))
    if isinstance(value, list) and value:
        return st.integers(0, len(value) - 1).flatmap(
            lambda i: st.sampled_from([value[:i] + value[i + 1 :], value[: i + 1] + value[i:]])
        )
    return values


def _containers(data: Any) -> list[Any]:
    """Every mapping and list in ``data``, outermost first."""
    if isinstance(data, dict):
        return [data, *(c for v in data.values() for c in _containers(v))]
    if isinstance(data, list):
        return [data, *(c for v in data for c in _containers(v))]
    return []


@st.composite
def specs(draw: st.DrawFn) -> Any:
    """A valid spec (plain, stateful or streaming) with a few random edits anywhere in it, or something
    else entirely."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    spec = draw(st.sampled_from(BASES))()
    for _ in range(draw(st.integers(1, 4))):
        target: Any = spec
        if draw(st.booleans()):  # any mapping or list of the spec, the deepest as likely as the top
            target = draw(st.sampled_from(_containers(spec)))
        # Walk a random path into the spec, then set, replace or delete a key there.
        for _depth in range(draw(st.integers(0, 6))):
            if isinstance(target, dict) and target:
                child = target[draw(st.sampled_from(sorted(target, key=str)))]
            elif isinstance(target, list) and target:
                child = target[draw(st.integers(0, len(target) - 1))]
            else:
                break
            if not isinstance(child, (dict, list)):
                break
            target = child
        if isinstance(target, dict):
            edit = draw(st.sampled_from(["pop", "add", "replace"]))
            if target and edit == "pop":
                target.pop(draw(st.sampled_from(sorted(target, key=str))))
            if edit == "replace" and target:  # the key stays right; the value often keeps its kind
                key = draw(st.sampled_from(sorted(target, key=str)))
                target[key] = draw(st.one_of(_values_like(target[key]), values))
            else:
                target[draw(keys)] = draw(values)
        elif isinstance(target, list):
            target.append(draw(values))
    return spec


def _assert_field_path_errors(error: SpecError) -> None:
    assert error.problems
    for line in error.problems:
        assert line.startswith("spec: "), line
        assert ": " in line.removeprefix("spec: "), line
        assert "\n" not in line


def _assert_names_unique(spec: Any) -> None:
    """What a loaded spec guarantees the build: no name given twice where Triton or a file needs one."""
    for model in spec.models:
        inputs = [t.name for t in model.inputs or []]
        outputs = [t.name for t in model.outputs or []]
        assert len(set(inputs)) == len(inputs) and len(set(outputs)) == len(outputs), model
        assert model.target == "python" or not set(inputs) & set(outputs), model
        destinations = [files_destination(f) for f in model.files or []]
        assert len(set(destinations)) == len(destinations), model.files
    assert len({(m.name, m.version) for m in spec.models}) == len(spec.models)
    names = [m.name for m in spec.models] + [e.name for e in spec.ensembles]
    assert len({*names}) == len({m.name for m in spec.models}) + len(spec.ensembles), names
    for ensemble in spec.ensembles:
        written = [tensor for step in ensemble.steps for tensor in step.output_map.values()]
        declared = [t.name for t in (ensemble.inputs or []) + (ensemble.outputs or [])]
        assert len(set(written)) == len(written) and len(set(declared)) == len(declared), ensemble
        assert not set(written) & {t.name for t in ensemble.inputs or []}, ensemble
    for model in spec.models:
        _assert_sequence_tensors_apart(model)


def _assert_sequence_tensors_apart(model: ModelSpec) -> None:
    """What a loaded stateful model guarantees: each control and state tensor has one role and is no input
    or output of the config, and each state's initial values get a file of their own."""
    batcher = model.sequence_batching
    if not batcher:
        return
    roles = [c.name for _, c in batcher.controls.items()]
    roles += [name for state in batcher.state for name in (state.input_name, state.output_name)]
    assert len(set(roles)) == len(roles), batcher
    fed, kept = sequence_tensors(model)
    assert not fed & {t.name for t in model.inputs or []}, (fed, model.inputs)
    assert not kept & {t.name for t in model.outputs or []}, (kept, model.outputs)
    files = [initial_state_file(state) for state in batcher.state]
    files = [name for name in files if name is not None]
    assert len(set(files)) == len(files), files
    assert all(name not in ("", ".", "..") and "/" not in name for name in files), files


def _render_declared(spec: Any, profile: DeviceProfile | None = None) -> None:
    """Render each model's config from its declared I/O and parse it back with Triton's schema."""
    _assert_names_unique(spec)
    env = environment()
    for model in spec.models:
        if not model.inputs or not model.outputs:
            continue
        batch = (-1,) if (model.max_batch_size or 0) > 0 else ()

        def info(t: Any, batch: tuple[int, ...] = batch) -> TensorInfo:
            return TensorInfo(t.name, t.dtype, batch + tuple(t.dims))

        signature = Signature(tuple(map(info, model.inputs)), tuple(map(info, model.outputs)))
        try:
            config = build_config(
                model, signature, "onnxruntime_onnx", profile or DeviceProfile(), "model.onnx"
            )
        except GeneratorError as exc:  # a rule Triton applies to the config, reported at the spec's field
            for line in exc.problems:
                assert line.startswith(f"model '{model.name}': ") and "\n" not in line, exc.problems
            continue
        # What the build writes parses with Triton's schema and says what was intended.
        check_rendered(render(config, env), config, f"{model.name}/config.pbtxt")


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(specs())
def test_any_spec_loads_or_fails_with_field_paths(data: Any) -> None:
    try:
        spec = parse_spec(data, origin="spec")
    except SpecError as error:
        _assert_field_path_errors(error)
        return
    _render_declared(spec)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(python_models, st.lists(ensembles, max_size=2))
def test_python_models_and_ensembles_load_or_fail_with_field_paths(model: dict, pipelines: list) -> None:
    data = {"models": [_base_model(0), _base_model(1), {"name": "p", **model}], "ensembles": pipelines}
    try:
        spec = parse_spec(data, origin="spec")
    except SpecError as error:
        _assert_field_path_errors(error)
        return
    assert [e.name for e in spec.ensembles] == [e["name"] for e in pipelines]
    _render_declared(spec)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(plausible_settings, st.sampled_from(["cpu", "gpu", "auto"]))
def test_plausible_settings_load_and_render_or_fail_with_field_paths(extra: dict, device: str) -> None:
    try:
        spec = parse_spec({"models": [{**_base_model(0), **extra}]}, origin="spec")
    except SpecError as error:
        _assert_field_path_errors(error)
        return
    _render_declared(spec, DeviceProfile.parse(device, None))


#: How a model with a sequence batcher is served: (framework, source, format).
SERVED_AS = [
    ("onnx", "m.onnx", None),
    ("onnx", "m.onnx", None),
    ("onnx", "m.onnx", None),
    ("python", "p.py", None),
    ("torch", "m.py:f", "torchscript"),
    ("onnx", "m.onnx", "tensorrt"),
]


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    sequence_batchers,
    st.sampled_from(SERVED_AS),
    st.fixed_dictionaries(
        {},
        optional={
            "max_batch_size": small,
            "decoupled": st.sampled_from([False, True, None]),
            "dynamic_batching": st.sampled_from([False, None, True]),
            "response_cache": st.booleans(),
        },
    ),
    st.sampled_from(["model", "defaults", "both"]),
    st.sampled_from(["cpu", "gpu"]),
)
def test_sequence_batchers_load_and_render_or_fail_with_field_paths(
    batcher: Any, served: tuple[str, str, str | None], extra: dict, where: str, device: str
) -> None:
    # A stateful (or streaming) model of each kind Triton serves, its batcher given by the model, by the
    # defaults, or by both (the model's wins): its batcher, controls and states either load and render a
    # config Triton's schema parses, or fail at their field paths.
    framework, source, target = served
    model = {**_base_model(0), "framework": framework, "source": source, **extra}
    if target:
        model["format"] = target
    defaults = {"sequence_batching": batcher} if where != "model" else {}
    if where != "defaults":
        model["sequence_batching"] = batcher if where == "model" else {"strategy": "oldest"}
    try:
        spec = parse_spec({"defaults": defaults, "models": [model]}, origin="spec")
    except SpecError as error:
        _assert_field_path_errors(error)
        event("refused")
        return
    batching = spec.models[0].sequence_batching
    event("loaded with state" if batching and batching.state else "loaded")
    _render_declared(spec, DeviceProfile.parse(device, None))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(specs(), st.sampled_from(["plain", "duplicate"]))
def test_any_spec_file_loads_or_fails_in_one_error_type(tmp_path_factory: Any, data: Any, twist: str) -> None:
    text = yaml.safe_dump(data, allow_unicode=True) if not _has_nan(data) else "models: .nan\n"
    if twist == "duplicate":
        text = "models: []\n" + text
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) if twist != "plain" else _loads_or_spec_error():
        load_spec(path)


class _loads_or_spec_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is None or issubclass(kind, SpecError)


def _has_nan(data: Any) -> bool:
    if isinstance(data, float):
        return math.isnan(data)
    if isinstance(data, dict):
        return any(_has_nan(k) or _has_nan(v) for k, v in data.items())
    if isinstance(data, list):
        return any(map(_has_nan, data))
    return False


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"name": ".."}, "models[0].name: '..' cannot be a model name"),
        ({"name": "tritongen-manifest.json"}, "cannot be a model name"),
        ({"name": "x" * 300}, "models[0].name: String should have at most 200 characters"),
        ({"max_batch_size": 2**31}, "models[0].max_batch_size: must be at most 2147483647"),
        ({"max_batch_size": 10**12}, "models[0].max_batch_size: must be at most 2147483647"),
        ({"verify": {"seed": -5}}, "models[0].verify.seed: must be at least 0"),
        ({"verify": {"batch_sizes": [-1]}}, "models[0].verify.batch_sizes[0]: must be at least 1"),
        ({"version_policy": {"specific": [0]}}, "models[0].version_policy.specific[0]: must be at least 1"),
        ({"Max_batch_size": 4}, "models[0].Max_batch_size: unknown field; did you mean 'max_batch_size'?"),
        ({"": 4}, 'models[0][""]: unknown field'),
        ({"[x]": 4}, 'models[0]["[x]"]: unknown field'),
        ({"parameters": {"Threads": [1]}}, "models[0].parameters.Threads: must be a string, an integer"),
        ({"warmup": 3}, "models[0].warmup: must be a mapping of settings, or true/false"),
    ],
)
def test_reported_mistakes_are_one_line_with_their_field_path(edit: dict, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [{**_base_model(0), **edit}]}, origin="s.yaml")
    assert len(caught.value.problems) == 1, caught.value.problems
    assert expected in caught.value.problems[0], caught.value.problems


def test_duplicate_model_is_reported_at_the_second_entry() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [_base_model(0), _base_model(0)]}, origin="s.yaml")
    assert caught.value.problems == [
        "s.yaml: models[1].name: model 'm0' version 1 appears twice (also models[0]); give each a different "
        "version or name"
    ]


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("models:\n  - {name: a, framework: onnx, source: a.onnx}\nmodels: []\n")
    with pytest.raises(SpecError, match=r"spec.yaml:3:1: .*key \"models\" appears twice.*first on line 1"):
        load_spec(path)


def test_deep_nesting_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("models: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(path)


def test_schema_still_describes_the_settings() -> None:
    assert set(ModelSettings.model_fields) <= set(json_schema()["$defs"]["ModelSpec"]["properties"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(plausible_settings, st.dictionaries(st.sampled_from(TUNABLE), values, max_size=4), values),
    st.sampled_from(["m0", "elsewhere"]),
)
def test_any_tuned_settings_load_or_fail_with_the_tuned_files_field_paths(
    tmp_path_factory: Any, tuned: Any, name: str
) -> None:
    # What `tune` writes, or a hand edit of it: the build reads it or reports one line per problem, each
    # naming the tuned file (or the spec) and a field path; never another exception.
    root = tmp_path_factory.mktemp("tuned")
    (root / "spec.yaml").write_text(yaml.safe_dump({"models": [_base_model(0)]}))
    entry = {"settings": tuned, "trial": "20261123T000000Z/1"}
    (root / "spec.tuned.yaml").write_text(
        yaml.safe_dump({"format": 1, "models": {name: entry}}, allow_unicode=True)
    )
    try:
        spec, info = load_spec_with_tuned(root / "spec.yaml")
    except SpecError as error:
        assert error.problems
        for line in error.problems:
            assert "spec.tuned.yaml: " in line or "spec.yaml: " in line, line
            assert "\n" not in line
        return
    if name == "elsewhere":
        assert info.warnings and not info.applied
    _render_declared(spec)


#: Where a spec can give a name twice, and how each duplicate is made.
DUPLICATE_KINDS = (
    "input",
    "output",
    "input_as_output",
    "model",
    "ensemble",
    "ensemble_input",
    "ensemble_output",
    "ensemble_input_as_output",
    "step_output",
    "files",
)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)


@st.composite
def duplicated_specs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid spec (random names, dims and dtypes) with one name given twice; the repeat's field path."""
    tensor_names = draw(st.lists(names, min_size=4, max_size=4, unique=True))
    x, y, big_x, big_y = tensor_names

    def tensor(name: str) -> dict[str, Any]:
        dims = draw(st.lists(st.sampled_from([-1, 1, 3]), min_size=1, max_size=3))
        return {"name": name, "dtype": draw(st.sampled_from(["FP32", "INT64", "FP16"])), "dims": dims}

    models = [
        {
            **_base_model(i),
            "inputs": [tensor(x)],
            "outputs": [tensor(y)],
            "max_batch_size": draw(st.integers(0, 64)),
        }
        for i in range(2)
    ]
    files = draw(st.lists(st.sampled_from(["a.txt", "d/b.txt", "lib", "e/"]), unique=True, max_size=2))
    python = {"name": "p", "framework": "python", "source": "p.py", "inputs": [tensor(x)]}
    models.append({**python, "outputs": [tensor(y)], "files": files or None})
    ensemble = {
        "name": "e",
        "inputs": [tensor(big_x)],
        "outputs": [tensor(big_y)],
        "steps": [
            {"model": "m0", "input_map": {x: big_x}, "output_map": {y: "T"}},
            {"model": "m1", "input_map": {x: "T"}, "output_map": {y: big_y}},
        ],
    }
    spec = {"models": models, "ensembles": [ensemble]}
    kind = draw(st.sampled_from(DUPLICATE_KINDS))
    model_index = draw(st.integers(0, 2))
    model = models[model_index]
    if kind in ("input", "output"):
        tensors = model[f"{kind}s"]
        tensors.insert(draw(st.integers(1, len(tensors))), tensor(tensors[0]["name"]))
        where = f"models[{model_index}].{kind}s[{[t['name'] for t in tensors].index(tensors[0]['name'], 1)}]"
    elif kind == "input_as_output":
        model, model_index = models[model_index % 2], model_index % 2  # a Python model may do it
        model["outputs"].append(tensor(model["inputs"][0]["name"]))
        where = f"models[{model_index}].outputs[1]"
    elif kind == "model":
        models.append({**_base_model(model_index % 2), "max_batch_size": draw(st.integers(0, 64))})
        where = f"models[{len(models) - 1}]"
    elif kind == "ensemble":
        copy = {**ensemble, "name": draw(st.sampled_from(["m0", "m1", "p", "e"]))}
        spec["ensembles"].append(copy)
        where = "ensembles[1]"
    elif kind in ("ensemble_input", "ensemble_output"):
        tensors = ensemble[f"{kind.removeprefix('ensemble_')}s"]
        tensors.append(tensor(tensors[0]["name"]))
        where = f"ensembles[0].{kind.removeprefix('ensemble_')}s[1]"
    elif kind == "ensemble_input_as_output":
        ensemble["outputs"].append(tensor(big_x))
        where = "ensembles[0].outputs[1]"
    elif kind == "step_output":
        step = draw(st.integers(0, 1))
        written = draw(st.sampled_from([big_x, "T", big_y]))
        ensemble["steps"][step]["output_map"]["extra"] = written
        where = _first_rewrite(ensemble)
    else:
        listed = draw(st.sampled_from(["a.txt", "d/b.txt", "lib", "e/", "model.py"]))
        again = f"{draw(st.sampled_from(['x', 'x/y', '.']))}/{listed.rstrip('/').split('/')[-1]}"
        python["files"] = [*(files or []), again] if listed != "model.py" else [again]
        where = "models[2].files"
        models[2] = {**python, "outputs": models[2]["outputs"]}
        if listed != "model.py" and files_destination(listed) not in map(files_destination, files):
            python["files"].insert(0, listed)
    return spec, where


def _first_rewrite(ensemble: dict[str, Any]) -> str:
    """The field path of the first step output that writes an ensemble input or an already written tensor."""
    seen = {tensor["name"] for tensor in ensemble["inputs"]}
    for index, step in enumerate(ensemble["steps"]):
        for output, tensor in step["output_map"].items():
            if tensor in seen:
                return field_path(("steps", index, "output_map", output), "ensembles[0]")
            seen.add(tensor)
    raise AssertionError("no tensor is written twice")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(duplicated_specs())
def test_a_name_given_twice_is_a_spec_error_at_the_repeat(case: tuple[dict[str, Any], str]) -> None:
    data, where = case
    with pytest.raises(SpecError) as caught:
        parse_spec(data, origin="spec")
    _assert_field_path_errors(caught.value)
    assert any(line.startswith(f"spec: {where}") for line in caught.value.problems), (where, caught.value)
