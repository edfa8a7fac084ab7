"""The harness as a locustfile: the inference user, its command-line options, shapes, worker recording.

``perf/locustfile.py`` re-exports this module's user for plain Locust runs (web UI or headless);
``python -m generator loadtest --workers K`` starts its Locust workers on this file, so it ships inside the
package. Options added to Locust's own parser (``locust -f perf/locustfile.py --help`` lists them):

    --model NAME[:WEIGHT]   model to load (repeat for several; weights split the requests)
    --protocol http|grpc    default: the --host URL's scheme, else http
    --batch-size B          samples per request (default 1)
    --data FILE             real samples (.npz or .json) instead of seeded random inputs
    --seed S                seed of the random inputs (default 0)
    --grpc-url HOST:PORT    gRPC endpoint when --host is an http:// URL (default: its host, port 8001)
    --request-timeout S     seconds before a request counts as failed (default 30)
    --shape step|ramp       play a load shape instead of -u/-r: step holds each --sweep level for
                            --level-duration seconds after --warmup; ramp grows to the top level over it
    --sweep 1,2,4,8         load levels for --shape (default: -u)
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from generator.errors import LoadTestError
from generator.harness import shapes
from generator.harness.plan import DEFAULT_TIMEOUT, plan_for
from generator.harness.recorder import REPORT_KEY, Recorder
from generator.harness.users import InferenceUser

__all__ = ["InferenceUser", "add_arguments"]

logger = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    """Add the harness's options to Locust's command-line parser."""
    group = parser  # Locust's parser (not an argument group) understands include_in_web_ui
    group.add_argument("--model", action="append", help="model to load, NAME or NAME:WEIGHT (repeatable)")
    group.add_argument("--protocol", choices=["http", "grpc"], default=None, help="default: from --host")
    group.add_argument("--batch-size", type=int, default=1, help="samples per request (default 1)")
    group.add_argument("--data", default=None, help="file of real samples (.npz or .json)")
    group.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    group.add_argument("--grpc-url", default=None, help="gRPC endpoint when --host is an http:// URL")
    group.add_argument(
        "--request-timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request (default 30)"
    )
    group.add_argument("--shape", choices=["step", "ramp"], default=None, help="play a load shape")
    group.add_argument("--sweep", default=None, help="load levels for --shape, e.g. 1,2,4,8 (default: -u)")
    group.add_argument(
        "--level-duration", type=float, default=10.0, help="seconds per level, or of the ramp (default 10)"
    )
    group.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per step (default 1)")
    group.add_argument(
        "--record-requests",
        action="store_true",
        default=False,
        help=argparse.SUPPRESS,
        include_in_web_ui=False,
    )


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        _record_for_master(environment)
    elif options.shape:
        levels = shapes.parse_levels(options.sweep) if options.sweep else [int(options.num_users or 1)]
        phases = shapes.schedule(levels, options.shape, options.level_duration, options.warmup)
        shape = shapes.PhasedShape.create(phases)
        shape.runner = environment.runner  # type: ignore[attr-defined]
        environment.shape_class = shape


def _record_for_master(environment: Any) -> None:
    """On a worker: keep every request's row and ship them with each report when the master asks."""
    recorder = Recorder()
    recorder.attach(environment.events)

    def on_report(client_id: str, data: dict[str, Any]) -> None:
        if getattr(environment.parsed_options, "record_requests", False):
            data[REPORT_KEY] = recorder.take_chunk()
        else:
            recorder.clear()

    environment.events.report_to_master.add_listener(on_report)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    """Check the server and the models before any user starts; stop the test with a clear error if not."""
    if isinstance(environment.runner, MasterRunner):
        return  # the workers check for themselves
    try:
        plan = plan_for(environment.parsed_options, environment.host)
    except LoadTestError as error:
        logger.error("%s", error)
        environment.process_exit_code = 1
        runner = environment.runner
        headless = bool(getattr(environment.parsed_options, "headless", False))
        if runner is not None and not isinstance(runner, WorkerRunner):
            gevent.spawn_later(0, runner.quit if headless else runner.stop)
        return
    logger.info(
        "loading %s on %s (batch %d)",
        ", ".join(m.name for m in plan.models),
        plan.target.url,
        plan.batch_size,
    )
