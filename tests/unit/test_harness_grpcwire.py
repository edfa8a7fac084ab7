"""The harness's gRPC client on a plain socket: HPACK against RFC 7541's examples, and calls against a real
grpcio server in this process (replies, text tensors, the server's errors, deadlines, flow control, lost
connections)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from hpack import Decoder
from tritonclient.utils import InferenceServerException

from generator.loadtest.clients import MODEL_INFER, GrpcChannel, GrpcConnection, GrpcRequests
from generator.loadtest.grpcwire import GrpcError, UnaryConnection, grpc_message, request_headers
from generator.loadtest.payloads import make_batches, model_info
from generator.serve.control import Target


def test_request_headers_decode_to_a_grpc_call() -> None:
    block = request_headers("127.0.0.1:8001", MODEL_INFER, timeout=2.5)
    fields = [(n.decode(), v.decode()) for n, v in Decoder().decode(block, raw=True)]
    assert fields == [
        (":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), (":authority", "127.0.0.1:8001"),
        ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "2500m"),
    ]  # fmt: skip
    assert grpc_message(b"abc") == b"\x00\x00\x00\x00\x03abc"


# --- calls against a grpcio server --------------------------------------------------------------------

Handler = Callable[[bytes, grpc.ServicerContext], bytes]


class ReferencePeer:
    """grpcio's own server (the reference gRPC implementation) with a raw-bytes ``ModelInfer`` method.

    The wire client must meet HTTP/2 and gRPC situations that Triton cannot be made to produce on demand
    (connections retired with GOAWAY, a reply later than the deadline, flow control on megabyte messages);
    grpcio produces them as any gRPC server would. The harness against the real Triton over gRPC is tested
    in ``tests/integration/test_harness.py``.
    """

    def __init__(self, options: list[tuple[str, Any]] | None = None) -> None:
        self.handler: Handler = lambda request, context: b"reply:" + request[:10]
        self.requests: list[bytes] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        method = grpc.unary_unary_rpc_method_handler(self._infer)  # no (de)serializers: raw bytes
        handler = grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": method}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _infer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.requests.append(request)
        return self.handler(request, context)

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


@pytest.fixture
def triton() -> Iterator[ReferencePeer]:
    server = ReferencePeer()
    try:
        yield server
    finally:
        server.stop()


def _call(connection: UnaryConnection, payload: bytes, port: int, timeout: float | None = 5.0) -> int:
    return connection.call(request_headers(f"127.0.0.1:{port}", MODEL_INFER, timeout), grpc_message(payload))


def test_calls_reuse_one_connection_and_return_the_reply_length(triton: ReferencePeer) -> None:
    connection = UnaryConnection("127.0.0.1", triton.port, timeout=5.0)
    try:
        for number in range(50):
            payload = f"request {number}".encode()
            assert _call(connection, payload, triton.port) == len(b"reply:" + payload[:10])
        assert triton.requests == [f"request {number}".encode() for number in range(50)]
        first_socket = connection._socket
        _call(connection, b"again", triton.port)
        assert connection._socket is first_socket
    finally:
        connection.close()


def test_a_server_that_retires_connections_does_not_fail_calls() -> None:
    triton = ReferencePeer(
        options=[("grpc.max_connection_age_ms", 150), ("grpc.max_connection_age_grace_ms", 1000)]
    )
    connection = UnaryConnection("127.0.0.1", triton.port, timeout=5.0)
    connections = 0
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # GOAWAYs arrive between calls and during them
            assert _call(connection, b"x", triton.port) > 0
            connections += connection._next_stream == 3  # the call was the first on its connection
            time.sleep(0.01)
        assert connections > 2
    finally:
        connection.close()
        triton.stop()


def test_large_requests_and_replies_pass_the_flow_control_windows(triton: ReferencePeer) -> None:
    triton.handler = lambda request, context: bytes(len(request) * 2)
    connection = UnaryConnection("127.0.0.1", triton.port, timeout=10.0)
    try:
        for size in (70_000, 1_500_000, 10):
            payload = np.random.default_rng(size).bytes(size)
            assert _call(connection, payload, triton.port) == 2 * size
            assert triton.requests[-1] == payload
    finally:
        connection.close()


def test_the_servers_error_arrives_with_its_status_and_details(triton: ReferencePeer) -> None:
    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'nope' is not found (100% sure)")

    triton.handler = refuse
    connection = UnaryConnection("127.0.0.1", triton.port, timeout=5.0)
    try:
        with pytest.raises(GrpcError) as caught:
            _call(connection, b"x", triton.port)
        assert caught.value.status == "StatusCode.NOT_FOUND"
        assert caught.value.details == "Request for unknown model: 'nope' is not found (100% sure)"
        triton.handler = lambda request, context: b"fine"
        assert _call(connection, b"x", triton.port) == 4  # the same connection goes on
    finally:
        connection.close()


def test_a_reply_later_than_the_timeout_is_a_deadline_exceeded(triton: ReferencePeer) -> None:
    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(1.5)
        return b"late"

    triton.handler = slow
    connection = UnaryConnection("127.0.0.1", triton.port, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(GrpcError) as caught:
            _call(connection, b"x", triton.port, timeout=0.3)
        assert caught.value.status == "StatusCode.DEADLINE_EXCEEDED" and time.monotonic() - started < 1.2
        triton.handler = lambda request, context: b"fine"
        assert _call(connection, b"x", triton.port, timeout=0.3) == 4  # on a new connection
    finally:
        connection.close()


def test_no_server_and_a_server_that_goes_are_unavailable() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = UnaryConnection("127.0.0.1", port, timeout=2.0)
    with pytest.raises(GrpcError) as caught:
        _call(connection, b"x", port)
    assert caught.value.status == "StatusCode.UNAVAILABLE" and "connect" in caught.value.details

    triton = ReferencePeer()
    connection = UnaryConnection("127.0.0.1", triton.port, timeout=2.0)
    try:
        assert _call(connection, b"x", triton.port) > 0
        stopper = threading.Thread(target=triton.stop)
        stopper.start()
        stopper.join(5)
        for _ in range(2):  # the connection the server closed, then no server to connect to
            with pytest.raises(GrpcError) as caught:
                _call(connection, b"x", triton.port)
            assert caught.value.status == "StatusCode.UNAVAILABLE", caught.value.details
    finally:
        connection.close()
        triton.stop()


METADATA = {
    "name": "cnn",
    "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
}
CONFIG: dict[str, Any] = {"name": "cnn", "max_batch_size": 8, "input": [{"name": "image", "dims": [1, 8, 8]}]}


def test_the_harness_connection_sends_prebuilt_requests_and_raises_tritonclient_errors(
    triton: ReferencePeer,
) -> None:
    from tritonclient.grpc import service_pb2

    info = model_info(METADATA, CONFIG)
    requests = GrpcRequests(info, make_batches(info, 2, seed=0))
    connection = GrpcConnection(GrpcChannel(Target("grpc", "127.0.0.1", triton.port)), timeout=5.0)
    try:
        reply = service_pb2.ModelInferResponse(model_name="cnn", raw_output_contents=[bytes(80)])
        triton.handler = lambda request, context: reply.SerializeToString()
        assert connection.infer(requests, 0) == reply.ByteSize()
        sent = service_pb2.ModelInferRequest.FromString(triton.requests[-1])
        assert sent.model_name == "cnn" and [o.name for o in sent.outputs] == ["logits"]
        assert list(sent.inputs[0].shape) == [2, 1, 8, 8] and len(sent.raw_input_contents[0]) == 2 * 64 * 4

        def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(grpc.StatusCode.INTERNAL, "onnx runtime error 6: out of memory")

        triton.handler = fail
        with pytest.raises(InferenceServerException) as caught:
            connection.infer(requests, 0)
        assert caught.value.status() == "StatusCode.INTERNAL"
        assert caught.value.message() == "onnx runtime error 6: out of memory"
    finally:
        connection.close()


TEXT_METADATA = {
    "name": "text",
    "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [
        {"name": "UPPER", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "LEN", "datatype": "INT64", "shape": [-1, 1]},
    ],
}


def test_text_tensors_travel_length_prefixed_both_ways(triton: ReferencePeer) -> None:
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

    info = model_info(TEXT_METADATA, {"name": "text", "max_batch_size": 8})
    long = b"word " * 8_000  # 40 kB: the request and the reply span several HTTP/2 frames
    texts = np.array([[b"hello"], ["ünï".encode()], [b""], [long]], dtype=np.object_)
    requests = GrpcRequests(info, [{"TEXT": texts}])

    def upper_and_length(request: bytes, context: grpc.ServicerContext) -> bytes:
        sent = service_pb2.ModelInferRequest.FromString(request)
        values = deserialize_bytes_tensor(sent.raw_input_contents[0]).reshape(list(sent.inputs[0].shape))
        reply = service_pb2.ModelInferResponse(model_name="text")
        upper = np.array([[v.upper()] for v in values.reshape(-1)], dtype=np.object_)
        lengths = np.array([[len(v)] for v in values.reshape(-1)], dtype=np.int64)
        for name, datatype, array in (("UPPER", "BYTES", upper), ("LEN", "INT64", lengths)):
            reply.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
            raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
            reply.raw_output_contents.append(raw)
        return reply.SerializeToString()

    triton.handler = upper_and_length
    connection = GrpcConnection(GrpcChannel(Target("grpc", "127.0.0.1", triton.port)), timeout=5.0)
    try:
        outputs = connection.reply(requests, 0)
    finally:
        connection.close()
    sent = service_pb2.ModelInferRequest.FromString(triton.requests[-1])
    assert sent.inputs[0].datatype == "BYTES" and list(sent.inputs[0].shape) == [4, 1]
    raw = sent.raw_input_contents[0]
    # each element: its length as 4 bytes, little-endian, then its bytes
    assert raw[:9] == b"\x05\x00\x00\x00hello" and raw[9:13] == len("ünï".encode()).to_bytes(4, "little")
    assert len(raw) == 4 * 4 + 5 + len("ünï".encode()) + len(long)
    assert outputs["UPPER"].datatype == "BYTES" and outputs["LEN"].datatype == "INT64"
    assert outputs["UPPER"].array.tolist() == [[b"HELLO"], ["ünï".encode().upper()], [b""], [long.upper()]]
    assert outputs["LEN"].array.tolist() == [[5], [len("ünï".encode())], [0], [len(long)]]
