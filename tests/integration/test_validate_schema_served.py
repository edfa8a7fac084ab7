"""validate judges as the embedded tritonserver does: its config schema, its GPUs, its backend libraries,
and ensembles over decoupled models.

One server (explicit model control) starts on sound models; each case is then planted beside them as a
new model and loaded through model control. Where validate, judging for the embedded server on this
machine, finds an error, Triton refuses the load and names the same problem (Triton's core makes every
one of these checks: the text parser, instance-group validation, the backend library search, the
ensemble's data flow); where validate finds none, Triton loads the model. Configs that set every field
and enum value of the 2.51 schema validate has get past the server's parser, and the fields validate
says 2.51 cannot read are the ones its parser refuses: the schema validate judges with is the server's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from generator.serve.server import EmbeddedServer
from generator.validate.run import validate_repository
from generator.validate.schema import (
    ADDED_FIELDS,
    ADDED_VALUES,
    Server,
    check_schema,
    schema_for,
    visible_gpus,
)

from ..conftest import free_ports, load_refusal, make_linear_onnx, run_cli
from ..ensemble_repo import DECOUPLED, F4, SCALE, ensemble, python_model, step

pytestmark = pytest.mark.integration

ONNX = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }} ]
"""
CPU = "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
ELF = b"\x7fELF\x02\x01\x01"  # the start of a shared library: enough for Triton to find it, not to load it


def onnx_model(repository: Path, name: str, extra: str = CPU, files: dict[str, bytes] | None = None) -> None:
    """``name``/1/model.onnx (x [-1, 4] -> y [-1, 3]) with its config, and more files in ``name``/."""
    make_linear_onnx(repository / name / "1" / "model.onnx")
    (repository / name / "config.pbtxt").write_text(ONNX.format(name=name) + extra)
    for file, data in (files or {}).items():
        (repository / name / file).write_bytes(data)


def _metrics(repository: Path, name: str) -> None:
    family = 'metric_identifier { family: "nv_inference_request_duration" }'
    onnx_model(repository, name, CPU + f"model_metrics {{ metric_control [ {{ {family} }} ] }}\n")


def _inflight(repository: Path, name: str) -> None:
    ensemble(repository, name, [("A", *F4)], [("Y", *F4)], [step("scale", {"x": "A"}, {"y": "Y"})])
    config = repository / name / "config.pbtxt"
    config.write_text(
        config.read_text().replace("ensemble_scheduling {", "ensemble_scheduling { max_inflight_requests: 2")
    )


def _tensorrt(repository: Path, name: str) -> None:
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "1" / "model.plan").write_bytes(b"not a plan")
    (repository / name / "config.pbtxt").write_text(
        ONNX.format(name=name).replace("onnxruntime_onnx", "tensorrt_plan") + CPU
    )


def _python_runtime(repository: Path, name: str) -> None:
    python_model(repository, name, SCALE, [("x", *F4)], [("y", *F4)], extra='runtime: "model.py"\n')


def _outputs_from(*models: str) -> Callable[[Path, str], object]:
    outputs = [(f"Y{i}", *F4) for i in range(len(models))]
    steps = [step(model, {"x": "A"}, {"y": f"Y{i}"}) for i, model in enumerate(models)]
    return lambda repository, name: ensemble(repository, name, [("A", *F4)], outputs, steps)


@dataclass(frozen=True)
class Case:
    """A model to plant, what validate says of it, and what Triton says when it refuses it."""

    plant: Callable[[Path, str], object]
    validate: str
    triton: str


def _onnx(extra: str, files: dict[str, bytes] | None = None) -> Callable[[Path, str], object]:
    return lambda repository, name: onnx_model(repository, name, extra, files)


