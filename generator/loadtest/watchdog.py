"""The watchdog of a load test: it ends the run early when the server, a Locust worker or a user dies.

:class:`Watchdog` is asked at every tick of a session. The server process (when the harness started it) and
the users' own failures are checked every time; the Locust workers and the server's liveness (a probe on its
own short-timeout connection) at most once a second, and the server counts as gone after two probes in a
row fail. A breach raises :class:`Aborted`, which the session turns into a report of what it measured.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from generator.core.errors import LoadTestError

if TYPE_CHECKING:
    from generator.loadtest.distributed import LocalWorkers, RemoteWorkers
    from generator.serve.control import ServerControl
    from generator.serve.server import EmbeddedServer

__all__ = ["Aborted", "Watchdog"]

_WATCH_INTERVAL = 1.0


class Aborted(Exception):
    """The server died; the run ends early with a report."""


class Watchdog:
    """Watches the server, the workers and the users of one run (see the module docstring).

    Args:
        url: The server's URL, for the message.
        probe: A control-plane connection with a short timeout, for the liveness probe.
        server: The embedded server when the harness started it, else None.
        workers: The Locust workers, or None when the users run in this process.

    Attributes:
        probe_failures: Probes failed in a row (one is forgiven: the next decides).
    """

    def __init__(
        self,
        url: str,
        probe: ServerControl,
        server: EmbeddedServer | None,
        workers: LocalWorkers | RemoteWorkers | None,
    ) -> None:
        self.url = url
        self.probe = probe
        self.server = server
        self.workers = workers
        self.probe_failures = 0
        self._last_watch = 0.0

    def check(self, runner: Any, now: bool = False) -> None:
        """End the run (raise :class:`Aborted`) when the server or a worker has died.

        Args:
            runner: Locust's runner, whose exceptions are the users that broke (None before it starts).
            now: Probe the server now rather than at most once a second.
        """
        if self.server is not None and not self.server.is_running():
            raise Aborted("the Triton server process exited during the run")
        failures = list(runner.exceptions.values()) if runner else []
        if failures:  # the users report failed requests themselves: anything here is a user that broke
            message = " ".join(str(failures[0].get("msg", "")).split())
            raise Aborted(f"a Locust user failed: {message}")
        moment = time.monotonic()
        if not now and moment - self._last_watch < _WATCH_INTERVAL:
            return
        self._last_watch = moment
        if self.workers is not None:
            try:
                self.workers.check_alive()
            except LoadTestError as error:
                raise Aborted(str(error)) from None
        if self.probe.is_live():
            self.probe_failures = 0
            return
        self.probe_failures += 1
        if self.probe_failures >= 2:
            raise Aborted(f"Triton at {self.url} stopped answering during the run")
