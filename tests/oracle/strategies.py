"""Hypothesis strategies over ``model_config.proto``, one per area, and seeded draws of cases from them.

:func:`areas` maps each area to its strategy; :func:`draw_cases` draws a reproducible list of cases
from one (Hypothesis's generation, seeded, without its database or shrinking), and :func:`corpus`
draws every area. The same seed and count give the same cases on any machine.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from .config_areas import config_areas
from .feature_areas import feature_areas
from .model_areas import model_areas
from .models import Case


def areas() -> dict[str, st.SearchStrategy[Case]]:
    """Every area's strategy, by area name, in a fixed order."""
    return {**config_areas(), **feature_areas(), **model_areas()}


def draw_cases(strategy: st.SearchStrategy[Case], count: int, seed_value: int) -> list[Case]:
    """Draw ``count`` cases from ``strategy`` with Hypothesis, reproducibly for a given seed.

    Cases whose label was drawn before come last, so a small count covers as many labels as it can.
    """
    drawn: list[Case] = []

    @seed(seed_value)
    @settings(
        max_examples=count * 4,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    fresh: list[Case] = []
    repeated: list[Case] = []
    seen: set[str] = set()
    for case in drawn:
        (repeated if case.label in seen else fresh).append(case)
        seen.add(case.label)
    return (fresh + repeated)[:count]


def corpus(per_area: int, seed_value: int, only: list[str] | None = None) -> list[Case]:
    """``per_area`` cases of every area (or of the areas in ``only``), area by area."""
    cases: list[Case] = []
    for offset, (area, strategy) in enumerate(areas().items()):
        if only is None or area in only:
            cases += draw_cases(strategy, per_area, seed_value + offset)
    return cases
