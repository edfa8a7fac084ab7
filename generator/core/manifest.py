"""The build manifest as typed records: what a build wrote for each model version, and why.

The manifest (``tritongen-manifest.json`` at the repository's root) is JSON that tests and users read;
these records write exactly its keys. Reading is tolerant: a missing key takes its default, a manifest
written before ``user_files`` (or a model's ``tuned`` settings) was recorded reads with it set to
``None``, a version entry that cannot be read is left out (that version is built again), and an
unreadable manifest reads as an empty one.

An INT8 model's optimize record names the CPU class its accuracy gate ran on and the scheme it kept;
:func:`int8_portability_warnings` says which of them may lose that accuracy on this machine's CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from generator.core import cpu_isa
from generator.core.cpu_isa import CpuIsa, portability_warning
from generator.core.signature import Signature

TOOL = "tritongen"


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


@dataclass(kw_only=True)
class VersionEntry:
    """One built model version.

    Attributes:
        cache_key: Hash of everything that shaped the export (see ``build.cache_key``).
        platform: Triton platform of the artifact (``onnxruntime_onnx``).
        files: Files of the version directory (relative path -> sha256).
        signature: I/O read back from the artifact.
        model_file: Name of the file Triton loads; ``None`` in entries that predate it.
        cc_model_filenames: TensorRT plans per compute capability, for ``cc_model_filenames``.
        framework: The spec's framework.
        source: The spec's source (a path, or a factory ``module.py:function``).
        source_files: The source's files (path relative to the source's directory -> sha256).
        user_files: Files the export imported or read from the user's directories (relative to the
            spec's directory -> sha256); ``None`` when not recorded (an ONNX source, or an older build).
        parity: The parity report (``None`` when verification was off).
        optimize: The optimize report (``None`` when no pass ran).
        details: The exporter's facts (opset, framework version, export time).
    """

    cache_key: str
    platform: str
    files: dict[str, str]
    signature: Signature
    model_file: str | None = None
    cc_model_filenames: dict[str, str] | None = None
    framework: str | None = None
    source: str | None = None
    source_files: dict[str, str] = field(default_factory=dict)
    user_files: dict[str, str] | None = None
    parity: dict[str, Any] | None = None
    optimize: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def optimize_warnings(self) -> list[str]:
        """Passes the optimize step rejected (by their accuracy budget), one line each."""
        return list(_mapping(self.optimize).get("warnings", []))

    @property
    def optimized_passes(self) -> list[str]:
        """Names of the optimization passes whose output is served."""
        return list(_mapping(self.optimize).get("kept", []))

    @property
    def int8_pass(self) -> dict[str, Any] | None:
        """The served INT8 pass's record (its ``scheme`` and ``isa`` when recorded), or ``None``."""
        if not any(str(name).startswith("quantize") for name in self.optimized_passes):
            return None
        passes = _mapping(self.optimize).get("passes")
        for record in passes if isinstance(passes, list) else []:
            if (
                isinstance(record, dict)
                and record.get("kept")
                and str(record.get("name")).startswith("quantize")
            ):
                return record
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The entry as the manifest's JSON object."""
        return {
            "cache_key": self.cache_key,
            "platform": self.platform,
            "files": self.files,
            "signature": self.signature.to_dict(),
            "model_file": self.model_file,
            "cc_model_filenames": self.cc_model_filenames,
            "framework": self.framework,
            "source": self.source,
            "source_files": self.source_files,
            "user_files": self.user_files,
            "parity": self.parity,
            "optimize": self.optimize,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: Any) -> VersionEntry | None:
        """Read an entry written by any earlier build.

        Returns:
            The entry, or ``None`` when it is not an object or its signature cannot be read.
        """
        if not isinstance(data, dict):
            return None
        try:
            signature = Signature.from_dict(data["signature"])
        except (KeyError, TypeError, ValueError):
            return None
        return cls(
            cache_key=str(data.get("cache_key", "")),
            platform=str(data.get("platform", "")),
            files=_mapping(data.get("files")),
            signature=signature,
            model_file=data.get("model_file"),
            cc_model_filenames=data.get("cc_model_filenames"),
            framework=data.get("framework"),
            source=data.get("source"),
            source_files=_mapping(data.get("source_files")),
            user_files=data.get("user_files"),
            parity=data.get("parity"),
            optimize=data.get("optimize"),
            details=_mapping(data.get("details")),
        )


