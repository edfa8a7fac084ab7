"""One model's trials and its part of the tune's report, kept up to date as the search goes.

:class:`TrialLedger` holds the trials of one model in the order they ran, the start config's measurements
with the per-level rule they set (:class:`~generator.tune.objective.LevelGuard`), and the model's entry in
``tune.json``: the trials, the best so far, the best per load level and each level's noise. It writes
``tune.json`` whenever it records, so a tune that is cut short keeps what it measured.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from generator.tune.objective import LevelGuard, level_noise
from generator.tune.report import write_tune_report

if TYPE_CHECKING:
    from generator.tune.trials import Trial, TuneContext

__all__ = ["TrialLedger"]


class TrialLedger:
    """The trials of one model and its entry in the report.

    Args:
        context: The run (the objective, the load levels, the report and where it is written).
        entry: The model's entry in the report, already in ``context.report["models"]``.

    Attributes:
        trials: Every trial so far, the start config first, confirmations included.
        entry: The model's entry in the report.
        start_measurements: The start config's figures per level, once per time it was measured.
        guard: The per-level rule set by the start config's measurements, or None before (or without) them.
        holds_levels: Whether the search holds every level to the start config.
    """

    def __init__(self, context: TuneContext, entry: dict[str, Any]) -> None:
        self.context = context
        self.entry = entry
        self.trials: list[Trial] = []
        self.start_measurements: list[list[dict[str, Any]]] = []
        self.guard: LevelGuard | None = None
        self.holds_levels = False

    def values(self, trial: Trial) -> list[float | None]:
        """The trial's objective figure at each level it measured."""
        metric = self.context.objective.metric
        return [level.get(metric) for level in trial.levels]

    def time_for(self, trials: int, deadline: float | None) -> bool:
        """Whether ``trials`` more trials of the typical length so far fit before ``deadline`` (None: no limit)."""
        if deadline is None:
            return True
        typical = sorted(t.seconds for t in self.trials)[len(self.trials) // 2]
        return time.monotonic() + trials * typical <= deadline

    def best(self) -> Trial | None:
        """The best measured trial of the search (confirmations aside), or None."""
        measured = [t for t in self.trials if t.role != "confirm" and t.outcome.score is not None]
        return max(measured, key=lambda t: t.outcome.key()) if measured else None

    def best_line(self) -> str:
        """The best objective value recorded so far, as a short line for the progress display."""
        best = self.entry.get("best")
        if not best or best.get("objective") is None:
            return ""
        unit = "infer/s" if self.context.objective.maximise else "ms"
        return f"best {best['objective']:.4g} {unit} (trial {best['number']})"

    def record(self) -> None:
        """Put the trials and the best so far in the report, and write tune.json now (nothing measured is lost)."""
        context = self.context
        self.entry["trials"] = [t.as_dict(context.run_id, context.objective) for t in self.trials]
        best = self.best()
        self.entry["best"] = best.as_dict(context.run_id, context.objective) if best else None
        self.entry["best_per_level"] = self.best_per_level()
        write_tune_report(context.report, context.out, html=False)

    def best_per_level(self) -> dict[str, Any]:
        """Per load level, the search's trial with the best figure among those within the constraints."""
        metric = self.context.objective.metric
        sign = 1.0 if self.context.objective.maximise else -1.0
        best: dict[str, Any] = {}
        for index, users in enumerate(self.context.config.users):
            candidates = [
                (sign * t.levels[index][metric], t)
                for t in self.trials
                if t.role != "confirm"
                and t.within_constraints
                and index < len(t.levels)
                and t.levels[index].get(metric) is not None
            ]
            if candidates:
                value, trial = max(candidates, key=lambda c: c[0])
                best[str(users)] = {
                    "trial": trial.number,
                    metric: sign * value,
                    "describe": trial.settings.describe(),
                }
        return best

    def noise_entry(self, seconds: float | None = None) -> dict[str, Any]:
        """The report's ``noise``: each level's measurements of the start config and the noise they give.

        Args:
            seconds: How long the second measurement took; None keeps the figure already recorded.
        """
        config = self.context.config
        metric = self.context.objective.metric
        noise = level_noise(self.start_measurements, metric)
        entry: dict[str, Any] = {
            "metric": metric,
            "how": (
                "per level, the standard deviation of the difference of two measurements of the start "
                "config (sqrt(2) * stdev / mean of its figure over its measurements), at least 3%"
            ),
            "levels": [
                {
                    "users": users,
                    "start": [m[index].get(metric) for m in self.start_measurements if index < len(m)],
                    "window_spread_pct": [
                        (m[index].get("stability") or {}).get("spread_pct")
                        for m in self.start_measurements
                        if index < len(m)
                    ],
                    "noise_pct": round(noise[index] * 100, 2) if index < len(noise) else None,
                }
                for index, users in enumerate(config.users)
            ],
            "levels_held": self.holds_levels,
        }
        if seconds is not None:
            entry["seconds"] = round(seconds, 3)
        elif "seconds" in self.entry.get("noise", {}):
            entry["seconds"] = self.entry["noise"]["seconds"]
        if self.guard is not None and not self.holds_levels:
            entry["why_not_held"] = (
                "--trade-levels" if config.trade_levels else "the start config broke a constraint"
            )
        return entry
