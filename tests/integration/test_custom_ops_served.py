"""Custom-op libraries named in ``model_operations { op_library_filename }`` load with an ONNX model served
by the embedded Triton (its ONNX Runtime stand-in registers them, as Triton's ONNX Runtime backend does).

The model is onnxruntime-extensions' ``BertTokenizer`` custom op over a small WordPiece vocabulary; the
library is the one onnxruntime-extensions ships. The served ids are compared with transformers'
``BertTokenizerFast`` on the same vocabulary (the reference library) and with ONNX Runtime running the
same file in this process. Without the library, or with a library that does not exist, Triton refuses to
load the model and says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from generator.serve.server import EmbeddedServer

from ..conftest import free_ports, load_refusal

pytestmark = pytest.mark.integration

ortx = pytest.importorskip("onnxruntime_extensions")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "a", "."]
TEXTS = ["The cats sat on the mat.", "a cat", "dogs sat"]
TENSORS = (
    'input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
    'output [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },'
    ' { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
)


def _operations(library: str) -> str:
    return f'model_operations {{ op_library_filename: "{library}" }}\n'


def _write_tokenizer(model_dir: Path, config: str) -> Path:
    """A model of one custom op: a text -> its WordPiece ids, types and mask."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(
        "BertTokenizer",
        ["text"],
        ["input_ids", "token_type_ids", "attention_mask"],
        domain="ai.onnx.contrib",
        vocab_file="\n".join(VOCAB),
        do_lower_case=1,
        strip_accents=1,
    )
    graph = helper.make_graph(
        [node],
        "tokenizer",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [1])],
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["tokens"])
            for name in ("input_ids", "token_type_ids", "attention_mask")
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)]
    )
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    path = model_dir / "1" / "model.onnx"
    onnx.save(model, str(path))
    (model_dir / "config.pbtxt").write_text(config)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, EmbeddedServer]]:
    repository = tmp_path_factory.mktemp("custom_ops") / "repository"
    library = ortx.get_library_path()
    _write_tokenizer(
        repository / "tokenizer", 'platform: "onnxruntime_onnx"\n' + TENSORS + _operations(library)
    )
    _write_tokenizer(repository / "completed", 'platform: "onnxruntime_onnx"\n' + _operations(library))
    with EmbeddedServer(repository, **free_ports(), exit_timeout=5) as server:
        yield repository, server


def _reference(texts: list[str]) -> list[list[int]]:
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=True)
    return [tokenizer(text)["input_ids"] for text in texts]


def _tokenize(server: EmbeddedServer, model: str, text: str) -> tuple[np.ndarray, np.ndarray]:
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        tensor = grpcclient.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=object))
        result = client.infer(model, [tensor], client_timeout=30)
        return result.as_numpy("input_ids"), result.as_numpy("attention_mask")
    finally:
        client.close()


def test_a_custom_op_model_serves_what_the_reference_tokenizer_gives(
    served: tuple[Path, EmbeddedServer],
) -> None:
    import onnxruntime as ort

    repository, server = served
    options = ort.SessionOptions()
    options.register_custom_ops_library(ortx.get_library_path())
    local = ort.InferenceSession(str(repository / "tokenizer" / "1" / "model.onnx"), options)
    for text, expected in zip(TEXTS, _reference(TEXTS), strict=True):
        ids, mask = _tokenize(server, "tokenizer", text)
        assert ids.tolist() == expected, text
        assert mask.tolist() == [1] * len(expected)
        assert ids.tolist() == local.run(["input_ids"], {"text": np.array([text])})[0].tolist()


def test_a_config_without_tensors_is_completed_through_the_library(
    served: tuple[Path, EmbeddedServer],
) -> None:
    _, server = served
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        config = client.get_model_config("completed", as_json=True)["config"]
    finally:
        client.close()
    assert [(t["name"], t["data_type"]) for t in config["input"]] == [("text", "TYPE_STRING")]
    assert {t["name"] for t in config["output"]} == {"input_ids", "token_type_ids", "attention_mask"}
    ids, _ = _tokenize(server, "completed", "the cat")
    assert ids.tolist() == [2, 5, 6, 3]


def test_without_the_library_triton_refuses_the_model(served: tuple[Path, EmbeddedServer]) -> None:
    repository, server = served
    _write_tokenizer(repository / "no_library", 'platform: "onnxruntime_onnx"\n' + TENSORS)
    refusal = load_refusal(server, "no_library")
    assert refusal is not None and "BertTokenizer" in refusal, refusal


def test_a_missing_library_is_named_in_the_refusal(
    served: tuple[Path, EmbeddedServer], tmp_path: Path
) -> None:
    repository, server = served
    missing = str(tmp_path / "libmissing_ops.so")
    _write_tokenizer(
        repository / "missing", 'platform: "onnxruntime_onnx"\n' + TENSORS + _operations(missing)
    )
    refusal = load_refusal(server, "missing")
    assert refusal is not None and f"cannot load the custom-op library '{missing}'" in refusal, refusal
