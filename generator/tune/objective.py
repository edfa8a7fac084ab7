"""What a tune optimises and what it must not break: one objective, and bounds in ``--fail-if`` terms.

The objective is a figure of the load-test report (``throughput``, maximised, or a latency such as
``p99_ms``, minimised); over several load levels a trial scores the geometric mean of the figure across
them, so each level counts and none dominates by its scale. Constraints are the load test's ``--fail-if``
bounds (the same metric names: ``--max-p99-ms 20`` is the bound ``p99_ms>20``), checked at every level; a
trial with failed requests breaks the implicit ``error_rate>0``.

A mean lets a large gain at one level buy a loss at another. :class:`LevelGuard` forbids that by default:
it holds the start config's figure at each level and the noise of measuring it (:func:`level_noise`), and a
candidate worse than the start at any level by more than that noise breaks it like a constraint.
:func:`judge` makes the final call on the best candidate and the start config measured again side by side.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from generator.core.errors import TuneError
from generator.loadtest.report.figures import FIGURES, figure_value
from generator.loadtest.report.gate import Bound, parse_bound
from generator.tune.search import Outcome, geometric_mean

__all__ = [
    "NOISE_FLOOR",
    "OBJECTIVES",
    "LevelChange",
    "LevelGuard",
    "Objective",
    "judge",
    "level_noise",
    "parse_bytes",
]

#: ``--objective`` names and the report figure each one is.
OBJECTIVES = {"throughput": "throughput", "p50": "p50_ms", "p90": "p90_ms", "p95": "p95_ms", "p99": "p99_ms"}
_BETTER = {f.name: f.better for f in FIGURES}
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}
_UNITS.update({"kib": 1024, "mib": 1024**2, "gib": 1024**3})

#: The least noise a level is granted (relative): the search's own margin. Two measurements of the start
#: config that happen to agree closely are no proof that a 1% difference is real.
NOISE_FLOOR = 0.03


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

    def outcome(self, runs: list[dict[str, Any]], levels: int, guard: LevelGuard | None = None) -> Outcome:
        """Score a trial's runs (None score when a level was not measured).

        Args:
            runs: The trial's runs, one per level, as the load test reports them.
            levels: How many levels there are.
            guard: The start config's figures per level: a level worse than the start beyond the noise
                counts as a broken constraint (by how far beyond). None: no such rule.
        """
        values = [figure_value(run, self.metric) for run in runs]
        if len(runs) < levels or any(v is None for v in values):
            return Outcome(None)
        mean = geometric_mean([float(v) for v in values if v is not None])
        violation = max((c["excess"] for c in self.constraints(runs).values()), default=0.0)
        if guard is not None:
            violation = max(violation, guard.excess(guard.compare(values)))
        return Outcome(mean if self.maximise else -mean, violation)

    def value(self, outcome: Outcome) -> float | None:
        """The objective figure back from a score (the geometric mean over the levels)."""
        if outcome.score is None:
            return None
        return outcome.score if self.maximise else -outcome.score


def level_noise(
    measurements: list[list[dict[str, Any]]], metric: str, floor: float = NOISE_FLOOR
) -> list[float]:
    """The relative noise of each level, from several measurements of one config (the start config).

    A level's noise is how far apart two measurements of the same config are expected to come: the standard
    deviation of the difference of two measurements, ``sqrt(2) * s / mean`` with ``s`` the sample standard
    deviation of the objective's figure over the measurements (for two measurements, ``|a - b| / mean``),
    at least ``floor``. A candidate and the start config are compared one measurement against one, so
    that is the spread a difference between them has when they are equal. (The spread of one
    measurement's one-second windows is not used: the figure is their mean, which varies less.)

    Args:
        measurements: Each measurement's levels (condensed load-test runs: the figures by name), the levels
            in the same order in every measurement.
        metric: The objective's figure.
        floor: The least noise granted.
    """
    count = min((len(levels) for levels in measurements), default=0)
    noise = []
    for index in range(count):
        found = [m[index].get(metric) for m in measurements]
        values = [float(v) for v in found if isinstance(v, (int, float)) and v > 0]
        between = (
            math.sqrt(2) * statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
        )
        noise.append(max(floor, between))
    return noise


@dataclass(frozen=True)
class LevelChange:
    """One level of a candidate against the start config, in the objective's figure.

    Attributes:
        users: The level.
        start: The start config's figure there.
        value: The candidate's figure there (None: not measured).
        change: The relative change, positive when better (higher throughput, lower latency).
        noise: The level's relative noise.
    """

    users: int
    start: float
    value: float | None
    change: float | None
    noise: float

    @property
    def verdict(self) -> str:
        """``better`` or ``worse`` beyond the noise, ``same`` within it, ``unmeasured``."""
        if self.change is None:
            return "unmeasured"
        if self.change > self.noise:
            return "better"
        return "worse" if self.change < -self.noise else "same"

    @property
    def relative(self) -> float | None:
        """The figure's own relative change ((value - start) / start: a lower latency is negative)."""
        return None if self.value is None else (self.value - self.start) / self.start

    def describe(self, metric: str) -> str:
        """``throughput at 16 users -12.0% (worse beyond the 4.1% noise)``."""
        where = f"{metric} at {self.users} user{'s' if self.users != 1 else ''}"
        if self.relative is None:
            return f"{where} not measured"
        within = "within" if self.verdict == "same" else f"{self.verdict} beyond"
        return f"{where} {self.relative:+.1%} ({within} the {self.noise:.1%} noise)"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for tune.json: the figures, the change (``gain_pct`` positive when better), the noise."""
        return {
            "users": self.users,
            "start": self.start,
            "value": self.value,
            "change_pct": None if self.relative is None else round(self.relative * 100, 2),
            "gain_pct": None if self.change is None else round(self.change * 100, 2),
            "noise_pct": round(self.noise * 100, 2),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class LevelGuard:
    """The start config's objective figure at each level and its noise: what no winner may fall below.

    Attributes:
        metric: The objective's figure.
        maximise: Whether higher is better.
        users: The levels.
        reference: The start config's figure at each level (the mean of its measurements).
        noise: Each level's relative noise (:func:`level_noise`).
    """

    metric: str
    maximise: bool
    users: tuple[int, ...]
    reference: tuple[float, ...]
    noise: tuple[float, ...]

    @classmethod
    def from_start(
        cls,
        objective: Objective,
        users: list[int],
        measurements: list[list[dict[str, Any]]],
        floor: float = NOISE_FLOOR,
    ) -> LevelGuard | None:
        """The guard of the start config measured (at least) once; None when a level has no figure."""
        reference = []
        for index in range(len(users)):
            found = [m[index].get(objective.metric) for m in measurements if index < len(m)]
            values = [float(v) for v in found if isinstance(v, (int, float)) and v > 0]
            if not values:
                return None
            reference.append(sum(values) / len(values))
        noise = level_noise(measurements, objective.metric, floor)
        return cls(objective.metric, objective.maximise, tuple(users), tuple(reference), tuple(noise))

    def with_reference(self, levels: list[dict[str, Any]], noise: list[float] | None = None) -> LevelGuard:
        """The same guard against another measurement of the start (the confirmation's), new noise if given."""
        reference = tuple(
            float(v) if isinstance(v := level.get(self.metric), (int, float)) and v > 0 else old
            for level, old in zip(levels, self.reference, strict=False)
        )
        return LevelGuard(
            self.metric, self.maximise, self.users, reference, tuple(noise) if noise else self.noise
        )

    def compare(self, values: list[float | None]) -> list[LevelChange]:
        """Each level of a candidate (its figure at each level, in order) against the start."""
        changes = []
        for index, (users, start, noise) in enumerate(
            zip(self.users, self.reference, self.noise, strict=True)
        ):
            value = values[index] if index < len(values) else None
            change = None
            if isinstance(value, (int, float)) and value > 0:
                change = (value - start) / start if self.maximise else (start - value) / start
            changes.append(LevelChange(users, start, None if value is None else float(value), change, noise))
        return changes

    @staticmethod
    def excess(changes: list[LevelChange]) -> float:
        """How far beyond its noise the worst level is worse than the start (0: no level is)."""
        worst = max((-(c.change or 0.0) - c.noise for c in changes if c.verdict == "worse"), default=0.0)
        return max(worst, 1e-9) if worst > 0 else 0.0


def judge(
    changes: list[LevelChange], best: Outcome, start: Outcome, trade_levels: bool = False
) -> tuple[bool, str]:
    """Whether the best candidate, measured again beside the start config, wins; and why, in a phrase.

    By default it wins when it meets the constraints, beats the start on the objective, is better than the
    start beyond the noise at one level at least, and worse beyond the noise at none. With ``trade_levels``
    (the user asked for the mean alone) it wins when it meets the constraints and beats the start.

    Args:
        changes: The candidate against the start, level by level (:meth:`LevelGuard.compare`).
        best: The candidate's outcome in this measurement.
        start: The start config's outcome in the same round.
        trade_levels: Let a gain at one level buy a loss at another.
    """
    if not best.feasible:
        return False, "it broke a constraint when measured again"
    if not best.beats(start):
        return False, "it did not beat the start config when both were measured again"
    if trade_levels:
        return True, "it beat the start config again"
    worse = [c for c in changes if c.verdict in ("worse", "unmeasured")]
    if worse:
        return False, f"it was worse than the start config at {_levels(worse)} when both were measured again"
    if not any(c.verdict == "better" for c in changes):
        return False, "it was better than the start config at no level beyond the noise when measured again"
    return True, "it beat the start config again, and is worse at no level"


def _levels(changes: list[LevelChange]) -> str:
    users = [str(c.users) for c in changes]
    return f"{', '.join(users)} user{'s' if users != ['1'] else ''}"


def _negate(bound: Bound) -> str:
    """A failing condition as the requirement it guards: ``p99_ms>20`` -> ``p99_ms <= 20``."""
    opposite = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}[bound.op]
    return f"{bound.metric} {opposite} {bound.threshold:g}"
