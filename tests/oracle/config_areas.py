"""Strategies for the areas Triton judges from the config alone: tensors, reshape, batch inputs and
outputs, dynamic and sequence batching, instance groups.

Each base is a Python-backend model (``backend: "python"``, a trivial ``model.py``), so Triton's verdict
is its core's and the official Python backend's: an oracle.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc

from .base import (
    KIND_CPU,
    KIND_GPU,
    Mutation,
    add_tensor,
    config_of,
    fixed_dims_lists,
    mutated,
    on_config,
    python_config,
    python_models,
    setter,
)
from .models import Case, Model

Control = mc.ModelSequenceBatching.Control

# --- tensors ---------------------------------------------------------------------------------------


def _zero_dim(draw: Any, config: mc.ModelConfig) -> None:
    dims = config.input[0].dims
    dims[draw(st.integers(0, len(dims) - 1))] = 0


def _nhwc(draw: Any, config: mc.ModelConfig) -> None:
    config.input[0].format = mc.ModelInput.FORMAT_NHWC
    config.input[0].dims[:] = draw(st.sampled_from([[4, 4], [2, 2, 2, 2]]))


def _nchw(draw: Any, config: mc.ModelConfig) -> None:
    config.input[0].format = mc.ModelInput.FORMAT_NCHW
    config.input[0].dims[:] = [3, 4, 4]


def _label_file(files: dict[str, bytes]) -> Mutation:
    def mutation(draw: Any, models: list[Model]) -> None:
        config_of(models).output[0].label_filename = "labels.txt"
        models[0].extra = files

    return mutation


TENSOR_MUTATIONS: dict[str, Mutation] = {
    "a dimension of 0": on_config(_zero_dim),
    "a dimension below -1": on_config(
        lambda draw, c: c.output[0].dims.append(draw(st.sampled_from([-2, -8])))
    ),
    "an input without dims": on_config(lambda draw, c: c.input[0].ClearField("dims")),
    "an output without data_type": on_config(
        lambda draw, c: setattr(c.output[0], "data_type", mc.TYPE_INVALID)
    ),
    "an input without a name": on_config(lambda draw, c: setattr(c.input[0], "name", "")),
    "two inputs of one name": on_config(
        lambda draw, c: add_tensor(c.input, c.input[0].name, "TYPE_FP32", [2])
    ),
    "an output named like an input": on_config(lambda draw, c: setattr(c.output[0], "name", c.input[0].name)),
    "NHWC input without 3 dims": on_config(_nhwc),
    "NCHW input with 3 dims": on_config(_nchw),
    "a shape tensor outside TensorRT": on_config(
        lambda draw, c: setattr(c.input[0], "is_shape_tensor", True)
    ),
    "non-linear format outside TensorRT": on_config(
        lambda draw, c: setattr(c.output[0], "is_non_linear_format_io", True)
    ),
    "negative max_batch_size": setter(max_batch_size=-1),
    "no inputs": on_config(lambda draw, c: c.ClearField("input")),
    "no outputs": on_config(lambda draw, c: c.ClearField("output")),
    "an optional input": on_config(lambda draw, c: setattr(c.input[0], "optional", True)),
    "a ragged-batch input": on_config(lambda draw, c: setattr(c.input[0], "allow_ragged_batch", True)),
    "a BF16 input": on_config(lambda draw, c: setattr(c.input[0], "data_type", mc.TYPE_BF16)),
    "an output with a label file": _label_file({"labels.txt": b"cat\ndog\n"}),
    "a label file that is missing": _label_file({}),
    "a label file that is a directory": _label_file({"labels.txt/README": b"not a label file\n"}),
}

# --- reshape ---------------------------------------------------------------------------------------


def _segments(dims: list[int]) -> list[int]:
    """Element counts of the runs of fixed dimensions between variable ones."""
    counts, count = [], 1
    for dim in dims:
        if dim == -1:
            counts.append(count)
            count = 1
        else:
            count *= dim
    return [*counts, count]


def _same_elements(draw: Any, dims: list[int]) -> list[int]:
    shape: list[int] = []
    for index, count in enumerate(_segments(dims)):
        if index:
            shape.append(-1)
        divisors = [d for d in range(2, count) if count % d == 0]
        choices = [[count]] + ([[]] if count == 1 else []) + [[d, count // d] for d in divisors]
        shape += draw(st.sampled_from(choices))
    return shape


def _other_count(draw: Any, dims: list[int]) -> list[int]:
    return [*_same_elements(draw, dims), draw(st.sampled_from([2, 3]))]


def _other_variables(draw: Any, dims: list[int]) -> list[int]:
    shape = _same_elements(draw, dims)
    return [d for d in shape if d != -1] if -1 in shape else [*shape, -1]


def _zero(draw: Any, dims: list[int]) -> list[int]:
    return [*_same_elements(draw, dims), 0]


RESHAPES = {
    "same element count": _same_elements,
    "another element count": _other_count,
    "another number of variable dims": _other_variables,
    "a 0 in reshape": _zero,
    "empty reshape": lambda draw, dims: [],
    "any shape": lambda draw, dims: draw(st.lists(st.sampled_from([1, 2, 4, 6, 8, -1]), max_size=3)),
}


@st.composite
def reshape_cases(draw: Any) -> Case:
    """A tensor's ``reshape`` against its ``dims``, on an input or an output, batching or not."""
    max_batch_size = draw(st.sampled_from([0, 8]))
    dims = draw(st.lists(st.sampled_from([1, 2, 3, 4, 6, -1]), min_size=1, max_size=4))
    label = draw(st.sampled_from(sorted(RESHAPES)))
    shape = RESHAPES[label](draw, dims)
    on_input = draw(st.booleans())
    config = python_config(
        [("INPUT0", "TYPE_FP32", dims if on_input else [4])],
        [("OUTPUT0", "TYPE_FP32", [4] if on_input else dims)],
        max_batch_size,
    )
    tensor = config.input[0] if on_input else config.output[0]
    tensor.reshape.SetInParent()
    tensor.reshape.shape.extend(shape)
    where = "input" if on_input else "output"
    return Case("reshape", f"{label} ({where}, max_batch_size {max_batch_size})", (Model("m", config),))


