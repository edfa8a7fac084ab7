"""Pass/fail bounds for CI: ``--fail-if 'p99_ms>50' --fail-if 'error_rate>0.001'``.

An expression is ``METRIC OP NUMBER`` with OP one of ``<``, ``<=``, ``>``, ``>=``; it names the condition that
fails the test, checked against every run (load level). METRIC is a figure of :data:`FIGURES`, or
``<figure>_change_pct``, the change against ``--baseline`` in percent ((new - old) / old * 100; for example
``throughput_change_pct<-10`` fails when throughput dropped by more than 10%). Expressions are parsed with
a regular expression, never evaluated.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generator.core.errors import LoadTestError
from generator.loadtest.report.figures import FIGURE_NAMES, figure_value

__all__ = ["Bound", "check_bounds", "parse_bound", "valid_metrics"]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
CHANGE_SUFFIX = "_change_pct"


def valid_metrics() -> list[str]:
    """Every metric name a bound may use."""
    return [*FIGURE_NAMES, *(f"{name}{CHANGE_SUFFIX}" for name in FIGURE_NAMES)]


@dataclass(frozen=True)
class Bound:
    """A parsed ``--fail-if`` expression.

    Attributes:
        metric: Figure name, possibly with the ``_change_pct`` suffix.
        op: The comparison operator.
        threshold: The number.
        text: The expression as written (normalized spacing).
    """

    metric: str
    op: str
    threshold: float
    text: str

    @property
    def on_change(self) -> bool:
        """Whether the bound is on the change against the baseline."""
        return self.metric.endswith(CHANGE_SUFFIX)

    def breached_by(self, value: float) -> bool:
        """Whether ``value`` meets the failing condition."""
        return _OPERATORS[self.op](value, self.threshold)


def parse_bound(expression: str) -> Bound:
    """Parse one ``--fail-if`` expression.

    Raises:
        LoadTestError: The expression is malformed or names an unknown metric (the message lists the valid
            ones).
    """
    match = _EXPRESSION.match(expression or "")
    if match is None:
        raise LoadTestError(
            f"--fail-if '{expression}' is not METRIC OP NUMBER (OP one of <, <=, >, >=), e.g. 'p99_ms>50'"
        )
    metric = match["metric"]
    if metric not in valid_metrics():
        raise LoadTestError(
            f"--fail-if '{expression}': unknown metric '{metric}'; valid metrics: {', '.join(FIGURE_NAMES)} "
            f"(and each with '{CHANGE_SUFFIX}' for the change against --baseline)"
        )
    threshold = float(match["number"])
    if not math.isfinite(threshold):
        raise LoadTestError(f"--fail-if '{expression}': the number must be finite")
    return Bound(metric, match["op"], threshold, f"{metric}{match['op']}{match['number']}")


def check_bounds(
    bounds: list[Bound], runs: list[dict[str, Any]], comparisons: list[dict[str, Any]] | None = None
) -> list[str]:
    """Check every bound against every run.

    Args:
        bounds: Parsed bounds.
        runs: The report's runs.
        comparisons: The baseline comparison of each run (from :func:`baseline.compare`), same order, or
            None without a baseline.

    Returns:
        One line per breach, naming the bound, the value and the load level, e.g.
        ``p99_ms>50 breached: p99_ms = 61.2 at 8 users``. A bound that cannot be checked (the figure was not
        measured, or there is no baseline for a change) is a breach too: a gate that checks nothing must
        not pass silently.
    """
    breaches: list[str] = []
    for bound in bounds:
        checked = False
        for index, run in enumerate(runs):
            where = f"at {_users(run)} users"
            if bound.on_change:
                figure = bound.metric[: -len(CHANGE_SUFFIX)]
                comparison = comparisons[index] if comparisons and index < len(comparisons) else None
                entry = (comparison or {}).get("figures", {}).get(figure) if comparison else None
                value = entry.get("change_pct") if entry else None
            else:
                value = figure_value(run, bound.metric)
            if value is None:
                continue
            checked = True
            if bound.breached_by(value):
                breaches.append(f"{bound.text} breached: {bound.metric} = {value:.6g} {where}")
        if not checked:
            reason = "no run has a baseline to compare with" if bound.on_change else "it was not measured"
            breaches.append(f"{bound.text} cannot be checked: {reason}")
    return breaches


def _users(run: dict[str, Any]) -> str:
    users = run.get("users")
    if isinstance(users, float) and not users.is_integer():
        return f"{users:.1f}"
    return str(int(users)) if users is not None else "?"
