"""The ``tune`` command's options, declared once: the CLI's parser, :class:`~generator.tune.run.TuneConfig`
and its defaults all come from :data:`OPTIONS`.

Each :class:`~generator.core.options.Option` row names a flag, its type, default and help, and the
:class:`~generator.tune.run.TuneConfig` field it sets (``steadiness.window``: the field of
:class:`~generator.loadtest.steady.Steadiness`; ``space.instances``: of
:class:`~generator.tune.space.SpaceOptions`). The steadiness defaults are :class:`Steadiness`'s own and the
request defaults the load test's (:mod:`generator.loadtest.options`), so each is written once.

Kept apart from :mod:`~generator.tune.run` so that building the CLI's parser imports no Locust.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from generator.core.errors import TuneError
from generator.core.options import Option, config_default, config_values
from generator.loadtest import options as loadtest_options
from generator.loadtest.steady import Steadiness

__all__ = ["OPTIONS", "config_from_args", "default"]


def _list(text: str, item: Callable[[str], Any], option: str, example: str) -> list[Any]:
    try:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise TuneError(f"{option} '{text}': give a comma-separated list, e.g. {example}")
    return values


def _listed(item: Callable[[str], Any], option: str, example: str) -> Callable[[str], list[Any] | None]:
    """A search-space option's parse: the comma-separated values, or None (chosen for the model) for ''."""

    def parse(text: str) -> list[Any] | None:
        return _list(text, item, option, example) if text else None

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _thread(text: str) -> int | None:
    return None if text == "auto" else _positive(text)


