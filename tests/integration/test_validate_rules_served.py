"""validate's rules for Triton's config checks, judged by the real embedded tritonserver: for one case of each
area, Triton refuses the config validate calls an error (with the reason validate names), and loads its
correct neighbour, on which validate finds nothing.

Every model is a Python-backend model with a trivial ``model.py``, so each verdict is Triton core's (the
official Python backend adds no check of these fields): an oracle, not this project's stand-in backend. The
server runs with explicit model control; each model is loaded through Triton's repository API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from generator.core.errors import ServerError
from generator.serve.control import ServerControl, Target
from generator.serve.server import EmbeddedServer
from generator.validate.run import validate_model_dir

from ..conftest import free_ports, settle

pytestmark = pytest.mark.integration

MODEL_PY = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[]) for _ in requests]
"""

X = '{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }'
Y = '{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }'
GROUP = "{ count: 1 kind: KIND_CPU }"


def config(name: str, extra: str = "", inputs: str = X, outputs: str = Y, group: str = GROUP) -> str:
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\ninput [ {inputs} ]\noutput [ {outputs} ]\n'
        f"instance_group [ {group} ]\n{extra}\n"
    )


@dataclass(frozen=True)
class Case:
    """A config Triton refuses and its neighbour that it loads (``{name}`` is the model's name)."""

    refused: str
    loaded: str
    validate_says: str
    triton_says: str
    files: dict[str, str] = field(default_factory=dict)


START = "{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }"
ZEROS = '{ name: "init" data_type: TYPE_FP32 dims: [ 4 ] zero_data: true }'
DELAY = "default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 100 }"


def _state(initial: str) -> str:
    return (
        'sequence_batching { state [ { input_name: "IN" output_name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] '
        f"initial_state [ {initial} ] }} ] }}"
    )


def _warmup(batch_size: int = 1, **feeds: str) -> str:
    """One warm-up sample; each feed is ``name=dims``, zeros of TYPE_FP32."""
    listed = " ".join(
        f'inputs {{ key: "{name}" value: {{ data_type: TYPE_FP32 dims: {dims} zero_data: true }} }}'
        for name, dims in feeds.items()
    )
    return f'{{ name: "w" batch_size: {batch_size} {listed} }}'


