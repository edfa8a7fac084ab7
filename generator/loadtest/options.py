"""The load-test options, declared once: for ``python -m generator loadtest``, the locustfile and the run.

Each :class:`LoadTestOption` row of :data:`OPTIONS` names one option: its ``name`` is the argparse ``dest``
on both parsers and, for the command's options, the field of
:class:`~generator.loadtest.run.LoadTestConfig`, whose defaults come from :func:`default`.
:func:`add_cli_options` puts the rows into the CLI's ``loadtest`` parser; :func:`add_locust_options` puts
them into Locust's own parser (the locustfile's ``init_command_line_parser`` listener), so
``locust -f perf/locustfile.py --help`` lists the same flags. Locust brings its own ``--host``, ``-u``,
``-r`` and ``-t``, so the rows for the endpoint, users and spawn rate are the command's only.

This module imports only the standard library: the CLI builds its parser from it without importing
Locust, which monkey-patches the standard library for gevent.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLI",
    "LOAD_SHAPES",
    "LOCUST",
    "OPTIONS",
    "LoadTestOption",
    "add_cli_options",
    "add_locust_options",
    "default",
]

CLI = "cli"
"""Where an option applies: the ``python -m generator loadtest`` command."""

LOCUST = "locust"
"""Where an option applies: Locust's parser, when Locust runs the harness's locustfile."""

_BOTH = frozenset({CLI, LOCUST})
_UNCHANGED = object()

LOAD_SHAPES = ("step", "ramp")
"""The load shapes (``--load-shape``)."""


class _ShapeAction(argparse.Action):
    """``--shape NAME:DIMS`` collects input shapes; ``--shape step|ramp`` still sets the load shape.

    ``--shape`` named the load shape before it took input shapes (as perf_analyzer's ``--shape`` does), so
    a load shape's name is routed to ``--load-shape``; an input shape always has a ``:``.
    """

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        if values in LOAD_SHAPES:
            namespace.shape = values
            return
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or ()), values])


@dataclass(frozen=True)
class LoadTestOption:
    """One load-test option, as both parsers declare it.

    Attributes:
        name: The argparse ``dest`` (and the :class:`~generator.loadtest.run.LoadTestConfig` field).
        flags: The option strings; the first is the one users know, the others still work.
        help: One line for ``--help``; ``{default}`` in it is replaced by the default.
        type: Converts the command-line text (None: keep the string).
        default: The value when the option is not given.
        choices: The only values accepted, or None.
        metavar: The value's name in ``--help``, or None for argparse's own.
        repeat: The option may be given several times; the values are collected in a list.
        switch: The option takes no value and sets True.
        where: :data:`CLI`, :data:`LOCUST` or both.
        required: The command requires it (Locust's parser never does: the test reports it missing).
        exclusive: Name of the group of options the command accepts only one of, or None.
        locust_default: The default under plain Locust, where it differs from ``default``.
        locust_help: The help under plain Locust, where it differs from ``help``.
        hidden: Left out of ``--help`` and Locust's web UI (set by the harness itself).
        action: An argparse action class of its own, or None for the one ``switch``/``repeat`` imply.
    """

    name: str
    flags: tuple[str, ...]
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    repeat: bool = False
    switch: bool = False
    where: frozenset[str] = _BOTH
    required: bool = False
    exclusive: str | None = None
    locust_default: Any = _UNCHANGED
    locust_help: str | None = None
    hidden: bool = False
    action: type[argparse.Action] | None = None

    def arguments(self, scope: str) -> dict[str, Any]:
        """The keyword arguments of ``add_argument`` for this option in ``scope`` (:data:`CLI` or :data:`LOCUST`)."""
        value = self.default
        if scope == LOCUST and self.locust_default is not _UNCHANGED:
            value = self.locust_default
        kwargs: dict[str, Any] = {
            "dest": self.name,
            "default": list(value) if self.repeat and value is not None else value,
            "help": argparse.SUPPRESS if self.hidden else self._help(scope, value),
        }
        if self.action is not None:
            kwargs["action"] = self.action
        elif self.switch:
            kwargs["action"] = "store_true"
        elif self.repeat:
            kwargs["action"] = "append"
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        if scope == CLI and self.required:
            kwargs["required"] = True
        return kwargs

    def _help(self, scope: str, value: Any) -> str:
        text = self.locust_help if scope == LOCUST and self.locust_help else self.help
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return text.replace("{default}", shown)


OPTIONS: tuple[LoadTestOption, ...] = (
    LoadTestOption(
        "models",
        ("--model",),
        "model to load, NAME or NAME:WEIGHT (repeat for several)",
        metavar="NAME[:WEIGHT]",
        repeat=True,
        required=True,
    ),
    LoadTestOption(
        "url",
        ("--url",),
        "server endpoint, e.g. 127.0.0.1:8000 or grpc://127.0.0.1:8001",
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "protocol",
        ("--protocol",),
        "default: the URL's scheme, else http",
        choices=("http", "grpc"),
        locust_help="default: the --host URL's scheme, else http",
    ),
    LoadTestOption(
        "batch_size", ("--batch-size",), "samples per request (default {default})", type=int, default=1
    ),
    LoadTestOption(
        "users",
        ("--users",),
        "concurrent users, each a closed loop (default 1)",
        type=int,
        where=frozenset({CLI}),
        exclusive="levels",
    ),
    LoadTestOption(
        "sweep",
        ("--sweep",),
        "load levels run in turn, e.g. 1,2,4,8,16",
        exclusive="levels",
        locust_help="load levels for --load-shape, e.g. 1,2,4,8 (default: -u)",
    ),
    LoadTestOption(
        "duration",
        ("--duration", "--level-duration"),
        "measured seconds per level, or of the ramp (default {default})",
        type=float,
        default=10.0,
    ),
    LoadTestOption(
        "warmup", ("--warmup",), "unmeasured seconds per level (default {default})", type=float, default=1.0
    ),
    LoadTestOption(
        "spawn_rate",
        ("--spawn-rate",),
        "users started per second (default: all at once)",
        type=float,
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "shape",
        ("--load-shape",),
        "load shape (default {default}; --shape step|ramp also works)",
        choices=LOAD_SHAPES,
        default="step",
        locust_default=None,
        locust_help="play a load shape instead of -u/-r: step holds each --sweep level, ramp grows to the top",
    ),
    LoadTestOption(
        "workers",
        ("--workers",),
        "Locust worker processes for more load (default {default}: one process)",
        type=int,
        default=0,
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "master",
        ("--master",),
        "be the Locust master for workers that other machines start (loadtest-worker); needs --expect-workers",
        default=False,
        switch=True,
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "expect_workers",
        ("--expect-workers",),
        "with --master: Locust workers to wait for before the load starts",
        type=int,
        metavar="N",
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "expect_workers_max_wait",
        ("--expect-workers-max-wait",),
        "with --master: seconds to wait for them (default {default})",
        type=float,
        default=300.0,
        metavar="S",
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "master_bind_host",
        ("--master-bind-host",),
        "with --master: the address workers connect to (default 127.0.0.1: this machine only)",
        metavar="H",
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "master_bind_port",
        ("--master-bind-port",),
        "with --master: the port workers connect to (default {default})",
        type=int,
        default=5557,
        metavar="P",
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "data",
        ("--data",),
        "real samples: .npz, .json (also perf_analyzer's --input-data) or .txt, one string per line "
        "(default: generated inputs)",
    ),
    LoadTestOption(
        "input_shapes",
        ("--shape",),
        "dims of one sample of an input with -1 axes, without the batch axis, e.g. input_ids:16 (repeatable)",
        default=(),
        metavar="NAME:DIMS",
        repeat=True,
        action=_ShapeAction,
    ),
    LoadTestOption(
        "params",
        ("--param",),
        "a value for every request: the model's input of that name, else a request parameter, "
        "e.g. max_tokens=16 (repeatable)",
        default=(),
        metavar="NAME=VALUE",
        repeat=True,
    ),
    LoadTestOption(
        "sequence_length",
        ("--sequence-length",),
        "requests per sequence of a stateful model (sequence_batching) (default {default})",
        type=int,
        default=20,
        metavar="N",
    ),
    LoadTestOption(
        "sequence_length_variation",
        ("--sequence-length-variation",),
        "each sequence's length varies uniformly by this percentage of it (default {default})",
        type=float,
        default=20.0,
        metavar="PCT",
    ),
    LoadTestOption(
        "sequence_id_range",
        ("--sequence-id-range",),
        "the sequences' correlation IDs, START or START:END, END excluded (default: from 1)",
        metavar="START[:END]",
    ),
    LoadTestOption(
        "sequences_per_user",
        ("--sequences-per-user",),
        "sequences each user keeps going at once, sending their requests in turn (default {default})",
        type=int,
        default=1,
        metavar="K",
    ),
    LoadTestOption(
        "serve",
        ("--serve",),
        "serve this repository with the embedded Triton for the run",
        metavar="DIR",
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "price_per_hour",
        ("--price-per-hour",),
        "machine price per hour, for cost per 1,000 inferences",
        type=float,
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "baseline", ("--baseline",), "an earlier report.json to compare with", where=frozenset({CLI})
    ),
    LoadTestOption(
        "fail_if",
        ("--fail-if",),
        "fail (exit 1) when a run meets EXPR, e.g. 'p99_ms>50' or 'error_rate>0.001' (repeatable)",
        default=(),
        metavar="EXPR",
        repeat=True,
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "out",
        ("--out",),
        "report directory (default {default})",
        default="loadtest-report",
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "allow_remote",
        ("--allow-remote",),
        "allow a server that is not on this machine",
        default=False,
        switch=True,
        where=frozenset({CLI}),
    ),
    LoadTestOption(
        "metrics_url",
        ("--metrics-url",),
        "Triton's metrics page (default: the server host's port 8002)",
        where=frozenset({CLI}),
    ),
    LoadTestOption("seed", ("--seed",), "seed of the random inputs (default {default})", type=int, default=0),
    LoadTestOption(
        "request_timeout",
        ("--request-timeout",),
        "seconds before a request counts as failed (default {default})",
        type=float,
        default=30.0,
    ),
    LoadTestOption(
        "grpc_url",
        ("--grpc-url",),
        "gRPC endpoint when --host is an http:// URL (default: its host, port 8001)",
        where=frozenset({LOCUST}),
    ),
    LoadTestOption(
        "load_processes",
        ("--load-processes",),
        "processes that share the correlation IDs (default: Locust's --expect-workers)",
        type=int,
        where=frozenset({LOCUST}),
        hidden=True,
    ),
    LoadTestOption(
        "record_requests",
        ("--record-requests",),
        "workers ship every request's row to the master",
        default=False,
        switch=True,
        where=frozenset({LOCUST}),
        hidden=True,
    ),
)

_BY_NAME = {option.name: option for option in OPTIONS}


def default(name: str) -> Any:
    """The default of option ``name`` (what the command, and :class:`LoadTestConfig`, use).

    Raises:
        KeyError: ``name`` is not an option.
    """
    return _BY_NAME[name].default


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to ``parser`` (the ``loadtest`` subparser)."""
    groups: dict[str, Any] = {}
    for option in OPTIONS:
        if CLI not in option.where:
            continue
        target: Any = parser
        if option.exclusive is not None:
            if option.exclusive not in groups:
                groups[option.exclusive] = parser.add_mutually_exclusive_group()
            target = groups[option.exclusive]
        target.add_argument(*option.flags, **option.arguments(CLI))


def add_locust_options(parser: Any) -> None:
    """Add the harness's options to Locust's parser (it takes ``include_in_web_ui``; plain argparse does not)."""
    for option in OPTIONS:
        if LOCUST in option.where:
            parser.add_argument(
                *option.flags, **option.arguments(LOCUST), include_in_web_ui=not option.hidden
            )
