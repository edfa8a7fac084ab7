"""The build pipeline: for each model, export -> verify -> optimize -> configure -> validate; then write
atomically.

This is the one module that calls the steps in order. A model whose source, spec and libraries are
unchanged since the last build (same cache key in the manifest, same file hashes, and the same files
its last export imported or read from the spec's directory) is reused from the existing repository
instead of being exported and verified again. A source that runs user code (a factory, a pickled
module, a Keras file) is exported in a separate process (:mod:`generator.build.worker`), so a factory that
exits or crashes fails its model, not the build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonclient.grpc import model_config_pb2

from generator import __version__
from generator.build.config import DeviceProfile, build_config, check_rendered, render
from generator.build.exporters import exporter_for
from generator.build.exporters.base import ExportContext, ExportResult
from generator.build.exporters.python import FACTORY_SETTINGS, extra_files, make_step_file, step_factory
from generator.build.optimize import optimize_model
from generator.build.parity import check_parity
from generator.build.pipelines import ensemble_config, ensemble_order, label_files, resolve_model, spec_path
from generator.build.sample_data import sample_file_hashes, step_samples, write_sample_data
from generator.build.sequence import sequence_parity, write_initial_states
from generator.build.worker import ExportWorker
from generator.core import cpu_isa
from generator.core.errors import GeneratorError, SpecError
from generator.core.manifest import Manifest, ModelEntry, VersionEntry
from generator.core.repository import (
    MANIFEST,
    Staging,
    link_or_copy_tree,
    read_manifest,
    sha256_file,
    write_json,
)
from generator.core.signature import Signature
from generator.core.templating import environment
from generator.core.triton import ENSEMBLE_PLATFORM, parse_model_config, resolve_max_batch_size
from generator.spec.huggingface import expansion_summary
from generator.spec.models import EnsembleSpec, ModelSpec, Spec, Verify, factory_parts
from generator.spec.tuned import TunedEntry, TunedInfo, load_spec_with_tuned
from generator.validate.ensembles import check_ensemble
from generator.validate.run import validate_model_dir

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

LIBRARIES = (
    "torch",
    "tensorflow-cpu",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "onnxslim",
    "numpy",
    "tritonclient",
)
#: Called with (model name, stage) as a build goes, e.g. ("digits", "export"); the CLI shows it.
StageCallback = Callable[[str, str], None]


@dataclass(kw_only=True)
class ModelBuild:
    """What the build did for one model version."""

    name: str
    version: int
    status: str  # "exported" or "reused"
    platform: str
    files: list[str]
    signature: Signature
    parity: dict[str, Any] | None
    seconds: float
    max_batch_size: int = 0
    #: Optimization passes whose output is served (empty when none ran or all were rejected).
    optimized: list[str] = field(default_factory=list)


@dataclass
class BuildReport:
    """The outcome of :func:`build`.

    Attributes:
        tuned: Model name -> the tuned settings entry merged into its spec entry.
        tuned_file: The tuned settings file they came from (``None`` when no model got any).
    """

    repository: Path
    spec: Path | None
    models: list[ModelBuild] = field(default_factory=list)
    #: One line per ``framework: huggingface`` entry: what it expanded into.
    pipelines: list[str] = field(default_factory=list)
    carried_over: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tuned: dict[str, TunedEntry] = field(default_factory=dict)
    tuned_file: Path | None = None


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape an export (read from metadata, nothing imported)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_files(model: ModelSpec, source: Path) -> list[Path]:
    """Files whose content determines an export.

    A model file (with any ONNX external-data files), or a factory module plus the files beside it
    that the module names (its weights, say): editing the spec next to it does not count. What the
    export turns out to import or read besides (helper modules) is recorded after it runs, as the
    manifest entry's ``user_files``, and checked by the reuse test.
    """
    if factory_parts(model.source) is None:
        if source.is_dir():  # a SavedModel directory: every file in it
            return sorted(p for p in source.rglob("*") if p.is_file())
        from generator.build.exporters.onnx import external_data_files

        files = [source]
        if source.suffix == ".onnx":
            with contextlib.suppress(Exception):  # an unreadable file: the exporter reports it
                files += [source.parent / loc for loc in external_data_files(source)]
        return files
    text = source.read_text(encoding="utf-8", errors="replace")
    named = [p for p in source.parent.iterdir() if p.is_file() and p != source and p.name in text]
    return [source, *sorted(named)]


def python_files(model: ModelSpec, context: ExportContext) -> dict[str, Path]:
    """The files a Python model's version directory gets beside its model file, by their path there
    (every file of a listed directory), for the cache key: a file a step factory made at build time
    counts by its content, wherever it was made."""
    if model.builtin is not None:
        from generator.steps import step_definition

        definition = step_definition(model.builtin, context.step_settings(model), context.spec_dir)
        listed = dict(definition.version_files)
    else:
        listed = extra_files(model, context.spec_dir)
    found = {}
    for name, path in sorted(listed.items()):
        if path.is_dir():
            found.update({f"{name}/{p.relative_to(path)}": p for p in sorted(path.rglob("*")) if p.is_file()})
        else:
            found[name] = path
    return found


def _source_hashes(model: ModelSpec, source: Path, context: ExportContext) -> dict[str, str]:
    if model.framework == "python":  # the model file, then its files by their path from the spec's directory
        hashes = {"model.py": sha256_file(source)}
        hashes.update({name: sha256_file(path) for name, path in python_files(model, context).items()})
        return hashes
    return {str(p.relative_to(source.parent)): sha256_file(p) for p in source_files(model, source)}


def cache_key(model: ModelSpec, source: Path, libraries: dict[str, str], context: ExportContext) -> str:
    """A hash of everything that shapes this model's exported artifact and its parity check."""
    fields = {
        "name",
        "framework",
        "source",
        "version",
        "inputs",
        "outputs",
        "max_batch_size",
        "opset",
        "verify",
        "optimize",
        "step",
        "files",
        "shapes",
        "values",
        "sequence_batching",
    }
    export_fields = model.model_dump(include=fields | {"format", "tensorrt", "dynamic_batching"})
    if model.target == "tensorrt":  # a plan is built for the GPUs at hand
        export_fields["gpus"] = [gpu.cc for gpu in context.gpus]
    payload = {
        "tool": __version__,
        "model": export_fields,
        "files": _source_hashes(model, source, context),
        "libraries": libraries,
    }
    if model.sequence_batching:  # initial-state files start the whole-sequence parity check
        files = [
            s.initial_state.data_file
            for s in model.sequence_batching.state or []
            if s.initial_state.data_file
        ]
        payload["initial_states"] = _spec_file_hashes(files, context.spec_dir)
    if model.optimize:  # its calibration / evaluation samples shape what the optimize step ships
        samples = [n for n in (model.optimize.calibration_data, model.optimize.eval_data) if n]
        payload["optimize_data"] = _spec_file_hashes(samples, context.spec_dir)
        if model.optimize.quantize != "none":  # INT8 is quantized and gated for the CPU's class
            payload["int8_cpu"] = cpu_isa.detect().int8_class
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _spec_file_hashes(names: list[Any], spec_dir: Path) -> dict[Any, str]:
    """The SHA-256 of each file a setting names relative to the spec's directory (``missing`` for one that
    is not there), by the name as written."""
    paths = {name: spec_dir / name for name in names}
    return {name: sha256_file(path) if path.is_file() else "missing" for name, path in paths.items()}


