"""Triton's auto-complete applied to a model before validate judges it.

Triton 2.51 auto-completes by default: a missing or empty ``config.pbtxt`` loads as an empty config, the
server names the backend from the model file, and the backend fills in what it reads from the model
(:mod:`generator.core.autocomplete` holds the rules). Each version Triton loads is completed from its own
model file. :func:`complete_model` does the same here: the completed config is what the checks judge,
what was filled in is reported as information, and a model is refused only where Triton's auto-complete
refuses it. A Python model's ``auto_complete_config`` runs in a child process (:mod:`.python_child`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import model_config_pb2

from generator.core import autocomplete
from generator.core.errors import ValidationError
from generator.core.signature import Signature, read_onnx_signature, read_plan_signature
from generator.core.triton import python_backend_utils_dir
from generator.validate.artifacts import (
    Serving,
    check_model_file,
    check_versions,
    is_dir,
    list_dir,
    resolve_serving,
)
from generator.validate.config import Found
from generator.validate.ensembles import is_ensemble
from generator.validate.python import check_python_file

#: Seconds a Python model's import and ``auto_complete_config`` may take here.
PYTHON_TIMEOUT = 60.0

_CHILD = Path(__file__).resolve().parent / "python_child.py"
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _numbers(descriptor: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Protobuf's JSON writes 64-bit integers as strings; Triton hands backends numbers."""
    for key, value in data.items():
        fd = descriptor.fields_by_name.get(key)
        if fd is None:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                for item in value.values():
                    _numbers(value_fd.message_type, item)
        elif fd.message_type is not None:
            for item in value if isinstance(value, list) else [value]:
                _numbers(fd.message_type, item)
        elif fd.type in _INT64:
            data[key] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data


def to_json(config: model_config_pb2.ModelConfig) -> dict[str, Any]:
    """The config in the JSON form Triton hands a backend: field names as in config.pbtxt, fields without
    presence printed with their defaults, 64-bit integers as numbers."""
    data = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(config.DESCRIPTOR, data)


def from_json(data: dict[str, Any]) -> model_config_pb2.ModelConfig:
    """Parse a config from its JSON form, as strictly as Triton (unknown fields are an error).

    Raises:
        json_format.ParseError: the data is not a ModelConfig.
    """
    return json_format.ParseDict(data, model_config_pb2.ModelConfig())


@dataclass
class Completed:
    """A model's config after Triton's auto-complete.

    Attributes:
        config: The config the checks judge (the newest loaded version's completion).
        versions: Each loaded version's own completed config.
        found: What was filled in (``info``), and where Triton's auto-complete refuses the model.
        refused: Triton refuses the model during auto-complete; later checks would only repeat it.
        known: The completion of the newest version could be worked out here (not so for a plan without
            TensorRT, a model file that cannot be read, a Python model that cannot be run).
    """

    config: model_config_pb2.ModelConfig
    versions: dict[int, model_config_pb2.ModelConfig] = field(default_factory=dict)
    found: Found = field(default_factory=list)
    refused: bool = False
    known: bool = True


def _server_fields(config: model_config_pb2.ModelConfig, name: str, serving: Serving) -> list[str]:
    """What the server fills in before the backend sees the config; returns what was guessed."""
    guessed = [] if config.platform or config.backend else [f"backend: {serving.backend}"]
    if not config.name:
        config.name = name
    if serving.backend and serving.platform != "ensemble":
        config.platform = config.platform or serving.platform
        config.backend = config.backend or serving.backend
        if serving.filename and not (serving.backend == "pytorch" and config.runtime == "model.py"):
            config.default_model_filename = config.default_model_filename or serving.filename
    return guessed if config.backend else []


def _needs_model(backend: str, config: dict[str, Any]) -> bool:
    """Whether the backend's auto-complete reads the model file for this config at all."""
    if backend == "onnxruntime":
        return not (config.get("input") or config.get("batch_input")) or not config.get("output")
    return backend == "tensorrt"


def _signature(backend: str, path: Path) -> tuple[Signature | None, str | None]:
    try:
        if backend == "onnxruntime":
            return read_onnx_signature(path), None
        return read_plan_signature(path), None
    except ValidationError as exc:
        return None, str(exc)


