"""Triton's checks of a config's schedulers: the dynamic batcher's priority levels and queue policies, the
sequence batcher's control inputs, strategies and implicit state, and what each scheduler cannot combine
with (the response cache, a custom batching library).

Triton 2.51 makes these checks when it loads a model: its core's ``ValidateModelConfig`` (controls,
strategies, priorities), the sequence batcher as it starts (initial states), and the model as it picks a
batching library. Each rule names the problem as Triton does, with the field path and the fix. Every
function returns ``(severity, message)`` pairs.
"""

from __future__ import annotations

import stat
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from generator.validate.config import Found, shape_text, type_name
from generator.validate.tensors import element_count, triton_join

Control = model_config_pb2.ModelSequenceBatching.Control
_KIND_NAMES = {v: k for k, v in Control.Kind.items()}
_BOOLEAN_KINDS = (
    Control.CONTROL_SEQUENCE_START,
    Control.CONTROL_SEQUENCE_END,
    Control.CONTROL_SEQUENCE_READY,
)
_CORRID_TYPES = (
    model_config_pb2.TYPE_UINT64,
    model_config_pb2.TYPE_INT64,
    model_config_pb2.TYPE_UINT32,
    model_config_pb2.TYPE_INT32,
    model_config_pb2.TYPE_STRING,
)
_VALUE_FIELDS = ("int32_false_true", "fp32_false_true", "bool_false_true")
_DELAY = model_config_pb2.ModelQueuePolicy.DELAY

#: Bytes per element of each type (0 for strings and the invalid type), as Triton sizes initial states.
_TYPE_BYTES = {
    model_config_pb2.TYPE_BOOL: 1,
    model_config_pb2.TYPE_UINT8: 1,
    model_config_pb2.TYPE_UINT16: 2,
    model_config_pb2.TYPE_UINT32: 4,
    model_config_pb2.TYPE_UINT64: 8,
    model_config_pb2.TYPE_INT8: 1,
    model_config_pb2.TYPE_INT16: 2,
    model_config_pb2.TYPE_INT32: 4,
    model_config_pb2.TYPE_INT64: 8,
    model_config_pb2.TYPE_FP16: 2,
    model_config_pb2.TYPE_FP32: 4,
    model_config_pb2.TYPE_FP64: 8,
    model_config_pb2.TYPE_BF16: 2,
}

BATCH_STRATEGY = "TRITON_BATCH_STRATEGY_PATH"


def check_priorities(config: model_config_pb2.ModelConfig) -> Found:
    """``dynamic_batching`` priority levels, queue policies and ``preserve_ordering``."""
    if not config.HasField("dynamic_batching"):
        return []
    batcher = config.dynamic_batching
    levels = batcher.priority_levels
    found: Found = []
    if levels:
        default = batcher.default_priority_level
        if not 1 <= default <= levels:
            what = "is not set" if default == 0 else f"{default} is outside it"
            found.append(
                (
                    "error",
                    f"dynamic_batching default_priority_level must be in range [1, {levels}] (priority_levels "
                    f"{levels}) but {what}; set default_priority_level to a level in that range",
                )
            )
        for key in sorted(batcher.priority_queue_policy):
            if not 1 <= key <= levels:
                found.append(
                    (
                        "error",
                        f"dynamic_batching priority_queue_policy key {key}: a priority queue policy must have a "
                        f"priority level in range [1, {levels}]; use a level of priority_levels",
                    )
                )
    if batcher.preserve_ordering:
        if levels > 1:
            found.append(
                (
                    "error",
                    f"dynamic_batching preserve_ordering allows only one priority level, not priority_levels "
                    f"{levels}; drop preserve_ordering or the priority levels",
                )
            )
        policies = [("default_queue_policy", batcher.default_queue_policy)]
        policies += [
            (f"priority_queue_policy key {k}", batcher.priority_queue_policy[k])
            for k in sorted(batcher.priority_queue_policy)
        ]
        for where, policy in policies:
            if policy.timeout_action == _DELAY and policy.default_timeout_microseconds != 0:
                found.append(
                    (
                        "error",
                        f"dynamic_batching {where}: a queue policy can not have DELAY as timeout_action when "
                        "preserve_ordering is true; use REJECT or drop preserve_ordering",
                    )
                )
    return found


def _check_values(label: str, kind: str, control: Control) -> Found:
    """A boolean control's false/true values: exactly one of the three fields, with 2 entries."""
    given = [f for f in _VALUE_FIELDS if len(getattr(control, f))]
    if not given:
        return [
            (
                "error",
                f"{label} {kind} has no value: sequence batching must specify either 'int32_false_true', "
                "'fp32_false_true' or 'bool_false_true'; add e.g. int32_false_true: [ 0, 1 ]",
            )
        ]
    if len(given) > 1:
        return [
            (
                "error",
                f"{label} {kind} specifies more than one of {', '.join(given)}; keep one of 'int32_false_true', "
                "'fp32_false_true' and 'bool_false_true'",
            )
        ]
    count = len(getattr(control, given[0]))
    if count != 2:
        return [
            (
                "error",
                f"{label} {kind} '{given[0]}' must have exactly 2 entries (false, true), not {count}",
            )
        ]
    return []


