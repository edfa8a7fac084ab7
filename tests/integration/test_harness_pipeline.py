"""The load-test harness on pipelines against the real embedded Triton: text (STRING) tensors from
generated words and from a .txt file, an input with a -1 axis given ``--shape``, and ensembles (nested too)
whose report has a row per step with Triton's own counts.

The repository is written by hand here: Python-backend models and ensembles of them. Every run goes
through ``python -m generator loadtest`` in a subprocess, as users run it (Locust patches the standard
library, which must not happen inside pytest)."""

from __future__ import annotations

import json
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from generator.serve.server import EmbeddedServer

from ..conftest import free_ports, run_cli

pytestmark = pytest.mark.integration

SHORT = ("--users", "2", "--duration", "2", "--warmup", "0.5")

TEXT_STATS = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """LEN: each string's length in UTF-8 bytes; UPPER: the string upper-cased. A string holding the
    word 'forbidden' fails its request (a model refusing its input)."""

    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            flat = [t if isinstance(t, bytes) else str(t).encode() for t in text.reshape(-1)]
            if any(b"forbidden" in t for t in flat):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("forbidden text")))
                continue
            lengths = np.array([len(t) for t in flat], dtype=np.int64).reshape(text.shape)
            upper = np.array([t.decode("utf-8").upper().encode("utf-8") for t in flat], dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("LEN", lengths), pb_utils.Tensor("UPPER", upper.reshape(text.shape))]
                )
            )
        return responses
'''

WORD_COUNT = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """COUNT: the number of space-separated words of each string."""

    def execute(self, requests):
        responses = []
        for request in requests:
            words = pb_utils.get_input_tensor_by_name(request, "WORDS").as_numpy()
            counts = [len(w.split()) for w in words.reshape(-1)]
            tensor = pb_utils.Tensor("COUNT", np.array(counts, dtype=np.int32).reshape(words.shape))
            responses.append(pb_utils.InferenceResponse([tensor]))
        return responses
'''

ID_SUM = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """TOTAL: the sum of each row of ids; DOUBLED: the ids times two (as long as the input)."""

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            total = pb_utils.Tensor("TOTAL", ids.sum(axis=-1, keepdims=True).astype(np.int64))
            responses.append(pb_utils.InferenceResponse([total, pb_utils.Tensor("DOUBLED", ids * 2)]))
        return responses
