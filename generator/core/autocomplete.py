"""Triton's auto-complete of a model configuration, as rules over its JSON form.

Triton 2.51 starts with auto-complete on (``--disable-auto-complete-config`` turns it off). A model
directory without ``config.pbtxt``, or with an empty one, then loads from an empty config: the server fills
in ``name``, ``backend``, ``platform`` and ``default_model_filename`` from the model file's name, checks
the config without its tensors, and hands it to the backend, which fills in what it reads from the model.
Only then are the tensors checked (``ValidateModelIOConfig``). What each backend fills in:

* ONNX Runtime: nothing when the config has inputs (``batch_input`` counts) and outputs. Otherwise the
  model supports batching when every input and output has a dynamic first dimension; then an unset
  ``max_batch_size`` becomes the ``default-max-batch-size`` backend setting (4) and, above 1, an empty
  ``dynamic_batching`` is added when no scheduler is set; a model without batching and a non-zero
  ``max_batch_size`` is refused. The missing side (inputs, outputs or both) is replaced by the model's
  tensors, their first dimension dropped when batching; a tensor left without dimensions gets ``dims:
  [1]`` (and an empty ``reshape`` when batching). A tensor with only a name is not completed.
* TensorRT: also completes tensors that lack ``data_type`` or ``dims`` one by one, takes
  ``max_batch_size`` from the engine's optimization profile and refuses a config that asks for more.
* PyTorch: nothing (TorchScript keeps no tensor metadata); the backend then refuses a config without
  inputs or outputs when it loads the model.
* Python: the model's own ``TritonPythonModel.auto_complete_config`` edits the config; Triton keeps
  only ``max_batch_size``, the tensors, a scheduler where the config set none, and ``decoupled``
  (:func:`merge_python_result`).

Configs are dicts in the JSON form Triton hands backends (``input``, ``data_type: "TYPE_FP32"``, ``dims`` as
numbers); a key may be absent where Triton prints a default. Nothing here imports Triton, so the embedded
server's stand-in backend applies the same rules inside Triton's Python stub.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from generator.core.signature import Signature, TensorInfo

#: Triton's ``default-max-batch-size`` backend setting: the ``max_batch_size`` a backend gives a model
#: that can batch when the config leaves it unset.
DEFAULT_MAX_BATCH_SIZE = 4

#: Triton types the ONNX Runtime backend names when it auto-completes; any other type (BF16 in 2.51)
#: becomes ``TYPE_INVALID``, which the server then refuses ("must specify 'data_type'").
ONNXRUNTIME_TYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "STRING"}
)

#: Triton types the TensorRT backend names when it auto-completes.
TENSORRT_TYPES = frozenset({"BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "BF16"})

SCHEDULERS = ("dynamic_batching", "sequence_batching", "ensemble_scheduling")
"""The members of the config's ``scheduling_choice``."""

INVALID_TYPE = "TYPE_INVALID"


@dataclass(frozen=True)
class Completion:
    """A config after auto-complete.

    Attributes:
        config: The completed config (a new dict; the one passed in is left as it was).
        filled: What was filled in, each as config text (``max_batch_size: 4``, ``input 'x' TYPE_FP32
            dims [4]``), in the order Triton fills them.
        refusal: Triton's reason for refusing the model, in its own words; None when it loads.
    """

    config: dict[str, Any]
    filled: tuple[str, ...] = ()
    refusal: str | None = None


Rules = Callable[[dict[str, Any], Signature, int], Completion]
"""A backend's auto-complete: (config, the model file's signature, default max batch size) -> Completion."""


