"""perf_analyzer 2.51 for tests: found on PATH or where the repository's benchmark unpacks it, run against
the embedded server with a model's own data file; a test skips where it is not installed or cannot start."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from generator.serve.launch import locate_triton


def perf_analyzer_binary() -> Path | None:
    """perf_analyzer 2.51 on PATH, or where the repository's benchmark unpacks it."""
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache / "tritongen" / "perf_analyzer-2.51.0" / "perf_analyzer"
    return binary if binary.is_file() else None


def _libraries(directory: Path) -> dict[str, str]:
    """An environment whose LD_LIBRARY_PATH gives perf_analyzer the libraries the server's wheel carries
    (libcudart.so.12; libb64.so.0d where the system lacks it), linked into ``directory``."""
    libs = locate_triton().libs_dir
    for pattern, name in (("libcudart*.so*", "libcudart.so.12"), ("libb64*.so*", "libb64.so.0d")):
        found = sorted(libs.glob(pattern))
        if found:
            (directory / name).symlink_to(found[0])
    search = [str(directory), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, search))}


def run_perf_analyzer(url: str, protocol: str, model: str, data_file: Path, batch: int = 2) -> str:
    """Drive ``model`` at concurrency 2 with ``data_file``; its output. Skips the test where perf_analyzer
    is not installed or cannot start; fails it where perf_analyzer fails.
    """
    binary = perf_analyzer_binary()
    if binary is None:
        pytest.skip("perf_analyzer is not installed (it ships in the tritonclient 2.51.0 wheel)")
    with tempfile.TemporaryDirectory() as libs:
        command = [
            str(binary), "-m", model, "-u", url, "-i", protocol, "-b", str(batch),
            "--input-data", str(data_file),
            "--concurrency-range", "2", "--measurement-interval", "500", "--stability-percentage", "999",
            "--max-trials", "3",
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, env=_libraries(Path(libs)), timeout=180
        )
    if result.returncode != 0 and "error while loading shared libraries" in result.stderr:
        pytest.skip(f"perf_analyzer cannot start here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Throughput:" in result.stdout and "error" not in result.stdout.lower()
    return result.stdout
