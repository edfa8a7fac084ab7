"""Every request's completion time, latency, model, inference count and outcome, exactly.

Locust's own statistics round response times (to whole milliseconds below 100 ms), too coarse for
millisecond-scale inference; :class:`Recorder` keeps each request as one row instead. It listens to Locust's
``request`` event; its rows go into a :class:`Records` for analysis, in the same process (local runs) or,
on Locust workers, as compact chunks through Locust's worker reports (:meth:`Recorder.take_chunk`,
:meth:`Records.add_chunk`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["REPORT_KEY", "ROW", "Recorder", "Records"]

REPORT_KEY = "tritongen"
"""Key of the harness's request records in a Locust worker's report to its master."""

ROW = np.dtype(
    [
        ("end", "f8"),
        ("latency_ms", "f8"),
        ("model", "i4"),
        ("inferences", "i4"),
        ("error", "i4"),
        ("bytes", "i8"),
        ("ttft_ms", "f8"),
        ("itl_ms", "f8"),
        ("tokens", "i4"),
        ("sequence", "i1"),
        ("sequence_ms", "f8"),
        ("sequence_length", "i4"),
        ("closing", "i1"),
    ]
)
"""One request: completion time (epoch s), latency, model index, inferences, error index (-1: ok), reply
bytes; for a streamed request its time to first token, mean inter-token latency (NaN: not measured) and
output tokens; for the request that ends a sequence (``sequence`` 1: its last, or the one that failed it),
the sequence's latency and its requests; ``closing`` 1 for a request that ended a sequence left open when
its user stopped (:mod:`~generator.loadtest.lanes`): in the whole test's totals, in no window's figures."""

_NAN = float("nan")

_MAX_MESSAGES = 200
_OTHER = "other errors (too many distinct messages)"


class Recorder:
    """Collects one row per request reported through Locust's ``request`` event."""

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []
        self._names: dict[str, int] = {}
        self._messages: dict[str, int] = {}

    def attach(self, events: Any) -> None:
        """Listen to ``events.request`` (a Locust ``Events`` object)."""
        events.request.add_listener(self.on_request)

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None = None,
        context: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        """Record one request (Locust's ``request`` event signature)."""
        model = self._names.get(name)
        if model is None:
            model = self._names[name] = len(self._names)
        error = -1
        if exception is not None:
            error = self._message_index(_describe(exception))
        if not context:
            context = {}
        row = (time.time(), float(response_time), model, int(context.get("inferences", 1)), error)
        if len(context) == 1:  # only the inferences: a plain request
            self._rows.append((*row, int(response_length or 0), _NAN, _NAN, 0, 0, _NAN, 0, 0))
            return
        self._rows.append(
            (
                *row,
                int(response_length or 0),
                float(context.get("ttft_ms", _NAN)),
                float(context.get("itl_ms", _NAN)),
                int(context.get("tokens", 0)),
                int(context.get("sequence", 0)),
                float(context.get("sequence_ms", _NAN)),
                int(context.get("sequence_length", 0)),
                int(context.get("closing", 0)),
            )
        )

    def _message_index(self, message: str) -> int:
        index = self._messages.get(message)
        if index is None:
            if len(self._messages) >= _MAX_MESSAGES:
                message = _OTHER
                index = self._messages.get(message)
            if index is None:
                index = self._messages[message] = len(self._messages)
        return index

    def __len__(self) -> int:
        return len(self._rows)

    def take_chunk(self) -> dict[str, Any]:
        """Remove the rows recorded so far and return them as a compact, serializable chunk."""
        rows, self._rows = self._rows, []
        array = np.array(rows, dtype=ROW) if rows else np.zeros(0, dtype=ROW)
        return {
            "sent_at": time.time(),
            "names": _ordered(self._names),
            "messages": _ordered(self._messages),
            "rows": array.tobytes(),
        }

    def clear(self) -> None:
        """Drop the rows recorded so far."""
        self._rows = []


def _ordered(table: dict[str, int]) -> list[str]:
    return [name for name, _ in sorted(table.items(), key=lambda item: item[1])]


def _describe(exception: BaseException) -> str:
    text = " ".join(str(exception).split())
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__


class Records:
    """All recorded requests of a test, from one process or many, indexed by name and message.

    Args:
        names: Model (request) names, fixing the order of model indices in :attr:`rows`.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.messages: list[str] = []
        self._chunks: list[np.ndarray] = []
        self._rows: np.ndarray | None = None
        self.last_report: dict[str, float] = {}

    def add_chunk(self, chunk: dict[str, Any], source: str = "local") -> None:
        """Add a chunk from :meth:`Recorder.take_chunk`, remapping its names and messages to this table."""
        rows = np.frombuffer(chunk["rows"], dtype=ROW).copy()
        if len(rows):
            rows["model"] = np.array([self._index(self.names, n) for n in chunk["names"]], dtype="i4")[
                rows["model"]
            ]
            if chunk["messages"]:
                table = np.array([self._index(self.messages, m) for m in chunk["messages"]], dtype="i4")
                failed = rows["error"] >= 0
                rows["error"][failed] = table[rows["error"][failed]]
            self._chunks.append(rows)
            self._rows = None
        self.last_report[source] = max(self.last_report.get(source, 0.0), float(chunk.get("sent_at", 0.0)))

    @staticmethod
    def _index(table: list[str], value: str) -> int:
        try:
            return table.index(value)
        except ValueError:
            table.append(value)
            return len(table) - 1

    @property
    def rows(self) -> np.ndarray:
        """Every row so far, ordered by completion time."""
        if self._rows is None:
            merged = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=ROW)
            self._rows = np.sort(merged, order="end", kind="stable")
            self._chunks = [self._rows] if len(self._rows) else []
        return self._rows

    def between(self, start: float, end: float) -> np.ndarray:
        """Rows of requests that completed in ``[start, end)``, less those that closed sequences at a stop.

        A user's closing requests are sent after the last window closed; leaving them out keeps them out of
        a window also when a clock (a Locust worker's on another machine) would put them in one.
        """
        rows = self.rows
        lo, hi = np.searchsorted(rows["end"], [start, end], side="left")
        rows = rows[lo:hi]
        closing = rows["closing"] > 0
        return rows[~closing] if closing.any() else rows
