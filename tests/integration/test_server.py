"""Integration tests of the embedded Triton server and its Python-based ONNX Runtime backend.

They start the real ``tritonserver`` from the ``nvidia-pytriton`` wheel on free loopback ports and talk to it
with ``tritonclient`` over HTTP and gRPC.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper

from generator.core.errors import ServerError
from generator.serve.launch import find_free_port, locate_triton
from generator.serve.server import EmbeddedServer, Endpoints

from ..conftest import settle

pytestmark = pytest.mark.integration

WEIGHTS = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0) / 7.0
BIAS = np.array([0.5, -1.0, 2.0], dtype=np.float32)
TRITON_PROCESSES = ("tritonserver", "triton_python_backend_stub")


def expected(x: np.ndarray) -> np.ndarray:
    return x @ WEIGHTS + BIAS


def write_model(repository: Path, name: str, config: str) -> None:
    """Write ``name``: y = x @ WEIGHTS + BIAS, x FP32 [-1, 4] -> y FP32 [-1, 3] (dynamic batch axis)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version = repository / name / "1"
    version.mkdir(parents=True)
    onnx.save(model, version / "model.onnx")
    (repository / name / "config.pbtxt").write_text(config)


def linear_config(name: str, input_name: str = "x") -> str:
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ {{ name: "{input_name}" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
instance_group [ {{ count: 2 kind: KIND_CPU }} ]
"""


RESHAPE_CONFIG = """name: "lin_reshape"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3, 1 ] reshape: { shape: [ 3 ] } } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""