def _tensors(config: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return list(config.get(key) or [])


def _max_batch_size(config: dict[str, Any]) -> int:
    return int(config.get("max_batch_size") or 0)


def _has_scheduler(config: dict[str, Any]) -> bool:
    return any(key in config for key in ("dynamic_batching", "sequence_batching"))


def _data_type(tensor: TensorInfo, known: frozenset[str]) -> str:
    return f"TYPE_{tensor.dtype}" if tensor.dtype in known else INVALID_TYPE


def describe_tensor(kind: str, tensor: dict[str, Any]) -> str:
    """``input 'x' TYPE_FP32 dims [4]`` (with its reshape, if any), as an info line names a filled tensor."""
    text = f"{kind} '{tensor.get('name', '')}' {tensor.get('data_type') or INVALID_TYPE} dims {list(tensor.get('dims') or [])}"
    if "reshape" in tensor:
        text += f" reshape {list((tensor['reshape'] or {}).get('shape') or [])}"
    return text


def _onnxruntime_tensor(tensor: TensorInfo, max_batch_size: int) -> dict[str, Any]:
    """One model tensor as the ONNX Runtime backend writes it into the config."""
    dims = list(tensor.shape[1:] if max_batch_size > 0 else tensor.shape)
    entry: dict[str, Any] = {"name": tensor.name, "data_type": _data_type(tensor, ONNXRUNTIME_TYPES)}
    if not dims:
        dims = [1]
        if max_batch_size > 0:  # an empty reshape without batching would be a scalar, which Triton refuses
            entry["reshape"] = {"shape": []}
    entry["dims"] = dims
    return entry


def _can_batch(signature: Signature) -> bool:
    """Every tensor has a dynamic first dimension (a model without tensors counts as batching)."""
    return all(t.shape and t.shape[0] == -1 for t in (*signature.inputs, *signature.outputs))


def _default_batching(config: dict[str, Any], default: int, filled: list[str]) -> None:
    """An unset max_batch_size becomes the default; above 1 an empty dynamic_batching is added."""
    if _max_batch_size(config) == 0:
        config["max_batch_size"] = max(default, 0)
        if config["max_batch_size"]:
            filled.append(f"max_batch_size: {config['max_batch_size']}")
    if _max_batch_size(config) > 1 and not _has_scheduler(config):
        config["dynamic_batching"] = {}
        filled.append("dynamic_batching { }")


def complete_onnxruntime(
    config: dict[str, Any], signature: Signature, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> Completion:
    """The ONNX Runtime backend's auto-complete (see the module docstring)."""
    config = copy.deepcopy(config)
    inputs = len(_tensors(config, "input")) + len(_tensors(config, "batch_input"))
    outputs = len(_tensors(config, "output"))
    if inputs and outputs:
        return Completion(config)
    filled: list[str] = []
    if _can_batch(signature):
        _default_batching(config, default_max_batch_size, filled)
    elif _max_batch_size(config) != 0:
        return Completion(
            config,
            refusal=f"autofill failed for model '{config.get('name', '')}': model does not support batching "
            "while non-zero max_batch_size is specified",
        )
    for kind, count, tensors in (("input", inputs, signature.inputs), ("output", outputs, signature.outputs)):
        if count == 0:
            config[kind] = [_onnxruntime_tensor(t, _max_batch_size(config)) for t in tensors]
            filled += [describe_tensor(kind, t) for t in config[kind]]
    return Completion(config, tuple(filled))


def _config_shape(tensor: dict[str, Any]) -> list[int]:
    reshape = tensor.get("reshape")
    return list((reshape or {}).get("shape") or []) if reshape is not None else list(tensor.get("dims") or [])


def _tensorrt_batch_hint(config: dict[str, Any], signature: Signature) -> tuple[bool, int, str | None]:
    """(batching hinted, tensors with a shape in the config, a refusal) as TensorRT reads the config's tensors."""
    engine = {
        "input": {t.name: t for t in signature.inputs},
        "output": {t.name: t for t in signature.outputs},
    }
    hint, shaped, ragged = False, 0, False
    for kind in ("input", "output"):
        for tensor in _tensors(config, kind):
            if ragged:
                break
            ragged = bool(tensor.get("allow_ragged_batch"))
            if ragged:
                hint = True
                continue
            name, dims = tensor.get("name", ""), _config_shape(tensor)
            shaped += bool(dims)
            if name not in engine[kind]:
                allowed = ", ".join(sorted(engine[kind]))
                return hint, shaped, f"unexpected inference {kind} '{name}', allowed {kind}s are: {allowed}"
            if dims:
                should_batch = len(engine[kind][name].shape) == len(dims) + 1
                hint = hint or should_batch
                if hint and not should_batch:
                    return (
                        hint,
                        shaped,
                        f"unable to autofill for '{config.get('name', '')}', model tensor configurations are "
                        "contradicting each other in terms of whether batching is supported",
                    )
    return hint, shaped, None


def _tensorrt_max_batch(signature: Signature) -> int:
    """The largest batch the engine's first optimization profile allows (its inputs' smallest maximum)."""
    profile = signature.details.get("profile") or {}
    highs = [int(shapes[2][0]) for shapes in profile.values() if len(shapes) == 3 and shapes[2]]
    return min(highs) if highs else 0


def _tensorrt_tensor(tensor: TensorInfo, max_batch_size: int) -> dict[str, Any]:
    dims = list(tensor.shape[1:] if max_batch_size != 0 else tensor.shape)
    entry: dict[str, Any] = {"name": tensor.name, "data_type": _data_type(tensor, TENSORRT_TYPES)}
    if not dims:
        dims = [1]
        entry["reshape"] = {"shape": []}
    entry["dims"] = dims
    return entry


def _fix_tensorrt_io(
    config: dict[str, Any], kind: str, reference: Sequence[TensorInfo], filled: list[str]
) -> None:
    """TensorRT's FixIO: an empty side becomes the engine's tensors; a listed tensor gets what it lacks."""
    mbs = _max_batch_size(config)
    tensors = _tensors(config, kind)
    if not tensors:
        config[kind] = [_tensorrt_tensor(t, mbs) for t in reference]
        filled += [describe_tensor(kind, t) for t in config[kind]]
        return
    by_name = {t.name: _tensorrt_tensor(t, mbs) for t in reference}
    for tensor in tensors:
        model = by_name.get(tensor.get("name", ""))
        if model is None:
            continue
        before = describe_tensor(kind, tensor)
        if tensor.get("data_type", INVALID_TYPE) in ("", INVALID_TYPE):
            tensor["data_type"] = model["data_type"]
        if not tensor.get("dims"):
            tensor["dims"] = model["dims"]
            if "reshape" in model:
                tensor["reshape"] = model["reshape"]
        if describe_tensor(kind, tensor) != before:
            filled.append(describe_tensor(kind, tensor))
    config[kind] = tensors


def complete_tensorrt(
    config: dict[str, Any], signature: Signature, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> Completion:
    """The TensorRT backend's auto-complete: batching from the engine's profile, tensors one by one.

    ``signature.details["profile"]`` maps each input to its (min, opt, max) shapes of the first profile, as
    :func:`generator.core.signature.read_plan_signature` reads them. Shape tensors and non-linear formats
    are not in the signature, so they are not completed here.
    """
    del default_max_batch_size  # TensorRT takes the engine's own limit
    config = copy.deepcopy(config)
    name = config.get("name", "")
    hint, shaped, refusal = _tensorrt_batch_hint(config, signature)
    if refusal is not None:
        return Completion(config, refusal=refusal)
    engine_max = _tensorrt_max_batch(signature)
    if hint and engine_max == 0:
        return Completion(
            config,
            refusal=f"autofill failed for model '{name}': model tensor shape configuration hints for dynamic "
            "batching but the underlying engine doesn't support batching.",
        )
    if shaped and not hint:
        engine_max = 0
    filled: list[str] = []
    if _max_batch_size(config) == 0:
        config["max_batch_size"] = engine_max
        if engine_max:
            filled.append(f"max_batch_size: {engine_max}")
    elif _max_batch_size(config) > engine_max:
        return Completion(
            config,
            refusal=f"autofill failed for model '{name}': configuration specified max-batch "
            f"{_max_batch_size(config)} but TensorRT engine only supports max-batch {engine_max}",
        )
    if engine_max > 1 and not _has_scheduler(config):
        config["dynamic_batching"] = {}
        filled.append("dynamic_batching { }")
    _fix_tensorrt_io(config, "input", signature.inputs, filled)
    _fix_tensorrt_io(config, "output", signature.outputs, filled)
    return Completion(config, tuple(filled))


def complete_pytorch(
    config: dict[str, Any], signature: Signature, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> Completion:
    """The PyTorch backend completes nothing (it logs that it skips auto-complete)."""
    del signature, default_max_batch_size
    return Completion(copy.deepcopy(config))


#: Backend -> its auto-complete, for the backends that read the model file themselves.
BACKEND_RULES: dict[str, Rules] = {
    "onnxruntime": complete_onnxruntime,
    "tensorrt": complete_tensorrt,
    "pytorch": complete_pytorch,
}


def complete(
    backend: str,
    config: dict[str, Any],
    signature: Signature,
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> Completion:
    """Auto-complete ``config`` as ``backend`` does from its model file's ``signature``.

    A backend without rules here (a custom one) completes nothing.
    """
    rules = BACKEND_RULES.get(backend)
    if rules is None:
        return Completion(copy.deepcopy(config))
    return rules(config, signature, default_max_batch_size)


def pytorch_expected_inputs(config: dict[str, Any]) -> int:
    """How many ``forward`` arguments the PyTorch backend expects: inputs, batch inputs, the sequence
    batcher's controls (one per kind present) and its states."""
    expected = len(_tensors(config, "input")) + len(_tensors(config, "batch_input"))
    batcher = config.get("sequence_batching")
    if batcher is not None:
        kinds = {
            control.get("kind", "CONTROL_SEQUENCE_START")
            for entry in batcher.get("control_input") or []
            for control in entry.get("control") or []
        }
        expected += len(kinds & {f"CONTROL_SEQUENCE_{k}" for k in ("START", "END", "READY", "CORRID")})
        expected += len(batcher.get("state") or [])
    return expected


def forward_inputs(module: Any) -> int | None:
    """How many arguments a TorchScript module's ``forward`` takes besides ``self``, as the PyTorch backend
    counts them; None for a single dict argument, which it does not count.

    Args:
        module: A loaded ``torch.jit.ScriptModule`` (torch itself is not imported here).
    """
    arguments = list(module.forward.schema.arguments)
    if arguments and arguments[0].type.kind() == "ClassType":
        arguments = arguments[1:]
    if len(arguments) == 1 and arguments[0].type.kind() == "DictType":
        return None
    return len(arguments)


def pytorch_refusal(config: dict[str, Any], forward_inputs: int | None = None) -> str | None:
    """What the PyTorch backend refuses at load time for want of auto-complete, in its words.

    Args:
        config: The config after auto-complete (which for PyTorch changed nothing).
        forward_inputs: The number of tensor arguments of the module's ``forward`` (without ``self``),
            when known; None when the model file was not read (a single dict argument also counts as
            unknown, the backend does not count then).
    """
    name = config.get("name", "")
    expected = pytorch_expected_inputs(config)
    if forward_inputs is not None and forward_inputs != expected:
        return (
            f"unable to load model '{name}', configuration expects {expected} inputs, model provides "
            f"{forward_inputs}"
        )
    if not _tensors(config, "input"):
        return "model configuration must contain at least one input, none were specified."
    if not _tensors(config, "output"):
        return "model configuration must contain at least one output, none were specified."
    return None


def _scheduler(config: dict[str, Any]) -> str | None:
    return next((key for key in SCHEDULERS if key in config), None)


def _filled_tensors(kind: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """The tensors of ``after`` that are new or changed against ``before``."""
    old = {t.get("name"): t for t in before}
    return [describe_tensor(kind, t) for t in after if old.get(t.get("name")) != t]


def merge_python_result(original: dict[str, Any], returned: dict[str, Any]) -> Completion:
    """What Triton keeps of a Python model's ``auto_complete_config`` result (core's UpdateModelConfig).

    ``max_batch_size``, ``input`` and ``output`` are taken as returned; a scheduler only when the config
    set none (another one than the config's is refused); ``decoupled`` when the result sets a transaction
    policy. Everything else the method changed is dropped.

    Args:
        original: The config the method was given.
        returned: ``as_dict()`` of the ModelConfig it returned.
    """
    config = copy.deepcopy(original)
    config["max_batch_size"] = int(returned.get("max_batch_size") or 0)
    config["input"] = copy.deepcopy(_tensors(returned, "input"))
    config["output"] = copy.deepcopy(_tensors(returned, "output"))
    mine, theirs = _scheduler(original), _scheduler(returned)
    if mine is None and theirs is not None:
        config[theirs] = copy.deepcopy(returned[theirs])
    elif mine is not None and theirs not in (None, mine):
        return Completion(
            copy.deepcopy(original),
            refusal=f"Cannot update scheduling choice from {mine} to {theirs} when auto-completing.",
        )
    if "model_transaction_policy" in returned:
        decoupled = bool((returned["model_transaction_policy"] or {}).get("decoupled", False))
        config.setdefault("model_transaction_policy", {})["decoupled"] = decoupled
    filled: list[str] = []
    if _max_batch_size(config) != _max_batch_size(original):
        filled.append(f"max_batch_size: {_max_batch_size(config)}")
    for kind in ("input", "output"):
        filled += _filled_tensors(kind, _tensors(original, kind), config[kind])
    if mine is None and theirs is not None:
        filled.append(f"{theirs} {{ }}" if not config[theirs] else theirs)
    policy = (original.get("model_transaction_policy") or {}).get("decoupled", False)
    if "model_transaction_policy" in returned and config["model_transaction_policy"]["decoupled"] != policy:
        filled.append(f"model_transaction_policy {{ decoupled: {str(not policy).lower()} }}")
    return Completion(config, tuple(filled))
