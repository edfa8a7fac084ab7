"""Comparison with an earlier report: the change in every figure, and whether it is an improvement.

Runs are matched by load level (``users``); a run with no counterpart in the baseline gets no comparison.
For each figure measured in both: ``old``, ``new``, ``change_pct`` ((new - old) / old * 100, None when old
is 0), ``better`` (the direction that counts as an improvement) and ``verdict`` (``"better"``,
``"worse"`` or ``"same"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from generator.core.errors import LoadTestError
from generator.loadtest.report.figures import FIGURES, figure_value

__all__ = ["compare", "load_baseline", "mismatches"]

_SAME_WHEN_WITHIN = 1e-9


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check an earlier ``report.json``.

    Raises:
        LoadTestError: The file is missing, not JSON, or not a tritongen load-test report.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoadTestError(
            f"baseline {path} does not exist; give the report.json of an earlier run"
        ) from None
    except (OSError, ValueError) as error:
        raise LoadTestError(f"baseline {path} is not a readable JSON file ({error})") from error
    runs = document.get("runs") if isinstance(document, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and "users" in r for r in runs):
        raise LoadTestError(
            f"baseline {path} is not a tritongen load-test report (no 'runs' with 'users'); "
            "give the report.json that `python -m generator loadtest` wrote"
        )
    document["path"] = str(path)
    return document


def compare(runs: list[dict[str, Any]], baseline: dict[str, Any]) -> list[dict[str, Any] | None]:
    """Compare each run with the baseline's run at the same load level.

    Returns:
        One entry per run, in order: None without a counterpart, else ``{"users", "figures": {name: {old,
        new, change_pct, better, verdict}}}``.
    """
    by_users = {_level(r["users"]): r for r in baseline.get("runs", [])}
    result: list[dict[str, Any] | None] = []
    for run in runs:
        old_run = by_users.get(_level(run.get("users")))
        if old_run is None:
            result.append(None)
            continue
        figures = {}
        for figure in FIGURES:
            old = figure_value(old_run, figure.name)
            new = figure_value(run, figure.name)
            if old is None or new is None:
                continue
            change = (new - old) / abs(old) * 100.0 if old != 0 else None
            figures[figure.name] = {
                "old": old,
                "new": new,
                "change_pct": change,
                "better": figure.better,
                "verdict": _verdict(old, new, figure.better),
            }
        result.append({"users": run.get("users"), "figures": figures})
    return result


def _level(users: Any) -> float | None:
    try:
        return round(float(users), 1)
    except (TypeError, ValueError):
        return None


def _verdict(old: float, new: float, better: str) -> str:
    if abs(new - old) <= _SAME_WHEN_WITHIN * max(abs(old), abs(new), 1.0):
        return "same"
    improved = new > old if better == "higher" else new < old
    return "better" if improved else "worse"


def mismatches(metadata: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Differences in how the two reports were measured (models, protocol, batch size, shape), as notes."""
    notes = []
    for key in ("models", "protocol", "batch_size", "shape", "input_shapes", "duration_s"):
        if key in baseline and baseline.get(key) != metadata.get(key):
            notes.append(
                f"the baseline's {key} was {baseline.get(key)!r}, this run's is {metadata.get(key)!r}"
            )
    return notes
