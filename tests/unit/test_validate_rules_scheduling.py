"""Triton's scheduler rules in validate: dynamic batching priorities and queue policies, sequence batching
controls, strategies and states, what a scheduler cannot be combined with, instance group profiles and
repository agents.

Every verdict here is Triton 2.51's own: each config was loaded on the embedded tritonserver (a Python-backend
model, so the verdict is Triton core's), and tests/integration/test_validate_rules_served.py keeps a
representative case of each area checked against the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.validate.run import validate_repository

from .test_validate_rules_tensors import config, judge


def dynamic(body: str, max_batch_size: int = 8) -> str:
    return config(max_batch_size=max_batch_size, extra=f"dynamic_batching {{ {body} }}")


def sequence(body: str, extra: str = "", max_batch_size: int = 8) -> str:
    return config(max_batch_size=max_batch_size, extra=f"sequence_batching {{ {body} }}\n{extra}")


def controls(*entries: tuple[str, list[str]]) -> str:
    """``control_input`` entries: (tensor name, its controls)."""
    listed = ", ".join(f'{{ name: "{name}" control [ {", ".join(kinds)} ] }}' for name, kinds in entries)
    return sequence(f"control_input [ {listed} ]")


def state(initial: str = "", dims: str = "[ 4 ]", name: str = "IN", output: str = "OUT") -> str:
    """One state entry (FP32) with an optional initial_state body."""
    start = f"initial_state [ {initial} ]" if initial else ""
    return f'{{ input_name: "{name}" output_name: "{output}" data_type: TYPE_FP32 dims: {dims} {start} }}'


def states(*entries: str) -> str:
    return sequence(f"state [ {', '.join(entries)} ]")


START = "{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }"
END = "{ kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] }"
READY = "{ kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] }"
CORRID = "{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }"
ZEROS = '{ name: "init" data_type: TYPE_FP32 dims: [ 4 ] zero_data: true }'
DELAY = "timeout_action: DELAY default_timeout_microseconds: 100"


def group(fields: str, serving: str = 'backend: "python"') -> str:
    return config(serving=serving).replace("{ count: 1 kind: KIND_CPU }", f"{{ {fields} }}")


REFUSED = {
    "default priority level not set": (
        dynamic("priority_levels: 3"),
        "dynamic_batching default_priority_level must be in range [1, 3] (priority_levels 3) but is not set",
    ),
    "default priority level above the levels": (
        dynamic("priority_levels: 3 default_priority_level: 4"),
        "but 4 is outside it",
    ),
    "queue policy above the levels": (
        dynamic("priority_levels: 3 default_priority_level: 1 priority_queue_policy { key: 4 value: { } }"),
        "dynamic_batching priority_queue_policy key 4: a priority queue policy must have a priority level in "
        "range [1, 3]",
    ),
    "queue policy for level 0": (
        dynamic("priority_levels: 3 default_priority_level: 1 priority_queue_policy { key: 0 value: { } }"),
        "priority_queue_policy key 0",
    ),
    "preserve_ordering with two levels": (
        dynamic("preserve_ordering: true priority_levels: 2 default_priority_level: 1"),
        "dynamic_batching preserve_ordering allows only one priority level, not priority_levels 2",
    ),
    "preserve_ordering with a DELAY default policy": (
        dynamic(f"preserve_ordering: true default_queue_policy {{ {DELAY} }}"),
        "dynamic_batching default_queue_policy: a queue policy can not have DELAY as timeout_action when "
        "preserve_ordering is true",
    ),
    "preserve_ordering with a DELAY priority policy": (
        dynamic(f"preserve_ordering: true priority_queue_policy {{ key: 7 value: {{ {DELAY} }} }}"),
        "dynamic_batching priority_queue_policy key 7: a queue policy can not have DELAY",
    ),
    "START given twice": (
        controls(("S", [START]), ("S2", [START])),
        "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors ('S' and 'S2')",
    ),
    "START twice in one tensor": (controls(("S", [START, START])), "multiple CONTROL_SEQUENCE_START"),
    "CORRID given twice": (
        controls(("C", [CORRID]), ("C2", [CORRID])),
        "multiple CONTROL_SEQUENCE_CORRID tensors",
    ),
    "one tensor in two entries": (
        controls(("S", [START]), ("S", [END])),
        "sequence_batching control_input 'S': the control tensor is specified for multiple control kinds",
    ),
    "one tensor in two entries without controls": (
        sequence('control_input [ { name: "S" }, { name: "S" } ]'),
        "is specified for multiple control kinds",
    ),
    "a control tensor without a name": (
        controls(("", [START])),
        "sequence_batching control_input[0]: a sequence batching control tensor must have a name",
    ),
    "START without a value": (
        controls(("S", ["{ kind: CONTROL_SEQUENCE_START }"])),
        "sequence_batching control_input 'S' CONTROL_SEQUENCE_START has no value: sequence batching must "
        "specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true'",
    ),
    "END with two kinds of value": (
        controls(
            ("E", ["{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] fp32_false_true: [ 0, 1 ] }"])
        ),
        "CONTROL_SEQUENCE_END specifies more than one of int32_false_true, fp32_false_true",
    ),
    "START with three values": (
        controls(("S", ["{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1, 2 ] }"])),
        "CONTROL_SEQUENCE_START 'int32_false_true' must have exactly 2 entries (false, true), not 3",
    ),
    "READY with one value": (
        controls(("R", ["{ kind: CONTROL_SEQUENCE_READY bool_false_true: [ true ] }"])),
        "'bool_false_true' must have exactly 2 entries (false, true), not 1",
    ),
    "CORRID with false/true values": (
        controls(
            ("C", ["{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_INT64 int32_false_true: [ 0, 1 ] }"])
        ),
        "CONTROL_SEQUENCE_CORRID sets int32_false_true: sequence batching must not specify",
    ),
    "CORRID of TYPE_FP32": (
        controls(("C", ["{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 }"])),
        "has unexpected data type TYPE_FP32 for control CONTROL_SEQUENCE_CORRID; allowed data types are",
    ),
    "CORRID without a data type": (
        controls(("C", ["{ kind: CONTROL_SEQUENCE_CORRID }"])),
        "unexpected data type TYPE_INVALID for control CONTROL_SEQUENCE_CORRID",
    ),
    "oldest preferred size above max_batch_size": (
        sequence("oldest { preferred_batch_size: [ 16 ] }"),
        "sequence_batching oldest preferred_batch_size 16: sequence batching preferred batch size must be <= "
        "max batch size (8)",
    ),
    "oldest preferred size 0": (
        sequence("oldest { preferred_batch_size: [ 0 ] }"),
        "sequence batching preferred batch size must be positive",
    ),
    "direct slot utilization above 1": (
        sequence("direct { minimum_slot_utilization: 1.5 }"),
        "sequence_batching direct minimum_slot_utilization 1.5: sequence batching minimum slot utilization "
        "must be in range (0.0, 1.0]",
    ),
    "direct slot utilization below 0": (
        sequence("direct { minimum_slot_utilization: -0.5 }"),
        "minimum_slot_utilization -0.5",
    ),
    "two initial states": (
        states(state(f"{ZEROS}, {ZEROS}")),
        "sequence_batching state 'IN' initial_state must contain exactly one or zero element, not 2",
    ),
    "initial state of another type": (
        states(state(ZEROS.replace("TYPE_FP32", "TYPE_INT32"))),
        "initial_state data_type TYPE_INT32: the data type used for 'initial_state' does not match the state "
        "data type TYPE_FP32",
    ),
    "initial state without a name": (
        states(state(ZEROS.replace('name: "init" ', ""))),
        "field 'name' must be set when using initial_state",
    ),
    "initial state of another rank": (
        states(state(ZEROS.replace("[ 4 ]", "[ 2, 2 ]"))),
        "the number of dimensions in 'initial_state' doesn't match the state's dims [4] (2 != 1)",
    ),
    "initial state with a variable dim": (
        states(state(ZEROS.replace("[ 4 ]", "[ -1 ]"), dims="[ -1 ]")),
        "initial_state dims [-1] contain variable dimensions",
    ),
    "initial state dim differs": (
        states(state(ZEROS.replace("[ 4 ]", "[ 5 ]"))),
        "initial_state dims [5] don't match the state's dims [4] (5 != 4)",
    ),
    "initial state without data": (
        states(state(ZEROS.replace(" zero_data: true", ""))),
        "initial_state sets no data: initial_state expects zero_data: true or data_file",
    ),
    "two initial states for one input": (
        states(state(ZEROS), state(ZEROS, output="OUT2")),
        "state input name 'IN' specified more than once",
    ),
    "response cache with sequence batching": (
        sequence("", extra="response_cache { enable: true }"),
        "response_cache does not support a model with sequence batching scheduler",
    ),
    "response cache on a decoupled model": (
        config(extra="model_transaction_policy { decoupled: true }\nresponse_cache { enable: true }"),
        "response_cache does not support a model with 'decoupled' transaction policy",
    ),
    "a batching library with sequence batching": (
        sequence(
            "", extra='parameters { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "/x.so" } }'
        ),
        "parameters 'TRITON_BATCH_STRATEGY_PATH' cannot be specified with sequence batcher",
    ),
    "a batching library that is not there": (
        dynamic("", max_batch_size=8).replace(
            "dynamic_batching",
            'parameters { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "/nowhere/batch.so" } }\n'
            "dynamic_batching",
        ),
        "parameters 'TRITON_BATCH_STRATEGY_PATH': batching library path not found: /nowhere/batch.so",
    ),
    "a profile outside TensorRT": (
        group('kind: KIND_CPU profile: [ "0" ]'),
        "instance_group specifies profile ['0'], a field which is only supported for TensorRT models",
    ),
    "a negative TensorRT profile": (
        group('count: 1 kind: KIND_GPU gpus: [ 0 ] profile: [ "-1" ]', 'platform: "tensorrt_plan"'),
        "specifies invalid profile '-1'",
    ),
    "a TensorRT profile that is no number": (
        group('count: 1 kind: KIND_GPU gpus: [ 0 ] profile: [ "fast" ]', 'platform: "tensorrt_plan"'),
        "profile 'fast': unable to parse it",
    ),
    "a repository agent Triton lacks": (
        config(extra='model_repository_agents { agents [ { name: "decrypt" } ] }'),
        "model_repository_agents 'decrypt': Triton is unable to find 'libtritonrepoagent_decrypt.so'",
    ),
}

LOADED = {
    "priority levels with a policy per level": dynamic(
        "priority_levels: 3 default_priority_level: 2 priority_queue_policy { key: 3 value: { max_queue_size: 4 } }"
    ),
    "a queue policy key without priority levels": dynamic("priority_queue_policy { key: 5 value: { } }"),
    "a default level without priority levels": dynamic("default_priority_level: 2"),
    "preserve_ordering with one level": dynamic(
        "preserve_ordering: true priority_levels: 1 default_priority_level: 1"
    ),
    "preserve_ordering with DELAY but no timeout": dynamic(
        "preserve_ordering: true default_queue_policy { timeout_action: DELAY }"
    ),
    "every control once": controls(("S", [START]), ("E", [END]), ("R", [READY]), ("C", [CORRID])),
    "one tensor with two kinds": controls(("S", [START, END])),
    "CORRID of TYPE_STRING": controls(("C", ["{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING }"])),
    "a control tensor without controls": sequence('control_input [ { name: "S" } ]'),
    "a control named like an input": controls(("x", [START])),
    "oldest within max_batch_size": sequence(
        "oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2, 8 ] }"
    ),
    "oldest without batching": sequence("oldest { }", max_batch_size=0),
    "direct with half its slots": sequence("direct { minimum_slot_utilization: 0.5 }"),
    "iterative sequences": sequence("iterative_sequence: true"),
    "a state with zeros to start": states(state(ZEROS)),
    "a fixed initial state of a variable state": states(
        state(ZEROS.replace("[ 4 ]", "[ 3 ]"), dims="[ -1 ]")
    ),
    "two states of one input without initial states": states(state(), state(output="OUT2")),
    "the response cache alone": config(extra="response_cache { enable: true }"),
    "a decoupled sequence model": sequence("", extra="model_transaction_policy { decoupled: true }"),
    "a TensorRT profile": group(
        'count: 1 kind: KIND_GPU gpus: [ 0 ] profile: [ "1" ]', 'platform: "tensorrt_plan"'
    ),
    "KIND_MODEL": group("count: 1 kind: KIND_MODEL"),
    "a rate limiter, a host policy, a passive group": group(
        'count: 1 kind: KIND_CPU host_policy: "numa0" passive: true '
        'rate_limiter { resources [ { name: "R" count: 2 } ] priority: 1 }'
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_triton_refuses_is_an_error(case: str) -> None:
    text, expected = REFUSED[case]
    errors, _ = judge(text)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("case", sorted(LOADED))
def test_what_triton_loads_has_no_error(case: str) -> None:
    errors, warnings = judge(LOADED[case])
    assert errors == [] and warnings == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            states("{ data_type: TYPE_FP32 dims: [ 4 ] }"),
            "sequence_batching state[0] has no input_name, output_name; Triton loads it, but a backend cannot "
            "bind the state",
        ),
        (states('{ input_name: "IN" output_name: "OUT" dims: [ 4 ] }'), "state[0] 'IN' has no data_type"),
        (
            states(state().replace("dims: [ 4 ]", "dims: [ 4 ] use_growable_memory: true")),
            "use_growable_memory needs use_same_buffer_for_input_output: true; Triton loads the model but "
            "refuses every sequence at its first request",
        ),
        (
            config(extra='model_repository_agents { agents [ { name: "checksum" } ] }'),
            "model_repository_agents 'checksum': the official Triton container ships this agent but the "
            "embedded server has no repository agent",
        ),
        (
            dynamic("").replace(
                "dynamic_batching",
                'parameters { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "lib.so" } }\n'
                "dynamic_batching",
            ),
            "'lib.so' is relative, so Triton looks for it from its own working directory",
        ),
    ],
)
def test_what_triton_loads_but_cannot_use_is_a_warning(text: str, expected: str) -> None:
    errors, warnings = judge(text)
    assert errors == [] and any(expected in w for w in warnings), warnings


FROM_FILE = '{ name: "init" data_type: TYPE_FP32 dims: [ 4 ] data_file: "start.bin" }'


def test_initial_state_files(tmp_path: Path) -> None:
    text = states(state(FROM_FILE))
    errors, _ = judge(text, tmp_path)
    assert errors == [
        "sequence_batching state 'IN' initial_state data_file 'start.bin' is missing, so Triton fails to load "
        "the model; put it in the model's initial_state/ directory"
    ]
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "start.bin").write_bytes(b"abc")
    errors, _ = judge(text, tmp_path)
    assert errors == [
        "sequence_batching state 'IN' initial_state: initial_state expects 16 bytes, but the data provided "
        "from 'start.bin' only has 3 bytes; write the full state"
    ]
    (tmp_path / "initial_state" / "start.bin").write_bytes(bytes(16))
    assert judge(text, tmp_path) == ([], [])
    strings = states(state(FROM_FILE.replace("TYPE_FP32", "TYPE_STRING")).replace("TYPE_FP32", "TYPE_STRING"))
    (tmp_path / "initial_state" / "start.bin").write_bytes(b"a")
    assert judge(strings, tmp_path) == ([], [])  # Triton takes a string state's file as it is


def test_validate_repository_reads_the_initial_state(tmp_path: Path) -> None:
    model = tmp_path / "repo" / "seq"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
    )
    (model / "config.pbtxt").write_text(states(state(FROM_FILE)).replace('name: "m"', 'name: "seq"'))
    errors = [p.message for p in validate_repository(tmp_path / "repo").errors]
    assert any("data_file 'start.bin' is missing" in e for e in errors), errors
