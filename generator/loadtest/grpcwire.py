"""gRPC unary calls on a plain socket: the HTTP/2 and HPACK a closed-loop load test needs, and no more.

Why not grpcio: under Locust, gRPC's Python stack has to run on gevent, which hands every completion-queue
poll to a native thread. Measured on a 2-core machine at concurrency 8 against the embedded Triton, client
CPU per call: tritonclient.grpc's stub with futures on one channel (the harness's former path) 270-320 us,
grpcio's raw-bytes method no better (blocking calls per greenlet, or blocking calls in gevent's native
thread pool without gevent's gRPC support, 270-430 us); on a server sharing those cores the harness reached
0.5-0.6x perf_analyzer's throughput. A call here costs 50-70 us, as much as HTTP/1.1 on a keep-alive socket
(:mod:`~generator.loadtest.clients`): the request is written as prebuilt bytes and the reply read into one
buffer on the same cooperative socket the HTTP path uses, and grpcio's fork handlers never meet Locust's
worker processes.

Why not the ``h2`` library for the framing: ``perf/bench_grpcwire.py`` makes the same sequential calls
through h2's ``H2Connection`` (its obvious use: default settings, events read until the stream ends). Client
CPU per call, medians of 3 rounds of 3,000 calls on 2 cores: 81 us here, 273 us with h2 (3.4x), 225 us with
tritonclient.grpc's blocking stub; 52 us here once repeated header blocks were remembered
(:class:`_HeaderBlocks`). A load generator's rate per core is that CPU, so the framing stays.

What :class:`UnaryConnection` speaks (RFC 9113 HTTP/2, RFC 7541 HPACK, gRPC's "PROTOCOL-HTTP2"):

* one connection, one call at a time on it (streams 1, 3, 5, ...), as one closed-loop user needs;
* a request is a HEADERS frame whose block is the same bytes for every call (static-table entries and
  never-indexed literals, so no table state; :func:`request_headers`), then the gRPC message (:func:`grpc_message`) in DATA
  frames no larger than the server's ``SETTINGS_MAX_FRAME_SIZE``, within its flow-control windows;
* every header block the server sends is decoded with the ``hpack`` library (HTTP/2's header
  compression); DATA is counted, not parsed (a caller that decodes the reply may have it kept); the
  outcome is the trailers' ``grpc-status`` and ``grpc-message``;
* a streamed reply (a decoupled model's responses on ``ModelStreamInfer``, the request sent and the stream
  half-closed as for a unary call) goes to the caller's sink as it arrives, and the call ends with the
  trailers, as a unary one. (A client that closes its connection between a stream's last response and its
  trailers can leave Triton 2.51 unable to unload the model: the harness never does.)
* upkeep: the server's SETTINGS are applied and acknowledged, its PINGs answered; this side's receive windows
  are opened wide when connecting and topped up; after a GOAWAY the connection is not reused, and a call the
  server did not take fails as UNAVAILABLE.

Every failure is a :class:`GrpcError` with a gRPC status code: the server's, or UNAVAILABLE (no connection,
or it broke), DEADLINE_EXCEEDED (no answer within the timeout), INTERNAL (the server broke the protocol).
A failed connection is closed; the next call opens a new one.
"""

from __future__ import annotations

import math
import socket
import struct
from collections.abc import Callable
from urllib.parse import unquote

from hpack import Decoder, Encoder, HPACKError, NeverIndexedHeaderTuple

__all__ = ["STATUS_NAMES", "DataSink", "GrpcError", "UnaryConnection", "grpc_message", "request_headers"]

DataSink = Callable[[bytes], object]
"""Reads a call's reply DATA as it arrives (see :meth:`UnaryConnection.call`)."""

STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
"""gRPC's status codes by number (``grpc.StatusCode`` names them the same)."""

_CANCELLED, _UNKNOWN, _DEADLINE_EXCEEDED, _RESOURCE_EXHAUSTED = 1, 2, 4, 8
_PERMISSION_DENIED, _UNIMPLEMENTED, _INTERNAL, _UNAVAILABLE, _UNAUTHENTICATED = 7, 12, 13, 14, 16


