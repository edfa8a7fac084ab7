"""Search strategies over a :class:`~generator.tune.space.Space`: ask for a point, tell its outcome.

* :class:`GridSearch` tries every distinct settings of the space, the start first: the reference.
* :class:`GreedyClimb` (``--search quick``, the default) starts at the start config and tries its
  neighbours (every other value of one setting, nearest first) one at a time, moving to the first that beats the
  current point by more than the noise margin (and trying one more step that way first); at a point no
  neighbour beats, it looks past the points that scored higher but broke a constraint (their neighbours may
  keep the gain without the breach), then stops.
* :class:`HillClimb` (steepest ascent: every neighbour measured before each move) is kept as a yardstick;
  ``perf/bench_search.py`` compares the strategies on measured grids.
* :class:`RandomSearch` samples points at random (a yardstick for the benchmark, ``perf/bench_search.py``).

A strategy never measures: the caller runs the trial for each asked point and tells the
:class:`Outcome`. Points with equal settings are one trial (the caller keeps a cache); budgets are the
caller's too. Strategies are deterministic given their seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from generator.tune.space import Settings, Space

__all__ = [
    "SEARCHES",
    "GreedyClimb",
    "GridSearch",
    "HillClimb",
    "Outcome",
    "RandomSearch",
    "Search",
    "make_search",
]

Point = tuple[int, ...]


@dataclass(frozen=True)
class Outcome:
    """What a trial scored.

    Attributes:
        score: The objective, higher is better (a latency is negated); None: the trial failed.
        violation: 0 when every constraint held, else how far the worst one was broken (relative).
    """

    score: float | None
    violation: float = 0.0

    @property
    def feasible(self) -> bool:
        """Measured, and every constraint held."""
        return self.score is not None and self.violation == 0.0

    def key(self) -> tuple[int, float]:
        """Sort key, larger is better: feasible by score, then infeasible by violation, then failed."""
        if self.score is None:
            return (0, 0.0)
        if self.violation > 0:
            return (1, -self.violation)
        return (2, self.score)

    def beats(self, other: Outcome | None, margin: float = 0.0) -> bool:
        """Whether this outcome is better than ``other`` by more than ``margin`` (relative, same class)."""
        if other is None:
            return self.score is not None
        mine, theirs = self.key(), other.key()
        if mine[0] != theirs[0]:
            return mine[0] > theirs[0]
        return mine[1] - theirs[1] > margin * max(abs(theirs[1]), 1e-12)


class Search:
    """The interface: :meth:`ask` a point (None: done), :meth:`tell` its outcome."""

    name = "search"

    def __init__(self, space: Space) -> None:
        self.space = space

    def ask(self) -> Point | None:
        raise NotImplementedError

    def tell(self, point: Point, outcome: Outcome) -> None:
        """Record a trial's outcome (the point was the last one asked)."""


class GridSearch(Search):
    """Every distinct settings of the space, the start first."""

    name = "grid"

    def __init__(self, space: Space) -> None:
        super().__init__(space)
        self._points = space.points()
        self._next = 0

    @property
    def size(self) -> int:
        """How many trials the grid has."""
        return len(self._points)

    def ask(self) -> Point | None:
        if self._next >= len(self._points):
            return None
        self._next += 1
        return self._points[self._next - 1]


class HillClimb(Search):
    """Steepest-ascent hill climbing from the start point, with a noise margin (a yardstick, not a default).

    Args:
        space: The space.
        margin: A neighbour must beat the current point by more than this fraction to move there (a
            measured difference smaller than the measurement noise is not a step).
    """

    name = "steepest"

    def __init__(self, space: Space, margin: float = 0.03) -> None:
        super().__init__(space)
        self.margin = margin
        self.current: Point = space.start
        self.current_outcome: Outcome | None = None
        self._outcomes: dict[Settings, Outcome] = {}
        self._pending: list[Point] = [space.start]
        self._round: list[Point] = []
        self.moves = 0

    def ask(self) -> Point | None:
        while True:
            while self._pending:
                point = self._pending.pop(0)
                if self.space.settings(point) not in self._outcomes:
                    return point
                self._round.append(point)
            if not self._advance():
                return None

    def tell(self, point: Point, outcome: Outcome) -> None:
        self._outcomes[self.space.settings(point)] = outcome
        if point == self.current and self.current_outcome is None:
            self.current_outcome = outcome
        else:
            self._round.append(point)

    def _advance(self) -> bool:
        """After a round of neighbours: move to the best if it beats the current point; queue the next round."""
        if self.current_outcome is None:
            return False
        if self._round:
            best = max(self._round, key=lambda p: self._outcomes[self.space.settings(p)].key())
            self._round = []
            outcome = self._outcomes[self.space.settings(best)]
            if not outcome.beats(self.current_outcome, self.margin):
                return False
            self.current, self.current_outcome = best, outcome
            self.moves += 1
        self._pending = [
            p
            for p in self.space.neighbours(self.current)
            if self.space.settings(p) != self.space.settings(self.current)
        ]
        return bool(self._pending)


