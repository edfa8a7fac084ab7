"""What a tune optimises and what it must not break: one objective, and bounds in ``--fail-if`` terms.

The objective is a figure of the load-test report (``throughput``, maximised, or a latency such as
``p99_ms``, minimised); over several load levels a trial scores the geometric mean of the figure across
them, so each level counts and none dominates by its scale. Constraints are the load test's ``--fail-if``
bounds (the same metric names: ``--max-p99-ms 20`` is the bound ``p99_ms>20``), checked at every level; a
trial with failed requests breaks the implicit ``error_rate>0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from generator.errors import TuneError
from generator.loadreport.figures import FIGURES, figure_value
from generator.loadreport.gate import Bound, parse_bound
from generator.tune.search import Outcome, geometric_mean

__all__ = ["OBJECTIVES", "Objective", "parse_bytes"]

#: ``--objective`` names and the report figure each one is.
OBJECTIVES = {"throughput": "throughput", "p50": "p50_ms", "p90": "p90_ms", "p95": "p95_ms", "p99": "p99_ms"}
_BETTER = {f.name: f.better for f in FIGURES}
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
_UNITS.update({"kib": 1024, "mib": 1024**2, "gib": 1024**3})


def parse_bytes(text: str) -> int:
    """``512MiB``, ``2GB``, ``1.5GiB`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match[2].lower() if match else None
    if match is None or unit not in _UNITS:
        raise TuneError(f"--max-memory '{text}': give bytes or a size such as 512MiB or 2GB")
    return int(float(match[1]) * _UNITS[unit])


@dataclass(frozen=True)
class Objective:
    """The objective and the constraints.

    Attributes:
        metric: The report figure optimised (``throughput``, ``p99_ms``, ...).
        bounds: The failing conditions (``--fail-if`` style), checked at every level.
    """

    metric: str = "throughput"
    bounds: tuple[Bound, ...] = field(default_factory=tuple)

    @classmethod
    def parse(
        cls,
        objective: str = "throughput",
        max_p99_ms: float | None = None,
        min_throughput: float | None = None,
        max_memory: str | int | None = None,
        constraints: list[str] | None = None,
    ) -> Objective:
        """Build from the command line's options.

        Raises:
            TuneError: An unknown objective, or a constraint that does not parse.
        """
        if objective not in OBJECTIVES:
            raise TuneError(f"--objective '{objective}': use one of {', '.join(OBJECTIVES)}")
        texts = []
        if max_p99_ms is not None:
            texts.append(f"p99_ms>{max_p99_ms:g}")
        if min_throughput is not None:
            texts.append(f"throughput<{min_throughput:g}")
        if max_memory is not None:
            texts.append(f"memory_bytes>{parse_bytes(str(max_memory))}")
        texts.extend(constraints or [])
        texts.append("error_rate>0")
        bounds = []
        for text in texts:
            bound = parse_bound(text)
            if bound.on_change:
                raise TuneError(f"constraint '{text}': a tune has no baseline; bound the figure itself")
            bounds.append(bound)
        return cls(OBJECTIVES[objective], tuple(dict.fromkeys(bounds)))

    @property
    def maximise(self) -> bool:
        """Whether a larger figure is better."""
        return _BETTER[self.metric] == "higher"

    def describe(self, levels: list[int]) -> str:
        """One line: ``max throughput at 1, 16 users subject to p99_ms <= 20``."""
        plural = "s" if levels != [1] else ""
        goal = (
            f"{'max' if self.maximise else 'min'} {self.metric} at {', '.join(map(str, levels))} user{plural}"
        )
        shown = [_negate(b) for b in self.bounds if b.text != "error_rate>0"]
        return goal + (f" subject to {' and '.join(shown)}" if shown else "")

    def constraints(self, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each bound's worst value over the levels and whether it held: ``{text: {"value", "passed"}}``."""
        result: dict[str, dict[str, Any]] = {}
        for bound in self.bounds:
            values = [v for run in runs if (v := figure_value(run, bound.metric)) is not None]
            if not values:
                result[bound.text] = {"value": None, "passed": False, "excess": 1.0}
                continue
            worst = max(values) if bound.op in (">", ">=") else min(values)
            broken = bound.breached_by(worst)
            excess = abs(worst - bound.threshold) / max(abs(bound.threshold), 1e-9) if broken else 0.0
            result[bound.text] = {
                "value": worst,
                "passed": not broken,
                "excess": max(excess, 1e-9) if broken else 0.0,
            }
        return result

    def outcome(self, runs: list[dict[str, Any]], levels: int) -> Outcome:
        """Score a trial's runs (None score when a level was not measured)."""
        values = [figure_value(run, self.metric) for run in runs]
        if len(runs) < levels or any(v is None for v in values):
            return Outcome(None)
        mean = geometric_mean([float(v) for v in values if v is not None])
        violation = max((c["excess"] for c in self.constraints(runs).values()), default=0.0)
        return Outcome(mean if self.maximise else -mean, violation)

    def value(self, outcome: Outcome) -> float | None:
        """The objective figure back from a score (the geometric mean over the levels)."""
        if outcome.score is None:
            return None
        return outcome.score if self.maximise else -outcome.score


def _negate(bound: Bound) -> str:
    """A failing condition as the requirement it guards: ``p99_ms>20`` -> ``p99_ms <= 20``."""
    opposite = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}[bound.op]
    return f"{bound.metric} {opposite} {bound.threshold:g}"
