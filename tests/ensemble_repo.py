"""A hand-written repository of small Python-backend models and ensembles over them, for the ensemble tests.

``add_sub`` takes ``a`` and ``b`` (FP32 [4]) and returns ``sum`` and ``diff``; ``scale`` returns ``y = 2 x``;
``pipeline`` is the ensemble ``A, B -> add_sub -> scale, scale -> OUT_SUM = 2 (A + B), OUT_DIFF = 2 (A - B)``.
Tests plant a mistake by writing another ensemble (or model) beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ADD_SUB = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "a").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "b").as_numpy()
            outputs = [pb_utils.Tensor("sum", a + b), pb_utils.Tensor("diff", a - b)]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
"""

SCALE = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.factor = np.float32(2.0)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            outputs = [pb_utils.Tensor("y", (x * self.factor).astype(np.float32))]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
"""

DECOUPLED = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            sender = request.get_response_sender()
            sender.send(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", x)]),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
        return None
"""

Tensor = tuple[str, str, Sequence[int]]
"""(name, data type, dims)."""

F4 = ("TYPE_FP32", [4])


def _tensors(kind: str, tensors: Sequence[Tensor], reshape: Mapping[str, Sequence[int]] | None = None) -> str:
    entries = []
    for name, data_type, dims in tensors:
        extra = f" reshape: {{ shape: {list((reshape or {})[name])} }}" if name in (reshape or {}) else ""
        entries.append(f'{{ name: "{name}" data_type: {data_type} dims: {list(dims)}{extra} }}')
    return f"{kind} [ {', '.join(entries)} ]\n"


def python_model(
    repository: Path,
    name: str,
    source: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    *,
    max_batch_size: int = 8,
    extra: str = "",
) -> Path:
    """Write ``<name>/config.pbtxt`` (backend python) and ``<name>/1/model.py``; return the model directory."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(source)
    config = f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
    config += _tensors("input", inputs) + _tensors("output", outputs)
    config += "instance_group [ { count: 1 kind: KIND_CPU } ]\n" + extra
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def step(model: str, inputs: Mapping[str, str], outputs: Mapping[str, str], version: int = -1) -> str:
    """One ``ensemble_scheduling`` step as config text; maps go model tensor -> ensemble tensor."""
    maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return f'{{ model_name: "{model}" model_version: {version} {" ".join(maps)} }}'


def ensemble(
    repository: Path,
    name: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    steps: Sequence[str],
    *,
    max_batch_size: int = 8,
    extra: str = "",
    reshape: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write an ensemble's ``config.pbtxt`` and its empty version directory; return the model directory."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    config = f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n'
    config += _tensors("input", inputs, reshape) + _tensors("output", outputs, reshape)
    config += f"ensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n" + extra
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir


INPUTS: list[Tensor] = [("A", *F4), ("B", *F4)]
OUTPUTS: list[Tensor] = [("OUT_SUM", *F4), ("OUT_DIFF", *F4)]
STEPS = [
    step("add_sub", {"a": "A", "b": "B"}, {"sum": "S", "diff": "D"}),
    step("scale", {"x": "S"}, {"y": "OUT_SUM"}),
    step("scale", {"x": "D"}, {"y": "OUT_DIFF"}),
]


def write_repository(repository: Path) -> Path:
    """The two Python models and the ``pipeline`` ensemble over them."""
    python_model(repository, "add_sub", ADD_SUB, [("a", *F4), ("b", *F4)], [("sum", *F4), ("diff", *F4)])
    python_model(repository, "scale", SCALE, [("x", *F4)], [("y", *F4)])
    ensemble(repository, "pipeline", INPUTS, OUTPUTS, STEPS)
    return repository


def expected(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """What ``pipeline`` returns for inputs A and B."""
    return {"OUT_SUM": 2 * (a + b), "OUT_DIFF": 2 * (a - b)}


# --- mistakes planted beside the good repository -------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A mistake planted in the repository, what the validator says of it, and what Triton does.

    ``plant(repository, name)`` writes the model ``name`` (and any model it needs). The validator reports
    a problem of ``name`` whose message starts with ``path`` and holds ``fragment``. Triton refuses to
    load ``name`` with an error (or a log line) holding ``triton``; or, with ``at_inference``, loads it
    and fails a request with that text.
    """

    plant: Callable[[Path, str], object]
    path: str
    fragment: str
    triton: str
    severity: str = "error"
    at_inference: bool = False


def _pipeline_with(
    *, inputs=INPUTS, outputs=OUTPUTS, steps=STEPS, **options
) -> Callable[[Path, str], object]:
    return lambda repository, name: ensemble(repository, name, inputs, outputs, steps, **options)


def _with_model(make_model: Callable[[Path], object], make: Callable[[Path, str], object]) -> Callable:
    def plant(repository: Path, name: str) -> None:
        make_model(repository)
        make(repository, name)

    return plant


