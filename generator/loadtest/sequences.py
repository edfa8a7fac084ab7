"""Sequence mode: what a stateful model's config asks of a client, and the sequences the users send it.

A model whose config has ``sequence_batching`` (or an ensemble with such a step) keeps state per
sequence: Triton routes each request by its correlation ID and fills the model's control tensors (START,
END, READY, CORRID) itself, from three request parameters: ``sequence_id``, ``sequence_start`` (on the
first request of a sequence) and ``sequence_end`` (on the last). The controls, and implicit state
(``state``), are not inputs of the model's metadata, so a client never sends them and the harness sends
none: it sends the parameters, as perf_analyzer's sequence mode does.

* :func:`sequence_model` reads what the harness needs from a config (:class:`SequenceModel`);
* :class:`SequenceSettings` the options: a sequence's length (fixed, or varied uniformly by a percentage,
  as perf_analyzer's ``--sequence-length`` and ``--sequence-length-variation``), the correlation IDs'
  range (``--sequence-id-range START:END``, END excluded, as perf_analyzer's) and the sequences each user
  keeps going at once;
* :class:`SequenceIds` hands out correlation IDs, a fresh one per sequence, distinct across the users of
  a process and across the processes of a test (Locust workers take every Nth ID of the range).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

from generator.core.errors import LoadTestError

__all__ = [
    "DEFAULT_LENGTH",
    "DEFAULT_VARIATION_PCT",
    "MAX_SEQUENCE_ID",
    "SequenceIds",
    "SequenceModel",
    "SequenceSettings",
    "parse_id_range",
    "sequence_model",
]

DEFAULT_LENGTH = 20
"""Requests per sequence (perf_analyzer's default ``--sequence-length``)."""

DEFAULT_VARIATION_PCT = 20.0
"""How much a sequence's length varies, in percent (perf_analyzer's default ``--sequence-length-variation``)."""

MAX_SEQUENCE_ID = 2**63 - 1
"""The largest correlation ID sent (Triton reads ``sequence_id`` as a 64-bit integer parameter)."""


@dataclass(frozen=True)
class SequenceModel:
    """What a stateful model's config says to a client.

    Attributes:
        strategy: ``"direct"`` or ``"oldest"`` (the sequence batcher's strategy).
        string_ids: Whether its correlation IDs are strings (a CORRID control of ``TYPE_STRING``).
        controls: The names of its control tensors, which Triton fills and a client never sends.
        states: The input names of its implicit state, which Triton carries between requests.
        idle_us: ``max_sequence_idle_microseconds``: how long Triton keeps an idle sequence (None: its
            default, 1 s).
        through: The stateful step's model when the model is an ensemble over it, else None.
    """

    strategy: str
    string_ids: bool = False
    controls: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    idle_us: int | None = None
    through: str | None = None


def sequence_model(config: dict[str, Any], through: str | None = None) -> SequenceModel | None:
    """The sequence batching of a model's config (as the server returns it, JSON), or None without it.

    Args:
        config: The model's config.
        through: For an ensemble's step: the step's model name (recorded in the result).
    """
    batching = config.get("sequence_batching")
    if not isinstance(batching, dict):
        return None
    strategy = "oldest" if isinstance(batching.get("oldest"), dict) else "direct"
    controls: list[str] = []
    string_ids = False
    for entry in batching.get("control_input") or []:
        controls.append(str(entry.get("name", "")))
        for control in entry.get("control") or []:
            if control.get("kind") == "CONTROL_SEQUENCE_CORRID" and control.get("data_type") == "TYPE_STRING":
                string_ids = True
    states = tuple(str(s.get("input_name", "")) for s in batching.get("state") or [])
    idle = batching.get("max_sequence_idle_microseconds")
    return SequenceModel(
        strategy=strategy,
        string_ids=string_ids,
        controls=tuple(controls),
        states=states,
        idle_us=int(idle) if idle else None,
        through=through,
    )


def parse_id_range(text: str | None) -> tuple[int, int | None]:
    """Parse ``--sequence-id-range START[:END]`` as perf_analyzer reads it: from START up to END, END excluded.

    Returns:
        The first and the last ID (included; None: no bound). None or empty text: from 1, unbounded.

    Raises:
        LoadTestError: Not whole numbers, START below 1, or END not above START.
    """
    if text is None or not str(text).strip():
        return 1, None
    head, sep, tail = str(text).strip().partition(":")
    try:
        start = int(head)
        end = int(tail) if sep and tail.strip() else None
    except ValueError:
        start, end = 0, None
    if start < 1 or start > MAX_SEQUENCE_ID or (end is not None and not start < end <= MAX_SEQUENCE_ID + 1):
        raise LoadTestError(
            f"--sequence-id-range {str(text)!r}: write START or START:END (END excluded), whole numbers with "
            f"1 <= START < END <= {MAX_SEQUENCE_ID + 1}, e.g. --sequence-id-range 1000:2000"
        )
    return start, None if end is None else end - 1


@dataclass(frozen=True)
class SequenceSettings:
    """How the users drive the sequences of a stateful model.

    Attributes:
        length: Requests per sequence.
        variation_pct: Each sequence's length is drawn uniformly within ``length`` plus or minus this
            percentage of it (at least 1); 0 keeps every sequence at ``length``.
        id_start: The first correlation ID.
        id_end: The last correlation ID (included), or None for no bound.
        per_user: Sequences each user keeps going at once, sending their requests in turn.
    """

    length: int = DEFAULT_LENGTH
    variation_pct: float = DEFAULT_VARIATION_PCT
    id_start: int = 1
    id_end: int | None = None
    per_user: int = 1

    def check(self, users: int = 1, processes: int = 1) -> None:
        """Check the settings for a test of ``users`` users at most, spread over ``processes`` processes.

        Raises:
            LoadTestError: A bad length, variation or count, or an ID range too small for the sequences
                that run at once.
        """
        if self.length < 1:
            raise LoadTestError(f"--sequence-length must be at least 1, not {self.length}")
        if not 0 <= self.variation_pct <= 100:
            raise LoadTestError(
                f"--sequence-length-variation must be 0 to 100 (percent), not {self.variation_pct:g}"
            )
        if self.per_user < 1:
            raise LoadTestError(f"--sequences-per-user must be at least 1, not {self.per_user}")
        if self.id_end is not None:
            span = self.id_end - self.id_start + 1
            needed = users * self.per_user + processes
            if span < needed:
                raise LoadTestError(
                    f"--sequence-id-range {self.id_start}:{self.id_end + 1} gives {span} correlation IDs, but up to "
                    f"{users * self.per_user} sequences run at once ({users} users x {self.per_user} per user); "
                    f"give a range of at least {needed} IDs"
                )

    def draw_length(self, rng: random.Random) -> int:
        """A sequence's length: ``length`` varied uniformly by ``variation_pct`` (perf_analyzer's rule)."""
        if self.variation_pct == 0:
            return self.length
        offset = int((2.0 * rng.random() - 1.0) * self.variation_pct / 100.0 * self.length)
        return max(1, self.length + offset)


class SequenceIds:
    """Correlation IDs for one process: process ``index`` of ``processes`` takes every ``processes``-th ID.

    IDs are handed out in turn and wrap around at the range's end, so an ID comes back only after every
    other ID of this process's share has been used (:meth:`SequenceSettings.check` makes the share larger
    than the sequences that run at once).

    Args:
        start: The range's first ID.
        end: Its last ID (included), or None for no bound.
        index: This process's index (a Locust worker's ``worker_index``; 0 for one process).
        processes: How many processes share the range.
    """

    def __init__(self, start: int, end: int | None, index: int = 0, processes: int = 1) -> None:
        processes = max(1, processes)
        self._first = start + index % processes
        self._step = processes
        last = MAX_SEQUENCE_ID if end is None else end
        self._count = max(1, (last - self._first) // processes + 1)
        self._counter = itertools.count()

    def next(self) -> int:
        """A correlation ID for a new sequence."""
        return self._first + (next(self._counter) % self._count) * self._step
