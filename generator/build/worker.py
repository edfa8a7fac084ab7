"""Runs the export step of models whose source is user code in a separate process.

A ``file.py:function`` factory, a pickled module or a Keras file runs arbitrary Python: it may call
``sys.exit``, ``os._exit``, raise ``BaseException`` or crash the interpreter. Run in the build's own
process, any of these ends the build (and leaves its staging directory behind). :class:`ExportWorker`
runs the step in one child process, reused across the models of a build so the frameworks are
imported once; whatever the child does, the build gets a result or an :class:`ExportError` naming the
model, and a child that died is replaced by a fresh one for the next model.

The child also records which files of the user's directories the step imported or read (a factory's
helper modules, its weights), so a rebuild can tell when they changed, and forgets the modules it
imported from those directories before the next model so each model sees its own files.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from generator.core.errors import ExportError, GeneratorError

log = logging.getLogger(__name__)

#: Set to 1 to run factories in the build's own process (to debug one with pdb); a factory that exits
#: or crashes then ends the build.
IN_PROCESS_ENV = "TRITONGEN_EXPORT_IN_PROCESS"
_STOP_SECONDS = 10.0


@dataclass
class Outcome:
    """What a step run by :class:`ExportWorker` gave back.

    Attributes:
        value: The step's return value.
        user_files: Absolute paths of the files under the step's roots that it imported or read.
    """

    value: Any
    user_files: list[str] = field(default_factory=list)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in the export process (its ``__cause__`` in this one)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


#: What the export process runs: ignore Ctrl-C (the parent stops it), die with the parent (on Linux the
#: kernel sends SIGKILL when the build dies; the parent-pid check covers a build that died before that
#: was set), take the parent's import path from the connection, then serve. Started with ``python -c``
#: rather than multiprocessing's spawn, which would re-run the caller's main script in the child.
_BOOTSTRAP = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, Linux only
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[2]):
    os._exit(1)
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
sys.path[:] = conn.recv()
from generator.build.worker import _serve
_serve(conn, conn.recv(), int(sys.argv[2]))
"""
_PARENT_POLL_SECONDS = 0.5