def _check_corrid(label: str, kind: str, control: Control) -> Found:
    found: Found = []
    given = [f for f in _VALUE_FIELDS if len(getattr(control, f))]
    if given:
        found.append(
            (
                "error",
                f"{label} {kind} sets {', '.join(given)}: sequence batching must not specify "
                "'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_CORRID; drop it",
            )
        )
    if control.data_type not in _CORRID_TYPES:
        found.append(
            (
                "error",
                f"{label} {kind} has unexpected data type {type_name(control.data_type)} for control "
                "CONTROL_SEQUENCE_CORRID; allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, "
                "TYPE_INT32 and TYPE_STRING",
            )
        )
    return found


def check_controls(config: model_config_pb2.ModelConfig) -> Found:
    """``sequence_batching.control_input``: named tensors, each once, each control kind once, with values."""
    if not config.HasField("sequence_batching"):
        return []
    found: Found = []
    seen_tensors: set[str] = set()
    owners: dict[int, str] = {}
    for i, tensor in enumerate(config.sequence_batching.control_input):
        label = (
            f"sequence_batching control_input '{tensor.name}'"
            if tensor.name
            else f"sequence_batching control_input[{i}]"
        )
        if not tensor.name:
            found.append(("error", f"{label}: a sequence batching control tensor must have a name; name it"))
        elif tensor.name in seen_tensors:
            found.append(
                (
                    "error",
                    f"{label}: the control tensor is specified for multiple control kinds in two control_input "
                    "entries; give each control its own tensor name, or list its controls in one entry",
                )
            )
        seen_tensors.add(tensor.name)
        for control in tensor.control:
            kind = _KIND_NAMES.get(control.kind)
            if kind is None:
                continue  # Triton looks only for the kinds it knows
            if control.kind in owners:
                found.append(
                    (
                        "error",
                        f"{label}: sequence batching specifies multiple {kind} tensors ('{owners[control.kind]}' "
                        f"and '{tensor.name}'); keep one",
                    )
                )
                continue
            owners[control.kind] = tensor.name
            if control.kind in _BOOLEAN_KINDS:
                found += _check_values(label, kind, control)
            else:
                found += _check_corrid(label, kind, control)
    return found


def check_strategy(config: model_config_pb2.ModelConfig) -> Found:
    """The sequence batcher's ``oldest`` preferred sizes and ``direct`` slot utilization."""
    if not config.HasField("sequence_batching"):
        return []
    batcher = config.sequence_batching
    found: Found = []
    if batcher.HasField("oldest"):
        for size in batcher.oldest.preferred_batch_size:
            if size <= 0:
                found.append(
                    (
                        "error",
                        f"sequence_batching oldest preferred_batch_size {size}: sequence batching preferred "
                        "batch size must be positive",
                    )
                )
            elif size > config.max_batch_size:
                found.append(
                    (
                        "error",
                        f"sequence_batching oldest preferred_batch_size {size}: sequence batching preferred "
                        f"batch size must be <= max batch size ({config.max_batch_size}); lower it",
                    )
                )
    if batcher.HasField("direct"):
        utilization = batcher.direct.minimum_slot_utilization
        if utilization < 0.0 or utilization > 1.0:
            found.append(
                (
                    "error",
                    f"sequence_batching direct minimum_slot_utilization {utilization:g}: sequence batching "
                    "minimum slot utilization must be in range (0.0, 1.0]",
                )
            )
    return found


def _check_state_fields(i: int, state: model_config_pb2.ModelSequenceBatching.State) -> Found:
    """What Triton's core accepts in a state but no backend can bind (warnings)."""
    label = f"sequence_batching state[{i}]" + (f" '{state.input_name}'" if state.input_name else "")
    missing = [f for f in ("input_name", "output_name") if not getattr(state, f)]
    if state.data_type == model_config_pb2.TYPE_INVALID:
        missing.append("data_type")
    if not state.dims:
        missing.append("dims")
    found: Found = []
    if missing:
        found.append(
            (
                "warning",
                f"{label} has no {', '.join(missing)}; Triton loads it, but a backend cannot bind the state to "
                "the model's tensors: set them as the model names its state input and output",
            )
        )
    if state.use_growable_memory and not state.use_same_buffer_for_input_output:
        found.append(
            (
                "warning",
                f"{label} use_growable_memory needs use_same_buffer_for_input_output: true; Triton loads the "
                "model but refuses every sequence at its first request",
            )
        )
    return found


