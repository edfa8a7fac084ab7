"""Azurite, Microsoft's Azure Storage emulator, for the Azure push tests: found on PATH (``azurite-blob``),
at ``$AZURITE_BLOB``, or installed once from the npm registry into ``.cache/azurite`` where npm is.

Azurite is a Node.js program; no Python package emulates Azure Blob Storage, so the tests install the pinned
release themselves rather than asking every user to."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .servers import running_server

#: The newest Azurite whose engines allow Node.js 20 (3.36 and later need Node.js 22).
AZURITE_VERSION = "3.35.0"
#: Azurite's fixed development account and its published key (not a secret: every Azurite has it).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "azurite"


def azurite_blob() -> tuple[str | None, str]:
    """The ``azurite-blob`` executable, installing it with npm if need be; or ``None`` and why not."""
    given = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
    if given:
        return given, ""
    installed = CACHE / "node_modules" / ".bin" / "azurite-blob"
    if installed.exists():
        return str(installed), ""
    npm = shutil.which("npm")
    if npm is None:
        return None, f"Azurite is not installed and npm is not here: npm install -g azurite@{AZURITE_VERSION}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install when several test processes start at once
        if not installed.exists():
            command = [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(CACHE),
                f"azurite@{AZURITE_VERSION}",
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0 or not installed.exists():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                return None, f"npm could not install azurite@{AZURITE_VERSION}: {tail[0]}"
    return str(installed), ""


@contextlib.contextmanager
def running_azurite(executable: str, port: int, log: Path) -> Iterator[str]:
    """Azurite's blob service on 127.0.0.1:``port``, in memory, stopped on exit; yields the account URL."""
    command = [
        executable,
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",  # the Python SDK may speak a newer API version than this Azurite
        "--loose",
        "--disableTelemetry",  # Azurite otherwise reports usage to Microsoft
        "--silent",
    ]  # fmt: skip
    with running_server(command, port, log):
        yield f"http://127.0.0.1:{port}/{ACCOUNT}"


def connection_string(account_url: str) -> str:
    """The connection string of Azurite's account at ``account_url`` (what Azure's tools read)."""
    return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={account_url};"
