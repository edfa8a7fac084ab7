"""Streaming mode: a decoupled model's responses to one request, read as they arrive over a gRPC stream.

A decoupled model (``model_transaction_policy { decoupled: true }``) answers a request with any number of
responses, which Triton sends only on its bidirectional gRPC stream, ``ModelStreamInfer``. The harness
sends each request on a stream of its own (a call on the user's HTTP/2 connection, like a unary one) with
``triton_enable_empty_final_response``, so Triton marks the request's last response with the
``triton_final_response`` parameter even when the model ends with an empty one; that response ends the
request (its latency), and the call goes on to the stream's trailers, so the stream is closed on both
sides before the connection is used again or closed. :class:`StreamReader` takes the stream's DATA as it
arrives
(:meth:`~generator.loadtest.grpcwire.UnaryConnection.call`'s sink), splits it into gRPC messages, and
notes for each ``ModelStreamInferResponse`` when it came:

* a response with outputs is one output token (as perf_analyzer and genai-perf count a text generator's
  responses); the first one's time gives the time to first token, the first and last the inter-token
  latency, (last - first) / (tokens - 1);
* a response with an ``error_message`` ends the request as failed.
"""

from __future__ import annotations

import time
from typing import Any

from generator.loadtest.parameters import FINAL_RESPONSE

__all__ = ["StreamReader"]


class StreamReader:
    """The responses of one streamed request, as they arrive (a DATA sink of one gRPC call).

    Args:
        keep: Keep each response with outputs (``ModelInferResponse`` messages), for a check.

    Attributes:
        tokens: Responses that carried outputs.
        first: ``time.perf_counter()`` when the first of them arrived (0.0: none did).
        last: When the last of them arrived.
        final: Whether the final response arrived.
        ended: When the final response (or one with an error) arrived (0.0: none did).
        error: The error a response carried, or None.
        responses: The kept responses.
        bytes: The length of every response message (set by the caller when the call returns).
    """

    __slots__ = (
        "_buffer",
        "bytes",
        "ended",
        "error",
        "final",
        "first",
        "keep",
        "last",
        "responses",
        "tokens",
    )

    def __init__(self, keep: bool = False) -> None:
        self._buffer = bytearray()
        self.keep = keep
        self.tokens = 0
        self.first = 0.0
        self.last = 0.0
        self.final = False
        self.ended = 0.0
        self.error: str | None = None
        self.responses: list[Any] = []
        self.bytes = 0

    def __call__(self, data: bytes) -> bool:
        """Take a piece of the stream; return True once the request's responses are complete."""
        if self.ended:
            return True
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 5:
            size = int.from_bytes(buffer[1:5], "big")
            if len(buffer) < 5 + size:
                break
            message = bytes(buffer[5 : 5 + size])
            del buffer[: 5 + size]
            if self._response(message):
                return True
        return False

    def _response(self, message: bytes) -> bool:
        from tritonclient.grpc import service_pb2

        now = time.perf_counter()
        response = service_pb2.ModelStreamInferResponse.FromString(message)
        if response.error_message:
            self.error = response.error_message
            self.ended = now
            return True
        infer = response.infer_response
        if len(infer.outputs):
            if not self.tokens:
                self.first = now
            self.last = now
            self.tokens += 1
            if self.keep:
                self.responses.append(infer)
        parameters = infer.parameters
        self.final = FINAL_RESPONSE in parameters and parameters[FINAL_RESPONSE].bool_param
        if self.final:
            self.ended = now
        return self.final

    def ttft_ms(self, sent: float) -> float:
        """Milliseconds from ``sent`` (when the request was sent) to the first token (NaN without one)."""
        return (self.first - sent) * 1000.0 if self.tokens else float("nan")

    def itl_ms(self) -> float:
        """The mean gap between consecutive tokens in milliseconds (NaN with fewer than two)."""
        return (self.last - self.first) * 1000.0 / (self.tokens - 1) if self.tokens > 1 else float("nan")