CASES = {
    "reshape": Case(
        refused=config(
            "{name}", inputs='{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 3 ] } }'
        ),
        loaded=config(
            "{name}", inputs='{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, 2 ] } }'
        ),
        validate_says="input 'x' has different size for dims [4] and reshape [3]",
        triton_says="has different size for dims and reshape",
    ),
    "variable dims in reshape": Case(
        refused=config(
            "{name}", inputs='{ name: "x" data_type: TYPE_FP32 dims: [ -1, -1 ] reshape { shape: [ -1 ] } }'
        ),
        loaded=config(
            "{name}",
            inputs='{ name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape { shape: [ -1, 2, 2 ] } }',
        ),
        validate_says="has different number of variable-size dimensions",
        triton_says="different number of variable-size dimensions for dims and reshape",
    ),
    "shape tensor": Case(
        refused=config(
            "{name}", inputs='{ name: "x" data_type: TYPE_INT32 dims: [ 4 ] is_shape_tensor: true }'
        ),
        loaded=config("{name}", inputs='{ name: "x" data_type: TYPE_INT32 dims: [ 4 ] }'),
        validate_says="shape tensors are only supported for TensorRT platform",
        triton_says="shape tensors are only supported for TensorRT platform",
    ),
    "batch input": Case(
        refused=config(
            "{name}",
            'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_INT64 source_input: "x" } ]',
        ),
        loaded=config(
            "{name}",
            'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_INT32 source_input: "x" } ]',
        ),
        validate_says="batch input data type must be TYPE_INT32 or TYPE_FP32",
        triton_says="batch input data type must be TYPE_INT32 or TYPE_FP32",
    ),
    "batch output": Case(
        refused=config(
            "{name}",
            'batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: [ "y", "y" ] source_input: "x" } ]',
        ),
        loaded=config(
            "{name}",
            'batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "y" source_input: "x" } ]',
        ),
        validate_says="target output name 'y' can only be specified once",
        triton_says="target output name 'y' can only be specified once",
    ),
    "label file": Case(
        refused=config(
            "{name}", outputs='{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "l.txt" }'
        ),
        loaded=config(
            "{name}", outputs='{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" }'
        ),
        validate_says="label_filename 'l.txt': the file is missing",
        triton_says="failed to open text file for read",
        files={"labels.txt": "cat\ndog\n"},
    ),
    "priority levels": Case(
        refused=config(
            "{name}",
            "dynamic_batching { priority_levels: 2 default_priority_level: 1 "
            "priority_queue_policy { key: 3 value: { max_queue_size: 4 } } }",
        ),
        loaded=config(
            "{name}",
            "dynamic_batching { priority_levels: 3 default_priority_level: 1 "
            "priority_queue_policy { key: 3 value: { max_queue_size: 4 } } }",
        ),
        validate_says="priority_queue_policy key 3: a priority queue policy must have a priority level in range [1, 2]",
        triton_says="priority queue policy must have priority level in range [1, 2]",
    ),
    "preserve_ordering": Case(
        refused=config("{name}", f"dynamic_batching {{ preserve_ordering: true {DELAY} }}"),
        loaded=config("{name}", f"dynamic_batching {{ preserve_ordering: false {DELAY} }}"),
        validate_says="can not have DELAY as timeout_action when preserve_ordering is true",
        triton_says="Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true",
    ),
    "sequence controls": Case(
        refused=config(
            "{name}",
            f'sequence_batching {{ control_input [ {{ name: "S" control [ {START} ] }}, '
            f'{{ name: "S2" control [ {START} ] }} ] }}',
        ),
        loaded=config(
            "{name}",
            f'sequence_batching {{ control_input [ {{ name: "S" control [ {START} ] }}, '
            '{ name: "E" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] } ] }',
        ),
        validate_says="sequence batching specifies multiple CONTROL_SEQUENCE_START tensors",
        triton_says="sequence batching specifies multiple CONTROL_SEQUENCE_START tensors",
    ),
    "sequence control value": Case(
        refused=config(
            "{name}",
            'sequence_batching { control_input [ { name: "C" control [ '
            "{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] } ] }",
        ),
        loaded=config(
            "{name}",
            'sequence_batching { control_input [ { name: "C" control [ '
            "{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] } ] }",
        ),
        validate_says="unexpected data type TYPE_FP32 for control CONTROL_SEQUENCE_CORRID",
        triton_says="unexpected data type for control CONTROL_SEQUENCE_CORRID",
    ),
    "sequence strategy": Case(
        refused=config("{name}", "sequence_batching { direct { minimum_slot_utilization: 1.5 } }"),
        loaded=config("{name}", "sequence_batching { direct { minimum_slot_utilization: 0.5 } }"),
        validate_says="sequence batching minimum slot utilization must be in range (0.0, 1.0]",
        triton_says="sequence batching minimum slot utilization must be in range",
    ),
    "initial state": Case(
        refused=config("{name}", _state(ZEROS.replace("[ 4 ]", "[ 5 ]"))),
        loaded=config("{name}", _state(ZEROS)),
        validate_says="initial_state dims [5] don't match the state's dims [4]",
        triton_says="doesn't match 'state' dim description",
    ),
    "response cache": Case(
        refused=config(
            "{name}", "model_transaction_policy { decoupled: true }\nresponse_cache { enable: true }"
        ),
        loaded=config("{name}", "model_transaction_policy { decoupled: true }"),
        validate_says="response_cache does not support a model with 'decoupled' transaction policy",
        triton_says="with 'decoupled' transaction policy",
    ),
    "batching library": Case(
        refused=config(
            "{name}",
            'sequence_batching { }\nparameters { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "/x.so" } }',
        ),
        loaded=config("{name}", "sequence_batching { }"),
        validate_says="'TRITON_BATCH_STRATEGY_PATH' cannot be specified with sequence batcher",
        triton_says="TRITON_BATCH_STRATEGY_PATH cannot be specified with sequence batcher",
    ),
    "instance group profile": Case(
        refused=config("{name}", group='{ count: 1 kind: KIND_CPU profile: [ "0" ] }'),
        loaded=config("{name}", group="{ count: 1 kind: KIND_MODEL }"),
        validate_says="a field which is only supported for TensorRT models",
        triton_says="specifies profile field which is only supported for TensorRT models",
    ),
    "warm-up": Case(
        refused=config("{name}", f"model_warmup [ {_warmup(x='[ 5 ]')} ]"),
        loaded=config("{name}", f"model_warmup [ {_warmup(x='[ 4 ]', q='[ 4 ]')} ]"),
        validate_says="model_warmup 'w' input 'x' dims [5] do not fit the input's dims [4]",
        triton_says="unexpected shape for input 'x'",
    ),
    "repository agent": Case(
        refused=config("{name}", 'model_repository_agents { agents [ { name: "decrypt" } ] }'),
        loaded=config("{name}"),
        validate_says="unable to find 'libtritonrepoagent_decrypt.so'",
        triton_says="unable to find 'libtritonrepoagent_decrypt.so'",
    ),
}