REFUSED: dict[str, Case] = {
    "metrics_field": Case(
        _metrics,
        "config.pbtxt: model_metrics: Triton 2.51 cannot read this field (added in 2.52)",
        'Message type "inference.ModelConfig" has no field named "model_metrics"',
    ),
    "inflight_field": Case(
        _inflight,
        "config.pbtxt: ensemble_scheduling.max_inflight_requests: Triton 2.51 cannot read this field (added in 2.63)",
        'Message type "inference.ModelEnsembling" has no field named "max_inflight_requests"',
    ),
    "gpu_out_of_range": Case(
        _onnx("instance_group [ { count: 1 kind: KIND_GPU gpus: [ 64 ] } ]\n"),
        "instance_group[0] names GPU 64",
        "invalid or unsupported gpu id 64",
    ),
    "runtime_missing": Case(
        _onnx(CPU + 'runtime: "libtriton_missing.so"\n'),
        "runtime 'libtriton_missing.so' is neither in the model's directories nor",
        "unable to find backend library 'libtriton_missing.so'",
    ),
    "runtime_other_backend": Case(
        _onnx(CPU + 'runtime: "libtriton_python.so"\n'),
        "(unable to find backend library)",
        "unable to find backend library 'libtriton_python.so'",
    ),
    "runtime_escapes": Case(
        _onnx(CPU + 'runtime: "../libtriton_escape.so"\n', {"libtriton_escape.so": ELF}),
        "(backend library escapes backend directory)",
        "backend library name '../libtriton_escape.so' escapes backend directory",
    ),
    "runtime_not_a_library": Case(
        _onnx(CPU + 'runtime: "libtriton_custom.so"\n', {"libtriton_custom.so": b"text"}),
        "libtriton_custom.so is not a shared library",
        "unable to load shared library",
    ),
    "python_runtime_model_py": Case(
        _python_runtime,
        "(unable to find Python backend based backend library)",
        "unable to find Python backend based backend library 'model.py'",
    ),
    "tensorrt_backend": Case(
        _tensorrt,
        "(unable to find backend library for backend 'tensorrt')",
        "unable to find backend library for backend 'tensorrt'",
    ),
    "outputs_of_two_decoupled_steps": Case(
        _outputs_from("echo_decoupled", "echo_decoupled"),
        "output[1]: the ensemble's outputs come from decoupled step 0 (model 'echo_decoupled') and from "
        "decoupled step 1 (model 'echo_decoupled')",
        "step of model 'outputs_of_two_decoupled_steps' receives inputs originated from different decoupled models",
    ),
    "outputs_of_a_decoupled_and_a_plain_step": Case(
        _outputs_from("echo_decoupled", "scale"),
        "output[1]: the ensemble's outputs come from steps that are not decoupled and from decoupled step 0",
        "receives inputs originated from different decoupled models",
    ),
}
if not visible_gpus():  # Triton fills a KIND_GPU group that names no GPU with the GPUs it has
    REFUSED["gpu_on_a_machine_without"] = Case(
        _onnx("instance_group [ { count: 1 kind: KIND_GPU } ]\n"),
        "instance_group[0] is KIND_GPU but this machine has no GPU",
        "has kind KIND_GPU but no GPUs are available",
    )

LOADED: dict[str, Callable[[Path, str], object]] = {
    "runtime_model_py": _onnx(CPU + 'runtime: "model.py"\n'),
    "runtime_absolute": _onnx(CPU + 'runtime: "/model.py"\n'),
    "python_runtime_library": lambda repository, name: python_model(
        repository, name, SCALE, [("x", *F4)], [("y", *F4)], extra='runtime: "libtriton_python.so"\n'
    ),
    "outputs_after_one_decoupled_step": lambda repository, name: ensemble(
        repository,
        name,
        [("A", *F4)],
        [("P", *F4), ("Q", *F4)],
        [step("echo_decoupled", {"x": "A"}, {"y": "P"}), step("scale", {"x": "P"}, {"y": "Q"})],
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, EmbeddedServer]]:
    repository = tmp_path_factory.mktemp("schema") / "repository"
    onnx_model(repository, "lin")
    python_model(repository, "scale", SCALE, [("x", *F4)], [("y", *F4)])
    policy = "model_transaction_policy { decoupled: true }\n"
    python_model(repository, "echo_decoupled", DECOUPLED, [("x", *F4)], [("y", *F4)], extra=policy)
    report = validate_repository(repository, Server.this_machine())
    assert not report.problems, [str(p) for p in report.problems]
    with EmbeddedServer(repository, **free_ports(), exit_timeout=5) as server:
        yield repository, server


def _errors(repository: Path, name: str) -> list[str]:
    report = validate_repository(repository, Server.this_machine())
    return [p.message for p in report.errors if p.model == name]


def test_the_embedded_server_is_the_version_validate_judges_for(served: tuple[Path, EmbeddedServer]) -> None:
    _, server = served
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        version = client.get_server_metadata().version
    finally:
        client.close()
    assert version.rsplit(".", 1)[0] == str(Server.this_machine().version), version


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_validate_refuses_for_this_server_it_refuses(
    served: tuple[Path, EmbeddedServer], name: str
) -> None:
    repository, server = served
    case = REFUSED[name]
    case.plant(repository, name)
    errors = _errors(repository, name)
    assert any(case.validate in e for e in errors), errors
    refusal = load_refusal(server, name)
    assert refusal is not None, f"Triton loaded {name}"
    assert case.triton in refusal, refusal


