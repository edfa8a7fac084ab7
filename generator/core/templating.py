"""The Jinja templating that renders Triton's files: config.pbtxt (build) and Kubernetes manifests (deploy).

The user's templates directory, when given, comes first; a template of the same name there replaces the
built-in one. The ``pbtxt`` filter writes a value as a protobuf text-format literal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from generator.core.errors import ConfigError
from generator.core.resources import templates_dir

__all__ = ["environment", "pbtxt_literal"]


def pbtxt_literal(value: Any, enum: bool = False) -> str:
    """A value as a protobuf text-format literal (strings quoted, booleans lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not enum:
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def environment(user_templates: Path | None = None) -> jinja2.Environment:
    """The Jinja environment: the user's templates first (if given), then the built-in ones."""
    loaders: list[jinja2.BaseLoader] = []
    if user_templates is not None:
        if not Path(user_templates).is_dir():
            raise ConfigError(
                f"--templates '{user_templates}' is not a directory; pass a directory of .j2 templates"
            )
        loaders.append(jinja2.FileSystemLoader(str(user_templates)))
    loaders.append(jinja2.FileSystemLoader(str(templates_dir())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pbtxt"] = pbtxt_literal
    return env
