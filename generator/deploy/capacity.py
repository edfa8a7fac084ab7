"""Capacity from measurements: how many Triton replicas serve R requests/s with p99 <= L.

The measured report is one server's: a ``loadtest`` ``report.json`` (``runs``, one per load level) or a
``tune.json`` (per model, the winner trial's ``levels``). A level counts when its p99 latency is within
the limit and no request failed; the best such level's requests/s is what one replica sustains. Then

    replicas = ceil(R * (1 + headroom) / per_replica)
    GPUs = replicas * GPUs per pod;  cost per hour = replicas * price per replica-hour
    HPA min = replicas, max = ceil(replicas * max_factor)

A tune measures each model alone: the fleet is sized for the model that needs the most replicas.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from generator.core.errors import DeployError

__all__ = ["Capacity", "capacity", "measured_levels", "read_report"]


@dataclass(frozen=True)
class Capacity:
    """The fleet size for a target, with what it was derived from.

    Attributes:
        target_rps: Requests per second the fleet must serve.
        max_p99_ms: The p99 latency limit.
        headroom: Spare fraction on top of the target (0.3 = 30%).
        per_replica_rps: Requests/s one replica sustained within the limit (the chosen level's).
        level: The chosen level (``users``, ``requests_per_s``, ``p99_ms``, and ``model`` for a tune).
        replicas: Replicas needed (the HPA's minimum).
        max_replicas: The HPA's maximum.
        gpus_per_pod: GPUs each pod requests.
        gpus: GPUs in all.
        price_per_hour: Price of one replica per hour, if given.
        cost_per_hour: The fleet's cost per hour, if a price was given.
        report: The report read.
        derivation: The steps, one line each, as printed.
    """

    target_rps: float
    max_p99_ms: float
    headroom: float
    per_replica_rps: float
    level: dict[str, Any]
    replicas: int
    max_replicas: int
    gpus_per_pod: int
    gpus: int
    price_per_hour: float | None
    cost_per_hour: float | None
    report: str
    derivation: list[str]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (``capacity.json``)."""
        return asdict(self)


def measured_levels(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each measured level as ``{users, requests_per_s, p99_ms, error_rate}``, per model (``""`` for a
    load test, which measures its models together).

    Raises:
        DeployError: The data is neither a loadtest report nor a tune report.
    """
    if isinstance(report.get("runs"), list):
        return {"": [_level(run.get("users"), run, ("latency_ms", "p99")) for run in report["runs"]]}
    models = report.get("models")
    if isinstance(models, dict) and all(isinstance(entry, dict) for entry in models.values()):
        found: dict[str, list[dict[str, Any]]] = {}
        for name, entry in models.items():
            trials = {t.get("number"): t for t in entry.get("trials", []) if isinstance(t, dict)}
            winner = trials.get(entry.get("winner"))
            if winner is not None:
                found[name] = [_level(lv.get("users"), lv, ("p99_ms",)) for lv in winner.get("levels", [])]
        return found
    raise DeployError(
        "the report has neither 'runs' (a loadtest report.json) nor 'models' (a tune.json); "
        "pass the report.json a loadtest wrote"
    )


def _level(users: Any, figures: dict[str, Any], p99_path: tuple[str, ...]) -> dict[str, Any]:
    p99: Any = figures
    for key in p99_path:
        p99 = p99.get(key) if isinstance(p99, dict) else None
    return {
        "users": users,
        "requests_per_s": figures.get("requests_per_s"),
        "p99_ms": p99,
        "error_rate": figures.get("error_rate"),
    }


def _best_level(levels: list[dict[str, Any]], max_p99_ms: float) -> dict[str, Any] | None:
    within = [
        level
        for level in levels
        if isinstance(level["requests_per_s"], (int, float))
        and isinstance(level["p99_ms"], (int, float))
        and level["p99_ms"] <= max_p99_ms
        and not level["error_rate"]
        and level["requests_per_s"] > 0
    ]
    return max(within, key=lambda level: level["requests_per_s"], default=None)


def read_report(path: Path) -> dict[str, Any]:
    """Read a report.json or tune.json.

    Raises:
        DeployError: The file is missing or is not a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeployError(f"--report {path} does not exist; pass the report.json a loadtest wrote") from None
    except (OSError, ValueError) as exc:
        raise DeployError(
            f"--report {path} is not readable JSON ({exc}); pass a loadtest report.json"
        ) from None
    if not isinstance(data, dict):
        raise DeployError(f"--report {path} is not a JSON object; pass a loadtest report.json")
    return data


def capacity(
    report_path: Path,
    target_rps: float,
    max_p99_ms: float,
    gpus_per_pod: int,
    headroom: float = 0.3,
    price_per_hour: float | None = None,
    max_factor: float = 2.0,
) -> Capacity:
    """Size the fleet for ``target_rps`` at p99 <= ``max_p99_ms`` from a measured report.

    Raises:
        DeployError: Bad numbers, an unreadable report, or no level within the latency limit.
    """
    for label, value in (("--target-rps", target_rps), ("--max-p99-ms", max_p99_ms)):
        if not value > 0:
            raise DeployError(f"{label} must be a positive number, got {value}")
    if headroom < 0 or (price_per_hour is not None and price_per_hour < 0):
        raise DeployError("--headroom and --price-per-hour must not be negative")
    report = read_report(report_path)
    chosen: dict[str, Any] | None = None
    for model, levels in measured_levels(report).items():
        best = _best_level(levels, max_p99_ms)
        if best is None:
            measured = ", ".join(f"{lv['p99_ms']} ms at {lv['users']} users" for lv in levels) or "none"
            what = f"model {model}" if model else "the load test"
            raise DeployError(
                f"no level of {what} in {report_path} has p99 <= {max_p99_ms:g} ms without errors "
                f"(measured p99: {measured}); raise --max-p99-ms or measure lower load levels"
            )
        best = {**best, **({"model": model} if model else {})}
        if chosen is None or best["requests_per_s"] < chosen["requests_per_s"]:
            chosen = best
    if chosen is None:
        raise DeployError(f"{report_path} has no measured levels; run a loadtest and pass its report.json")
    per_replica = float(chosen["requests_per_s"])
    needed = target_rps * (1 + headroom)
    replicas = max(1, math.ceil(needed / per_replica - 1e-9))
    max_replicas = max(replicas, math.ceil(replicas * max_factor))
    gpus = replicas * gpus_per_pod
    cost = round(replicas * price_per_hour, 4) if price_per_hour is not None else None
    of_model = (
        f" of model {chosen['model']} (the model needing the most replicas)" if "model" in chosen else ""
    )
    derivation = [
        f"per replica: {per_replica:g} req/s, the best level{of_model} with p99 <= {max_p99_ms:g} ms "
        f"({chosen['users']} users, p99 {chosen['p99_ms']:g} ms) in {report_path}",
        f"replicas = ceil({target_rps:g} req/s x (1 + {headroom:g} headroom) / {per_replica:g}) = {replicas}",
        f"GPUs = {replicas} replicas x {gpus_per_pod} per pod = {gpus}",
        f"HPA: min {replicas}, max {max_replicas} ({max_factor:g} x min)",
    ]
    if cost is not None:
        derivation.append(
            f"cost = {replicas} replicas x {price_per_hour:g} per replica-hour = {cost:g} per hour"
        )
    return Capacity(
        target_rps=target_rps,
        max_p99_ms=max_p99_ms,
        headroom=headroom,
        per_replica_rps=per_replica,
        level=chosen,
        replicas=replicas,
        max_replicas=max_replicas,
        gpus_per_pod=gpus_per_pod,
        gpus=gpus,
        price_per_hour=price_per_hour,
        cost_per_hour=cost,
        report=str(report_path),
        derivation=derivation,
    )
