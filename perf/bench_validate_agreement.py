"""Benchmark: how often ``validate`` agrees with the real Triton 2.51 on generated model configurations.

Draws a seeded corpus from the Hypothesis strategies over ``model_config.proto`` in ``tests/oracle``
(every area: tensors, reshape, batch inputs/outputs, dynamic and sequence batching, instance groups,
parameters, optimization, response cache, transaction policy, warm-up, ensembles, version policy,
backend/platform/runtime, auto-complete, model files, schema), then judges each case by ``validate``
and by the embedded tritonserver (explicit model control, one server for the corpus). Prints per area:
cases, Triton refused, validate caught, Triton loaded, false alarms, message agreement; the totals
against the issue's bar (>= 95% of refusals caught, <= 2% false alarms, >= 90% message agreement);
the same figures per judge (Triton's core and the official Python backend, an oracle; the embedded
server's stand-in ONNX backend, which is this project's code); and every disagreement with both verdicts.

Run: ``python perf/bench_validate_agreement.py [--per-area 30] [--seed 19] [--areas tensors,reshape]
[--json perf/results/bench_validate_agreement.json]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import re
import tempfile
import time

from tests.oracle.runner import Oracle, Verdict
from tests.oracle.strategies import areas, corpus
from tests.oracle.tally import bar_lines, table, tally

#: This machine's temporary directories in Triton's messages (the served repository, the backends).
_TEMPORARY = re.compile(re.escape(tempfile.gettempdir()) + r"/tritongen-[^/\s']+")


def _plain(text: str) -> str:
    return _TEMPORARY.sub("<tmp>", text)


def disagreements(verdicts: list[Verdict]) -> list[str]:
    """Every case whose verdicts or messages disagree, grouped by area, with both verdicts."""
    lines: list[str] = []
    for area in dict.fromkeys(v.case.area for v in verdicts):
        wrong = [v for v in verdicts if v.case.area == area and (not v.agree or v.message_agrees is False)]
        if not wrong:
            continue
        lines.append(f"== {area}: {len(wrong)}")
        for verdict in wrong:
            kind = verdict.outcome if not verdict.agree else "message differs"
            triton = f"Triton refused: {_plain(verdict.message)}" if verdict.refused else "Triton loaded it"
            found = _plain("; ".join(verdict.errors)) if verdict.errors else "no error"
            lines.append(f"- [{kind}] {verdict.case.label} (judged by {verdict.case.judge})")
            lines.append(f"    Triton:   {triton}")
            lines.append(f"    validate: {found}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-area", type=int, default=30, help="cases drawn per area")
    parser.add_argument("--seed", type=int, default=19, help="the corpus's seed")
    parser.add_argument(
        "--areas", default="", help=f"comma-separated areas (default all: {', '.join(areas())})"
    )
    parser.add_argument("--json", type=Path, help="write the figures and every verdict as JSON here")
    args = parser.parse_args()
    only = [a for a in args.areas.split(",") if a] or None
    cases = corpus(args.per_area, args.seed, only)
    print(f"{len(cases)} cases (seed {args.seed}, {args.per_area} per area)", flush=True)

    started = time.monotonic()
    verdicts: list[Verdict] = []
    with Oracle() as oracle:
        for case in cases:
            verdicts.append(oracle.judge(case))
        restarts = oracle.restarts
    seconds = time.monotonic() - started

    per_area = tally(verdicts)
    per_judge = tally(verdicts, key="judge")
    print(
        f"\njudged in {seconds:.0f} s ({seconds / max(len(cases), 1):.1f} s a case, {restarts} server restarts)\n"
    )
    print(table(per_area))
    print("\ntotal against the bar:")
    print("\n".join(f"  {line}" for line in bar_lines(per_area["total"])))
    print(
        "\nby judge (core: Triton's core and Python backend, an oracle; stand-in: this project's ONNX backend):"
    )
    print(table({k: v for k, v in per_judge.items() if k != "total"}))
    print("\ndisagreements:")
    print("\n".join(disagreements(verdicts)) or "none")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "seed": args.seed,
            "per_area": args.per_area,
            "seconds": round(seconds, 1),
            "areas": {k: v.as_dict() for k, v in per_area.items()},
            "judges": {k: v.as_dict() for k, v in per_judge.items()},
            "verdicts": [
                {
                    "area": v.case.area,
                    "label": v.case.label,
                    "judge": v.case.judge,
                    "outcome": v.outcome,
                    "triton": _plain(v.message) if v.refused else "loaded",
                    "validate": [_plain(e) for e in v.errors],
                    "message_agrees": v.message_agrees,
                }
                for v in verdicts
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
