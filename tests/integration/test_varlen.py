"""A sentence-embedding model with variable-length token inputs, built for real and served by the
embedded Triton: parity at three lengths with token ids in range, an output named like a submodule
(``embedding``), warm-up that stays in range, and a perf_analyzer data file that drives it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from generator.build.exporters.base import load_factory
from generator.build.run import build
from generator.build.sample_data import PERF_ANALYZER_DATA
from generator.core.repository import MANIFEST
from generator.serve.server import EmbeddedServer

from ..conftest import free_ports
from ..perf_analyzer import run_perf_analyzer

pytestmark = pytest.mark.integration

VOCAB = 50
FACTORY = '''
import torch
from torch import nn


class Encoder(nn.Module):
    """Token embeddings, a projection and mean pooling over the tokens the mask keeps."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding({vocab}, 8)  # torch's exporter names its output value "embedding"
        self.proj = nn.Linear(8, 8)

    def forward(self, input_ids, attention_mask):
        hidden = self.proj(self.embedding(input_ids))
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def build():
    torch.manual_seed(0)
    return Encoder()
'''
SPEC = {
    "models": [
        {
            "name": "encoder",
            "framework": "torch",
            "source": "encoder.py:build",
            "max_batch_size": 4,
            "warmup": {"batch_size": 2, "data": "random"},
            "shapes": {"input_ids": {"min": [2], "opt": [5], "max": [12]}},
            "inputs": [
                {"name": "input_ids", "dtype": "INT64", "dims": [-1]},
                {"name": "attention_mask", "dtype": "INT64", "dims": [-1]},
            ],
            "outputs": [{"name": "embedding", "dtype": "FP32", "dims": [8]}],
        }
    ],
    # An ensemble around it: its perf_analyzer data takes the encoder's samples (ids below the vocabulary).
    "ensembles": [
        {
            "name": "encode",
            "steps": [
                {
                    "model": "encoder",
                    "input_map": {"input_ids": "IDS", "attention_mask": "MASK"},
                    "output_map": {"embedding": "EMBEDDING"},
                }
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The encoder's spec directory, built once into ``repo/`` beside it."""
    root = tmp_path_factory.mktemp("varlen")
    (root / "encoder.py").write_text(FACTORY.replace("{vocab}", str(VOCAB)))
    (root / "spec.yaml").write_text(json.dumps(SPEC))
    build(root / "spec.yaml", root / "repo")
    return root


@pytest.fixture(scope="module")
def server(built: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(built / "repo", **free_ports()) as running:
        yield running


def _torch_embeddings(root: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    module = load_factory(root / "encoder.py", "build", "encoder")().eval()
    with torch.no_grad():
        return module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def test_parity_ran_at_three_lengths_with_token_ids_from_the_vocabulary(built: Path) -> None:
    manifest = json.loads((built / "repo" / MANIFEST).read_text())
    parity = manifest["models"]["encoder"]["versions"]["1"]["parity"]
    assert parity["compared"] and parity["batch_sizes"] == [1, 4]
    # attention_mask has no entry of its own: it grows with input_ids.
    assert parity["lengths"] == {
        label: {"input_ids": [n], "attention_mask": [n]} for label, n in (("min", 2), ("opt", 5), ("max", 12))
    }
    assert parity["value_ranges"] == {"input_ids": [0, VOCAB - 1], "attention_mask": [0, 1]}
    assert {(o["batch_size"], o["length"]) for o in parity["outputs"]} == {
        (b, n) for b in (1, 4) for n in ("min", "opt", "max")
    }
    assert set(parity["per_length"]) == {"min", "opt", "max"}
    assert all(0 <= f["max_abs_error"] < 1e-4 for f in parity["per_length"].values())


def test_the_output_is_named_embedding_beside_the_submodule_of_that_name(built: Path) -> None:
    model = onnx.load(str(built / "repo" / "encoder" / "1" / "model.onnx"))
    assert [v.name for v in model.graph.input] == ["input_ids", "attention_mask"]
    assert [v.name for v in model.graph.output] == ["embedding"]
    defined = [o for node in model.graph.node for o in node.output]
    assert len(defined) == len(set(defined)) and defined.count("embedding") == 1
    assert 'name: "embedding"' in (built / "repo" / "encoder" / "config.pbtxt").read_text()


def test_warmup_feeds_zeros_to_the_token_inputs(built: Path) -> None:
    config = (built / "repo" / "encoder" / "config.pbtxt").read_text()
    warmup = config[config.index("model_warmup") :]
    assert warmup.count("zero_data: true") == 2 and "random_data" not in warmup
    assert warmup.count("dims: [ 2 ]") == 2  # the min length


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_embeddings_equal_torch_at_two_lengths(
    built: Path, server: EmbeddedServer, protocol: str
) -> None:
    if protocol == "http":
        import tritonclient.http as client_module

        url = server.endpoints.http
    else:
        import tritonclient.grpc as client_module

        url = server.endpoints.grpc
    rng = np.random.default_rng(1)
    with client_module.InferenceServerClient(url) as client:
        for length in (3, 11):
            ids = rng.integers(0, VOCAB, (2, length), dtype=np.int64)
            ids[0, 0] = VOCAB - 1  # the last row of the table
            mask = np.ones((2, length), np.int64)
            mask[1, length // 2 :] = 0
            inputs = []
            for name, array in (("input_ids", ids), ("attention_mask", mask)):
                tensor = client_module.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            served = client.infer("encoder", inputs).as_numpy("embedding")
            np.testing.assert_allclose(served, _torch_embeddings(built, ids, mask), atol=1e-5, rtol=1e-5)


def test_the_perf_analyzer_data_is_in_range_at_the_opt_length(built: Path) -> None:
    document = json.loads((built / "repo" / "encoder" / PERF_ANALYZER_DATA).read_text())
    assert len(document["data"]) == 8
    for sample in document["data"]:
        ids, mask = sample["input_ids"], sample["attention_mask"]
        assert ids["shape"] == mask["shape"] == [5]
        assert all(0 <= v < VOCAB for v in ids["content"]) and set(mask["content"]) <= {0, 1}
    manifest = json.loads((built / "repo" / MANIFEST).read_text())
    assert set(manifest["models"]["encoder"]["sample_files"]) == {PERF_ANALYZER_DATA}
    # The ensemble's inputs carry the samples of the step reading them, not 0..1 at the default length.
    ensemble = json.loads((built / "repo" / "encode" / PERF_ANALYZER_DATA).read_text())
    assert [{"IDS": d["input_ids"], "MASK": d["attention_mask"]} for d in document["data"]] == ensemble[
        "data"
    ]


@pytest.mark.parametrize(
    ("model", "protocol"), [("encoder", "http"), ("encoder", "grpc"), ("encode", "grpc")]
)
def test_perf_analyzer_drives_the_model_with_its_data_file(
    built: Path, server: EmbeddedServer, model: str, protocol: str
) -> None:
    url = server.endpoints.http if protocol == "http" else server.endpoints.grpc
    run_perf_analyzer(url, protocol, model, built / "repo" / model / PERF_ANALYZER_DATA)


def test_a_torchscript_encoder_gets_its_vocabulary_range_from_the_traced_graph(
    built: Path, tmp_path: Path
) -> None:
    """TorchScript has no Gather to read: the range comes from the traced graph's aten::embedding."""
    spec = json.loads(json.dumps(SPEC))
    spec["models"][0].update(name="encoder_ts", format="torchscript")
    spec["models"][0].pop("warmup")
    spec.pop("ensembles")
    shutil.copy(built / "encoder.py", tmp_path / "encoder.py")
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    build(tmp_path / "spec.yaml", tmp_path / "repo")
    entry = json.loads((tmp_path / "repo" / MANIFEST).read_text())["models"]["encoder_ts"]["versions"]["1"]
    assert entry["details"]["index_ranges"] == {"input_ids__0": [0, VOCAB - 1]}
    assert entry["parity"]["value_ranges"]["input_ids__0"] == [0, VOCAB - 1]
    samples = json.loads((tmp_path / "repo" / "encoder_ts" / PERF_ANALYZER_DATA).read_text())["data"]
    ids = [v for sample in samples for v in sample["input_ids__0"]["content"]]
    assert all(0 <= v < VOCAB for v in ids) and max(ids) > 1  # the vocabulary, not 0..1
    sample = samples[0]
    shape = [1, *sample["input_ids__0"]["shape"]]
    token_ids = np.array(sample["input_ids__0"]["content"], dtype=np.int64).reshape(shape)
    mask = np.array(sample["attention_mask__1"]["content"], dtype=np.int64).reshape(shape)
    import tritonclient.http as httpclient

    with (
        EmbeddedServer(tmp_path / "repo", **free_ports()) as served,
        httpclient.InferenceServerClient(served.endpoints.http) as client,
    ):
        inputs = []
        for name, array in (("input_ids__0", token_ids), ("attention_mask__1", mask)):
            tensor = httpclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer("encoder_ts", inputs).as_numpy("embedding__0")
    np.testing.assert_allclose(result, _torch_embeddings(built, token_ids, mask), atol=1e-5, rtol=1e-5)
