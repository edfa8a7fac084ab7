"""Checks of one model config that need nothing but the config, as Triton makes them at load time.

One function per concern: the name, the tensors, batching, instance groups, repository agents and warm-up.
Each returns ``(severity, message)`` pairs; :func:`check_config` runs them all, with the rules of
:mod:`.tensors` (reshape, TensorRT-only tensor kinds, batch inputs and outputs, label files) and
:mod:`.scheduling` (priorities, queue policies, sequence controls, strategies and states).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from generator.spec import backend_parameters

_TYPE_NAMES = {v: k for k, v in model_config_pb2.DataType.items()}

_KIND_NAMES = {v: k for k, v in model_config_pb2.ModelInstanceGroup.Kind.items()}

_INT_MAX = 2**31 - 1

Found = list[tuple[str, str]]
"""``(severity, message)`` pairs, as the checks return them."""


def type_name(value: int) -> str:
    return _TYPE_NAMES.get(value, str(value))


def closest(name: str, choices: Iterable[str]) -> str | None:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, choices, n=1)
    return close[0] if close else None


def suggest(name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = closest(name, choices)
    return f"did you mean '{close}'?" if close else f"the model has: {', '.join(choices) or '(none)'}"


def shape_text(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _check_identity(config: model_config_pb2.ModelConfig, dir_name: str | None) -> Found:
    if dir_name is not None and config.name and config.name != dir_name:
        return [
            ("error", f"config name '{config.name}' differs from its directory '{dir_name}'; make them equal")
        ]
    return []


def _check_tensors(config: model_config_pb2.ModelConfig) -> Found:
    found: Found = []
    err = lambda m: found.append(("error", m))  # noqa: E731
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            if not tensor.name:
                err(f"an {kind} has no name; name it as in the model")
            if tensor.name and tensor.name in seen:
                onnx = (
                    " (the ONNX Runtime backend counts both and refuses the model)" if kind == "input" else ""
                )
                found.append(
                    (
                        "warning",
                        f"{kind} '{tensor.name}' is declared twice; Triton's core keeps the first declaration "
                        f"and ignores the second{onnx}: keep one",
                    )
                )
            seen.add(tensor.name)
            if tensor.data_type == model_config_pb2.TYPE_INVALID:
                err(f"{kind} '{tensor.name}' has no data_type; set one such as TYPE_FP32")
            elif tensor.data_type not in _TYPE_NAMES:
                err(
                    f"{kind} '{tensor.name}' data_type {tensor.data_type} is not a Triton type; use one such as TYPE_FP32"
                )
            if not tensor.dims:
                err(
                    f"{kind} '{tensor.name}' has no dims; use dims: [1] with reshape {{ shape: [] }} for a scalar"
                )
            for where, dims in (("dims", tensor.dims), ("reshape", tensor.reshape.shape)):
                bad = [d for d in dims if d == 0 or d < -1]
                if bad:
                    err(
                        f"{kind} '{tensor.name}' {where} {shape_text(dims)} hold {bad[0]}; use sizes > 0, or -1"
                    )
    return found


def _check_batching(config: model_config_pb2.ModelConfig) -> Found:
    found: Found = []
    if config.max_batch_size < 0:
        found.append(
            (
                "error",
                f"max_batch_size {config.max_batch_size} is negative; use 0 (no batching) or a positive size",
            )
        )
    if not config.HasField("dynamic_batching"):
        return found
    db = config.dynamic_batching
    if config.max_batch_size == 0:
        found.append(
            (
                "warning",
                "dynamic_batching is set but max_batch_size is 0, so nothing can be batched; remove one",
            )
        )
    for size in db.preferred_batch_size:
        if size > config.max_batch_size:
            found.append(
                (
                    "error",
                    f"preferred_batch_size {size} exceeds max_batch_size {config.max_batch_size}; "
                    f"lower it or raise max_batch_size",
                )
            )
        if size < 1:
            found.append(("error", f"preferred_batch_size {size} must be positive"))
    return found


def _check_instance_groups(config: model_config_pb2.ModelConfig) -> Found:
    found: Found = []
    for group in config.instance_group:
        label = f"instance_group '{group.name}'" if group.name else "instance_group"
        if group.count < 1:
            found.append(
                (
                    "warning",
                    f"{label} count {group.count} is not positive, so Triton uses its default (1, or 2 on CPU "
                    "for ONNX Runtime and TensorFlow); write the count you mean",
                )
            )
        # KIND_AUTO with gpus depends on the machine (GPU when it has them all, else CPU, which Triton then
        # refuses for listing gpus): validate.artifacts.check_gpus judges it.
        if group.gpus and group.kind not in (
            model_config_pb2.ModelInstanceGroup.KIND_GPU,
            model_config_pb2.ModelInstanceGroup.KIND_AUTO,
        ):
            found.append(
                (
                    "error",
                    f"{label} lists gpus but its kind is {_KIND_NAMES.get(group.kind)}; use KIND_GPU or drop gpus",
                )
            )
        if any(g < 0 for g in group.gpus):
            found.append(("error", f"{label} gpus {list(group.gpus)} hold a negative id"))
        if group.profile and not config.HasField("ensemble_scheduling"):
            found += _check_profiles(label, list(group.profile), is_tensorrt(config))
    return found


def is_tensorrt(config: model_config_pb2.ModelConfig) -> bool | None:
    """Whether TensorRT serves the model; None when the config names neither platform nor backend (Triton
    then guesses from the model file, which the config checks do not see)."""
    if not config.platform and not config.backend:
        return None
    return config.platform == "tensorrt_plan" or (not config.platform and config.backend == "tensorrt")


def _profile_index(profile: str) -> int | None:
    """The profile as Triton reads it (C++ ``stoi``: leading spaces, a sign, then digits); None if no digits."""
    match = re.match(r"\s*([+-]?\d+)", profile)
    return int(match.group(1)) if match else None


def _check_profiles(label: str, profiles: list[str], tensorrt: bool | None) -> Found:
    """An instance group's TensorRT optimization ``profile`` names."""
    if tensorrt is False:
        return [
            (
                "error",
                f"{label} specifies profile {profiles}, a field which is only supported for TensorRT models; "
                "drop profile",
            )
        ]
    found: Found = []
    for profile in profiles:
        index = _profile_index(profile)
        if not profile:
            found.append(
                ("error", f'{label} profile name must not be empty; give a profile index such as "0"')
            )
        elif index is None:
            found.append(
                (
                    "error",
                    f"{label} profile '{profile}': unable to parse it; give a profile index such as \"0\"",
                )
            )
        elif index > _INT_MAX or index < -_INT_MAX - 1:
            found.append(
                (
                    "error",
                    f"{label} profile '{profile}' is out of range, which crashes Triton 2.51; give a small index",
                )
            )
        elif index < 0:
            found.append(
                (
                    "error",
                    f"{label} specifies invalid profile '{profile}': the field should contain the string "
                    "representation of a non-negative integer",
                )
            )
    return found


