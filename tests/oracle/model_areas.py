"""Strategies for the areas that involve more than one config: ensembles over Python steps, version
policies against version directories, backend/platform/runtime against model files, auto-complete,
the model files themselves, and the schema version (fields the served Triton 2.51 cannot parse).

Ensembles, Python models and their files are judged by Triton's core and the official Python backend;
the ONNX cases (labelled ``ONNX:``) by the embedded server's stand-in backend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import text_format
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc

from .base import (
    Mutation,
    add_tensor,
    config_of,
    mutated,
    on_config,
    onnx_model,
    onnx_models,
    python_config,
    python_models,
    setter,
)
from .models import BROKEN_MODELS, NAME_TOKEN, Case, Model, OnnxTensor

FP32_4 = ("TYPE_FP32", [4])

# --- ensembles -------------------------------------------------------------------------------------


def step_model(name: str, inputs: Sequence[str] = ("x",), outputs: Sequence[str] = ("y",)) -> Model:
    """A Python step: FP32 [4] tensors, batching up to 8."""
    return Model(
        name, python_config([(n, *FP32_4) for n in inputs], [(n, *FP32_4) for n in outputs], 8, name=name)
    )


def add_step(config: mc.ModelConfig, model: str, inputs: dict[str, str], outputs: dict[str, str]) -> Any:
    step = config.ensemble_scheduling.step.add()
    step.model_name = model
    step.model_version = -1
    step.input_map.update(inputs)
    step.output_map.update(outputs)
    return step


@st.composite
def _ensembles(draw: Any) -> list[Model]:
    """``m`` over steps ``a`` and ``b``: a chain (IN -> a -> MID -> b -> OUT), two parallel steps
    (IN -> a -> OUT_A, IN -> b -> OUT_B), or one step (IN -> a -> OUT)."""
    shape = draw(st.sampled_from(["chain", "parallel", "single"]))
    config = mc.ModelConfig(name="m", platform="ensemble", max_batch_size=draw(st.sampled_from([0, 4, 8])))
    add_tensor(config.input, "IN", *FP32_4)
    if shape == "parallel":
        add_tensor(config.output, "OUT_A", *FP32_4)
        add_tensor(config.output, "OUT_B", *FP32_4)
        add_step(config, "a", {"x": "IN"}, {"y": "OUT_A"})
        add_step(config, "b", {"x": "IN"}, {"y": "OUT_B"})
    else:
        add_tensor(config.output, "OUT", *FP32_4)
        add_step(config, "a", {"x": "IN"}, {"y": "MID" if shape == "chain" else "OUT"})
        if shape == "chain":
            add_step(config, "b", {"x": "MID"}, {"y": "OUT"})
    steps = [step_model("a")] + ([step_model("b")] if shape != "single" else [])
    return [Model("m", config, kind="ensemble"), *steps]


def _step_config(models: list[Model], name: str) -> mc.ModelConfig:
    model = next(m for m in models if m.name == name)
    assert isinstance(model.config, mc.ModelConfig)
    return model.config


def _decoupled_steps(fan_in: bool) -> Mutation:
    """Two decoupled steps side by side, their outputs the ensemble's or one step's inputs."""

    def mutation(draw: Any, models: list[Model]) -> None:
        config = mc.ModelConfig(name="m", platform="ensemble", max_batch_size=0)
        add_tensor(config.input, "IN", *FP32_4)
        outputs = ["OUT"] if fan_in else ["OUT_A", "OUT_B"]
        for name in outputs:
            add_tensor(config.output, name, *FP32_4)
        add_step(config, "a", {"x": "IN"}, {"y": "OUT_A" if not fan_in else "A"})
        add_step(config, "b", {"x": "IN"}, {"y": "OUT_B" if not fan_in else "B"})
        steps = [step_model("a"), step_model("b")]
        for step in steps:
            config_of([step]).model_transaction_policy.decoupled = True
        if fan_in:
            add_step(config, "c", {"x0": "A", "x1": "B"}, {"y": "OUT"})
            steps.append(step_model("c", inputs=("x0", "x1")))
        models[:] = [Model("m", config, kind="ensemble"), *steps]

    return mutation


def _one_decoupled(draw: Any, models: list[Model]) -> None:
    _step_config(models, models[-1].name).model_transaction_policy.decoupled = True


def _step_change(change: Any) -> Mutation:
    def mutation(draw: Any, models: list[Model]) -> None:
        change(_step_config(models, "a"), config_of(models))

    return mutation


def _spare_output(step: mc.ModelConfig, config: mc.ModelConfig) -> None:
    add_tensor(step.output, "y2", *FP32_4)
    config.ensemble_scheduling.step[0].output_map["y2"] = "SPARE"


def _two_outputs_one_tensor(step: mc.ModelConfig, config: mc.ModelConfig) -> None:
    add_tensor(step.output, "y2", *FP32_4)
    first = config.ensemble_scheduling.step[0]
    first.output_map["y2"] = first.output_map["y"]


def _as_python(draw: Any, config: mc.ModelConfig) -> None:
    config.platform = ""
    config.backend = "python"


def _nested(draw: Any, models: list[Model]) -> None:
    inner = models[0]
    inner.name = "inner"
    config = config_of(models)
    config.name = "inner"
    outer = mc.ModelConfig(name="m", platform="ensemble", max_batch_size=config.max_batch_size)
    outer.input.extend(config.input)
    outer.output.extend(config.output)
    names = {t.name: t.name for t in config.output}
    add_step(outer, "inner", {"IN": "IN"}, names)
    models.insert(0, Model("m", outer, kind="ensemble"))


ENSEMBLE_MUTATIONS: dict[str, Mutation] = {
    "an unknown step model": on_config(
        lambda draw, c: setattr(c.ensemble_scheduling.step[0], "model_name", "nowhere")
    ),
    "input_map to a missing step input": on_config(
        lambda draw, c: c.ensemble_scheduling.step[0].input_map.update({"z": "IN"})
    ),
    "output_map from a missing step output": on_config(
        lambda draw, c: c.ensemble_scheduling.step[0].output_map.update({"z": "SPARE"})
    ),
    "an ensemble input nobody reads": on_config(lambda draw, c: add_tensor(c.input, "IN2", *FP32_4)),
    "an ensemble output nobody writes": on_config(lambda draw, c: add_tensor(c.output, "OUT2", *FP32_4)),
    "a step output nobody reads": _step_change(_spare_output),
    "a step input left unmapped": _step_change(lambda step, c: add_tensor(step.input, "x2", *FP32_4)),
    "two step outputs to one tensor": _step_change(_two_outputs_one_tensor),
    "a step reading its own output": on_config(
        lambda draw, c: c.ensemble_scheduling.step[0].input_map.update(
            {"x": next(iter(c.ensemble_scheduling.step[0].output_map.values()))}
        )
    ),
    "an instance group on the ensemble": on_config(lambda draw, c: c.instance_group.add()),
    "optimization on the ensemble": setter(optimization__priority=mc.ModelOptimizationPolicy.PRIORITY_MAX),
    "warm-up on the ensemble": on_config(lambda draw, c: setattr(c.model_warmup.add(), "name", "w")),
    "a backend on the ensemble": setter(backend="python"),
    "dynamic batching on the ensemble": on_config(lambda draw, c: c.dynamic_batching.SetInParent()),
    "no steps": on_config(lambda draw, c: c.ensemble_scheduling.ClearField("step")),
    "platform ensemble without ensemble_scheduling": on_config(
        lambda draw, c: c.ClearField("ensemble_scheduling")
    ),
    "ensemble_scheduling on a Python model": on_config(_as_python),
    "max_batch_size above the steps'": setter(max_batch_size=16),
    "an input type other than the step's": on_config(
        lambda draw, c: setattr(c.input[0], "data_type", mc.TYPE_INT32)
    ),
    "input dims other than the step's": on_config(lambda draw, c: c.input[0].dims.__setitem__(0, 5)),
    "one decoupled step": _one_decoupled,
    "outputs from two decoupled steps": _decoupled_steps(False),
    "a step fed by two decoupled steps": _decoupled_steps(True),
    "a step with an error of its own": _step_change(lambda step, c: step.input[0].dims.__setitem__(0, 0)),
    "an ensemble over an ensemble": _nested,
}

# --- version_policy --------------------------------------------------------------------------------


@st.composite
def _versioned(draw: Any) -> list[Model]:
    models = draw(python_models())
    models[0].versions = draw(st.sampled_from([("1",), ("1", "2"), ("1", "2", "3"), ("2", "10")]))
    policy = config_of(models).version_policy
    numbers = [int(v) for v in models[0].versions]
    choice = draw(st.sampled_from(["none", "latest", "all", "specific"]))
    if choice == "latest":
        policy.latest.num_versions = draw(st.integers(1, len(numbers) + 1))
    elif choice == "all":
        policy.all.SetInParent()
    elif choice == "specific":
        policy.specific.versions.extend(draw(st.lists(st.sampled_from(numbers), min_size=1, unique=True)))
    return models


def _versions(names: tuple[str, ...], extra: dict[str, bytes] | None = None) -> Mutation:
    def mutation(draw: Any, models: list[Model]) -> None:
        models[0].versions = names
        if extra is not None:
            models[0].extra = extra

    return mutation


def _empty_version(policy: str) -> Mutation:
    """A version directory without a model file: the newest (latest picks it) or any (all loads it)."""

    def mutation(draw: Any, models: list[Model]) -> None:
        models[0].extra = {"99/README.txt": b"no model here\n"}
        config = config_of(models)
        config.ClearField("version_policy")
        if policy == "all":
            config.version_policy.all.SetInParent()

    return mutation


def _specific(*versions: int) -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        config.ClearField("version_policy")
        config.version_policy.specific.SetInParent()
        config.version_policy.specific.versions.extend(versions)

    return on_config(change)


VERSION_MUTATIONS: dict[str, Mutation] = {
    "latest 0": on_config(lambda draw, c: setattr(c.version_policy.latest, "num_versions", 0)),
    "specific version without a directory": _specific(7),
    "specific with no versions": _specific(),
    "latest picks a directory without model.py": _empty_version("latest"),
    "all with a directory without model.py": _empty_version("all"),
    "a version 0 directory": _versions(("0",)),
    "no version directory": _versions(()),
    "only a non-numeric directory": _versions(("v1",)),
    "a non-numeric directory beside version 1": _versions(("1", "latest")),
    "a negative version directory": _versions(("-1",)),
}

# --- backend / platform / runtime ------------------------------------------------------------------


def _serving(backend: str = "", platform: str = "", runtime: str = "") -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        config.backend, config.platform, config.runtime = backend, platform, runtime

    return on_config(change)


def _filename(config_name: str, file_name: str) -> Mutation:
    def mutation(draw: Any, models: list[Model]) -> None:
        config_of(models).default_model_filename = config_name
        models[0].filename = file_name

    return mutation


BACKEND_MUTATIONS: dict[str, Mutation] = {
    "neither backend nor platform": _serving(),
    "platform onnxruntime_onnx with backend python": _serving("python", "onnxruntime_onnx"),
    "platform pytorch_libtorch with backend python": _serving("python", "pytorch_libtorch"),
    "platform ensemble with backend python": _serving("python", "ensemble"),
    "platform tensorflow_savedmodel, no backend": _serving("", "tensorflow_savedmodel"),
    "an unknown backend": _serving("nonesuch"),
    "backend Python in capitals": _serving("Python"),
    "an unknown platform beside backend python": _serving("python", "custom_platform"),
    "runtime libtriton_python.so": _serving("python", runtime="libtriton_python.so"),
    "runtime naming a missing library": _serving("python", runtime="libtriton_missing.so"),
    "runtime escaping the backend directory": _serving("python", runtime="../python/libtriton_python.so"),
    "runtime model.py": _serving("python", runtime="model.py"),
    "default_model_filename naming the file": _filename("main.py", "main.py"),
    "default_model_filename naming no file": _filename("main.py", "model.py"),
    "the model file under another name": _filename("", "main.py"),
    "ONNX: backend onnxruntime over a model.py": _serving("onnxruntime"),
    "a config named after another directory": setter(name="elsewhere"),
    "a config without a name": setter(name=""),
}

# --- auto-complete ---------------------------------------------------------------------------------


def _as_auto(tensors: Any) -> list[dict[str, object]]:
    return [
        {"name": t.name, "data_type": mc.DataType.Name(t.data_type), "dims": list(t.dims)} for t in tensors
    ]


@st.composite
def _auto_completed(draw: Any) -> list[Model]:
    """A Python model whose ``auto_complete_config`` adds exactly what its config says."""
    models = draw(python_models())
    config = config_of(models)
    models[0].auto_complete = {"inputs": _as_auto(config.input), "outputs": _as_auto(config.output)}
    return models


def _auto(**changes: Any) -> Mutation:
    """Change what ``auto_complete_config`` adds (``inputs``/``outputs`` lists are edited in place)."""

    def mutation(draw: Any, models: list[Model]) -> None:
        auto = dict(models[0].auto_complete or {})
        for key, change in changes.items():
            auto[key] = change(auto.get(key)) if callable(change) else change
        models[0].auto_complete = auto

    return mutation


def _edit_first(**fields: Any) -> Any:
    def change(tensors: list[dict[str, object]]) -> list[dict[str, object]]:
        first = {**tensors[0], **fields}
        return [{k: v for k, v in first.items() if v is not None}, *tensors[1:]]

    return change


def _config(change: Any) -> Mutation:
    def mutation(draw: Any, models: list[Model]) -> None:
        models[0].config = change(config_of(models))

    return mutation


def _strip_first_input(*fields: str) -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        for name in fields:
            config.input[0].ClearField(name)

    return on_config(change)


def _onnx_config(change: Any) -> Mutation:
    def mutation(draw: Any, models: list[Model]) -> None:
        models[:] = draw(onnx_models())
        models[0].config = change(config_of(models))

    return mutation


def _first_input_without_dims(config: mc.ModelConfig) -> mc.ModelConfig:
    config.input[0].ClearField("dims")
    return config


def _plain(mutation: Mutation) -> Mutation:
    """``mutation`` on a model whose ``model.py`` has no ``auto_complete_config``."""

    def plain(draw: Any, models: list[Model]) -> None:
        mutation(draw, models)
        models[0].auto_complete = None

    return plain


def _both(first: Mutation, second: Mutation) -> Mutation:
    def both(draw: Any, models: list[Model]) -> None:
        first(draw, models)
        second(draw, models)

    return both


def _without(*fields: str) -> Any:
    def change(config: mc.ModelConfig) -> mc.ModelConfig:
        for name in fields:
            config.ClearField(name)
        return config

    return change


AUTO_COMPLETE_MUTATIONS: dict[str, Mutation] = {
    "no config.pbtxt": _config(lambda c: None),
    "an empty config.pbtxt": _config(lambda c: ""),
    "a config of only the name": _config(lambda c: f'name: "{NAME_TOKEN}"\n'),
    "no auto_complete_config and no config.pbtxt": _plain(_config(lambda c: None)),
    "config without inputs": on_config(lambda draw, c: c.ClearField("input")),
    "input without dims": _strip_first_input("dims"),
    "input without dims or data_type": _strip_first_input("dims", "data_type"),
    "input without dims, no auto_complete_config": _plain(_strip_first_input("dims")),
    "auto-complete dims contradict the config": _auto(inputs=_edit_first(dims=[5, 5])),
    "auto-complete data_type contradicts the config": _auto(outputs=_edit_first(data_type="TYPE_INT8")),
    "auto-complete adds an input with an unknown property": _auto(inputs=_edit_first(format="FORMAT_NHWC")),
    "auto-complete adds an input without dims": _auto(inputs=_edit_first(dims=None)),
    "auto-complete max_batch_size below the config's": _auto(max_batch_size=0),
    "auto-complete max_batch_size above the config's": _auto(max_batch_size=16),
    "auto-complete decoupled against the config": _both(
        _auto(decoupled=False), setter(model_transaction_policy__decoupled=True)
    ),
    "auto-complete dynamic batching against sequence batching": _both(
        _auto(dynamic_batching=True), on_config(lambda draw, c: c.sequence_batching.SetInParent())
    ),
    "ONNX: no config.pbtxt": _onnx_config(lambda c: None),
    "ONNX: an empty config.pbtxt": _onnx_config(lambda c: ""),
    "ONNX: config without inputs or outputs": _onnx_config(_without("input", "output")),
    "ONNX: config without max_batch_size": _onnx_config(_without("max_batch_size")),
    "ONNX: input without dims": _onnx_config(_first_input_without_dims),
}

# --- model files -----------------------------------------------------------------------------------


def _source(label: str) -> Mutation:
    def mutation(draw: Any, models: list[Model]) -> None:
        models[0].source = BROKEN_MODELS[label]

    return mutation


def _onnx_mismatch(change: Any) -> Mutation:
    """Swap in an ONNX model, then make the config (or the model) disagree with it."""

    def mutation(draw: Any, models: list[Model]) -> None:
        models[:] = draw(onnx_models())
        change(models)

    return mutation


def _on_onnx_config(change: Any) -> Any:
    return lambda models: change(config_of(models))


def _fixed_batch(models: list[Model]) -> None:
    tensors = [OnnxTensor(t.input, t.output, t.data_type, (1, *t.shape[1:])) for t in models[0].onnx]
    models[0] = onnx_model(tensors, 4)


def _corrupt(models: list[Model]) -> None:
    models[0].kind = "none"
    models[0].extra = {"1/model.onnx": b"this is not an ONNX model\n"}


def _renamed_file(models: list[Model]) -> None:
    config_of(models).default_model_filename = "net.onnx"
    models[0].filename = "net.onnx"


def _other_type(config: mc.ModelConfig) -> None:
    tensor = config.input[0]
    tensor.data_type = mc.TYPE_FP64 if tensor.data_type != mc.TYPE_FP64 else mc.TYPE_FP32


MODEL_FILE_MUTATIONS: dict[str, Mutation] = {
    "no model.py": lambda draw, models: setattr(models[0], "kind", "none"),
    "a model.py with a syntax error": _source("syntax error"),
    "a model.py without TritonPythonModel": _source("no TritonPythonModel class"),
    "ONNX: the model as the config says": _onnx_mismatch(lambda models: None),
    "ONNX: an input name the model lacks": _onnx_mismatch(
        _on_onnx_config(lambda c: setattr(c.input[0], "name", "image"))
    ),
    "ONNX: an output name the model lacks": _onnx_mismatch(
        _on_onnx_config(lambda c: setattr(c.output[0], "name", "score"))
    ),
    "ONNX: input type differs": _onnx_mismatch(_on_onnx_config(_other_type)),
    "ONNX: input dims differ": _onnx_mismatch(_on_onnx_config(lambda c: c.input[0].dims.append(3))),
    "ONNX: a config input the model lacks": _onnx_mismatch(
        _on_onnx_config(lambda c: add_tensor(c.input, "extra", "TYPE_FP32", [2]))
    ),
    "ONNX: a model input the config lacks": _onnx_mismatch(_on_onnx_config(lambda c: c.ClearField("input"))),
    "ONNX: a fixed batch dimension": _onnx_mismatch(_fixed_batch),
    "ONNX: a corrupt model.onnx": _onnx_mismatch(_corrupt),
    "ONNX: no model.onnx": _onnx_mismatch(lambda models: setattr(models[0], "kind", "none")),
    "ONNX: default_model_filename naming the file": _onnx_mismatch(_renamed_file),
}

# --- schema ----------------------------------------------------------------------------------------


def _raw(edit: Any) -> Mutation:
    """The config as text, named with :data:`NAME_TOKEN`, then edited as text."""

    def mutation(draw: Any, models: list[Model]) -> None:
        config = config_of(models)
        config.name = NAME_TOKEN
        models[0].config = edit(text_format.MessageToString(config))

    return mutation


def _metrics(draw: Any, config: mc.ModelConfig) -> None:
    control = config.model_metrics.metric_control.add()
    control.metric_identifier.family = "nv_inference_first_response_histogram_ms"
    control.histogram_options.buckets.extend([1.0, 10.0])


def _inflight(draw: Any, models: list[Model]) -> None:
    config = mc.ModelConfig(name="m", platform="ensemble", max_batch_size=8)
    add_tensor(config.input, "IN", *FP32_4)
    add_tensor(config.output, "OUT", *FP32_4)
    add_step(config, "a", {"x": "IN"}, {"y": "OUT"})
    config.ensemble_scheduling.max_inflight_requests = 4
    models[:] = [Model("m", config, kind="ensemble"), step_model("a")]


def _type_by_number(text: str) -> str:
    match = re.search(r"data_type: (TYPE_\w+)", text)
    if match is None:
        return text
    number = mc.DataType.Value(match.group(1))
    return text[: match.start()] + f"data_type: {number}" + text[match.end() :]


SCHEMA_MUTATIONS: dict[str, Mutation] = {
    "model_metrics (added after 2.51)": on_config(_metrics),
    "ensemble max_inflight_requests (added after 2.51)": _inflight,
    "an unknown field": _raw(lambda text: text + "max_queue_size: 4\n"),
    "a misspelt field": _raw(lambda text: text.replace("max_batch_size", "max_batchsize", 1)),
    "a field given twice": _raw(lambda text: text + 'backend: "python"\n'),
    "a syntax error": _raw(lambda text: text + "input [ { name: \n"),
    "a string where a number goes": _raw(lambda text: text + 'max_batch_size: "eight"\n'),
    "a data type by number": _raw(_type_by_number),
    "an unknown data type name": _raw(lambda text: text.replace("data_type: TYPE_", "data_type: DT_", 1)),
}


def model_areas() -> dict[str, st.SearchStrategy[Case]]:
    """The multi-config areas' strategies, by area."""
    return {
        "ensemble": mutated("ensemble", _ensembles(), ENSEMBLE_MUTATIONS),
        "version_policy": mutated("version_policy", _versioned(), VERSION_MUTATIONS),
        "backend": mutated("backend", python_models(), BACKEND_MUTATIONS),
        "auto_complete": mutated("auto_complete", _auto_completed(), AUTO_COMPLETE_MUTATIONS),
        "model_files": mutated("model_files", python_models(), MODEL_FILE_MUTATIONS),
        "schema": mutated("schema", python_models(), SCHEMA_MUTATIONS),
    }
