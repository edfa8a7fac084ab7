"""The inputs the tool makes up: integer ranges (spec, inferred from ONNX Gather tables, default), the
lengths of -1 axes, the warm-up they give, perf_analyzer's data file, and ONNX renaming."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from generator.build.config import DeviceProfile, build_config, check_rendered, render
from generator.build.exporters.naming import rename_io
from generator.build.exporters.onnx import OnnxExporter
from generator.build.input_values import (
    InputTensor,
    config_inputs,
    index_ranges,
    sample,
    shape_points,
    value_ranges,
    warmup_file_name,
)
from generator.build.parity import input_plan
from generator.build.sample_data import PERF_ANALYZER_DATA, step_samples, write_sample_data
from generator.core.errors import ExportError, SpecError
from generator.core.signature import Signature, TensorInfo, read_onnx_signature
from generator.core.templating import environment
from generator.spec.models import parse_spec
from generator.validate.run import validate_model_dir

from ..conftest import make_linear_onnx

IDS = InputTensor("input_ids", "INT64", (-1,))
MASK = InputTensor("attention_mask", "INT64", (-1,))


def _model(**extra: object):
    return parse_spec({"models": [{"name": "m", "framework": "onnx", "source": "m.onnx", **extra}]}).models[0]


def _save(path: Path, nodes: list, inputs: list, outputs: list, initializers: list) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _text_encoder(path: Path, vocab: int = 30, types: int = 2) -> Path:
    """ids -> Cast -> Unsqueeze -> Reshape -> Gather(words); type ids -> Gather(Constant types, axis 0);
    a mask that only multiplies: the shapes a BERT-like export shows."""
    words = numpy_helper.from_array(np.ones((vocab, 4), np.float32), "words")
    shape = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    type_table = helper.make_tensor("type_table", TensorProto.FLOAT, [types, 4], [0.5] * (types * 4))
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["ids64", "axes"], ["ids_u"]),
        helper.make_node("Reshape", ["ids_u", "flat"], ["ids_flat"]),
        helper.make_node("Gather", ["words", "ids_flat"], ["emb"]),
        helper.make_node("Constant", [], ["types"], value=type_table),
        helper.make_node("Gather", ["types", "type_ids"], ["temb"], axis=0),
        helper.make_node("ReduceSum", ["emb"], ["a"], keepdims=0),
        helper.make_node("ReduceSum", ["temb"], ["b"], keepdims=0),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["maskf"], ["c"], keepdims=0),
        helper.make_node("Sum", ["a", "b", "c"], ["y"]),
    ]
    int64 = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["s"])  # noqa: E731
    return _save(
        path,
        nodes,
        [int64("ids"), int64("type_ids"), int64("mask")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [words, shape, axes],
    )


def test_index_ranges_follow_ids_through_cast_unsqueeze_reshape_to_a_table(tmp_path: Path) -> None:
    path = _text_encoder(tmp_path / "m.onnx", vocab=30, types=2)
    assert index_ranges(path) == {"ids": (0, 29), "type_ids": (0, 1)}


def test_an_input_indexing_two_tables_takes_the_smaller_range_and_the_axis_counts(tmp_path: Path) -> None:
    big = numpy_helper.from_array(np.zeros((100, 2), np.float32), "big")
    small = numpy_helper.from_array(np.zeros((2, 7), np.float32), "small")
    nodes = [
        helper.make_node("Gather", ["big", "i"], ["a"]),
        helper.make_node("Gather", ["small", "j"], ["b"], axis=1),  # indexes small's 7 columns
        helper.make_node("Gather", ["small", "i"], ["c"]),
    ]
    path = _save(
        tmp_path / "m.onnx",
        nodes,
        [helper.make_tensor_value_info(n, TensorProto.INT64, [3]) for n in ("i", "j")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b", "c")],
        [big, small],
    )
    assert index_ranges(path) == {"i": (0, 1), "j": (0, 6)}


def test_value_ranges_prefer_the_spec_then_the_model_then_zero_to_one() -> None:
    model = _model(values={"input_ids": {"min": 5, "max": 999}})
    tensors = [IDS, MASK, InputTensor("flag", "BOOL", (1,)), InputTensor("x", "FP32", (4,))]
    inferred = {"input_ids": (0, 29), "attention_mask": (0, 9)}
    assert value_ranges("m", model, tensors, inferred) == {
        "input_ids": (5, 999),
        "attention_mask": (0, 9),
        "flag": (0, 1),
    }
    assert value_ranges("m", None, [MASK, InputTensor("u", "UINT8", (1,))], {"u": (0, 1000)}) == {
        "attention_mask": (0, 1),
        "u": (0, 255),  # an inferred range never leaves the dtype
    }


def test_values_for_an_unknown_or_a_float_input_are_refused() -> None:
    with pytest.raises(SpecError, match=r"values.ids names no input of the model \(it has input_ids\)"):
        value_ranges("m", _model(values={"ids": {"min": 0, "max": 3}}), [IDS])
    with pytest.raises(SpecError, match=r"values.x applies to integer inputs, but 'x' is FP32"):
        value_ranges("m", _model(values={"x": {"min": 0, "max": 3}}), [InputTensor("x", "FP32", (4,))])
    with pytest.raises(SpecError, match="min 4 is greater than max 3"):
        _model(values={"x": {"min": 4, "max": 3}})


def test_lengths_default_to_one_sixteen_sixty_four_and_tied_inputs_follow_the_one_given() -> None:
    defaults = shape_points("m", None, [IDS, MASK, InputTensor("x", "FP32", (3,))])
    assert [(p.label, p.shapes["input_ids"], p.shapes["attention_mask"]) for p in defaults] == [
        ("min", [1], [1]),
        ("opt", [16], [16]),
        ("max", [64], [64]),
    ]
    assert all(p.shapes["x"] == [3] and "x" not in p.lengths for p in defaults)
    given = _model(shapes={"input_ids": {"min": [2], "opt": [12], "max": [40]}})
    points = shape_points("m", given, [IDS, MASK])
    assert [p.lengths for p in points] == [
        {"input_ids": [2], "attention_mask": [2]},
        {"input_ids": [12], "attention_mask": [12]},
        {"input_ids": [40], "attention_mask": [40]},
    ]
    assert points[2].describe() == " at length max (input_ids [40], attention_mask [40])"


def test_equal_points_are_given_once_and_fixed_models_have_one() -> None:
    same = _model(shapes={"input_ids": {"min": [8], "opt": [8], "max": [32]}})
    assert [p.label for p in shape_points("m", same, [IDS])] == ["min", "max"]
    fixed = shape_points("m", None, [InputTensor("x", "FP32", (3,))])
    assert len(fixed) == 1 and fixed[0].lengths == {} and fixed[0].describe() == ""


def test_torchscript_names_find_their_entries() -> None:
    model = _model(
        shapes={"input_ids": {"min": [3], "opt": [5], "max": [7]}}, values={"input_ids": {"min": 1, "max": 9}}
    )
    tensors = [InputTensor("input_ids__0", "INT64", (-1,))]
    assert [p.shapes["input_ids__0"] for p in shape_points("m", model, tensors)] == [[3], [5], [7]]
    assert value_ranges("m", model, tensors) == {"input_ids__0": (1, 9)}


def test_model_level_shapes_win_over_tensorrt_shapes_in_parity_too(tmp_path: Path) -> None:
    model = _model(
        max_batch_size=4,
        inputs=[
            {"name": "ids", "dtype": "INT64", "dims": [-1]},
            {"name": "type_ids", "dtype": "INT64", "dims": [-1]},
        ],
        shapes={"ids": {"min": [2], "opt": [3], "max": [5]}},
        tensorrt={"shapes": {"ids": {"min": [1], "opt": [9], "max": [99]}}},
    )
    signature = Signature(
        (TensorInfo("ids", "INT64", (-1, -1)), TensorInfo("type_ids", "INT64", (-1, -1))),
        (TensorInfo("y", "FP32", (-1,)),),
    )
    path = _text_encoder(tmp_path / "m.onnx")
    points, ranges = input_plan(model, signature, True, path)
    assert [p.shapes["ids"] for p in points] == [[2], [3], [5]]
    assert ranges == {"ids": (0, 29), "type_ids": (0, 1)}


def test_samples_stay_in_range_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    ids = sample(rng, "INT64", [4, 50], (5, 9))
    assert (
        ids.dtype == np.int64
        and ids.min() >= 5
        and ids.max() <= 9
        and set(np.unique(ids)) == set(range(5, 10))
    )
    assert sample(rng, "BOOL", [3], None).dtype == np.bool_
    text = sample(rng, "STRING", [2, 1], None)
    assert text.dtype == object and all(isinstance(v, bytes) and v.isascii() for v in text.reshape(-1))
    again = sample(np.random.default_rng(0), "INT64", [4, 50], (5, 9))
    assert np.array_equal(ids, again)


def _config(model, signature: Signature) -> dict:
    config = build_config(model, signature, "onnxruntime_onnx", DeviceProfile(), "model.onnx")
    check_rendered(render(config, environment()), config, "m/config.pbtxt")
    return config


TEXT_SIGNATURE = Signature(
    (TensorInfo("input_ids", "INT64", (-1, -1)), TensorInfo("attention_mask", "INT64", (-1, -1))),
    (TensorInfo("embedding", "FP32", (-1, 4)),),
)


def test_warmup_zeros_integers_at_the_min_length_or_reads_a_file_when_zero_is_out_of_range() -> None:
    model = _model(
        max_batch_size=8,
        warmup={"batch_size": 2, "data": "random"},
        shapes={"input_ids": {"min": [3], "opt": [8], "max": [16]}},
        values={"input_ids": {"min": 100, "max": 200}},
    )
    [warmup] = _config(model, TEXT_SIGNATURE)["model_warmup"]
    assert warmup["inputs"] == {
        "input_ids": {"data_type": "TYPE_INT64", "dims": [3], "input_data_file": "input_ids"},
        "attention_mask": {"data_type": "TYPE_INT64", "dims": [3], "zero_data": True},
    }
    floats = _model(warmup=True, inputs=[{"name": "x", "dtype": "FP32", "dims": [-1, 4]}])
    [warmup] = _config(floats, Signature((TensorInfo("x", "FP32", (-1, -1, 4)),), ()))["model_warmup"]
    assert warmup["inputs"]["x"] == {"data_type": "TYPE_FP32", "dims": [1, 4], "random_data": True}
    assert warmup_file_name("a/b c") != warmup_file_name("a_b c") and "/" not in warmup_file_name("a/b c")


def test_sample_files_are_in_range_at_the_opt_length_and_pass_validation(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    path = _text_encoder(model_dir / "1" / "model.onnx", vocab=30)
    model = _model(  # the encoder has no batch axis: max_batch_size 0
        max_batch_size=0,
        warmup=True,
        inputs=[
            {"name": "ids", "dtype": "INT64", "dims": [-1]},
            {"name": "type_ids", "dtype": "INT64", "dims": [-1]},
            {"name": "mask", "dtype": "INT64", "dims": [-1]},
        ],
        outputs=[{"name": "y", "dtype": "FP32", "dims": [1]}],
        shapes={"ids": {"min": [2], "opt": [6], "max": [9]}},
        values={"mask": {"min": 1, "max": 1}},
    )
    config = _config(model, read_onnx_signature(path))
    (model_dir / "config.pbtxt").write_text(render(config, environment()))
    written = write_sample_data(model_dir, config, model)
    assert [p.relative_to(model_dir).as_posix() for p in written] == [PERF_ANALYZER_DATA, "warmup/mask"]
    assert np.frombuffer((model_dir / "warmup" / "mask").read_bytes(), "<i8").tolist() == [1, 1]
    document = json.loads((model_dir / PERF_ANALYZER_DATA).read_text())
    assert len(document["data"]) == 8
    for entry in document["data"]:
        assert {name: value["shape"] for name, value in entry.items()} == {
            "ids": [6],
            "type_ids": [6],
            "mask": [6],
        }
        assert all(0 <= v <= 29 for v in entry["ids"]["content"])
        assert set(entry["type_ids"]["content"]) <= {0, 1} and set(entry["mask"]["content"]) == {1}
    assert len({tuple(e["ids"]["content"]) for e in document["data"]}) == 8
    assert write_sample_data(model_dir, config, model) == written
    assert json.loads((model_dir / PERF_ANALYZER_DATA).read_text()) == document  # same seed, same bytes
    assert [p.message for p in validate_model_dir(model_dir) if p.severity == "error"] == []


def test_perf_data_for_text_and_half_precision_inputs(tmp_path: Path) -> None:
    config = {
        "name": "t",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 4,
        "input": [
            {"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]},
            {"name": "h", "data_type": "TYPE_FP16", "dims": [2, 3]},
        ],
    }
    (tmp_path / "t").mkdir()
    write_sample_data(tmp_path / "t", config)
    entry = json.loads((tmp_path / "t" / PERF_ANALYZER_DATA).read_text())["data"][0]
    assert entry["TEXT"]["shape"] == [1] and entry["TEXT"]["content"][0].isascii()
    half = np.frombuffer(base64.b64decode(entry["h"]["b64"]), np.float16)
    assert entry["h"]["shape"] == [2, 3] and half.size == 6 and np.isfinite(half).all()


def test_config_inputs_read_the_config_data() -> None:
    assert config_inputs([{"name": "a", "data_type": "TYPE_INT32", "dims": [-1, 2]}]) == [
        InputTensor("a", "INT32", (-1, 2))
    ]


def test_renaming_moves_a_clashing_inner_value_aside(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["embedding"]),  # an inner value with the output's wanted name
        helper.make_node("Neg", ["embedding"], ["out0"]),
    ]
    path = _save(
        tmp_path / "m.onnx",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out0", TensorProto.FLOAT, [2])],
        [],
    )
    renamed = rename_io(onnx.load(str(path)), {"x": "input"}, {"out0": "embedding"}, "m")
    onnx.checker.check_model(renamed, full_check=True)
    assert [v.name for v in renamed.graph.input] == ["input"]
    assert [v.name for v in renamed.graph.output] == ["embedding"]
    inner = [o for n in renamed.graph.node for o in n.output]
    assert len(inner) == len(set(inner)) and inner[-1] == "embedding"
    import onnxruntime as ort

    session = ort.InferenceSession(renamed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([-1.0, 2.0], np.float32)
    assert session.run(None, {"input": x})[0].tolist() == [0.0, -2.0]
    with pytest.raises(ExportError, match=r"the model has no output named 'nope' \(its outputs: out0\)"):
        rename_io(onnx.load(str(path)), {}, {"nope": "y"}, "m")
    with pytest.raises(ExportError, match="'x' already names another input or output"):
        rename_io(onnx.load(str(path)), {}, {"out0": "x"}, "m")


def test_an_onnx_source_is_served_under_the_spec_names(tmp_path: Path) -> None:
    source = tmp_path / "linear.onnx"
    make_linear_onnx(source, input_name="x", output_name="y")
    model = _model(
        inputs=[{"name": "pixels", "source_name": "x", "dtype": "FP32", "dims": [4]}],
        outputs=[{"name": "scores", "source_name": "y", "dtype": "FP32", "dims": [3]}],
    )
    result = OnnxExporter().export(model, source, tmp_path / "m" / "1")
    assert [t.name for t in result.signature.inputs] == ["pixels"]
    assert [t.name for t in result.signature.outputs] == ["scores"]
    untouched = _model()
    copy = OnnxExporter().export(untouched, source, tmp_path / "n" / "1")
    assert copy.model_file.read_bytes() == source.read_bytes()  # no renames: the file as given
    wrong = _model(inputs=[{"name": "pixels", "source_name": "image", "dtype": "FP32", "dims": [4]}])
    with pytest.raises(ExportError, match=r"has no input named 'image' \(its inputs: x\); fix source_name"):
        OnnxExporter().export(wrong, source, tmp_path / "w" / "1")


def test_a_mismatch_names_the_batch_size_and_the_length_it_happened_at(tmp_path: Path) -> None:
    from generator.build.exporters.base import ExportResult
    from generator.build.parity import check_parity
    from generator.build.runners import onnx_runner
    from generator.core.errors import VerificationError
    from generator.spec.models import Verify

    path = _text_encoder(tmp_path / "m.onnx", vocab=30)
    model = _model(max_batch_size=0, shapes={"ids": {"min": [2], "opt": [4], "max": [9]}})
    artifact = onnx_runner(path)

    def drifting_source(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model itself, but off by one on the longest inputs (an export that breaks there)."""
        out = artifact(feeds)
        return {"y": out["y"] + 1} if feeds["ids"].shape[-1] >= 9 else out

    result = ExportResult([path], "onnxruntime_onnx", read_onnx_signature(path), reference=drifting_source)
    with pytest.raises(VerificationError) as caught:
        check_parity(model, result, 0, Verify())
    [line] = caught.value.problems
    assert line.startswith(
        "model 'm' output 'y' at batch 1 at length max (ids [9], type_ids [9], mask [9]): 1 of 1 values differ"
    )
    fine = ExportResult([path], "onnxruntime_onnx", read_onnx_signature(path), reference=artifact)
    report = check_parity(model, fine, 0, Verify())
    assert report.lengths == {
        label: {"ids": [n], "type_ids": [n], "mask": [n]} for label, n in (("min", 2), ("opt", 4), ("max", 9))
    }
    assert report.value_ranges == {"ids": [0, 29], "type_ids": [0, 1], "mask": [0, 1]}
    assert [o.length for o in report.outputs] == ["min", "opt", "max"]


