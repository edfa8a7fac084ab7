"""Pipelines: built-in steps resolved into ordinary spec entries, and ensembles as Triton configs.

A built-in step (``source: builtin:tokenizer``) declares its I/O and parameters from its settings
(:func:`resolve_model`), after which the build treats it as any Python model. An ensemble's config is
derived from its steps' configs (:func:`ensemble_config`): the tensors the steps read that none writes
are its inputs, the ones they write that none reads its outputs, typed by the steps; the wiring is then
checked edge by edge (:mod:`generator.validate.ensembles`) and every problem is reported against the
spec's field path (:func:`spec_path`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from generator.build.config import compose, tensor_entry
from generator.build.runners import ModelRunner, onnx_runner
from generator.core.errors import GeneratorError, SpecError
from generator.core.triton import ENSEMBLE_PLATFORM, parse_model_config
from generator.spec.models import EnsembleSpec, ModelSpec, Spec, TensorSpec, field_path
from generator.steps import STEP_KINDS


def resolve_model(
    model: ModelSpec, spec_dir: Path, where: str, settings: Mapping[str, Any] | None = None
) -> ModelSpec:
    """``model`` with a built-in step's inputs, outputs and parameters filled in from its settings.

    Args:
        model: A spec entry (returned as it is unless it is a built-in step).
        spec_dir: Where the step's files (a tokenizer.json, a labels file) resolve.
        where: The entry's field path (``models[2]``) for error lines.
        settings: The step's settings with files made at build time in place (default: its ``step``).

    Raises:
        SpecError: invalid step settings, a missing file, or ``parameters`` that clash with the step's.
    """
    if model.builtin is None:
        return model
    from generator.steps import step_definition

    try:
        definition = step_definition(model.builtin, settings or model.step or {}, spec_dir)
    except SpecError as exc:
        raise SpecError(*(f"{where}.{line}" for line in exc.problems)) from None
    clash = sorted(set(model.parameters or {}) & set(definition.parameters))
    if clash:
        raise SpecError(
            f"{where}.parameters: {', '.join(clash)} are set by the {model.builtin} step; set them under step:"
        )
    if definition.decoupled and model.decoupled is False:
        raise SpecError(
            f"{where}.decoupled: the {model.builtin} step sends many responses per request and is decoupled; "
            "remove decoupled: false"
        )

    def tensors(items: Sequence[Mapping[str, Any]]) -> list[TensorSpec]:
        found = []
        for item in items:
            label = item.get("label_filename")
            source = definition.model_files.get(label) if label else None
            found.append(
                TensorSpec(
                    name=item["name"],
                    dtype=item["dtype"],
                    dims=list(item["dims"]),
                    optional=bool(item.get("optional")),
                    label_filename=str(source) if source else None,
                )
            )
        return found

    return model.model_copy(
        update={
            "inputs": tensors(definition.inputs),
            "outputs": tensors(definition.outputs),
            "parameters": {**definition.parameters, **(model.parameters or {})},
            **({"decoupled": True} if definition.decoupled else {}),
        }
    )


def label_files(model: ModelSpec, spec_dir: Path) -> dict[str, Path]:
    """The labels files a model's outputs name: file name in the model directory -> the file to copy.

    Raises:
        SpecError: a labels file is missing, or two outputs name different files of one name.
    """
    found: dict[str, Path] = {}
    for tensor in model.outputs or []:
        if not tensor.label_filename:
            continue
        source = (spec_dir / tensor.label_filename).resolve()
        if not source.is_file():
            raise SpecError(
                f"model '{model.name}': output '{tensor.name}' label_filename: no file at {source}; fix the path"
            )
        if found.get(source.name, source) != source:
            raise SpecError(
                f"model '{model.name}': two label files are named {source.name}; rename one of them"
            )
        found[source.name] = source
    return found


def ensemble_order(spec: Spec) -> list[tuple[int, EnsembleSpec]]:
    """The spec's ensembles, each after the ensembles it runs as steps, with their spec indexes.

    Raises:
        SpecError: ensembles that run one another in a cycle (with the cycle's path).
    """
    by_name = {ensemble.name: (index, ensemble) for index, ensemble in enumerate(spec.ensembles)}
    ordered: list[tuple[int, EnsembleSpec]] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*trail[trail.index(name) :], name]
            index = by_name[trail[-1]][0]
            raise SpecError(
                f"ensembles[{index}]: the ensembles {' -> '.join(cycle)} run one another in a cycle; "
                "break the cycle"
            )
        state[name] = "visiting"
        index, ensemble = by_name[name]
        for step in ensemble.steps:
            if step.model in by_name:
                visit(step.model, [*trail, name])
        state[name] = "done"
        ordered.append((index, ensemble))

    for name in by_name:
        visit(name, [])
    return ordered


def _step_tensor(config: model_config_pb2.ModelConfig, name: str, outputs: bool) -> Any:
    for tensor in config.output if outputs else config.input:
        if tensor.name == name:
            return tensor
    return None


def _entry(name: str, tensor: Any, step: model_config_pb2.ModelConfig, batching: bool) -> dict[str, Any]:
    """An ensemble tensor typed like the step tensor it connects to, with the ensemble's batch axis."""
    dims = list(tensor.dims)
    if not batching and step.max_batch_size > 0:
        dims = [-1, *dims]  # the ensemble passes whole batches: the step's batch axis is a plain axis
    return {"name": name, "data_type": model_config_pb2.DataType.Name(tensor.data_type), "dims": dims}


def _derived(
    ensemble: EnsembleSpec, steps: Mapping[str, model_config_pb2.ModelConfig | None], batching: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tensors the steps read that none writes, and those they write that none reads."""
    written = {tensor for step in ensemble.steps for tensor in step.output_map.values()}
    read = {tensor for step in ensemble.steps for tensor in step.input_map.values()}
    inputs: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for step in ensemble.steps:
        config = steps.get(step.model)
        for key, tensor in step.input_map.items():
            found = _step_tensor(config, key, outputs=False) if config is not None else None
            if tensor not in written and tensor not in inputs and found is not None:
                inputs[tensor] = _entry(tensor, found, config, batching)
        for key, tensor in step.output_map.items():
            found = _step_tensor(config, key, outputs=True) if config is not None else None
            if tensor not in read and found is not None:
                outputs[tensor] = _entry(tensor, found, config, batching)
    return list(inputs.values()), list(outputs.values())


@dataclass(frozen=True)
class EnsembleSource:
    """What an ensemble's config is computed from: its spec entry and its steps' configs.

    Attributes:
        ensemble: The spec entry.
        steps: Each step model's config (``None``: no such model, or its config is unreadable).
    """

    ensemble: EnsembleSpec
    steps: Mapping[str, model_config_pb2.ModelConfig | None]

    @property
    def max_batch_size(self) -> int:
        """The spec's ``max_batch_size``, else the smallest of the steps' (0 without any)."""
        if self.ensemble.max_batch_size is not None:
            return self.ensemble.max_batch_size
        sizes = [config.max_batch_size for config in self.steps.values() if config is not None]
        return min(sizes) if sizes else 0


def _ensemble_serving(source: EnsembleSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """``name``, the ensemble platform and ``max_batch_size``."""
    return {
        "name": source.ensemble.name,
        "platform": ENSEMBLE_PLATFORM,
        "max_batch_size": source.max_batch_size,
    }


def _ensemble_io(source: EnsembleSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """``input`` and ``output``: as the spec declares them, else derived from the steps."""
    ensemble = source.ensemble
    inputs, outputs = _derived(ensemble, source.steps, source.max_batch_size > 0)
    if ensemble.inputs:
        inputs = [tensor_entry(t) for t in ensemble.inputs]
    if ensemble.outputs:
        outputs = [tensor_entry(t) for t in ensemble.outputs]
    return {"input": inputs, "output": outputs}


def _ensemble_scheduling(source: EnsembleSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """The steps, each a model and version with its tensors mapped to the ensemble's."""
    steps = [
        {
            "model_name": step.model,
            "model_version": step.version,
            "input_map": dict(step.input_map),
            "output_map": dict(step.output_map),
        }
        for step in source.ensemble.steps
    ]
    return {"ensemble_scheduling": {"step": steps}}


#: An ensemble config's sections, in the order they are built (see ``config.SECTIONS``).
ENSEMBLE_SECTIONS = (_ensemble_serving, _ensemble_io, _ensemble_scheduling)


def ensemble_config(
    ensemble: EnsembleSpec, steps: Mapping[str, model_config_pb2.ModelConfig | None]
) -> dict[str, Any]:
    """An ensemble's intended ModelConfig as plain data (proto field names), as ``config.build_config``:
    each section from one function of :data:`ENSEMBLE_SECTIONS`.

    Args:
        ensemble: The spec entry.
        steps: Each step model's config (``None``: no such model, or its config is unreadable; the
            checks report it).
    """
    return compose(ENSEMBLE_SECTIONS, EnsembleSource(ensemble, steps))


def spec_path(index: int, ensemble: EnsembleSpec, path: Sequence[Any]) -> str:
    """A path into an ensemble's config as the spec's field path.

    ``("ensemble_scheduling", "step", 1, "input_map", "ids")`` -> ``ensembles[0].steps[1].input_map.ids``;
    ``("input", 0, ...)`` -> ``ensembles[0].inputs[0]`` when the spec declares its inputs, else
    ``ensembles[0].steps`` (they were derived from the steps).
    """
    parts = list(path)
    prefix: list[Any] = ["ensembles", index]
    if parts[:2] == ["ensemble_scheduling", "step"] and len(parts) >= 3:
        step = parts[2]
        rest = parts[3:]
        if rest[:1] in (["model_name"], ["model_version"]):
            rest = ["model" if rest[0] == "model_name" else "version"]
        return field_path(tuple([*prefix, "steps", step, *rest]))
    if parts[:1] in (["input"], ["output"]):
        declared = ensemble.inputs if parts[0] == "input" else ensemble.outputs
        if declared:
            return field_path(tuple([*prefix, f"{parts[0]}s", *parts[1:2]]))
        return field_path(tuple([*prefix, "steps"]))
    return field_path(tuple(prefix + [p for p in parts if p != "ensemble_scheduling"]))


def _python_step(model_dir: Path, version: Path, config: model_config_pb2.ModelConfig) -> ModelRunner:
    """A built-in step of a repository run in-process by its pure class (what its model.py runs)."""
    import importlib.util

    from generator.core.resources import steps_dir

    text = (version / "model.py").read_bytes()
    kind = next(
        (k for k in STEP_KINDS if (steps_dir() / f"{k}.py").read_bytes() == text),
        None,
    )
    if kind is None:
        raise GeneratorError(
            f"model '{model_dir.name}' is a Python model of its own; only built-in steps run in-process"
        )
    spec = importlib.util.spec_from_file_location(f"_tritongen_step_{kind}", steps_dir() / f"{kind}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = {key: value.string_value for key, value in config.parameters.items()}
    input_name = config.input[0].name
    if kind == "tokenizer":
        work = module.Tokenize(settings, version / "tokenizer.json")
    elif kind == "image":
        work = module.PreprocessImage(settings)
    else:  # postprocess, token_labels: arrays in, arrays out
        labels = version / settings["labels_file"] if settings.get("labels_file") else None
        kind_class = module.TokenLabels if kind == "token_labels" else module.Postprocess
        arrays = kind_class(settings, labels)
        return lambda feeds: arrays(feeds[input_name])

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return work([row[0] for row in feeds[input_name]])  # one string (or image) per batch row

    return run


def local_ensemble(repository: Path, name: str) -> ModelRunner:
    """Run a repository's ensemble in this process: ONNX steps in ONNX Runtime, built-in steps by their
    pure classes, wired as its ``ensemble_scheduling`` says (the in-process reference of a pipeline).

    Raises:
        GeneratorError: a step is neither an ONNX model nor a built-in step, or a file is missing.
    """
    config = parse_model_config((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
    steps: list[tuple[Any, ModelRunner]] = []
    for step in config.ensemble_scheduling.step:
        model_dir = repository / step.model_name
        step_config = parse_model_config((model_dir / "config.pbtxt").read_text(encoding="utf-8"))
        versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        version = model_dir / str(step.model_version if step.model_version > 0 else versions[-1])
        if step_config.platform == ENSEMBLE_PLATFORM:
            runner = local_ensemble(repository, step.model_name)
        elif step_config.backend == "python":
            runner = _python_step(model_dir, version, step_config)
        else:
            runner = onnx_runner(version / (step_config.default_model_filename or "model.onnx"))
        steps.append((step, runner))
    outputs = [tensor.name for tensor in config.output]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = dict(feeds)
        for step, runner in steps:
            produced = runner({key: tensors[value] for key, value in step.input_map.items()})
            tensors.update({value: produced[key] for key, value in step.output_map.items()})
        return {name: tensors[name] for name in outputs}

    return run
