"""Property tests of the load test's sequence options (--sequence-length, --sequence-length-variation,
--sequence-id-range, --sequences-per-user): whatever a user writes either parses or is refused with one
LoadTestError line, and what parses keeps its invariants (an ID range START:END starts at 1 or later and
END, excluded, lies after START; a drawn length stays within the variation)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.core.errors import LoadTestError
from generator.loadtest.plan import HarnessOptions
from generator.loadtest.sequences import MAX_SEQUENCE_ID, SequenceSettings, parse_id_range

EDGE_IDS = [0, 1, 2, -1, 10**3, 2**31, 2**63 - 2, MAX_SEQUENCE_ID, MAX_SEQUENCE_ID + 1, 2**64, 10**30]
numbers = st.one_of(st.sampled_from(EDGE_IDS), st.integers(-(2**70), 2**70))
#: How a number may be written: plainly, padded, signed, with '_' or non-ASCII digits, as a float.
number_texts = st.one_of(
    numbers.map(str),
    numbers.map(lambda n: f" {n} "),
    numbers.map(lambda n: f"+{n}"),
    numbers.map(lambda n: f"{n:_}"),
    numbers.map(lambda n: str(n).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " ", "1e3", "0x10", "9" * 5000, "a\nb", "1\n:2", "٣", "∞"]),
)
id_range_texts = st.one_of(
    st.none(),
    numbers,
    st.text(max_size=12),
    number_texts,
    st.builds(
        lambda a, sep, b: f"{a}{sep}{b}",
        number_texts,
        st.sampled_from([":", " : ", "::", "-", ","]),
        number_texts,
    ),
)


def _one_line(error: LoadTestError, option: str) -> None:
    assert len(error.problems) == 1 and "\n" not in str(error), error.problems
    assert str(error).startswith(option), error.problems


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(id_range_texts)
def test_any_id_range_parses_or_is_one_line_error(text: str | int | None) -> None:
    try:
        start, end = parse_id_range(text)
    except LoadTestError as error:
        _one_line(error, "--sequence-id-range")
        return
    # START[:END], END excluded: the last ID sent is END - 1, so a parsed range holds at least one ID.
    assert 1 <= start <= MAX_SEQUENCE_ID
    assert end is None or start <= end <= MAX_SEQUENCE_ID
    head, sep, tail = ("" if text is None else str(text)).strip().partition(":")
    if head.strip():
        assert start == int(head)
    if sep and tail.strip():
        assert end == int(tail) - 1
    else:
        assert end is None


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    length=st.one_of(st.sampled_from([0, 1, 20, -1, 2**63]), st.integers()),
    variation=st.one_of(
        st.sampled_from([0.0, 20.0, 100.0, 100.0000001, -0.0, -1e-9, 5e-324]),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    per_user=st.one_of(st.sampled_from([0, 1, 4, -3]), st.integers()),
    id_range=st.one_of(
        st.none(), st.builds(lambda a, b: f"{a}:{b}", st.integers(1, 50), st.integers(1, 200))
    ),
    users=st.integers(1, 64),
    processes=st.integers(1, 8),
)
def test_any_sequence_settings_pass_or_are_refused_in_one_line(
    length: int, variation: float, per_user: int, id_range: str | None, users: int, processes: int
) -> None:
    # The order run() checks them: the ID range parses, then the settings fit the test's users.
    try:
        start, end = parse_id_range(id_range)
        sequences = SequenceSettings(length, variation, start, end, per_user)
        sequences.check(users, processes)
    except LoadTestError as error:
        assert len(error.problems) == 1 and "\n" not in str(error), error.problems
        assert str(error).startswith("--sequence"), error.problems
        return
    assert length >= 1 and 0 <= variation <= 100 and per_user >= 1
    if end is not None:  # each process's share of the IDs outlasts the sequences that run at once
        assert end - start + 1 >= users * per_user + processes


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    length=st.one_of(st.sampled_from([1, 2, 5, 20, 2**31]), st.integers(1, 10**6)),
    variation=st.one_of(st.sampled_from([0.0, 0.5, 20.0, 33.3, 99.99, 100.0, 5e-324]), st.floats(0, 100)),
    seed=st.integers(0, 2**32),
)
def test_drawn_lengths_stay_within_the_variation(length: int, variation: float, seed: int) -> None:
    sequences = SequenceSettings(length=length, variation_pct=variation)
    sequences.check()
    rng = random.Random(seed)
    share = Fraction(variation) / 100
    low, high = max(1, math.ceil(length * (1 - share))), math.floor(length * (1 + share))
    for _ in range(20):
        drawn = sequences.draw_length(rng)
        assert isinstance(drawn, int) and low <= drawn <= high, (drawn, low, high)


@pytest.mark.parametrize(
    ("sequence_id_range", "expected"),
    [("9\n:3", "--sequence-id-range '9\\n:3'"), ("a\nb", "--sequence-id-range 'a\\nb'")],
)
def test_an_id_range_holding_a_line_break_is_shown_escaped(sequence_id_range: str, expected: str) -> None:
    options = HarnessOptions(host="", models=(), sequence_id_range=sequence_id_range)
    with pytest.raises(LoadTestError) as caught:
        options.sequence_settings()
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