def _reusable(entry: VersionEntry, key: str, old_version_dir: Path, spec_dir: Path) -> bool:
    """Whether an old manifest entry still describes this model: same key, its files intact, and every
    file its export imported or read from the user's directories (``user_files``) unchanged."""
    if entry.cache_key != key or not old_version_dir.is_dir():
        return False
    if entry.user_files is None and factory_parts(entry.source or "") is not None:
        return False  # built before imports were recorded: its helper modules are unknown
    for rel, digest in (entry.user_files or {}).items():
        path = spec_dir / rel
        if not path.is_file() or sha256_file(path) != digest:
            return False
    files = entry.files
    return bool(files) and all(
        (old_version_dir / rel).is_file() and sha256_file(old_version_dir / rel) == digest
        for rel, digest in files.items()
    )


def _export_step(
    model: ModelSpec,
    source: Path,
    version_dir: Path,
    context: ExportContext,
    *,
    progress: Callable[[str], None],
) -> tuple[ExportResult, dict | None, dict | None]:
    """Export, verify and optimize one model; what it returns can cross a process boundary."""
    progress("export")
    result = exporter_for(model, context).export(model, source, version_dir)
    settings = model.verify or Verify()
    parity = None
    if settings.enabled and model.target != "python":  # a Python model has no source framework to match
        progress("verify")
        max_batch_size = resolve_max_batch_size(model, result.signature)
        report = check_parity(model, result, max_batch_size, settings)
        parity = report.to_dict()
        if model.sequence_batching and model.sequence_batching.state:  # the states chained over a sequence
            sequence = sequence_parity(model, result, max_batch_size, settings, context.spec_dir)
            parity["sequence"] = sequence.to_dict()
    optimized = None
    if model.target == "onnx" and model.optimize and model.optimize.passes:
        progress("optimize")
        max_batch_size = resolve_max_batch_size(model, result.signature)
        optimized = optimize_model(model, result, max_batch_size, context.spec_dir)
    # Plain data only, so the build's process need not import a framework to read it (torch's version
    # string is a torch type): the source model and its runners stay where they ran.
    result.reference = result.runner = None
    result.details = json.loads(json.dumps(result.details, default=str))
    return result, parity, optimized.to_dict() if optimized else None


