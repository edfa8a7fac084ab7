"""Judge each case twice: by ``validate`` and by the real embedded tritonserver, and compare.

:class:`Oracle` runs one server with explicit model control on a repository that starts empty. For each
case it writes the models twice: into a repository of their own, which
:func:`~generator.validate.run.validate_repository` judges for the same server (the embedded Triton on
this machine, as ``validate`` and ``serve`` do; errors of the loaded model mean refused),
and into the server's repository, where :class:`~generator.serve.control.ServerControl` loads the
model (Triton loads an ensemble's steps with it), records loaded or refused with Triton's message, and
unloads everything the case loaded. Names are prefixed per case, so one server serves a whole corpus.

Triton's message is the load call's answer; where that only says the repository could not be polled
(a config Triton cannot parse or that fails its first checks), it is Triton's reason from its log.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from generator.core.errors import GeneratorError
from generator.serve.control import ServerControl, Target
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.validate.run import validate_repository
from generator.validate.schema import Server

from .agreement import message_agrees
from .models import Case, write_case

__all__ = ["Oracle", "Verdict"]

_LOAD_PREFIX = re.compile(
    r"^Triton did not load model '[^']*': (\[\d+\] )?"
    r"(load failed for model '[^']*': version -?\d+ is at UNAVAILABLE state: )?"
)


@dataclass
class Verdict:
    """Both judgements of one case.

    Attributes:
        case: The case.
        prefix: What the case's model names are prefixed with on the server.
        name: The loaded model's name on the server.
        loaded: Whether Triton loaded the model.
        message: Triton's reason when it refused ('' when it loaded).
        errors: validate's errors for the model (none: validate passes it).
        warnings: validate's warnings for the model.
        crashed: Triton died loading it (on a fresh server too): refused, with no message to compare.
    """

    case: Case
    prefix: str
    name: str
    loaded: bool
    message: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    crashed: bool = False

    @property
    def refused(self) -> bool:
        """Triton refused the model."""
        return not self.loaded

    @property
    def agree(self) -> bool:
        """validate errs exactly where Triton refuses."""
        return self.refused == bool(self.errors)

    @property
    def outcome(self) -> str:
        """``caught``, ``missed`` (Triton refused, validate passed), ``false alarm`` or ``passed``."""
        if self.refused:
            return "caught" if self.errors else "missed"
        return "false alarm" if self.errors else "passed"

    @property
    def message_agrees(self) -> bool | None:
        """For a caught case, whether validate names the problem Triton names; else None (also where
        Triton crashed and named nothing)."""
        if self.outcome != "caught" or self.crashed:
            return None
        return message_agrees(self.message, self.errors)

    def explain(self) -> str:
        """Both verdicts and the case, for a failing test or the benchmark's list."""
        triton = f"Triton refused: {self.message}" if self.refused else "Triton loaded it"
        found = "; ".join(self.errors) if self.errors else "no error"
        if self.warnings and not self.errors:
            found += f" (warnings: {'; '.join(self.warnings)})"
        return f"{self.outcome}: {triton}\n  validate: {found}\n{self.case.describe(self.prefix)}"


