"""The ``tune`` command's options: declared on an argparse parser, and read back into a :class:`TuneConfig`.

Kept apart from :mod:`~generator.tune.run` so that building the CLI's parser imports no Locust.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from generator.core.errors import TuneError

__all__ = ["add_tune_options", "config_from_args"]


def _list(text: str, item: Callable[[str], Any], option: str, example: str) -> list[Any]:
    try:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise TuneError(f"{option} '{text}': give a comma-separated list, e.g. {example}")
    return values


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


def _gpu_sets(text: str) -> list[tuple[int, ...]]:
    sets = []
    for part in text.split(";"):
        ids = _list(part, _non_negative, "--gpu-sets", "0;1;0,1")
        sets.append(tuple(sorted(set(ids))))
    return sets


def add_tune_options(parser: argparse.ArgumentParser) -> None:
    """Declare the ``tune`` command's options on ``parser``."""
    parser.add_argument(
        "spec", nargs="?", help="YAML spec (default: generator.yaml, else the bundled example)"
    )
    parser.add_argument("--model", "-m", action="append", required=True, help="model to tune (repeatable)")
    parser.add_argument("--output", "-o", help="repository to rebuild with the winner (default: the spec's)")
    goal = parser.add_argument_group("objective and constraints (the load test's --fail-if figures)")
    goal.add_argument(
        "--users", "--concurrency", default="1,16", help="load levels, closed-loop users (default 1,16)"
    )
    goal.add_argument(
        "--objective",
        default="throughput",
        choices=["throughput", "p50", "p90", "p95", "p99"],
        help="maximise throughput, or minimise a latency percentile (geometric mean over the levels; "
        "a candidate worse than the start config at any level beyond the measured noise never wins)",
    )
    goal.add_argument(
        "--trade-levels",
        action="store_true",
        help="let a gain at one load level buy a loss at another: the mean over the levels alone decides",
    )
    goal.add_argument("--max-p99-ms", type=float, help="constraint: p99 latency at most this, at every level")
    goal.add_argument(
        "--min-throughput", type=float, help="constraint: at least this many infer/s at every level"
    )
    goal.add_argument("--max-memory", help="constraint: server memory at most this (e.g. 2GiB)")
    goal.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="EXPR",
        help="a failing condition as for --fail-if",
    )
    search = parser.add_argument_group("search")
    search.add_argument(
        "--search", choices=["quick", "grid"], default="quick", help="quick (hill climb) or grid"
    )
    search.add_argument("--budget-minutes", type=float, help="stop searching after about this long")
    search.add_argument("--trial-seconds", type=float, default=2.0, help="seconds per measurement window (2)")
    search.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per level (1)")
    search.add_argument(
        "--stability-pct", type=float, default=10.0, help="windows must agree within this (10)"
    )
    search.add_argument("--stability-windows", type=int, default=3, help="windows that must agree (3)")
    search.add_argument("--max-windows", type=int, default=8, help="windows per level at most (8)")
    space = parser.add_argument_group(
        "the space (comma-separated values; default: chosen for the model and machine)"
    )
    space.add_argument("--instances", help="instance counts, e.g. 1,2,4")
    space.add_argument("--threads", help="backend threads per instance, e.g. auto,1,2")
    space.add_argument("--max-batch-sizes", help="max_batch_size values, e.g. 8,32,128")
    space.add_argument("--batching", help="dynamic batcher: on,off")
    space.add_argument("--queue-delays", help="max_queue_delay_microseconds values, e.g. 0,100,500")
    space.add_argument(
        "--preferred", help="preferred_batch_size choices: none, max, start, or sizes like 4+8"
    )
    space.add_argument(
        "--device", choices=["cpu", "gpu"], default="cpu", help="search CPU or GPU instance groups"
    )
    space.add_argument("--gpu-sets", help="with --device gpu: GPU id sets to try, e.g. '0;0,1'")
    where = parser.add_argument_group("server and requests")
    where.add_argument(
        "--url", help="a running Triton with --model-control-mode=explicit (default: embedded)"
    )
    where.add_argument("--protocol", choices=["http", "grpc"], help="default: from --url, else http")
    where.add_argument("--allow-remote", action="store_true", help="allow a --url that is not this machine")
    where.add_argument("--batch-size", type=int, default=1, help="samples per request (1)")
    where.add_argument("--data", help="real samples (.npz or .json) instead of generated inputs")
    where.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    where.add_argument("--request-timeout", type=float, default=30.0, help="seconds before a request fails")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="tune-report", help="report directory (default tune-report)")
    output.add_argument(
        "--no-write",
        action="store_true",
        help="report only: leave the tuned file and the repository as they are",
    )
    output.add_argument("--templates", help="directory with your own copies of the Jinja templates")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~generator.tune.run.TuneConfig` of parsed ``tune`` options.

    Raises:
        TuneError: A list option does not parse.
    """
    from generator.loadtest.steady import Steadiness
    from generator.tune.run import TuneConfig
    from generator.tune.space import SpaceOptions

    def listed(value: str | None, item: Callable[[str], Any], option: str, example: str) -> list[Any] | None:
        return _list(value, item, option, example) if value else None

    space = SpaceOptions(
        instances=listed(args.instances, _positive, "--instances", "1,2,4"),
        threads=listed(args.threads, _thread, "--threads", "auto,1,2"),
        max_batch_sizes=listed(args.max_batch_sizes, _positive, "--max-batch-sizes", "8,32,128"),
        batching=listed(args.batching, _switch, "--batching", "on,off"),
        queue_delays=listed(args.queue_delays, _non_negative, "--queue-delays", "0,100,500"),
        preferred=listed(args.preferred, str, "--preferred", "none,max"),
        gpu_sets=_gpu_sets(args.gpu_sets) if args.gpu_sets else None,
    )
    return TuneConfig(
        models=list(dict.fromkeys(args.model)),
        spec=args.spec,
        output=args.output,
        users=_list(args.users, _positive, "--users", "1,16"),
        objective=args.objective,
        max_p99_ms=args.max_p99_ms,
        min_throughput=args.min_throughput,
        max_memory=args.max_memory,
        constraints=list(args.constraint),
        search=args.search,
        budget_minutes=args.budget_minutes,
        steadiness=Steadiness(
            window=args.trial_seconds,
            warmup=args.warmup,
            tolerance_pct=args.stability_pct,
            least=args.stability_windows,
            most=args.max_windows,
        ),
        space=space,
        device=args.device,
        url=args.url,
        protocol=args.protocol,
        batch_size=args.batch_size,
        data=args.data,
        out=args.out,
        write=not args.no_write,
        allow_remote=args.allow_remote,
        seed=args.seed,
        request_timeout=args.request_timeout,
        templates=args.templates,
        trade_levels=args.trade_levels,
    )
