"""The steps of an ensemble, as Triton serves it: which models a request to a pipeline runs through.

An ensemble's config (``platform: "ensemble"``) lists its steps in ``ensemble_scheduling``; a step may be
an ensemble itself. :func:`pipeline_steps` walks them, depth first and in order, through the server's own
model configs, so the load test can snapshot every composing model's statistics next to the ensemble's
(:func:`~generator.loadtest.metrics.step_figures`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from generator.core.errors import LoadTestError

__all__ = ["MAX_DEPTH", "Step", "pipeline_steps"]

MAX_DEPTH = 16
"""Nesting deeper than this is refused (Triton refuses cycles, so this only guards against a broken server)."""


@dataclass(frozen=True)
class Step:
    """One composing model of a pipeline.

    Attributes:
        model: The step's model.
        version: The version the step names (-1: the latest).
        parent: The ensemble whose step it is.
        depth: 1 for a step of the loaded ensemble, 2 for a step of one of its ensemble steps, ...
        is_ensemble: Whether the step is an ensemble itself (its steps follow it).
        calls: How many times one request to the loaded ensemble runs this model (steps naming the same
            model are one entry; Triton's statistics are per model).
    """

    model: str
    version: int
    parent: str
    depth: int
    is_ensemble: bool
    calls: int = 1


def pipeline_steps(name: str, config_of: Callable[[str], dict[str, Any]]) -> tuple[Step, ...]:
    """Every composing model of ensemble ``name``, depth first in step order, each model once.

    Args:
        name: The ensemble.
        config_of: Returns a model's config as Triton's JSON (``ServerControl.config``); each model's
            config is asked for once.

    Raises:
        LoadTestError: A config cannot be read, the steps run in a cycle, or the nesting is deeper than
            :data:`MAX_DEPTH`.
    """
    configs: dict[str, dict[str, Any]] = {}

    def config(model: str) -> dict[str, Any]:
        if model not in configs:
            configs[model] = config_of(model)
        return configs[model]

    found: dict[str, Step] = {}
    _walk((name,), config, found)
    return tuple(found.values())


def _walk(path: tuple[str, ...], config: Callable[[str], dict[str, Any]], found: dict[str, Step]) -> None:
    """Add the steps of ensemble ``path[-1]`` (reached through ``path``) and of its ensemble steps."""
    if len(path) > MAX_DEPTH:
        raise LoadTestError(
            f"ensemble '{path[0]}' nests ensembles deeper than {MAX_DEPTH} ({' > '.join(path)}); "
            "the harness does not follow it"
        )
    for entry in (config(path[-1]).get("ensemble_scheduling") or {}).get("step", []):
        model = str(entry["model_name"])
        if model in path:
            raise LoadTestError(f"ensemble '{path[0]}' runs in a cycle ({' > '.join((*path, model))})")
        if model in found:  # another step runs the same model: one entry, called once more per request
            found[model] = replace(found[model], calls=found[model].calls + 1)
        else:
            version = int(entry.get("model_version", -1) or -1)
            is_ensemble = config(model).get("platform") == "ensemble"
            found[model] = Step(model, version, path[-1], len(path), is_ensemble)
        if found[model].is_ensemble:
            _walk((*path, model), config, found)