def _forward_inputs(path: Path) -> int | None:
    """:func:`autocomplete.forward_inputs` of a TorchScript file (None when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return autocomplete.forward_inputs(torch.jit.load(str(path), map_location="cpu"))
    except Exception:  # torch raises RuntimeError and friends; the load check reports the file
        return None


def _fix(backend: str) -> str:
    return {
        "onnxruntime": "set max_batch_size: 0, or export the model with a dynamic first dimension on every "
        "input and output",
        "tensorrt": "make max_batch_size and the tensors' dims agree with the engine's profile, or rebuild "
        "the plan",
        "pytorch": "declare every input and output in config.pbtxt (NAME__index): TorchScript keeps no tensor "
        "metadata, so the PyTorch backend cannot auto-complete them",
        "python": "make config.pbtxt agree with what auto_complete_config sets, or drop those fields from it",
    }.get(backend, "fix the config")


def _complete_backend(
    config: dict[str, Any], serving: Serving, path: Path | None, label: str
) -> tuple[autocomplete.Completion | None, Found]:
    """The ONNX Runtime, TensorRT or PyTorch backend's auto-complete of one version (None: not known)."""
    if serving.backend == "pytorch":
        completion = autocomplete.complete_pytorch(config, Signature((), ()))
        forward = _forward_inputs(path) if path is not None and not config.get("input") else None
        refusal = autocomplete.pytorch_refusal(completion.config, forward)
        return autocomplete.Completion(completion.config, refusal=refusal), []
    if not _needs_model(serving.backend, config):
        return autocomplete.Completion(config), []
    if path is None:
        return None, []
    signature, reason = _signature(serving.backend, path)
    if signature is None:
        if serving.backend == "tensorrt" and "TensorRT" in (reason or ""):
            return None, [("warning", f"{label} not auto-completed here: {reason}")]
        return None, []  # the signature check reports the unreadable model file
    return autocomplete.complete(serving.backend, config, signature), []


def _complete_version(
    config: dict[str, Any], serving: Serving, version: Path
) -> tuple[autocomplete.Completion | None, Found, str]:
    path, _ = check_model_file(serving, version)  # _check_version reports a missing or odd file
    label = f"{version.name}/{serving.filename}"
    if serving.backend == "python":
        return (*run_python_auto_complete(config, path, label), label)
    return (*_complete_backend(config, serving, path, label), label)


def _pre_checks(original: model_config_pb2.ModelConfig, completed: dict[str, Any]) -> Found:
    """Triton checks the config before the backend completes it: preferred batch sizes against the
    max_batch_size config.pbtxt sets, even where auto-complete raises it."""
    filled = int(completed.get("max_batch_size") or 0)
    if filled == original.max_batch_size:
        return []
    found: Found = []
    for where, sizes in (
        ("dynamic_batching", original.dynamic_batching.preferred_batch_size),
        ("sequence_batching oldest", original.sequence_batching.oldest.preferred_batch_size),
    ):
        size = next((s for s in sizes if s > original.max_batch_size), None)
        if size is not None:
            found.append(
                (
                    "error",
                    f"{where} preferred_batch_size {size} exceeds max_batch_size {original.max_batch_size}: "
                    f"Triton checks config.pbtxt before auto-complete sets max_batch_size to {filled}; set "
                    "max_batch_size in config.pbtxt",
                )
            )
    return found


