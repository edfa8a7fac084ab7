"""What the built-in steps' settings share: the pydantic base (:class:`StepSettings`), Triton's integer
bounds, the dtype spelling a spec may use, a path relative to the spec's directory, and a boolean as a
config parameter's text. The settings of each kind (``tokenizer_settings.py``, ``image_settings.py``,
``label_settings.py``, ``generate_settings.py``) build on it; nothing here imports a step file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["INT32_MAX", "INT64_MAX", "StepSettings", "canonical_name", "parameter_flag", "spec_path"]

#: Triton's bounds on an INT32 and an INT64 value (a dimension is an int64 in model_config.proto).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class StepSettings(BaseModel):
    """A step kind's settings: an unknown setting is refused, and the validated settings are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def canonical_name(value: Any) -> Any:
    """A dtype or layout as a spec may write it (``int32``, ``TYPE_INT32``, ``nchw``) in upper case without
    ``TYPE_``; anything but a string as it is (for pydantic to refuse)."""
    return value.upper().removeprefix("TYPE_") if isinstance(value, str) else value


def parameter_flag(value: bool) -> str:
    """A boolean as a config parameter's text, which the step files read back: ``true`` or ``false``."""
    return "true" if value else "false"


def spec_path(value: str, spec_dir: Path) -> Path:
    """The path a setting names, ``~`` expanded, relative to the spec's directory unless absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else spec_dir / path
