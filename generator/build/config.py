"""From a model's spec and its exported signature to a Triton model config, rendered by Jinja.

:func:`build_config` computes every value as plain data shaped like Triton's ``ModelConfig`` message
(proto field names), one section at a time: each section (batching, instance groups, warm-up, ...) is
one small function listed in :data:`SECTIONS`, so a new config field is one function and one entry
(ensembles compose their own sections the same way, :func:`compose`). :func:`render` prints the data
through ``templates/config.pbtxt.j2`` (or a user's copy); :func:`check_rendered` parses the text with
Triton's own protobuf schema and proves that it says exactly what was intended.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from generator import __version__
from generator.build.input_values import (
    InputTensor,
    axis_sizes,
    config_inputs,
    fill,
    is_integer,
    lookup,
    warmup_file_name,
)
from generator.core import dtypes
from generator.core.accelerators import ACCELERATORS, parameter_text
from generator.core.errors import ConfigError
from generator.core.gpus import Gpu, NvmlUnavailable, detect_gpus
from generator.core.signature import Signature, TensorInfo, libtorch_name
from generator.core.triton import (
    BACKEND_ONLY,
    LIBTORCH_PLATFORM,
    default_filename,
    parse_config_text,
    resolve_max_batch_size,
)
from generator.spec.models import (
    BooleanControl,
    CorrelationControl,
    DynamicBatching,
    InstanceGroup,
    ModelSpec,
    QueuePolicy,
    SequenceBatching,
    SequenceState,
    TensorSpec,
)
from generator.validate.scheduling import check_scheduling

log = logging.getLogger(__name__)

CONFIG_TEMPLATE = "config.pbtxt.j2"
_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_AUTO"}
_Source = TypeVar("_Source")


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


@dataclass(frozen=True)
class ConfigSource:
    """What a model's config is computed from: its spec entry, its artifact and where it runs.

    Attributes:
        model: The spec entry (one version of the model).
        signature: The exported model's I/O, for what the spec leaves out.
        platform: The Triton platform, or a backend-only kind (``python``).
        profile: Where instances run.
        model_filename: The artifact's file name in the version directory.
        cc_model_filenames: Compute capability -> plan file name (one TensorRT plan per GPU kind).
    """

    model: ModelSpec
    signature: Signature
    platform: str
    profile: DeviceProfile
    model_filename: str | None = None
    cc_model_filenames: Mapping[str, str] | None = None

    @property
    def max_batch_size(self) -> int:
        """The spec's ``max_batch_size``, else one derived from the signature's batch axis."""
        return resolve_max_batch_size(self.model, self.signature)


#: A config section: from the source and the fields built so far (read only), the fields it adds
#: (proto field names); an empty dict leaves the section out of the config.
Section = Callable[[ConfigSource, Mapping[str, Any]], dict[str, Any]]


def compose(
    sections: Iterable[Callable[[_Source, Mapping[str, Any]], dict[str, Any]]], source: _Source
) -> dict[str, Any]:
    """Config data from its sections, in order: each adds its fields and may read the earlier ones'.

    Args:
        sections: Section functions, each ``(source, fields so far) -> fields it adds``.
        source: What the config is computed from (a :class:`ConfigSource`, or an ensemble's).
    """
    config: dict[str, Any] = {}
    for section in sections:
        config.update(section(source, config))
    return config


def _serving(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """``name``, ``platform`` (or ``backend`` for a backend-only kind) and ``max_batch_size``."""
    key = "backend" if source.platform in BACKEND_ONLY else "platform"
    return {"name": source.model.name, key: source.platform, "max_batch_size": source.max_batch_size}


def _default_model_filename(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """The artifact's file name, where it is not the one Triton loads by default."""
    filename = source.model_filename
    if not filename or filename == default_filename(source.platform):
        return {}
    return {"default_model_filename": filename}


def _version_policy(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """Which versions Triton serves: all, the ones listed, or the latest N."""
    policy = source.model.version_policy
    if policy is None:
        return {}
    if policy.all:
        return {"version_policy": {"all": {}}}
    if policy.specific is not None:
        return {"version_policy": {"specific": {"versions": list(policy.specific)}}}
    return {"version_policy": {"latest": {"num_versions": policy.latest}}}


def _tensors(
    declared: list[TensorSpec] | None, found: tuple[TensorInfo, ...], batching: bool, fed: set[str]
) -> list[dict]:
    if declared:
        return [tensor_entry(t) for t in declared]
    return [_from_signature(t, batching) for t in found if t.name not in fed]


def sequence_tensors(model: ModelSpec) -> tuple[set[str], set[str]]:
    """The model inputs the sequence batcher feeds (controls, state inputs) and the state outputs: they
    are the model's tensors, but no input or output of its config."""
    batcher = model.sequence_batching
    if not batcher:
        return set(), set()
    inputs = {control.name for _, control in batcher.controls.items()}
    inputs |= {state.input_name for state in batcher.state}
    return inputs, {state.output_name for state in batcher.state}


def _io(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """``input`` and ``output``: as the spec declares them, else from the signature (without the tensors
    the sequence batcher feeds and keeps); ``NAME__index`` names for ``pytorch_libtorch``."""
    model, signature = source.model, source.signature
    batching = source.max_batch_size > 0
    fed, kept = sequence_tensors(model)
    io = {
        "input": _tensors(model.inputs, signature.inputs, batching, fed),
        "output": _tensors(model.outputs, signature.outputs, batching, kept),
    }
    if source.platform == LIBTORCH_PLATFORM:
        for tensors in io.values():
            for index, tensor in enumerate(tensors):
                tensor["name"] = libtorch_name(tensor["name"], index)
    return io


def _cc_model_filenames(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """One plan file per compute capability (a TensorRT model built for several GPU kinds)."""
    if not source.cc_model_filenames:
        return {}
    return {"cc_model_filenames": dict(sorted(source.cc_model_filenames.items()))}


def _queue_policy(policy: QueuePolicy) -> dict[str, Any]:
    """The fields a queue policy sets away from Triton's defaults (``REJECT`` alone when none)."""
    data = {
        key: value
        for key, value in policy.model_dump().items()
        if value not in (0, False) and not (key == "timeout_action" and value == "REJECT")
    }
    return data or {"timeout_action": "REJECT"}


def _batcher(settings: DynamicBatching) -> dict[str, Any]:
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
        data["default_queue_policy"] = _queue_policy(settings.default_queue_policy)
    return data


def _dynamic_batching(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """The dynamic batcher, on by default for a model that batches (``dynamic_batching: false``
    turns it off); dropped, with a log line, where ``max_batch_size`` is 0, and left out where the
    model has a sequence batcher (the spec refuses a model that sets both, so one left here came from
    ``defaults``)."""
    settings = source.model.dynamic_batching
    if source.model.sequence_batching:
        return {}
    if source.max_batch_size > 0 and settings is not False:
        return {"dynamic_batching": _batcher(settings or DynamicBatching())}
    if settings:
        log.info("model '%s': dynamic_batching dropped because max_batch_size is 0", source.model.name)
    return {}


_BOOLEAN_VALUES = {"BOOL": ("bool_false_true", [False, True]), "INT32": ("int32_false_true", [0, 1])}
_BOOLEAN_VALUES["FP32"] = ("fp32_false_true", [0.0, 1.0])


def _control_input(kind: str, control: BooleanControl | CorrelationControl) -> dict[str, Any]:
    """One ``control_input`` entry: the tensor and its one control (false/true values, or CORRID's type)."""
    entry: dict[str, Any] = {"kind": f"CONTROL_SEQUENCE_{kind.upper()}"}
    if kind == "corrid":
        entry["data_type"] = dtypes.config_name(control.dtype)
    else:
        field, values = _BOOLEAN_VALUES[control.dtype]
        entry[field] = list(values)
    return {"name": control.name, "control": [entry]}


def initial_state_file(state: SequenceState) -> str | None:
    """The file name of a state's initial values in the model's ``initial_state/`` directory (a .npy
    file is written there as raw values), or None for zeros."""
    return state.initial_state.file_name


def _state(state: SequenceState) -> dict[str, Any]:
    """One implicit ``state``, with its ``initial_state`` (zeros or a file)."""
    data_type = dtypes.config_name(state.dtype)
    initial: dict[str, Any] = {"name": "initial", "data_type": data_type, "dims": state.initial_dims}
    filename = initial_state_file(state)
    if filename is None:
        initial["zero_data"] = True
    else:
        initial["data_file"] = filename
    entry: dict[str, Any] = {
        "input_name": state.input_name,
        "output_name": state.output_name,
        "data_type": data_type,
        "dims": list(state.dims),
        "initial_state": [initial],
    }
    if state.use_same_buffer_for_input_output:
        entry["use_same_buffer_for_input_output"] = True
    if state.use_growable_memory:
        entry["use_growable_memory"] = True
    return entry


def _strategy(settings: SequenceBatching) -> dict[str, Any]:
    """``direct`` or ``oldest`` with the fields the spec sets (an empty message picks the strategy)."""
    data: dict[str, Any] = {}
    if settings.strategy == "oldest":
        if settings.max_candidate_sequences is not None:
            data["max_candidate_sequences"] = settings.max_candidate_sequences
        if settings.preferred_batch_size:
            data["preferred_batch_size"] = list(settings.preferred_batch_size)
        if settings.preserve_ordering:
            data["preserve_ordering"] = True
    elif settings.minimum_slot_utilization:
        data["minimum_slot_utilization"] = settings.minimum_slot_utilization
    if settings.max_queue_delay_microseconds:
        data["max_queue_delay_microseconds"] = settings.max_queue_delay_microseconds
    return {settings.strategy: data}


def _sequence_batching(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """The sequence batcher: its strategy, idle timeout, control tensors and implicit states."""
    settings = source.model.sequence_batching
    if not settings:
        return {}
    data: dict[str, Any] = {}
    if settings.max_sequence_idle_microseconds:
        data["max_sequence_idle_microseconds"] = settings.max_sequence_idle_microseconds
    data.update(_strategy(settings))
    controls = [_control_input(kind, control) for kind, control in settings.controls.items()]
    if controls:
        data["control_input"] = controls
    if settings.state:
        data["state"] = [_state(state) for state in settings.state]
    return {"sequence_batching": data}


def _transaction_policy(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """``model_transaction_policy { decoupled: true }`` for a decoupled (streaming) model."""
    return {"model_transaction_policy": {"decoupled": True}} if source.model.decoupled else {}


def _instance_group(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """One instance group: the spec's count, its kind (else the device profile's), and on KIND_GPU
    its GPUs (else the profile's)."""
    settings = source.model.instance_group or InstanceGroup()
    kind = settings.kind or source.profile.kind
    group: dict[str, Any] = {"count": settings.count, "kind": _KINDS[kind]}
    gpus = settings.gpus if settings.gpus is not None else source.profile.gpus
    if kind == "gpu" and gpus:
        group["gpus"] = list(gpus)
    return {"instance_group": [group]}


def _parameter(value: Any) -> dict:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return {"string_value": text}


def _parameters(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's backend parameters, as strings (booleans as ``true``/``false``)."""
    if not source.model.parameters:
        return {}
    return {"parameters": {key: _parameter(value) for key, value in sorted(source.model.parameters.items())}}


def _warmup_input(
    model: ModelSpec, info: InputTensor, data_type: str, dims: list[int], key: str
) -> dict[str, Any]:
    """One input of the warm-up sample: integers zeros (random bytes would index past an embedding
    table), or their ``values`` minimum from a file where 0 is out of range; others as ``key`` says."""
    entry: dict[str, Any] = {"data_type": data_type, "dims": dims}
    given = lookup(model.values, info.name) if is_integer(info.dtype) else None
    if given is not None and not given.min <= 0 <= given.max:
        entry["input_data_file"] = warmup_file_name(info.name)
    else:
        entry["zero_data" if is_integer(info.dtype) else key] = True
    return entry


def _model_warmup(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """The warm-up sample over the config's inputs (optional ones left out), -1 axes at their ``min``
    length, at the spec's batch size capped by ``max_batch_size``."""
    model, warmup = source.model, source.model.warmup
    if not warmup:
        return {}
    key = "random_data" if warmup.data == "random" else "zero_data"
    inputs = config["input"]
    tensors = config_inputs(inputs)
    sizes = axis_sizes(model.name, model, tensors)
    entries = {}
    for tensor, info in zip(inputs, tensors, strict=True):
        if tensor.get("optional"):
            continue
        dims = fill(info.dims, sizes[info.name]["min"]) if info.name in sizes else list(info.dims)
        entries[info.name] = _warmup_input(model, info, tensor["data_type"], dims, key)
    max_batch_size = source.max_batch_size
    batch_size = min(warmup.batch_size, max_batch_size) if max_batch_size > 0 else 1
    sample = {
        "name": f"{warmup.data}_batch_{batch_size}",
        "batch_size": batch_size,
        "inputs": entries,
        "count": warmup.count,
    }
    return {"model_warmup": [sample]}


def _response_cache(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """Triton's response cache, where the spec turns it on."""
    return {"response_cache": {"enable": True}} if source.model.response_cache else {}


def _optimization(source: ConfigSource, config: Mapping[str, Any]) -> dict[str, Any]:
    """Execution accelerators, grouped under the GPU or CPU field each belongs to."""
    if not source.model.accelerators:
        return {}
    accelerators: dict[str, list[dict[str, Any]]] = {}
    for accelerator in source.model.accelerators:
        field, _ = ACCELERATORS[accelerator.name]
        entry: dict[str, Any] = {"name": accelerator.name}
        if accelerator.parameters:
            entry["parameters"] = {k: parameter_text(v) for k, v in sorted(accelerator.parameters.items())}
        accelerators.setdefault(field, []).append(entry)
    return {"optimization": {"execution_accelerators": accelerators}}


#: A model config's sections in the order they are built (a later one may read an earlier one's
#: fields: warm-up reads ``input``). A new config field is one section function and one entry here.
SECTIONS: tuple[Section, ...] = (
    _serving,
    _default_model_filename,
    _version_policy,
    _io,
    _cc_model_filenames,
    _dynamic_batching,
    _sequence_batching,
    _transaction_policy,
    _instance_group,
    _parameters,
    _model_warmup,
    _response_cache,
    _optimization,
)


#: Where a finding of validate's scheduling checks points in a model's spec entry: its config label
#: (how the finding starts) -> the spec field path (``{}`` takes what the label names).
_SCHEDULING_FIELDS = (
    (re.compile(r"sequence_batching oldest preferred_batch_size"), "sequence_batching.preferred_batch_size"),
    (
        re.compile(r"sequence_batching direct minimum_slot_utilization"),
        "sequence_batching.minimum_slot_utilization",
    ),
    (re.compile(r"sequence_batching control_input '([^']*)'"), "sequence_batching.controls.{}"),
    (re.compile(r"sequence_batching state\[(\d+)\]"), "sequence_batching.state[{}]"),
    (
        re.compile(r"sequence_batching state '([^']*)' initial_state"),
        "sequence_batching.state[{}].initial_state",
    ),
    (re.compile(r"response_cache"), "response_cache"),
    (re.compile(r"parameters '([^']*)'"), "parameters.{}"),
    (re.compile(r"dynamic_batching"), "dynamic_batching"),
    (re.compile(r"sequence_batching"), "sequence_batching"),
)


def _spec_field(model: ModelSpec, message: str) -> str:
    """The spec field a scheduling finding is about (see :data:`_SCHEDULING_FIELDS`)."""
    batcher = model.sequence_batching or None
    for pattern, path in _SCHEDULING_FIELDS:
        match = pattern.match(message)
        if match is None:
            continue
        if not match.groups():
            return path
        named = match.group(1)
        if "controls" in path and batcher is not None:
            named = next((k for k, c in batcher.controls.items() if c.name == named), named)
        elif path.endswith("initial_state") and batcher is not None:
            named = str(next((i for i, s in enumerate(batcher.state) if s.input_name == named), 0))
        return path.format(named)
    return "sequence_batching"


def check_scheduling_rules(model: ModelSpec, config: dict[str, Any]) -> None:
    """Triton's load-time rules for a config's schedulers (validate's, the same ones ``validate`` runs on
    a repository), applied to the config built from ``model`` and reported at its spec fields.

    Raises:
        ConfigError: one line per rule the config breaks, ``model 'NAME': FIELD.PATH: problem``.
    """
    found = check_scheduling(intended_proto(config))
    lines = [
        f"model '{model.name}': {_spec_field(model, message)}: {message}"
        for severity, message in found
        if severity == "error"
    ]
    if lines:
        raise ConfigError(*lines)


def build_config(
    model: ModelSpec,
    signature: Signature,
    platform: str,
    profile: DeviceProfile,
    model_filename: str | None = None,
    cc_model_filenames: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The intended ModelConfig as plain data (proto field names, enums as their names).

    Each section of the config comes from one function of :data:`SECTIONS`, in that order. I/O the
    spec gives is used as written (the validator then checks it against the model); I/O it leaves out
    is derived from ``signature``. For ``pytorch_libtorch``, tensor names follow Triton's
    ``NAME__index`` convention.

    Raises:
        ConfigError: the config breaks a rule Triton applies to its schedulers (at the spec's field).
    """
    source = ConfigSource(model, signature, platform, profile, model_filename, cc_model_filenames)
    config = compose(SECTIONS, source)
    check_scheduling_rules(model, config)
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