class GrpcError(Exception):
    """A call that did not succeed.

    Attributes:
        code: The gRPC status code (an index into :data:`STATUS_NAMES`).
        details: What went wrong, as the server or the transport said it.
    """

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details

    @property
    def status(self) -> str:
        """The code as ``grpc.StatusCode`` prints it, e.g. ``StatusCode.UNAVAILABLE``."""
        name = STATUS_NAMES[self.code] if 0 <= self.code < len(STATUS_NAMES) else str(self.code)
        return f"StatusCode.{name}"


class _ProtocolError(Exception):
    """The server broke HTTP/2; the connection cannot go on."""


# --- the request side: bytes built once --------------------------------------------------------------


def _timeout_value(seconds: float) -> str:
    """``grpc-timeout``: at most 8 digits and a unit."""
    millis = max(1, math.ceil(seconds * 1000))
    return f"{millis}m" if millis < 10**8 else f"{min(math.ceil(seconds), 10**8 - 1)}S"


def request_headers(authority: str, path: str, timeout: float | None = None) -> bytes:
    """The HPACK block of a gRPC call's request headers, the same bytes for every call.

    Args:
        authority: ``host:port`` of the server.
        path: ``/package.Service/Method``.
        timeout: Seconds the server may take (its ``grpc-timeout``), or None for no deadline.
    """
    fields = [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ]  # fmt: skip
    if timeout is not None:
        fields.append(("grpc-timeout", _timeout_value(timeout)))
    return Encoder().encode([NeverIndexedHeaderTuple(n, v) for n, v in fields], huffman=False)


def grpc_message(payload: bytes) -> bytes:
    """A serialized message as gRPC frames it: uncompressed flag, 4-byte length, the bytes."""
    return struct.pack(">BI", 0, len(payload)) + payload


# --- the connection ----------------------------------------------------------------------------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME = struct.Struct(">IBI")  # length << 8 | type, flags, stream id
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    0, 1, 3, 4, 5, 6, 7, 8, 9,
)  # fmt: skip
_END_STREAM = _ACK = 0x1
_END_HEADERS, _PADDED, _PRIORITY = 0x4, 0x8, 0x20
_SETTINGS_ENABLE_PUSH, _SETTINGS_INITIAL_WINDOW_SIZE, _SETTINGS_MAX_FRAME_SIZE = 2, 4, 5
_DEFAULT_WINDOW = 65_535
_DEFAULT_FRAME = 16_384  # also the largest frame this side accepts (it never raises SETTINGS_MAX_FRAME_SIZE)
_MAX_WINDOW = 2**31 - 1
_REFILL = 2**30  # DATA bytes received before the connection window is topped up
_LAST_STREAM = 2**31 - 1
_CANCEL, _REFUSED_STREAM, _ENHANCE_YOUR_CALM, _INADEQUATE_SECURITY = 0x8, 0x7, 0xB, 0xC
_BUFFER_BYTES = 64 * 1024

# gRPC's PROTOCOL-HTTP2: the status of a call that ends with an HTTP/2 error code, or an HTTP status.
_RESET_STATUS = {
    _REFUSED_STREAM: _UNAVAILABLE, _CANCEL: _CANCELLED, _ENHANCE_YOUR_CALM: _RESOURCE_EXHAUSTED,
    _INADEQUATE_SECURITY: _PERMISSION_DENIED,
}  # fmt: skip
_HTTP_STATUS = {
    400: _INTERNAL, 401: _UNAUTHENTICATED, 403: _PERMISSION_DENIED, 404: _UNIMPLEMENTED,
    429: _UNAVAILABLE, 502: _UNAVAILABLE, 503: _UNAVAILABLE, 504: _UNAVAILABLE,
}  # fmt: skip


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _FRAME.pack(len(payload) << 8 | kind, flags, stream) + payload


_OPENING = (
    _PREFACE
    + _frame(
        _SETTINGS,
        0,
        0,
        struct.pack(">HIHI", _SETTINGS_ENABLE_PUSH, 0, _SETTINGS_INITIAL_WINDOW_SIZE, _MAX_WINDOW),
    )
    + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _MAX_WINDOW - _DEFAULT_WINDOW))
)
"""What this side sends first: the preface, its SETTINGS (no push, the widest stream windows) and the widest
connection window."""


