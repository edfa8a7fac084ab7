"""Building blocks of the strategies: tensors, a sound Python-backend config, and one mutation per case.

Every area is drawn the same way (:func:`mutated`): a sound base (a config Triton loads, with the model
files it needs) and then, most of the time, one mutation taken from the area's table. The mutation's
label names the case, so a disagreement reads as "this change, in this area". Whether the mutated
config is really refused is for Triton to say, not for the table: some mutations are legal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc

from .models import Case, Model, OnnxTensor

#: Data types of the generated tensors (the trivial model returns zeros of any of them).
DATA_TYPES = (
    "TYPE_FP32",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_STRING",
    "TYPE_FP64",
)

KIND_CPU = mc.ModelInstanceGroup.KIND_CPU
KIND_GPU = mc.ModelInstanceGroup.KIND_GPU

#: ``mutation(draw, models)`` changes the drawn models in place (``models[0]`` is the one Triton loads).
Mutation = Callable[[Any, list[Model]], None]

dims_lists = st.lists(st.sampled_from([1, 2, 3, 4, 8, -1]), min_size=1, max_size=3)
fixed_dims_lists = st.lists(st.sampled_from([1, 2, 3, 4, 8]), min_size=1, max_size=3)


def add_tensor(tensors: Any, name: str, data_type: str, dims: Sequence[int]) -> Any:
    """Append a tensor to a repeated ``input``/``output`` field; return it."""
    tensor = tensors.add()
    tensor.name = name
    tensor.data_type = mc.DataType.Value(data_type)
    tensor.dims.extend(dims)
    return tensor


def python_config(
    inputs: Sequence[tuple[str, str, Sequence[int]]],
    outputs: Sequence[tuple[str, str, Sequence[int]]],
    max_batch_size: int,
    name: str = "m",
) -> mc.ModelConfig:
    """A Python-backend config with one KIND_CPU instance."""
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    for tensor in inputs:
        add_tensor(config.input, *tensor)
    for tensor in outputs:
        add_tensor(config.output, *tensor)
    group = config.instance_group.add()
    group.kind = KIND_CPU
    group.count = 1
    return config


@st.composite
def python_configs(
    draw: Any,
    batch_sizes: Sequence[int] = (0, 4, 8),
    dims: st.SearchStrategy[list[int]] = dims_lists,
    types: Sequence[str] = DATA_TYPES,
) -> mc.ModelConfig:
    """A sound Python-backend config: 1-2 inputs ``INPUT<i>``, 1-2 outputs ``OUTPUT<i>``."""
    max_batch_size = draw(st.sampled_from(batch_sizes))
    inputs = [(f"INPUT{i}", draw(st.sampled_from(types)), draw(dims)) for i in range(draw(st.integers(1, 2)))]
    outputs = [
        (f"OUTPUT{i}", draw(st.sampled_from(types)), draw(dims)) for i in range(draw(st.integers(1, 2)))
    ]
    return python_config(inputs, outputs, max_batch_size)


def python_models(**options: Any) -> st.SearchStrategy[list[Model]]:
    """One sound Python model ``m`` (see :func:`python_configs` for the options)."""
    return python_configs(**options).map(lambda config: [Model("m", config)])


#: What :func:`mutated` was given, by area, so that :func:`labelled` can draw one label of it.
_AREAS: dict[str, tuple[st.SearchStrategy[list[Model]], Mapping[str, Mutation], str | None]] = {}


def mutated(
    area: str,
    bases: st.SearchStrategy[list[Model]],
    mutations: Mapping[str, Mutation],
    judge: str | None = None,
    label: str | None = None,
) -> st.SearchStrategy[Case]:
    """Cases of ``area``: a sound base from ``bases``, then one of ``mutations`` or none (``valid``).

    About a third of the cases stay sound, so the figures count false alarms as well as refusals. The
    judge is :func:`judge_of` the drawn models unless given. With ``label``, every case has that label.
    """
    _AREAS[area] = (bases, mutations, judge)
    labels = [label] if label else ["valid"] * max(2, len(mutations) // 2) + sorted(mutations)

    @st.composite
    def build(draw: Any) -> Case:
        models = draw(bases)
        label = draw(st.sampled_from(labels))
        if label != "valid":
            mutations[label](draw, models)
        return Case(area, label, tuple(models), judge or judge_of(models))

    return build()


#: Backends the embedded server runs with its own Python-based stand-in, not Triton's native backend.
STAND_IN_BACKENDS = frozenset({"onnxruntime", "pytorch"})
STAND_IN_PLATFORMS = frozenset({"onnxruntime_onnx", "pytorch_libtorch"})


def judge_of(models: Sequence[Model]) -> str:
    """``stand-in`` where a model of the case is served by the stand-in backend, else ``core``."""
    for model in models:
        config = model.config
        named = isinstance(config, mc.ModelConfig) and (
            config.backend in STAND_IN_BACKENDS or config.platform in STAND_IN_PLATFORMS
        )
        if model.kind == "onnx" or named:
            return "stand-in"
    return "core"


def labelled(area: str, label: str) -> st.SearchStrategy[Case]:
    """Cases of an area made by :func:`mutated` (once that ran), all with ``label``.

    Raises:
        KeyError: The area or the label is unknown.
    """
    bases, mutations, judge = _AREAS[area]
    if label != "valid" and label not in mutations:
        raise KeyError(f"area {area!r} has no mutation {label!r}")
    return mutated(area, bases, mutations, judge, label)


def config_of(models: list[Model]) -> mc.ModelConfig:
    """The config of the model Triton loads (a ``ModelConfig``, never raw text, in the bases)."""
    config = models[0].config
    assert isinstance(config, mc.ModelConfig)
    return config


def on_config(change: Callable[[Any, mc.ModelConfig], None]) -> Mutation:
    """A mutation of the loaded model's config alone."""

    def mutation(draw: Any, models: list[Model]) -> None:
        change(draw, config_of(models))

    return mutation