class ExportWorker:
    """One child process that runs export steps, started on first use and stopped by :meth:`close`.

    Use as a context manager around a build. Each :meth:`run` call sends a module-level function and
    its arguments to the process, relays its progress and log records, and returns its
    :class:`Outcome` or raises what it raised (a :class:`GeneratorError` as itself, ``SystemExit`` and
    other ``BaseException`` as :class:`ExportError`).

    Args:
        in_process: Run steps in this process instead (no isolation; to debug a factory with pdb).
            Default: whether the environment variable ``TRITONGEN_EXPORT_IN_PROCESS`` is 1.
    """

    def __init__(self, in_process: bool | None = None) -> None:
        if in_process is None:
            in_process = os.environ.get(IN_PROCESS_ENV, "").strip().lower() in ("1", "true", "yes")
        self.in_process = in_process
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._busy = False  # a step is running: closing now (Ctrl-C, an error here) kills the process

    def __enter__(self) -> ExportWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> Connection:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
            )
            conn = Connection(os.dup(ours.fileno()))
        levels = {
            name: logger.level
            for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
        }
        self._process, self._conn = process, conn
        try:
            conn.send([p for p in sys.path if p])
            conn.send(
                {
                    "root_level": logging.getLogger().getEffectiveLevel(),
                    "levels": levels,
                    "warnings": _portable_warning_filters(),
                }
            )
        except OSError:
            pass  # it died at once; run() reports how
        log.debug("started export process %s", process.pid)
        return conn

    def run(
        self,
        label: str,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        roots: list[Path],
        exclude: list[Path],
        progress: Callable[[str], None],
    ) -> Outcome:
        """Run ``function(*args, progress=...)`` in the export process (or here, when ``in_process``).

        Args:
            label: Names the work in errors (``model 'digits_cnn'``).
            function: A module-level function (sent by reference); it gets a ``progress`` keyword.
            args: Picklable arguments.
            roots: Directories whose files, when the step imports or reads them, are reported.
            exclude: Directories never reported (the repository being written).
            progress: Called here with each stage the step reports.

        Raises:
            ExportError: the process exited or was killed, or the step raised ``BaseException``.
            GeneratorError: what the step raised.
        """
        if self.in_process:
            _install_audit_hook()
            with _tracking(roots, exclude) as files:
                value = function(*args, progress=progress)
            return Outcome(value, files)
        alive = self._process is not None and self._process.poll() is None
        conn = self._conn if alive and self._conn is not None else None
        if conn is None:
            self.close()
            conn = self._start()
        try:
            conn.send((label, function, args, [str(r) for r in roots], [str(e) for e in exclude]))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise ExportError(f"{label}: cannot hand the model to the export process: {exc}") from None
        except OSError:
            self._died(label)
        self._busy = True
        while True:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                self._died(label)
            if kind == "progress":
                progress(payload)
                continue
            if kind == "log":
                logging.getLogger(payload.name).handle(payload)
                continue
            self._busy = False
            if kind == "done":
                return payload
            elif kind == "error":
                error_type, problems = payload
                raise error_type(*(_printable(problem) for problem in problems))
            else:  # "raised": an exception that is not one of ours, with its traceback text
                error, text = payload
                if error is None:
                    last = _printable(text.strip().splitlines()[-1]) if text.strip() else "no message"
                    raise ExportError(f"{label}: the export failed: {last}")
                raise error from RemoteTraceback(text)

    def _died(self, label: str) -> NoReturn:
        code = self._stop(wait=_STOP_SECONDS)
        raise ExportError(
            f"{label}: the export process {_how_it_ended(code)} before it finished; fix the factory "
            "(it must return the model, not exit or crash the interpreter)"
        )

    def _stop(self, wait: float) -> int | None:
        """Wait up to ``wait`` seconds for the process to end, then kill it; return its exit code."""
        process, conn, self._process, self._conn = self._process, self._conn, None, None
        self._busy = False
        if conn is not None:
            conn.close()
        if process is None:
            return None
        try:
            return process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def close(self) -> None:
        """Stop the process (asking first; killing it if it is still running a step); safe to call again."""
        if self._busy:
            self._stop(wait=0)
            return
        if self._conn is not None:
            with suppress(OSError):
                self._conn.send(None)
        self._stop(wait=_STOP_SECONDS)


def _printable(line: str) -> str:
    """An error line from the export process as one plain line: frameworks colour words in their messages
    (terminal escape codes) and may put newlines in the text a step's error quotes."""
    from generator.build.exporters.base import one_line

    return one_line(line)


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _portable_warning_filters() -> list[tuple[str, str, str, str, int]]:
    """The warning filters whose category is a built-in warning, as plain data for the child."""
    portable = []
    for action, message, category, module, lineno in warnings.filters:
        if getattr(category, "__module__", "") == "builtins":
            portable.append(
                (
                    action,
                    getattr(message, "pattern", message) or "",
                    category.__name__,
                    getattr(module, "pattern", module) or "",
                    lineno,
                )
            )
    return portable


# ---- the child process ---------------------------------------------------------------------------


class _Sender:
    """Sends messages to the parent from any thread of the child."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, kind: str, payload: Any) -> None:
        with self.lock:
            self.conn.send((kind, payload))


class _ForwardLogs(logging.Handler):
    def __init__(self, sender: _Sender) -> None:
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg = record.getMessage()
            record.args = None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            self.sender.send("log", record)
        except Exception:  # a log record must never fail the export
            self.handleError(record)


def _configure(settings: dict[str, Any], sender: _Sender) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_ForwardLogs(sender)]
    root.setLevel(settings["root_level"])
    for name, level in settings["levels"].items():
        logging.getLogger(name).setLevel(level)
    warnings.resetwarnings()
    for action, message, category, module, lineno in reversed(settings["warnings"]):
        warnings.filterwarnings(action, message, getattr(__import__("builtins"), category), module, lineno)
    _install_audit_hook()


def _exit_with(parent: int) -> None:
    """End this process as soon as ``parent`` is no longer its parent (where the kernel does not do it)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)