class _Call:
    """What one call has received so far."""

    __slots__ = (
        "body", "ended", "headers", "length", "refused", "reset", "sink", "stream", "trailers", "window",
    )  # fmt: skip

    def __init__(
        self, stream: int, window: int, body: bytearray | None = None, sink: DataSink | None = None
    ) -> None:
        self.stream = stream
        self.body = body  # where the reply's DATA goes, when the caller keeps it
        self.sink = sink  # reads the reply's DATA as it arrives (a streamed reply's messages)
        self.window = window  # this side's send window on the stream
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.length = 0
        self.reset: int | None = None
        self.refused = False
        self.ended = False


class _HeaderBlocks:
    """The server's header blocks, decoded with ``hpack``; a block seen before is not decoded again.

    Triton sends the same few blocks for every call (response headers, ``grpc-status: 0`` trailers), and
    once their fields are in its dynamic table they are a few index bytes each. A block whose decoding
    left the dynamic table (its entries and size) as it was decodes to the same fields for as long as the
    table stays so: it is remembered, and every remembered block is forgotten when a decoding changes the
    table. This saves about half of a call's header work.
    """

    _LIMIT = 64

    def __init__(self) -> None:
        self._decoder = Decoder()
        self._table = self._decoder.header_table
        self._known: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The block's fields, as ``Decoder.decode(block, raw=True)`` gives them."""
        fields = self._known.get(block)
        if fields is not None:
            return fields
        before = (tuple(self._table.dynamic_entries), self._table.maxsize)
        fields = self._decoder.decode(block, raw=True)
        if (tuple(self._table.dynamic_entries), self._table.maxsize) != before or len(
            self._known
        ) >= self._LIMIT:
            self._known.clear()
        else:
            self._known[block] = fields
        return fields


