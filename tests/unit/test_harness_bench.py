"""The steady-measurement rules of the tune's engine (harness/steady.py; no Locust in this process)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from generator.core.errors import LoadTestError
from generator.loadtest.steady import Steadiness, SteadyLevel, merge_resources, settle


def _level(*throughputs: float) -> SteadyLevel:
    level = SteadyLevel(8)
    for index, value in enumerate(throughputs):
        level.windows.append(SimpleNamespace(start=float(index), end=float(index + 1)))
        level.throughputs.append(value)
    return level


def test_a_level_is_steady_when_the_last_windows_agree() -> None:
    level = _level(500.0, 1000.0, 1010.0, 990.0)
    assert settle(level, 3, 5.0)
    assert level.kept == 3 and level.measured == level.windows[1:]
    assert level.spread_pct == pytest.approx(2.0)


def test_a_noisy_level_is_not_steady_and_too_few_windows_never_are() -> None:
    noisy = _level(1000.0, 700.0, 1000.0)
    assert not settle(noisy, 3, 10.0) and noisy.spread_pct == pytest.approx(300 / 900 * 100)
    short = _level(1000.0, 1000.0)
    assert not settle(short, 3, 10.0) and short.kept == 2
    idle = _level(0.0, 0.0, 0.0)
    assert not settle(idle, 3, 10.0) and idle.spread_pct is None


def test_resources_of_windows_merge_as_one() -> None:
    merged = merge_resources(
        [
            {
                "cpu_utilization": 0.5,
                "memory_bytes": 100,
                "gpu_utilization": None,
                "resource_source": "process",
            },
            {
                "cpu_utilization": 0.7,
                "memory_bytes": 300,
                "gpu_utilization": None,
                "resource_source": "process",
            },
        ]
    )
    assert merged == {
        "cpu_utilization": pytest.approx(0.6),
        "memory_bytes": 300,
        "gpu_utilization": None,
        "resource_source": "process",
    }


def test_steadiness_settings_that_cannot_work_are_refused() -> None:
    Steadiness().check()
    for bad in (
        Steadiness(window=0),
        Steadiness(tolerance_pct=0),
        Steadiness(least=4, most=3),
        Steadiness(least=0),
    ):
        with pytest.raises(LoadTestError):
            bad.check()
