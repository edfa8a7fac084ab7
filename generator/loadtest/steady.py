"""When a measured load level is steady: the rules of the tune's measurements, free of Locust and gevent.

A level is measured in windows until the last few agree (:func:`settle`), as perf_analyzer's stability
windows do; its figures are then those of the kept windows, their resources merged
(:func:`merge_resources`). :class:`Steadiness` holds the settings; :class:`SteadyLevel` one level's windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from generator.core.errors import LoadTestError

__all__ = ["Steadiness", "SteadyLevel", "inferences", "merge_resources", "settle"]


@dataclass(frozen=True)
class Steadiness:
    """How a measurement decides a level is steady.

    Attributes:
        window: Seconds per measurement window.
        warmup: Unmeasured seconds after the users of a level are spawned.
        tolerance_pct: Largest spread of the kept windows' throughputs ((max - min) / mean, in percent).
        least: Windows that must agree (and that the figures are taken over).
        most: Windows after which a level counts as measured even when not steady.
    """

    window: float = 2.0
    warmup: float = 1.0
    tolerance_pct: float = 10.0
    least: int = 3
    most: int = 8

    def check(self) -> None:
        """Raise :class:`LoadTestError` for a setting that cannot work."""
        if self.window <= 0 or self.warmup < 0:
            raise LoadTestError("the trial window must be above 0 seconds and the warm-up 0 or more")
        if self.tolerance_pct <= 0:
            raise LoadTestError("the stability tolerance must be above 0 percent")
        if not 1 <= self.least <= self.most:
            raise LoadTestError("the stability windows must be at least 1, and the limit at least as many")


@dataclass
class SteadyLevel:
    """One load level measured until steady (:meth:`Session.run_steady`).

    Attributes:
        users: The level.
        windows: Every window measured at this level, in order.
        kept: How many of the last windows make the measurement (the steady ones, or the last few).
        throughputs: Inferences per second of each window (Triton's count, else the client's).
        spread_pct: (max - min) / mean of the kept windows' throughputs, in percent.
        stable: Whether the spread came within the tolerance before the window limit.
    """

    users: int
    windows: list[Any] = field(default_factory=list)  # the session's Window objects
    kept: int = 0
    throughputs: list[float] = field(default_factory=list)
    spread_pct: float | None = None
    stable: bool = False

    @property
    def measured(self) -> list[Any]:
        """The windows the level's figures come from."""
        return self.windows[-self.kept :] if self.kept else []


def inferences(before: dict[str, Any] | None, after: dict[str, Any] | None, names: list[str]) -> int | None:
    """Inferences Triton counted between two statistics snapshots, or None without both."""
    if before is None or after is None:
        return None
    return sum(after[n]["inference_count"] - before[n]["inference_count"] for n in names)


def settle(level: SteadyLevel, least: int, tolerance_pct: float) -> bool:
    """Keep the last ``least`` windows; return whether their throughputs are within the tolerance."""
    recent = level.throughputs[-least:]
    level.kept = len(recent)
    mean = sum(recent) / len(recent)
    level.spread_pct = (max(recent) - min(recent)) / mean * 100.0 if mean > 0 else None
    level.stable = len(recent) >= least and level.spread_pct is not None and level.spread_pct <= tolerance_pct
    return level.stable


def merge_resources(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The resource figures of consecutive windows as one: utilizations averaged, memory at its largest."""
    merged: dict[str, Any] = {}
    for key in {k for w in windows for k in w}:
        values = [w[key] for w in windows if w.get(key) is not None]
        if not values:
            merged[key] = None
        elif key.endswith("_utilization"):
            merged[key] = sum(values) / len(values)
        elif key.endswith("_bytes"):
            merged[key] = max(values)
        else:
            merged[key] = values[-1]
    return merged