def _export(
    model: ModelSpec,
    source: Path,
    version_dir: Path,
    progress: StageCallback,
    context: ExportContext,
    worker: ExportWorker,
) -> tuple[ExportResult, dict | None, dict | None, dict[str, str] | None]:
    """Export one model; a source that runs user code (anything but an ONNX file) runs in ``worker``.

    Returns:
        The result, parity and optimize reports, and the user files the export imported or read
        (paths relative to the spec's directory -> sha256; ``None`` for an ONNX source).
    """

    def stage(name: str) -> None:
        progress(model.name, name)

    if model.framework == "onnx":
        return (*_export_step(model, source, version_dir, context, progress=stage), None)
    spec_dir = context.spec_dir.resolve()
    outcome = worker.run(
        f"model '{model.name}'",
        _export_step,
        (model, source, version_dir, context),
        roots=list(dict.fromkeys([spec_dir, source.parent])),
        exclude=[version_dir.parent.parent],
        progress=stage,
    )
    user_files = {os.path.relpath(path, spec_dir): sha256_file(Path(path)) for path in outcome.user_files}
    return (*outcome.value, user_files)


@dataclass
class _BuildRun:
    """What one call of :func:`build` shares across its models, and what it collects from them."""

    spec: Spec
    spec_name: str
    repo: Path
    staging: Staging
    worker: ExportWorker
    context: ExportContext
    profile: DeviceProfile
    env: jinja2.Environment
    libraries: dict[str, str]
    previous: Manifest
    tuned: TunedInfo
    progress: StageCallback
    report: BuildReport
    failures: list[GeneratorError] = field(default_factory=list)


@dataclass
class _VersionBuilt:
    """One model version in the staging repository: its spec, manifest entry and build record."""

    model: ModelSpec
    entry: VersionEntry
    record: ModelBuild


def _reuse_version(run: _BuildRun, model: ModelSpec, key: str, version_dir: Path) -> VersionEntry | None:
    """Link an unchanged version from the existing repository into staging.

    Returns:
        The previous build's entry, or ``None`` when the version must be built again.
    """
    old_dir = run.repo / model.name / str(model.version)
    entry = run.previous.version(model.name, model.version)
    if entry is None or not _reusable(entry, key, old_dir, run.context.spec_dir):
        return None
    run.progress(model.name, "reuse")
    link_or_copy_tree(old_dir, version_dir)
    return entry


