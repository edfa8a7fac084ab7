"""The supervision of a running ``tritonserver``: the watcher thread, its restarts and reloads, and the drain.

Triton 2.51 has neither a request-size limit nor a way to restart a dead backend stub, so while a server
runs, :class:`Supervisor`'s watcher thread keeps it serving:

* if ``tritonserver`` dies (one HTTP request declaring a shape such as ``[2147483648, 64]`` makes this
  build abort with ``std::bad_alloc``), the outage is logged and the server is restarted on the same ports,
  its output appended to the same log; after ``immediate_restarts`` crashes within a minute each restart
  waits a back-off (:func:`backoff`: 1 s, doubling, at most 30 s), and it is restarted for as long as it
  comes back up;
* if a model's Python backend stub dies, Triton keeps reporting the model ready while the requests routed
  to that instance fail, so the model is reloaded through Triton's model control (the server runs with
  ``--model-control-mode=explicit --load-model=*``); if the reload fails, the model is unloaded so that
  its readiness tells the truth. The previous load's healthy stubs, which Triton never stops once a
  request failed on the dead one, are killed after ``exit_timeout`` seconds (:class:`StubTracker`).

A stop drains first (:meth:`Supervisor.drain`): every model is unloaded, so new requests fail at once with
Triton's "unknown model" error while in-flight ones finish. Every call to Triton goes through the control
client (:mod:`generator.serve.control`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import psutil

from generator.core.errors import ServerError
from generator.serve.control import ServerControl, Target, release_thread_hub
from generator.serve.launch import STUB_NAME
from generator.serve.process import ServerProcess

__all__ = ["StubTracker", "Supervisor", "backoff"]

logger = logging.getLogger(__name__)

_WATCH_SECONDS = 0.25
#: How long a stub stays a zombie before it counts as dead: Triton reaps the stubs it stops itself (a Python
#: model's auto-complete stub, an unloaded instance's) a moment after they exit, and a look in that moment
#: must not take a stub that ended by design for a crash.
_ZOMBIE_GRACE_SECONDS = 2.0
_RESTART_WINDOW_SECONDS = 60.0
_BACKOFF_MAX_SECONDS = 30.0
_BUSY_STATES = ("READY", "LOADING", "UNLOADING")


def backoff(crashes: int, immediate: int) -> float:
    """Seconds to wait before a restart, after ``crashes`` crashes within the restart window.

    The first ``immediate`` restart at once; each later one waits twice as long as the one before, from
    1 s up to 30 s, so a server that keeps crashing does not spin while a client can still be served
    between crashes.
    """
    beyond = crashes - max(immediate, 0)
    return 0.0 if beyond <= 0 else min(_BACKOFF_MAX_SECONDS, 2.0 ** (beyond - 1))


class StubTracker:
    """The backend stub processes of one server: which model each serves, which died, which are retired.

    Args:
        repository: The repository as the server's command line names it (a stub's model is the first
            part of its model file's path inside it).
        exit_timeout: Seconds a retired stub may still run (for requests in flight on it).
    """

    def __init__(self, repository: str, exit_timeout: int) -> None:
        self.repository = repository
        self.exit_timeout = exit_timeout
        self.stubs: dict[int, str] = {}  # pid -> model of the live backend stubs seen
        self._handled: set[int] = set()  # dead stubs already acted on
        self._retired: dict[int, float] = {}  # pid -> deadline of the stubs of a reloaded model's old load
        self._zombies: dict[int, float] = {}  # pid -> when a stub was first seen a zombie

    def clear(self) -> None:
        """Forget every stub (a new server process has stubs of its own)."""
        self.stubs.clear()
        self._handled.clear()
        self._retired.clear()
        self._zombies.clear()

    def dead_stubs(self, server: int) -> dict[str, list[int]]:
        """Models whose backend stub process died since the last look, with the stubs' pids.

        A stub that dies on its own stays a zombie child of ``tritonserver`` (Triton does not reap it),
        while Triton reaps the stubs it stops itself a moment after they exit; so a stub that stays a
        zombie for ``_ZOMBIE_GRACE_SECONDS`` is a dead model instance. A zombie's command line cannot be
        read, so each live stub's model is noted when it is first seen.
        """
        stubs, handled = self.stubs, self._handled
        try:
            children = psutil.Process(server).children()
        except psutil.Error:
            return {}
        dead: dict[str, list[int]] = {}
        present = set()
        for child in children:
            present.add(child.pid)
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    if child.pid in stubs and child.pid not in handled:
                        since = self._zombies.setdefault(child.pid, time.monotonic())
                        if time.monotonic() - since >= _ZOMBIE_GRACE_SECONDS:
                            handled.add(child.pid)
                            dead.setdefault(stubs[child.pid], []).append(child.pid)
                elif child.pid not in stubs and child.pid not in self._retired:
                    command = child.cmdline()
                    if len(command) > 1 and Path(command[0]).name == STUB_NAME:
                        stubs[child.pid] = self.model_of(Path(command[1]))
            except psutil.Error:
                continue
        for pid in set(stubs) - present:
            del stubs[pid]
        handled &= present
        for pid in set(self._zombies) - present:
            del self._zombies[pid]
        return dead

    def model_of(self, model_file: Path) -> str:
        """The model a stub serves, from its first argument: ``<repository>/<model>/<version>/<file>``."""
        try:
            return model_file.relative_to(Path(self.repository).resolve()).parts[0]
        except ValueError:
            return model_file.parents[1].name

    def others_of(self, model: str, dead: list[int]) -> list[int]:
        """The live stubs of ``model`` but the ``dead`` ones."""
        return [pid for pid, owner in self.stubs.items() if owner == model and pid not in dead]

    def retire(self, pids: list[int]) -> None:
        """Note the healthy stubs of a model's previous load, which :meth:`stop_retired` makes sure end.

        Triton 2.51 never finishes unloading a model's previous load once a request failed on its dead
        stub, so its healthy stubs would run (and hold their memory) until the server stops.
        """
        deadline = time.monotonic() + self.exit_timeout  # in-flight requests on them finish first
        for pid in pids:
            self.stubs.pop(pid, None)
            self._retired[pid] = deadline

    def stop_retired(self, server: int) -> None:
        """Kill the retired stubs still running past their deadline; forget those that ended."""
        for pid, deadline in list(self._retired.items()):
            try:
                child = psutil.Process(pid)
                running = child.ppid() == server and child.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                running = False
            if not running:
                del self._retired[pid]
            elif time.monotonic() >= deadline:
                logger.warning(
                    "the backend stub (pid %d) of a model's previous load was still running %d s after "
                    "the reload; stopping it",
                    pid,
                    self.exit_timeout,
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                self._retired[pid] = float("inf")  # forgotten once it is gone


class Supervisor:
    """Keeps one start of a server serving, from its readiness to its drain.

    Args:
        run: The start's server process.
        target: The server's HTTP endpoint, which the control client asks.
        repository: The repository as the server's command line names it.
        supervise: Restart a dead server and reload a model whose stub died; without it, a dead server
            is down for good.
        immediate_restarts: Crashes within a minute restarted at once, before the back-off.
        startup_timeout: Seconds a (re)start and a model's reload may take.
        exit_timeout: Seconds a drain waits for requests in flight, and a retired stub may run.

    Attributes:
        stopping: Set when the server is being stopped; the watcher ends and waits end early.
        down: Set when the server is down for good (stopped, or dead and not restarted).
        failure: Why the server is down for good after a crash, as one line; else None.
        returncode: Exit code of the server's last process (None while none exited).
        crashed: Whether the server crashed since the start.
        restarts: How often the server was restarted since the start.
        reloads: How often a model whose backend stub died was reloaded since the start.
    """

    def __init__(
        self,
        run: ServerProcess,
        target: Target,
        *,
        repository: str,
        supervise: bool,
        immediate_restarts: int,
        startup_timeout: float,
        exit_timeout: int,
    ) -> None:
        self.run = run
        self.target = target
        self.supervise = supervise
        self.immediate_restarts = immediate_restarts
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.stopping = threading.Event()
        self.down = threading.Event()
        self.failure: str | None = None
        self.returncode: int | None = None
        self.crashed = False
        self.restarts = 0
        self.reloads = 0
        self._crash_times: list[float] = []
        self._stubs = StubTracker(repository, exit_timeout)
        self._watcher: threading.Thread | None = None

    def control(self, timeout: float = 10.0) -> ServerControl:
        """A control client for the server; use it in the thread that made it, and close it before the
        server stops (Triton waits for idle keep-alive connections to close)."""
        return ServerControl(self.target, timeout=timeout)

    def wait_ready(self) -> None:
        """Wait until the server answers ready (see :meth:`ServerProcess.wait_ready`)."""
        with self.control(timeout=1.0) as control:
            self.run.wait_ready(control.is_ready, self.startup_timeout, self.stopping)

    def watch(self) -> None:
        """Note every stub (before one can die unseen), then start the watcher thread."""
        self._stubs.clear()
        assert self.run.popen is not None
        self._stubs.dead_stubs(self.run.popen.pid)
        self._watcher = threading.Thread(target=self._watch, name="tritonserver-watcher", daemon=True)
        self._watcher.start()

    def halt(self) -> None:
        """Stop supervising: end the waits and the watcher thread (unless called from it)."""
        self.stopping.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()

    def warn_uncached(self) -> None:
        """Say which loaded models ask for the response cache, which the server does not enable.

        Triton 2.51 (and Triton's core to this day) stores every response a backend sends in the cache,
        a failed one included, as an entry without outputs, keyed on the model and the request's input
        bytes, not its shape: after one failure (a stub that died, a batch-0 request whose row of data
        passes Triton's checks) every later request with the same bytes would answer 200 with no outputs.
        """
        try:
            with self.control() as control:
                names = [m["name"] for m in control.index() if m.get("state") == "READY"]
                cached = []
                for name in dict.fromkeys(names):
                    if (control.config(name).get("response_cache") or {}).get("enable"):
                        cached.append(name)
        except (KeyError, ServerError) as error:
            logger.debug("could not read the models' configs: %s", error)
            return
        if cached:
            logger.warning(
                "serving %s without the response cache %s: Triton 2.51 caches a failed request as an "
                "empty success for every later request with the same input bytes",
                ", ".join(f"'{name}'" for name in cached),
                "it asks for" if len(cached) == 1 else "they ask for",
            )

    def drain(self) -> None:
        """Unload every model so that new requests fail at once; wait for in-flight ones to finish."""
        deadline = time.monotonic() + self.exit_timeout
        try:
            with self.control() as control:
                index = control.index()
                for name in dict.fromkeys(m["name"] for m in index if m.get("state") in _BUSY_STATES):
                    control.unload(name)
                while time.monotonic() < deadline:
                    if not any(m.get("state") in _BUSY_STATES for m in control.index()):
                        return
                    time.sleep(0.05)
            logger.warning(
                "requests were still in flight after %d s; stopping Triton anyway", self.exit_timeout
            )
        except (KeyError, ServerError) as error:
            logger.warning("could not unload the models before stopping Triton: %s", error)

    def _watch(self) -> None:
        """The watcher thread: restart a dead server, reload models whose stub died."""
        try:
            self._watch_until_down()
        finally:
            release_thread_hub()

    def _watch_until_down(self) -> None:
        while not self.stopping.wait(_WATCH_SECONDS):
            process = self.run.popen
            if process is None:
                return
            code = process.poll()
            if code is not None:
                if self.stopping.is_set() or not self._recover(code):
                    self.down.set()
                    return
                self._stubs.clear()
                if self.run.popen is not None:
                    self._stubs.dead_stubs(self.run.popen.pid)
            elif self.supervise:
                for model, pids in self._stubs.dead_stubs(process.pid).items():
                    self._reload(model, pids)
                    self._stubs.dead_stubs(process.pid)  # learn the new stubs at once
                self._stubs.stop_retired(process.pid)

    def _recover(self, code: int) -> bool:
        """Log the crash and restart the server on the same ports; False when it stays down.

        A server that crashes again after its endpoints came back (a client repeating a request that
        aborts it) is restarted again, after a back-off once crashes are frequent; it stays down only
        when a restart fails to come up at all (or the server is stopped).
        """
        run = self.run
        self.crashed = True
        where = f"(server log: {run.log_path})"
        crashed_at = time.monotonic()
        while True:
            assert run.popen is not None
            pid = run.popen.pid
            self.returncode = code
            reason = run.crash_reason(code)
            now = time.monotonic()
            self._crash_times = [t for t in self._crash_times if now - t < _RESTART_WINDOW_SECONDS]
            self._crash_times.append(now)
            run.stop(0.0)  # its orphaned stubs, its reaper, its shared memory
            if not self.supervise:
                self.failure = f"tritonserver exited unexpectedly ({reason}) {where}"
                logger.error("%s", self.failure)
                return False
            delay = backoff(len(self._crash_times), self.immediate_restarts)
            logger.error(
                "tritonserver (pid %d) exited unexpectedly (%s); restarting it on the same ports%s %s",
                pid,
                reason,
                f" in {delay:g} s ({len(self._crash_times)} crashes within {_RESTART_WINDOW_SECONDS:g} s)"
                if delay
                else "",
                where,
            )
            if self.stopping.wait(delay):
                return False
            try:
                run.spawn(append=True)
                self.wait_ready()
                break
            except ServerError as error:
                if self.stopping.is_set():
                    return False
                again = run.popen
                if again is not None and again.poll() is not None and run.served_since_spawn():
                    code = again.returncode  # up, then aborted again: one more crash
                    continue
                self.failure = f"tritonserver exited unexpectedly ({reason}) and did not restart: {error}"
                logger.error("%s", self.failure)
                return False
        self.restarts += 1
        logger.warning(
            "Triton is serving again (pid %d) after an outage of %.1f s",
            run.popen.pid if run.popen else -1,
            time.monotonic() - crashed_at,
        )
        return True

    def _reload(self, model: str, pids: list[int]) -> None:
        """Reload ``model`` in place (its healthy instances serve meanwhile); unload it if that fails."""
        logger.error(
            "the backend stub process of model '%s' (pid %s) died; reloading the model",
            model,
            ", ".join(map(str, pids)),
        )
        began = time.monotonic()
        old = self._stubs.others_of(model, pids)
        try:
            with self.control() as control, self.control(timeout=self.startup_timeout) as loader:
                # A load that carries a config always reloads, even when the files are unchanged.
                loader.load(model, json.dumps(control.config(model)))
        except ServerError as error:
            logger.error("could not reload model '%s' (%s); unloading it so it reports unready", model, error)
            with contextlib.suppress(ServerError), self.control() as control:
                control.unload(model)
            return
        finally:
            self._stubs.retire(old)
        self.reloads += 1
        logger.warning("model '%s' was reloaded in %.1f s", model, time.monotonic() - began)