'''

CONFIGS = {
    "text_stats": """
        backend: "python"
        max_batch_size: 8
        input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
        output [
          { name: "LEN" data_type: TYPE_INT64 dims: [ 1 ] },
          { name: "UPPER" data_type: TYPE_STRING dims: [ 1 ] }
        ]
        instance_group [ { count: 1 kind: KIND_CPU } ]
    """,
    "word_count": """
        backend: "python"
        max_batch_size: 8
        input [ { name: "WORDS" data_type: TYPE_STRING dims: [ 1 ] } ]
        output [ { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] } ]
        instance_group [ { count: 1 kind: KIND_CPU } ]
    """,
    "id_sum": """
        backend: "python"
        max_batch_size: 8
        input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] } ]
        output [
          { name: "TOTAL" data_type: TYPE_INT64 dims: [ 1 ] },
          { name: "DOUBLED" data_type: TYPE_INT64 dims: [ -1 ] }
        ]
        instance_group [ { count: 1 kind: KIND_CPU } ]
    """,
    "text_pipeline": """
        platform: "ensemble"
        max_batch_size: 8
        input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
        output [
          { name: "LEN" data_type: TYPE_INT64 dims: [ 1 ] },
          { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }
        ]
        ensemble_scheduling { step [
          { model_name: "text_stats" model_version: -1
            input_map { key: "TEXT" value: "TEXT" }
            output_map { key: "UPPER" value: "upper" }
            output_map { key: "LEN" value: "LEN" } },
          { model_name: "word_count" model_version: -1
            input_map { key: "WORDS" value: "upper" }
            output_map { key: "COUNT" value: "COUNT" } }
        ] }
    """,
    "nested": """
        platform: "ensemble"
        max_batch_size: 8
        input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
        output [
          { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] },
          { name: "UPPER" data_type: TYPE_STRING dims: [ 1 ] }
        ]
        ensemble_scheduling { step [
          { model_name: "text_pipeline" model_version: -1
            input_map { key: "TEXT" value: "TEXT" }
            output_map { key: "COUNT" value: "COUNT" } },
          { model_name: "text_stats" model_version: -1
            input_map { key: "TEXT" value: "TEXT" }
            output_map { key: "UPPER" value: "UPPER" } }
        ] }
    """,
}
SOURCES = {"text_stats": TEXT_STATS, "word_count": WORD_COUNT, "id_sum": ID_SUM}


def write_repository(root: Path) -> Path:
    """The hand-written repository: three Python-backend models and two ensembles (one nested)."""
    for name, config in CONFIGS.items():
        version = root / name / "1"
        version.mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\n' + textwrap.dedent(config).strip() + "\n"
        )
        if name in SOURCES:
            (version / "model.py").write_text(SOURCES[name].lstrip())
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    repository = write_repository(tmp_path_factory.mktemp("pipelines") / "model_repository")
    with EmbeddedServer(repository, **free_ports()) as running:
        yield running


def _url(server: EmbeddedServer, protocol: str) -> str:
    endpoint = server.endpoints.http if protocol == "http" else server.endpoints.grpc
    return f"{protocol}://{endpoint}"


def _counts(server: EmbeddedServer, *models: str) -> dict[str, int]:
    """Triton's inference counts of ``models``."""
    with httpclient.InferenceServerClient(server.endpoints.http) as client:
        entries = {model: client.get_inference_statistics(model)["model_stats"] for model in models}
    return {model: sum(int(e["inference_count"]) for e in stats) for model, stats in entries.items()}


def _loadtest(*args: str, cwd: Path) -> tuple[Any, dict[str, Any] | None]:
    result = run_cli("loadtest", *args, "--out", "out", cwd=cwd, timeout=180)
    report_file = cwd / "out" / "report.json"
    return result, json.loads(report_file.read_text()) if report_file.exists() else None


def _clean(report: dict[str, Any]) -> dict[str, Any]:
    """The only run of a report, checked to be free of failures."""
    [run] = report["runs"]
    assert run["failures"] == 0 and run["error_rate"] == 0 and not run["errors"], run["errors"]
    assert run["requests"] > 0 and run["throughput"] > 0
    assert report["totals"]["failures"] == 0
    return run


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_text_model_is_loaded_from_a_txt_file(
    server: EmbeddedServer, tmp_path: Path, protocol: str
) -> None:
    lines = ["hello world", "the quick brown fox", "ünïcode täxt", "one"]
    (tmp_path / "texts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = _counts(server, "text_stats")["text_stats"]
    result, report = _loadtest(
        "--model", "text_stats", "--url", _url(server, protocol), "--data", "texts.txt", "--batch-size", "2",
        *SHORT, cwd=tmp_path,
    )  # fmt: skip
    after = _counts(server, "text_stats")["text_stats"]
    assert result.returncode == 0, result.stderr
    assert report is not None
    run = _clean(report)
    assert run["inferences"] == 2 * run["requests"] and run["server"]["avg_batch_size"] >= 2
    assert report["replies"]["text_stats"] == {
        "LEN": {"datatype": "INT64", "shape": [2, 1]},
        "UPPER": {"datatype": "BYTES", "shape": [2, 1]},
    }
    totals = report["totals"]
    assert after - before - 2 == totals["inferences"] == totals["server_inferences"]  # 2: the reply check
    assert run["steps"] == []


def test_a_model_that_refuses_the_first_request_fails_before_the_load(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    (tmp_path / "texts.txt").write_text("forbidden words\nfine words\n")
    before = _counts(server, "text_stats")["text_stats"]
    result, report = _loadtest(
        "--model", "text_stats", "--url", _url(server, "http"), "--data", "texts.txt", *SHORT, cwd=tmp_path
    )  # fmt: skip
    assert result.returncode == 1 and report is None
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert (
        line.startswith("error: model 'text_stats' failed the harness's first request")
        and "forbidden" in line
    )
    assert _counts(server, "text_stats")["text_stats"] - before <= 1  # the checked request at most: no load


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_ensemble_is_reported_per_step_with_tritons_counts(
    server: EmbeddedServer, tmp_path: Path, protocol: str
) -> None:
    steps = ("text_stats", "word_count")
    before = _counts(server, "text_pipeline", *steps)
    result, report = _loadtest(
        "--model", "text_pipeline", "--url", _url(server, protocol), *SHORT, cwd=tmp_path
    )
    after = _counts(server, "text_pipeline", *steps)
    assert result.returncode == 0, result.stderr
    assert report is not None
    run = _clean(report)
    [section] = run["steps"]
    assert section["ensemble"] == "text_pipeline" and section["bottleneck"] in steps
    assert [s["model"] for s in section["steps"]] == list(steps)
    ensemble_requests = run["server"]["per_model"]["text_pipeline"]["success_count"]
    assert section["requests"] == ensemble_requests > 0
    for step in section["steps"]:
        assert (step["kind"], step["depth"], step["parent"], step["calls"]) == (
            "model",
            1,
            "text_pipeline",
            1,
        )
        # a snapshot may catch a request between its steps: at most one per user at either end
        assert abs(step["requests"] - ensemble_requests) <= 4 and step["executions"] <= step["requests"]
        assert step["compute_infer_us"] > 0 and step["queue_us"] is not None and 0 < step["share"] < 1
    assert sum(s["share"] for s in section["steps"]) == pytest.approx(1.0, abs=1e-4)
    assert [s["bottleneck"] for s in section["steps"]].count(True) == 1

    totals = report["totals"]
    served = totals["inferences"] + 1  # the reply check's request
    assert after["text_pipeline"] - before["text_pipeline"] == served
    assert totals["server_step_inferences"] == dict.fromkeys(steps, totals["inferences"])
    assert all(after[s] - before[s] == served for s in steps)
    assert "pipeline steps" in result.stdout and "bottleneck" in result.stdout
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Pipeline steps" in html and "word_count" in html


def test_a_nested_ensemble_counts_a_model_run_twice(server: EmbeddedServer, tmp_path: Path) -> None:
    result, report = _loadtest("--model", "nested", "--url", _url(server, "grpc"), *SHORT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert report is not None
    run = _clean(report)
    [section] = run["steps"]
    layout = [(s["model"], s["kind"], s["depth"], s["parent"], s["calls"]) for s in section["steps"]]
    assert layout == [
        ("text_pipeline", "ensemble", 1, "nested", 1),
        ("text_stats", "model", 2, "text_pipeline", 2),
        ("word_count", "model", 2, "text_pipeline", 1),
    ]
    by_model = {s["model"]: s for s in section["steps"]}
    assert by_model["text_pipeline"]["share"] is None and not by_model["text_pipeline"]["bottleneck"]
    assert abs(by_model["text_stats"]["requests"] - 2 * section["requests"]) <= 8  # 2 users, 2 calls, 2 ends
    inferences = report["totals"]["inferences"]
    assert report["totals"]["server_step_inferences"] == {
        "text_pipeline": inferences,
        "text_stats": 2 * inferences,
        "word_count": inferences,
    }


def test_shape_gives_the_length_of_a_variable_input(server: EmbeddedServer, tmp_path: Path) -> None:
    result, report = _loadtest("--model", "id_sum", "--url", _url(server, "http"), *SHORT, cwd=tmp_path)
    assert result.returncode == 1 and report is None
    assert "--shape input_ids:DIMS" in result.stderr and "--data" in result.stderr

    result, report = _loadtest(
        "--model", "id_sum", "--url", _url(server, "grpc"), "--shape", "input_ids:16", "--batch-size", "4",
        *SHORT, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert report is not None
    run = _clean(report)
    assert run["inferences"] == 4 * run["requests"] and report["input_shapes"] == ["input_ids:16"]
    assert report["replies"]["id_sum"]["DOUBLED"] == {"datatype": "INT64", "shape": [4, 16]}


def test_text_replies_decode_over_both_protocols(server: EmbeddedServer) -> None:
    """What the reply check reads: STRING tensors sent and decoded by the harness's own clients over HTTP
    (binary tensor data) and gRPC, and a reply carrying them as JSON."""
    from generator.loadtest.clients import (
        GrpcChannel,
        GrpcConnection,
        GrpcRequests,
        HttpConnection,
        HttpRequests,
        http_outputs,
    )
    from generator.loadtest.payloads import model_info
    from generator.loadtest.target import resolve_target

    with httpclient.InferenceServerClient(server.endpoints.http) as client:
        info = model_info(client.get_model_metadata("text_stats"), client.get_model_config("text_stats"))
    texts = np.array([[b"hello world"], ["ünï".encode()], [b""]], dtype=np.object_)
    expected_upper = [[b"HELLO WORLD"], ["ÜNÏ".encode()], [b""]]
    expected_len = [[11], [len("ünï".encode())], [0]]

    http = resolve_target(_url(server, "http"))
    connection: Any = HttpConnection(http, timeout=10.0)
    try:
        reply = connection.reply(HttpRequests(http, info, [{"TEXT": texts}]), 0)
    finally:
        connection.close()
    assert reply["UPPER"].datatype == "BYTES" and reply["UPPER"].array.tolist() == expected_upper
    assert reply["LEN"].datatype == "INT64" and reply["LEN"].array.tolist() == expected_len

    connection = GrpcConnection(GrpcChannel(resolve_target(_url(server, "grpc"))), timeout=10.0)
    try:
        reply = connection.reply(GrpcRequests(info, [{"TEXT": texts}]), 0)
    finally:
        connection.close()
    assert reply["UPPER"].datatype == "BYTES" and reply["UPPER"].array.tolist() == expected_upper
    assert reply["LEN"].array.tolist() == expected_len

    tensor = httpclient.InferInput("TEXT", [3, 1], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=False)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=False) for name in ("LEN", "UPPER")]
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    assert json_size is None
    request = urllib.request.Request(
        f"http://{server.endpoints.http}/v2/models/text_stats/infer",
        data=body if isinstance(body, bytes) else body.encode(),
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    with opener.open(request, timeout=10) as answer:
        assert answer.headers.get("Inference-Header-Content-Length") is None
        reply = http_outputs(answer.read(), None)
    assert reply["UPPER"].array.tolist() == expected_upper and reply["LEN"].array.tolist() == expected_len
