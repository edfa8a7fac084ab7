"""A JSON file read with a one-line reason when it cannot be: what the spec's and the steps' readers of
model folders (config.json, tokenizer.json, preprocessor_config.json, modules.json) turn into their own
errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_json"]


def read_json(path: Path) -> Any:
    """The content of the JSON file at ``path``.

    Raises:
        ValueError: the file cannot be read, is not UTF-8 or is not JSON; the message is the reason on one
            line, for the caller's error.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(" ".join(str(error).split())) from None
