"""A command's options declared once: one row per option feeds argparse, a config object and its defaults.

A table is a tuple of :class:`Option` rows. Each row names the option's flags, type, default, help and
the field of the command's config object it sets (``steadiness.window`` for a field of a nested object).
:func:`add_options` declares the rows on an argparse parser; :func:`config_values` reads the parsed
arguments back as config fields; :func:`config_default` is a field's default, the row's default as the
config holds it, which the config dataclass takes as its own. ``tune`` (:mod:`generator.tune.options`)
and ``deploy`` (:mod:`generator.deploy.options`) declare their options this way; ``loadtest`` has a table
of its own (:mod:`generator.loadtest.options`), which also feeds Locust's parser.

Standard library only: the CLI builds its parser from the tables without importing what runs a command.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "add_options", "config_default", "config_values"]


@dataclass(frozen=True)
class Option:
    """One command-line option and the config field it sets.

    Attributes:
        name: The argparse ``dest`` (for a positional argument, its name).
        flags: The option strings, the first the one users know; one name without a leading ``-`` is a
            positional argument.
        help: One line for ``--help``; ``{default}`` in it is replaced by the default.
        field: The config field the option sets, dotted for a field of a nested object; default: ``name``.
        type: Converts the command-line text (None: keep the string).
        default: The value when the option is not given, as the command line holds it.
        parse: Converts the parsed value into the config's (``"1,16"`` into ``[1, 16]``). It runs after
            argparse, so its errors are the command's own (exit 1), not usage errors (exit 2).
        choices: The only values accepted, or None.
        metavar: The value's name in ``--help``, or None for argparse's own.
        switch: The option takes no value and sets True.
        repeat: The option may be given several times; the values are collected in a list.
        required: The command requires it.
        nargs: argparse's ``nargs`` (``"?"``: an optional positional argument), or None.
        group: The title of the ``--help`` section the option is listed in, or None for the main one.
    """

    name: str
    flags: tuple[str, ...]
    help: str
    field: str | None = None
    type: Callable[[str], Any] | None = None
    default: Any = None
    parse: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    switch: bool = False
    repeat: bool = False
    required: bool = False
    nargs: str | None = None
    group: str | None = None

    @property
    def target(self) -> str:
        """The config field the option sets."""
        return self.field or self.name

    @property
    def positional(self) -> bool:
        """Whether the option is a positional argument."""
        return not self.flags[0].startswith("-")

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``add_argument`` for this option."""
        value = list(self.default) if self.repeat and self.default is not None else self.default
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        kwargs: dict[str, Any] = {"default": value, "help": self.help.replace("{default}", shown)}
        if not self.positional:
            kwargs["dest"] = self.name
        optional = {"type": self.type, "metavar": self.metavar, "nargs": self.nargs}
        kwargs.update({key: value for key, value in optional.items() if value is not None})
        if self.switch:
            kwargs["action"] = "store_true"
        elif self.repeat:
            kwargs["action"] = "append"
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        if self.required:
            kwargs["required"] = True
        return kwargs

    def to_config(self, value: Any) -> Any:
        """``value`` (as argparse gives it) as the config holds it; None stays None."""
        if value is None:
            return None
        if self.repeat:
            value = list(value)
        return self.parse(value) if self.parse is not None else value


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    """Declare ``options`` on ``parser``, each in its ``--help`` section (sections in table order)."""
    groups: dict[str, Any] = {}
    for option in options:
        target: Any = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            target = groups[option.group]
        target.add_argument(*option.flags, **option.arguments())


def config_values(options: tuple[Option, ...], args: argparse.Namespace) -> dict[str, Any]:
    """The config fields that parsed ``args`` set, ``{field: value}``, in table order.

    An option whose value is None is left out: the config keeps its default for it (None too, for the
    fields of the command's own config; a nested object may have a default of its own).
    """
    values = {option.target: option.to_config(getattr(args, option.name)) for option in options}
    return {name: value for name, value in values.items() if value is not None}


def config_default(options: tuple[Option, ...], field: str) -> Any:
    """The default of config field ``field``: its option's default, as the config holds it (a new copy).

    Raises:
        KeyError: No option sets ``field``.
    """
    for option in options:
        if option.target == field:
            return option.to_config(option.default)
    raise KeyError(field)