def _export_version(
    run: _BuildRun, model: ModelSpec, source: Path, key: str, version_dir: Path
) -> VersionEntry:
    """Export, verify and optimize one version into staging; its manifest entry."""
    result, parity, optimized, user_files = _export(
        model, source, version_dir, run.progress, run.context, run.worker
    )
    return VersionEntry(
        model_file=result.model_file.name,
        cc_model_filenames=result.cc_model_filenames,
        cache_key=key,
        framework=model.framework,
        source=model.source,
        source_files=_source_hashes(model, source, run.context),
        user_files=user_files,
        platform=result.platform,
        files={str(p.relative_to(version_dir)): sha256_file(p) for p in result.files},
        signature=result.signature,
        parity=parity,
        optimize=optimized,
        details=result.details,
    )


def _build_version(run: _BuildRun, model: ModelSpec) -> _VersionBuilt:
    """Reuse or export one model version.

    Raises:
        GeneratorError: the source cannot be resolved, or its export, parity or optimize step failed.
    """
    started = time.perf_counter()
    version_dir = run.staging.path / model.name / str(model.version)
    source = run.spec.resolve_source(model.source)
    key = cache_key(model, source, run.libraries, run.context)
    entry = _reuse_version(run, model, key, version_dir)
    status = "reused"
    if entry is None:
        entry, status = _export_version(run, model, source, key, version_dir), "exported"
    record = ModelBuild(
        name=model.name,
        version=model.version,
        status=status,
        platform=entry.platform,
        files=sorted(entry.files),
        signature=entry.signature,
        parity=entry.parity,
        seconds=round(time.perf_counter() - started, 3),
        max_batch_size=resolve_max_batch_size(model, entry.signature),
        optimized=entry.optimized_passes,
    )
    return _VersionBuilt(model, entry, record)


def _configure_model(run: _BuildRun, latest: _VersionBuilt) -> None:
    """Render, check and write a model's config.pbtxt from its latest version's spec and artifact.

    Raises:
        GeneratorError: the config cannot be built, rendered, or does not parse back as intended.
    """
    name = latest.model.name
    config = build_config(
        latest.model,
        latest.record.signature,
        latest.record.platform,
        run.profile,
        latest.entry.model_file or latest.record.files[0],
        latest.entry.cc_model_filenames,
    )
    text = render(config, run.env, spec_name=run.spec_name)
    check_rendered(text, config, f"{name}/config.pbtxt")
    (run.staging.path / name / "config.pbtxt").write_text(text, encoding="utf-8")
    for filename, source in label_files(latest.model, run.context.spec_dir).items():
        shutil.copyfile(source, run.staging.path / name / filename)
    write_initial_states(latest.model, run.staging.path / name, run.context.spec_dir)
    write_sample_data(run.staging.path / name, config, latest.model, latest.entry.details)


def _validate_staged(run: _BuildRun, name: str) -> None:
    """Check a staged model as Triton would load it: errors fail the build, warnings are reported (what
    Triton's auto-complete fills in is not: a built config leaves nothing to fill)."""
    for problem in validate_model_dir(run.staging.path / name):
        if problem.severity == "error":
            run.failures.append(GeneratorError(f"{problem.model}: {problem.message}"))
        elif problem.severity == "warning":
            run.report.warnings.append(f"{problem.model}: {problem.message}")


def _build_model(run: _BuildRun, name: str, versions: list[ModelSpec]) -> ModelEntry | None:
    """Build every version of one model, then its config; problems are collected in ``run``.

    Returns:
        The model's manifest entry, or ``None`` when no version or its config could be built.
    """
    built: list[_VersionBuilt] = []
    for model in sorted(versions, key=lambda m: m.version):
        try:
            version = _build_version(run, model)
        except GeneratorError as exc:
            run.failures.append(exc)
            continue
        # A pass rejected by its accuracy budget: said on every build, reused ones too.
        run.report.warnings.extend(version.entry.optimize_warnings)
        built.append(version)
        run.report.models.append(version.record)
    if not built:
        return None
    # One config per model: rendered from its latest version's spec and artifact.
    run.progress(name, "configure")
    try:
        _configure_model(run, built[-1])
    except GeneratorError as exc:
        run.failures.append(exc)
        return None
    run.progress(name, "validate")
    _validate_staged(run, name)
    return ModelEntry(
        versions={str(version.model.version): version.entry for version in built},
        config_sha256=sha256_file(run.staging.path / name / "config.pbtxt"),
        sample_files=sample_file_hashes(run.staging.path / name),
        tuned=run.tuned.record(name),
    )


