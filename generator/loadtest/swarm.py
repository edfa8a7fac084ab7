"""The Locust side of one load test: its environment, its runner, and every request's record.

:class:`Swarm` owns a Locust ``Environment`` with the harness's user, and either an in-process
``LocalRunner`` (whose requests a :class:`~generator.loadtest.recorder.Recorder` records here) or a
``MasterRunner`` for the Locust workers that :mod:`~generator.loadtest.run` started (whose records arrive in
their reports). Stopping it collects the last records: from this process at once, or from every worker's
final report.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import gevent
from locust.env import Environment
from locust.event import Events

from generator.core.errors import LoadTestError
from generator.loadtest.recorder import REPORT_KEY, Recorder, Records
from generator.loadtest.users import InferenceUser

if TYPE_CHECKING:
    from collections.abc import Callable

    from generator.loadtest.distributed import LocalWorkers, RemoteWorkers
    from generator.loadtest.plan import Plan

__all__ = ["STOP_TIMEOUT", "Swarm"]

_REPORT_WAIT = 10.0
STOP_TIMEOUT = 2.0  # users finish the request in flight; Locust workers also idle this long after a stop


class Swarm:
    """One Locust environment with its runner and records (see the module docstring).

    Args:
        plan: The resolved test (its requests already built in this process).
        parsed: Locust's parsed options carrying the harness's options (sent on to workers).
        workers: Started Locust worker processes, workers expected from other machines, or None to run in
            this process.
        stack: Where the runner's shutdown is registered.
        notes: Where a note for the report goes (records that did not arrive).

    Attributes:
        records: Every request's record so far.
        env: Locust's environment.
    """

    def __init__(
        self,
        plan: Plan,
        parsed: Any,
        workers: LocalWorkers | RemoteWorkers | None,
        stack: contextlib.ExitStack,
        notes: list[str],
    ) -> None:
        self.records = Records([m.name for m in plan.models])
        self.env = Environment(
            user_classes=[InferenceUser],
            events=Events(),
            host=plan.target.url,
            parsed_options=parsed,
            stop_timeout=STOP_TIMEOUT,
        )
        self.workers = workers
        self.stack = stack
        self.notes = notes
        self.recorder: Recorder | None = None

    def start(self, waiting: Callable[[], None]) -> Any:
        """Create the runner (for workers: once they have all connected) and return it; no user runs yet.

        Args:
            waiting: Called when the master listens, before it waits for the workers to connect.
        """
        if self.workers is not None:
            runner = self.env.create_master_runner(
                master_bind_host=self.workers.bind_host, master_bind_port=self.workers.master_port
            )
            self.env.events.worker_report.add_listener(self._on_worker_report)
            self.stack.callback(runner.quit)  # before workers.stop: quit tells the workers to exit
            waiting()
            self.workers.wait_connected(runner)
            return runner
        self.recorder = Recorder()
        self.recorder.attach(self.env.events)
        runner = self.env.create_local_runner()
        self.stack.callback(runner.quit)
        return runner

    def _on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        chunk = data.get(REPORT_KEY)
        if chunk is not None:
            self.records.add_chunk(chunk, source=client_id)

    def stop(self, runner: Any) -> float:
        """Stop the users (each finishes its request in flight), collect every record; return the end time."""
        runner.stop()
        ended = time.time()
        if self.recorder is not None or self.workers is None:
            if self.recorder is not None:
                self.records.add_chunk(self.recorder.take_chunk())
            return ended
        deadline = time.monotonic() + _REPORT_WAIT
        while time.monotonic() < deadline:
            reported = self.records.last_report
            if len(reported) >= self.workers.count and min(reported.values()) >= ended:
                break
            gevent.sleep(0.2)
        else:
            self.notes.append(
                "not every Locust worker sent its last requests; the final figures may miss a few"
            )
        # A stopped worker rejoins after stop_timeout; one that has not rejoined would miss the quit message.
        with contextlib.suppress(LoadTestError):
            self.workers.wait_connected(runner, timeout=STOP_TIMEOUT + 5.0)
        return ended