class UnaryConnection:
    """One HTTP/2 connection that makes gRPC unary calls one at a time, opened on the first call.

    Args:
        host: The server's host name or address.
        port: Its port.
        timeout: Seconds to connect, and to wait for each read from the server.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._address = (host, port)
        self._timeout = timeout
        self._socket: socket.socket | None = None
        self._buffer = bytearray(_BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        self._reset_state()

    def _reset_state(self) -> None:
        self._decoder = _HeaderBlocks()
        self._next_stream = 1
        self._send_window = _DEFAULT_WINDOW  # connection-level, this side's
        self._initial_window = _DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self._max_frame = _DEFAULT_FRAME  # the server's SETTINGS_MAX_FRAME_SIZE
        self._unacknowledged = 0  # DATA bytes received since the last connection WINDOW_UPDATE
        self._going_away = False
        self._start = self._end = 0

    def call(
        self, headers: bytes, message: bytes, body: bytearray | None = None, sink: DataSink | None = None
    ) -> int:
        """Make one call; return the length of the reply's message in bytes.

        Args:
            headers: The request's header block (:func:`request_headers`).
            message: The request as a gRPC message (:func:`grpc_message`).
            body: Where to keep the reply (its gRPC message, framing included), or None to count it only.
            sink: Called with each piece of the reply's DATA as it arrives (a streamed reply's messages,
                which it may time); the call still ends with the server's trailers.

        Raises:
            GrpcError: The call failed: the server's status, or the transport's (see the module docstring).
        """
        try:
            call = self._exchange(headers, message, body, sink)
        except GrpcError:
            raise
        except TimeoutError:
            self.close()
            raise GrpcError(_DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except OSError as error:
            self.close()
            raise GrpcError(_UNAVAILABLE, f"connection to {self._where()} failed: {_reason(error)}") from None
        except (_ProtocolError, HPACKError) as error:
            self.close()
            raise GrpcError(_INTERNAL, f"{self._where()} broke the HTTP/2 protocol: {error}") from None
        except BaseException:  # a killed greenlet: the connection is mid-call, not reusable
            self.close()
            raise
        if self._going_away:  # the server will close it: the next call opens a new one
            self.close()
        return _outcome(call)

    def close(self) -> None:
        """Close the connection. Idempotent."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _where(self) -> str:
        host, port = self._address
        return f"Triton at {f'[{host}]' if ':' in host else host}:{port}"

    def _exchange(
        self,
        headers: bytes,
        message: bytes,
        body: bytearray | None,
        sink: DataSink | None = None,
        retry: bool = True,
    ) -> _Call:
        """Send the call and read until it ends; a call the server did not take is sent once more."""
        opening = b""
        if self._socket is None or self._next_stream > _LAST_STREAM:
            self.close()
            self._reset_state()
            sock = socket.create_connection(self._address, timeout=self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket = sock
            opening = _OPENING
        call = _Call(self._next_stream, self._initial_window, body, sink)
        self._next_stream += 2
        head = opening + _FRAME.pack(len(headers) << 8 | _HEADERS, _END_HEADERS, call.stream) + headers
        size = len(message)
        if size <= self._max_frame and size <= self._send_window and size <= call.window:
            self._send_window -= size
            call.window -= size
            self._socket.sendall(head + _FRAME.pack(size << 8 | _DATA, _END_STREAM, call.stream) + message)
        else:
            self._socket.sendall(head)
            self._send_in_frames(call, memoryview(message))
        while not call.ended:
            self._handle(call)
        if call.refused or call.reset == _REFUSED_STREAM:  # the server did not process it: safe to resend
            self.close()
            if retry and not opening:  # on a new connection, as gRPC's own clients do
                if body is not None:
                    del body[:]
                return self._exchange(headers, message, body, sink, retry=False)
            if call.refused:
                raise GrpcError(_UNAVAILABLE, f"{self._where()} is going away and did not take the call")
        return call

    def _send_in_frames(self, call: _Call, message: memoryview) -> None:
        """Send ``message`` in frames the server allows, reading its frames while its windows are shut."""
        assert self._socket is not None
        sent = 0
        while sent < len(message):
            size = min(len(message) - sent, self._max_frame, self._send_window, call.window)
            if size <= 0:
                self._handle(call)
                if call.ended:  # the server answered before the whole request arrived: drop the rest
                    if call.reset is None:
                        self._socket.sendall(_frame(_RST_STREAM, 0, call.stream, struct.pack(">I", _CANCEL)))
                    return
                continue
            flags = _END_STREAM if sent + size == len(message) else 0
            self._socket.sendall(
                _FRAME.pack(size << 8 | _DATA, flags, call.stream) + message[sent : sent + size]
            )
            sent += size
            self._send_window -= size
            call.window -= size

    def _fill(self, need: int) -> None:
        """Read until the buffer holds ``need`` bytes from the read position."""
        assert self._socket is not None
        while self._end - self._start < need:
            if self._start == self._end:
                self._start = self._end = 0
            elif len(self._buffer) - self._start < need:
                kept = self._end - self._start
                self._buffer[:kept] = self._buffer[self._start : self._end]
                self._start, self._end = 0, kept
            received = self._socket.recv_into(self._view[self._end :])
            if not received:
                raise ConnectionError("the server closed the connection")
            self._end += received

    def _read_frame(self) -> tuple[int, int, int, bytes]:
        """The next frame: (type, flags, stream id, payload)."""
        self._fill(9)
        word, flags, stream = _FRAME.unpack_from(self._buffer, self._start)
        length = word >> 8
        if length > _DEFAULT_FRAME:
            raise _ProtocolError(f"a frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE")
        self._fill(9 + length)
        begin = self._start + 9
        self._start = begin + length
        return word & 0xFF, flags, stream & _LAST_STREAM, bytes(self._buffer[begin : self._start])

    def _handle(self, call: _Call) -> None:
        """Read one frame and act on it: this call's, another (ended) stream's, or the connection's."""
        kind, flags, stream, payload = self._read_frame()
        if kind == _DATA:
            self._consumed(len(payload))
            if stream == call.stream:
                padding = payload[0] + 1 if flags & _PADDED and payload else 0
                call.length += len(payload) - padding
                data = payload[1 : len(payload) - padding + 1] if padding else payload
                if call.body is not None:
                    call.body += data
                if call.sink is not None:
                    call.sink(data)
                call.ended = bool(flags & _END_STREAM)
        elif kind == _HEADERS:
            fields = self._decoder.decode(self._header_block(flags, payload))
            if stream == call.stream:
                if call.headers is None:
                    call.headers = fields
                else:
                    call.trailers = fields
                call.ended = bool(flags & _END_STREAM)
        elif kind == _RST_STREAM:
            if stream == call.stream and len(payload) == 4:
                call.reset = struct.unpack(">I", payload)[0]
                call.ended = True
        elif kind in (_SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE):
            self._connection_frame(kind, flags, stream, payload, call)
        elif kind in (_PUSH_PROMISE, _CONTINUATION):
            raise _ProtocolError(f"unexpected frame of type {kind}")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 requires

    def _connection_frame(self, kind: int, flags: int, stream: int, payload: bytes, call: _Call) -> None:
        assert self._socket is not None
        if kind == _SETTINGS:
            if not flags & _ACK:
                self._apply_settings(payload, call)
                self._socket.sendall(_frame(_SETTINGS, _ACK, 0))
        elif kind == _PING:
            if not flags & _ACK:
                self._socket.sendall(_frame(_PING, _ACK, 0, payload))
        elif kind == _WINDOW_UPDATE:
            increment = struct.unpack(">I", payload[:4])[0] & _LAST_STREAM
            if stream == 0:
                self._send_window += increment
            elif stream == call.stream:
                call.window += increment
        else:  # GOAWAY
            self._going_away = True
            last = struct.unpack(">I", payload[:4])[0] & _LAST_STREAM
            if call.stream > last:
                call.refused = call.ended = True

    def _apply_settings(self, payload: bytes, call: _Call) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                call.window += value - self._initial_window
                self._initial_window = value
            elif key == _SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value

    def _header_block(self, flags: int, payload: bytes) -> bytes:
        """A HEADERS frame's block without padding and priority, joined with its CONTINUATION frames."""
        start, end = 0, len(payload)
        if flags & _PADDED:
            start, end = 1, end - payload[0]
        if flags & _PRIORITY:
            start += 5
        if start > end:
            raise _ProtocolError("a HEADERS frame is shorter than its padding")
        block = payload[start:end]
        while not flags & _END_HEADERS:
            kind, flags, _, more = self._read_frame()
            if kind != _CONTINUATION:
                raise _ProtocolError("a header block is interrupted by another frame")
            block += more
        return block

    def _consumed(self, size: int) -> None:
        """Count received DATA; give the connection window back to the server when half of it is used."""
        self._unacknowledged += size
        if self._unacknowledged >= _REFILL:
            assert self._socket is not None
            self._socket.sendall(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacknowledged)))
            self._unacknowledged = 0


