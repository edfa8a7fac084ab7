"""Validation of a model repository the way Triton checks it at load time.

Each ``config.pbtxt`` is parsed with Triton's protobuf schema (``model_config_pb2``), checked on its
own (names, dims, batching, instance groups, warm-up), and then against its model file: input count,
tensor names, data types, the batch axis against ``max_batch_size``, and every dimension. Every
problem is collected; nothing stops at the first.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from generator.accelerators import ACCELERATORS
from generator.accelerators import problems as accelerator_problems
from generator.config import DEFAULT_FILENAMES, parse_config_text
from generator.errors import ConfigError, ValidationError
from generator.gpus import NvmlUnavailable, detect_gpus
from generator.signature import Signature, TensorInfo, read_onnx_signature, read_plan_signature

#: Triton platform -> the backend that serves it.
PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "ensemble": "",
}
_TYPE_NAMES = {v: k for k, v in model_config_pb2.DataType.items()}
_KIND_NAMES = {v: k for k, v in model_config_pb2.ModelInstanceGroup.Kind.items()}


@dataclass(frozen=True)
class Problem:
    """One finding. ``severity`` is ``error`` (Triton would refuse the model) or ``warning``."""

    model: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.model}: {self.message}"


@dataclass
class ValidationReport:
    """Everything found in one repository."""

    repository: Path
    models: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """Problems that stop Triton from loading a model."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """Problems Triton tolerates but a user should know about."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`ValidationError` listing every error, if there are any."""
        if self.errors:
            raise ValidationError(*(str(p) for p in self.errors))


def _type(value: int) -> str:
    return _TYPE_NAMES.get(value, str(value))


