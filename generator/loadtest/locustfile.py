"""The harness as a locustfile: the inference user, its command-line options, shapes, worker recording.

``perf/locustfile.py`` re-exports this module's user for plain Locust runs (web UI or headless);
``python -m generator loadtest --workers K`` starts its Locust workers on this file, so it ships inside the
package. Its options are the load-test options of :mod:`generator.loadtest.options` that apply to plain
Locust (``locust -f perf/locustfile.py --help`` lists them); Locust's own ``-u``, ``-r``, ``-t`` and
``--host`` set the users, spawn rate, run time and server. ``--load-shape step|ramp`` (``--shape
step|ramp`` also works; ``--shape NAME:DIMS`` gives an input's dims) plays a load shape instead of
``-u``/``-r``: step holds each ``--sweep`` level for ``--duration`` seconds (``--level-duration`` also
works) after ``--warmup``; ramp grows to the top level over it.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from generator.core.errors import LoadTestError
from generator.loadtest import shapes
from generator.loadtest.options import add_locust_options
from generator.loadtest.plan import plan_for
from generator.loadtest.recorder import REPORT_KEY, Recorder
from generator.loadtest.users import InferenceUser

__all__ = ["InferenceUser", "add_arguments"]

logger = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    """Add the harness's options (:data:`~generator.loadtest.options.OPTIONS`) to Locust's parser."""
    add_locust_options(parser)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        _record_for_master(environment)
    elif options.shape:
        levels = shapes.parse_levels(options.sweep) if options.sweep else [int(options.num_users or 1)]
        phases = shapes.schedule(levels, options.shape, options.duration, options.warmup)
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