# --- batch_input / batch_output --------------------------------------------------------------------


@st.composite
def _batch_io_models(draw: Any) -> list[Model]:
    config = python_config(
        [("INPUT0", "TYPE_FP32", [-1]), ("INPUT1", "TYPE_FP32", [4])],
        [("OUTPUT0", "TYPE_FP32", [-1]), ("OUTPUT1", "TYPE_FP32", [4])],
        draw(st.sampled_from([8, 8, 4, 0])),
    )
    batch_input = config.batch_input.add()
    batch_input.kind = draw(st.sampled_from(mc.BatchInput.Kind.values()))
    batch_input.target_name.append("BATCH0")
    batch_input.data_type = draw(st.sampled_from([mc.TYPE_INT32, mc.TYPE_FP32]))
    batch_input.source_input.append("INPUT0")
    if draw(st.booleans()):
        batch_output = config.batch_output.add()
        batch_output.kind = mc.BatchOutput.BATCH_SCATTER_WITH_INPUT_SHAPE
        batch_output.target_name.append("OUTPUT0")
        batch_output.source_input.append("INPUT0")
    return [Model("m", config)]


def _batch_output(config: mc.ModelConfig) -> Any:
    if not config.batch_output:
        batch_output = config.batch_output.add()
        batch_output.kind = mc.BatchOutput.BATCH_SCATTER_WITH_INPUT_SHAPE
        batch_output.target_name.append("OUTPUT0")
        batch_output.source_input.append("INPUT0")
    return config.batch_output[0]


