"""The load-test harness's error, part of tritongen's one exception tree (:mod:`generator.errors`)."""

from __future__ import annotations

from generator.errors import GeneratorError

__all__ = ["LoadTestError"]


class LoadTestError(GeneratorError):
    """A load test could not be set up or run: bad options, unreachable server, unknown model, bad data."""