def _model_dir(run: _BuildRun, name: str) -> Path | None:
    """A step model's directory: built by this run, else a hand-written model of the existing repository."""
    for directory in (run.staging.path / name, run.repo / name):
        if (directory / "config.pbtxt").is_file() and (
            directory.parent == run.staging.path or name not in run.previous.models
        ):
            return directory
    return None


def _step_config(run: _BuildRun, name: str) -> model_config_pb2.ModelConfig | None:
    """A step model's config (see :func:`_model_dir`); None where there is none or it cannot be read."""
    directory = _model_dir(run, name)
    if directory is None:
        return None
    try:
        return parse_model_config((directory / "config.pbtxt").read_text(encoding="utf-8", errors="replace"))
    except Exception:
        return None


def _known_models(run: _BuildRun) -> dict[str, model_config_pb2.ModelConfig | None]:
    """Every model a step may run: those this run staged and the hand-written ones of the repository.

    A name that is missing is no model; None is a model whose config cannot be read.
    """
    names = {path.name for path in run.staging.path.iterdir() if path.is_dir()}
    if run.repo.is_dir():
        names |= {p.name for p in run.repo.iterdir() if p.is_dir() and p.name not in run.previous.models}
    return {name: _step_config(run, name) for name in sorted(names)}


def _follows_a_missing_model(path: tuple, ensemble: EnsembleSpec, models: dict) -> bool:
    """Whether a finding is only the echo of a step naming a missing model: the ensemble inputs were derived
    from the step models, so that step's inputs are no ensemble input. The missing model is the finding."""
    if ensemble.inputs or tuple(path[:2]) != ("ensemble_scheduling", "step") or len(path) < 4:
        return False
    step = path[2]
    return path[3] == "input_map" and isinstance(step, int) and ensemble.steps[step].model not in models


def _build_ensemble(run: _BuildRun, index: int, ensemble: EnsembleSpec) -> ModelEntry | None:
    """Render an ensemble's config from its steps' configs and check every edge; problems go to ``run``.

    Returns:
        The ensemble's manifest entry, or ``None`` when it could not be built.
    """
    failed = {model.name for model in run.spec.models} - {m.name for m in run.report.models}
    if any(step.model in failed for step in ensemble.steps):
        return None  # a step model failed to build: that failure is the one to fix first
    run.progress(ensemble.name, "configure")
    models = _known_models(run)
    steps = {step.model: models[step.model] for step in ensemble.steps if step.model in models}
    config = ensemble_config(ensemble, steps)
    try:
        text = render(config, run.env, spec_name=run.spec_name)
        proto = check_rendered(text, config, f"{ensemble.name}/config.pbtxt")
    except GeneratorError as exc:
        run.failures.append(exc)
        return None
    model_dir = run.staging.path / ensemble.name
    (model_dir / str(ensemble.version)).mkdir(parents=True)  # an ensemble's version directory is empty
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    step_dirs = {step.model: _model_dir(run, step.model) for step in ensemble.steps}
    borrowed = step_samples(config, {name: path for name, path in step_dirs.items() if path is not None})
    write_sample_data(model_dir, config, borrowed=borrowed)
    run.progress(ensemble.name, "validate")
    problems = []
    for finding in check_ensemble(proto, models, name=ensemble.name):
        if _follows_a_missing_model(finding.path, ensemble, models):
            continue
        line = f"{run.spec_name}: {spec_path(index, ensemble, finding.path)}: {finding.message}"
        if finding.severity == "error":
            problems.append(line)
        else:
            run.report.warnings.append(line)
    if problems:
        run.failures.append(SpecError(*problems))
        return None
    try:
        huggingface = _pipeline_parity(run, ensemble)
    except GeneratorError as exc:
        run.failures.append(exc)
        return None
    signature = Signature.from_dict(
        {
            "inputs": [_tensor(t, proto.max_batch_size) for t in proto.input],
            "outputs": [_tensor(t, proto.max_batch_size) for t in proto.output],
        }
    )
    entry = VersionEntry(cache_key="", platform=ENSEMBLE_PLATFORM, files={}, signature=signature)
    run.report.models.append(
        ModelBuild(
            name=ensemble.name,
            version=ensemble.version,
            status="configured",
            platform=ENSEMBLE_PLATFORM,
            files=[],
            signature=signature,
            parity={"compared": True, **huggingface["parity"]} if huggingface else None,
            seconds=0.0,
            max_batch_size=proto.max_batch_size,
        )
    )
    return ModelEntry(
        versions={str(ensemble.version): entry},
        config_sha256=sha256_file(model_dir / "config.pbtxt"),
        sample_files=sample_file_hashes(model_dir),
        huggingface=huggingface,
    )


