"""What a user sends when a test has a stateful or a decoupled model: its lanes, a sequence (or request) each.

A plain test's user sends one request after another (:mod:`~generator.loadtest.users`). When a model of the
test is stateful (sequence batching) or decoupled, the user drives :class:`Lanes` instead:
``--sequences-per-user`` lanes, served in turn, one request at a time (the user stays one closed loop, one
unit of concurrency). An idle lane picks a model by weight:

* a stateful model starts a sequence: a fresh correlation ID (:class:`~generator.loadtest.sequences.
  SequenceIds`) and a length drawn from the settings; its first request carries ``sequence_start``, its
  last ``sequence_end``, every one ``sequence_id``, and the model's requests follow its pool in order;
* a decoupled model's request goes on a gRPC stream of its own and is read to its final response
  (:class:`~generator.loadtest.streaming.StreamReader`);
* any other model's request is sent as in a plain test.

Each request is reported through Locust's ``request`` event as in a plain test (its latency is to the last
response), with more in ``context`` for the recorder: ``ttft_ms``, ``itl_ms`` and ``tokens`` for a
streamed request; ``sequence`` (1 on the request that ends a sequence: its last, or the one that failed),
``sequence_ms`` (from the sending of its first request to the last reply) and ``sequence_length``. A
request that fails ends its sequence: the lane starts a new one with a new ID, and Triton drops the
abandoned one after the model's ``max_sequence_idle_microseconds``.

When the user stops, :meth:`Lanes.close` ends the sequences still going, as perf_analyzer's workers do at
exit (``CompleteOngoingSequences``): each lane in the middle of a sequence sends it one more request, with
``sequence_end``, so Triton frees the sequence's slot at once instead of holding it until the idle timeout
(a test started right after would find the slots taken). These closing requests are reported like the
others with ``closing`` 1 in ``context`` and no ``sequence``: they count in the whole test's requests,
failures and inferences (the server counts them too), never as completed sequences, and, sent after the
last measurement window closed, in no window's figures (:meth:`~generator.loadtest.recorder.Records.
between` leaves them out). One that fails is a failed request of the totals and nothing more: the slot of
its sequence waits for the idle timeout, as before. When the user was stopped in the middle of a request
(Locust kills a user that outlasts its stop timeout), its connection is in no state to send more, and its
sequences are left to the idle timeout as well.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from generator.loadtest.parameters import sequence_parameters
from generator.loadtest.plan import Plan

__all__ = ["Lanes"]


class _Lane:
    """One lane: the sequence (or single request) it is working through."""

    __slots__ = ("extras", "left", "model", "sent", "sequence_id", "started")

    def __init__(self) -> None:
        self.model = 0
        self.left = 0  # requests still to send in the current sequence (0: idle)
        self.sent = 0
        self.started = 0.0
        self.sequence_id: int | str = 0
        self.extras: dict[tuple[bool, bool], bytes] = {}


class Lanes:
    """One user's lanes (see the module docstring).

    Args:
        plan: The test.
        requests: The user's prebuilt requests, one pool per model (the plan's, for its protocol).
        connection: The user's connection.
        pick: Picks a model by weight (returns its index).
        rng: The user's random numbers (sequence lengths).
        cursors: The user's next request per model (shared with its plain sends).
        fire: Locust's ``request`` event's ``fire``.
        request_type: The protocol's name, as the user reports it.
        process: This process's index among the test's (a Locust worker's index; 0 for one process).
    """

    def __init__(
        self,
        plan: Plan,
        requests: list[Any],
        connection: Any,
        pick: Callable[[], int],
        rng: random.Random,
        cursors: list[int],
        fire: Callable[..., None],
        request_type: str,
        process: int = 0,
    ) -> None:
        self._plan = plan
        self._settings = plan.options.sequence_settings()
        self._ids = plan.sequence_ids(process)
        self._requests = requests
        self._connection = connection
        self._pick = pick
        self._rng = rng
        self._cursors = cursors
        self._fire = fire
        self._request_type = request_type
        self._inferences = [plan.inferences_per_request(i) for i in range(len(plan.models))]
        self._lanes = [_Lane() for _ in range(self._settings.per_user)]
        self._turn = 0
        self._busy = False  # a request is on the connection (still True after one was interrupted)

    def _begin(self, lane: _Lane) -> None:
        """Start the lane's next sequence (or single request) on a model picked by weight."""
        lane.model = self._pick()
        lane.sent = 0
        lane.extras = {}
        sequence = self._plan.models[lane.model].sequence
        if sequence is None:
            lane.left = 1
            return
        lane.left = self._settings.draw_length(self._rng)
        number = self._ids.next()
        lane.sequence_id = str(number) if sequence.string_ids else number

    def _extra(self, lane: _Lane, pool: Any) -> bytes | None:
        """The sequence parameters of the lane's next request, made once per sequence and flags."""
        if self._plan.models[lane.model].sequence is None:
            return None
        flags = (lane.sent == 0, lane.left == 1)
        extra = lane.extras.get(flags)
        if extra is None:
            extra = lane.extras[flags] = pool.encode(sequence_parameters(lane.sequence_id, *flags))
        return extra

    def send(self) -> None:
        """Send the next request of the next lane and report it."""
        lane = self._lanes[self._turn]
        self._turn = (self._turn + 1) % len(self._lanes)
        if lane.left <= 0:
            self._begin(lane)
        self._send(lane)

    def close(self) -> int:
        """End each sequence still going with one last request carrying ``sequence_end``; return how many.

        Called when the user stops, before its connection closes (see the module docstring). Nothing is sent
        when a request of this user was interrupted: the connection may still hold its reply.
        """
        if self._busy:
            return 0
        closing = [
            lane
            for lane in self._lanes
            if lane.left > 0 and lane.sent > 0 and self._plan.models[lane.model].sequence is not None
        ]
        for lane in closing:
            lane.left = 1  # the next request is the sequence's last
            self._send(lane, closing=True)
        return len(closing)

    def _send(self, lane: _Lane, closing: bool = False) -> None:
        """Send the lane's next request and report it (``closing``: one that ends a sequence at the stop)."""
        model = lane.model
        info = self._plan.models[model]
        pool = self._requests[model]
        index = self._cursors[model]
        self._cursors[model] = (index + 1) % len(pool)
        extra = self._extra(lane, pool)
        context: dict[str, Any] = {"inferences": self._inferences[model]}
        if closing:
            context["closing"] = 1
        exception: Any = None
        length = 0
        ended = 0.0
        start = time.perf_counter()
        if lane.sent == 0:
            lane.started = start
        self._busy = True
        try:
            if info.decoupled:
                reader = self._connection.stream(pool, index, extra)
                length, ended = reader.bytes, reader.ended  # its final response, before the stream's trailers
                context.update(ttft_ms=reader.ttft_ms(start), itl_ms=reader.itl_ms(), tokens=reader.tokens)
            else:
                length = self._connection.infer(pool, index, extra)
        except Exception as error:  # every failure is a failed request, reported to Locust
            exception = error
        self._busy = False
        end = ended or time.perf_counter()
        lane.sent += 1
        lane.left = 0 if exception is not None else lane.left - 1
        if info.sequence is not None and lane.left == 0 and not closing:
            context.update(sequence=1, sequence_ms=(end - lane.started) * 1000.0, sequence_length=lane.sent)
        self._fire(
            request_type=self._request_type,
            name=pool.model,
            response_time=(end - start) * 1000.0,
            response_length=length,
            exception=exception,
            context=context,
        )
