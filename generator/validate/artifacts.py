"""Checks of a model's files as Triton reads them: how it will be served, its versions, its model file.

Triton's auto-complete decides the platform, backend and model filename a config leaves out; the
version policy picks the version directories to load; the backend reads the model file and compares
its tensors with the config. Each check returns ``(severity, message)`` pairs and reads only regular
files, so a FIFO, a directory or a symbolic-link loop is reported instead of hanging or raising.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2

from generator.core.errors import ValidationError
from generator.core.signature import Signature, TensorInfo, read_onnx_signature, read_plan_signature
from generator.core.triton import BACKEND_FILENAMES, PLATFORM_BACKENDS, TENSORFLOW_FILENAMES
from generator.validate.config import Found, shape_text, suggest, type_name
from generator.validate.schema import EMBEDDED_BACKENDS, Server, visible_gpus

#: Backends whose platform Triton checks against the backend (any platform goes with another backend).
_TYPED_BACKENDS = ("tensorflow", "tensorrt", "onnxruntime", "pytorch")

#: Subdirectories of a model that Triton never takes for versions.
_NOT_VERSIONS = {"warmup", "initial_state", "configs"}

_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Serving:
    """How Triton will serve a model: platform, backend and model filename after its auto-complete."""

    platform: str
    backend: str
    filename: str


def stat_or_none(path: Path) -> os.stat_result | None:
    """``os.stat`` following links; None when the path is missing, dangling, looping or unreadable."""
    try:
        return path.stat()
    except (OSError, ValueError):
        return None


def is_dir(path: Path) -> bool:
    """Whether ``path`` is a directory (following links); False when it cannot be stat'ed."""
    status = stat_or_none(path)
    return status is not None and stat.S_ISDIR(status.st_mode)


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (following links), the only kind that is safe to read."""
    status = stat_or_none(path)
    return status is not None and stat.S_ISREG(status.st_mode)


def inside(directory: Path, name: str) -> Path:
    """``directory/name`` as Triton joins paths: an absolute ``name`` stays inside ``directory``."""
    return directory / name.lstrip("/")


def list_dir(directory: Path) -> list[str]:
    """The names in ``directory``, sorted; empty when it cannot be listed."""
    try:
        return sorted(os.listdir(directory))
    except (OSError, ValueError):
        return []


def resolve_serving(config: model_config_pb2.ModelConfig, first_version: Path | None) -> Serving:
    """Platform, backend and model filename as Triton's auto-complete fills them in before checking.

    Args:
        config: The parsed config.
        first_version: The model's first subdirectory in name order (Triton looks there for a model
            file when the config names neither platform nor backend), or None.
    """
    platform, backend, filename = config.platform, config.backend, config.default_model_filename
    contents = set(list_dir(first_version)) if first_version is not None else set()
    if not platform and backend in ("", "tensorflow"):
        by_filename = {v: k for k, v in TENSORFLOW_FILENAMES.items()}
        if filename in by_filename:
            platform = by_filename[filename]
        elif not filename and first_version is not None:
            if "model.savedmodel" in contents and is_dir(first_version / "model.savedmodel"):
                platform = "tensorflow_savedmodel"
            if "model.graphdef" in contents and not is_dir(first_version / "model.graphdef"):
                platform = "tensorflow_graphdef"
    if platform in TENSORFLOW_FILENAMES:
        return Serving(platform, backend or "tensorflow", filename or TENSORFLOW_FILENAMES[platform])
    if not backend:
        backend = PLATFORM_BACKENDS.get(platform, "")
    if not backend:
        by_filename = {v: k for k, v in BACKEND_FILENAMES.items()}
        if filename in by_filename:
            backend = by_filename[filename]
        elif not platform and not filename:
            for name, default in BACKEND_FILENAMES.items():  # Triton's order of detection
                may_be_dir = name == "onnxruntime"  # a large ONNX model is a directory
                if default in contents and (may_be_dir or not is_dir(first_version / default)):
                    backend = name
                    break
    if not platform and backend in ("tensorrt", "onnxruntime", "pytorch"):
        platform = {v: k for k, v in PLATFORM_BACKENDS.items() if v}[backend]
    return Serving(platform, backend, filename or BACKEND_FILENAMES.get(backend, ""))


def check_serving(config: model_config_pb2.ModelConfig, serving: Serving) -> Found:
    """The platform/backend pair, as Triton checks it after its auto-complete."""
    platform, backend = serving.platform, serving.backend
    if platform == "ensemble":
        if backend:
            return [("error", f"an ensemble takes no backend (it has '{backend}'); drop backend")]
        return []
    if not backend:
        if not platform:
            return [
                (
                    "error",
                    "neither platform nor backend is set and the version directory holds no model file to "
                    f"tell them ({', '.join(BACKEND_FILENAMES.values())}); set platform",
                )
            ]
        return [("error", f"platform '{platform}' is unknown; use one of {', '.join(PLATFORM_BACKENDS)}")]
    found: Found = []
    if not config.platform and not config.backend:
        found.append(
            ("warning", "neither platform nor backend is set; Triton will guess from the model file")
        )
    if backend in _TYPED_BACKENDS and PLATFORM_BACKENDS.get(platform) != backend:
        if not platform:
            found.append(
                (
                    "error",
                    f"backend '{backend}' needs a platform (tensorflow_savedmodel or tensorflow_graphdef) "
                    "or a model.savedmodel / model.graphdef in the version directory; set platform",
                )
            )
        else:
            expected = PLATFORM_BACKENDS.get(platform)
            fix = f"use backend '{expected}' or drop one of them" if expected else "drop platform"
            found.append(("error", f"platform '{platform}' and backend '{backend}' disagree; {fix}"))
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
    if not shape and max_batch_size == 0:  # a scalar in the model: the ONNX Runtime backend takes 1s
        if all(d == 1 for d in dims):
            return []
        return [
            f"{kind} '{tensor.name}' is a scalar in {filename} and the model does not batch, so Triton's ONNX "
            f"Runtime backend takes only 1s in its {where} (got {shape_text(dims)}); write {where}: [1]"
        ]
    if len(dims) != len(shape):
        if max_batch_size > 0 and len(dims) == len(shape) + 1 and dims[0] == -1:
            return [
                f"{kind} '{tensor.name}' {where} {shape_text(dims)} include the batch axis; with max_batch_size > 0 "
                f"Triton adds it, so write {where}: {shape_text(dims[1:])}"
            ]
        return [
            f"{kind} '{tensor.name}' {where} {shape_text(dims)} do not match {filename}'s shape {shape_text(shape)} "
            f"(batch axis {'removed' if max_batch_size > 0 else 'kept, max_batch_size is 0'})"
        ]
    for axis, (want, have) in enumerate(zip(shape, dims, strict=True)):
        if want != -1 and have != want:
            problems.append(
                f"{kind} '{tensor.name}' {where} {shape_text(dims)} differ from {filename}'s {shape_text(shape)} at axis "
                f"{axis}; use {shape_text(shape)}"
            )
            break
    return problems


#: The data type a boolean control's values make its tensor (the ONNX Runtime backend's rule).
_CONTROL_TYPES = {
    "int32_false_true": model_config_pb2.TYPE_INT32,
    "fp32_false_true": model_config_pb2.TYPE_FP32,
    "bool_false_true": model_config_pb2.TYPE_BOOL,
}


def sequence_fed_inputs(config: model_config_pb2.ModelConfig) -> dict[str, int]:
    """The model inputs the sequence batcher feeds (each control tensor, each state input) -> their
    data type as the config implies it (TYPE_INVALID where it does not say)."""
    if not config.HasField("sequence_batching"):
        return {}
    fed: dict[str, int] = {}
    for tensor in config.sequence_batching.control_input:
        for control in tensor.control:
            typed = [t for field, t in _CONTROL_TYPES.items() if len(getattr(control, field))]
            fed[tensor.name] = typed[0] if typed else control.data_type
    for state in config.sequence_batching.state:
        fed[state.input_name] = state.data_type
    return fed


def check_sequence_tensors(
    config: model_config_pb2.ModelConfig, signature: Signature, filename: str
) -> list[str]:
    """The sequence batcher's control tensors and implicit states against the model file, as the ONNX
    Runtime backend checks them at load: each control a model input of dims [1] and the control's data
    type, each state's input and output a model tensor of the state's data type and dims."""
    if not config.HasField("sequence_batching"):
        return []
    problems: list[str] = []
    model_inputs = {t.name: t for t in signature.inputs}
    model_outputs = {t.name: t for t in signature.outputs}
    batcher = config.sequence_batching
    for tensor in batcher.control_input:
        model = model_inputs.get(tensor.name)
        if model is None:
            problems.append(
                f"sequence_batching control_input '{tensor.name}': {filename} has no input of that name; "
                f"{suggest(tensor.name, model_inputs)}"
            )
            continue
        want = sequence_fed_inputs(config)[tensor.name]
        if want != model_config_pb2.TYPE_INVALID and type_name(want) != f"TYPE_{model.dtype}":
            problems.append(
                f"sequence_batching control_input '{tensor.name}' is {type_name(want)} but {filename} takes "
                f"{model.dtype}; give the control that type, or export the model with {type_name(want)}"
            )
        control = model_config_pb2.ModelInput(name=tensor.name, dims=[1])
        label = f"sequence_batching control_input '{tensor.name}'"
        found = _compare_dims("input", control, model, config.max_batch_size, filename)
        problems += [m.replace(f"input '{tensor.name}'", label, 1) for m in found]
    for state in batcher.state:
        for kind, name, known in (
            ("input", state.input_name, model_inputs),
            ("output", state.output_name, model_outputs),
        ):
            model = known.get(name)
            label = f"sequence_batching state '{state.input_name}' {kind}_name '{name}'"
            if model is None:
                problems.append(f"{label}: {filename} has no {kind} of that name; {suggest(name, known)}")
                continue
            if type_name(state.data_type) != f"TYPE_{model.dtype}":
                problems.append(
                    f"{label} is {type_name(state.data_type)} in config.pbtxt but {model.dtype} in {filename}; "
                    f"use data_type: TYPE_{model.dtype}"
                )
            tensor = model_config_pb2.ModelInput(name=name, dims=list(state.dims))
            found = _compare_dims(kind, tensor, model, config.max_batch_size, filename)
            problems += [m.replace(f"{kind} '{name}'", label, 1) for m in found]
    return problems


def check_against_model(
    config: model_config_pb2.ModelConfig, signature: Signature, filename: str
) -> list[str]:
    """Checks of a config against its model file's signature, as Triton's ONNX Runtime backend does."""
    problems: list[str] = []
    model_inputs = {t.name: t for t in signature.inputs}
    model_outputs = {t.name: t for t in signature.outputs}
    config_inputs = {t.name for t in config.input}
    fed = sequence_fed_inputs(config)
    missing = [n for n in model_inputs if n not in config_inputs and n not in fed]
    if missing and len(config_inputs | set(fed)) != len(model_inputs):
        problems.append(
            f"config declares {len(config.input)} inputs"
            + (f" and the sequence batcher feeds {len(fed)}" if fed else "")
            + f" but {filename} has {len(model_inputs)} (missing: {', '.join(missing)}); declare every model input"
        )
    problems += check_sequence_tensors(config, signature, filename)
    for kind, tensors, known in (
        ("input", config.input, model_inputs),
        ("output", config.output, model_outputs),
    ):
        for tensor in tensors:
            model = known.get(tensor.name)
            if model is None:
                problems.append(
                    f"{kind} '{tensor.name}' is not an {kind} of {filename}; {suggest(tensor.name, known)}"
                )
                continue
            if type_name(tensor.data_type) != f"TYPE_{model.dtype}":
                problems.append(
                    f"{kind} '{tensor.name}' is {type_name(tensor.data_type)} in config.pbtxt but {model.dtype} in "
                    f"{filename}; use data_type: TYPE_{model.dtype}"
                )
            problems += _compare_dims(kind, tensor, model, config.max_batch_size, filename)
    return problems


def check_signature(config: model_config_pb2.ModelConfig, serving: Serving, path: Path, label: str) -> Found:
    if serving.backend == "onnxruntime":
        try:
            signature = read_onnx_signature(path)
        except ValidationError as exc:
            return [("error", str(exc))]
        return [("error", m) for m in check_against_model(config, signature, label)]
    if serving.backend == "tensorrt":
        return check_plan(config, path, label)
    return []


def check_plan(config: model_config_pb2.ModelConfig, path: Path, label: str) -> list[tuple[str, str]]:
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


def version_dirs(model_dir: Path) -> tuple[dict[int, Path], Found]:
    """The version directories Triton sees in a model directory, by version number.

    Triton takes a subdirectory for a version when its name is a non-negative integer without leading
    zeros; it ignores the others (``warmup`` and friends silently, the rest with a log line).
    """
    versions: dict[int, Path] = {}
    found: Found = []
    for name in list_dir(model_dir):
        path = model_dir / name
        if name in _NOT_VERSIONS or not re.fullmatch(r"[0-9]+", name):
            continue
        if not is_dir(path):
            found.append(("warning", f"'{name}' is not a directory, so it is no version; Triton ignores it"))
        elif len(name) > 1 and name.startswith("0"):
            found.append(
                ("warning", f"version directory '{name}' has a leading zero, so Triton ignores it; rename it")
            )
        elif int(name) > _INT64_MAX:
            found.append(("error", f"version directory '{name}' is too large a number for Triton; rename it"))
        else:
            versions[int(name)] = path
    return versions, found


def check_versions(
    config: model_config_pb2.ModelConfig, versions: dict[int, Path], model_name: str
) -> tuple[list[int], Found]:
    """The versions Triton will load under the config's version policy (default: the latest one).

    Returns:
        The versions to load (newest first) and what was found.
    """
    existing = sorted(versions, reverse=True)
    have = f"it has {', '.join(map(str, existing))}" if existing else "it has none"
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice") if config.HasField("version_policy") else "latest"
    if which == "specific":
        wanted = list(dict.fromkeys(policy.specific.versions))
        absent = [v for v in wanted if v not in versions]
        selected = [v for v in existing if v in wanted]
        if not wanted:
            return [], [("error", "version_policy specific lists no version; list the versions to serve")]
        if absent:
            severity = "warning" if selected else "error"
            effect = "Triton serves the others" if selected else "so Triton loads nothing"
            return selected, [
                (
                    severity,
                    f"version_policy names version(s) {', '.join(map(str, absent))} with no directory ({have}), "
                    f"{effect}; add {model_name}/{absent[0]}/ or fix the policy",
                )
            ]
        return selected, []
    if not existing:
        return [], [
            (
                "error",
                f"no version directory; put the model file in {model_name}/1/ (a version is a directory named "
                "by a number)",
            )
        ]
    if which == "all":
        return existing, []
    count = policy.latest.num_versions if config.HasField("version_policy") else 1
    if count < 1:
        return [], [
            (
                "error",
                "version_policy latest has num_versions 0, so Triton loads nothing; set it to 1 or more",
            )
        ]
    return existing[:count], []


def check_model_file(serving: Serving, version: Path) -> tuple[Path | None, Found]:
    """Whether the version holds the model file its backend loads.

    Returns:
        The file to read the signature from (None when there is none to read) and what was found.
    """
    if serving.backend not in (*BACKEND_FILENAMES, "tensorflow") or not serving.filename:
        return None, []  # a custom backend decides what it loads
    path = inside(version, serving.filename)
    label = f"{version.name}/{serving.filename}"
    status = stat_or_none(path)
    if status is None:
        broken = " (a broken symbolic link)" if path.is_symlink() else ""
        return None, [
            (
                "error",
                f"version {version.name} has no {serving.filename}{broken}; build the model or fix default_model_filename",
            )
        ]
    is_dir = stat.S_ISDIR(status.st_mode)
    if serving.platform == "tensorflow_savedmodel":
        if not is_dir:
            return None, [("error", f"{label} is not a directory; a SavedModel is a directory")]
        return None, []
    if serving.backend == "onnxruntime" and is_dir:  # a large ONNX model: <dir>/model.onnx
        path, label = path / "model.onnx", f"{label}/model.onnx"
        if not is_regular_file(path):
            return None, [
                (
                    "error",
                    f"{version.name}/{serving.filename} is a directory without model.onnx in it; put the model there",
                )
            ]
        return path, []
    if is_dir:
        return None, [("error", f"{label} is a directory; it must be the model file")]
    if not stat.S_ISREG(status.st_mode):
        return None, [("error", f"{label} is not a regular file; replace it with the model file")]
    return path, []


def _gpu_groups(
    config: model_config_pb2.ModelConfig,
) -> list[tuple[int, model_config_pb2.ModelInstanceGroup]]:
    return [
        (i, g)
        for i, g in enumerate(config.instance_group)
        if g.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    ]


def check_gpus(config: model_config_pb2.ModelConfig, server: Server) -> Found:
    """KIND_GPU instance groups against the GPUs of the Triton that will serve the model.

    Triton fills a KIND_GPU group that lists no GPU with every GPU it has, then refuses a group when it
    has no GPU at all ("no GPUs are available") or when the group names one it does not have ("invalid
    or unsupported gpu id"). Where the serving machine is known (the embedded server on this machine,
    or ``--gpus``) these are errors; where it is not, a warning says what a Triton on this machine would do.
    """
    found = _check_auto_gpus(config, server)
    groups = _gpu_groups(config)
    if not groups:
        return found
    if server.gpus is None:
        return found + _warn_gpus(groups)
    have = sorted(server.gpus)
    where = (
        "this machine" if server.gpus_from == "this machine" else f"the serving machine ({server.gpus_from})"
    )
    choice = (
        f"judged for {server} on this machine; validate --triton-version VERSION judges for another server"
        if server.gpus_from == "this machine"
        else f"judged for the GPUs {server.gpus_from} names"
    )
    for index, group in groups:
        if not group.gpus and not have:
            found.append(
                (
                    "error",
                    f"instance_group[{index}] is KIND_GPU but {where} has no GPU, so Triton refuses the model "
                    f"(no GPUs are available; {choice}); use KIND_CPU or KIND_AUTO (build --device cpu)",
                )
            )
        for gpu in [g for g in group.gpus if g not in server.gpus][:1]:
            found.append(
                (
                    "error",
                    f"instance_group[{index}] names GPU {gpu} but {where} has "
                    f"{f'GPUs {have}' if have else 'no GPU'}, so Triton refuses the model (invalid or unsupported "
                    f"gpu id {gpu}; {choice}); name GPUs it has, or drop gpus to use them all",
                )
            )
    return found


def _check_auto_gpus(config: model_config_pb2.ModelConfig, server: Server) -> Found:
    """KIND_AUTO groups that list gpus: Triton makes them KIND_GPU when it has every GPU listed, else
    KIND_CPU, which it then refuses for listing gpus ("has kind KIND_CPU but specifies one or more GPUs")."""
    present = server.gpus if server.gpus is not None else visible_gpus()
    found: Found = []
    for index, group in enumerate(config.instance_group):
        if group.kind != model_config_pb2.ModelInstanceGroup.KIND_AUTO or not group.gpus:
            continue
        missing = sorted(g for g in group.gpus if g not in present)
        if not missing:
            continue
        severity = "error" if server.gpus is not None else "warning"
        unknown = "" if server.gpus is not None else " (a warning: the serving machine is unknown)"
        found.append(
            (
                severity,
                f"instance_group[{index}] is KIND_AUTO and lists GPU(s) {missing} that the serving machine lacks, "
                f"so Triton makes it KIND_CPU and refuses it for listing gpus{unknown}; use KIND_GPU on a "
                "machine with those GPUs, or drop gpus",
            )
        )
    return found


def _warn_gpus(groups: list[tuple[int, model_config_pb2.ModelInstanceGroup]]) -> Found:
    """GPU groups for a server on an unknown machine: a warning where this machine could not serve them."""
    present = visible_gpus()
    wanted = sorted({g for _, group in groups for g in group.gpus})
    missing = [g for g in wanted if g not in present] if present else wanted
    if present and not missing:
        return []
    here = f"this machine has GPUs {sorted(present)}" if present else "this machine has none"
    asked = f"GPU(s) {missing}" if missing else "GPUs (KIND_GPU)"
    return [
        (
            "warning",
            f"instance_group places instances on {asked} but {here}; a Triton here would refuse the model (fine "
            "for a GPU server: this is a warning because the serving machine is unknown; validate --gpus IDS "
            "judges for its GPUs, use build --device cpu for this machine)",
        )
    ]


def _escapes(path: Path, directory: Path) -> bool:
    """Triton's test: the resolved path does not start with the resolved directory (as strings)."""
    return not os.path.realpath(path).startswith(os.path.realpath(directory))


