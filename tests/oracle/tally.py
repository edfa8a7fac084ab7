"""The agreement figures: per area and in total, against the issue's bar.

Of the cases Triton refuses, the share validate errs on (refusals caught, bar >= 95%); of the cases
Triton loads, the share validate errs on (false alarms, bar <= 2%); of the caught cases, the share
whose message names the problem Triton names (message agreement, bar >= 90%; cases where Triton
crashed name no problem and are left out of it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .runner import Verdict

#: The issue's bar: (figure, bound, "min" or "max").
BAR = (("caught", 0.95, "min"), ("false_alarms", 0.02, "max"), ("messages", 0.90, "min"))


@dataclass
class Figures:
    """Counts of one area (or of all) and the shares the bar is about."""

    cases: int = 0
    refused: int = 0
    caught: int = 0
    loaded: int = 0
    false_alarm_count: int = 0
    messages_judged: int = 0
    messages_agreed: int = 0

    def add(self, verdict: Verdict) -> None:
        """Count one case."""
        self.cases += 1
        if verdict.refused:
            self.refused += 1
            if verdict.errors:
                self.caught += 1
                if verdict.message_agrees is not None:  # Triton named a problem
                    self.messages_judged += 1
                    self.messages_agreed += verdict.message_agrees
        else:
            self.loaded += 1
            self.false_alarm_count += bool(verdict.errors)

    @property
    def shares(self) -> dict[str, float | None]:
        """``caught``, ``false_alarms`` and ``messages`` as fractions (None where nothing to divide)."""
        return {
            "caught": self.caught / self.refused if self.refused else None,
            "false_alarms": self.false_alarm_count / self.loaded if self.loaded else None,
            "messages": self.messages_agreed / self.messages_judged if self.messages_judged else None,
        }

    def meets_bar(self) -> bool:
        """Whether every share with a denominator is within the bar."""
        shares = self.shares
        for name, bound, side in BAR:
            value = shares[name]
            if value is not None and (value < bound if side == "min" else value > bound):
                return False
        return True

    def as_dict(self) -> dict[str, object]:
        """The counts and the shares, for JSON."""
        return {**asdict(self), **self.shares}


def tally(verdicts: Iterable[Verdict], key: str = "area") -> dict[str, Figures]:
    """Figures per ``key`` (``area`` or ``judge``) of the cases, plus ``total``."""
    figures: dict[str, Figures] = {}
    total = Figures()
    for verdict in verdicts:
        figures.setdefault(getattr(verdict.case, key), Figures()).add(verdict)
        total.add(verdict)
    figures["total"] = total
    return figures


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def table(figures: dict[str, Figures]) -> str:
    """The figures as a plain-text table, one row per area."""
    header = (
        f"{'area':20s} {'cases':>5s} {'refused':>7s} {'caught':>11s} {'loaded':>6s} "
        f"{'false alarms':>13s} {'messages':>11s}"
    )
    rows = [header, "-" * len(header)]
    for area, f in figures.items():
        shares = f.shares
        rows.append(
            f"{area:20s} {f.cases:5d} {f.refused:7d} {f.caught:4d} {_share(shares['caught']):>6s} "
            f"{f.loaded:6d} {f.false_alarm_count:5d} {_share(shares['false_alarms']):>7s} "
            f"{f.messages_agreed:4d} {_share(shares['messages']):>6s}"
        )
    return "\n".join(rows)


def bar_lines(total: Figures) -> list[str]:
    """One line per figure of the bar: the total, the bound, and whether it holds."""
    shares = total.shares
    lines = []
    for name, bound, side in BAR:
        value = shares[name]
        holds = value is not None and (value >= bound if side == "min" else value <= bound)
        sign = ">=" if side == "min" else "<="
        verdict = "meets the bar" if holds else "BELOW THE BAR" if value is not None else "no cases"
        lines.append(f"{name:13s} {_share(value):>5s} (bar {sign} {100 * bound:.0f}%): {verdict}")
    return lines
