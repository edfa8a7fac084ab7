"""Tuned serving settings: the file ``tune`` writes beside a spec and every ``build`` of that spec applies.

The tuned settings of ``examples/generator.yaml`` live in ``examples/generator.tuned.yaml``: per model,
the winning serving settings of a tune run (``max_batch_size``, ``dynamic_batching``, ``instance_group``
and ``parameters`` only) and the trial they came from. :func:`load_spec_with_tuned` deep-merges them over
each model's spec entry after the spec's ``defaults`` and validates the result as the spec is validated,
so a bad value is reported against the tuned file with its path
(``generator.tuned.yaml: models.digits_cnn.settings.max_batch_size: ...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from generator.core.errors import SpecError
from generator.spec.models import (
    Overlay,
    Spec,
    default_spec_path,
    field_path,
    load_spec,
    read_yaml,
    validation_problems,
)

#: The version of the file's layout this module reads and writes.
FORMAT = 1
#: The spec keys a tuned entry may set, in the order they are written.
TUNABLE = ("max_batch_size", "dynamic_batching", "sequence_batching", "instance_group", "parameters")
#: What the file is called in error lines.
WHAT = "tuned settings file"
#: How to get past a bad entry, appended to the lines about one.
FIX = "; fix or delete that entry in the tuned settings file, or build with --no-tuned"

_HEADER = """\
# Tuned serving settings for {spec}, written by `python -m generator tune` and applied by every
# `python -m generator build` of that spec. Commit it with the spec. Delete a model's entry (or this
# file), or build with --no-tuned, to build from the spec alone.
"""


def tuned_path(spec_path: Path) -> Path:
    """The tuned settings file of a spec: ``generator.yaml`` -> ``generator.tuned.yaml`` beside it."""
    return spec_path.with_name(f"{spec_path.stem}.tuned.yaml")


class TunedEntry(BaseModel):
    """One model's tuned settings and where they came from.

    Attributes:
        settings: Spec keys (only those in :data:`TUNABLE`) deep-merged over the model's spec entry,
            like a model's own values over the spec's defaults; ``dynamic_batching: false`` switches
            batching off.
        trial: The tune run and trial they came from (``20261123T101500Z/7``).
        objective: What the tune run optimized, in words.
        measured: The trial's figures, for the record (numbers and strings).
        tuned_at: When, as an ISO 8601 timestamp.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    settings: dict[str, Any] = Field(description="Spec keys merged over the model's entry.")
    trial: str = Field(min_length=1, description="The tune run and trial they came from.")
    objective: str = ""
    measured: dict[str, Any] = Field(default_factory=dict)
    tuned_at: str = ""

    @field_validator("settings")
    @classmethod
    def _tunable(cls, value: dict[str, Any]) -> dict[str, Any]:
        others = [key for key in value if key not in TUNABLE]
        if others:
            raise ValueError(
                f"{', '.join(map(str, others))} cannot be tuned; settings may hold only {', '.join(TUNABLE)}"
            )
        return value

    @field_validator("tuned_at", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        # An unquoted timestamp in a hand-edited file reads as a YAML datetime.
        return value.isoformat() if isinstance(value, date) else value


@dataclass(frozen=True)
class TunedInfo:
    """Which tuned settings a spec was loaded with.

    Attributes:
        path: The tuned settings file looked for (``None`` when tuned settings were not wanted).
        applied: Model name -> the entry merged into every spec entry of that name.
        warnings: Entries that were not applied (no model of that name in the spec), one line each.
    """

    path: Path | None = None
    applied: dict[str, TunedEntry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def record(self, name: str) -> dict[str, Any] | None:
        """What the build manifest records for a model: ``{"file", "trial", "settings"}``, or ``None``."""
        entry = self.applied.get(name)
        if entry is None or self.path is None:
            return None
        return {"file": self.path.name, "trial": entry.trial, "settings": _plain(entry.settings)}


def _top_level_problems(data: dict[Any, Any]) -> list[str]:
    problems = [
        f"{field_path((key,))}: unknown field; the file holds only format: {FORMAT} and models:; delete it"
        for key in data
        if key not in ("format", "models")
    ]
    if "format" not in data:
        problems.append(f"format: required field is missing; add format: {FORMAT} at the top")
    elif data["format"] != FORMAT or isinstance(data["format"], bool):
        problems.append(
            f"format: {json.dumps(data['format'], default=str)} is not a format this tritongen reads "
            f"(only {FORMAT}); upgrade tritongen, or delete the file and tune again"
        )
    if data.get("models") is not None and not isinstance(data["models"], dict):
        problems.append("models: must be a mapping of model name -> settings and trial")
    return problems


def _entry_problems(name: Any, raw: Any) -> tuple[TunedEntry | None, list[str]]:
    """One entry read from the file, or the lines saying what is wrong with it."""
    if not isinstance(name, str):
        return None, [f"models: {json.dumps(name, default=str)} is not a model name; quote it"]
    where = field_path(("models", name))
    if not isinstance(raw, dict):
        return None, [f"{where}: must be a mapping with settings: and trial:"]
    settings = raw.get("settings")
    problems = []
    if isinstance(settings, dict):
        problems = [
            f"{field_path(('settings', key), where)}: cannot be tuned; settings may hold only "
            f"{', '.join(TUNABLE)}; delete it"
            for key in settings
            if key not in TUNABLE
        ]
        raw = {**raw, "settings": {k: v for k, v in settings.items() if k in TUNABLE}}
    try:
        entry = TunedEntry.model_validate(raw)
    except PydanticValidationError as exc:
        return None, problems + validation_problems(exc, TunedEntry, raw, where)
    return (None if problems else entry), problems


def parse_tuned(data: Any, origin: str = "tuned settings") -> dict[str, TunedEntry]:
    """Validate the contents of a tuned settings file given as plain data (``None``: an empty file).

    Only the file's structure is checked here; the settings' values are validated with the spec they
    are merged into (:func:`load_spec_with_tuned`).

    Raises:
        SpecError: one line per problem, each naming its path (``models.NAME.settings.KEY``).
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(
            f"{origin}: (top level): must be a mapping with format: {FORMAT} and models:; "
            "fix it, or delete the file to build from the spec alone"
        )
    problems = _top_level_problems(data)
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    entries = {}
    for name, raw in models.items():
        entry, found = _entry_problems(name, raw)
        problems += found
        if entry is not None:
            entries[name] = entry
    if problems:
        raise SpecError(*(f"{origin}: {line}" for line in problems))
    return entries


def read_tuned(path: Path) -> dict[str, TunedEntry]:
    """Read a tuned settings file: model name -> its entry (a missing file reads as none).

    Raises:
        SpecError: the file cannot be read, is not YAML (a key given twice included), or its
            structure is wrong; one line per problem with its path.
    """
    with contextlib.suppress(OSError):  # a name too long for the file system, say: read_yaml says so
        if not path.exists():
            return {}
    return parse_tuned(read_yaml(path, WHAT), str(path))


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item):
        return item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return str(value)


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-like data (numpy scalars become numbers), for safe YAML."""
    return json.loads(json.dumps(value, default=_json_default))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value, key=str)}
    return value


