"""Hypothesis strategies over ``model_config.proto``, one per area, and seeded draws of cases from them.

:func:`areas` maps each area to its strategy; :func:`draw_cases` draws a reproducible list of cases
from one (Hypothesis's generation, seeded, without its database or shrinking), and :func:`corpus`
draws every area. The same seed and count give the same cases on any machine.
"""

from __future__ import annotations

from itertools import zip_longest

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from .base import labelled
from .config_areas import config_areas
from .feature_areas import feature_areas
from .model_areas import model_areas
from .models import Case


def areas() -> dict[str, st.SearchStrategy[Case]]:
    """Every area's strategy, by area name, in a fixed order."""
    return {**config_areas(), **feature_areas(), **model_areas()}


def draw_cases(strategy: st.SearchStrategy[Case], count: int, seed_value: int) -> list[Case]:
    """Draw ``count`` cases from ``strategy`` with Hypothesis, reproducibly for a given seed.

    Hypothesis draws many more; a third of those kept are sound (``valid``), the rest go round the
    mutations' labels, so a small count covers as many mutations as it can.
    """
    drawn: list[Case] = []

    @seed(seed_value)
    @settings(
        max_examples=count * 20,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    by_label: dict[str, list[Case]] = {}
    for case in drawn:
        by_label.setdefault(case.label, []).append(case)
    sound = by_label.pop("valid", [])
    kept = sound[: max(1, count // 3)] if by_label else sound[:count]
    rounds = zip_longest(*by_label.values())
    mutated = [case for round_ in rounds for case in round_ if case is not None]
    return (kept + mutated)[:count]


def corpus(per_area: int, seed_value: int, only: list[str] | None = None) -> list[Case]:
    """``per_area`` cases of every area (or of the areas in ``only``), area by area."""
    cases: list[Case] = []
    for offset, (area, strategy) in enumerate(areas().items()):
        if only is None or area in only:
            cases += draw_cases(strategy, per_area, seed_value + offset)
    return cases


def chosen(labels: list[tuple[str, str]], seed_value: int) -> list[Case]:
    """One case for each ``(area, label)``, drawn with the seed."""
    areas()  # registers every area's mutations
    return [draw_cases(labelled(area, label), 1, seed_value)[0] for area, label in labels]