def write_model(repository: Path, name: str, text: str, files: dict[str, str] | None = None) -> Path:
    model = repository / name
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(MODEL_PY)
    (model / "config.pbtxt").write_text(text.replace("{name}", name))
    for relative, content in (files or {}).items():
        (model / relative).write_text(content)
    return model


def control_of(server: EmbeddedServer) -> ServerControl:
    host, port = server.endpoints.http.rsplit(":", 1)
    return ServerControl(Target("http", host, int(port)), timeout=120)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, Path]]:
    repository = tmp_path_factory.mktemp("rules") / "repository"
    repository.mkdir()
    with EmbeddedServer(repository, **free_ports(), supervise=False) as server:
        yield server, repository


@pytest.mark.parametrize("area", sorted(CASES))
def test_triton_refuses_what_validate_refuses_and_loads_its_neighbour(
    served: tuple[EmbeddedServer, Path], area: str
) -> None:
    server, repository = served
    case = CASES[area]
    slug = area.replace(" ", "_").replace("/", "_")
    refused = write_model(repository, f"{slug}_refused", case.refused, case.files)
    loaded = write_model(repository, f"{slug}_loaded", case.loaded, case.files)

    errors = [p.message for p in validate_model_dir(refused) if p.severity == "error"]
    assert any(case.validate_says in e for e in errors), errors
    problems = [str(p) for p in validate_model_dir(loaded) if p.severity == "error"]
    assert problems == []

    with control_of(server) as control:
        mark = server.log_size()
        with pytest.raises(ServerError) as refusal:
            control.load(refused.name)
        # Triton answers some refusals with their reason and logs the others' (a refusal at its repository poll).
        reason = f"{refusal.value} {server.reason_since(mark)}"
        assert case.triton_says in reason, reason
        control.load(loaded.name)
        assert loaded.name in control.ready_models()
        control.unload(loaded.name)


CRASHES = {
    "a batch output without a target": (
        config("{name}", 'batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "x" } ]'),
        {},
        "batch_output[0] has no target_name, which crashes Triton 2.51",
    ),
    "a label file that is a directory": (
        config("{name}", outputs='{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels" }'),
        {"labels/README": "the labels were meant to be a file\n"},
        "label_filename 'labels' is a directory, which crashes Triton 2.51",
    ),
}


@contextmanager
def _start_then_load(tmp_path: Path, repository: Path) -> Iterator[tuple[EmbeddedServer, ServerControl]]:
    """A server on ``repository`` without its model ``m``, which is put back once the server is up."""
    (repository / "m").rename(tmp_path / "m")
    with EmbeddedServer(repository, **free_ports(), supervise=False) as server, control_of(server) as control:
        (tmp_path / "m").rename(repository / "m")
        yield server, control


@pytest.mark.parametrize("case", sorted(CRASHES))
def test_what_crashes_triton_is_an_error(tmp_path: Path, case: str) -> None:
    text, files, expected = CRASHES[case]
    repository = tmp_path / "repository"
    model = write_model(repository, "m", text)
    for relative, content in files.items():
        (model / relative).parent.mkdir(parents=True, exist_ok=True)
        (model / relative).write_text(content)
    errors = [p.message for p in validate_model_dir(model) if p.severity == "error"]
    assert any(expected in e for e in errors), errors

    with _start_then_load(tmp_path, repository) as (server, control):
        with pytest.raises(ServerError):
            control.load("m")
        assert settle(server.is_running, lambda running: not running, timeout=30) is False  # it died


def test_a_warm_up_batch_above_max_batch_size_fails_the_load(tmp_path: Path) -> None:
    """Triton fails the sample (or, in a race of its own, crashes running it): either way the model never loads."""
    repository = tmp_path / "repository"
    model = write_model(repository, "m", config("{name}", f"model_warmup [ {_warmup(16, x='[ 4 ]')} ]"))
    errors = [p.message for p in validate_model_dir(model) if p.severity == "error"]
    assert any(
        "batch_size 16 exceeds max_batch_size 8: Triton 2.51 fails the warm-up sample" in e for e in errors
    )

    with _start_then_load(tmp_path, repository) as (server, control):
        mark = server.log_size()
        with pytest.raises(ServerError) as refusal:
            control.load("m")
        if server.is_running():
            reason = f"{refusal.value} {server.reason_since(mark)}"
            assert "failed to run warmup sample 'w': batch size 16" in reason, reason