@pytest.mark.parametrize("name", sorted(LOADED))
def test_what_validate_passes_for_this_server_it_loads(
    served: tuple[Path, EmbeddedServer], name: str
) -> None:
    repository, server = served
    LOADED[name](repository, name)
    assert _errors(repository, name) == []
    assert load_refusal(server, name) is None
    if name.startswith("runtime_"):  # served by the stand-in backend named through runtime
        client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        try:
            tensor = grpcclient.InferInput("x", [2, 4], "FP32")
            tensor.set_data_from_numpy(np.ones((2, 4), dtype=np.float32))
            assert client.infer(name, [tensor]).as_numpy("y").shape == (2, 3)
        finally:
            client.close()


def _every_field(message: Descriptor, variant: int) -> str:
    """Config text that sets every field of ``message``: the ``variant``-th member of each oneof and
    value of each enum (modulo their counts), one element per repeated field and map."""
    parts = []
    for field in message.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.fields[variant % len(oneof.fields)] is not field:
            continue
        if field.message_type is not None:
            parts.append(f"{field.name} {{ {_every_field(field.message_type, variant)} }}")
        elif field.enum_type is not None:
            values = field.enum_type.values
            parts.append(f"{field.name}: {values[variant % len(values)].name}")
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            parts.append(f'{field.name}: "s"')
        elif field.type == FieldDescriptor.TYPE_BOOL:
            parts.append(f"{field.name}: true")
        elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            parts.append(f"{field.name}: 1.5")
        else:
            parts.append(f"{field.name}: 1")
    return " ".join(parts)


def test_every_field_and_value_of_the_schema_validate_has_for_2_51_passes_its_parser(
    served: tuple[Path, EmbeddedServer],
) -> None:
    repository, server = served
    version = Server.this_machine().version
    schema = schema_for(version).DESCRIPTOR
    variants = max([len(e.values) for e in schema.file.enum_types_by_name.values()] + [2])
    for variant in range(variants):
        name = f"every_field_{variant}"
        text = _every_field(schema, variant).replace('name: "s"', f'name: "{name}"', 1)
        text = text.replace('agents { name: "s"', 'agents { name: "parsed"')  # a marker past the parser
        assert check_schema(text, version) == []
        (repository / name).mkdir()
        (repository / name / "config.pbtxt").write_text(text)
        refusal = load_refusal(server, name)
        assert refusal is not None and "Error parsing text-format" not in refusal, refusal
        assert "libtritonrepoagent_parsed.so" in refusal, refusal  # read whole, refused for the agent
    # and what validate says 2.51 cannot read, the parser refuses (no enum value came after 2.51)
    later = [(m, f) for (m, f), added in ADDED_FIELDS.items() if added.since > version]
    assert later and all(added.since <= version for added in ADDED_VALUES.values())
    assert {f"{m}.{f}" for m, f in later} == {
        "inference.ModelConfig.model_metrics",
        "inference.ModelEnsembling.max_inflight_requests",
    }  # both planted in REFUSED above


def test_the_cli_judges_for_the_server_it_is_told(
    served: tuple[Path, EmbeddedServer], tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    _metrics(repository, "metrics")
    here = run_cli("validate", str(repository), cwd=tmp_path)
    assert here.returncode == 1 and "error: metrics: config.pbtxt: model_metrics: Triton 2.51" in here.stdout
    assert "judged for the embedded Triton 2.51 on this machine" in here.stdout
    newer = run_cli("validate", str(repository), "--triton-version", "24.11", cwd=tmp_path)
    assert newer.returncode == 0 and "judged for Triton 2.52 on a machine not known" in newer.stdout
    bad = run_cli("validate", str(repository), "--triton-version", "2.1", cwd=tmp_path)
    assert bad.returncode == 2 and "older than the oldest version" in bad.stderr


def test_serve_refuses_gpu_instances_on_a_machine_without_gpus_before_starting_triton(tmp_path: Path) -> None:
    if visible_gpus():
        pytest.skip("this machine has a GPU, so Triton would load KIND_GPU models")
    repository = tmp_path / "repository"
    onnx_model(repository, "lin", "instance_group [ { count: 1 kind: KIND_GPU } ]\n")
    ports = free_ports()
    result = run_cli(
        "serve",
        str(repository),
        *("--http-port", str(ports["http_port"]), "--grpc-port", str(ports["grpc_port"])),
        *("--metrics-port", str(ports["metrics_port"])),
        cwd=tmp_path,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: lin: instance_group[0] is KIND_GPU but this machine has no GPU")
    assert "no GPUs are available" in lines[0] and "Triton did not start" not in result.stderr