BATCH_IO_MUTATIONS: dict[str, Mutation] = {
    "batch input with two sources": on_config(lambda draw, c: c.batch_input[0].source_input.append("INPUT1")),
    "batch input without a source": on_config(lambda draw, c: c.batch_input[0].ClearField("source_input")),
    "batch input from an unknown input": on_config(
        lambda draw, c: c.batch_input[0].source_input.__setitem__(0, "NOPE")
    ),
    "batch input of TYPE_INT64": on_config(
        lambda draw, c: setattr(c.batch_input[0], "data_type", mc.TYPE_INT64)
    ),
    "batch input of an unknown kind": on_config(lambda draw, c: setattr(c.batch_input[0], "kind", 99)),
    "batch input targeting a config input": on_config(
        lambda draw, c: c.batch_input[0].target_name.__setitem__(0, "INPUT1")
    ),
    "batch output to an unknown output": on_config(
        lambda draw, c: _batch_output(c).target_name.__setitem__(0, "NOPE")
    ),
    "batch output naming a target twice": on_config(
        lambda draw, c: _batch_output(c).target_name.append("OUTPUT0")
    ),
    "batch output from an unknown input": on_config(
        lambda draw, c: _batch_output(c).source_input.__setitem__(0, "NOPE")
    ),
    "batch output of an unknown kind": on_config(lambda draw, c: setattr(_batch_output(c), "kind", 5)),
    "batch output with two sources": on_config(
        lambda draw, c: _batch_output(c).source_input.append("INPUT1")
    ),
    "batch output without a target name": on_config(
        lambda draw, c: _batch_output(c).ClearField("target_name")
    ),
}

# --- dynamic_batching ------------------------------------------------------------------------------


@st.composite
def _dynamic_models(draw: Any) -> list[Model]:
    config = draw(python_models(batch_sizes=(4, 8)))[0].config
    batching = config.dynamic_batching
    batching.SetInParent()
    sizes = draw(st.lists(st.integers(1, config.max_batch_size), max_size=2, unique=True))
    batching.preferred_batch_size.extend(sorted(sizes))
    batching.max_queue_delay_microseconds = draw(st.sampled_from([0, 100, 5000]))
    levels = draw(st.sampled_from([0, 0, 1, 2, 3]))
    if levels:
        batching.priority_levels = levels
        batching.default_priority_level = draw(st.integers(1, levels))
        for level in draw(st.lists(st.integers(1, levels), max_size=2, unique=True)):
            policy = batching.priority_queue_policy[level]
            policy.timeout_action = mc.ModelQueuePolicy.REJECT
            policy.default_timeout_microseconds = draw(st.sampled_from([0, 1000]))
    if draw(st.booleans()):
        batching.default_queue_policy.max_queue_size = draw(st.sampled_from([0, 16]))
    return [Model("m", config)]


def _levels(config: mc.ModelConfig, levels: int = 2, default: int = 1) -> Any:
    batching = config.dynamic_batching
    batching.priority_levels = levels
    batching.default_priority_level = default
    batching.ClearField("priority_queue_policy")
    return batching


def _preserve_with_delay(where: str) -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        batching = _levels(config, 1, 1) if where == "priority" else config.dynamic_batching
        if where != "priority":
            batching.priority_levels = 0
            batching.ClearField("priority_queue_policy")
        batching.preserve_ordering = True
        policy = batching.priority_queue_policy[1] if where == "priority" else batching.default_queue_policy
        policy.timeout_action = mc.ModelQueuePolicy.DELAY
        policy.default_timeout_microseconds = 0 if where == "no timeout" else 100

    return on_config(change)


def _non_batching(preferred: bool) -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        config.max_batch_size = 0
        config.dynamic_batching.ClearField("preferred_batch_size")
        if preferred:
            config.dynamic_batching.preferred_batch_size.append(2)

    return on_config(change)


