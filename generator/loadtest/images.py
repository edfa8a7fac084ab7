"""Which inputs of a served model take encoded images, so that generated requests carry real images there.

A built-in image step (``source: builtin:image``) decodes its STRING input with Pillow: the few words the
harness sends to other STRING inputs would fail every request. :func:`image_inputs` finds such inputs
through the server's own configs: the step's input
(:func:`generator.core.sample_images.image_inputs`), and an ensemble's inputs that reach one, through
nested ensembles too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from generator.core import sample_images
from generator.loadtest.pipelines import MAX_DEPTH

__all__ = ["image_inputs"]


def image_inputs(name: str, config_of: Callable[[str], dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Inputs of model ``name`` that take encoded images -> the (height, width) they are resized to.

    Args:
        name: The model (an ensemble too).
        config_of: Returns a model's config as Triton's JSON (``ServerControl.config``).

    Raises:
        LoadTestError: (from ``config_of``) a config cannot be read.
    """
    return _walk(name, config_of, ())


def _walk(
    name: str, config_of: Callable[[str], dict[str, Any]], trail: tuple[str, ...]
) -> dict[str, tuple[int, int]]:
    config = config_of(name)
    if config.get("platform") != "ensemble":
        return sample_images.image_inputs(config)
    if name in trail or len(trail) >= MAX_DEPTH:  # a cycle or a runaway nesting: the steps walk refuses it
        return {}
    inputs = {str(tensor["name"]) for tensor in config.get("input") or []}
    found: dict[str, tuple[int, int]] = {}
    for step in (config.get("ensemble_scheduling") or {}).get("step") or []:
        taken = _walk(str(step["model_name"]), config_of, (*trail, name))
        for key, tensor in (step.get("input_map") or {}).items():
            if key in taken and tensor in inputs:
                found.setdefault(str(tensor), taken[key])
    return found