def _check_initial(
    label: str,
    state: model_config_pb2.ModelSequenceBatching.State,
    initial: model_config_pb2.ModelSequenceBatching.InitialState,
) -> Found:
    """One ``initial_state`` against its state, as the sequence batcher checks it when it starts."""
    if initial.data_type != state.data_type:
        return [
            (
                "error",
                f"{label} data_type {type_name(initial.data_type)}: the data type used for 'initial_state' does "
                f"not match the state data type {type_name(state.data_type)}; use {type_name(state.data_type)}",
            )
        ]
    if not initial.name:
        return [("error", f"{label}: field 'name' must be set when using initial_state; name it")]
    if len(initial.dims) != len(state.dims):
        return [
            (
                "error",
                f"{label} dims {shape_text(initial.dims)}: the number of dimensions in 'initial_state' doesn't "
                f"match the state's dims {shape_text(state.dims)} ({len(initial.dims)} != {len(state.dims)})",
            )
        ]
    for want, have in zip(state.dims, initial.dims, strict=True):
        if have == -1:
            return [
                (
                    "error",
                    f"{label} dims {shape_text(initial.dims)} contain variable dimensions; give every size",
                )
            ]
        if want != -1 and have != want:
            return [
                (
                    "error",
                    f"{label} dims {shape_text(initial.dims)} don't match the state's dims {shape_text(state.dims)} "
                    f"({have} != {want})",
                )
            ]
    if initial.WhichOneof("state_data") is None:
        return [("error", f"{label} sets no data: initial_state expects zero_data: true or data_file")]
    return []


def _check_initial_file(
    label: str, initial: model_config_pb2.ModelSequenceBatching.InitialState, model_dir: Path
) -> Found:
    """An initial state's ``data_file`` (under the model's ``initial_state/``): present, and big enough."""
    path = triton_join(model_dir, f"initial_state/{initial.data_file}")
    try:
        status = path.stat()
    except OSError:
        return [
            (
                "error",
                f"{label} data_file '{initial.data_file}' is missing, so Triton fails to load the model; put it "
                "in the model's initial_state/ directory",
            )
        ]
    if not stat.S_ISREG(status.st_mode):
        return [
            ("error", f"{label} data_file '{initial.data_file}' is not a file; put the state's bytes in one")
        ]
    if initial.data_type == model_config_pb2.TYPE_STRING:
        return []
    need = element_count(initial.dims) * _TYPE_BYTES.get(initial.data_type, 0)
    if need > status.st_size:
        return [
            (
                "error",
                f"{label}: initial_state expects {need} bytes, but the data provided from "
                f"'{initial.data_file}' only has {status.st_size} bytes; write the full state",
            )
        ]
    return []


def check_states(config: model_config_pb2.ModelConfig, model_dir: Path | None = None) -> Found:
    """``sequence_batching.state``: each state's fields, and its initial state (with its data file when
    ``model_dir`` is given)."""
    if not config.HasField("sequence_batching"):
        return []
    found: Found = []
    initialised: set[str] = set()
    for i, state in enumerate(config.sequence_batching.state):
        found += _check_state_fields(i, state)
        if not state.initial_state:
            continue
        label = f"sequence_batching state '{state.input_name}' initial_state"
        if len(state.initial_state) > 1:
            found.append(
                (
                    "error",
                    f"{label} must contain exactly one or zero element, not {len(state.initial_state)}; keep one",
                )
            )
            continue
        initial = state.initial_state[0]
        problems = _check_initial(label, state, initial)
        if not problems and state.input_name in initialised:
            problems = [
                (
                    "error",
                    f"{label}: state input name '{state.input_name}' specified more than once; keep one state",
                )
            ]
        initialised.add(state.input_name)
        if not problems and model_dir is not None and initial.WhichOneof("state_data") == "data_file":
            problems = _check_initial_file(label, initial, model_dir)
        found += problems
    return found


def check_combinations(config: model_config_pb2.ModelConfig) -> Found:
    """What a scheduler cannot be combined with: the response cache, a custom batching library."""
    found: Found = []
    cache = config.response_cache.enable
    if cache and config.HasField("sequence_batching"):
        found.append(
            (
                "error",
                "response_cache does not support a model with sequence batching scheduler; disable the "
                "response cache (response_cache { enable: false })",
            )
        )
    if cache and config.model_transaction_policy.decoupled:
        found.append(
            (
                "error",
                "response_cache does not support a model with 'decoupled' transaction policy; disable the "
                "response cache or the decoupled policy",
            )
        )
    if BATCH_STRATEGY not in config.parameters:
        return found
    library = config.parameters[BATCH_STRATEGY].string_value
    if config.HasField("sequence_batching"):
        found.append(
            (
                "error",
                f"parameters '{BATCH_STRATEGY}' cannot be specified with sequence batcher; drop the parameter "
                "(custom batching serves the dynamic batcher only)",
            )
        )
    elif Path(library).is_absolute() and not Path(library).exists():
        found.append(
            (
                "error",
                f"parameters '{BATCH_STRATEGY}': batching library path not found: {library}; install the "
                "library there or fix the path",
            )
        )
    elif not Path(library).is_absolute():
        found.append(
            (
                "warning",
                f"parameters '{BATCH_STRATEGY}' '{library}' is relative, so Triton looks for it from its "
                "own working directory; give an absolute path",
            )
        )
    return found


def check_scheduling(config: model_config_pb2.ModelConfig, model_dir: Path | None = None) -> Found:
    """Every check of this module; files (initial states) only when ``model_dir`` is given."""
    return (
        check_priorities(config)
        + check_controls(config)
        + check_strategy(config)
        + check_states(config, model_dir)
        + check_combinations(config)
    )
