"""Benchmark: the harness's own HTTP/2 framing for gRPC calls (``generator.loadtest.grpcwire``) against the
same calls made through the ``h2`` library (the HTTP/2 state machine of the python-hyper project, whose
``hpack`` the harness already uses), and against tritonclient.grpc's blocking stub.

All three make the same unary ``ModelInfer`` call (a prebuilt request, one connection, one call at a time)
against the embedded Triton serving a tiny Python-backend model, in alternating rounds. Reported per way:
client CPU per call (``time.process_time``; what limits a load generator's rate per core) and calls per
second (wall; the server shares this machine's cores, so compare within the run).

The ``h2`` way is written here as the obvious use of the library: ``H2Connection`` with its default
settings, ``send_headers``/``send_data``, events read back until the stream ends, received data
acknowledged. It is the code ``grpcwire`` would become if it used the library.

Run: ``python perf/bench_grpcwire.py [--calls 3000] [--rounds 3] [--out perf/results/bench_grpcwire.json]``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.loadtest.grpcwire import UnaryConnection, grpc_message, request_headers
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CONFIG = """name: "echo"
backend: "python"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [16] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [16] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""
MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
            for r in requests
        ]
"""


def _repository(root: Path) -> Path:
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "config.pbtxt").write_text(CONFIG)
    (root / "echo" / "1" / "model.py").write_text(MODEL)
    return root


def _request() -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "X", "FP32"
    tensor.shape.extend([1, 16])
    request.raw_input_contents.append(np.arange(16, dtype=np.float32).tobytes())
    request.outputs.add().name = "Y"
    return request.SerializeToString()


class H2Unary:
    """One connection making unary gRPC calls one at a time through ``h2``."""

    def __init__(self, host: str, port: int) -> None:
        from h2.config import H2Configuration
        from h2.connection import H2Connection

        self.authority = f"{host}:{port}"
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def call(self, message: bytes) -> int:
        from h2 import events

        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", MODEL_INFER), (":authority", self.authority),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ]  # fmt: skip
        self.conn.send_headers(stream, headers)
        self.conn.send_data(stream, message, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        length, status, ended = 0, None, False
        while not ended:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            for event in self.conn.receive_data(data):
                if isinstance(event, events.DataReceived):
                    length += len(event.data)
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, events.TrailersReceived):
                    status = dict(event.headers).get(b"grpc-status")
                elif isinstance(event, (events.StreamEnded, events.StreamReset)):
                    ended = ended or event.stream_id == stream
            pending = self.conn.data_to_send()
            if pending:
                self.sock.sendall(pending)
        if status != b"0":
            raise RuntimeError(f"grpc-status {status!r}")
        return length - 5

    def close(self) -> None:
        self.sock.close()


def _measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(client CPU microseconds per call, calls per second)."""
    for _ in range(min(200, calls)):  # warm both ends
        call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / calls * 1e6, calls / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("perf/results/bench_grpcwire.json"))
    args = parser.parse_args()

    import tritonclient.grpc as grpcclient

    payload = _request()
    with tempfile.TemporaryDirectory(prefix="bench-grpcwire-") as scratch:
        ports = {
            "http_port": find_free_port(),
            "grpc_port": find_free_port(),
            "metrics_port": find_free_port(),
        }
        with EmbeddedServer(_repository(Path(scratch) / "repo"), **ports):
            host, port = "127.0.0.1", ports["grpc_port"]
            own = UnaryConnection(host, port, timeout=30)
            own_headers, own_message = request_headers(f"{host}:{port}", MODEL_INFER), grpc_message(payload)
            library = H2Unary(host, port)
            framed = grpc_message(payload)
            stub = grpcclient.InferenceServerClient(f"{host}:{port}")
            tensor = grpcclient.InferInput("X", [1, 16], "FP32")
            tensor.set_data_from_numpy(np.arange(16, dtype=np.float32)[None])
            ways: dict[str, Callable[[], object]] = {
                "grpcwire (own framing)": lambda: own.call(own_headers, own_message),
                "h2 library": lambda: library.call(framed),
                "tritonclient.grpc stub": lambda: stub.infer("echo", [tensor]),
            }
            assert own.call(own_headers, own_message) == library.call(framed) > 0  # the same reply
            results: dict[str, dict[str, list[float]]] = {w: {"cpu_us": [], "calls_per_s": []} for w in ways}
            for number in range(args.rounds):
                order = list(ways) if number % 2 == 0 else list(reversed(ways))
                for way in order:
                    cpu_us, rate = _measure(ways[way], args.calls)
                    results[way]["cpu_us"].append(cpu_us)
                    results[way]["calls_per_s"].append(rate)
            own.close()
            library.close()
            stub.close()
    base = statistics.median(results["grpcwire (own framing)"]["cpu_us"])
    print(f"{args.calls} sequential calls x {args.rounds} rounds, medians; client CPU per call and wall rate")
    print(f"{'way':<26} {'CPU us/call':>12} {'vs own':>7} {'calls/s':>9}")
    summary = {}
    for way, figures in results.items():
        cpu, rate = statistics.median(figures["cpu_us"]), statistics.median(figures["calls_per_s"])
        summary[way] = {"cpu_us_per_call": cpu, "calls_per_s": rate, "cpu_vs_own": cpu / base}
        print(f"{way:<26} {cpu:12.1f} {cpu / base:6.2f}x {rate:9.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"calls": args.calls, "rounds": args.rounds, "summary": summary,
                                    "rounds_figures": results}, indent=2) + "\n")  # fmt: skip
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