class Oracle:
    """One embedded tritonserver with explicit model control, and validate, judging cases one by one.

    A load that kills the server, or never finishes, is Triton refusing the model (it cannot serve it);
    the next case gets a fresh server. Triton 2.51's Python backend never finishes loading a model
    whose stub exits before its first message (a missing ``model.py``): the stub logs why, and that
    line ends the wait at once.

    Args:
        workdir: Where the repositories go (a temporary directory when None, removed by :meth:`stop`).
        call_timeout: Seconds one control call waits for its answer; a load that takes longer is
            then watched through the repository index.
        load_timeout: Seconds a load may take in all before it counts as never finishing.
    """

    def __init__(
        self, workdir: Path | None = None, call_timeout: float = 5.0, load_timeout: float = 180.0
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="tritongen-oracle-")) if workdir is None else workdir
        self.served = self.workdir / "served"
        self.call_timeout = call_timeout
        self.load_timeout = load_timeout
        self.count = 0
        self.restarts = 0
        self.server: EmbeddedServer | None = None
        self.control: ServerControl | None = None
        self._stuck = False
        #: What validate judges for: the embedded Triton on this machine, the server that judges here.
        self.judged_for = Server.this_machine()

    def start(self) -> Oracle:
        """Start the server on an empty repository."""
        shutil.rmtree(self.served, ignore_errors=True)
        self.served.mkdir(parents=True)
        ports = {f"{kind}_port": find_free_port() for kind in ("http", "grpc", "metrics")}
        log = self.workdir / f"tritonserver-{self.restarts}.log"  # kept here after a crash, removed by stop
        self.server = EmbeddedServer(self.served, **ports, log_path=log, exit_timeout=1, supervise=False)
        self.server.start()
        host, port = self.server.endpoints.http.rsplit(":", 1)
        self.control = ServerControl(Target("http", host, int(port)), timeout=self.call_timeout)
        self._stuck = False
        return self

    def stop_server(self) -> None:
        """Stop the server and close the control client. Idempotent."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def stop(self) -> None:
        """Stop the server; remove the working directory if it was made here. Idempotent."""
        self.stop_server()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Oracle:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def judge(self, case: Case) -> Verdict:
        """Judge ``case`` by validate and by Triton.

        A crash is blamed on the case only when a fresh server, given nothing else, crashes on it too:
        Triton 2.51 at times crashes on the load after a failed one (a failed warm-up, an ensemble
        refused after its steps loaded).
        """
        self.count += 1
        prefix = f"c{self.count:04d}_"
        own = self.workdir / "cases" / prefix.rstrip("_")
        names = write_case(case, own, prefix)
        target = names[case.target.name]
        report = validate_repository(own, self.judged_for)
        verdict = Verdict(
            case,
            prefix,
            target,
            loaded=False,
            errors=[p.message for p in report.errors if p.model == target],
            warnings=[p.message for p in report.warnings if p.model == target],
        )
        for attempt in (1, 2):
            for name in names.values():
                shutil.copytree(own / name, self.served / name, symlinks=True)
            verdict.loaded, verdict.message = self._load(target)
            verdict.crashed = verdict.message.startswith(_CRASHED)
            if self._stuck or not self._alive():
                self.restart()
            else:
                for name in names.values():
                    self._unload(name)
            if not verdict.crashed or attempt == 2:
                return verdict
        return verdict

    def restart(self) -> None:
        """A fresh server on an empty repository (the last one crashed, or a load never finished)."""
        self.stop_server()
        self.restarts += 1
        self.start()

    def _load(self, name: str) -> tuple[bool, str]:
        assert self.server is not None and self.control is not None
        offset = self.server.log_size()
        try:
            self.control.load(name)
        except GeneratorError as error:
            message = _LOAD_PREFIX.sub("", str(error))
            if not self._alive():
                signal = _SIGNAL.search(_log_since(self.server.log_path, offset))
                return False, f"{_CRASHED} ({signal.group(0) if signal else self.server.failure or message})"
            if not _ANSWERED.match(str(error)):  # no answer in time: watch the load
                return self._watch(name, offset)
            if "failed to poll from model repository" in message:
                message = self.server.reason_since(offset) or message
            parse_error = _PARSE_ERROR.search(_log_since(self.server.log_path, offset))
            if parse_error:
                message += f" ({parse_error.group(0)})"
            return False, message
        return True, ""

    def _watch(self, name: str, offset: int) -> tuple[bool, str]:
        """Follow a load that outlived its call: READY, UNAVAILABLE, a stub that died, or no end."""
        assert self.server is not None and self.control is not None
        deadline = time.monotonic() + self.load_timeout
        while time.monotonic() < deadline:
            died = _STUB_DIED.search(_log_since(self.server.log_path, offset))
            if died:
                self._stuck = True
                return False, f"the load never finishes: {died.group(0)}"
            state, reason = self._state(name)
            if state == "READY":
                return True, ""
            if state == "UNAVAILABLE":
                return False, reason or self.server.reason_since(offset)
            time.sleep(0.5)
        self._stuck = True
        return False, f"the load did not finish in {self.load_timeout:.0f} s"

    def _state(self, name: str) -> tuple[str, str]:
        assert self.control is not None
        try:
            entries = self.control.index()
        except GeneratorError:
            return "", ""
        for entry in entries:
            if entry.get("name") == name:
                return str(entry.get("state", "")), str(entry.get("reason", ""))
        return "", ""

    def _alive(self) -> bool:
        """Whether the server still answers (a load can kill it: Triton crashes on some configs)."""
        assert self.server is not None and self.control is not None
        return self.control.is_live() or (self.server.is_running() and _wait_live(self.control))

    def _unload(self, name: str) -> None:
        assert self.control is not None
        with contextlib.suppress(GeneratorError):  # never loaded, or refused: nothing to unload
            self.control.unload(name)


#: An answer from Triton (an HTTP status), not a transport failure such as a timeout.
_ANSWERED = re.compile(r"^Triton did not load model '[^']*': \[\d+\]")
_CRASHED = "tritonserver crashed loading the model"
#: How Triton logs the signal that killed it.
_SIGNAL = re.compile(r"Signal \(\d+\) received")
#: What protobuf's text parser logs where Triton only says it could not read the config.
_PARSE_ERROR = re.compile(r"Error parsing text-format inference\.ModelConfig: [^\n]*")
#: What the Python backend's stub logs when it exits before the backend hears from it.
_STUB_DIED = re.compile(r"Failed to preinitialize Python stub: [^\n\"]*")


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _wait_live(control: ServerControl, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if control.is_live():
            return True
        time.sleep(0.2)
    return False
