"""Prebuilt inference requests and the per-user connections that send them, over HTTP and gRPC.

Everything a request needs is built once per process (:class:`HttpRequests`, :class:`GrpcRequests`) with
tritonclient, so sending one costs only the write and the read; the client must not be what limits a load
test. Client CPU per request, measured on a 2-core machine at concurrency 8 against the embedded Triton
(8 greenlets in a closed loop, a connection each, no Locust): tritonclient.http's ``infer`` about 140 us,
the same body over geventhttpclient about 95 us, over a keep-alive socket 55-60 us; tritonclient.grpc's stub
on gevent 270-320 us, a prebuilt message on a plain HTTP/2 socket 50-70 us. The whole harness process,
Locust included (the column of ``perf/bench_harness.py``): 80-110 us over HTTP, 105-115 us over gRPC (420 us
through the stub on gevent, which held the harness to 0.5-0.6x perf_analyzer's throughput; now 1.0x).

* HTTP: each request body is made once with tritonclient's ``InferenceServerClient.generate_request_body``
  (KServe binary tensor data, binary outputs), wrapped once in its HTTP/1.1 request line and headers, and
  written as is to a keep-alive socket (:class:`HttpConnection`). The reply's status and length are read;
  its tensors are not decoded (a load test does not need them) except by :meth:`HttpConnection.reply`,
  the check before the load (:func:`http_outputs`: binary or JSON tensor data, text too).
* gRPC: each ``ModelInferRequest`` (tritonclient.grpc's protobuf messages, tensors serialized with
  tritonclient's utilities) is built and serialized once, framed as a gRPC message, and written with a
  header block built once to the user's own HTTP/2 connection (:class:`GrpcConnection`, on
  :class:`~generator.loadtest.grpcwire.UnaryConnection`). The reply's ``grpc-status``, ``grpc-message`` and
  length are read; its tensors are not decoded but by :meth:`GrpcConnection.reply`, the check before the
  load (:func:`grpc_outputs`). Text (``BYTES``) tensors are 4-byte little-endian lengths and bytes, in
  ``raw_input_contents`` as in HTTP's binary data. grpcio is not on this path: gRPC's Python stack on
  gevent hands every completion to a native thread, which cost most of the client's CPU; only the control
  plane (:mod:`~generator.serve.control`) still uses it.

A request that fails raises ``tritonclient.utils.InferenceServerException``: over HTTP the server's error
(or ``OSError`` when the connection failed), over gRPC the call's status and details, as tritonclient.grpc
reports them (``StatusCode.NOT_FOUND``; ``StatusCode.UNAVAILABLE`` when the server cannot be reached or
the connection broke, ``StatusCode.DEADLINE_EXCEEDED`` past the request timeout).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from generator.loadtest.grpcwire import GrpcError, UnaryConnection, grpc_message, request_headers
from generator.loadtest.parameters import ENABLE_EMPTY_FINAL, ParamValue, grpc_parameters, http_members
from generator.loadtest.payloads import Batch, ModelInfo
from generator.loadtest.streaming import StreamReader
from generator.serve.control import Target

__all__ = [
    "GrpcChannel",
    "GrpcConnection",
    "GrpcRequests",
    "HttpConnection",
    "HttpRequests",
    "ReplyTensor",
    "grpc_outputs",
    "http_outputs",
    "response_outputs",
]

_BUFFER_BYTES = 64 * 1024
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
"""The gRPC method of an inference request (KServe's ``GRPCInferenceService``, as Triton serves it)."""

MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
"""The gRPC method of streamed inference (Triton's bidirectional stream; a decoupled model's only way)."""


class HttpRequests:
    """The prebuilt HTTP requests of one model: complete HTTP/1.1 messages, ready to write.

    Args:
        target: The HTTP endpoint (its address goes in the Host header, its base path in the URL).
        info: The model.
        batches: The distinct requests to cycle through.
        parameters: Request parameters every request carries (``--param``).
    """

    def __init__(
        self,
        target: Target,
        info: ModelInfo,
        batches: list[Batch],
        parameters: Mapping[str, ParamValue] | None = None,
    ) -> None:
        import tritonclient.http as httpclient

        self.model = info.name
        path = f"{target.base_path}/v2/models/{quote(info.name, safe='')}/infer"
        self._request_line = f"POST {path} HTTP/1.1\r\nHost: {target.address}\r\n".encode("ascii")
        outputs = [httpclient.InferRequestedOutput(o.name, binary_data=True) for o in info.outputs]
        self.messages: list[bytes] = []
        self._parts: list[
            tuple[bytes, bytes]
        ] = []  # per request: its JSON header open at parameters, its binary data
        for batch in batches:
            inputs = []
            for name, array in batch.items():
                tensor = httpclient.InferInput(name, list(array.shape), _datatype(info, name))
                tensor.set_data_from_numpy(array, binary_data=True)
                inputs.append(tensor)
            body, json_size = httpclient.InferenceServerClient.generate_request_body(
                inputs, outputs=outputs, parameters=dict(parameters or {}) or None
            )
            payload = body if isinstance(body, bytes) else body.encode()
            size = len(payload) if json_size is None else json_size
            self.messages.append(self._message(payload[:size], payload[size:], json_size is not None))
            self._parts.append(_open_header(payload[:size], payload[size:]))

    def __len__(self) -> int:
        return len(self.messages)

    def _message(self, header: bytes, binary: bytes, split: bool = True) -> bytes:
        head = self._request_line + b"Content-Length: %d\r\n" % (len(header) + len(binary))
        if split:
            head += b"Inference-Header-Content-Length: %d\r\n" % len(header)
        return head + b"\r\n" + header + binary

    @staticmethod
    def encode(values: Mapping[str, ParamValue]) -> bytes:
        """Parameters as this protocol carries them, for :meth:`message`."""
        return http_members(values).encode("utf-8")

    def message(self, index: int, extra: bytes | None = None) -> bytes:
        """Request ``index``, with the parameters ``extra`` (from :meth:`encode`) added to its own."""
        if extra is None:
            return self.messages[index]
        opened, binary = self._parts[index]
        return self._message(opened + extra + b"}}", binary)


def _open_header(header: bytes, binary: bytes) -> tuple[bytes, bytes]:
    """A request's JSON header cut open inside its ``parameters``, ready for more members and ``}}``."""
    document = json.loads(header)
    parameters = document.pop("parameters", {})
    opened = json.dumps(document, separators=(",", ":"))[:-1] + ',"parameters":{'
    if parameters:
        opened += http_members(parameters) + ","
    return opened.encode("utf-8"), binary


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed before this request; resend on a new one."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to the server (one per Locust user), reconnecting when needed.

    Args:
        target: The HTTP endpoint.
        timeout: Seconds to connect, and to wait for each piece of a reply.
    """

    def __init__(self, target: Target, timeout: float) -> None:
        self._address = (target.host, target.port)
        self._timeout = timeout
        self._socket: socket.socket | None = None
        self._buffer = bytearray(_BUFFER_BYTES)
        self._have = 0
        self._json_size: int | None = None

    def infer(self, requests: HttpRequests, index: int, extra: bytes | None = None) -> int:
        """Send request ``index`` of ``requests``; return the length of the reply's body in bytes.

        Args:
            requests: The model's prebuilt requests.
            index: Which one.
            extra: Parameters to add (:meth:`HttpRequests.encode`), or None.

        Raises:
            InferenceServerException: The server answered with an error status.
            OSError: The connection could not be made or broke.
        """
        message = requests.message(index, extra)
        start, end = self._request(message)
        return end - start

    def reply(self, requests: HttpRequests, index: int, extra: bytes | None = None) -> dict[str, ReplyTensor]:
        """Send request ``index`` of ``requests`` and decode the reply's outputs (a check, not the load path).

        Raises:
            InferenceServerException: The server answered with an error status.
            OSError: The connection could not be made or broke.
        """
        message = requests.message(index, extra)
        start, end = self._request(message)
        return http_outputs(bytes(self._buffer[start:end]), self._json_size)

    def _request(self, message: bytes) -> tuple[int, int]:
        """Send ``message`` and read the reply; return where its body lies in the buffer."""
        reused = self._socket is not None
        try:
            try:
                status, start, end, keep = self._exchange(message, reused)
            except _StaleConnection:
                self._disconnect()
                status, start, end, keep = self._exchange(message, False)
        except BaseException:
            self._disconnect()
            raise
        if not keep:
            self._disconnect()
        if status != 200:
            raise _http_error(status, bytes(self._buffer[start:end]))
        return start, end

    def close(self) -> None:
        """Close the connection."""
        self._disconnect()

    def _disconnect(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _exchange(self, message: bytes, reused: bool) -> tuple[int, int, int, bool]:
        """Write ``message`` and read one reply: (status, body start, body end in the buffer, keep-alive)."""
        if self._socket is None:
            sock = socket.create_connection(self._address, timeout=self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket = sock
        self._have = 0
        try:
            self._socket.sendall(message)
            head_end = self._read_until(b"\r\n\r\n", 0)
        except (ConnectionResetError, BrokenPipeError, _StaleConnection):
            if reused and self._have == 0:
                raise _StaleConnection from None
            raise
        lines = bytes(self._buffer[:head_end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip().lower()
        start = head_end + 4
        keep = headers.get("connection") != "close"
        json_size = headers.get("inference-header-content-length")
        self._json_size = int(json_size) if json_size is not None else None
        if "content-length" in headers:
            end = start + int(headers["content-length"])
            self._read_to(end)
        elif headers.get("transfer-encoding") == "chunked":
            end = self._read_chunked(start)
        else:
            end, keep = self._read_to_close(), False
        return status, start, end, keep

    def _receive(self) -> None:
        """Read more bytes into the buffer, growing it when full."""
        assert self._socket is not None
        if self._have == len(self._buffer):
            self._buffer.extend(bytes(len(self._buffer)))
        received = self._socket.recv_into(memoryview(self._buffer)[self._have :])
        if received == 0:
            if self._have == 0:
                raise _StaleConnection
            raise ConnectionError("Triton closed the connection in the middle of a reply")
        self._have += received

    def _read_until(self, marker: bytes, start: int) -> int:
        while True:
            found = self._buffer.find(marker, start, self._have)
            if found >= 0:
                return found
            start = max(start, self._have - len(marker) + 1)
            self._receive()

    def _read_to(self, end: int) -> None:
        if end > len(self._buffer):
            self._buffer.extend(bytes(end - len(self._buffer)))
        while self._have < end:
            self._receive()

    def _read_chunked(self, start: int) -> int:
        """Decode a chunked body in place; return where the joined body ends."""
        body_end = start
        position = start
        while True:
            line_end = self._read_until(b"\r\n", position)
            size = int(bytes(self._buffer[position:line_end]).split(b";")[0], 16)
            chunk = line_end + 2
            self._read_to(chunk + size + 2)
            if size == 0:
                self._read_until(b"\r\n", chunk)  # no trailers are expected; skip to the end
                return body_end
            self._buffer[body_end : body_end + size] = self._buffer[chunk : chunk + size]
            body_end += size
            position = chunk + size + 2

    def _read_to_close(self) -> int:
        try:
            while True:
                self._receive()
        except (_StaleConnection, ConnectionError):
            return self._have


def _http_error(status: int, content: bytes) -> Exception:
    from tritonclient.utils import InferenceServerException

    try:
        message = json.loads(content).get("error", "")
    except (ValueError, AttributeError):
        message = content[:200].decode("utf-8", errors="replace")
    return InferenceServerException(msg=message or f"HTTP {status}", status=str(status))


class GrpcRequests:
    """The prebuilt gRPC requests of one model: each ``ModelInferRequest`` serialized and framed once.

    Args:
        info: The model.
        batches: The distinct requests to cycle through.
        parameters: Request parameters every request carries (``--param``).
        streaming: The requests go on gRPC streams (``ModelStreamInfer``, for a decoupled model): each asks
            for the empty final response, so the end of its responses is always marked.
    """

    def __init__(
        self,
        info: ModelInfo,
        batches: list[Batch],
        parameters: Mapping[str, ParamValue] | None = None,
        streaming: bool = False,
    ) -> None:
        from tritonclient.grpc import service_pb2

        self.model = info.name
        self.streaming = streaming
        self.messages: list[bytes] = []
        self._payloads: list[bytes] = []
        given = {**(parameters or {}), **({ENABLE_EMPTY_FINAL: True} if streaming else {})}
        for batch in batches:
            request = service_pb2.ModelInferRequest(model_name=info.name)
            for name, array in batch.items():
                datatype = _datatype(info, name)
                tensor = request.inputs.add()
                tensor.name = name
                tensor.datatype = datatype
                tensor.shape.extend(int(d) for d in array.shape)
                request.raw_input_contents.append(_raw_bytes(array, datatype))
            for output in info.outputs:
                request.outputs.add().name = output.name
            payload = request.SerializeToString() + (grpc_parameters(given) if given else b"")
            self._payloads.append(payload)
            self.messages.append(grpc_message(payload))

    def __len__(self) -> int:
        return len(self.messages)

    @staticmethod
    def encode(values: Mapping[str, ParamValue]) -> bytes:
        """Parameters as this protocol carries them, for :meth:`message`."""
        return grpc_parameters(values)

    def message(self, index: int, extra: bytes | None = None) -> bytes:
        """Request ``index``, with the parameters ``extra`` (from :meth:`encode`) added to its own."""
        if extra is None:
            return self.messages[index]
        return grpc_message(self._payloads[index] + extra)


def _raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's bytes as Triton's raw input contents expect them (BYTES via tritonclient's serializer)."""
    if datatype == "BYTES":
        from tritonclient.utils import serialize_byte_tensor

        serialized = serialize_byte_tensor(array)
        return serialized.item() if serialized.size > 0 else b""
    return np.ascontiguousarray(array).tobytes()


class GrpcChannel:
    """The gRPC endpoint the users of one process call; each user opens its own connection to it.

    A connection per user, like HTTP's keep-alive connections: each user's greenlet reads its own replies,
    so no dispatcher stands between a reply and the user waiting for it.

    Args:
        target: The gRPC endpoint.
    """

    def __init__(self, target: Target) -> None:
        self.target = target


class GrpcConnection:
    """One user's HTTP/2 connection to the gRPC endpoint (:class:`~generator.loadtest.grpcwire.UnaryConnection`).

    Args:
        channel: The endpoint.
        timeout: Seconds to wait for each reply (also sent as the call's deadline, ``grpc-timeout``).
    """

    def __init__(self, channel: GrpcChannel, timeout: float) -> None:
        target = channel.target
        self._headers = request_headers(target.address, MODEL_INFER, timeout)
        self._stream_headers = request_headers(target.address, MODEL_STREAM_INFER, timeout)
        self._connection = UnaryConnection(target.host, target.port, timeout)

    def infer(self, requests: GrpcRequests, index: int, extra: bytes | None = None) -> int:
        """Send request ``index`` of ``requests``; return the length of the reply's message in bytes.

        Args:
            requests: The model's prebuilt requests (streaming ones go through :meth:`stream`).
            index: Which one.
            extra: Parameters to add (:meth:`GrpcRequests.encode`), or None.

        Raises:
            InferenceServerException: The call failed (server error, unreachable, deadline exceeded), with
                the gRPC status (``StatusCode.NOT_FOUND``, ...) and its details.
        """
        message = requests.message(index, extra)
        try:
            return self._connection.call(self._headers, message)
        except GrpcError as error:
            raise _grpc_error(error) from None

    def stream(
        self, requests: GrpcRequests, index: int, extra: bytes | None = None, keep: bool = False
    ) -> StreamReader:
        """Send request ``index`` on a gRPC stream of its own and read its responses until the final one.

        Args:
            requests: The model's prebuilt streaming requests.
            index: Which one.
            extra: Parameters to add (:meth:`GrpcRequests.encode`), or None.
            keep: Keep the responses (a check, not the load path).

        Returns:
            What arrived and when: the response count, the first and last output's times, the bytes.

        Raises:
            InferenceServerException: The call failed, or a response carried an error.
        """
        message = requests.message(index, extra)
        reader = StreamReader(keep)
        try:
            reader.bytes = self._connection.call(self._stream_headers, message, sink=reader)
        except GrpcError as error:
            raise _grpc_error(error) from None
        if reader.error is not None:
            from tritonclient.utils import InferenceServerException

            raise InferenceServerException(msg=reader.error)
        return reader

    def reply(self, requests: GrpcRequests, index: int, extra: bytes | None = None) -> dict[str, ReplyTensor]:
        """Send request ``index`` of ``requests`` and decode the reply's outputs (a check, not the load path).

        For streaming requests: the outputs of the first response that has any.

        Raises:
            InferenceServerException: The call failed, as :meth:`infer` raises it.
        """
        if requests.streaming:
            responses = self.stream(requests, index, extra, keep=True).responses
            return response_outputs(responses[0]) if responses else {}
        body = bytearray()
        message = requests.message(index, extra)
        try:
            self._connection.call(self._headers, message, body)
        except GrpcError as error:
            raise _grpc_error(error) from None
        return grpc_outputs(bytes(body))

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._connection.close()


def _grpc_error(error: GrpcError) -> Exception:
    from tritonclient.utils import InferenceServerException

    return InferenceServerException(msg=error.details or error.status, status=error.status)


def _datatype(info: ModelInfo, name: str) -> str:
    return next(spec.datatype for spec in info.inputs if spec.name == name)


@dataclass(frozen=True)
class ReplyTensor:
    """One output of a decoded reply.

    Attributes:
        datatype: Its KServe datatype, as the reply names it.
        array: Its values; text (``BYTES``) as an object array of ``bytes``.
    """

    datatype: str
    array: np.ndarray


def http_outputs(body: bytes, json_size: int | None) -> dict[str, ReplyTensor]:
    """The outputs of an HTTP inference reply: output name -> tensor.

    Args:
        body: The reply's body: the JSON header, then the binary tensor data of outputs sent as binary
            (a ``BYTES`` element is a 4-byte little-endian length and its bytes); outputs sent as JSON
            carry their values in the header.
        json_size: The ``Inference-Header-Content-Length`` header (None: the body is all JSON).
    """
    from tritonclient.http import InferResult

    result = InferResult.from_response_body(body, header_length=json_size)
    outputs = {}
    for output in result.get_response().get("outputs", []):
        array = result.as_numpy(output["name"])
        if output["datatype"] == "BYTES" and array is not None:
            array = _as_bytes(array)
        outputs[output["name"]] = ReplyTensor(output["datatype"], array)
    return outputs


def grpc_outputs(message: bytes) -> dict[str, ReplyTensor]:
    """The outputs of a gRPC ``ModelInfer`` reply (a gRPC message: flag, length, ``ModelInferResponse``).

    ``raw_output_contents`` are decoded as tritonclient does: ``BYTES`` with
    ``tritonclient.utils.deserialize_bytes_tensor`` (length-prefixed elements), others as raw arrays.
    """
    from tritonclient.grpc import service_pb2

    if len(message) < 5 or message[0] != 0:
        raise ValueError("the reply is not one uncompressed gRPC message")
    return response_outputs(service_pb2.ModelInferResponse.FromString(message[5:]))


def response_outputs(response: Any) -> dict[str, ReplyTensor]:
    """The outputs of a ``ModelInferResponse`` message (also each response of a stream)."""
    from tritonclient.grpc import InferResult

    result = InferResult(response)
    return {
        output.name: ReplyTensor(output.datatype, result.as_numpy(output.name)) for output in response.outputs
    }


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """Text values as an object array of ``bytes`` (JSON replies carry them as ``str``)."""
    flat = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1).tolist()]
    result = np.empty(len(flat), dtype=np.object_)
    result[:] = flat
    return result.reshape(array.shape)