DYNAMIC_MUTATIONS: dict[str, Mutation] = {
    "preferred size 0": on_config(lambda draw, c: c.dynamic_batching.preferred_batch_size.append(0)),
    "preferred size above max_batch_size": on_config(
        lambda draw, c: c.dynamic_batching.preferred_batch_size.append(c.max_batch_size + 1)
    ),
    "preferred size on a non-batching model": _non_batching(True),
    "dynamic batching on a non-batching model": _non_batching(False),
    "default priority level 0": on_config(lambda draw, c: _levels(c, 2, 0)),
    "default priority level above priority_levels": on_config(lambda draw, c: _levels(c, 2, 3)),
    "queue policy for level 0": on_config(lambda draw, c: _levels(c).priority_queue_policy[0].SetInParent()),
    "queue policy above priority_levels": on_config(
        lambda draw, c: _levels(c).priority_queue_policy[3].SetInParent()
    ),
    "a default level without priority_levels": on_config(lambda draw, c: _levels(c, 0, 3)),
    "preserve_ordering with two priority levels": on_config(
        lambda draw, c: setattr(_levels(c), "preserve_ordering", True)
    ),
    "preserve_ordering with a DELAY default policy": _preserve_with_delay("default"),
    "preserve_ordering with DELAY but no timeout": _preserve_with_delay("no timeout"),
    "preserve_ordering with a DELAY priority policy": _preserve_with_delay("priority"),
}

# --- sequence_batching -----------------------------------------------------------------------------

_CONTROL_VALUES = {
    Control.CONTROL_SEQUENCE_START: ("START", "int32_false_true", [0, 1]),
    Control.CONTROL_SEQUENCE_END: ("END", "bool_false_true", [False, True]),
    Control.CONTROL_SEQUENCE_READY: ("READY", "fp32_false_true", [0.0, 1.0]),
}


def _add_control(config: mc.ModelConfig, kind: int, name: str | None = None) -> Any:
    """Add a control tensor of ``kind`` with a sound value; return the control."""
    control_input = config.sequence_batching.control_input.add()
    control = control_input.control.add()
    control.kind = kind
    if kind == Control.CONTROL_SEQUENCE_CORRID:
        control_input.name = name or "CORRID"
        control.data_type = mc.TYPE_UINT64
    else:
        default, field, values = _CONTROL_VALUES[kind]
        control_input.name = name or default
        getattr(control, field).extend(values)
    return control


@st.composite
def _sequence_models(draw: Any) -> list[Model]:
    config = draw(python_models(batch_sizes=(0, 4)))[0].config
    batching = config.sequence_batching
    batching.SetInParent()
    strategy = draw(st.sampled_from(["none", "direct", "oldest"]))
    if strategy != "none":
        getattr(batching, strategy).SetInParent()
    if strategy == "oldest" and config.max_batch_size:
        batching.oldest.preferred_batch_size.append(draw(st.integers(1, config.max_batch_size)))
    kinds = sorted(Control.Kind.values())
    for kind in draw(st.lists(st.sampled_from(kinds), max_size=4, unique=True)):
        _add_control(config, kind)
    if draw(st.booleans()):
        _add_state(config)
    return [Model("m", config)]


def _add_state(config: mc.ModelConfig, initial: bool = False) -> Any:
    state = config.sequence_batching.state.add()
    state.input_name = "STATE_IN"
    state.output_name = "STATE_OUT"
    state.data_type = mc.TYPE_FP32
    state.dims.extend([2])
    if initial:
        start = state.initial_state.add()
        start.name = "init"
        start.data_type = mc.TYPE_FP32
        start.dims.extend([2])
        start.zero_data = True
    return state


def _initial(change: Any) -> Mutation:
    def mutation(draw: Any, config: mc.ModelConfig) -> None:
        config.sequence_batching.ClearField("state")
        state = _add_state(config, initial=True)
        change(state, state.initial_state[0])

    return on_config(mutation)


