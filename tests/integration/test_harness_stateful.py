"""The harness's sequence and streaming modes against the real embedded Triton: a stateful Python model with
sequence batching (Direct, the four controls, a running sum per correlation ID) and a decoupled Python model
that streams tokens, both from hand-written configs (:mod:`tests.stateful_repo`). Each model logs what it
served, so the tests hold the harness's figures to what the server saw. ``loadtest`` runs as users run it
(a subprocess: Locust patches the standard library for gevent); the harness's own clients run here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from generator.loadtest.clients import (
    MODEL_STREAM_INFER,
    GrpcChannel,
    GrpcConnection,
    GrpcRequests,
    HttpConnection,
    HttpRequests,
)
from generator.loadtest.grpcwire import UnaryConnection, request_headers
from generator.loadtest.parameters import sequence_parameters
from generator.loadtest.payloads import model_info
from generator.loadtest.streaming import StreamReader
from generator.loadtest.target import resolve_target
from generator.serve.server import EmbeddedServer

from ..conftest import free_ports, run_cli, settle
from ..stateful_repo import read_log, sequences, write_accumulate, write_streamer

pytestmark = pytest.mark.integration

SHORT = ("--duration", "2", "--warmup", "0.5")


class Served:
    """The server and the models' logs; :meth:`mark` and :meth:`since` read what one test made them log."""

    def __init__(self, server: EmbeddedServer, logs: dict[str, Path]) -> None:
        self.server = server
        self.logs = logs
        self._marks: dict[str, int] = {}

    def url(self, protocol: str) -> str:
        endpoints = self.server.endpoints
        return f"grpc://{endpoints.grpc}" if protocol == "grpc" else f"http://{endpoints.http}"

    def mark(self) -> None:
        self._marks = {name: len(read_log(path)) for name, path in self.logs.items()}

    def since(self, model: str) -> list[dict[str, Any]]:
        return read_log(self.logs[model])[self._marks.get(model, 0) :]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("stateful")
    logs = {name: root / f"{name}.log" for name in ("accumulate", "held", "streamer")}
    repository = root / "model_repository"
    write_accumulate(repository, log_path=logs["accumulate"])
    # a sequence left open holds its slot for 5 minutes: a test started after one that left them open starves
    write_accumulate(repository, name="held", idle_us=300_000_000, log_path=logs["held"])
    write_streamer(repository, log_path=logs["streamer"], token_delay_ms=1)
    with EmbeddedServer(repository, **free_ports()) as server:
        yield Served(server, logs)


def _loadtest(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli("loadtest", *args, cwd=cwd, timeout=timeout)


def _report(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "report.json").read_text())


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def _check_correlation(records: list[dict[str, Any]]) -> None:
    """Each request belongs to an open sequence, and no open sequence's ID starts another one."""
    open_ids: set[int] = set()
    for record in records:
        if record["START"]:
            assert record["CORRID"] not in open_ids, f"ID {record['CORRID']} reused while its sequence ran"
            open_ids.add(record["CORRID"])
        assert record["CORRID"] in open_ids
        if record["END"]:
            open_ids.discard(record["CORRID"])