class _Flow(dict[str, Any]):
    """A mapping written on one line (``{count: 2}``)."""


class _Dumper(yaml.SafeDumper):
    """Safe YAML: entries in block style, each setting's value and the figures on one line."""


_Dumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)


def _document(entry: TunedEntry) -> dict[str, Any]:
    """One entry as the file writes it: fields in a fixed order, empty optional fields left out."""
    settings = {key: _sorted(_plain(entry.settings[key])) for key in TUNABLE if key in entry.settings}
    settings = {key: _Flow(value) if isinstance(value, dict) else value for key, value in settings.items()}
    document: dict[str, Any] = {"settings": settings, "trial": entry.trial}
    if entry.objective:
        document["objective"] = entry.objective
    if entry.measured:
        document["measured"] = _Flow(_plain(entry.measured))
    if entry.tuned_at:
        document["tuned_at"] = entry.tuned_at
    return document


def render_tuned(spec_name: str, entries: Mapping[str, TunedEntry]) -> str:
    """The text of a tuned settings file holding ``entries`` (models in name order)."""
    body = {"format": FORMAT, "models": {name: _document(entries[name]) for name in sorted(entries)}}
    text = yaml.dump(body, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)
    return _HEADER.format(spec=spec_name) + text


def write_tuned(spec_path: Path, entries: Mapping[str, TunedEntry]) -> Path:
    """Write tuned settings beside a spec, keeping the entries of the other models already there.

    The file is written whole to a temporary file in the same directory and renamed over the old one,
    so a reader sees the old file or the new one, never a part.

    Args:
        spec_path: The spec the settings are for.
        entries: Model name -> its new entry (replaces that model's entry in the file).

    Returns:
        The tuned settings file (:func:`tuned_path`).

    Raises:
        SpecError: the file there cannot be read or is malformed (it is left as it is).
        OSError: the directory cannot be written.
    """
    path = tuned_path(spec_path)
    merged = {**read_tuned(path), **entries}
    text = render_tuned(spec_path.name, merged)
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path


def load_spec_with_tuned(
    spec_path: str | Path | None = None, use_tuned: bool = True
) -> tuple[Spec, TunedInfo]:
    """Read a spec with its tuned settings merged in (see the module docstring).

    Args:
        spec_path: The spec file (default: :func:`generator.spec.models.default_spec_path`).
        use_tuned: ``False``: the spec alone, as :func:`generator.spec.models.load_spec` reads it.

    Returns:
        The validated spec, and which tuned settings it got from which file; an entry for a model the
        spec does not have is a warning, not an error.

    Raises:
        SpecError: the spec or the tuned settings file cannot be read or does not validate; a bad tuned
            value is reported against the tuned file (``models.NAME.settings.KEY``).
    """
    path = Path(spec_path) if spec_path is not None else default_spec_path()
    if not use_tuned:
        return load_spec(path), TunedInfo()
    tuned_file = tuned_path(path)
    entries = read_tuned(tuned_file)
    overlay = Overlay({name: entry.settings for name, entry in entries.items()}, str(tuned_file), FIX)
    spec = load_spec(path, overlay if entries else None)
    names = {model.name for model in spec.models}
    warnings = [
        f"{tuned_file}: {field_path(('models', name))}: no model '{name}' in {path.name}; its tuned "
        "settings are not used; delete the entry"
        for name in entries
        if name not in names
    ]
    applied = {name: entry for name, entry in entries.items() if name in names}
    return spec, TunedInfo(tuned_file, applied, warnings)