def _pipeline_parity(run: _BuildRun, ensemble: EnsembleSpec) -> dict[str, Any] | None:
    """For the ensemble of a huggingface entry: its record with the end-to-end parity against the
    reference library, measured now, or kept from the previous build when none of its steps changed.

    Raises:
        VerificationError: past the budget.
    """
    record = run.spec.huggingface.get(ensemble.name)
    if record is None:
        return None
    steps = {step.model for step in ensemble.steps}
    rebuilt = [m for m in run.report.models if m.name in steps and m.status != "reused"]
    previous = run.previous.models.get(ensemble.name)
    kept = previous.huggingface if previous is not None else None
    same = kept is not None and {k: v for k, v in kept.items() if k != "parity"} == record
    if not rebuilt and same and isinstance(kept.get("parity"), dict):
        return dict(kept)
    run.progress(ensemble.name, "pipeline parity")
    from generator.build.hf_parity import pipeline_parity

    figures = pipeline_parity(run.staging.path, ensemble.name, record, run.spec.base_dir)
    return {**record, "parity": figures}


def _tensor(tensor: Any, max_batch_size: int) -> dict[str, Any]:
    dims = [-1, *tensor.dims] if max_batch_size > 0 else list(tensor.dims)
    dtype = model_config_pb2.DataType.Name(tensor.data_type).removeprefix("TYPE_")
    return {"name": tensor.name, "dtype": dtype, "shape": dims}


def _make_step_files(run: _BuildRun, scratch: Path) -> dict[str, dict[str, str]]:
    """Run the factories built-in steps name in their settings (in the worker); the files they made.

    Returns:
        Model name -> {setting: path of the file made}; a factory that fails is a failure in ``run``.
    """
    made: dict[str, dict[str, str]] = {}
    for model in run.spec.models:
        found = step_factory(model)
        if found is None or model.name in made:
            continue
        setting, (module, _) = found
        _, filename = FACTORY_SETTINGS[model.builtin or ""]
        try:
            source = run.spec.resolve_source(module)
            outcome = run.worker.run(
                f"model '{model.name}'",
                make_step_file,
                (model, source, scratch / model.name / filename),
                roots=[run.context.spec_dir.resolve()],
                exclude=[scratch],
                progress=lambda stage, name=model.name: run.progress(name, stage),
            )
        except GeneratorError as exc:
            run.failures.append(exc)
            continue
        made[model.name] = {setting: outcome.value}
    return made


def _resolved(run: _BuildRun) -> dict[str, list[ModelSpec]]:
    """The spec's models by name, built-in steps' I/O filled in; entries that cannot be are failures."""
    by_name: dict[str, list[ModelSpec]] = {}
    for index, model in enumerate(run.spec.models):
        if model.builtin is not None and model.name not in run.context.step_files and step_factory(model):
            continue  # its factory failed: already reported
        try:
            settings = run.context.step_settings(model)
            resolved = resolve_model(model, run.context.spec_dir, run.spec.where(index), settings)
        except GeneratorError as exc:
            run.failures.append(exc)
            continue
        by_name.setdefault(model.name, []).append(resolved)
    return by_name


def _raise_failures(failures: list[GeneratorError]) -> None:
    """Raise every collected problem as one error of the first one's type (nothing when none)."""
    if failures:
        problems = [line for failure in failures for line in failure.problems]
        raise type(failures[0])(*problems)