def _not_a_library(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(4) != b"\x7fELF"
    except OSError:
        return True


def _find_local(library: str, search: list[Path]) -> tuple[Path | None, Found]:
    """The backend library in the model's own directories (Triton looks there first), and its problems."""
    for directory in search:
        path = inside(directory, library)
        if stat_or_none(path) is None:
            continue
        if _escapes(path, directory):
            return path, [
                (
                    "error",
                    f"runtime '{library}' resolves to {path.name} outside {directory.name}/, so Triton refuses the "
                    "model (backend library escapes backend directory); name a file inside the directory",
                )
            ]
        if not is_regular_file(path) or _not_a_library(path):
            return path, [
                (
                    "error",
                    f"{directory.name}/{library} is not a shared library, so Triton cannot load it as the "
                    "model's backend; remove it or put the backend library there",
                )
            ]
        return path, []
    return None, []


def _embedded_library(library: str, backend: str, python_based: bool, server: Server) -> Found:
    """A library that is not in the model's directories, looked up in the embedded backend directory."""
    dirs = [backend, "python"] if python_based else [backend]
    laid_out = {f"{name}/{file}" for name, files in EMBEDDED_BACKENDS.items() for file in files}
    for directory in dirs:
        path = os.path.normpath(f"{directory}/{library.lstrip('/')}")
        if path in laid_out:
            if not path.startswith(f"{directory}/"):
                return [
                    (
                        "error",
                        f"runtime '{library}' leaves the backend directory '{directory}', so Triton refuses the "
                        "model (backend library escapes backend directory); name the file without '..'",
                    )
                ]
            return []
    return [
        (
            "error",
            f"runtime '{library}' is neither in the model's directories nor in {server}'s backend "
            f"directory for '{backend}', so Triton refuses the model (unable to find backend library); "
            f"drop runtime, or use model.py for a Python-based backend",
        )
    ]


def check_backend_library(
    config: model_config_pb2.ModelConfig, serving: Serving, model_dir: Path, version: Path, server: Server
) -> Found:
    """The backend library Triton loads for a model (``runtime``, or ``libtriton_<backend>.so``).

    Triton looks for it in the version directory, the model directory, then the backend directory's
    ``<backend>/`` (and ``python/`` for ``runtime: "model.py"``, a Python-based backend, which also needs
    ``<backend>/model.py``); a runtime path that resolves outside the directory it is found in is refused.
    Only the embedded server's backend directory is known; another server's is not judged.
    """
    backend, runtime = serving.backend, config.runtime
    if not backend or serving.platform == "ensemble":
        return []
    python_based = runtime == "model.py"
    library = "libtriton_python.so" if python_based else runtime or f"libtriton_{backend}.so"
    path, found = _find_local(library, [version, model_dir])
    if found:
        return found
    if path is None and server.embedded:
        if not runtime and backend not in EMBEDDED_BACKENDS:
            return [
                (
                    "error",
                    f"{server} has no '{backend}' backend (it has {', '.join(EMBEDDED_BACKENDS)}), so it refuses "
                    f"the model (unable to find backend library for backend '{backend}'); serve it with Triton's "
                    "container (validate --triton-version VERSION judges for it)",
                )
            ]
        if runtime:
            found = _embedded_library(library, backend, python_based, server)
    lacks_model_py = "model.py" not in EMBEDDED_BACKENDS.get(backend, frozenset())
    if python_based and not found and lacks_model_py and (backend == "python" or server.embedded):
        found.append(
            (
                "error",
                f"runtime 'model.py' makes '{backend}' a Python-based backend, but Triton's backend directory "
                f"has no {backend}/model.py, so it refuses the model (unable to find Python backend based "
                "backend library); drop runtime",
            )
        )
    return found
