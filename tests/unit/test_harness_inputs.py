"""Hermetic pieces of the harness: targets, request tensors, shapes, recorded requests and server figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generator.core.errors import LoadTestError
from generator.loadtest.metrics import parse_prometheus, server_figures
from generator.loadtest.payloads import load_payload_samples, make_batches, model_info
from generator.loadtest.plan import parse_models
from generator.loadtest.recorder import Recorder, Records
from generator.loadtest.report.figures import client_figures, cost_per_1k
from generator.loadtest.shapes import parse_levels, schedule
from generator.loadtest.target import is_loopback, resolve_target

METADATA = {
    "name": "cnn",
    "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
}
CONFIG = {"name": "cnn", "max_batch_size": 64, "input": [{"name": "image", "dims": [1, 8, 8]}]}


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        (None, None, "http://127.0.0.1:8000"),
        (None, "grpc", "grpc://127.0.0.1:8001"),
        ("localhost:9000", None, "http://localhost:9000"),
        ("grpc://10.0.0.1", None, "grpc://10.0.0.1:8001"),
        ("http://127.0.0.1:8000", "grpc", "grpc://127.0.0.1:8001"),
        ("127.0.0.1:9001", "grpc", "grpc://127.0.0.1:9001"),
        ("http://[::1]:8000/prefix/", None, "http://[::1]:8000/prefix"),
    ],
)
def test_targets_follow_the_url_rules(url: str | None, protocol: str | None, expected: str) -> None:
    assert resolve_target(url, protocol).url == expected


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("grpc://h:1", "http", "is a gRPC endpoint"),
        ("https://h:1", None, "does not speak"),
        ("h:99999", None, "bad port"),
        ("grpc://[::1", None, "does not parse"),
        ("h", "smtp", "unknown protocol"),
    ],
)
def test_bad_targets_are_clear_errors(url: str, protocol: str | None, expected: str) -> None:
    with pytest.raises(LoadTestError, match=expected):
        resolve_target(url, protocol)


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.3.4.5")
    assert not is_loopback("192.0.2.10") and not is_loopback("no-such-host.invalid")


def test_models_and_weights_parse() -> None:
    assert parse_models(["a", "b:3"]) == (("a", 1.0), ("b", 3.0))
    assert parse_models("a:0.5,b") == (("a", 0.5), ("b", 1.0))
    for bad, message in (
        ([], "no model"),
        (["a:x"], "must be a number"),
        (["a:0"], "above 0"),
        (["a", "a"], "twice"),
    ):
        with pytest.raises(LoadTestError, match=message):
            parse_models(bad)


def test_random_batches_follow_the_metadata_and_the_seed() -> None:
    info = model_info(METADATA, CONFIG)
    assert info.max_batch_size == 64 and info.inputs[0].dims == (1, 8, 8)
    batches = make_batches(info, 4, seed=1, variants=3)
    assert len(batches) == 3 and batches[0]["image"].shape == (4, 1, 8, 8)
    assert batches[0]["image"].dtype == np.float32
    assert not np.array_equal(batches[0]["image"], batches[1]["image"])
    assert np.array_equal(make_batches(info, 4, seed=1, variants=3)[2]["image"], batches[2]["image"])


def test_batch_size_must_fit_the_model() -> None:
    info = model_info(METADATA, CONFIG)
    with pytest.raises(LoadTestError, match="exceeds model 'cnn's max_batch_size 64"):
        make_batches(info, 65)
    unbatched = model_info({**METADATA, "inputs": [{"name": "x", "datatype": "INT64", "shape": [3]}]}, {})
    assert make_batches(unbatched, 1)[0]["x"].shape == (3,)
    with pytest.raises(LoadTestError, match="does not batch"):
        make_batches(unbatched, 2)
    variable = model_info(
        {**METADATA, "inputs": [{"name": "t", "datatype": "FP32", "shape": [-1, -1]}]}, CONFIG
    )
    with pytest.raises(LoadTestError, match="--data FILE"):
        make_batches(variable, 1)


def test_samples_from_npz_and_json_are_cycled_in_batches(tmp_path: Path) -> None:
    info = model_info(METADATA, CONFIG)
    images = np.arange(5 * 64, dtype=np.float64).reshape(5, 64)
    np.savez(tmp_path / "s.npz", **{"cnn/image": images})
    batches = make_batches(info, 2, samples=load_payload_samples(tmp_path / "s.npz"))
    assert len(batches) == 3 and batches[0]["image"].shape == (2, 1, 8, 8)
    assert batches[0]["image"].dtype == np.float32
    assert batches[2]["image"][1].reshape(-1)[0] == 0.0  # wrapped around to the first sample
    document = {"data": [{"image": images[i].tolist()} for i in range(3)]}
    (tmp_path / "s.json").write_text(json.dumps(document))
    assert len(make_batches(info, 1, samples=load_payload_samples(tmp_path / "s.json"))) == 3


def test_samples_that_do_not_fit_are_clear_errors(tmp_path: Path) -> None:
    info = model_info(METADATA, CONFIG)
    (tmp_path / "other.json").write_text(json.dumps({"pixels": [[1.0, 2.0]]}))
    with pytest.raises(LoadTestError, match=r"no samples for input 'image'.*it has: pixels"):
        make_batches(info, 1, samples=load_payload_samples(tmp_path / "other.json"))
    (tmp_path / "short.json").write_text(json.dumps({"image": [[1.0, 2.0]]}))
    with pytest.raises(LoadTestError, match=r"shape \[2\] each, but the input takes \[1, 8, 8\]"):
        make_batches(info, 1, samples=load_payload_samples(tmp_path / "short.json"))
    (tmp_path / "s.csv").write_text("1,2")
    with pytest.raises(LoadTestError, match=r"\.npz, \.json or \.txt"):
        load_payload_samples(tmp_path / "s.csv")


def test_shapes_schedule_steps_and_ramps() -> None:
    assert parse_levels("1, 2,4") == [1, 2, 4]
    steps = schedule([1, 4], "step", 5.0, 1.0)
    assert [(p.users, p.warmup, p.hold, p.ramp) for p in steps] == [
        (1, 1.0, 5.0, False),
        (4, 1.0, 5.0, False),
    ]
    [ramp] = schedule([8], "ramp", 10.0, 1.0)
    assert (ramp.users, ramp.spawn_rate, ramp.windows, ramp.ramp) == (8, 0.8, 5, True)
    for args, message in (
        (([1], "zigzag", 1.0, 0.0), "unknown shape"),
        (([1], "step", 0.0, 0.0), "--duration"),
        (([1], "ramp", 1.0, 0.0, 2.0), "--spawn-rate does not apply"),
    ):
        with pytest.raises(LoadTestError, match=message):
            schedule(*args)
    with pytest.raises(LoadTestError, match="whole number"):
        parse_levels("1,two")


def test_records_merge_chunks_from_several_processes() -> None:
    first, second = Recorder(), Recorder()
    first.on_request("http", "a", 2.0, 40, None, {"inferences": 4})
    first.on_request("http", "b", 3.0, 40, None, {"inferences": 1})
    second.on_request("http", "b", 5.0, 0, ConnectionRefusedError("refused"), {"inferences": 1})
    second.on_request("http", "a", 4.0, 40, None, {"inferences": 4})
    records = Records(["a", "b"])
    records.add_chunk(first.take_chunk(), "w1")
    records.add_chunk(second.take_chunk(), "w2")
    rows = records.rows
    assert len(rows) == 4 and list(rows["end"]) == sorted(rows["end"])
    assert sorted(zip(rows["model"].tolist(), rows["latency_ms"].tolist(), strict=True)) == [
        (0, 2.0), (0, 4.0), (1, 3.0), (1, 5.0)
    ]  # fmt: skip
    assert records.messages == ["ConnectionRefusedError: refused"]
    assert set(records.last_report) == {"w1", "w2"} and len(first) == 0


def test_client_figures_are_exact_and_count_failures() -> None:
    recorder = Recorder()
    for latency in range(1, 101):
        recorder.on_request("grpc", "m", float(latency), 10, None, {"inferences": 2})
    recorder.on_request("grpc", "m", 0.1, 0, RuntimeError("boom"), {"inferences": 2})
    records = Records(["m"])
    records.add_chunk(recorder.take_chunk())
    figures = client_figures(records.rows, 2.0, records.names, records.messages)
    assert figures["requests"] == 101 and figures["failures"] == 1 and figures["inferences"] == 200
    assert figures["throughput"] == 100.0 and figures["error_rate"] == pytest.approx(1 / 101)
    assert figures["latency_ms"]["p50"] == pytest.approx(50.5) and figures["latency_ms"]["max"] == 100.0
    assert figures["latency_ms"]["p99"] == pytest.approx(99.01)
    assert figures["errors"] == {"RuntimeError: boom": 1}
    assert sum(figures["latency_histogram"]["counts"]) == 100
    assert cost_per_1k(1000.0, 3.6) == pytest.approx(0.001) and cost_per_1k(1000.0, None) is None


def test_server_figures_are_deltas_over_the_window() -> None:
    def stats(inferences: int, executions: int, requests: int, queue_ns: int) -> dict:
        return {
            "inference_count": inferences,
            "execution_count": executions,
            "success_count": requests,
            "queue_count": requests,
            "queue_ns": queue_ns,
            "compute_infer_count": requests,
            "compute_infer_ns": requests * 1000,
            "cache_hit_count": 0,
        }

    before = {"m": stats(100, 50, 100, 10_000_000)}
    after = {"m": stats(500, 150, 300, 50_000_000)}
    figures = server_figures(before, after)
    assert figures["avg_batch_size"] == 4.0 and figures["queue_us"] == 200.0
    assert figures["compute_infer_us"] == 1.0 and figures["compute_input_us"] is None
    assert figures["inference_count"] == 400 and figures["per_model"]["m"]["avg_batch_size"] == 4.0


def test_prometheus_text_is_parsed_with_labels() -> None:
    text = (
        "# HELP nv_cpu_utilization CPU utilization\n"
        "nv_cpu_utilization 0.25\n"
        'nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5\n'
        'nv_gpu_utilization{gpu_uuid="GPU-2",x="a,b"} 0.7\n'
    )
    metrics = parse_prometheus(text)
    assert metrics["nv_cpu_utilization"] == [({}, 0.25)]
    assert [v for _, v in metrics["nv_gpu_utilization"]] == [0.5, 0.7]
    assert metrics["nv_gpu_utilization"][0][0] == {"gpu_uuid": "GPU-1"}