def _write_manifest(run: _BuildRun, models: dict[str, ModelEntry]) -> None:
    """Write the staging repository's manifest."""
    manifest = Manifest(
        tool_version=__version__,
        device={"kind": run.profile.kind, "gpus": list(run.profile.gpus) if run.profile.gpus else None},
        libraries=run.libraries,
        models=models,
    )
    write_json(run.staging.path / MANIFEST, manifest.to_dict())


def build(
    spec_path: str | Path | None = None,
    output: str | Path | None = None,
    device: str = "cpu",
    gpus: str | None = None,
    templates: str | Path | None = None,
    progress: StageCallback | None = None,
    spec: Spec | None = None,
    *,
    use_tuned: bool = True,
    tuned: TunedInfo | None = None,
) -> BuildReport:
    """Build the model repository a spec describes.

    Args:
        spec_path: The YAML spec (default: ``generator.yaml`` here, else the bundled example).
        output: Repository directory; default: the spec's ``repository``.
        device: ``cpu`` (KIND_CPU), ``gpu`` (KIND_GPU) or ``auto`` (KIND_AUTO) instance groups.
        gpus: Comma-separated GPU ids for ``--device gpu`` (default: every GPU Triton sees).
        templates: A directory of the user's own Jinja templates (built-in ones fill the gaps).
        progress: Called with (model name, stage) as the build goes.
        spec: An already loaded spec, used as it is (then ``spec_path`` only labels it, and no tuned
            settings file is read).
        use_tuned: Merge the tuned settings beside the spec (``generator.tuned.yaml`` for
            ``generator.yaml``) over its models; ``False``: build from the spec alone.
        tuned: With ``spec``: the tuned settings it was loaded with (from
            :func:`generator.spec.tuned.load_spec_with_tuned`), for the report and the manifest.

    Raises:
        GeneratorError: any export, parity, config or validation problem; every model is tried
            and all problems are reported together. The existing repository is left as it was.
    """
    started = time.perf_counter()
    if spec is None:
        spec, tuned = load_spec_with_tuned(spec_path, use_tuned)
    tuned = tuned or TunedInfo()
    profile = DeviceProfile.parse(device, gpus)
    context = ExportContext(spec.base_dir, profile.detected, profile.gpus)
    env = environment(Path(templates) if templates else None)
    repo = Path(output) if output is not None else Path(spec.repository)
    libraries = library_versions()
    report = BuildReport(repo, Path(spec_path) if spec_path else None, warnings=list(tuned.warnings))
    report.pipelines = [expansion_summary(name, record) for name, record in spec.huggingface.items()]
    if tuned.applied:
        report.tuned, report.tuned_file = dict(tuned.applied), tuned.path
    order = ensemble_order(spec)
    with (
        Staging(repo, protect=(Path.cwd(), spec.base_dir)) as staging,
        ExportWorker() as worker,
        tempfile.TemporaryDirectory(prefix="tritongen-steps-") as scratch,
    ):
        run = _BuildRun(
            spec=spec,
            spec_name=Path(spec_path).name if spec_path else "spec",
            repo=repo,
            staging=staging,
            worker=worker,
            context=context,
            profile=profile,
            env=env,
            libraries=libraries,
            # Read under the output's lock: no other build changes it until this one has swapped.
            previous=Manifest.from_dict(read_manifest(repo)),
            tuned=tuned,
            progress=progress or (lambda name, stage: None),
            report=report,
        )
        run.context = replace(context, step_files=_make_step_files(run, Path(scratch)))
        models = {}
        for name, versions in _resolved(run).items():
            entry = _build_model(run, name, versions)
            if entry is not None:
                models[name] = entry
        for index, ensemble in order:
            entry = _build_ensemble(run, index, ensemble)
            if entry is not None:
                models[ensemble.name] = entry
        _raise_failures(run.failures)
        report.carried_over = staging.carry_over(set(models), set(run.previous.models))
        _write_manifest(run, models)
        run.progress("", "write")
        staging.commit()
    report.seconds = round(time.perf_counter() - started, 3)
    return report