def _whole_sequences(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``accumulate``'s records as sequences, each whole: steps from 1, START on its first, END on its last."""
    _check_correlation(records)
    found = list(sequences(records))
    for sequence in found:
        assert [r["step"] for r in sequence] == list(range(1, len(sequence) + 1))
        assert [r["START"] for r in sequence] == [1] + [0] * (len(sequence) - 1)
        assert [r["END"] for r in sequence] == [0] * (len(sequence) - 1) + [1], "a sequence left open"
    return found


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sequences_reach_the_model_whole_and_the_figures_count_them(
    served: Served, tmp_path: Path, protocol: str
) -> None:
    served.mark()
    result = _loadtest(
        "--model", "accumulate", "--url", served.url(protocol), "--users", "2", "--sequences-per-user", "2",
        "--sequence-length", "6", "--sequence-length-variation", "0", *SHORT, "--out", "out",
        "--fail-if", "seq_error_rate>0", "--fail-if", "error_rate>0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = _report(tmp_path / "out")
    records = served.since("accumulate")
    check, *load = _whole_sequences(records)
    assert len(check) == 1 and check[0]["START"] == check[0]["END"] == 1  # the reply check before the load
    # the stop ended the sequences still going: one more request each, with END, so none is left open on
    # the server; the ones it cut short are shorter than the length drawn (one cut after its fifth request
    # is whole on the server, its sixth sent as the closing one)
    cut_short = [s for s in load if len(s) < 6]
    assert all(2 <= len(s) <= 6 for s in load) and len(cut_short) <= 4  # 2 users x 2 lanes at the stop

    totals = report["totals"]
    assert totals["failures"] == 0 and totals["sequence_failures"] == 0
    assert len(cut_short) <= totals["sequences_closed"] <= 4
    assert totals["sequences"] + totals["sequences_closed"] == len(load) and totals["sequences"] > 0
    assert totals["requests"] == len(records) - 1 == sum(map(len, load))
    assert totals["server_inferences"] == totals["inferences"] == totals["requests"]
    [run] = report["runs"]
    figures = run["sequences"]
    assert 0 < figures["completed"] <= totals["sequences"] and figures["length_mean"] == 6.0
    assert figures["per_s"] == pytest.approx(
        figures["completed"] / run["window_s"], rel=1e-3
    )  # window_s rounded
    latency = figures["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert report["sequences"]["models"] == ["accumulate"] and report["gate"]["passed"]
    assert run["stream"] is None and "sequences/s" in result.stdout


def test_varied_lengths_a_baseline_and_the_gate_on_sequence_figures(served: Served, tmp_path: Path) -> None:
    served.mark()
    first = _loadtest(
        "--model", "accumulate", "--url", served.url("grpc"), "--users", "1", "--sequences-per-user", "3",
        "--sequence-length", "10", "--sequence-length-variation", "50", "--sequence-id-range", "500:600",
        *SHORT, "--out", "first", "--fail-if", "sequences_per_s<1e9", cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 1, first.stderr
    [line] = _errors(first)
    assert line.startswith("error: --fail-if sequences_per_s<1e9 breached: sequences_per_s = ")
    records = served.since("accumulate")
    report = _report(tmp_path / "first")
    load = _whole_sequences(records)[1:]
    # one user: the sequences its stop closed (each shorter than drawn, or whole) are the last to end
    closed = report["totals"]["sequences_closed"]
    completed = load[: len(load) - closed]
    lengths = [len(s) for s in completed]
    assert all(5 <= n <= 15 for n in lengths) and len(set(lengths)) > 1 and closed <= 3
    assert {r["CORRID"] for r in records} <= set(range(500, 600))
    assert report["totals"]["sequences"] == len(completed)
    assert 5 <= report["runs"][0]["sequences"]["length_mean"] <= 15
    header, row = (tmp_path / "first" / "report.csv").read_text().splitlines()
    assert float(dict(zip(header.split(","), row.split(","), strict=True))["seq_p99_ms"]) > 0

    second = _loadtest(
        "--model", "accumulate", "--url", served.url("grpc"), "--users", "1", *SHORT, "--out", "second",
        "--baseline", "first/report.json", "--fail-if", "seq_p99_ms_change_pct>1e9", cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    compared = _report(tmp_path / "second")["runs"][0]["baseline"]["figures"]
    assert compared["seq_p99_ms"]["better"] == "lower" and compared["sequences_per_s"]["old"] > 0


def test_a_test_right_after_another_finds_the_sequence_slots_free(served: Served, tmp_path: Path) -> None:
    """``held`` keeps an idle sequence 5 minutes and has 4 slots, as many as the sequences of a test of 2
    users x 2 lanes: had the first test left its sequences open at the stop, the second's first sequence
    (its reply check before the load) would wait for a slot until its request timed out, a one-line error,
    or its users for theirs past its end. The third runs its users on two Locust workers, which stop alike."""
    for out, protocol, workers in (("first", "http", "0"), ("second", "grpc", "0"), ("workers", "http", "2")):
        served.mark()
        result = _loadtest(
            "--model", "held", "--url", served.url(protocol), "--users", "2", "--sequences-per-user", "2",
            "--sequence-length", "5", "--sequence-length-variation", "0", *SHORT, "--out", out,
            "--workers", workers, "--request-timeout", "20", "--fail-if", "error_rate>0", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, (out, result.stderr)
        records = served.since("held")
        check, *load = _whole_sequences(records)  # every one ended, none left open
        assert len(check) == 1
        totals = _report(tmp_path / out)["totals"]
        assert totals["sequences"] > 0 and totals["sequences"] + totals["sequences_closed"] == len(load)
        assert totals["server_inferences"] == totals["inferences"] == totals["requests"] == len(records) - 1


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_step_of_interleaved_sequences_gets_its_own_running_sum(served: Served, protocol: str) -> None:
    """The harness's own requests (its prebuilt bodies with the sequence parameters spliced in) against
    the model's state: two sequences sent in turn, each reply the running sum of its own sequence."""
    with httpclient.InferenceServerClient(served.server.endpoints.http) as client:
        info = model_info(client.get_model_metadata("accumulate"), client.get_model_config("accumulate"))
    rng = np.random.default_rng(7)
    values = {71: rng.standard_normal(5).astype(np.float32), 72: rng.standard_normal(5).astype(np.float32)}
    batches = [{"x": np.array([[v]], dtype=np.float32)} for ids in values.values() for v in ids]
    target = resolve_target(served.url(protocol))
    if protocol == "http":
        requests: Any = HttpRequests(target, info, batches)
        connection: Any = HttpConnection(target, timeout=10.0)
    else:
        requests = GrpcRequests(info, batches)
        connection = GrpcConnection(GrpcChannel(target), timeout=10.0)
    try:
        for step in range(5):
            for order, sequence_id in enumerate(values):
                extra = requests.encode(sequence_parameters(sequence_id, step == 0, step == 4))
                reply = connection.reply(requests, order * 5 + step, extra)
                expected = np.cumsum(values[sequence_id], dtype=np.float32)[step]
                assert reply["step"].array.tolist() == [[step + 1]]
                assert reply["total"].array[0, 0] == pytest.approx(expected, rel=1e-6)
    finally:
        connection.close()


def test_streaming_reports_tokens_time_to_first_token_and_inter_token_latency(
    served: Served, tmp_path: Path
) -> None:
    served.mark()
    result = _loadtest(
        "--model", "streamer", "--url", served.url("grpc"), "--users", "2", "--param", "max_tokens=5",
        "--param", "token_delay_ms=2", *SHORT, "--out", "out", "--fail-if", "error_rate>0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = _report(tmp_path / "out")
    totals = report["totals"]
    assert totals["failures"] == 0 and totals["output_tokens"] == 5 * totals["requests"] > 0
    [run] = report["runs"]
    stream = run["stream"]
    assert stream["requests"] == run["requests"] and stream["tokens_per_request"] == 5.0
    assert stream["output_tokens"] == 5 * run["requests"]
    assert stream["tokens_per_s"] == pytest.approx(stream["output_tokens"] / run["window_s"], rel=1e-3)
    latency, ttft, itl = run["latency_ms"], stream["ttft_ms"], stream["itl_ms"]
    # each request's first token comes before its last response, so every percentile is below
    assert all(ttft[key] <= latency[key] for key in ("p50", "p90", "p99", "max"))
    assert 0 < itl["p50"] <= itl["p99"] <= itl["max"]
    assert (
        report["streaming"] == ["streamer"]
        and report["replies"]["streamer"]["text_output"]["datatype"] == "BYTES"
    )
    logged = served.since("streamer")
    served_whole = [r for r in logged if r["sent"] == 5]
    # the parameter that is not an input went as a request parameter
    assert {r["delay_ms"] for r in logged} == {2}
    # every request the harness recorded was served whole; the check request, and at most one in flight per
    # user when the run stopped, were served without being recorded
    assert totals["requests"] + 1 <= len(served_whole) <= len(logged) <= totals["requests"] + 3
    assert "TTFT" in result.stdout and "tokens/s" in result.stdout


def test_the_tokens_counted_are_those_the_model_streamed(served: Served) -> None:
    with httpclient.InferenceServerClient(served.server.endpoints.http) as client:
        info = model_info(client.get_model_metadata("streamer"), client.get_model_config("streamer"))
    prompts = [b"one", b"two words", b"the quick brown fox jumps over a lazy dog"]
    batches = [{"prompt": np.array([prompt], dtype=np.object_)} for prompt in prompts]
    connection = GrpcConnection(GrpcChannel(resolve_target(served.url("grpc"))), timeout=10.0)
    try:
        for index, prompt in enumerate(prompts):
            reader = connection.stream(GrpcRequests(info, batches, streaming=True), index, keep=True)
            words = [r.raw_output_contents[0][4:] for r in reader.responses]
            assert reader.final and reader.tokens == len(prompt.split()) and words == prompt.split()
    finally:
        connection.close()


class _Leave(Exception):
    """Raised by a stream's reader to drop the connection mid-stream."""


def _stubs(server: EmbeddedServer) -> set[int]:
    assert server.pid is not None
    return {child.pid for child in psutil.Process(server.pid).children(recursive=True)}


def test_a_client_that_leaves_mid_stream_leaves_the_server_healthy(served: Served) -> None:
    with httpclient.InferenceServerClient(served.server.endpoints.http) as client:
        info = model_info(client.get_model_metadata("streamer"), client.get_model_config("streamer"))
        batches = [
            {
                "prompt": np.array([b"a long answer"], dtype=np.object_),
                "max_tokens": np.array([400], np.int32),
            }
        ]
        requests = GrpcRequests(info, batches, {"token_delay_ms": 5}, streaming=True)
        stubs = _stubs(served.server)
        served.mark()
        host, port = served.server.endpoints.grpc.rsplit(":", 1)
        for _ in range(2):
            leaving = UnaryConnection(host, int(port), 10.0)
            reader = StreamReader()

            def sink(data: bytes, reader: StreamReader = reader) -> None:
                reader(data)
                if reader.tokens >= 3:
                    raise _Leave

            headers = request_headers(served.server.endpoints.grpc, MODEL_STREAM_INFER, 10.0)
            with pytest.raises(_Leave):  # the connection is closed mid-stream: 3 of 400 tokens read
                leaving.call(headers, requests.messages[0], sink=sink)
            assert reader.tokens >= 3 and not reader.final
        logged = settle(lambda: served.since("streamer"), lambda records: len(records) == 2, timeout=30)
        assert [r["cancelled"] for r in logged] == [True, True] and all(r["sent"] < 400 for r in logged)
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("streamer")
        assert _stubs(served.server) == stubs  # no stub died or was restarted
        client.unload_model("streamer")  # nothing of the cancelled requests holds the model
        index = settle(
            client.get_model_repository_index,
            lambda models: all(
                m.get("state") not in ("READY", "UNLOADING") for m in models if m["name"] == "streamer"
            ),
            timeout=60,
        )
        assert [m.get("state") for m in index if m["name"] == "streamer"] == ["UNAVAILABLE"]
        client.load_model("streamer")
    connection = GrpcConnection(GrpcChannel(resolve_target(served.url("grpc"))), timeout=10.0)
    try:
        whole = GrpcRequests(info, [{**batches[0], "max_tokens": np.array([4], np.int32)}], streaming=True)
        assert connection.stream(whole, 0).tokens == 4
    finally:
        connection.close()


def test_what_triton_refuses_of_these_models_is_a_one_line_error_before_any_load(
    served: Served, tmp_path: Path
) -> None:
    cases = [
        (
            ("--model", "streamer", "--url", served.url("http")),
            ("'streamer' is decoupled", "--protocol grpc"),
        ),
        (
            ("--model", "accumulate", "--url", served.url("grpc"), "--batch-size", "2"),
            ("'accumulate' is stateful", "--batch-size 1"),
        ),
        (("--model", "streamer", "--param", "sequence_id=3"), ("Triton's own request parameters",)),
        (
            ("--model", "accumulate", "--users", "4", "--sequence-id-range", "1:4"),
            ("gives 3 correlation IDs", "at least"),
        ),
    ]
    for args, expected in cases:
        result = _loadtest(*args, "--out", "out", cwd=tmp_path, timeout=60)
        assert result.returncode == 1, (args, result.stderr)
        [line] = _errors(result)
        assert line.startswith("error: ") and all(text in line for text in expected), line
        assert not (tmp_path / "out").exists()