NO_BATCHING_CONFIG = """name: "lin_nobatch"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


SESSION_CONFIG = """name: "lin_session"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters { key: "session.intra_op.allow_spinning" value: { string_value: "0" } }
"""


def free_ports() -> dict[str, int]:
    return {"http_port": find_free_port(), "grpc_port": find_free_port(), "metrics_port": find_free_port()}


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live Triton server or stub processes whose command line mentions ``text``."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        info = process.info
        alive = info["name"] in TRITON_PROCESSES and info["status"] != psutil.STATUS_ZOMBIE
        if alive and any(text in part for part in info["cmdline"] or ()):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    write_model(root, "lin", linear_config("lin"))
    write_model(root, "lin_reshape", RESHAPE_CONFIG)
    write_model(root, "lin_nobatch", NO_BATCHING_CONFIG)
    write_model(root, "lin_session", SESSION_CONFIG)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[EmbeddedServer]:
    embedded = EmbeddedServer(repository, **free_ports(), startup_timeout=120)
    try:
        embedded.start()
        yield embedded
    finally:
        embedded.stop()


def test_locate_triton_finds_the_wheel() -> None:
    install = locate_triton()
    assert install.binary.is_file()
    assert (install.backends_dir / "python" / "libtriton_python.so").is_file()
    assert (install.caches_dir / "local").is_dir()
    assert install.stub_for().is_file()


def test_endpoints_are_loopback(server: EmbeddedServer) -> None:
    endpoints = server.endpoints
    assert isinstance(endpoints, Endpoints)
    assert endpoints.http == f"127.0.0.1:{server.ports['HTTP']}"
    assert endpoints.grpc == f"127.0.0.1:{server.ports['gRPC']}"
    assert endpoints.metrics == f"http://127.0.0.1:{server.ports['metrics']}/metrics"
    assert server.is_running() and server.pid is not None
    assert server.log_path.is_file()
    client = httpclient.InferenceServerClient(endpoints.http)
    assert client.is_server_ready()
    assert all(client.is_model_ready(name) for name in ("lin", "lin_reshape", "lin_nobatch", "lin_session"))


@pytest.mark.parametrize("batch", [1, 5])
def test_http_inference(server: EmbeddedServer, batch: int) -> None:
    x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = httpclient.InferenceServerClient(server.endpoints.http).infer("lin", [tensor])
    y = result.as_numpy("y")
    assert y.shape == (batch, 3)
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 5])
def test_grpc_inference(server: EmbeddedServer, batch: int) -> None:
    x = np.random.default_rng(10 + batch).standard_normal((batch, 4)).astype(np.float32)
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        y = client.infer("lin", [tensor]).as_numpy("y")
    finally:
        client.close()
    assert y.shape == (batch, 3)
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["lin", "lin_session"])
def test_served_outputs_are_onnx_runtimes_bit_for_bit(
    server: EmbeddedServer, repository: Path, model: str
) -> None:
    """The stand-in hands the request's arrays to ONNX Runtime and its outputs to the response unchanged
    (also with an ONNX Runtime session config entry among the parameters)."""
    import onnxruntime as ort

    x = np.random.default_rng(21).standard_normal((1, 4)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"), options)
    [want] = session.run(["y"], {"x": x})
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        got = client.infer(model, [tensor]).as_numpy("y")
    finally:
        client.close()
    np.testing.assert_array_equal(got, want)


def test_reshape_of_inputs_and_outputs(server: EmbeddedServer) -> None:
    x = np.random.default_rng(3).standard_normal((3, 2, 2)).astype(np.float32)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    y = httpclient.InferenceServerClient(server.endpoints.http).infer("lin_reshape", [tensor]).as_numpy("y")
    assert y.shape == (3, 3, 1)
    np.testing.assert_allclose(y[:, :, 0], expected(x.reshape(3, 4)), rtol=1e-5, atol=1e-5)


def test_model_without_batching(server: EmbeddedServer) -> None:
    x = np.random.default_rng(4).standard_normal((7, 4)).astype(np.float32)
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    y = httpclient.InferenceServerClient(server.endpoints.http).infer("lin_nobatch", [tensor]).as_numpy("y")
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-5)


def test_concurrent_requests_are_batched(server: EmbeddedServer) -> None:
    threads, per_thread = 8, 50
    client = httpclient.InferenceServerClient(server.endpoints.http)
    before = client.get_inference_statistics("lin", "1")["model_stats"][0]
    failures: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        grpc = grpcclient.InferenceServerClient(server.endpoints.grpc)
        try:
            for _ in range(per_thread):
                rows = int(rng.integers(1, 3))
                x = rng.standard_normal((rows, 4)).astype(np.float32)
                tensor = grpcclient.InferInput("x", [rows, 4], "FP32")
                tensor.set_data_from_numpy(x)
                y = grpc.infer("lin", [tensor]).as_numpy("y")
                if y.shape != (rows, 3) or not np.allclose(y, expected(x), rtol=1e-5, atol=1e-5):
                    failures.append(f"wrong result for a batch of {rows}")
        except Exception as error:  # reported below
            failures.append(repr(error))
        finally:
            grpc.close()

    pool = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not failures, failures[:3]

    success = before["inference_stats"]["success"]["count"]
    after = settle(
        lambda: client.get_inference_statistics("lin", "1")["model_stats"][0],
        lambda stats: stats["inference_stats"]["success"]["count"] - success >= threads * per_thread,
    )
    requests = after["inference_stats"]["success"]["count"] - success
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert requests == threads * per_thread
    assert inferences >= requests
    assert executions < requests, f"{executions} executions for {requests} requests: no dynamic batching"


def test_metrics_endpoint(server: EmbeddedServer) -> None:
    import urllib.request

    with urllib.request.urlopen(server.endpoints.metrics, timeout=10) as response:
        page = response.read().decode()
    assert 'nv_inference_request_success{model="lin",version="1"}' in page


def test_port_in_use_is_refused(repository: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = free_ports() | {"grpc_port": port}
        embedded = EmbeddedServer(repository, **ports)
        try:
            with pytest.raises(ServerError, match=rf"port {port} \(gRPC\) is already in use.*--grpc-port"):
                embedded.start()
            assert not embedded.is_running()
        finally:
            embedded.stop()


def test_wrong_config_reports_model_and_reason(tmp_path: Path) -> None:
    write_model(tmp_path, "broken", linear_config("broken", input_name="wrong"))
    embedded = EmbeddedServer(tmp_path, **free_ports(), startup_timeout=120)
    try:
        with pytest.raises(ServerError) as raised:
            embedded.start()
        message = str(raised.value)
        assert "'broken'" in message
        assert "unexpected input 'wrong'" in message
        assert "\n" not in message
        assert str(embedded.log_path) in message
        assert embedded.log_path.is_file(), "the log must be kept when start fails"
        assert not embedded.is_running() and embedded.pid is None
        assert processes_mentioning(str(tmp_path)) == []
    finally:
        embedded.stop()
        if embedded.log_path.parent.name.startswith("tritongen-triton-"):
            shutil.rmtree(embedded.log_path.parent, ignore_errors=True)


def test_stop_leaves_no_process_behind(repository: Path) -> None:
    embedded = EmbeddedServer(repository, **free_ports(), startup_timeout=120)
    try:
        embedded.start()
        pid = embedded.pid
        assert pid is not None
        started = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        assert {p.name() for p in started} == set(TRITON_PROCESSES)
        assert len(started) == 1 + 2 + 1 + 1 + 1  # the server and one stub per model instance
        backends = embedded.log_path.parent / "backends"
        assert (backends / "onnxruntime" / "model.py").is_file()
    finally:
        embedded.stop()
    for process in started:
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE, process
    assert not embedded.is_running() and embedded.pid is None
    assert not backends.parent.exists(), "the temporary directory must be removed on stop"
    assert embedded.wait() == 0
    embedded.stop()  # idempotent


def test_servers_left_running_are_stopped_at_exit(repository: Path) -> None:
    script = f"""
from generator.serve.server import EmbeddedServer
server = EmbeddedServer({str(repository)!r}, http_port={find_free_port()}, grpc_port={find_free_port()},
                        metrics_port={find_free_port()})
server.start()
print(server.pid, flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not psutil.pid_exists(int(done.stdout.split()[0]))
