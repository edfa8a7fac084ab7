"""Validation of a model repository the way Triton checks it at load time.

The repository root first: Triton tries to load every directory there as a model and refuses the
whole repository when it cannot stat an entry. Then each model: its ``config.pbtxt`` is read as
bytes (comments may hold any bytes, as for Triton's parser) and parsed with Triton's protobuf schema
(``model_config_pb2``); the platform and backend are resolved as Triton's auto-complete resolves
them; the config is checked on its own (tensors, batching, instance groups, warm-up), the version
policy against the version directories, and every version Triton would load against its model file:
input count, tensor names, data types, the batch axis against ``max_batch_size``, and every
dimension. A Python-backend model's ``model.py`` is parsed (never run) for ``TritonPythonModel`` and
its ``execute``. An ensemble is checked against the configs of the models its steps run (each config
of the repository is read once, see :class:`RepositoryIndex`). Every problem is collected; nothing
stops at the first, and nothing raises: a repository that cannot be read is reported, not crashed on.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from generator.core.accelerators import ACCELERATORS
from generator.core.accelerators import problems as accelerator_problems
from generator.core.errors import ValidationError
from generator.core.manifest import Manifest, int8_portability_warnings
from generator.core.repository import read_manifest
from generator.core.triton import parse_model_config
from generator.validate.artifacts import (
    Serving,
    check_backend_library,
    check_gpus,
    check_model_file,
    check_serving,
    check_signature,
    check_versions,
    inside,
    is_dir,
    is_regular_file,
    list_dir,
    resolve_serving,
    stat_or_none,
    version_dirs,
)
from generator.validate.autocomplete import Completed, complete_model
from generator.validate.config import Found, check_config, check_parameters
from generator.validate.ensembles import check_ensemble, format_path, is_ensemble, step_models
from generator.validate.python import check_execution_env, check_python_file
from generator.validate.schema import Server, check_schema


def plain(text: object) -> str:
    """``text`` as one printable line: undecodable bytes as ``\\xNN``, control characters escaped.

    File names and config values come from the repository, which may hold any bytes; a message built
    from them must print as it is on any terminal and in any log.
    """
    value = str(text)
    try:
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from undecodable bytes
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)


@dataclass(frozen=True)
class Problem:
    """One finding. ``severity`` is ``error`` (Triton would refuse the model), ``warning``, or ``info``
    (what Triton's auto-complete fills in).

    ``model`` and ``message`` are always printable single lines (see :func:`plain`).
    """

    model: str
    message: str
    severity: str = "error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", plain(self.model))
        object.__setattr__(self, "message", plain(self.message))

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
    def infos(self) -> list[Problem]:
        """What Triton's auto-complete fills in, which loads as it is."""
        return [p for p in self.problems if p.severity == "info"]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`ValidationError` listing every error, if there are any."""
        if self.errors:
            raise ValidationError(*(f"{p.model}: {p.message}" for p in self.errors))


def read_config(
    model_dir: Path, server: Server | None = None
) -> tuple[model_config_pb2.ModelConfig | None, Found]:
    """Read and parse ``<model_dir>/config.pbtxt`` the way Triton reads it.

    The file is read as bytes: Triton's text parser skips comments whatever bytes they hold, so they
    are decoded leniently; bytes that are not UTF-8 inside a value are an error. A field or value the
    version of ``server`` (default: the embedded one) cannot read is an error, as for its parser.

    Returns:
        The parsed config (empty when the file is missing or empty: Triton auto-completes it; None when
        it cannot be used) and what was found.
    """
    path = model_dir / "config.pbtxt"
    status = stat_or_none(path)
    if status is None:
        if path.is_symlink():
            return None, [("error", "config.pbtxt is a broken symbolic link; point it at the config file")]
        if os.path.lexists(path):
            return None, [("error", "config.pbtxt cannot be read; fix its permissions")]
        return model_config_pb2.ModelConfig(), [
            ("info", "no config.pbtxt; Triton auto-completes one from the model (add one to set batching)")
        ]
    if stat.S_ISDIR(status.st_mode):
        return None, [
            (
                "error",
                "config.pbtxt is a directory, which makes tritonserver abort; replace it with the config file",
            )
        ]
    if not stat.S_ISREG(status.st_mode):
        return None, [("error", "config.pbtxt is not a regular file; replace it with the config file")]
    if status.st_size == 0:
        return model_config_pb2.ModelConfig(), [
            ("info", "config.pbtxt is empty; Triton auto-completes it from the model (an interrupted write?)")
        ]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [("error", f"config.pbtxt cannot be read ({exc.strerror}); fix its permissions")]
    text = data.decode("utf-8", "surrogateescape")
    try:
        config = parse_model_config(text)
        return config, [("error", m) for m in check_schema(text, (server or Server()).version)]
    except text_format.ParseError as exc:
        if "utf-8" in str(exc).lower():
            return None, [
                (
                    "error",
                    f"config.pbtxt line {exc.GetLine()}: a value holds bytes that are not UTF-8; "
                    "save the file as UTF-8",
                )
            ]
        return None, [("error", f"config.pbtxt: does not parse as a Triton ModelConfig: {exc}")]


def _check_warmup_files(config: model_config_pb2.ModelConfig, model_dir: Path) -> Found:
    found: Found = []
    for warmup in config.model_warmup:
        for name, data in sorted(warmup.inputs.items()):
            if data.WhichOneof("input_data_type") != "input_data_file":
                continue
            if not is_regular_file(inside(model_dir / "warmup", data.input_data_file)):
                found.append(
                    (
                        "error",
                        f"model_warmup '{warmup.name}' input '{name}' reads warmup/{data.input_data_file}, "
                        "which is missing; add the file or use zero_data",
                    )
                )
    return found


def _check_entries(model_dir: Path) -> Found:
    """Entries Triton cannot stat make it refuse the model (it stats every one looking for versions)."""
    return [
        ("error", f"'{name}' is a broken symbolic link or cannot be read, which Triton refuses; remove it")
        for name in list_dir(model_dir)
        if name != "config.pbtxt" and stat_or_none(model_dir / name) is None  # read_config reports that one
    ]


class RepositoryIndex:
    """The models of one repository, each config read and parsed once, for the checks across models.

    Args:
        model_dirs: The model directories (``<repo>/<model>``) Triton will load.
        server: The Triton that will read them (default: the embedded one).
    """

    def __init__(self, model_dirs: list[Path], server: Server | None = None) -> None:
        self.server = server or Server()
        self._dirs = {d.name: d for d in model_dirs}
        self._read: dict[str, tuple[model_config_pb2.ModelConfig | None, Found]] = {}
        self._steps: dict[str, model_config_pb2.ModelConfig | None] | None = None
        self._versions: dict[str, list[int]] | None = None
        self._completed: dict[str, Completed] = {}

    def read(self, model_dir: Path) -> tuple[model_config_pb2.ModelConfig | None, Found]:
        """:func:`read_config` of a model, read once."""
        if model_dir.name not in self._read or self._dirs.get(model_dir.name) != model_dir:
            self._read[model_dir.name] = read_config(model_dir, self.server)
        return self._read[model_dir.name]

    def complete(self, model_dir: Path, config: model_config_pb2.ModelConfig) -> Completed:
        """:func:`complete_model` of a model's config, run once (a Python model's runs in a child)."""
        if model_dir.name not in self._completed or self._dirs.get(model_dir.name) != model_dir:
            self._completed[model_dir.name] = complete_model(config, model_dir, version_dirs(model_dir)[0])
        return self._completed[model_dir.name]

    def configs(self) -> dict[str, model_config_pb2.ModelConfig | None]:
        """Model name -> its parsed config (None when it has none or it cannot be used)."""
        return {name: self.read(path)[0] for name, path in self._dirs.items()}

    def step_configs(self) -> dict[str, model_config_pb2.ModelConfig | None]:
        """Model name -> its config as an ensemble step sees it, None where Triton completes its I/O."""
        if self._steps is None:
            self._steps = {name: self._as_step(name, config) for name, config in self.configs().items()}
        return self._steps

    def served_versions(self) -> dict[str, list[int]]:
        """Model name -> the versions Triton will load (the latest one for a model without a config)."""
        if self._versions is None:
            self._versions = {}
            for name, path in self._dirs.items():
                versions, _ = version_dirs(path)
                config = self.read(path)[0]
                if config is None:
                    self._versions[name] = [max(versions)] if versions else []
                else:
                    self._versions[name] = check_versions(config, versions, name)[0]
        return self._versions

    def _as_step(
        self, name: str, config: model_config_pb2.ModelConfig | None
    ) -> model_config_pb2.ModelConfig | None:
        """The config Triton loads after its auto-complete; None where that is not known here."""
        if config is None or is_ensemble(config):
            return config
        completed = self.complete(self._dirs[name], config)
        return completed.config if completed.known and not completed.refused else None


def _check_ensemble(config: model_config_pb2.ModelConfig, name: str, index: RepositoryIndex | None) -> Found:
    if index is None:
        return []
    findings = check_ensemble(
        config,
        index.step_configs(),
        versions={k: set(v) for k, v in index.served_versions().items()},
        name=name,
    )
    return [(f.severity, f"{format_path(f.path)}: {f.message}") for f in findings]


def _check_version(config: model_config_pb2.ModelConfig, serving: Serving, version: Path) -> Found:
    """One version Triton will load: the files it reads and their signature."""
    found: Found = []
    for cc, cc_file in config.cc_model_filenames.items():
        if stat_or_none(inside(version, cc_file)) is None:
            found.append(
                (
                    "error",
                    f"version {version.name} has no {cc_file} (cc_model_filenames '{cc}'); rebuild the plans",
                )
            )
    path, notes = check_model_file(serving, version)
    found += notes
    if path is None:
        return found
    label = f"{version.name}/{serving.filename}"
    if serving.backend == "python":
        return found + check_python_file(path, label).found
    return found + check_signature(config, serving, path, label)


def _validate_model(model_dir: Path, index: RepositoryIndex | None, server: Server) -> Found:
    name = model_dir.name
    found = _check_entries(model_dir)
    versions, notes = version_dirs(model_dir)
    found += notes
    config, notes = index.read(model_dir) if index is not None else read_config(model_dir, server)
    found += notes
    if config is None:
        if not versions:
            found.append(("error", f"no version directory; put the model file in {name}/1/"))
        return found
    completed = (
        index.complete(model_dir, config)
        if index is not None
        else complete_model(config, model_dir, versions)
    )
    found += completed.found
    if completed.refused:
        return found
    config = completed.config
    found += check_config(config, name, model_dir)
    subdirs = [n for n in list_dir(model_dir) if is_dir(model_dir / n)]
    serving = resolve_serving(config, model_dir / subdirs[0] if subdirs else None)
    found += check_serving(config, serving)
    if serving.platform == "ensemble" or is_ensemble(config):
        if not versions:
            found.append(
                (
                    "error",
                    f"no version directory, which Triton refuses for an ensemble too; add an empty {name}/1/",
                )
            )
        return found + _check_ensemble(config, name, index)
    selected, notes = check_versions(config, versions, name)
    found += notes
    found += _check_warmup_files(config, model_dir)
    for number in selected:
        found += _check_version(completed.versions.get(number, config), serving, versions[number])
    if serving.backend == "python":
        found += check_execution_env(config, model_dir)
    if serving.platform == "pytorch_libtorch":
        for tensor in config.output:  # inputs may also be named after forward()'s arguments
            if not re.search(r"__\d+$", tensor.name):
                found.append(
                    (
                        "warning",
                        f"output '{tensor.name}' does not follow the PyTorch backend's NAME__index naming",
                    )
                )
    found += check_parameters(config, serving.backend)
    libraries = (check_backend_library(config, serving, model_dir, versions[n], server) for n in selected)
    found += list(dict.fromkeys(f for notes in libraries for f in notes))
    return found + _check_accelerators(config) + check_gpus(config, server) + _check_response_cache(config)


def validate_model_dir(
    model_dir: Path, index: RepositoryIndex | None = None, server: Server | None = None
) -> list[Problem]:
    """Validate one model directory (``<repo>/<model>``) and every version Triton would load from it.

    Never raises: a check that fails unexpectedly is reported as an error of the model.

    Args:
        model_dir: The model directory.
        index: The repository's models; with it an ensemble is also checked against its steps'
            configs (:func:`validate_repository` passes one; the build checks its ensembles itself).
        server: The Triton that will serve it (default: the embedded one's version, on a machine not
            known, so GPU findings are warnings): its version's schema, its GPUs, its backends.
    """
    name = model_dir.name
    try:
        found = _validate_model(model_dir, index, server or (index.server if index is not None else Server()))
    except Exception as exc:  # a hostile repository must give a report, never a traceback
        found = [
            ("error", f"could not be checked ({type(exc).__name__}: {exc}); fix what it names and rerun")
        ]
    return [Problem(name, message, severity) for severity, message in found]


def _check_accelerators(config: model_config_pb2.ModelConfig) -> list[tuple[str, str]]:
    accelerators = config.optimization.execution_accelerators
    entries = [("gpu", a) for a in accelerators.gpu_execution_accelerator]
    entries += [("cpu", a) for a in accelerators.cpu_execution_accelerator]
    found: list[tuple[str, str]] = []
    onnxruntime = config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime"
    if entries and not onnxruntime and (config.platform or config.backend):
        # Other backends ignore them (Triton loads a Python model naming any accelerator): no error.
        return [("warning", "execution_accelerators are read by the ONNX Runtime backend only")]
    for where, accelerator in entries:
        found += [("error", m) for m in accelerator_problems(accelerator.name, dict(accelerator.parameters))]
        field, _ = ACCELERATORS.get(accelerator.name, (None, None))
        if field and not field.startswith(where):
            found.append(("error", f"accelerator '{accelerator.name}' belongs in {field}"))
    cpu_only = all(g.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
    if accelerators.gpu_execution_accelerator and config.instance_group and cpu_only:
        found.append(("warning", "GPU execution accelerators have no effect on KIND_CPU instances"))
    return found


def _check_response_cache(config: model_config_pb2.ModelConfig) -> list[tuple[str, str]]:
    """Warn that Triton caches failed responses too (an empty success, keyed on the input bytes)."""
    if not config.response_cache.enable:
        return []
    return [
        (
            "warning",
            "response_cache is on: Triton 2.51 caches a failed response too, as a success without outputs "
            "keyed on the input bytes, so after one failed request (a malformed one, a backend that died) "
            "every request with the same bytes gets no outputs; turn it off unless that cannot happen "
            "(the embedded serve runs without the cache)",
        )
    ]


def _check_root(repo: Path) -> tuple[list[Path], list[Problem]]:
    """The directories Triton will load as models, and the root entries it would refuse.

    Triton stats every entry of the root and loads every directory as a model, hidden ones included;
    plain files it ignores.
    """
    models: list[Path] = []
    problems: list[Problem] = []
    try:
        names = sorted(os.listdir(repo))
    except OSError as exc:
        return [], [
            Problem(repo.name, f"the repository cannot be listed ({exc.strerror}); fix its permissions")
        ]
    for name in names:
        path = repo / name
        status = stat_or_none(path)
        if status is None:
            problems.append(
                Problem(
                    name,
                    "is a broken symbolic link or cannot be read in the repository root, which makes Triton "
                    "refuse the whole repository; remove it",
                )
            )
        elif not stat.S_ISDIR(status.st_mode):
            continue
        elif not os.path.lexists(path / "config.pbtxt") and not version_dirs(path)[0]:
            hidden = " (a hidden directory)" if name.startswith(".") else ""
            problems.append(
                Problem(
                    name,
                    f"is not a model{hidden}: no config.pbtxt, no version directory; Triton tries to load every "
                    "directory in the repository root as a model, so move it out of the repository",
                )
            )
        else:
            models.append(path)
    return models, problems


def _failing_steps(index: RepositoryIndex, problems: list[Problem]) -> list[Problem]:
    """An ensemble whose step model has errors cannot serve either: say so at the step."""
    failing = {p.model for p in problems if p.severity == "error"}
    ensembles = {
        name: config for name, config in index.configs().items() if config is not None and is_ensemble(config)
    }
    added: list[Problem] = []
    changed = True
    while changed:  # an ensemble refused for its step makes an ensemble over it refused, and so on
        changed = False
        for name, config in ensembles.items():
            if plain(name) in failing:
                continue
            for step_name in step_models(config):
                if plain(step_name) in failing and step_name != name:
                    position = next(
                        i for i, s in enumerate(config.ensemble_scheduling.step) if s.model_name == step_name
                    )
                    path = format_path(("ensemble_scheduling", "step", position, "model_name"))
                    added.append(
                        Problem(
                            name,
                            f"{path}: model '{step_name}' has errors (reported for it), so this ensemble cannot "
                            "serve either; fix them",
                        )
                    )
                    failing.add(plain(name))
                    changed = True
                    break
    return added


def validate_repository(path: str | Path, server: Server | None = None) -> ValidationReport:
    """Validate every model in a repository; hand-written repositories too.

    Problems are reported, never raised, however the repository is broken.

    Args:
        path: The repository.
        server: The Triton that will serve it (see :func:`validate_model_dir`); ``serve`` and the
            ``validate`` command pass :meth:`Server.this_machine`.

    Raises:
        ValidationError: ``path`` is not a directory.
    """
    repo = Path(path)
    if not repo.is_dir():
        raise ValidationError(f"'{plain(repo)}' is not a directory; pass the model repository to validate")
    report = ValidationReport(repo)
    model_dirs, report.problems = _check_root(repo)
    index = RepositoryIndex(model_dirs, server)
    for model_dir in model_dirs:
        report.models.append(plain(model_dir.name))
        report.problems += validate_model_dir(model_dir, index)
    report.problems += _failing_steps(index, report.problems)
    for model, message in int8_portability_warnings(Manifest.from_dict(read_manifest(repo))):
        report.problems.append(Problem(model, message, "warning"))  # INT8 gated on another kind of CPU
    if not report.models:
        report.problems.append(Problem(repo.name, "the repository holds no model directory", "error"))
    return report