def _check_agents(config: model_config_pb2.ModelConfig) -> Found:
    """Repository agents: Triton loads ``libtritonrepoagent_<name>.so`` from its repoagents directory."""
    found: Found = []
    for agent in config.model_repository_agents.agents:
        if agent.name == "checksum":
            found.append(
                (
                    "warning",
                    "model_repository_agents 'checksum': the official Triton container ships this agent but the "
                    "embedded server has no repository agent, so serve refuses the model; drop it to serve here",
                )
            )
        else:
            found.append(
                (
                    "error",
                    f"model_repository_agents '{agent.name}': Triton is unable to find "
                    f"'libtritonrepoagent_{agent.name}.so' (it ships only 'checksum'); install the agent or drop it",
                )
            )
    return found


def _check_warmup_input(
    label: str, name: str, data: model_config_pb2.ModelWarmup.Input, tensor: model_config_pb2.ModelInput
) -> Found:
    found: Found = []
    if data.data_type != tensor.data_type:
        found.append(
            (
                "error",
                f"{label} input '{name}' is {type_name(data.data_type)} but the input is {type_name(tensor.data_type)}; "
                f"use data_type: {type_name(tensor.data_type)}",
            )
        )
    want = [1 if d == -1 else d for d in tensor.dims]
    if any(d < 1 for d in data.dims):
        found.append(
            (
                "error",
                f"{label} input '{name}' dims {shape_text(data.dims)} must all be fixed sizes; use {shape_text(want)}",
            )
        )
    elif len(data.dims) != len(tensor.dims) or any(
        c not in (-1, w) for c, w in zip(tensor.dims, data.dims, strict=False)
    ):
        found.append(
            (
                "error",
                f"{label} input '{name}' dims {shape_text(data.dims)} do not fit the input's dims {shape_text(tensor.dims)} "
                f"(without the batch axis); use {shape_text(want)}",
            )
        )
    if data.WhichOneof("input_data_type") is None:
        found.append(
            (
                "error",
                f"{label} input '{name}' sets no data; add zero_data: true, random_data: true or input_data_file",
            )
        )
    return found