def _suggest(name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    close = (
        [by_lower[name.lower()]]
        if name.lower() in by_lower
        else difflib.get_close_matches(name, choices, n=1)
    )
    return f"did you mean '{close[0]}'?" if close else f"the model has: {', '.join(choices) or '(none)'}"


def _shape(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def check_config(config: model_config_pb2.ModelConfig, dir_name: str | None = None) -> list[tuple[str, str]]:
    """Checks that need only the config. Returns ``(severity, message)`` pairs."""
    found: list[tuple[str, str]] = []
    err = lambda m: found.append(("error", m))  # noqa: E731
    warn = lambda m: found.append(("warning", m))  # noqa: E731
    if dir_name is not None and config.name and config.name != dir_name:
        err(f"config name '{config.name}' differs from its directory '{dir_name}'; make them equal")
    if config.platform and config.platform not in PLATFORM_BACKENDS:
        err(f"platform '{config.platform}' is unknown; use one of {', '.join(PLATFORM_BACKENDS)}")
    expected_backend = PLATFORM_BACKENDS.get(config.platform)
    if (
        config.platform
        and config.backend
        and expected_backend is not None
        and config.backend != expected_backend
    ):
        err(
            f"platform '{config.platform}' and backend '{config.backend}' disagree; "
            f"use backend '{expected_backend}' or drop one of them"
        )
    if not config.platform and not config.backend:
        warn("neither platform nor backend is set; Triton will guess from the model file")
    if config.max_batch_size < 0:
        err(f"max_batch_size {config.max_batch_size} is negative; use 0 (no batching) or a positive size")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            if tensor.name in seen:
                err(f"{kind} '{tensor.name}' is declared twice")
            seen.add(tensor.name)
            if tensor.data_type == model_config_pb2.TYPE_INVALID:
                err(f"{kind} '{tensor.name}' has no data_type; set one such as TYPE_FP32")
            if not tensor.dims:
                err(
                    f"{kind} '{tensor.name}' has no dims; use dims: [1] with reshape {{ shape: [] }} for a scalar"
                )
            bad = [d for d in tensor.dims if d == 0 or d < -1]
            if bad:
                err(f"{kind} '{tensor.name}' dims {_shape(tensor.dims)} hold {bad[0]}; use sizes > 0, or -1")
    if config.platform != "ensemble" and not config.input:
        err("no input is declared; add the model's inputs")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            warn("dynamic_batching is set but max_batch_size is 0, so nothing can be batched; remove one")
        for size in config.dynamic_batching.preferred_batch_size:
            if size > config.max_batch_size:
                err(
                    f"preferred_batch_size {size} exceeds max_batch_size {config.max_batch_size}; "
                    f"lower it or raise max_batch_size"
                )
            if size < 1:
                err(f"preferred_batch_size {size} must be positive")
        db = config.dynamic_batching
        if db.priority_levels and not 1 <= db.default_priority_level <= db.priority_levels:
            err(f"default_priority_level {db.default_priority_level} is outside 1..{db.priority_levels}")
    for group in config.instance_group:
        label = f"instance_group '{group.name}'" if group.name else "instance_group"
        if group.count < 0:
            err(f"{label} count {group.count} is negative")
        if group.gpus and group.kind not in (model_config_pb2.ModelInstanceGroup.KIND_GPU,):
            err(
                f"{label} lists gpus but its kind is {_KIND_NAMES.get(group.kind)}; use KIND_GPU or drop gpus"
            )
        if any(g < 0 for g in group.gpus):
            err(f"{label} gpus {list(group.gpus)} hold a negative id")
    inputs = {t.name: t for t in config.input}
    for warmup in config.model_warmup:
        if config.max_batch_size > 0 and warmup.batch_size > config.max_batch_size:
            err(f"model_warmup '{warmup.name}' batch_size {warmup.batch_size} exceeds max_batch_size")
        for name, data in warmup.inputs.items():
            if name not in inputs:
                err(
                    f"model_warmup '{warmup.name}' feeds '{name}', which is not an input; {_suggest(name, inputs)}"
                )
            elif data.data_type != inputs[name].data_type:
                err(
                    f"model_warmup '{warmup.name}' input '{name}' is {_type(data.data_type)} "
                    f"but the input is {_type(inputs[name].data_type)}"
                )
    return found


def _compare_dims(
    kind: str,
    tensor: model_config_pb2.ModelInput | model_config_pb2.ModelOutput,
    model: TensorInfo,
    max_batch_size: int,
    filename: str,
) -> list[str]:
    problems: list[str] = []
    shape = list(model.shape)
    if max_batch_size > 0:
        if not shape or shape[0] != -1:
            first = shape[0] if shape else "no"
            return [
                f"{kind} '{tensor.name}' has a fixed first dimension ({first}) in {filename}, so Triton cannot "
                f"batch it; set max_batch_size: 0 or export the model with a dynamic batch axis"
            ]
        shape = shape[1:]
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    where = "reshape" if tensor.HasField("reshape") else "dims"
    if len(dims) != len(shape):
        if max_batch_size > 0 and len(dims) == len(shape) + 1 and dims[0] == -1:
            return [
                f"{kind} '{tensor.name}' {where} {_shape(dims)} include the batch axis; with max_batch_size > 0 "
                f"Triton adds it, so write {where}: {_shape(dims[1:])}"
            ]
        return [
            f"{kind} '{tensor.name}' {where} {_shape(dims)} do not match {filename}'s shape {_shape(shape)} "
            f"(batch axis {'removed' if max_batch_size > 0 else 'kept, max_batch_size is 0'})"
        ]
    for axis, (want, have) in enumerate(zip(shape, dims, strict=True)):
        if want != -1 and have != want:
            problems.append(
                f"{kind} '{tensor.name}' {where} {_shape(dims)} differ from {filename}'s {_shape(shape)} at axis "
                f"{axis}; use {_shape(shape)}"
            )
            break
    return problems


def check_against_model(
    config: model_config_pb2.ModelConfig, signature: Signature, filename: str
) -> list[str]:
    """Checks of a config against its model file's signature, as Triton's ONNX Runtime backend does."""
    problems: list[str] = []
    model_inputs = {t.name: t for t in signature.inputs}
    model_outputs = {t.name: t for t in signature.outputs}
    config_inputs = {t.name for t in config.input}
    missing = [n for n in model_inputs if n not in config_inputs]
    if missing and len(config.input) != len(model_inputs):
        problems.append(
            f"config declares {len(config.input)} inputs but {filename} has {len(model_inputs)} "
            f"(missing: {', '.join(missing)}); declare every model input"
        )
    for kind, tensors, known in (
        ("input", config.input, model_inputs),
        ("output", config.output, model_outputs),
    ):
        for tensor in tensors:
            model = known.get(tensor.name)
            if model is None:
                problems.append(
                    f"{kind} '{tensor.name}' is not an {kind} of {filename}; {_suggest(tensor.name, known)}"
                )
                continue
            if _type(tensor.data_type) != f"TYPE_{model.dtype}":
                problems.append(
                    f"{kind} '{tensor.name}' is {_type(tensor.data_type)} in config.pbtxt but {model.dtype} in "
                    f"{filename}; use data_type: TYPE_{model.dtype}"
                )
            problems += _compare_dims(kind, tensor, model, config.max_batch_size, filename)
    return problems


def _version_dirs(model_dir: Path) -> list[Path]:
    return sorted(
        (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )


def validate_model_dir(model_dir: Path) -> list[Problem]:
    """Validate one model directory (``<repo>/<model>``) and every version in it."""
    name = model_dir.name
    problems: list[Problem] = []
    add = lambda severity, message: problems.append(Problem(name, message, severity))  # noqa: E731
    config_path = model_dir / "config.pbtxt"
    versions = _version_dirs(model_dir)
    if not versions:
        add("error", f"no version directory; put the model file in {name}/1/")
    if not config_path.is_file():
        add(
            "warning",
            "no config.pbtxt; Triton will auto-complete one from the model (add one to set batching)",
        )
        return problems
    try:
        config = parse_config_text(config_path.read_text(encoding="utf-8"), f"{name}/config.pbtxt")
    except ConfigError as exc:
        add("error", str(exc).removeprefix(f"{name}/"))
        return problems
    except UnicodeDecodeError:
        add("error", "config.pbtxt is not UTF-8 text")
        return problems
    for severity, message in check_config(config, name):
        add(severity, message)
    if config.platform == "ensemble":
        return problems
    filename = config.default_model_filename or DEFAULT_FILENAMES.get(config.platform, "")
    is_onnx = config.platform == "onnxruntime_onnx" or (
        not config.platform and config.backend == "onnxruntime"
    )
    is_plan = config.platform == "tensorrt_plan" or (not config.platform and config.backend == "tensorrt")
    for version in versions:
        for cc, cc_file in config.cc_model_filenames.items():
            if not (version / cc_file).exists():
                add(
                    "error",
                    f"version {version.name} has no {cc_file} (cc_model_filenames '{cc}'); rebuild the plans",
                )
        model_file = version / filename if filename else None
        if model_file is None or not model_file.exists():
            what = filename or "a model file"
            add(
                "error",
                f"version {version.name} has no {what}; build the model or fix default_model_filename",
            )
            continue
        label = f"{version.name}/{filename}"
        if is_onnx:
            try:
                signature = read_onnx_signature(model_file)
            except ValidationError as exc:
                add("error", str(exc))
                continue
            for message in check_against_model(config, signature, label):
                add("error", message)
        elif is_plan:
            for severity, message in _check_plan(config, model_file, label):
                add(severity, message)
    if config.platform == "pytorch_libtorch":
        for tensor in config.output:  # inputs may also be named after forward()'s arguments
            if not re.search(r"__\d+$", tensor.name):
                add(
                    "warning",
                    f"output '{tensor.name}' does not follow the PyTorch backend's NAME__index naming",
                )
    for severity, message in _check_accelerators(config) + _check_gpus(config):
        add(severity, message)
    return problems


def _check_plan(config: model_config_pb2.ModelConfig, path: Path, label: str) -> list[tuple[str, str]]:
    """A TensorRT plan against its config: tensors as for ONNX, and the profile against max_batch_size."""
    try:
        signature = read_plan_signature(path)
    except ValidationError as exc:
        return [("warning", f"{label} not checked: {exc}")]
    found = [("error", m) for m in check_against_model(config, signature, label)]
    for name, (_, _, high) in signature.details.get("profile", {}).items():
        if config.max_batch_size > 0 and high and high[0] < config.max_batch_size:
            found.append(
                (
                    "error",
                    f"{label}'s profile allows batches up to {high[0]} for '{name}' but max_batch_size is "
                    f"{config.max_batch_size}; rebuild the plan or lower max_batch_size",
                )
            )
    return found


def _check_accelerators(config: model_config_pb2.ModelConfig) -> list[tuple[str, str]]:
    accelerators = config.optimization.execution_accelerators
    entries = [("gpu", a) for a in accelerators.gpu_execution_accelerator]
    entries += [("cpu", a) for a in accelerators.cpu_execution_accelerator]
    found: list[tuple[str, str]] = []
    if (
        entries
        and config.platform not in ("onnxruntime_onnx", "")
        and config.backend not in ("onnxruntime", "")
    ):
        found.append(("warning", "execution_accelerators are read by the ONNX Runtime backend only"))
    for where, accelerator in entries:
        found += [("error", m) for m in accelerator_problems(accelerator.name, dict(accelerator.parameters))]
        field, _ = ACCELERATORS.get(accelerator.name, (None, None))
        if field and not field.startswith(where):
            found.append(("error", f"accelerator '{accelerator.name}' belongs in {field}"))
    cpu_only = all(g.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
    if accelerators.gpu_execution_accelerator and config.instance_group and cpu_only:
        found.append(("warning", "GPU execution accelerators have no effect on KIND_CPU instances"))
    return found


def _check_gpus(config: model_config_pb2.ModelConfig) -> list[tuple[str, str]]:
    """Warn when instance groups ask for GPUs this machine does not have (Triton here would fail)."""
    wanted = sorted({g for group in config.instance_group for g in group.gpus})
    uses_gpu = any(
        group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU for group in config.instance_group
    )
    if not uses_gpu:
        return []
    try:
        present = {gpu.index for gpu in detect_gpus()}
    except NvmlUnavailable as exc:
        where = f"GPUs {wanted}" if wanted else "GPUs (KIND_GPU)"
        return [
            (
                "warning",
                f"instances are placed on {where} but this machine has none ({exc}); a Triton here "
                "would not load it (fine for a GPU server; use build --device cpu for this machine)",
            )
        ]
    missing = [g for g in wanted if g not in present]
    if missing:
        return [
            (
                "warning",
                f"instance_group names GPU(s) {missing} but this machine has {sorted(present) or 'none'}; "
                "Triton here would fail to load the model",
            )
        ]
    return []


def validate_repository(path: str | Path) -> ValidationReport:
    """Validate every model in a repository; hand-written repositories too.

    Raises:
        ValidationError: ``path`` is not a directory.
    """
    repo = Path(path)
    if not repo.is_dir():
        raise ValidationError(f"'{repo}' is not a directory; pass the model repository to validate")
    report = ValidationReport(repo)
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        report.models.append(model_dir.name)
        report.problems += validate_model_dir(model_dir)
    if not report.models:
        report.problems.append(Problem(repo.name, "the repository holds no model directory", "error"))
    return report