def _self_step(repository: Path, name: str) -> None:
    ensemble(
        repository, name, INPUTS, OUTPUTS, [STEPS[0], step(name, {"A": "S", "B": "D"}, dict(OUTPUT_PAIRS))]
    )


OUTPUT_PAIRS = (("OUT_SUM", "OUT_SUM"), ("OUT_DIFF", "OUT_DIFF"))


def _loop(repository: Path, name: str) -> None:
    ensemble(
        repository, name, INPUTS, OUTPUTS, [step(f"{name}_back", {"A": "A", "B": "B"}, dict(OUTPUT_PAIRS))]
    )
    ensemble(
        repository, f"{name}_back", INPUTS, OUTPUTS, [step(name, {"A": "A", "B": "B"}, dict(OUTPUT_PAIRS))]
    )


def _no_version(repository: Path, name: str) -> None:
    (ensemble(repository, name, INPUTS, OUTPUTS, STEPS) / "1").rmdir()


def _wrong_platform(repository: Path, name: str) -> None:
    config = ensemble(repository, name, INPUTS, OUTPUTS, STEPS) / "config.pbtxt"
    config.write_text(config.read_text().replace('platform: "ensemble"', 'platform: "onnxruntime_onnx"'))


def _scale3(repository: Path) -> None:
    python_model(repository, "scale3", SCALE, [("x", "TYPE_FP32", [3])], [("y", "TYPE_FP32", [3])])


def write_scale_one(repository: Path) -> None:
    tensor = ("TYPE_FP32", [1, 4])
    python_model(repository, "scale_one", SCALE, [("x", *tensor)], [("y", *tensor)], max_batch_size=0)


def _echo_decoupled(repository: Path) -> None:
    policy = "model_transaction_policy { decoupled: true }\n"
    python_model(repository, "echo_decoupled", DECOUPLED, [("x", *F4)], [("y", *F4)], extra=policy)


def _broken(repository: Path) -> None:
    python_model(repository, "broken", "class Model:\n    pass\n", [("x", *F4)], [("y", *F4)])


def _python(source: str, extra: str = "") -> Callable[[Path, str], object]:
    return lambda repository, name: python_model(
        repository, name, source, [("x", *F4)], [("y", *F4)], extra=extra
    )


def _env(path: str) -> str:
    return f'parameters {{ key: "EXECUTION_ENV_PATH" value: {{ string_value: "{path}" }} }}\n'


SYNTAX_ERROR = SCALE.replace("def execute(self, requests):", "def execute(self, requests)")
NO_EXECUTE = SCALE.split("    def execute")[0]