def setter(**fields: Any) -> Mutation:
    """A mutation that sets fields of the loaded model's config, nested with ``__`` (``dynamic_batching__priority_levels``)."""

    def change(draw: Any, config: mc.ModelConfig) -> None:
        for path, value in fields.items():
            *parents, last = path.split("__")
            message: Any = config
            for part in parents:
                message = getattr(message, part)
            setattr(message, last, value)

    return on_config(change)


ONNX_DATA_TYPES = ("TYPE_FP32", "TYPE_INT64", "TYPE_INT32", "TYPE_FP16", "TYPE_BOOL", "TYPE_UINT8")


def onnx_model(tensors: Sequence[OnnxTensor], max_batch_size: int, via: str = "platform") -> Model:
    """An ONNX model ``m`` and the config that matches it (``platform`` or ``backend`` named)."""
    config = mc.ModelConfig(name="m", max_batch_size=max_batch_size)
    if via == "platform":
        config.platform = "onnxruntime_onnx"
    else:
        config.backend = "onnxruntime"
    for tensor in tensors:
        dims = tensor.shape[1:] if max_batch_size else tensor.shape
        add_tensor(config.input, tensor.input, tensor.data_type, dims)
        add_tensor(config.output, tensor.output, tensor.data_type, dims)
    group = config.instance_group.add()
    group.kind = KIND_CPU
    group.count = 1
    return Model("m", config, kind="onnx", onnx=tuple(tensors))


@st.composite
def onnx_models(draw: Any, batch_sizes: Sequence[int] = (0, 8)) -> list[Model]:
    """One ONNX model ``m`` (each output the ``Identity`` of an input) with a config that matches it."""
    max_batch_size = draw(st.sampled_from(batch_sizes))
    tensors = []
    for index in range(draw(st.integers(1, 2))):
        shape = tuple(draw(st.lists(st.sampled_from([1, 2, 4, -1]), min_size=1, max_size=2)))
        tensors.append(
            OnnxTensor(
                f"x{index}",
                f"y{index}",
                draw(st.sampled_from(ONNX_DATA_TYPES)),
                (-1, *shape) if max_batch_size else shape,
            )
        )
    return [onnx_model(tensors, max_batch_size, draw(st.sampled_from(["platform", "backend"])))]


def replace_with_onnx(change: Callable[[Any, mc.ModelConfig], None]) -> Mutation:
    """A mutation that swaps the Python model for an ONNX one, then changes its config."""

    def mutation(draw: Any, models: list[Model]) -> None:
        models[0] = draw(onnx_models())[0]
        change(draw, config_of(models))

    return mutation