def _control_change(kind: int, change: Any) -> Mutation:
    def mutation(draw: Any, config: mc.ModelConfig) -> None:
        change(_add_control(config, kind, f"{Control.Kind.Name(kind)}_X"), config)

    return on_config(mutation)


def _strategy(name: str, change: Any) -> Mutation:
    def mutation(draw: Any, config: mc.ModelConfig) -> None:
        config.max_batch_size = config.max_batch_size or 4
        config.sequence_batching.ClearField("strategy_choice")
        change(getattr(config.sequence_batching, name), config)

    return on_config(mutation)


def _two_kinds_one_name(draw: Any, config: mc.ModelConfig) -> None:
    _add_control(config, Control.CONTROL_SEQUENCE_START, "FLAGS")
    _add_control(config, Control.CONTROL_SEQUENCE_END, "FLAGS")


def _one_entry_two_kinds(draw: Any, config: mc.ModelConfig) -> None:
    _add_control(config, Control.CONTROL_SEQUENCE_START, "FLAGS")
    second = config.sequence_batching.control_input[-1].control.add()
    second.kind = Control.CONTROL_SEQUENCE_END
    second.int32_false_true.extend([0, 1])


def _unnamed_control(draw: Any, config: mc.ModelConfig) -> None:
    _add_control(config, Control.CONTROL_SEQUENCE_READY, "READY_X")
    config.sequence_batching.control_input[-1].name = ""


def _variable_initial(state: Any, start: Any) -> None:
    state.dims[0] = -1
    start.dims[0] = -1


SEQUENCE_MUTATIONS: dict[str, Mutation] = {
    "START given twice": on_config(
        lambda draw, c: [_add_control(c, Control.CONTROL_SEQUENCE_START, n) for n in ("S1", "S2")]
    ),
    "CORRID given twice": on_config(
        lambda draw, c: [_add_control(c, Control.CONTROL_SEQUENCE_CORRID, n) for n in ("C1", "C2")]
    ),
    "one tensor name for START and END": on_config(_two_kinds_one_name),
    "one control tensor with two kinds": on_config(_one_entry_two_kinds),
    "START without a value": _control_change(
        Control.CONTROL_SEQUENCE_START, lambda control, c: control.ClearField("int32_false_true")
    ),
    "READY with two value kinds": _control_change(
        Control.CONTROL_SEQUENCE_READY, lambda control, c: control.int32_false_true.extend([0, 1])
    ),
    "END with three values": _control_change(
        Control.CONTROL_SEQUENCE_END, lambda control, c: control.bool_false_true.append(True)
    ),
    "CORRID with false/true values": _control_change(
        Control.CONTROL_SEQUENCE_CORRID, lambda control, c: control.int32_false_true.extend([0, 1])
    ),
    "CORRID of TYPE_FP32": _control_change(
        Control.CONTROL_SEQUENCE_CORRID, lambda control, c: setattr(control, "data_type", mc.TYPE_FP32)
    ),
    "CORRID of TYPE_STRING": _control_change(
        Control.CONTROL_SEQUENCE_CORRID, lambda control, c: setattr(control, "data_type", mc.TYPE_STRING)
    ),
    "a control tensor without a name": on_config(_unnamed_control),
    "a control tensor named like an input": on_config(
        lambda draw, c: _add_control(c, Control.CONTROL_SEQUENCE_START, c.input[0].name)
    ),
    "oldest preferred size above max_batch_size": _strategy(
        "oldest", lambda s, c: s.preferred_batch_size.append(c.max_batch_size + 1)
    ),
    "oldest preferred size 0": _strategy("oldest", lambda s, c: s.preferred_batch_size.append(0)),
    "direct slot utilization above 1": _strategy(
        "direct", lambda s, c: setattr(s, "minimum_slot_utilization", 1.5)
    ),
    "direct slot utilization below 0": _strategy(
        "direct", lambda s, c: setattr(s, "minimum_slot_utilization", -0.5)
    ),
    "response cache on": setter(response_cache__enable=True),
    "a state with an initial state": _initial(lambda state, start: None),
    "two initial states": _initial(lambda state, start: state.initial_state.add().CopyFrom(start)),
    "initial state of another type": _initial(
        lambda state, start: setattr(start, "data_type", mc.TYPE_INT32)
    ),
    "initial state without a name": _initial(lambda state, start: setattr(start, "name", "")),
    "initial state of another rank": _initial(lambda state, start: start.dims.append(1)),
    "initial state with a variable dim": _initial(_variable_initial),
    "initial state dim differs": _initial(lambda state, start: start.dims.__setitem__(0, 3)),
    "initial state without data": _initial(lambda state, start: start.ClearField("state_data")),
    "initial state from a missing file": _initial(
        lambda state, start: setattr(start, "data_file", "none.bin")
    ),
    "iterative sequence": setter(sequence_batching__iterative_sequence=True),
}

