"""The control-plane client the server's supervision and the load side share, against a real tritonserver.

:class:`~generator.serve.control.ServerControl`'s repository calls (the index, a load with and without a
config of its own, an unload, readiness) over HTTP in this process and over gRPC in a subprocess (grpcio's
gevent mode, which the gRPC client turns on, is process-wide), and the error class each caller names.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from generator.core.errors import LoadTestError, ServerError
from generator.serve.control import ServerControl, Target
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer

from ..conftest import REPO_ROOT, free_ports, make_linear_onnx, settle

pytestmark = pytest.mark.integration

CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    repository = tmp_path_factory.mktemp("control") / "model_repository"
    for name in ("lin", "other"):
        make_linear_onnx(repository / name / "1" / "model.onnx")
        (repository / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    with EmbeddedServer(repository, **free_ports(), exit_timeout=5) as embedded:
        yield embedded


def http_target(server: EmbeddedServer) -> Target:
    host, port = server.endpoints.http.rsplit(":", 1)
    return Target("http", host, int(port))


def states(control: ServerControl) -> dict[str, str]:
    return {entry["name"]: entry.get("state", "") for entry in control.index()}


def test_index_unload_and_load_over_http(server: EmbeddedServer) -> None:
    with ServerControl(http_target(server)) as control:
        assert control.is_ready()
        index = control.index()
        assert sorted(entry["name"] for entry in index) == ["lin", "other"]
        assert all(entry["state"] == "READY" and str(entry["version"]) == "1" for entry in index), index

        control.unload("lin")
        after = settle(lambda: states(control), lambda now: now["lin"] not in ("READY", "UNLOADING"))
        assert after == {"lin": "UNAVAILABLE", "other": "READY"}
        assert control.ready_models() == ["other"]

        control.load("lin")  # the repository's own config; returns once the model is loaded
        assert states(control) == {"lin": "READY", "other": "READY"}
        original = control.config("lin")
        assert original["max_batch_size"] == 8

        control.load("lin", json.dumps({**original, "max_batch_size": 4}))
        assert control.config("lin")["max_batch_size"] == 4
        control.load("lin", json.dumps(original))
        assert control.config("lin")["max_batch_size"] == 8
        assert control.ready_models() == ["lin", "other"]


def test_failures_are_raised_as_the_callers_error_class(server: EmbeddedServer) -> None:
    target = http_target(server)
    with ServerControl(target) as control, pytest.raises(ServerError, match="did not load model 'missing'"):
        control.load("missing")
    with (
        ServerControl(target, error=LoadTestError) as control,
        pytest.raises(LoadTestError, match="did not load model 'missing'"),
    ):
        control.load("missing")
    nowhere = ServerControl(Target("http", "127.0.0.1", find_free_port()), timeout=1.0)
    with nowhere:
        assert not nowhere.is_ready()  # never raises
        assert nowhere.ready_models() == []
        with pytest.raises(ServerError, match=r"cannot read the repository index .*\(nothing answers there"):
            nowhere.index()
    with pytest.raises(ServerError, match="connection to Triton is closed"):
        nowhere.index()


GRPC_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from generator.serve.control import ServerControl, Target

    host, port = sys.argv[1].rsplit(":", 1)
    seen = {}
    with ServerControl(Target("grpc", host, int(port))) as control:
        seen["ready"] = control.is_ready()
        seen["index"] = control.index()
        control.unload("other")
        for _ in range(200):
            states = {e["name"]: e.get("state", "") for e in control.index()}
            if states["other"] not in ("READY", "UNLOADING"):
                break
            time.sleep(0.05)
        seen["unloaded"] = states
        seen["ready_models"] = control.ready_models()
        control.load("other")
        seen["loaded"] = {e["name"]: e.get("state", "") for e in control.index()}
        seen["batch"] = control.config("other")["max_batch_size"]
    print(json.dumps(seen))
    """
)


def test_index_unload_and_load_over_grpc(server: EmbeddedServer) -> None:
    done = subprocess.run(
        [sys.executable, "-c", GRPC_SCRIPT, server.endpoints.grpc],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ready"] is True
    assert sorted(entry["name"] for entry in seen["index"]) == ["lin", "other"]
    assert all(entry["state"] == "READY" for entry in seen["index"]), seen["index"]
    assert seen["unloaded"] == {"lin": "READY", "other": "UNAVAILABLE"}
    assert seen["ready_models"] == ["lin"]
    assert seen["loaded"] == {"lin": "READY", "other": "READY"}
    assert seen["batch"] == 8
