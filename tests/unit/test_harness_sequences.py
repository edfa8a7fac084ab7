"""Sequence and streaming modes of the harness, hermetic: the options, correlation IDs and lengths, request
parameters on the wire against tritonclient's own requests, the stream reader, and the figures they feed."""

from __future__ import annotations

import json
import random
import struct
from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from generator.core.errors import LoadTestError
from generator.loadtest.clients import GrpcRequests, HttpRequests
from generator.loadtest.grpcwire import _HeaderBlocks, grpc_message
from generator.loadtest.parameters import (
    ENABLE_EMPTY_FINAL,
    FINAL_RESPONSE,
    parse_params,
    sequence_parameters,
)
from generator.loadtest.payloads import make_batches, model_info
from generator.loadtest.recorder import ROW, Recorder, Records
from generator.loadtest.report.figures import FIGURE_NAMES, figure_value, sequence_figures, stream_figures
from generator.loadtest.report.gate import check_bounds, parse_bound
from generator.loadtest.report.write import summary_table
from generator.loadtest.sequences import SequenceIds, SequenceSettings, parse_id_range, sequence_model
from generator.loadtest.streaming import StreamReader
from generator.serve.control import Target

CONFIG = {
    "name": "accumulate",
    "max_batch_size": 4,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
    "sequence_batching": {
        "max_sequence_idle_microseconds": 5000000,
        "direct": {},
        "control_input": [
            {"name": "START", "control": [{"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}]},
            {"name": "CORRID", "control": [{"kind": "CONTROL_SEQUENCE_CORRID", "data_type": "TYPE_UINT64"}]},
        ],
        "state": [{"input_name": "h_in", "output_name": "h_out"}],
    },
}
METADATA = {
    "name": "accumulate",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [{"name": "total", "datatype": "FP32", "shape": [-1, 1]}],
}


def test_sequence_batching_is_read_from_the_config() -> None:
    sequence = sequence_model(CONFIG)
    assert sequence is not None and sequence.strategy == "direct" and not sequence.string_ids
    assert sequence.controls == ("START", "CORRID") and sequence.states == ("h_in",)
    assert sequence.idle_us == 5_000_000
    oldest = {"sequence_batching": {"oldest": {"max_candidate_sequences": 4}, "control_input": [
        {"name": "ID", "control": [{"kind": "CONTROL_SEQUENCE_CORRID", "data_type": "TYPE_STRING"}]}]}}  # fmt: skip
    read = sequence_model(oldest)
    assert read is not None and read.strategy == "oldest" and read.string_ids and read.idle_us is None
    assert sequence_model({"name": "plain"}) is None


def test_controls_and_implicit_state_are_never_inputs_a_client_sends() -> None:
    metadata = {
        **METADATA,
        "inputs": [*METADATA["inputs"], {"name": "START", "datatype": "INT32", "shape": [-1, 1]}],
    }
    info = model_info(metadata, CONFIG)
    assert [spec.name for spec in info.inputs] == ["x"] and info.sequence is not None and not info.decoupled
    decoupled = model_info(METADATA, {"model_transaction_policy": {"decoupled": True}})
    assert decoupled.decoupled and decoupled.sequence is None


@pytest.mark.parametrize(
    ("text", "expected"), [(None, (1, None)), ("5", (5, None)), ("10:20", (10, 19)), (" 3:4 ", (3, 3))]
)
def test_id_ranges(text: str | None, expected: tuple[int, int | None]) -> None:
    assert parse_id_range(text) == expected


@pytest.mark.parametrize("text", ["0", "a:b", "9:3", "3:3", "-1:4", "1:99999999999999999999"])
def test_bad_id_ranges_are_one_line_errors(text: str) -> None:
    with pytest.raises(LoadTestError, match=r"--sequence-id-range .*START:END"):
        parse_id_range(text)


def test_ids_are_distinct_across_processes_and_come_back_only_after_the_whole_share() -> None:
    shares = [SequenceIds(100, 129, index, 3) for index in range(3)]
    first = [[ids.next() for _ in range(10)] for ids in shares]
    everything = [i for ids in first for i in ids]
    assert sorted(everything) == list(range(100, 130))  # each process its tenth, no ID twice
    assert [shares[0].next() for _ in range(2)] == first[0][:2]  # then round again
    unbounded = SequenceIds(1, None)
    assert [unbounded.next() for _ in range(3)] == [1, 2, 3]


def test_lengths_follow_perf_analyzers_rule() -> None:
    rng = random.Random(0)
    fixed = SequenceSettings(length=7, variation_pct=0)
    assert {fixed.draw_length(rng) for _ in range(50)} == {7}
    varied = SequenceSettings(length=20, variation_pct=50)
    lengths = Counter(varied.draw_length(rng) for _ in range(5000))
    assert min(lengths) >= 10 and max(lengths) <= 30 and len(lengths) > 15
    assert abs(np.mean(list(lengths.elements())) - 20) < 0.5
    assert SequenceSettings(length=1, variation_pct=100).draw_length(random.Random(3)) >= 1


def test_bad_sequence_settings_are_refused() -> None:
    with pytest.raises(LoadTestError, match="--sequence-length must be at least 1"):
        SequenceSettings(length=0).check()
    with pytest.raises(LoadTestError, match="--sequence-length-variation must be 0 to 100"):
        SequenceSettings(variation_pct=150).check()
    with pytest.raises(LoadTestError, match="--sequences-per-user must be at least 1"):
        SequenceSettings(per_user=0).check()
    with pytest.raises(LoadTestError, match=r"gives 8 correlation IDs, but up to 12 sequences run at once"):
        SequenceSettings(id_start=1, id_end=8, per_user=3).check(users=4)


def test_params_are_typed_and_triton_keeps_its_own() -> None:
    assert parse_params(["max_tokens=16", "stream=true", "temperature=0.5", "stop=</s>", "x= 3"]) == {
        "max_tokens": 16, "stream": True, "temperature": 0.5, "stop": "</s>", "x": 3,
    }  # fmt: skip
    for bad, message in (
        ("novalue", "write NAME=VALUE"),
        ("sequence_id=3", "Triton's own request parameters"),
        ("triton_enable_empty_final_response=true", "Triton's own"),
    ):
        with pytest.raises(LoadTestError, match=message):
            parse_params([bad])
    with pytest.raises(LoadTestError, match="twice"):
        parse_params(["a=1", "a=2"])


def _http_inputs(batch: dict[str, np.ndarray]) -> list[httpclient.InferInput]:
    inputs = []
    for name, array in batch.items():
        tensor = httpclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return inputs


def test_http_sequence_requests_carry_what_tritonclient_sends() -> None:
    info = model_info(METADATA, CONFIG)
    batches = make_batches(info, 1, seed=3)
    target = Target("http", "127.0.0.1", 8000)
    requests = HttpRequests(target, info, batches, {"temperature": 0.5})
    for sequence_id, start, end in ((7, True, False), (2**40, False, False), (9, False, True)):
        message = requests.message(1, requests.encode(sequence_parameters(sequence_id, start, end)))
        head, _, body = message.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        size = int(headers["Inference-Header-Content-Length"])
        assert int(headers["Content-Length"]) == len(body)
        outputs = [httpclient.InferRequestedOutput("total", binary_data=True)]
        expected, expected_size = httpclient.InferenceServerClient.generate_request_body(
            _http_inputs(batches[1]), outputs=outputs, sequence_id=sequence_id, sequence_start=start,
            sequence_end=end, parameters={"temperature": 0.5},
        )  # fmt: skip
        assert json.loads(body[:size]) == json.loads(expected[:expected_size])
        assert body[size:] == expected[expected_size:]
    assert requests.messages[0].startswith(
        b"POST /v2/models/accumulate/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    )


def test_grpc_sequence_requests_carry_what_tritonclient_sends() -> None:
    info = model_info(METADATA, CONFIG)
    batches = make_batches(info, 1, seed=3)
    requests = GrpcRequests(info, batches, {"temperature": 0.5})
    for sequence_id in (7, "seven"):
        extra = requests.encode(sequence_parameters(sequence_id, True, False))
        message = requests.message(2, extra)
        sent = service_pb2.ModelInferRequest.FromString(message[5:])
        tensor = grpcclient.InferInput("x", [1, 1], "FP32")
        tensor.set_data_from_numpy(batches[2]["x"])
        expected = _get_inference_request(
            "accumulate", [tensor], "", "", [grpcclient.InferRequestedOutput("total")], sequence_id, True,
            False, 0, None, {"temperature": 0.5},
        )  # fmt: skip
        assert sent == expected
        assert message == grpc_message(message[5:])


def test_streaming_requests_ask_for_the_empty_final_response() -> None:
    info = model_info(
        {"name": "gen", "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1]},
                                   {"name": "max_tokens", "datatype": "INT32", "shape": [1]},
                                   {"name": "stream", "datatype": "BOOL", "shape": [1]}],
         "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]},
        {"max_batch_size": 0, "model_transaction_policy": {"decoupled": True},
         "input": [{"name": "max_tokens", "optional": True}]},
    )  # fmt: skip
    generated = make_batches(info, 1)[0]
    assert set(generated) == {"prompt", "stream"} and generated["stream"].tolist() == [True]
    batches = make_batches(info, 1, values={"max_tokens": 16, "top_k": 2})
    assert batches[0]["max_tokens"].tolist() == [16] and batches[0]["max_tokens"].dtype == np.int32
    request = service_pb2.ModelInferRequest.FromString(
        GrpcRequests(info, batches, streaming=True).messages[0][5:]
    )
    assert request.parameters[ENABLE_EMPTY_FINAL].bool_param is True
    assert {t.name for t in request.inputs} == {"prompt", "max_tokens", "stream"}
    with pytest.raises(
        LoadTestError, match="--param max_tokens=many: the model's input 'max_tokens' is INT32"
    ):
        make_batches(info, 1, values={"max_tokens": "many"})


def _response(tokens: list[bytes] | None, final: bool, error: str = "") -> bytes:
    response = service_pb2.ModelStreamInferResponse(error_message=error)
    infer = response.infer_response
    infer.model_name = "gen"
    for token in tokens or []:
        output = infer.outputs.add()
        output.name, output.datatype = "text_output", "BYTES"
        output.shape.append(1)
        infer.raw_output_contents.append(struct.pack("<I", len(token)) + token)
    infer.parameters[FINAL_RESPONSE].bool_param = final
    return grpc_message(response.SerializeToString())


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_the_stream_reader_counts_tokens_and_stops_at_the_final_response(piece: int) -> None:
    stream = b"".join([_response([b"a"], False), _response([b"bb"], False), _response([b"c"], False),
                       _response(None, True), _response([b"late"], False)])  # fmt: skip
    reader = StreamReader(keep=True)
    ended_at = None
    for offset in range(0, len(stream), piece):
        if reader(stream[offset : offset + piece]):
            ended_at = offset
            break
    assert ended_at is not None and reader.final and reader.tokens == 3 and reader.error is None
    assert [r.raw_output_contents[0][4:] for r in reader.responses] == [b"a", b"bb", b"c"]
    assert reader.first <= reader.last and reader.ttft_ms(reader.first - 0.002) == pytest.approx(2.0)
    assert reader.itl_ms() == pytest.approx((reader.last - reader.first) * 1000 / 2)
    last_with_tokens = StreamReader()
    assert (
        last_with_tokens(_response([b"x"], False) + _response([b"y"], True)) and last_with_tokens.tokens == 2
    )
    failed = StreamReader()
    assert failed(_response(None, False, error="boom")) and failed.error == "boom" and failed.tokens == 0
    assert np.isnan(failed.ttft_ms(0.0)) and np.isnan(failed.itl_ms())


def _rows(entries: list[dict]) -> np.ndarray:
    recorder = Recorder()
    for entry in entries:
        context = {"inferences": 1, **{k: v for k, v in entry.items() if k != "error"}}
        recorder.on_request("grpc", "m", 1.5, 10, RuntimeError("x") if entry.get("error") else None, context)
    records = Records(["m"])
    records.add_chunk(recorder.take_chunk())
    return records.rows


def test_sequence_figures_count_sequences_that_ended_in_the_window() -> None:
    ended = {"sequence": 1, "sequence_ms": 10.0, "sequence_length": 3}
    longer = {"sequence": 1, "sequence_ms": 20.0, "sequence_length": 5}
    rows = _rows([{}, {}, ended, longer, {"error": True, "sequence": 1}])
    assert rows.dtype == ROW
    figures = sequence_figures(rows, 2.0)
    assert figures["completed"] == 2 and figures["failed"] == 1 and figures["per_s"] == 1.0
    assert figures["error_rate"] == pytest.approx(1 / 3) and figures["length_mean"] == 4.0
    assert figures["latency_ms"]["p50"] == 15.0 and figures["latency_ms"]["max"] == 20.0
    empty = sequence_figures(rows[:0], 1.0)
    assert empty["completed"] == 0 and empty["latency_ms"]["p99"] is None


def test_requests_that_closed_sequences_at_the_stop_are_in_no_window() -> None:
    """A closing request (``closing`` 1: one more request with END for a sequence still going when its user
    stopped) is kept in the records for the whole test's totals, apart from completed sequences, and left out
    of every window's rows, even one its completion time falls in."""
    ended = {"sequence": 1, "sequence_ms": 10.0, "sequence_length": 3}
    recorder = Recorder()
    for context in ({}, ended, {"closing": 1}, {"closing": 1}):
        recorder.on_request("http", "m", 1.5, 10, None, {"inferences": 2, **context})
    records = Records(["m"])
    records.add_chunk(recorder.take_chunk())
    rows = records.rows
    assert rows["closing"].tolist() == [0, 0, 1, 1] and rows["inferences"].sum() == 8
    assert rows["sequence"].tolist() == [0, 1, 0, 0]
    window = records.between(rows["end"][0], rows["end"][-1] + 1.0)
    assert len(window) == 2 and not window["closing"].any()
    assert sequence_figures(window, 1.0)["completed"] == 1


def test_stream_figures_are_genai_perfs() -> None:
    rows = _rows(
        [
            {"ttft_ms": 2.0, "itl_ms": 1.0, "tokens": 5},
            {"ttft_ms": 4.0, "itl_ms": float("nan"), "tokens": 1},
            {"ttft_ms": float("nan"), "itl_ms": float("nan"), "tokens": 0, "error": True},
        ]
    )
    figures = stream_figures(rows, 2.0)
    assert figures["requests"] == 2 and figures["output_tokens"] == 6 and figures["tokens_per_s"] == 3.0
    assert figures["tokens_per_request"] == 3.0 and figures["ttft_ms"]["p50"] == 3.0
    assert figures["itl_ms"]["p50"] == 1.0 and figures["itl_ms"]["max"] == 1.0


def test_sequence_and_stream_figures_reach_the_gate_and_the_summary() -> None:
    assert {"sequences_per_s", "seq_p99_ms", "ttft_p99_ms", "itl_p50_ms", "output_tokens_per_s"} <= set(
        FIGURE_NAMES
    )
    run = {
        "users": 2,
        "throughput": 10.0,
        "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 2.0},
        "error_rate": 0.0,
        "sequences": {"per_s": 3.0, "error_rate": 0.0, "latency_ms": {"p50": 10.0, "p90": 12.0, "p99": 30.0}},
        "stream": None,
    }
    assert figure_value(run, "seq_p99_ms") == 30.0 and figure_value(run, "ttft_p50_ms") is None
    assert check_bounds([parse_bound("seq_p99_ms>25")], [run]) == [
        "seq_p99_ms>25 breached: seq_p99_ms = 30 at 2 users"
    ]
    assert check_bounds([parse_bound("ttft_p99_ms>25")], [run]) == [
        "ttft_p99_ms>25 cannot be checked: it was not measured"
    ]
    headers, rows = summary_table({"runs": [run]})
    assert "sequences/s" in headers and "TTFT p50 ms" not in headers
    assert rows[0][headers.index("seq p99 ms")] == "30.00"


def test_remembered_header_blocks_decode_as_hpack_does() -> None:
    """The connection's header decoding, which skips blocks it has seen while the dynamic table stays the
    same, against hpack's own decoder on the same blocks: a server's headers and trailers, repeated, with
    new fields, a table size update and evictions among them."""
    from hpack import Decoder, Encoder

    rng = random.Random(5)
    encoder = Encoder()
    encoder.header_table_size = 256
    headers = [(":status", "200"), ("content-type", "application/grpc")]
    trailers = [("grpc-status", "0")]
    blocks = []
    for step in range(400):
        kind = rng.random()
        if kind < 0.4:
            fields = headers
        elif kind < 0.8:
            fields = trailers
        elif kind < 0.95:
            fields = [("grpc-status", "3"), ("grpc-message", f"error {rng.randrange(40)}")]
        else:
            fields = [("x-step", str(step)), *headers]
        blocks.append(encoder.encode(fields))
        if step == 200:
            encoder.header_table_size = 128
    remembered, reference = _HeaderBlocks(), Decoder()
    skipped = 0
    for block in blocks:
        skipped += block in remembered._known
        assert remembered.decode(block) == reference.decode(block, raw=True)
    assert skipped > 100  # most repeated blocks were not decoded again


def test_a_decoupled_models_optional_inputs_of_variable_dims_are_left_out_without_a_shape() -> None:
    """The generate step's `stop` (BYTES [-1], optional) needs no --shape: it is left out of the requests,
    so the model takes its own default; a --shape brings it back. (Before, loadtest asked for --shape.)"""
    info = model_info(
        {"name": "gen", "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]},
                                   {"name": "stop", "datatype": "BYTES", "shape": [-1]}],
         "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}]},
        {"max_batch_size": 0, "model_transaction_policy": {"decoupled": True},
         "input": [{"name": "stop", "optional": True}]},
    )  # fmt: skip
    assert set(make_batches(info, 1)[0]) == {"text_input"}
    assert make_batches(info, 1, shapes={"stop": (2,)})[0]["stop"].shape == (2,)
