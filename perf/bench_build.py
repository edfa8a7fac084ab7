"""Benchmark: a cold build of the bundled example vs a rebuild with nothing changed, and the cost of
running factories in the isolated export process.

Prints wall-clock seconds, measured side by side in one run (interleaved, medians):
- cold builds in this process with the factory exported in the export process (the default) and in
  this process (``TRITONGEN_EXPORT_IN_PROCESS=1``, as before isolation), torch already imported here;
- a rebuild with nothing changed (every model reused);
- ``python -m generator build`` as a user runs it, a fresh interpreter each time, both ways.

The first cold build includes importing torch/onnx and is printed apart. Run:
``python perf/bench_build.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build.run import build
from generator.build.worker import IN_PROCESS_ENV
from generator.spec.models import bundled_example

ROOT = Path(__file__).resolve().parent.parent


def _timed(output: Path, in_process: bool) -> tuple[float, list[str]]:
    os.environ[IN_PROCESS_ENV] = "1" if in_process else "0"
    try:
        started = time.perf_counter()
        report = build(bundled_example(), output)
        return time.perf_counter() - started, [m.status for m in report.models]
    finally:
        os.environ.pop(IN_PROCESS_ENV, None)


def _cli(output: Path, in_process: bool) -> float:
    env = {**os.environ, IN_PROCESS_ENV: "1" if in_process else "0", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "generator", "build", str(bundled_example()), "--output", str(output)],
        check=True,
        capture_output=True,
        env=env,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("torch").setLevel(logging.ERROR)
    times: dict[str, list[float]] = {"isolated": [], "in_process": [], "rebuild": []}
    cli: dict[str, list[float]] = {"isolated": [], "in_process": []}
    with tempfile.TemporaryDirectory() as tmp:
        first, _ = _timed(Path(tmp) / "first", in_process=True)
        for index in range(args.repeats):
            for mode in ("isolated", "in_process"):
                output = Path(tmp) / f"{mode}{index}"
                cold, statuses = _timed(output, in_process=mode == "in_process")
                assert set(statuses) == {"exported"}, statuses
                times[mode].append(cold)
                cli[mode].append(_cli(Path(tmp) / f"cli-{mode}{index}", in_process=mode == "in_process"))
            rebuild, statuses = _timed(Path(tmp) / f"isolated{index}", in_process=False)
            assert set(statuses) == {"reused"}, statuses
            times["rebuild"].append(rebuild)
    median = {name: statistics.median(values) for name, values in times.items()}
    median_cli = {name: statistics.median(values) for name, values in cli.items()}
    n = args.repeats
    rows = [
        ("cold build, first in process (imports included)", f"{first:8.3f} s"),
        (f"cold build, factory in the export process, median of {n}", f"{median['isolated']:8.3f} s"),
        (f"cold build, factory in this process, median of {n}", f"{median['in_process']:8.3f} s"),
        ("  isolation cost in a warm process", f"{median['isolated'] - median['in_process']:+8.3f} s"),
        (f"rebuild, nothing changed, median of {n}", f"{median['rebuild']:8.3f} s"),
        ("rebuild speed-up (isolated cold / rebuild)", f"{median['isolated'] / median['rebuild']:8.1f}x"),
        (f"`python -m generator build`, isolated, median of {n}", f"{median_cli['isolated']:8.3f} s"),
        (f"`python -m generator build`, in process, median of {n}", f"{median_cli['in_process']:8.3f} s"),
        ("  isolation cost for a user", f"{median_cli['isolated'] - median_cli['in_process']:+8.3f} s"),
    ]
    width = max(len(label) for label, _ in rows) + 1
    for label, figure in rows:
        print(f"{label + ':':<{width}} {figure}")


if __name__ == "__main__":
    main()