def _serve(conn: Connection, settings: dict[str, Any], parent: int) -> None:
    """The child's loop: run each task sent until ``None`` arrives or the parent goes away.

    A step never outlives the build that asked for it: a killed build's staging directory must not be
    written to after the build died.
    """
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    sender = _Sender(conn)
    _configure(settings, sender)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:  # done: skip the interpreter's slow teardown of the frameworks
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        label, function, args, roots, exclude = task
        try:
            with _tracking([Path(r) for r in roots], [Path(e) for e in exclude]) as files:
                value = function(*args, progress=lambda stage: sender.send("progress", stage))
            sender.send("done", Outcome(value, files))
        except GeneratorError as exc:
            sender.send("error", (type(exc), exc.problems))
        except Exception as exc:
            text = "".join(traceback.format_exception(exc))
            try:
                pickle.dumps(exc)
                sender.send("raised", (exc, text))
            except Exception:
                sender.send("raised", (None, text))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, a bare BaseException from user code
            what = f"{type(exc).__name__}({exc})" if str(exc) else type(exc).__name__
            sender.send(
                "error",
                (
                    ExportError,
                    [
                        f"{label}: the export step raised {what}; fix the factory "
                        "(it must return the model, not exit)"
                    ],
                ),
            )


_reads: set[str] | None = None
_hooked = False


def _install_audit_hook() -> None:
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)  # cannot be removed; it does nothing outside _tracking
        _hooked = True


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Collect the paths of files opened for reading while a step is tracked."""
    if _reads is None or event != "open":
        return
    path, mode, flags = args
    if isinstance(path, int):
        return
    if mode is None:
        if flags & (os.O_WRONLY | os.O_RDWR):
            return
    elif any(c in mode for c in "wax+"):
        return
    _reads.add(os.fsdecode(path))


def _excluded_dirs() -> list[Path]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    paths.update(p for p in sysconfig.get_paths().values())
    paths.add(str(Path(__file__).resolve().parent.parent))  # tritongen itself
    return [Path(p).resolve() for p in paths if p]


def _user_file(path: Path, roots: list[tuple[Path, list[Path]]]) -> bool:
    if "__pycache__" in path.parts or path.suffix == ".pyc":
        return False
    for root, excluded in roots:
        if path.is_relative_to(root) and not any(path.is_relative_to(e) for e in excluded):
            return True
    return False


@contextmanager
def _tracking(roots: list[Path], exclude: list[Path]) -> Iterator[list[str]]:
    """Yield a list that, on exit, holds the user files the block imported or read.

    Modules first imported in the block from the roots are removed from ``sys.modules`` on exit, so
    the next step imports its own (possibly edited) copies.
    """
    global _reads
    system = _excluded_dirs()
    resolved = [r.resolve() for r in roots]
    # A directory that holds the root itself (a spec inside a virtual environment) does not exclude it.
    scoped = [
        (root, [e.resolve() for e in exclude] + [d for d in system if not root.is_relative_to(d)])
        for root in resolved
    ]
    # Cheap string tests first: most imports and reads are the frameworks', far from the roots.
    prefixes = tuple({str(r) for r in roots} | {str(r) for r in resolved})
    before = set(sys.modules)
    found: list[str] = []
    _reads = set()
    try:
        yield found
    finally:
        reads, _reads = _reads, None
        candidates: set[Path] = set()
        for name in set(sys.modules) - before:
            module_file = getattr(sys.modules.get(name), "__file__", None)
            if not module_file or not os.path.abspath(module_file).startswith(prefixes):
                continue
            path = Path(module_file).resolve()
            if _user_file(path, scoped):
                candidates.add(path)
                sys.modules.pop(name, None)
        for read in reads:
            absolute = os.path.abspath(read)
            if not absolute.startswith(prefixes):
                continue
            path = Path(absolute).resolve()
            if path not in candidates and path.is_file() and _user_file(path, scoped):
                candidates.add(path)
        found.extend(str(p) for p in sorted(candidates) if p.is_file())