class GreedyClimb(Search):
    """First-improvement hill climbing from the start point, with a noise margin and a second look.

    Tries the current point's neighbours one at a time (each other value of one setting, nearest first) and
    moves to the first that beats it by more than ``margin``; after a move it first tries one more step the
    same way. When no neighbour beats the current point, it goes back to the start config's neighbours it has
    not measured (each differs from the user's config in one setting) and climbs again from any that beats
    the best so far. Last, a detour: the points measured that score higher than the current one but break a
    constraint (a tune's per-level rule included) may be one setting away from a point that keeps the gain
    without the breach, so their unmeasured neighbours are tried, the highest scorer's first (each such
    point once); it stops when those are measured too.

    Args:
        space: The space.
        margin: As for :class:`HillClimb`.
    """

    name = "quick"

    def __init__(self, space: Space, margin: float = 0.03) -> None:
        super().__init__(space)
        self.margin = margin
        self.current: Point = space.start
        self.current_outcome: Outcome | None = None
        self._outcomes: dict[Settings, Outcome] = {}
        self._pending: list[Point] = [space.start]
        self._second_look: list[Point] = []
        self._detour: list[Point] = []
        self._detoured: set[Settings] = set()
        self._points: dict[Settings, Point] = {}
        self.moves = 0

    def ask(self) -> Point | None:
        while True:
            for queue in (self._pending, self._second_look, self._detour):
                while queue:
                    point = queue.pop(0)
                    if self.space.settings(point) not in self._outcomes:
                        return point
            if not self._plan_detour():
                return None

    def _plan_detour(self) -> bool:
        """Queue the unmeasured neighbours of the points that outscored the current one but broke a
        constraint, the highest scorer first; False when there are none left to look past."""
        current = self.current_outcome
        if current is None or current.score is None:
            return False
        behind = sorted(
            (
                (outcome.score, settings)
                for settings, outcome in self._outcomes.items()
                if outcome.score is not None
                and outcome.violation > 0
                and settings not in self._detoured
                and outcome.score - current.score > self.margin * max(abs(current.score), 1e-12)
            ),
            key=lambda item: item[0],
            reverse=True,
        )
        for _, settings in behind:
            self._detoured.add(settings)
            self._detour.extend(self._around(self._points[settings], None))
        return bool(self._detour)

    def tell(self, point: Point, outcome: Outcome) -> None:
        self._outcomes[self.space.settings(point)] = outcome
        self._points.setdefault(self.space.settings(point), point)
        if self.current_outcome is None:
            self.current_outcome = outcome
            self._pending = self._around(self.current, None)
            self._second_look = list(self._pending)
        elif outcome.beats(self.current_outcome, self.margin):
            direction = next(
                (
                    (axis, b - a)
                    for axis, (a, b) in enumerate(zip(self.current, point, strict=True))
                    if a != b
                ),
                None,
            )
            if direction is not None and sum(a != b for a, b in zip(self.current, point, strict=True)) > 1:
                direction = None  # a jump back to the start's neighbourhood: no direction to go on in
            self.current, self.current_outcome = point, outcome
            self.moves += 1
            self._pending = self._around(point, direction)

    def _around(self, point: Point, direction: tuple[int, int] | None) -> list[Point]:
        """The neighbours of ``point`` not measured yet, one more step in ``direction`` first."""
        around = self.space.neighbours(point, every=True)
        if direction is not None:
            axis, step = direction
            ahead = (*point[:axis], point[axis] + step, *point[axis + 1 :])
            around = sorted(around, key=lambda p: p != ahead)
        here = self.space.settings(point)
        return [
            p
            for p in around
            if self.space.settings(p) != here and self.space.settings(p) not in self._outcomes
        ]


class BestFirst(Search):
    """Best-first local search: always measure the next unmeasured neighbour of the best point measured so far
    that still has one (a yardstick: it runs until ``limit`` trials or the whole space).

    Args:
        space: The space.
        limit: Trials at most (None: no limit).
    """

    name = "best-first"

    def __init__(self, space: Space, limit: int | None = None) -> None:
        super().__init__(space)
        self.limit = limit
        self._outcomes: dict[Settings, tuple[Point, Outcome]] = {}
        self._asked = 0

    def ask(self) -> Point | None:
        if self.limit is not None and self._asked >= self.limit:
            return None
        if not self._outcomes:
            self._asked += 1
            return self.space.start
        ranked = sorted(self._outcomes.values(), key=lambda item: item[1].key(), reverse=True)
        for point, _ in ranked:
            for neighbour in self.space.neighbours(point):
                if self.space.settings(neighbour) not in self._outcomes:
                    self._asked += 1
                    return neighbour
        return None

    def tell(self, point: Point, outcome: Outcome) -> None:
        self._outcomes.setdefault(self.space.settings(point), (point, outcome))


class RandomSearch(Search):
    """Points drawn at random without repeats, the start first (a yardstick, not a default)."""

    name = "random"

    def __init__(self, space: Space, seed: int = 0, limit: int | None = None) -> None:
        super().__init__(space)
        points = space.points()
        rest = points[1:]
        random.Random(seed).shuffle(rest)
        self._points = [points[0], *rest][:limit]

    def ask(self) -> Point | None:
        return self._points.pop(0) if self._points else None


SEARCHES = ("quick", "grid")


def make_search(name: str, space: Space) -> Search:
    """The strategy called ``name`` (``quick`` or ``grid``) over ``space``."""
    if name == "grid":
        return GridSearch(space)
    if name == "quick":
        return GreedyClimb(space)
    raise ValueError(f"unknown search '{name}'; use one of: {', '.join(SEARCHES)}")


def geometric_mean(values: list[float]) -> float:
    """The geometric mean of positive values (0 when any is 0)."""
    if any(v <= 0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))