@dataclass(kw_only=True)
class ModelEntry:
    """One built model: its versions and the config written for them.

    Attributes:
        versions: Version number (as text, ``"1"``) -> its entry.
        config_sha256: Hash of the model's ``config.pbtxt``.
        sample_files: The sample inputs written beside the config (``perf_analyzer_data.json``,
            ``warmup/...``): relative path -> sha256.
        tuned: The tuned settings merged into the model's spec entry (``{"file", "trial",
            "settings"}``), or ``None`` when it was built from the spec alone (or before this was recorded).
        huggingface: For the ensemble of a ``framework: huggingface`` entry: what the entry expanded into
            (task, source, parts) and the end-to-end parity measured (``parity``); else ``None``.
    """

    versions: dict[str, VersionEntry] = field(default_factory=dict)
    config_sha256: str | None = None
    sample_files: dict[str, str] = field(default_factory=dict)
    tuned: dict[str, Any] | None = None
    huggingface: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The model as the manifest's JSON object."""
        return {
            "versions": {version: entry.to_dict() for version, entry in self.versions.items()},
            "config_sha256": self.config_sha256,
            "sample_files": self.sample_files,
            "tuned": self.tuned,
            **({"huggingface": self.huggingface} if self.huggingface is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelEntry:
        """Read a model written by any earlier build; unreadable versions are left out."""
        data = _mapping(data)
        versions = {}
        for version, raw in _mapping(data.get("versions")).items():
            entry = VersionEntry.from_dict(raw)
            if entry is not None:
                versions[str(version)] = entry
        tuned = data.get("tuned")
        huggingface = data.get("huggingface")
        return cls(
            versions=versions,
            config_sha256=data.get("config_sha256"),
            sample_files=_mapping(data.get("sample_files")),
            tuned=tuned if isinstance(tuned, dict) else None,
            huggingface=huggingface if isinstance(huggingface, dict) else None,
        )


@dataclass(kw_only=True)
class Manifest:
    """What a build wrote into a repository.

    Attributes:
        tool_version: The tritongen version that wrote it.
        device: The device profile (``{"kind": "KIND_CPU", "gpus": None}``).
        libraries: Installed versions of the libraries that shape an export.
        models: Model name -> its entry.
    """

    tool_version: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)

    def version(self, name: str, version: int) -> VersionEntry | None:
        """The entry of one model version, or ``None`` when the manifest has none."""
        model = self.models.get(name)
        return model.versions.get(str(version)) if model else None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object."""
        return {
            "tool": TOOL,
            "tool_version": self.tool_version,
            "device": self.device,
            "libraries": self.libraries,
            "models": {name: model.to_dict() for name, model in self.models.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Read a manifest written by any earlier build; anything but a JSON object reads as empty."""
        data = _mapping(data)
        return cls(
            tool_version=str(data.get("tool_version", "")),
            device=_mapping(data.get("device")),
            libraries=_mapping(data.get("libraries")),
            models={
                str(name): ModelEntry.from_dict(raw) for name, raw in _mapping(data.get("models")).items()
            },
        )


def int8_portability_warnings(manifest: Manifest, here: CpuIsa | None = None) -> list[tuple[str, str]]:
    """(model, message) for each served INT8 version whose scheme may saturate on this CPU.

    A version is named when its kept scheme runs on saturating kernels here (x86-64 without VNNI) but
    its accuracy gate ran where it does not (VNNI, ARM), or on a CPU the manifest does not record.

    Args:
        manifest: The repository's manifest.
        here: The CPU to serve on; default: this machine's (:func:`generator.core.cpu_isa.detect`).
    """
    here = here or cpu_isa.detect()
    found = []
    for name, model in manifest.models.items():
        for version, entry in model.versions.items():
            record = entry.int8_pass
            if record is None:
                continue
            scheme, isa = record.get("scheme"), record.get("isa")
            if not isinstance(scheme, str):  # built before schemes were recorded: ONNX Runtime's defaults
                scheme = "U8S8" if record.get("name") == "quantize dynamic" else "S8S8"
            message = portability_warning(scheme, isa if isinstance(isa, str) else None, here)
            if message:
                found.append((name, f"version {version}: {message}"))
    return found