def _switch(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError(text)
    return text == "on"


def _gpu_sets(text: str) -> list[tuple[int, ...]] | None:
    if not text:
        return None
    sets = []
    for part in text.split(";"):
        ids = _list(part, _non_negative, "--gpu-sets", "0;1;0,1")
        sets.append(tuple(sorted(set(ids))))
    return sets


_GOAL = "objective and constraints (the load test's --fail-if figures)"
_SEARCH = "search"
_SPACE = "the space (comma-separated values; default: chosen for the model and machine)"
_REQUESTS = "server and requests"
_OUTPUT = "output"
_STEADY = Steadiness()

OPTIONS: tuple[Option, ...] = (
    Option("spec", ("spec",), "YAML spec (default: generator.yaml, else the bundled example)", nargs="?"),
    Option(
        "model",
        ("--model", "-m"),
        "model to tune (repeatable)",
        field="models",
        parse=lambda names: list(dict.fromkeys(names)),
        repeat=True,
        required=True,
    ),
    Option("output", ("--output", "-o"), "repository to rebuild with the winner (default: the spec's)"),
    Option(
        "users",
        ("--users", "--concurrency"),
        "load levels, closed-loop users (default {default})",
        default="1,16",
        parse=lambda text: _list(text, _positive, "--users", "1,16"),
        group=_GOAL,
    ),
    Option(
        "objective",
        ("--objective",),
        "maximise throughput, or minimise a latency percentile (geometric mean over the levels; "
        "a candidate worse than the start config at any level beyond the measured noise never wins)",
        default="throughput",
        choices=("throughput", "p50", "p90", "p95", "p99"),
        group=_GOAL,
    ),
    Option(
        "trade_levels",
        ("--trade-levels",),
        "let a gain at one load level buy a loss at another: the mean over the levels alone decides",
        default=False,
        switch=True,
        group=_GOAL,
    ),
    Option(
        "max_p99_ms",
        ("--max-p99-ms",),
        "constraint: p99 latency at most this, at every level",
        type=float,
        group=_GOAL,
    ),
    Option(
        "min_throughput",
        ("--min-throughput",),
        "constraint: at least this many infer/s at every level",
        type=float,
        group=_GOAL,
    ),
    Option(
        "max_memory", ("--max-memory",), "constraint: server memory at most this (e.g. 2GiB)", group=_GOAL
    ),
    Option(
        "constraint",
        ("--constraint",),
        "a failing condition as for --fail-if",
        field="constraints",
        default=(),
        metavar="EXPR",
        repeat=True,
        group=_GOAL,
    ),
    Option(
        "search",
        ("--search",),
        "quick (hill climb) or grid",
        default="quick",
        choices=("quick", "grid"),
        group=_SEARCH,
    ),
    Option(
        "budget_minutes",
        ("--budget-minutes",),
        "stop searching after about this long",
        type=float,
        group=_SEARCH,
    ),
    Option(
        "trial_seconds",
        ("--trial-seconds",),
        "seconds per measurement window ({default})",
        field="steadiness.window",
        type=float,
        default=_STEADY.window,
        group=_SEARCH,
    ),
    Option(
        "warmup",
        ("--warmup",),
        "unmeasured seconds per level ({default})",
        field="steadiness.warmup",
        type=float,
        default=_STEADY.warmup,
        group=_SEARCH,
    ),
    Option(
        "stability_pct",
        ("--stability-pct",),
        "windows must agree within this ({default})",
        field="steadiness.tolerance_pct",
        type=float,
        default=_STEADY.tolerance_pct,
        group=_SEARCH,
    ),
    Option(
        "stability_windows",
        ("--stability-windows",),
        "windows that must agree ({default})",
        field="steadiness.least",
        type=int,
        default=_STEADY.least,
        group=_SEARCH,
    ),
    Option(
        "max_windows",
        ("--max-windows",),
        "windows per level at most ({default})",
        field="steadiness.most",
        type=int,
        default=_STEADY.most,
        group=_SEARCH,
    ),
    Option(
        "instances",
        ("--instances",),
        "instance counts, e.g. 1,2,4",
        field="space.instances",
        parse=_listed(_positive, "--instances", "1,2,4"),
        group=_SPACE,
    ),
    Option(
        "threads",
        ("--threads",),
        "backend threads per instance, e.g. auto,1,2",
        field="space.threads",
        parse=_listed(_thread, "--threads", "auto,1,2"),
        group=_SPACE,
    ),
    Option(
        "max_batch_sizes",
        ("--max-batch-sizes",),
        "max_batch_size values, e.g. 8,32,128",
        field="space.max_batch_sizes",
        parse=_listed(_positive, "--max-batch-sizes", "8,32,128"),
        group=_SPACE,
    ),
    Option(
        "batching",
        ("--batching",),
        "dynamic batcher: on,off",
        field="space.batching",
        parse=_listed(_switch, "--batching", "on,off"),
        group=_SPACE,
    ),
    Option(
        "queue_delays",
        ("--queue-delays",),
        "max_queue_delay_microseconds values, e.g. 0,100,500",
        field="space.queue_delays",
        parse=_listed(_non_negative, "--queue-delays", "0,100,500"),
        group=_SPACE,
    ),
    Option(
        "preferred",
        ("--preferred",),
        "preferred_batch_size choices: none, max, start, or sizes like 4+8",
        field="space.preferred",
        parse=_listed(str, "--preferred", "none,max"),
        group=_SPACE,
    ),
    Option(
        "device",
        ("--device",),
        "search CPU or GPU instance groups",
        default="cpu",
        choices=("cpu", "gpu"),
        group=_SPACE,
    ),
    Option(
        "gpu_sets",
        ("--gpu-sets",),
        "with --device gpu: GPU id sets to try, e.g. '0;0,1'",
        field="space.gpu_sets",
        parse=_gpu_sets,
        group=_SPACE,
    ),
    Option(
        "url",
        ("--url",),
        "a running Triton with --model-control-mode=explicit (default: embedded)",
        group=_REQUESTS,
    ),
    Option(
        "protocol",
        ("--protocol",),
        "default: from --url, else http",
        choices=("http", "grpc"),
        group=_REQUESTS,
    ),
    Option(
        "allow_remote",
        ("--allow-remote",),
        "allow a --url that is not this machine",
        default=False,
        switch=True,
        group=_REQUESTS,
    ),
    Option(
        "batch_size",
        ("--batch-size",),
        "samples per request ({default})",
        type=int,
        default=loadtest_options.default("batch_size"),
        group=_REQUESTS,
    ),
    Option(
        "data",
        ("--data",),
        "real samples (.npz or .json) instead of generated inputs",
        group=_REQUESTS,
    ),
    Option(
        "seed",
        ("--seed",),
        "seed of the generated inputs",
        type=int,
        default=loadtest_options.default("seed"),
        group=_REQUESTS,
    ),
    Option(
        "request_timeout",
        ("--request-timeout",),
        "seconds before a request fails",
        type=float,
        default=loadtest_options.default("request_timeout"),
        group=_REQUESTS,
    ),
    Option(
        "out",
        ("--out",),
        "report directory (default {default})",
        default="tune-report",
        group=_OUTPUT,
    ),
    Option(
        "no_write",
        ("--no-write",),
        "report only: leave the tuned file and the repository as they are",
        field="write",
        default=False,
        parse=lambda report_only: not report_only,
        switch=True,
        group=_OUTPUT,
    ),
    Option(
        "templates",
        ("--templates",),
        "directory with your own copies of the Jinja templates",
        group=_OUTPUT,
    ),
)


def default(field: str) -> Any:
    """The default of :class:`~generator.tune.run.TuneConfig`'s field ``field`` (a new copy).

    Raises:
        KeyError: No option sets ``field``.
    """
    return config_default(OPTIONS, field)


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~generator.tune.run.TuneConfig` of parsed ``tune`` options.

    Raises:
        TuneError: A list option does not parse.
    """
    values = config_values(OPTIONS, args)  # before Locust is imported (by run): a bad list fails fast
    from generator.tune.run import TuneConfig
    from generator.tune.space import SpaceOptions

    nested: dict[str, dict[str, Any]] = {"steadiness": {}, "space": {}}
    for name in [name for name in values if "." in name]:
        owner, field = name.split(".", 1)
        nested[owner][field] = values.pop(name)
    return TuneConfig(
        **values, steadiness=Steadiness(**nested["steadiness"]), space=SpaceOptions(**nested["space"])
    )