def _field_value(fields: list[tuple[bytes, bytes]] | None, name: bytes) -> bytes | None:
    for key, value in fields or ():
        if key == name:
            return value
    return None


def _outcome(call: _Call) -> int:
    """The reply's message length, or the call's failure as a :class:`GrpcError`."""
    if call.reset is not None:
        code = _RESET_STATUS.get(call.reset, _INTERNAL)
        raise GrpcError(code, f"the server reset the call (HTTP/2 error code {call.reset})")
    if call.headers is None:
        raise GrpcError(_INTERNAL, "the server ended the call without response headers")
    trailers = call.trailers if call.trailers is not None else call.headers  # a "trailers-only" reply
    http_status = _field_value(call.headers, b":status")
    if http_status != b"200":
        text = (http_status or b"none").decode("latin-1")
        code = _HTTP_STATUS.get(int(text), _UNKNOWN) if text.isdigit() else _UNKNOWN
        raise GrpcError(code, f"the server answered with HTTP status {text}")
    status = _field_value(trailers, b"grpc-status")
    if status is None or not status.isdigit():
        raise GrpcError(_INTERNAL, "the server ended the call without a grpc-status")
    if status != b"0":
        details = unquote((_field_value(trailers, b"grpc-message") or b"").decode("utf-8", "replace"))
        raise GrpcError(int(status), details)
    return max(0, call.length - 5)


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
