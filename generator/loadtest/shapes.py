"""Load shapes: how many users run when, as a list of phases, also usable as a Locust ``LoadTestShape``.

* ``step``: each load level (``--users N``, or each level of ``--sweep``) in turn: spawn to the level,
  warm up, hold for the duration. One measurement window per level.
* ``ramp``: users grow steadily from 0 to the top level over the duration (Locust spawns them at
  top / duration per second); the ramp is measured in equal windows (one per sweep level, or 5), each
  reported with its average user count: a latency-throughput curve from one continuous run.
"""

from __future__ import annotations

from dataclasses import dataclass

from generator.core.errors import LoadTestError

__all__ = ["SHAPES", "Phase", "PhasedShape", "parse_levels", "schedule", "total_seconds"]

SHAPES = ("step", "ramp")
RAMP_WINDOWS = 5


@dataclass(frozen=True)
class Phase:
    """One phase of a test.

    Attributes:
        users: Users to run (at the end of a ramp).
        spawn_rate: Users started (or stopped) per second on the way to ``users``.
        warmup: Seconds after spawning that are not measured.
        hold: Seconds that are measured.
        windows: Measurement windows the hold is split into (more than 1 for a ramp).
        ramp: Whether users are still being spawned during the hold.
    """

    users: int
    spawn_rate: float
    warmup: float
    hold: float
    windows: int = 1
    ramp: bool = False


def parse_levels(text: str | list[int] | None) -> list[int]:
    """Parse ``--sweep 1,2,4,8`` into load levels.

    Raises:
        LoadTestError: A level is not a positive integer.
    """
    if text is None:
        return []
    items = text if isinstance(text, list) else [p for p in str(text).replace(" ", "").split(",") if p]
    levels = []
    for item in items:
        try:
            level = int(item)
        except (TypeError, ValueError):
            raise LoadTestError(
                f"--sweep '{text}': '{item}' is not a whole number of users; e.g. 1,2,4,8"
            ) from None
        if level < 1:
            raise LoadTestError(f"--sweep '{text}': every level needs at least 1 user")
        levels.append(level)
    if not levels:
        raise LoadTestError("--sweep needs at least one level, e.g. 1,2,4,8")
    return levels


def schedule(
    levels: list[int], shape: str, duration: float, warmup: float, spawn_rate: float | None = None
) -> list[Phase]:
    """The phases of a test.

    Args:
        levels: Load levels (users), in order.
        shape: ``"step"`` or ``"ramp"``.
        duration: Measured seconds per level (step) or of the whole ramp.
        warmup: Unmeasured seconds after each level is spawned (step only).
        spawn_rate: Users per second when changing level (step only; default: the whole level at once).

    Raises:
        LoadTestError: An unknown shape, no levels, or a duration that is not positive.
    """
    if shape not in SHAPES:
        raise LoadTestError(f"unknown shape '{shape}'; use one of: {', '.join(SHAPES)}")
    if not levels:
        raise LoadTestError("no load level: give --users N or --sweep 1,2,4,...")
    if duration <= 0:
        raise LoadTestError(f"--duration must be above 0 seconds, not {duration:g}")
    if warmup < 0:
        raise LoadTestError(f"--warmup must be 0 or more seconds, not {warmup:g}")
    if spawn_rate is not None and spawn_rate <= 0:
        raise LoadTestError(f"--spawn-rate must be above 0 users per second, not {spawn_rate:g}")
    if shape == "ramp":
        if spawn_rate is not None:
            raise LoadTestError(
                "--spawn-rate does not apply to --load-shape ramp (it spawns top users / duration per second); drop it"
            )
        top = max(levels)
        windows = len(levels) if len(levels) > 1 else RAMP_WINDOWS
        return [Phase(top, top / duration, 0.0, duration, windows=windows, ramp=True)]
    return [Phase(level, spawn_rate or float(max(level, 1)), warmup, duration) for level in levels]


def total_seconds(phases: list[Phase]) -> float:
    """Planned length of a test, spawning time excluded."""
    return sum(p.warmup + p.hold for p in phases)


class PhasedShape:
    """Factory of a Locust ``LoadTestShape`` that plays phases, for ``locust -f ... --load-shape step``.

    Kept out of Locust's class hierarchy at import time so that a locustfile importing this module does not
    expose a shape class Locust would pick up on its own; :meth:`create` builds the instance.
    """

    @staticmethod
    def create(phases: list[Phase]) -> object:
        """Return a ``LoadTestShape`` instance whose ``tick`` walks through ``phases`` and then stops."""
        from locust import LoadTestShape

        class _Phased(LoadTestShape):
            def tick(self) -> tuple[int, float] | None:
                elapsed = self.get_run_time()
                for phase in phases:
                    span = phase.warmup + phase.hold
                    if elapsed < span:
                        return phase.users, phase.spawn_rate
                    elapsed -= span
                return None

        _Phased.__name__ = _Phased.__qualname__ = "TritongenPhasedShape"
        return _Phased()
