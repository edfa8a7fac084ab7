"""From a model's spec and its exported signature to a Triton model config, rendered by Jinja.

:func:`build_config` computes every value as plain data shaped like Triton's ``ModelConfig`` message
(proto field names); :func:`render` prints it through ``templates/config.pbtxt.j2`` (or a user's
copy); :func:`check_rendered` parses the text with Triton's own protobuf schema and proves that it
says exactly what was intended.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from generator import __version__
from generator.core import dtypes
from generator.core.accelerators import ACCELERATORS, parameter_text
from generator.core.errors import ConfigError
from generator.core.gpus import Gpu, NvmlUnavailable, detect_gpus
from generator.build.input_values import axis_sizes, config_inputs, fill, is_integer, lookup, warmup_file_name
from generator.core.resources import templates_dir
from generator.core.signature import Signature, TensorInfo, libtorch_name
from generator.spec.models import DynamicBatching, InstanceGroup, ModelSpec, TensorSpec
from generator.core.triton import (
    BACKEND_ONLY,
    LIBTORCH_PLATFORM,
    default_filename,
    parse_config_text,
    resolve_max_batch_size,
)

log = logging.getLogger(__name__)

CONFIG_TEMPLATE = "config.pbtxt.j2"
_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_AUTO"}


@dataclass(frozen=True)
class DeviceProfile:
    """Where instances run: ``--device cpu`` (KIND_CPU) or ``--device gpu`` on ``--gpus`` (KIND_GPU).

    Attributes:
        kind: ``cpu``, ``gpu`` or ``auto``.
        gpus: GPU ids for KIND_GPU; ``None`` lets Triton use every visible GPU.
    """

    kind: str = "cpu"
    gpus: tuple[int, ...] | None = None
    #: The detected GPUs (``--gpus all``), with their compute capabilities; empty when not detected.
    detected: tuple[Gpu, ...] = ()

    @classmethod
    def parse(
        cls, device: str = "cpu", gpus: str | None = None, detect: Callable[[], list[Gpu]] = detect_gpus
    ) -> DeviceProfile:
        """Build a profile from the CLI's ``--device`` and ``--gpus`` strings.

        ``--gpus all`` asks NVML for this machine's GPUs; no ``--gpus`` leaves the list to Triton
        (every GPU it sees).

        Raises:
            ConfigError: an unknown device, a malformed GPU list, or ``all`` where NVML finds no GPU.
        """
        if device not in _KINDS:
            raise ConfigError(f"--device '{device}' is unknown; use cpu, gpu or auto")
        if gpus in (None, ""):
            return cls(device, None)
        if device != "gpu":
            raise ConfigError("--gpus only applies with --device gpu; add --device gpu or drop --gpus")
        if gpus == "all":
            try:
                found = detect()
            except NvmlUnavailable as exc:
                raise ConfigError(
                    f"--gpus all: cannot list GPUs here: {exc}; name them (--gpus 0,1) or drop --gpus"
                ) from None
            if not found:
                raise ConfigError("--gpus all: NVML sees no GPU on this machine; name them with --gpus 0,1")
            return cls(device, tuple(g.index for g in found), tuple(found))
        try:
            ids = tuple(sorted({int(part) for part in gpus.split(",") if part.strip()}))
        except ValueError:
            raise ConfigError(
                f"--gpus '{gpus}' is not a comma-separated list of GPU ids (e.g. 0,1)"
            ) from None
        if not ids or min(ids) < 0:
            raise ConfigError(f"--gpus '{gpus}' must list GPU ids >= 0 (e.g. 0,1)")
        return cls(device, ids)


def _tensor_entry(name: str, dtype: str, dims: list[int], reshape: list[int] | None, optional: bool) -> dict:
    entry: dict[str, Any] = {"name": name, "data_type": dtypes.config_name(dtype), "dims": list(dims)}
    if reshape is not None:
        entry["reshape"] = {"shape": list(reshape)} if reshape else {}
    if optional:
        entry["optional"] = True
    return entry


def tensor_entry(tensor: TensorSpec) -> dict:
    """A spec tensor as a config input/output entry (proto field names)."""
    entry = _tensor_entry(tensor.name, tensor.dtype, tensor.dims, tensor.reshape, tensor.optional)
    if tensor.label_filename:  # the file is copied into the model directory under its own name
        entry["label_filename"] = Path(tensor.label_filename).name
    return entry


def _from_signature(tensor: TensorInfo, batching: bool) -> dict:
    dims = list(tensor.shape[1:] if batching else tensor.shape)
    if not dims:  # Triton needs at least one dim: serve a scalar as [1] and reshape it for the model
        return _tensor_entry(tensor.name, tensor.dtype, [1], [], False)
    return _tensor_entry(tensor.name, tensor.dtype, dims, None, False)


def _dynamic_batching(settings: DynamicBatching) -> dict:
    data: dict[str, Any] = {}
    if settings.preferred_batch_size:
        data["preferred_batch_size"] = list(settings.preferred_batch_size)
    if settings.max_queue_delay_microseconds:
        data["max_queue_delay_microseconds"] = settings.max_queue_delay_microseconds
    if settings.preserve_ordering:
        data["preserve_ordering"] = True
    if settings.priority_levels:
        data["priority_levels"] = settings.priority_levels
        data["default_priority_level"] = settings.default_priority_level
    if settings.default_queue_policy is not None:
        policy = settings.default_queue_policy
        data["default_queue_policy"] = {
            key: value
            for key, value in policy.model_dump().items()
            if value not in (0, False) and not (key == "timeout_action" and value == "REJECT")
        }
        if not data["default_queue_policy"]:
            data["default_queue_policy"] = {"timeout_action": "REJECT"}
    return data


def _instance_groups(settings: InstanceGroup | None, profile: DeviceProfile) -> list[dict]:
    settings = settings or InstanceGroup()
    kind = settings.kind or profile.kind
    group: dict[str, Any] = {"count": settings.count, "kind": _KINDS[kind]}
    gpus = settings.gpus if settings.gpus is not None else profile.gpus
    if kind == "gpu" and gpus:
        group["gpus"] = list(gpus)
    return [group]


def _parameter(value: Any) -> dict:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return {"string_value": text}


def _warmup(model: ModelSpec, inputs: list[dict], max_batch_size: int) -> list[dict]:
    """The warm-up sample: -1 axes at their ``min`` length; integer inputs zeros (random bytes would
    index past an embedding table), or their ``values`` minimum from a file where 0 is out of range."""
    warmup = model.warmup
    assert warmup
    key = "random_data" if warmup.data == "random" else "zero_data"
    tensors = config_inputs(inputs)
    sizes = axis_sizes(model.name, model, tensors)
    entries = {}
    for tensor, info in zip(inputs, tensors, strict=True):
        if tensor.get("optional"):
            continue
        dims = fill(info.dims, sizes[info.name]["min"]) if info.name in sizes else list(info.dims)
        entry: dict[str, Any] = {"data_type": tensor["data_type"], "dims": dims}
        given = lookup(model.values, info.name) if is_integer(info.dtype) else None
        if given is not None and not given.min <= 0 <= given.max:
            entry["input_data_file"] = warmup_file_name(info.name)
        else:
            entry["zero_data" if is_integer(info.dtype) else key] = True
        entries[info.name] = entry
    batch_size = min(warmup.batch_size, max_batch_size) if max_batch_size > 0 else 1
    return [
        {
            "name": f"{warmup.data}_batch_{batch_size}",
            "batch_size": batch_size,
            "inputs": entries,
            "count": warmup.count,
        }
    ]


def build_config(
    model: ModelSpec,
    signature: Signature,
    platform: str,
    profile: DeviceProfile,
    model_filename: str | None = None,
    cc_model_filenames: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The intended ModelConfig as plain data (proto field names, enums as their names).

    I/O the spec gives is used as written (the validator then checks it against the model); I/O it
    leaves out is derived from ``signature``. For ``pytorch_libtorch``, tensor names follow Triton's
    ``NAME__index`` convention.
    """
    max_batch_size = resolve_max_batch_size(model, signature)
    batching = max_batch_size > 0
    serving = {"backend": platform} if platform in BACKEND_ONLY else {"platform": platform}
    config: dict[str, Any] = {"name": model.name, **serving, "max_batch_size": max_batch_size}
    if model_filename and model_filename != default_filename(platform):
        config["default_model_filename"] = model_filename
    if model.version_policy is not None:
        policy = model.version_policy
        if policy.all:
            config["version_policy"] = {"all": {}}
        elif policy.specific is not None:
            config["version_policy"] = {"specific": {"versions": list(policy.specific)}}
        else:
            config["version_policy"] = {"latest": {"num_versions": policy.latest}}
    config["input"] = (
        [tensor_entry(t) for t in model.inputs]
        if model.inputs
        else [_from_signature(t, batching) for t in signature.inputs]
    )
    config["output"] = (
        [tensor_entry(t) for t in model.outputs]
        if model.outputs
        else [_from_signature(t, batching) for t in signature.outputs]
    )
    if platform == LIBTORCH_PLATFORM:
        for tensors in (config["input"], config["output"]):
            for index, tensor in enumerate(tensors):
                tensor["name"] = libtorch_name(tensor["name"], index)
    if cc_model_filenames:
        config["cc_model_filenames"] = dict(sorted(cc_model_filenames.items()))
    if batching and model.dynamic_batching is not False:
        config["dynamic_batching"] = _dynamic_batching(model.dynamic_batching or DynamicBatching())
    elif model.dynamic_batching:
        log.info("model '%s': dynamic_batching dropped because max_batch_size is 0", model.name)
    config["instance_group"] = _instance_groups(model.instance_group, profile)
    if model.parameters:
        config["parameters"] = {key: _parameter(value) for key, value in sorted(model.parameters.items())}
    if model.warmup:
        config["model_warmup"] = _warmup(model, config["input"], max_batch_size)
    if model.response_cache:
        config["response_cache"] = {"enable": True}
    if model.accelerators:
        accelerators: dict[str, list[dict[str, Any]]] = {}
        for accelerator in model.accelerators:
            field, _ = ACCELERATORS[accelerator.name]
            entry: dict[str, Any] = {"name": accelerator.name}
            if accelerator.parameters:
                entry["parameters"] = {
                    k: parameter_text(v) for k, v in sorted(accelerator.parameters.items())
                }
            accelerators.setdefault(field, []).append(entry)
        config["optimization"] = {"execution_accelerators": accelerators}
    return config


