"""Benchmark: a cold build of the bundled example vs a rebuild with nothing changed.

Prints wall-clock seconds for each and their ratio, measured side by side in one run. The cold build
is timed twice: the first includes importing torch/onnx, the second has them warm (that one is the
fair comparison). Run: ``python perf/bench_build.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.build import build
from generator.spec import bundled_example


def _timed(output: Path) -> tuple[float, list[str]]:
    started = time.perf_counter()
    report = build(bundled_example(), output)
    return time.perf_counter() - started, [m.status for m in report.models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("torch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        first, _ = _timed(Path(tmp) / "first")
        colds, rebuilds = [], []
        for index in range(args.repeats):
            cold, statuses = _timed(Path(tmp) / f"cold{index}")
            assert set(statuses) == {"exported"}, statuses
            colds.append(cold)
            rebuild, statuses = _timed(Path(tmp) / f"cold{index}")
            assert set(statuses) == {"reused"}, statuses
            rebuilds.append(rebuild)
    cold, rebuild = statistics.median(colds), statistics.median(rebuilds)
    print(f"cold build, first in process (imports included): {first:8.3f} s")
    print(f"cold build, median of {args.repeats}:                  {cold:8.3f} s")
    print(f"rebuild, nothing changed, median of {args.repeats}:    {rebuild:8.3f} s")
    print(f"rebuild speed-up (cold / rebuild):              {cold / rebuild:8.1f}x")


if __name__ == "__main__":
    main()
