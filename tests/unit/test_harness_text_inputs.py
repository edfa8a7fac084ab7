"""Hermetic pieces of the harness for pipelines: text (STRING) tensors, safe integer defaults, ``--shape``,
data files with text (.txt, JSON, .npz), the steps of an ensemble and their figures."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generator.core.errors import LoadTestError
from generator.loadtest.datafiles import UNNAMED, load_payload_samples
from generator.loadtest.metrics import step_figures
from generator.loadtest.payloads import check_input_shapes, make_batches, model_info, parse_input_shapes
from generator.loadtest.pipelines import Step, pipeline_steps
from generator.loadtest.report.figures import pipeline_figures
from generator.loadtest.report.write import render_html, steps_table


def _model(inputs: list[dict[str, Any]], max_batch_size: int = 8, name: str = "m") -> Any:
    metadata = {
        "name": name,
        "inputs": [{**i, "shape": ([-1] if max_batch_size else []) + i["shape"]} for i in inputs],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    return model_info(metadata, {"name": name, "max_batch_size": max_batch_size})


TEXT = _model([{"name": "TEXT", "datatype": "BYTES", "shape": [1]}])
MIXED = _model(
    [
        {"name": "x", "datatype": "FP32", "shape": [3]},
        {"name": "ids", "datatype": "INT64", "shape": [4]},
        {"name": "flag", "datatype": "BOOL", "shape": [1]},
        {"name": "label", "datatype": "BYTES", "shape": [2]},
    ]
)
VARIABLE = _model([{"name": "input_ids", "datatype": "INT64", "shape": [-1]}])


# --- generated inputs ---------------------------------------------------------------------------------


def test_generated_text_is_a_few_ascii_words_fixed_by_the_seed() -> None:
    batches = make_batches(TEXT, 4, seed=3, variants=2)
    text = batches[0]["TEXT"]
    assert text.shape == (4, 1) and text.dtype == np.object_
    words = [value.split(b" ") for value in text.reshape(-1)]
    assert all(isinstance(v, bytes) and v.isascii() for v in text.reshape(-1))
    assert all(2 <= len(w) <= 6 and all(part.isalpha() for part in w) for w in words)
    assert make_batches(TEXT, 4, seed=3, variants=2)[1]["TEXT"].tolist() == batches[1]["TEXT"].tolist()
    assert make_batches(TEXT, 4, seed=4, variants=2)[0]["TEXT"].tolist() != text.tolist()


def test_integers_default_to_zero_and_floats_stay_seeded_random() -> None:
    [batch] = make_batches(MIXED, 2, seed=5, variants=1)
    assert batch["ids"].dtype == np.int64 and not batch["ids"].any()
    assert batch["flag"].dtype == np.bool_ and batch["label"].shape == (2, 2)
    # floats come from the same seeded stream as before integers stopped being random
    rng = np.random.default_rng([5, zlib.crc32(b"m")])
    assert np.array_equal(batch["x"], rng.standard_normal((2, 3)).astype(np.float32))


# --- --shape ------------------------------------------------------------------------------------------


def test_shapes_parse_like_perf_analyzer() -> None:
    assert parse_input_shapes(["input_ids:16", "m/image:3,8,8"]) == {"input_ids": (16,), "m/image": (3, 8, 8)}
    assert parse_input_shapes(None) == {}
    for bad in ("input_ids", "input_ids:", ":4", "x:0", "x:a,b", "x:-1"):
        with pytest.raises(LoadTestError, match="write NAME:DIMS"):
            parse_input_shapes([bad])
    with pytest.raises(LoadTestError, match="twice"):
        parse_input_shapes(["x:1", "x:2"])


def test_a_variable_input_takes_its_shape_or_says_how_to_give_one() -> None:
    with pytest.raises(
        LoadTestError, match=r"pass --shape input_ids:DIMS \(e\.g\. --shape input_ids:16\).*--data"
    ):
        make_batches(VARIABLE, 1)
    batches = make_batches(VARIABLE, 2, shapes={"input_ids": (12,)})
    assert batches[0]["input_ids"].shape == (2, 12) and not batches[0]["input_ids"].any()
    assert make_batches(VARIABLE, 1, shapes={"m/input_ids": (5,)})[0]["input_ids"].shape == (1, 5)
    with pytest.raises(LoadTestError, match=r"give one dim per axis \(1\)"):
        make_batches(VARIABLE, 1, shapes={"input_ids": (4, 4)})
    with pytest.raises(LoadTestError, match="only its -1 axes take another size"):
        make_batches(TEXT, 1, shapes={"TEXT": (2,)})
    check_input_shapes({"input_ids": (3,), "m/input_ids": (3,)}, [VARIABLE])
    with pytest.raises(
        LoadTestError, match=r"no model of this test has an input 'ids' \(inputs: m/input_ids\)"
    ):
        check_input_shapes({"ids": (3,)}, [VARIABLE])


# --- data files with text -----------------------------------------------------------------------------


def test_a_txt_file_feeds_a_model_with_one_string_input(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes("héllo world\r\n\nsecond line \nthird".encode())
    samples = load_payload_samples(tmp_path / "t.txt")
    assert list(samples) == [UNNAMED]
    assert samples[UNNAMED].tolist() == ["héllo world".encode(), b"second line ", b"third"]
    batches = make_batches(TEXT, 2, samples=samples)
    assert [b["TEXT"].tolist() for b in batches] == [
        [["héllo world".encode()], [b"second line "]],
        [[b"third"], ["héllo world".encode()]],
    ]
    assert make_batches(VARIABLE, 1, samples={UNNAMED: np.array([[1, 2, 3]])})[0]["input_ids"].shape == (1, 3)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(LoadTestError, match="no lines of text"):
        load_payload_samples(tmp_path / "empty.txt")


def test_unnamed_samples_need_a_model_with_one_input_of_their_kind(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("a\nb\n")
    samples = load_payload_samples(tmp_path / "t.txt")
    with pytest.raises(LoadTestError, match=r"name no input.*model 'm' has inputs x \(FP32\), ids \(INT64\)"):
        make_batches(MIXED, 1, samples=samples)
    with pytest.raises(LoadTestError, match="are text, but the input is INT64; give numbers"):
        make_batches(VARIABLE, 1, samples=samples)


def test_json_text_in_every_accepted_form(tmp_path: Path) -> None:
    forms = {
        "list": ["one two", "three"],
        "columns": {"TEXT": ["one two", "three"]},
        "perf_analyzer": {"data": [{"TEXT": ["one two"]}, {"TEXT": ["three"]}]},
        "with_shape": {
            "data": [{"TEXT": {"content": ["one two"], "shape": [1]}}, {"TEXT": {"content": ["three"]}}]
        },
        "model_key": {"m/TEXT": [["one two"], ["three"]]},
    }
    for name, document in forms.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
        batches = make_batches(TEXT, 1, samples=load_payload_samples(tmp_path / f"{name}.json"))
        assert [b["TEXT"].tolist() for b in batches] == [[[b"one two"]], [[b"three"]]], name


def test_json_mismatches_are_one_line_errors(tmp_path: Path) -> None:
    cases = [
        (
            {"data": [{"TEXT": [1, 2]}]},
            TEXT,
            r"are numbers \(int64\), but the input is STRING \(text\); give strings",
        ),
        ({"data": [{"WORDS": ["a"]}]}, TEXT, r"no samples for input 'TEXT' of model 'm' \(it has: WORDS\)"),
        (
            {"data": [{"TEXT": {"b64": "YQ=="}}]},
            TEXT,
            r"data\[0\]\.TEXT: 'b64' of a STRING input must be Triton's serialized BYTES .* too few for its "
            "4-byte length",
        ),
        ({"data": [{"TEXT": {"shape": [1]}}]}, TEXT, "needs 'content' or 'b64'"),
        ({"data": [{"TEXT": {"b64": "not base64!"}}]}, TEXT, "'b64' is not base64"),
        (
            {"data": [{"TEXT": {"content": ["a", "b", "c"], "shape": [2]}}]},
            TEXT,
            r"does not fill 'shape' \[2\]",
        ),
        ({"data": [{"TEXT": ["a"]}, {"TEXT": [1]}]}, TEXT, "mix text and numbers"),
        ({"TEXT": [["a", None]]}, TEXT, "not rectangular or mix text, numbers and nulls"),
        ({"TEXT": []}, TEXT, "an empty list"),
    ]
    for index, (document, info, message) in enumerate(cases):
        path = tmp_path / f"{index}.json"
        path.write_text(json.dumps(document))
        with pytest.raises(LoadTestError, match=message):
            make_batches(info, 1, samples=load_payload_samples(path))


def test_variable_length_samples_batch_only_when_their_shapes_agree(tmp_path: Path) -> None:
    document = {
        "data": [
            {"input_ids": {"content": [1, 2, 3], "shape": [3]}},
            {"input_ids": {"content": [4, 5, 6, 7, 8], "shape": [5]}},
            {"input_ids": [9, 9, 9, 9, 9]},
        ]
    }
    (tmp_path / "ragged.json").write_text(json.dumps(document))
    samples = load_payload_samples(tmp_path / "ragged.json")
    batches = make_batches(VARIABLE, 1, samples=samples)
    assert [b["input_ids"].tolist() for b in batches] == [[[1, 2, 3]], [[4, 5, 6, 7, 8]], [[9, 9, 9, 9, 9]]]
    assert batches[0]["input_ids"].dtype == np.int64
    with pytest.raises(
        LoadTestError, match=r"samples 0-1 of input 'input_ids'.*differ in shape \(\[3\], \[5\]\)"
    ):
        make_batches(VARIABLE, 2, samples=samples)
    document["data"] = document["data"][1:]
    (tmp_path / "paired.json").write_text(json.dumps(document))
    [batch] = make_batches(VARIABLE, 2, samples=load_payload_samples(tmp_path / "paired.json"))
    assert batch["input_ids"].shape == (2, 5)


def test_npz_text_arrays_are_read_and_pickles_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "u.npz", TEXT=np.array(["ünï", "b"]))
    np.savez(tmp_path / "s.npz", **{"m/TEXT": np.array([[b"x y"], [b"z"]])})
    for name, expected in (("u", [[["ünï".encode()]], [[b"b"]]]), ("s", [[[b"x y"]], [[b"z"]]])):
        batches = make_batches(TEXT, 1, samples=load_payload_samples(tmp_path / f"{name}.npz"))
        assert [b["TEXT"].tolist() for b in batches] == expected
    np.savez(tmp_path / "o.npz", TEXT=np.array([b"a", b"b"], dtype=np.object_))
    with pytest.raises(LoadTestError, match=r"holds Python objects.*np.array\(texts, dtype=str\)"):
        load_payload_samples(tmp_path / "o.npz")
    np.savez(tmp_path / "n.npz", TEXT=np.arange(3))
    with pytest.raises(LoadTestError, match="are numbers"):
        make_batches(TEXT, 1, samples=load_payload_samples(tmp_path / "n.npz"))


# --- ensembles ----------------------------------------------------------------------------------------


def _ensemble(*steps: str) -> dict[str, Any]:
    return {
        "platform": "ensemble",
        "ensemble_scheduling": {"step": [{"model_name": s, "model_version": "-1"} for s in steps]},
    }


CONFIGS = {
    "outer": _ensemble("inner", "post"),
    "inner": _ensemble("tokenizer", "classifier", "tokenizer"),
    "tokenizer": {"backend": "python"},
    "classifier": {"platform": "onnxruntime_onnx"},
    "post": {"backend": "python"},
}


def test_pipeline_steps_walk_nested_ensembles_in_order() -> None:
    asked: list[str] = []

    def config_of(name: str) -> dict[str, Any]:
        asked.append(name)
        return CONFIGS[name]

    steps = pipeline_steps("outer", config_of)
    assert steps == (
        Step("inner", -1, "outer", 1, True),
        Step("tokenizer", -1, "inner", 2, False, calls=2),
        Step("classifier", -1, "inner", 2, False),
        Step("post", -1, "outer", 1, False),
    )
    assert sorted(asked) == sorted(CONFIGS)  # each config read once
    with pytest.raises(LoadTestError, match=r"runs in a cycle \(loop > loop\)"):
        pipeline_steps("loop", {"loop": _ensemble("loop")}.__getitem__)


def _stats(requests: int, executions: int, queue_us: float, infer_us: float) -> dict[str, int]:
    return {
        "inference_count": requests,
        "execution_count": executions,
        "success_count": requests,
        "fail_count": 0,
        "queue_count": requests,
        "queue_ns": int(requests * queue_us * 1000),
        "compute_infer_count": requests,
        "compute_infer_ns": int(requests * infer_us * 1000),
    }


def test_step_figures_name_the_bottleneck_per_pipeline_request() -> None:
    steps = pipeline_steps("outer", CONFIGS.__getitem__)
    zero = {name: _stats(0, 0, 0, 0) for name in ("outer", *CONFIGS)}
    after = {
        "outer": _stats(100, 100, 1, 900),
        "inner": _stats(100, 100, 1, 700),
        "tokenizer": _stats(200, 50, 10, 100),  # run twice per request: 220 us per pipeline request
        "classifier": _stats(100, 25, 50, 150),  # 200 us
        "post": _stats(100, 100, 5, 25),  # 30 us
    }
    [section] = step_figures(zero, after, {"outer": steps})
    assert section["ensemble"] == "outer" and section["requests"] == 100 and section["end_to_end_us"] == 901
    assert section["bottleneck"] == "tokenizer"
    rows = {row["model"]: row for row in section["steps"]}
    assert rows["tokenizer"]["avg_batch_size"] == 4.0 and rows["tokenizer"]["step_us"] == pytest.approx(220)
    assert rows["inner"]["kind"] == "ensemble" and rows["inner"]["share"] is None
    assert rows["classifier"]["share"] == pytest.approx(200 / 450)
    assert sum(r["share"] for r in section["steps"] if r["share"]) == pytest.approx(1.0)
    assert step_figures(zero, after, {}) == []

    idle = pipeline_figures("outer", {"success_count": 0}, [{"model": "a", "kind": "model", "calls": 1}])
    assert idle["bottleneck"] is None and idle["steps"][0]["share"] is None

    report = {"models": [{"name": "outer", "weight": 1.0}], "runs": [{"users": 2, "steps": [section]}]}
    headers, table = steps_table(report)
    assert headers[:3] == ["users", "ensemble", "step"] and len(table) == 4
    assert (
        table[1][2] == "  tokenizer (x2)"
        and table[1][-1] == "bottleneck"
        and table[0][2] == "inner (ensemble)"
    )
    assert steps_table({"runs": [{"users": 1}]})[1] == []
    html = render_html(report)
    assert "Pipeline steps" in html and "tokenizer (x2)" in html and "bottleneck</strong>" in html


def test_base64_samples_take_the_inputs_dtype_as_perf_analyzer_writes_them(tmp_path: Path) -> None:
    import ml_dtypes

    info = _model(
        [
            {"name": "half", "datatype": "FP16", "shape": [2, 2]},
            {"name": "brain", "datatype": "BF16", "shape": [3]},
            {"name": "ids", "datatype": "INT64", "shape": [-1]},
        ]
    )
    half = np.array([[1.5, -2.0], [0.25, 8.0]], dtype=np.float16)
    brain = np.array([1.0, -0.5, 3.0], dtype=ml_dtypes.bfloat16)
    ids = np.array([3, 1, 4, 1], dtype=np.int64)
    entry = {
        "half": {"b64": base64.b64encode(half.tobytes()).decode(), "shape": [2, 2]},
        "brain": {"b64": base64.b64encode(brain.tobytes()).decode(), "shape": [3]},
        "ids": {"b64": base64.b64encode(ids.tobytes()).decode()},  # no shape: a flat run of values
    }
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [entry, entry]}))
    batches = make_batches(info, 2, samples=load_payload_samples(path))
    assert batches[0]["half"].dtype == np.float16 and batches[0]["half"].shape == (2, 2, 2)
    np.testing.assert_array_equal(batches[0]["half"][1], half)
    np.testing.assert_array_equal(batches[0]["brain"][0].astype(np.float32), brain.astype(np.float32))
    np.testing.assert_array_equal(batches[0]["ids"][0], ids)
    entry["half"] = {"b64": base64.b64encode(half.astype(np.float32).tobytes()).decode(), "shape": [2, 2]}
    path.write_text(json.dumps({"data": [entry]}))
    with pytest.raises(
        LoadTestError,
        match=r"data\[0\]\.half: 'b64' holds 8 FP16 values \(16 bytes\), but 'shape' \[2, 2\] takes 4",
    ):
        make_batches(info, 1, samples=load_payload_samples(path))
    entry["half"] = {"b64": base64.b64encode(b"12345").decode(), "shape": [2, 2]}
    path.write_text(json.dumps({"data": [entry]}))
    with pytest.raises(
        LoadTestError, match="'b64' holds 5 bytes, not a whole number of FP16 values \\(2 bytes"
    ):
        make_batches(info, 1, samples=load_payload_samples(path))


# --- every perf_analyzer JSON form, and malformed ones ----------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _serialized(values: list[bytes]) -> bytes:
    """Triton's serialized BYTES, by tritonclient's own serializer (what perf_analyzer's 'b64' holds)."""
    from tritonclient.utils import serialize_byte_tensor

    return serialize_byte_tensor(np.array(values, dtype=np.object_)).item()


BINARY = _model(
    [{"name": "blob", "datatype": "BYTES", "shape": [1]}, {"name": "pair", "datatype": "BYTES", "shape": [2]}]
)
X = [[0.5, -1.0, 2.25], [1.0, 2.0, -3.5]]
IDS = [[1, 2, 3, 4], [5, 6, 7, 8]]
FLAG = [[True], [False]]
LABEL = [["a", "bé"], ["c", ""]]


def _mixed_forms() -> dict[str, Any]:
    """The same two samples of MIXED in every form perf_analyzer (and the harness) reads."""
    arrays = [{"x": X[i], "ids": IDS[i], "flag": FLAG[i], "label": LABEL[i]} for i in range(2)]
    content = [
        {
            "x": {"content": X[i], "shape": [3]},
            "ids": {"content": [IDS[i][:2], IDS[i][2:]], "shape": [4]},  # nested content, flattened by shape
            "flag": {"content": FLAG[i]},
            "label": {"content": LABEL[i], "shape": [2]},
        }
        for i in range(2)
    ]
    b64 = [
        {
            "x": {"b64": _b64(np.array(X[i], "<f4").tobytes()), "shape": [3]},
            "ids": {"b64": _b64(np.array(IDS[i], "<i8").tobytes())},  # no shape: a flat run of values
            "flag": {"b64": _b64(np.array(FLAG[i], np.bool_).tobytes()), "shape": [1]},
            "label": {"b64": _b64(_serialized([s.encode() for s in LABEL[i]])), "shape": [2]},
        }
        for i in range(2)
    ]
    return {
        "arrays": {"data": arrays},
        "content": {"data": content},
        "b64": {"data": b64},
        "mixed": {"data": [b64[0], content[1]]},
        "streams": {"data": [[arrays[0]], [b64[1]]]},
        "model_keys": {"data": [{f"m/{k}": v for k, v in entry.items()} for entry in content]},
        "columns": {key: [b64[0][key], arrays[1][key]] for key in arrays[0]},
    }


def test_every_perf_analyzer_form_gives_the_same_requests(tmp_path: Path) -> None:
    expected = {
        "x": np.array(X, np.float32),
        "ids": np.array(IDS, np.int64),
        "flag": np.array(FLAG),
        "label": np.array([[s.encode() for s in row] for row in LABEL], dtype=np.object_),
    }
    for name, document in _mixed_forms().items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        [batch] = make_batches(MIXED, 2, samples=load_payload_samples(path))
        for key, values in expected.items():
            assert batch[key].dtype == values.dtype, (name, key)
            assert batch[key].tolist() == values.tolist(), (name, key)


def test_base64_strings_are_tritons_serialized_bytes_and_may_differ_in_length(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blobs = [rng.bytes(n) for n in (3, 200, 0, 57)]  # binary strings: any byte, NUL too, of any length
    pairs = [[rng.bytes(n), rng.bytes(m)] for n, m in ((1, 9), (30, 2), (5, 5), (0, 70))]
    data = [
        {"blob": {"b64": _b64(_serialized([blob])), "shape": [1]}, "pair": {"b64": _b64(_serialized(pair))}}
        for blob, pair in zip(blobs, pairs, strict=True)
    ]
    (tmp_path / "ragged.json").write_text(json.dumps({"data": data}))
    batches = make_batches(BINARY, 2, samples=load_payload_samples(tmp_path / "ragged.json"))
    assert [b["blob"].tolist() for b in batches] == [[[blobs[0]], [blobs[1]]], [[blobs[2]], [blobs[3]]]]
    assert [b["pair"].tolist() for b in batches] == [pairs[:2], pairs[2:]]
    assert all(b["blob"].dtype == np.object_ and b["pair"].shape == (2, 2) for b in batches)


def test_malformed_perf_analyzer_files_are_one_line_errors_naming_the_file_and_the_sample(
    tmp_path: Path,
) -> None:
    serialized = _serialized([b"abc"])
    cases = [
        (
            {"data": [{"TEXT": {"b64": 5}}]},
            TEXT,
            r"data\[0\]\.TEXT: 'b64' must be a string of base64, not int",
        ),
        ({"data": [{"TEXT": {"b64": "@@"}}]}, TEXT, r"data\[0\]\.TEXT: 'b64' is not base64"),
        (
            {"data": [{"TEXT": ["a"]}, {"TEXT": {"b64": _b64(serialized[:-1])}}]},
            TEXT,
            r"data\[1\]\.TEXT: 'b64' of a STRING input must be Triton's serialized BYTES .*, but element 0 "
            r"claims 3 bytes, but 2 remain",
        ),
        (
            {"data": [{"TEXT": {"b64": _b64(serialized + b"\x00")}}]},
            TEXT,
            r"but element 1 starts 1 byte\(s\) before the end, too few for its 4-byte length",
        ),
        (
            {"data": [{"TEXT": {"b64": _b64(_serialized([b"a", b"b"])), "shape": [1]}}]},
            TEXT,
            r"data\[0\]\.TEXT: 'b64' holds 2 strings, but 'shape' \[1\] takes 1",
        ),
        (
            {"data": [{"TEXT": {"content": ["a"], "shape": "1"}}]},
            TEXT,
            r"'shape' \"1\" is not a list of sizes",
        ),
        (
            {"data": [{"TEXT": {"content": ["a"], "shape": [-1]}}]},
            TEXT,
            r"'shape' \[-1\] is not a list of sizes",
        ),
        (
            {"data": [{"TEXT": {"b64": "YQ==", "shape": [1.5]}}]},
            TEXT,
            r"'shape' \[1.5\] is not a list of sizes",
        ),
        ({"data": [{"TEXT": ["a"]}, 7]}, TEXT, r"data\[1\] must be an object of input name -> values"),
        (
            {"data": [[{"TEXT": ["a"]}, "x"]]},
            TEXT,
            r"data\[0\]\[1\] must be an object of input name -> values",
        ),
        (
            {"data": [{"input_ids": {"b64": _b64(b"1234567")}}]},
            VARIABLE,
            r"data\[0\]\.input_ids: 'b64' holds 7 bytes, not a whole number of INT64 values \(8 bytes each\)",
        ),
        (
            {"data": [{"input_ids": [[1, 2], [3]]}]},
            VARIABLE,
            r"data\[0\]\.input_ids: the values are not rectangular",
        ),
        ({"input_ids": [{"a": 1}]}, VARIABLE, r"input_ids\[0\]: an object value needs 'content' or 'b64'"),
        ({}, VARIABLE, "must be "),
    ]
    for index, (document, info, message) in enumerate(cases):
        path = tmp_path / f"bad{index}.json"
        path.write_text(json.dumps(document))
        with pytest.raises(LoadTestError, match=message) as raised:
            make_batches(info, 1, samples=load_payload_samples(path))
        assert str(path) in str(raised.value) and "\n" not in str(raised.value), index


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """The paths of every value in a JSON document (containers too)."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _leaves(child, (*path, key))


def test_no_change_to_a_perf_analyzer_file_breaks_the_reader(tmp_path: Path) -> None:
    """Every value of valid files replaced by values of other kinds: the samples are read, or the file is
    refused with a LoadTestError, never another exception."""
    replacements = [None, True, -1, 2.5, "x", "", [], {}, [[1], [2, 3]], {"b64": "AAAA"}, {"content": []}]
    path = tmp_path / "changed.json"
    tried = 0
    for base in (_mixed_forms()["mixed"], _mixed_forms()["streams"]):
        for where in _leaves(base):
            for value in replacements:
                document = json.loads(json.dumps(base))
                if not where:
                    document = value
                else:
                    parent = document
                    for key in where[:-1]:
                        parent = parent[key]
                    parent[where[-1]] = value
                path.write_text(json.dumps(document))
                try:
                    make_batches(MIXED, 2, samples=load_payload_samples(path))
                except LoadTestError as error:
                    assert "\n" not in str(error)
                tried += 1
    assert tried > 300
