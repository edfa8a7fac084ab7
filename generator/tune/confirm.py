"""The confirmation round of one model's search: the best candidates and the start config, side by side.

A search ranks its candidates from one measurement each. :class:`Confirmation` measures the best one and
the start config again, in turn: the candidate must still win (:func:`~generator.tune.objective.judge`),
and unless levels may be traded, be worse than the start at no level and better at one. When it is not
confirmed, the next best candidates that beat the start get the same chance (``CONFIRMATIONS`` in all,
while the budget allows); when none is confirmed, the start config stays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from generator.tune.objective import LevelChange, judge, level_noise
from generator.tune.space import Settings, config_json

if TYPE_CHECKING:
    from generator.tune.ledger import TrialLedger
    from generator.tune.trials import Trial

__all__ = ["CONFIRMATIONS", "Confirmation", "MeasureTrial"]

#: Candidates at most that get a side-by-side confirmation, best first, until one is confirmed.
CONFIRMATIONS = 3

#: Loads a config (None: measures what is loaded) and measures it: ``(settings, role, config) -> Trial``.
MeasureTrial = Callable[[Settings, str, "str | None"], "Trial"]


class Confirmation:
    """The confirmation round (see the module docstring).

    Args:
        ledger: The model's trials and report entry; the confirmation's trials and verdict go there.
        measured_base: The model's config as measured (the response cache off), which the start config loads.
        measure: Runs one trial.
        deadline: When the model's share of the budget ends (``time.monotonic()``), or None.
    """

    def __init__(
        self,
        ledger: TrialLedger,
        measured_base: dict[str, Any],
        measure: MeasureTrial,
        deadline: float | None,
    ) -> None:
        self.ledger = ledger
        self.measured_base = measured_base
        self.measure = measure
        self.deadline = deadline

    def run(self) -> Trial | None:
        """Confirm the best candidates in turn; return the one confirmed (None: the start config stays)."""
        ledger, entry = self.ledger, self.ledger.entry
        best = ledger.best()
        start = ledger.trials[0] if ledger.trials else None
        entry["winner"] = None
        entry["vs_start"] = None
        if best is None or start is None:
            entry["verdict"] = "no trial was measured"
            return None
        if not best.outcome.feasible:
            entry["verdict"] = "no trial met the constraints"
            return None
        if best is start:
            entry["verdict"] = self._start_stays()
            return None
        ranked = sorted(
            (
                t
                for t in ledger.trials
                if t.role == "search" and t.outcome.feasible and t.outcome.beats(start.outcome)
            ),
            key=lambda t: t.outcome.key(),
            reverse=True,
        )
        entry["confirmations"] = []
        rejected: list[str] = []
        winner = None
        for index, candidate in enumerate(ranked[:CONFIRMATIONS]):
            if index and not ledger.time_for(2, self.deadline):
                break
            confirmed, line = self._confirm_one(start, candidate)
            if confirmed:
                winner = candidate
                entry["winner"] = candidate.number
                entry["verdict"] = line + (f" (before it, {'; '.join(rejected)})" if rejected else "")
                break
            rejected.append(line)
        if winner is None:
            tried = "; ".join(rejected) or "no candidate beat the start config"
            entry["verdict"] = f"{tried}; the start config stays"
        ledger.record()
        return winner

    def _confirm_one(self, start: Trial, candidate: Trial) -> tuple[bool, str]:
        """Measure the start config and ``candidate`` again, in turn; whether it is confirmed, and a line."""
        ledger, entry = self.ledger, self.ledger.entry
        metric = ledger.context.objective.metric
        # The start config is loaded as Triton first reported it: a load without a config after one with a
        # config keeps the last one (Triton sees the repository unchanged and does not reload it).
        again_start = self.measure(start.settings, "confirm", json.dumps(self.measured_base))
        ledger.trials.append(again_start)
        again = self.measure(
            candidate.settings, "confirm", config_json(self.measured_base, candidate.settings)
        )
        ledger.trials.append(again)
        changes: list[LevelChange] = []
        if ledger.guard is not None and again_start.outcome.score is not None:
            ledger.start_measurements.append(again_start.levels)
            noise = level_noise(ledger.start_measurements, metric)
            beside = ledger.guard.with_reference(again_start.levels, noise)
            again_start.vs_start = beside.compare(ledger.values(again_start))
            changes = again.vs_start = beside.compare(ledger.values(again))
            entry["noise"] = ledger.noise_entry()
        trade = not ledger.holds_levels or not changes
        confirmed, why = judge(changes, again.outcome, again_start.outcome, trade_levels=trade)
        entry["confirmation"] = {"start": again_start.number, "best": again.number, "confirmed": confirmed}
        entry["confirmations"].append({**entry["confirmation"], "trial": candidate.number})
        entry["vs_start"] = {
            "trial": candidate.number,
            "measured": "again, beside the start config",
            "metric": metric,
            "levels": [c.as_dict() for c in changes],
        }
        ledger.record()
        levels = "; ".join(c.describe(metric) for c in changes)
        levels = f" ({levels})" if levels else ""
        return (
            confirmed,
            f"trial {candidate.number} {'confirmed' if confirmed else 'not confirmed'}: {why}{levels}",
        )

    def _start_stays(self) -> str:
        """The verdict when the start config is the best measured (naming what the per-level rule kept out)."""
        trials = self.ledger.trials
        start = trials[0]
        held_out = [
            t
            for t in trials
            if t.role == "search"
            and t.within_constraints
            and t.outcome.score is not None
            and start.outcome.score is not None
            and t.outcome.score > start.outcome.score
            and any(c.verdict == "worse" for c in t.vs_start)
        ]
        if not held_out or not self.ledger.holds_levels:
            return "the start config is the best measured; nothing to change"
        metric = self.ledger.context.objective.metric
        top = max(held_out, key=lambda t: t.outcome.score or 0.0)
        worse = "; ".join(c.describe(metric) for c in top.vs_start if c.verdict == "worse")
        plural = "s" if len(held_out) > 1 else ""
        return (
            f"the start config stays: {len(held_out)} trial{plural} scored higher on the mean over the levels "
            f"but {'were' if plural else 'was'} worse at a level (trial {top.number}: {worse}); "
            "--trade-levels lets a gain at one level buy a loss at another"
        )
