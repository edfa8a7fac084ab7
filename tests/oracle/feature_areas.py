"""Strategies for the config's features: parameters, optimization, response cache, transaction policy,
warm-up.

Bases are Python-backend models (Triton's core and the official Python backend judge them); the
mutations labelled ``ONNX:`` swap in an ONNX model, which the embedded server's stand-in backend judges.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc

from .base import (
    Mutation,
    config_of,
    fixed_dims_lists,
    mutated,
    on_config,
    python_models,
    replace_with_onnx,
    setter,
)
from .models import Case

# --- parameters ------------------------------------------------------------------------------------


def _parameter(key: str, value: str) -> Any:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        config.parameters[key].string_value = value

    return change


def _batch_strategy(sequence: bool) -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        if sequence:
            config.sequence_batching.SetInParent()
        else:
            config.dynamic_batching.SetInParent()
        config.parameters["TRITON_BATCH_STRATEGY_PATH"].string_value = "/nonexistent/libbatching.so"

    return on_config(change)


def _agent(draw: Any, config: mc.ModelConfig) -> None:
    config.model_repository_agents.agents.add().name = "checksum"


def _op_library(draw: Any, config: mc.ModelConfig) -> None:
    config.model_operations.op_library_filename.append("/nonexistent/libcustom_ops.so")


PARAMETER_MUTATIONS: dict[str, Mutation] = {
    "a free-form parameter": on_config(_parameter("team", "vision")),
    "a parameter with an empty key": on_config(_parameter("", "x")),
    "a parameter with an empty value": on_config(_parameter("note", "")),
    "EXECUTION_ENV_PATH to a missing archive": on_config(
        _parameter("EXECUTION_ENV_PATH", "/nonexistent/env.tar.gz")
    ),
    "EXECUTION_ENV_PATH in the model directory, missing": on_config(
        _parameter("EXECUTION_ENV_PATH", "$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    ),
    "TRITON_BATCH_STRATEGY_PATH with sequence batching": _batch_strategy(True),
    "TRITON_BATCH_STRATEGY_PATH to a missing library": _batch_strategy(False),
    "ONNX: a thread count that is no number": replace_with_onnx(_parameter("intra_op_thread_count", "many")),
    "ONNX: a thread count of 1": replace_with_onnx(_parameter("intra_op_thread_count", "1")),
    "ONNX: execution_mode 1": replace_with_onnx(_parameter("execution_mode", "1")),
    "ONNX: a free-form parameter": replace_with_onnx(_parameter("team", "vision")),
    "a repository agent that is not installed": on_config(_agent),
    "ONNX: an op library that does not exist": replace_with_onnx(_op_library),
}

# --- optimization ----------------------------------------------------------------------------------


def _accelerator(where: str, name: str) -> Any:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        accelerators = config.optimization.execution_accelerators
        getattr(accelerators, f"{where}_execution_accelerator").add().name = name

    return change


def _graph(level: int) -> Any:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        config.optimization.graph.level = level

    return change


OPTIMIZATION_MUTATIONS: dict[str, Mutation] = {
    "graph level 1": on_config(_graph(1)),
    "priority PRIORITY_MAX": setter(optimization__priority=mc.ModelOptimizationPolicy.PRIORITY_MAX),
    "CUDA graphs": setter(optimization__cuda__graphs=True),
    "input pinned memory off": setter(optimization__input_pinned_memory__enable=False),
    "a gather kernel threshold": setter(optimization__gather_kernel_buffer_threshold=1024),
    "eager batching": setter(optimization__eager_batching=True),
    "an OpenVINO CPU accelerator": on_config(_accelerator("cpu", "openvino")),
    "a TensorRT GPU accelerator": on_config(_accelerator("gpu", "tensorrt")),
    "an unknown CPU accelerator": on_config(_accelerator("cpu", "turbo")),
    "ONNX: graph level 1": replace_with_onnx(_graph(1)),
    "ONNX: graph level -1": replace_with_onnx(_graph(-1)),
    "ONNX: an unknown CPU accelerator": replace_with_onnx(_accelerator("cpu", "turbo")),
    "ONNX: TensorRT among the CPU accelerators": replace_with_onnx(_accelerator("cpu", "tensorrt")),
    "ONNX: an OpenVINO CPU accelerator": replace_with_onnx(_accelerator("cpu", "openvino")),
    "ONNX: a TensorRT GPU accelerator": replace_with_onnx(_accelerator("gpu", "tensorrt")),
}

# --- response_cache and model_transaction_policy ---------------------------------------------------


def _with(*changes: Any) -> Mutation:
    def change(draw: Any, config: mc.ModelConfig) -> None:
        for part in changes:
            part(config)

    return on_config(change)


def _cache(config: mc.ModelConfig) -> None:
    config.response_cache.enable = True


def _decoupled(config: mc.ModelConfig) -> None:
    config.model_transaction_policy.decoupled = True


def _sequence(config: mc.ModelConfig) -> None:
    config.sequence_batching.SetInParent()


def _dynamic(config: mc.ModelConfig) -> None:
    config.dynamic_batching.SetInParent()


CACHE_MUTATIONS: dict[str, Mutation] = {
    "cache on": _with(_cache),
    "cache on with dynamic batching": _with(_cache, _dynamic),
    "cache on with sequence batching": _with(_cache, _sequence),
    "cache on for a decoupled model": _with(_cache, _decoupled),
    "cache off for a decoupled model": _with(_decoupled, lambda c: c.response_cache.SetInParent()),
}

TRANSACTION_MUTATIONS: dict[str, Mutation] = {
    "decoupled": _with(_decoupled),
    "decoupled false": setter(model_transaction_policy__decoupled=False),
    "decoupled with dynamic batching": _with(_decoupled, _dynamic),
    "decoupled with sequence batching": _with(_decoupled, _sequence),
    "decoupled with the response cache": _with(_decoupled, _cache),
    "decoupled without outputs": _with(_decoupled, lambda c: c.ClearField("output")),
}

# --- model_warmup ----------------------------------------------------------------------------------


@st.composite
def _warmup_models(draw: Any) -> list[Any]:
    types = ("TYPE_FP32", "TYPE_INT32", "TYPE_INT64", "TYPE_BOOL", "TYPE_FP16")
    models = draw(python_models(batch_sizes=(0, 4), dims=fixed_dims_lists, types=types))
    config = config_of(models)
    warmup = config.model_warmup.add()
    warmup.name = "warm"
    warmup.batch_size = draw(st.integers(1, config.max_batch_size or 1))
    warmup.count = draw(st.sampled_from([0, 1, 2]))
    for tensor in config.input:
        data = warmup.inputs[tensor.name]
        data.data_type = tensor.data_type
        data.dims.extend(tensor.dims)
        if draw(st.booleans()):
            data.zero_data = True
        else:
            data.random_data = True
    return models


def _first_input(change: Any) -> Mutation:
    def mutation(draw: Any, config: mc.ModelConfig) -> None:
        change(config.model_warmup[0].inputs[config.input[0].name], config)

    return on_config(mutation)


def _data_file(size: int) -> Mutation:
    def mutation(draw: Any, models: list[Any]) -> None:
        config = config_of(models)
        config.model_warmup[0].inputs[config.input[0].name].input_data_file = "data.bin"
        models[0].extra = {"warmup/data.bin": bytes(size)}

    return mutation


def _other_type(data: Any, config: mc.ModelConfig) -> None:
    data.data_type = mc.TYPE_FP64 if data.data_type != mc.TYPE_FP64 else mc.TYPE_INT32


def _unbatched_warmup(draw: Any, config: mc.ModelConfig) -> None:
    config.max_batch_size = 0
    config.model_warmup[0].batch_size = 2


def _variable_config(data: Any, config: mc.ModelConfig) -> None:
    config.input[0].dims[0] = -1


WARMUP_MUTATIONS: dict[str, Mutation] = {
    "batch_size above max_batch_size": on_config(
        lambda draw, c: setattr(c.model_warmup[0], "batch_size", max(c.max_batch_size, 1) + 1)
    ),
    "batch_size 0": on_config(lambda draw, c: setattr(c.model_warmup[0], "batch_size", 0)),
    "batch_size 2 on a non-batching model": on_config(_unbatched_warmup),
    "a config input missing": on_config(lambda draw, c: c.model_warmup[0].inputs.pop(c.input[0].name)),
    "an unknown input": on_config(
        lambda draw, c: c.model_warmup[0].inputs["NOPE"].CopyFrom(c.model_warmup[0].inputs[c.input[0].name])
    ),
    "data_type differs": _first_input(_other_type),
    "dims differ": _first_input(lambda data, c: data.dims.append(2)),
    "a variable dim in the warm-up": _first_input(lambda data, c: data.dims.__setitem__(0, -1)),
    "a variable dim in the config only": _first_input(_variable_config),
    "no data source": _first_input(lambda data, c: data.ClearField("input_data_type")),
    "input_data_file missing": _first_input(lambda data, c: setattr(data, "input_data_file", "none.bin")),
    "input_data_file present": _data_file(1 << 16),
    "input_data_file too short": _data_file(1),
    "no warm-up name": on_config(lambda draw, c: setattr(c.model_warmup[0], "name", "")),
}


def feature_areas() -> dict[str, st.SearchStrategy[Case]]:
    """The feature areas' strategies, by area."""
    return {
        "parameters": mutated("parameters", python_models(), PARAMETER_MUTATIONS),
        "optimization": mutated("optimization", python_models(), OPTIMIZATION_MUTATIONS),
        "response_cache": mutated("response_cache", python_models(), CACHE_MUTATIONS),
        "transaction_policy": mutated("transaction_policy", python_models(), TRANSACTION_MUTATIONS),
        "warmup": mutated("warmup", _warmup_models(), WARMUP_MUTATIONS),
    }
