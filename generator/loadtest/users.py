"""Locust users that send inference requests to Triton through tritonclient, over HTTP or gRPC.

A user is a closed loop, like one unit of perf_analyzer's concurrency: it sends a request, waits for the
reply, and sends the next (``wait_time`` 0). Each request goes to one of the test's models, picked by
weight, and cycles through that model's prebuilt requests; every request is reported through Locust's
``request`` event with its latency (ms), reply size and exception, and ``context["inferences"]`` (the
batch size) for the harness's recorder. When a model of the test is stateful or decoupled, the user sends
sequences and streamed requests through its :class:`~generator.loadtest.lanes.Lanes`, and when it stops
(in this process or on a Locust worker), it ends the sequences it leaves open, as perf_analyzer does.

* :class:`InferenceUser` takes its protocol from ``--protocol`` (or the URL's scheme): the class the
  locustfile and the ``loadtest`` command run.
* :class:`TritonUser` (protocol from the options), :class:`TritonHttpUser` and :class:`TritonGrpcUser`
  (protocol fixed) are abstract: subclass them in a locustfile of your own to add tasks or change
  ``wait_time`` for user-like scenarios. Being abstract, importing them into a locustfile does not make
  Locust run them as well.

The options come from Locust's parsed options (see :mod:`generator.loadtest.plan`); the requests are built
once per process.
"""

from __future__ import annotations

import random
import time
from bisect import bisect
from itertools import accumulate
from typing import Any, ClassVar

from locust import User, constant, task
from locust.exception import StopUser

from generator.core.errors import LoadTestError
from generator.loadtest.lanes import Lanes
from generator.loadtest.plan import plan_for

__all__ = ["InferenceUser", "TritonGrpcUser", "TritonHttpUser", "TritonUser"]


class TritonUser(User):
    """A closed-loop inference user; the protocol comes from the options.

    Attributes:
        protocol: ``"http"``, ``"grpc"``, or None to follow ``--protocol`` / the URL.
    """

    abstract = True
    wait_time = constant(0)
    protocol: ClassVar[str | None] = None
    _next_id: ClassVar[int] = 0

    def on_start(self) -> None:
        """Resolve the plan (once per process), open this user's connection, pick its starting points."""
        try:
            plan = plan_for(self.environment.parsed_options, self.environment.host)
        except LoadTestError:
            raise StopUser() from None  # the test_start check has logged why
        protocol = self.protocol or plan.target.protocol
        self._requests = plan.requests(protocol)
        self._connection = plan.connect(protocol)
        self._request_type = protocol
        self._contexts = [{"inferences": plan.inferences_per_request(i)} for i in range(len(plan.models))]
        self._cumulative = list(accumulate(plan.weights))
        TritonUser._next_id += 1
        user_id = TritonUser._next_id
        self._random = random.Random(plan.options.seed * 1_000_003 + user_id)
        self._cursors = [user_id % len(requests) for requests in self._requests]
        self._fire = self.environment.events.request.fire
        self._lanes: Lanes | None = None
        if plan.has_sequences or plan.has_streams:
            process = max(0, int(getattr(self.environment.runner, "worker_index", 0) or 0))
            self._lanes = Lanes(
                plan,
                self._requests,
                self._connection,
                self._pick,
                self._random,
                self._cursors,
                self._fire,
                self._request_type,
                process,
            )

    def on_stop(self) -> None:
        """End this user's sequences still going (:meth:`Lanes.close`), then close its connection."""
        connection = getattr(self, "_connection", None)
        if connection is not None:
            lanes = getattr(self, "_lanes", None)
            try:
                if lanes is not None:
                    lanes.close()
            finally:
                connection.close()
                self._connection = None

    def _pick(self) -> int:
        if len(self._cumulative) == 1:
            return 0
        return bisect(self._cumulative, self._random.random() * self._cumulative[-1])

    @task
    def infer(self) -> None:
        """Send one inference request and report it."""
        if self._lanes is not None:  # a stateful or decoupled model: sequences and streams
            self._lanes.send()
            return
        model = self._pick()
        requests = self._requests[model]
        index = self._cursors[model]
        self._cursors[model] = (index + 1) % len(requests)
        exception: Any = None
        length = 0
        start = time.perf_counter()
        try:
            length = self._connection.infer(requests, index)
        except Exception as error:  # every failure is a failed request, reported to Locust
            exception = error
        self._fire(
            request_type=self._request_type,
            name=requests.model,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exception,
            context=self._contexts[model],
        )


class TritonHttpUser(TritonUser):
    """A closed-loop inference user over HTTP (tritonclient.http's request bodies, binary tensor data)."""

    abstract = True
    protocol = "http"


class TritonGrpcUser(TritonUser):
    """A closed-loop inference user over gRPC (tritonclient.grpc's messages, prebuilt, on its own connection)."""

    abstract = True
    protocol = "grpc"


class InferenceUser(TritonUser):
    """The concrete closed-loop user of the locustfile and of ``python -m generator loadtest``."""