def test_an_ensemble_borrows_the_samples_its_steps_accept_where_the_shapes_fit(tmp_path: Path) -> None:
    step = tmp_path / "step"
    step.mkdir()
    samples = [{"ids": {"content": [7, 9, 11], "shape": [3]}, "mask": {"content": [1, 1, 0], "shape": [3]}}]
    (step / PERF_ANALYZER_DATA).write_text(json.dumps({"data": samples}))
    config = {
        "name": "ens",
        "platform": "ensemble",
        "max_batch_size": 4,
        "input": [
            {"name": "IDS", "data_type": "TYPE_INT64", "dims": [-1]},
            {"name": "MASK", "data_type": "TYPE_INT64", "dims": [4]},  # 4 refuses the step's shape [3]
            {"name": "OTHER", "data_type": "TYPE_INT64", "dims": [2]},  # read by a step with no file
        ],
        "ensemble_scheduling": {
            "step": [
                {"model_name": "step", "input_map": {"ids": "IDS", "mask": "MASK"}, "output_map": {}},
                {"model_name": "absent", "input_map": {"x": "OTHER"}, "output_map": {}},
            ]
        },
    }
    borrowed = step_samples(config, {"step": step})
    assert borrowed == {"IDS": [samples[0]["ids"]]}
    (tmp_path / "ens").mkdir()
    write_sample_data(tmp_path / "ens", config, borrowed=borrowed)
    data = json.loads((tmp_path / "ens" / PERF_ANALYZER_DATA).read_text())["data"]
    assert all(entry["IDS"] == samples[0]["ids"] for entry in data)
    assert all(entry["MASK"]["shape"] == [4] and set(entry["MASK"]["content"]) <= {0, 1} for entry in data)


def test_traced_torchscript_ranges_follow_ids_to_their_tables() -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    from generator.build.exporters.torchscript import traced_index_ranges

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words, self.types = nn.Embedding(50, 4), nn.Embedding(2, 4)
            self.register_buffer("table", torch.ones(30, 4))

        def forward(self, ids, types, rows, scale):
            hidden = self.words(ids.long()) + self.types(types) + self.types(ids.clamp(0, 1))
            picked = torch.index_select(self.table, 0, rows.view(-1))
            return hidden.sum() + picked.sum() * scale.sum()

    example = (
        torch.zeros(2, 5, dtype=torch.int32),
        torch.zeros(2, 5, dtype=torch.int64),
        torch.zeros(2, 3, dtype=torch.int64),
        torch.ones(2, 1),
    )
    traced = torch.jit.trace(Model().eval(), example)
    names = ["ids__0", "types__1", "rows__2", "scale__3"]
    # ids reach the 50-row table through a cast; through clamp it is no longer the raw id, so not counted.
    assert traced_index_ranges(traced, names) == {"ids__0": (0, 49), "types__1": (0, 1), "rows__2": (0, 29)}
    assert traced_index_ranges(object(), names) == {}  # not a traced module: no ranges, no error