def _check_warmup(config: model_config_pb2.ModelConfig) -> Found:
    """Each warm-up sample as Triton runs it at load time, where any failure fails the load."""
    found: Found = []
    inputs = {t.name: t for t in config.input}
    batcher = config.sequence_batching
    controls = {c.name for c in batcher.control_input} | {s.input_name for s in batcher.state}
    for warmup in config.model_warmup:
        label = f"model_warmup '{warmup.name}'"
        if warmup.batch_size == 0:
            found.append(
                ("warning", f"{label} has batch_size 0, so Triton skips it; set batch_size: 1 or more")
            )
            continue
        if config.max_batch_size > 0 and warmup.batch_size > config.max_batch_size:
            found.append(
                (
                    "error",
                    f"{label} batch_size {warmup.batch_size} exceeds max_batch_size {config.max_batch_size}: "
                    "Triton 2.51 fails the warm-up sample (and at times crashes running it); lower it",
                )
            )
        if config.max_batch_size == 0 and warmup.batch_size > 1:
            found.append(
                (
                    "error",
                    f"{label} batch_size {warmup.batch_size} must be 1 for a model without batching (Triton "
                    "2.51 fails a larger warm-up sample, and at times crashes running it)",
                )
            )
        suggested: set[str] = set()
        for name, data in sorted(warmup.inputs.items()):
            if name in controls:
                continue
            if name not in inputs and config.backend == "python":
                found.append(
                    (
                        "warning",
                        f"{label} feeds '{name}', which is not an input; Triton hands it to the Python model "
                        f"as an extra input (other backends refuse the model): {suggest(name, inputs)}",
                    )
                )
                continue
            if name not in inputs:
                suggested.add(closest(name, inputs) or "")
                found.append(
                    ("error", f"{label} feeds '{name}', which is not an input; {suggest(name, inputs)}")
                )
                continue
            found += _check_warmup_input(label, name, data, inputs[name])
        missing = [
            n for n, t in inputs.items() if not t.optional and n not in warmup.inputs and n not in suggested
        ]
        if missing:
            found.append(
                ("error", f"{label} does not feed input(s) {', '.join(missing)}; add them to its inputs")
            )
    return found


#: Backends whose known parameters are checked (the embedded server's stand-in serves both).
PARAMETER_BACKENDS = frozenset({"onnxruntime", "pytorch"})


def check_parameters(config: model_config_pb2.ModelConfig, backend: str) -> Found:
    """Parameters the ONNX Runtime or PyTorch backend knows, with a value it refuses or misreads at load
    time (an error), or no longer reads (a warning). Other backends' parameters are their own.

    Args:
        config: The parsed config.
        backend: The backend serving the model after auto-complete (``onnxruntime``, ``pytorch``...).
    """
    if backend not in PARAMETER_BACKENDS:
        return []
    found: Found = []
    for key, value in sorted(config.parameters.items()):
        reason = backend_parameters.problem(key, value.string_value)
        if reason is not None:
            severity = "warning" if key in backend_parameters.REMOVED else "error"
            found.append((severity, f"parameters '{key}': {reason}"))
    return found


def check_config(
    config: model_config_pb2.ModelConfig, dir_name: str | None = None, model_dir: Path | None = None
) -> Found:
    """Checks that need only the config (and, given ``model_dir``, the files it names). Returns
    ``(severity, message)`` pairs.

    Args:
        config: The parsed config.
        dir_name: The model directory's name, which ``name`` must equal when set.
        model_dir: The model directory, for the label files and initial states the config names.
    """
    # Imported here: both modules build on this one's helpers.
    from generator.validate.scheduling import check_scheduling
    from generator.validate.tensors import check_io, check_label_files

    found = (
        _check_identity(config, dir_name)
        + _check_tensors(config)
        + check_io(config)
        + _check_batching(config)
        + check_scheduling(config, model_dir)
        + _check_instance_groups(config)
        + _check_agents(config)
        + _check_warmup(config)
    )
    if model_dir is not None:
        found += check_label_files(config, model_dir)
    return found