CASES: dict[str, Case] = {
    "missing_model": Case(
        _pipeline_with(steps=[STEPS[0], step("scael", {"x": "S"}, {"y": "OUT_SUM"}), STEPS[2]]),
        "ensemble_scheduling.step[1].model_name",
        "there is no model 'scael'; did you mean 'scale'?",
        "contains models that are not available or ambiguous: scael",
    ),
    "missing_version": Case(
        _pipeline_with(steps=[STEPS[0], step("scale", {"x": "S"}, {"y": "OUT_SUM"}, version=2), STEPS[2]]),
        "ensemble_scheduling.step[1].model_version",
        "model 'scale' serves version(s) 1, not 2",
        "whose required version 2 is not loaded",
    ),
    "wrong_input_key": Case(
        _pipeline_with(steps=[STEPS[0], step("scale", {"X": "S"}, {"y": "OUT_SUM"}), STEPS[2]]),
        'ensemble_scheduling.step[1].input_map["X"]',
        "'X' is not an input of model 'scale'; did you mean 'x'?",
        "is mapping to non-existing input X in model scale",
    ),
    "wrong_output_key": Case(
        _pipeline_with(steps=[STEPS[0], step("scale", {"x": "S"}, {"Y": "OUT_SUM"}), STEPS[2]]),
        'ensemble_scheduling.step[1].output_map["Y"]',
        "'Y' is not an output of model 'scale'; did you mean 'y'?",
        "is mapped from non-existing output Y in model scale",
    ),
    "unmapped_input": Case(
        _pipeline_with(
            inputs=INPUTS[:1], steps=[step("add_sub", {"a": "A"}, {"sum": "S", "diff": "D"}), *STEPS[1:]]
        ),
        "ensemble_scheduling.step[0].input_map",
        "input 'b' of model 'add_sub' is mapped to no tensor",
        "input b in model add_sub is not mapped to any ensemble tensors",
    ),
    "unused_input": Case(
        _pipeline_with(inputs=[*INPUTS, ("C", *F4)]),
        "input[2]",
        "ensemble input 'C' is read by no step",
        "ensemble input 'C' for ensemble unused_input' is not used",
    ),
    "undefined_tensor": Case(
        _pipeline_with(steps=[*STEPS[:2], step("scale", {"x": "DD"}, {"y": "OUT_DIFF"})]),
        'ensemble_scheduling.step[2].input_map["x"]',
        "tensor 'DD' is neither an ensemble input nor written by any step; did you mean 'D'?",
        "at least one of its depending tensors, 'DD', is not connected",
    ),
    "written_twice": Case(
        _pipeline_with(steps=[*STEPS[:2], step("scale", {"x": "D"}, {"y": "OUT_SUM"})], outputs=OUTPUTS[:1]),
        'ensemble_scheduling.step[2].output_map["y"]',
        "tensor 'OUT_SUM' is already written by step 1",
        "ensemble tensor 'OUT_SUM' can appear in an output map only once",
    ),
    "output_not_written": Case(
        _pipeline_with(outputs=[*OUTPUTS, ("OUT_X", *F4)]),
        "output[2]",
        "ensemble output 'OUT_X' is written by no step",
        "ensemble output 'OUT_X' for ensemble output_not_written' is not used",
    ),
    "unused_tensor": Case(
        _pipeline_with(steps=[*STEPS, step("scale", {"x": "S"}, {"y": "EXTRA"})]),
        'ensemble_scheduling.step[3].output_map["y"]',
        "tensor 'EXTRA' is written but read by no step and is no ensemble output",
        "ensemble tensor 'EXTRA' is unused",
    ),
    "dtype_mismatch": Case(
        _pipeline_with(inputs=[("A", "TYPE_INT32", [4]), INPUTS[1]]),
        'ensemble_scheduling.step[0].input_map["a"]',
        "tensor 'A' is TYPE_FP32 as model 'add_sub' input 'a' but TYPE_INT32 as ensemble input 'A'",
        "inconsistent data type: TYPE_INT32 is inferred from model dtype_mismatch",
    ),
    "shape_mismatch": Case(
        _pipeline_with(inputs=[("A", "TYPE_FP32", [5]), INPUTS[1]]),
        'ensemble_scheduling.step[0].input_map["a"]',
        "tensor 'A' has shape [-1, 4] as model 'add_sub' input 'a' but [-1, 5] as ensemble input 'A'",
        "inconsistent shape: [-1,5] is inferred from model shape_mismatch while [-1,4]",
    ),
    "reshape_mismatch": Case(
        _pipeline_with(
            inputs=[("P", *F4)],
            outputs=[("R", *F4)],
            steps=[step("scale", {"x": "P"}, {"y": "R"})],
            reshape={"P": [2, 2]},
        ),
        'ensemble_scheduling.step[0].input_map["x"]',
        "tensor 'P' has shape [-1, 4] as model 'scale' input 'x' but [-1, 2, 2] as ensemble input 'P'",
        "inconsistent shape: [-1,2,2] is inferred from model reshape_mismatch while [-1,4]",
    ),
    "batch_too_large": Case(
        _pipeline_with(max_batch_size=16),
        "max_batch_size",
        "max_batch_size 16 exceeds the 8 of step 0's model 'add_sub'",
        "allows maximum batch size 16, but it contains model add_sub which only allows maximum batch size to be 8",
    ),
    "step_cycle": Case(
        _pipeline_with(
            steps=[
                STEPS[0],
                step("scale", {"x": "T2"}, {"y": "T1"}),
                step("scale", {"x": "T1"}, {"y": "T2"}),
                *STEPS[1:],
            ]
        ),
        "ensemble_scheduling.step[1]",
        "step 1 (model 'scale') -> step 2 (model 'scale') -> step 1 (model 'scale'), through tensor(s) T1, T2",
        "ensemble tensor 'T1' is unused",
    ),
    "self_step": Case(
        _self_step,
        "ensemble_scheduling.step[1].model_name",
        "step 1 runs the ensemble 'self_step' itself",
        "circular dependency between ensembles: self_step",
    ),
    "loop": Case(
        _loop,
        "ensemble_scheduling.step[0].model_name",
        "circular dependency between ensembles: loop -> loop_back -> loop",
        "circular dependency between ensembles: loop -> ... -> loop_back -> loop",
    ),
    "with_instance_group": Case(
        _pipeline_with(extra="instance_group [ { count: 1 kind: KIND_CPU } ]\n"),
        "instance_group",
        "an ensemble takes no instance_group",
        "instance group should not be specified for ensemble 'with_instance_group'",
    ),
    "wrong_platform": Case(
        _wrong_platform,
        "platform",
        "only an ensemble takes ensemble_scheduling",
        "ensemble scheduling cannot be set for model 'wrong_platform' whose platform is not ensemble",
    ),
    "no_input_map": Case(
        _pipeline_with(steps=[*STEPS, '{ model_name: "scale" output_map { key: "y" value: "EXTRA" } }']),
        "ensemble_scheduling.step[3].input_map",
        "step 3 (model 'scale') maps no input",
        "must specify 'input_map' in step 3 of ensemble 'no_input_map'",
    ),
    "no_version_dir": Case(
        _no_version,
        "no version directory",
        "which Triton refuses for an ensemble too",
        "at least one version must be available under the version policy of model 'no_version_dir'",
    ),
    "decoupled_mix": Case(
        _with_model(
            _echo_decoupled,
            _pipeline_with(
                steps=[
                    step("echo_decoupled", {"x": "A"}, {"y": "S"}),
                    step("scale", {"x": "B"}, {"y": "D"}),
                    step("add_sub", {"a": "S", "b": "D"}, {"sum": "OUT_SUM", "diff": "OUT_DIFF"}),
                ]
            ),
        ),
        "ensemble_scheduling.step[2]",
        "reads tensors from the ensemble's inputs and from decoupled step 0 (model 'echo_decoupled')",
        "receives inputs originated from different decoupled models",
    ),
    "nested_mismatch": Case(
        _pipeline_with(
            inputs=[("P", *F4), ("Q", *F4)],
            outputs=[("R", "TYPE_FP32", [3])],
            steps=[step("pipeline", {"A": "P", "B": "Q"}, {"OUT_SUM": "R"})],
        ),
        'ensemble_scheduling.step[0].output_map["OUT_SUM"]',
        "tensor 'R' has shape [-1, 4] as model 'pipeline' output 'OUT_SUM' but [-1, 3] as ensemble output 'R'",
        "inconsistent shape: [-1,3] is inferred from model nested_mismatch while [-1,4] is inferred from model pipeline",
    ),
    "broken_step": Case(
        _with_model(
            _broken, _pipeline_with(steps=[STEPS[0], step("broken", {"x": "S"}, {"y": "OUT_SUM"}), STEPS[2]])
        ),
        "ensemble_scheduling.step[1].model_name",
        "model 'broken' has errors (reported for it)",
        "depends on 'broken' which has no loaded version",
    ),
    "py_syntax_error": Case(
        _python(SYNTAX_ERROR),
        "1/model.py line 9: expected ':'",
        "SyntaxError",
        "SyntaxError: expected ':' (model.py, line 9)",
    ),
    "py_no_class": Case(
        _python("class Model:\n    def execute(self, requests):\n        return []\n"),
        "1/model.py defines no class TritonPythonModel",
        "AttributeError",
        "has no attribute 'TritonPythonModel'",
    ),
    "py_env_missing": Case(
        _python(SCALE, _env("$$TRITON_MODEL_DIRECTORY/env.tar.gz")),
        "parameters EXECUTION_ENV_PATH '$$TRITON_MODEL_DIRECTORY/env.tar.gz'",
        "does not exist, so Triton fails to load the model",
        "Failed to get the canonical path for",
    ),
    "py_env_elsewhere": Case(
        _python(SCALE, _env("/nonexistent/tritongen-test-env.tar.gz")),
        "parameters EXECUTION_ENV_PATH '/nonexistent/tritongen-test-env.tar.gz'",
        "does not exist here",
        "Failed to get the canonical path for /nonexistent/tritongen-test-env.tar.gz",
        severity="warning",
    ),
    # Triton loads these; their requests fail
    "py_no_execute": Case(
        _python(NO_EXECUTE),
        "1/model.py: class TritonPythonModel has no execute method",
        "Triton loads the model but fails every request",
        "does not implement `execute` method",
        at_inference=True,
    ),
    "readers_disagree": Case(
        _with_model(
            _scale3,
            _pipeline_with(
                inputs=[("A", "TYPE_FP32", [-1]), INPUTS[1]],
                outputs=[*OUTPUTS, ("OUT_3", "TYPE_FP32", [3])],
                steps=[*STEPS, step("scale3", {"x": "A"}, {"y": "OUT_3"})],
            ),
        ),
        'ensemble_scheduling.step[3].input_map["x"]',
        "tensor 'A' has shape [-1, 3] as model 'scale3' input 'x' but [-1, 4] as model 'add_sub' input 'a'",
        "unexpected shape for input 'x' for model 'scale3'",
        at_inference=True,
    ),
    "batch_one_step": Case(
        _with_model(
            write_scale_one,
            _pipeline_with(steps=[STEPS[0], step("scale_one", {"x": "S"}, {"y": "OUT_SUM"}), STEPS[2]]),
        ),
        'ensemble_scheduling.step[1].input_map["x"]',
        "model 'scale_one' input 'x' does not batch and takes tensor 'S' as [1, 4]",
        "unexpected shape for input 'x' for model 'scale_one'. Expected [1,4], got [2,4]",
        severity="warning",
        at_inference=True,
    ),
}