def complete_model(
    config: model_config_pb2.ModelConfig, model_dir: Path, versions: dict[int, Path]
) -> Completed:
    """Apply Triton's auto-complete to a model's config, version by version.

    Args:
        config: The parsed config.pbtxt (an empty config where there is none, or it is empty).
        model_dir: The model directory.
        versions: Its version directories by number.
    """
    original = config
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(original)
    subdirs = [n for n in list_dir(model_dir) if is_dir(model_dir / n)]
    serving = resolve_serving(config, model_dir / subdirs[0] if subdirs else None)
    guessed = _server_fields(config, model_dir.name, serving)
    result = Completed(config)
    if serving.platform == "ensemble" or is_ensemble(config):
        return result
    selected, _ = check_versions(config, versions, model_dir.name)
    base = to_json(config)
    for number in selected:
        completion, found, label = _complete_version(base, serving, versions[number])
        result.found += found
        result.refused = result.refused or any(severity == "error" for severity, _ in found)
        if completion is None:
            result.known = result.known and number != selected[0]
            continue
        if completion.refusal is not None:
            result.found.append(
                (
                    "error",
                    f"{label}: {completion.refusal}, so Triton refuses the model; {_fix(serving.backend)}",
                )
            )
            result.refused = True
            continue
        try:
            result.versions[number] = from_json(completion.config)
        except json_format.ParseError as exc:
            result.found.append(
                (
                    "error",
                    f"{label}: auto-complete returns a config Triton cannot read ({exc}); fix the model",
                )
            )
            result.refused = True
            continue
        result.found += _pre_checks(original, completion.config)
        if completion.filled:
            what = ", ".join([*guessed, *completion.filled])
            result.found.append(("info", f"auto-complete fills in from {label}: {what}"))
    if selected and selected[0] in result.versions:
        result.config = result.versions[selected[0]]
    if guessed and not result.refused and not any(severity == "info" for severity, _ in result.found):
        result.found.append(("info", f"auto-complete fills in from the model file: {', '.join(guessed)}"))
    return result


def _python_failure(failure: dict[str, Any], label: str) -> tuple[str, str]:
    what = f"{failure.get('type')}: {failure.get('message')}"
    stage = failure.get("stage")
    if stage == "import" and failure.get("type") in ("ImportError", "ModuleNotFoundError"):
        return (
            "warning",
            f"{label} cannot be imported here ({what}), so its auto_complete_config was not run; Triton fails "
            "to load it unless the serving Python has that module",
        )
    if stage == "import":
        return (
            "error",
            f"importing {label} raises {what}, so Triton's Python backend fails to load it; fix the module's "
            "top-level code",
        )
    if stage == "class":
        return "error", f"{label} defines no TritonPythonModel when imported; define the class"
    return (
        "error",
        f"{label}: auto_complete_config raises {what}, so Triton refuses the model; {_fix('python')}",
    )


def _run_child(path: Path, utils: Path, config: dict[str, Any]) -> dict[str, Any] | str:
    """Run :mod:`.python_child` on one model file; its result, or why there is none."""
    handle, result_file = tempfile.mkstemp(suffix=".json", prefix="tritongen-autocomplete-")
    os.close(handle)
    try:
        process = subprocess.run(
            [sys.executable, str(_CHILD), str(path), str(utils), result_file],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=PYTHON_TIMEOUT,
            check=False,
        )
        text = Path(result_file).read_text(encoding="utf-8")
        return json.loads(text) if text else f"it exited with status {process.returncode}"
    except subprocess.TimeoutExpired:
        return f"it did not finish within {PYTHON_TIMEOUT:.0f} s"
    except (OSError, ValueError) as exc:
        return str(exc)
    finally:
        Path(result_file).unlink(missing_ok=True)


def run_python_auto_complete(
    config: dict[str, Any], path: Path | None, label: str
) -> tuple[autocomplete.Completion | None, Found]:
    """Run a Python model's ``auto_complete_config`` on ``config`` as Triton does, in a child process.

    Models whose class has no such method (as :func:`check_python_file` reads it) are not run: Triton
    keeps their config as it is. None where the method could not be run here.

    Args:
        config: The config in Triton's JSON form (:func:`to_json`).
        path: The version's model file (None when it is missing: nothing to run).
        label: How messages name the file (``1/model.py``).
    """
    if path is None:
        return None, []
    if not check_python_file(path, label).auto_completes:
        return autocomplete.Completion(config), []
    utils = python_backend_utils_dir()
    if utils is None:
        return None, [
            (
                "warning",
                f"{label}: auto_complete_config not run: Triton's Python backend utilities are not installed "
                "(pip install nvidia-pytriton)",
            )
        ]
    result = _run_child(path, utils, config)
    if isinstance(result, str):
        return None, [("warning", f"{label}: auto_complete_config could not be run here ({result})")]
    if "config" not in result:
        return None, [_python_failure(result, label)]
    return autocomplete.merge_python_result(config, result["config"]), []