def render(config: dict[str, Any], env: jinja2.Environment, spec_name: str = "spec") -> str:
    """Render config.pbtxt text from :func:`build_config` data.

    Raises:
        ConfigError: the template is missing or fails (e.g. refers to an undefined value).
    """
    try:
        template = env.get_template(CONFIG_TEMPLATE)
        return template.render(config=config, tool_version=__version__, spec_name=spec_name)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(
            f"template '{exc.name}' not found; copy it from tritongen's templates/ into --templates"
        ) from None
    except jinja2.TemplateError as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise ConfigError(
            f"template {CONFIG_TEMPLATE}{where} failed for model '{config['name']}': {exc}"
        ) from None


def intended_proto(config: dict[str, Any]) -> model_config_pb2.ModelConfig:
    """:func:`build_config` data as Triton's ``ModelConfig`` message."""
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def _differences(intended: Any, rendered: Any, path: str = "") -> list[str]:
    if isinstance(intended, dict) and isinstance(rendered, dict):
        lines: list[str] = []
        for key in sorted(set(intended) | set(rendered)):
            sub = f"{path}.{key}" if path else key
            lines += _differences(intended.get(key), rendered.get(key), sub)
        return lines
    if isinstance(intended, list) and isinstance(rendered, list) and len(intended) == len(rendered):
        return [
            line
            for i, (a, b) in enumerate(zip(intended, rendered, strict=True))
            for line in _differences(a, b, f"{path}[{i}]")
        ]
    return [] if intended == rendered else [f"{path}: intended {intended!r}, rendered {rendered!r}"]


def check_rendered(text: str, config: dict[str, Any], origin: str) -> model_config_pb2.ModelConfig:
    """Parse rendered text and require it to equal the intended config, field by field.

    Raises:
        ConfigError: the text does not parse, or one line per field that differs.
    """
    rendered = parse_config_text(text, origin)
    intended = intended_proto(config)
    if rendered != intended:
        as_dict = lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)  # noqa: E731
        diffs = _differences(as_dict(intended), as_dict(rendered))
        raise ConfigError(*(f"{origin}: the template rendered {d}; fix the template" for d in diffs))
    return rendered