# --- instance_group --------------------------------------------------------------------------------


def _group(kind: int, gpus: tuple[int, ...] = (), **fields: Any) -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        group = config.instance_group[0]
        group.kind = kind
        group.gpus.extend(gpus)
        for name, value in fields.items():
            if name == "profile":
                group.profile.append(value)
            else:
                setattr(group, name, value)

    return on_config(change)


def _rate_limited(draw: Any, config: mc.ModelConfig) -> None:
    resource = config.instance_group[0].rate_limiter.resources.add()
    resource.name = "R1"
    resource.count = draw(st.sampled_from([1, 4]))
    config.instance_group[0].rate_limiter.priority = 2


def _two_groups(draw: Any, config: mc.ModelConfig) -> None:
    group = config.instance_group.add()
    group.kind = KIND_CPU
    group.count = 1
    group.name = draw(st.sampled_from(["", config.instance_group[0].name or "g"]))


INSTANCE_MUTATIONS: dict[str, Mutation] = {
    "KIND_GPU on GPU 0": _group(KIND_GPU, (0,)),
    "KIND_GPU on GPUs 1 and 3": _group(KIND_GPU, (1, 3)),
    "KIND_GPU without gpus": _group(KIND_GPU),
    "KIND_CPU naming a GPU": _group(KIND_CPU, (0,)),
    "KIND_MODEL": _group(mc.ModelInstanceGroup.KIND_MODEL),
    "KIND_MODEL naming a GPU": _group(mc.ModelInstanceGroup.KIND_MODEL, (0,)),
    "KIND_AUTO": _group(mc.ModelInstanceGroup.KIND_AUTO),
    "count 0": _group(KIND_CPU, count=0),
    "count 2": _group(KIND_CPU, count=2),
    "a named group": _group(KIND_CPU, name="workers"),
    "a profile outside TensorRT": _group(KIND_CPU, profile="0"),
    "a passive instance": _group(KIND_CPU, passive=True),
    "a host policy": _group(KIND_CPU, host_policy="numa0"),
    "a rate limiter": on_config(_rate_limited),
    "two groups": on_config(_two_groups),
    "no instance group": on_config(lambda draw, c: c.ClearField("instance_group")),
}


def config_areas() -> dict[str, st.SearchStrategy[Case]]:
    """The config areas' strategies, by area."""
    return {
        "tensors": mutated("tensors", python_models(), TENSOR_MUTATIONS),
        "reshape": reshape_cases(),
        "batch_io": mutated("batch_io", _batch_io_models(), BATCH_IO_MUTATIONS),
        "dynamic_batching": mutated("dynamic_batching", _dynamic_models(), DYNAMIC_MUTATIONS),
        "sequence_batching": mutated("sequence_batching", _sequence_models(), SEQUENCE_MUTATIONS),
        "instance_group": mutated(
            "instance_group", python_models(batch_sizes=(0, 4), dims=fixed_dims_lists), INSTANCE_MUTATIONS
        ),
    }
