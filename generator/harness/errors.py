"""The load-test harness's error; it lives in tritongen's one exception tree (:mod:`generator.errors`)."""

from __future__ import annotations

from generator.errors import LoadTestError

__all__ = ["LoadTestError"]
