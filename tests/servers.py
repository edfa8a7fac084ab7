"""A store's server (Azurite, an emulator) run as a process of its own for a test or a benchmark."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running_server(command: list[str], port: int, log: Path, timeout: float = 60) -> Iterator[None]:
    """``command`` started with its output in ``log``, until it accepts connections on 127.0.0.1:``port``;
    stopped (terminated, killed if it lingers) on exit, also on failure.

    Raises:
        RuntimeError: It exited, or did not listen within ``timeout`` seconds.
    """
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{command[0]} exited with {process.returncode}: {log.read_text()[-500:]}"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{command[0]} did not listen on 127.0.0.1:{port} in {timeout:.0f} s"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
