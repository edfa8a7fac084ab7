"""Hugging Face model folders as users have them, each a spec entry of four lines, built into a served
pipeline and checked end to end against the reference library over HTTP and gRPC.

The folders are tiny models made here (seeded weights, save_pretrained): a text classifier, a
sentence-transformers model, a token classifier, a plain encoder and two image classifiers (resize, and
shortest edge with centre crop). The served answers are compared with transformers' pipelines and
sentence-transformers' ``encode`` run in this test, independently of the build's own parity check; and
perf_analyzer drives each pipeline with the repository's own data file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from PIL import Image

from generator.build.hf_parity import SAMPLE_TEXTS, sample_images
from generator.build.run import build
from generator.build.sample_data import PERF_ANALYZER_DATA
from generator.core.errors import VerificationError
from generator.core.repository import MANIFEST
from generator.serve.server import EmbeddedServer

from ..conftest import free_ports
from ..hf_models import (
    make_bert_encoder,
    make_bert_text_classifier,
    make_bert_token_classifier,
    make_image_classifier,
    make_sentence_transformer,
)
from ..perf_analyzer import run_perf_analyzer

pytestmark = pytest.mark.integration

TOPICS = ["food", "sport", "weather"]
ENTITIES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
#: Each pipeline: its folder's builder and the entry's task (the spec entry is name, framework, source, task).
PIPELINES = {
    "topics": (lambda folder: make_bert_text_classifier(folder, TOPICS), "text-classification"),
    "embed": (make_sentence_transformer, "sentence-similarity"),
    "entities": (lambda folder: make_bert_token_classifier(folder, ENTITIES), "ner"),
    "encoder": (make_bert_encoder, "feature-extraction"),
    "animals": (make_image_classifier, "image-classification"),
    "animals_crop": (lambda folder: make_image_classifier(folder, processor="crop"), "image-classification"),
}
TEXTS = [text for text in SAMPLE_TEXTS if len(text) < 200]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    models = []
    for name, (make, task) in PIPELINES.items():
        make(root / name)
        models.append({"name": name, "framework": "huggingface", "source": name, "task": task})
    (root / "spec.yaml").write_text(yaml.safe_dump({"models": models}))
    build(root / "spec.yaml", root / "repo")
    return root


@pytest.fixture(scope="module")
def server(built: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(built / "repo", **free_ports()) as embedded:
        yield embedded


def _infer(
    server: EmbeddedServer, protocol: str, model: str, name: str, rows: list[bytes], outputs: list[str]
):
    module = httpclient if protocol == "http" else grpcclient
    url = server.endpoints.http if protocol == "http" else server.endpoints.grpc
    data = np.array([[row] for row in rows], dtype=object)
    tensor = module.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    with module.InferenceServerClient(url) as client:
        result = client.infer(model, [tensor])
    return {output: result.as_numpy(output) for output in outputs}


def _strings(values: np.ndarray) -> list[list[str]]:
    return [[v.decode() for v in row] for row in values]


def test_each_entry_expands_into_steps_and_an_ensemble_recorded_in_the_manifest(built: Path) -> None:
    manifest = json.loads((built / "repo" / MANIFEST).read_text())["models"]
    for name, (_, _) in PIPELINES.items():
        record = manifest[name]["huggingface"]
        assert record["parts"]["model"] == f"{name}_model"
        assert record["parts"]["preprocess"] == f"{name}_preprocess"
        assert record["parity"]["samples"] >= 5
    assert manifest["embed"]["huggingface"]["task"] == "feature-extraction"  # the alias, canonical
    assert manifest["embed"]["huggingface"]["parity"]["reference"] == "sentence-transformers"
    assert manifest["embed"]["huggingface"]["parity"]["min_cosine"] >= 0.9999
    assert "postprocess" not in manifest["embed"]["huggingface"]["parts"]  # pooling lives in the graph
    assert manifest["entities"]["huggingface"]["parts"]["postprocess"] == "entities_postprocess"
    config = (built / "repo" / "topics_preprocess" / "config.pbtxt").read_text()
    assert '"padding"' in config and '"longest"' in config


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_text_classifier_answers_as_transformers_pipeline(
    built: Path, server: EmbeddedServer, protocol: str
) -> None:
    from transformers import pipeline

    served = _infer(server, protocol, "topics", "TEXT", [t.encode() for t in TEXTS], ["LABELS", "SCORES"])
    reference = pipeline("text-classification", model=str(built / "topics"), device="cpu")
    for row, text in enumerate(TEXTS):
        expected = {item["label"]: item["score"] for item in reference(text, top_k=None)}
        got = dict(zip(_strings(served["LABELS"])[row], served["SCORES"][row].tolist(), strict=True))
        assert got.keys() == expected.keys()
        assert max(abs(got[label] - expected[label]) for label in expected) <= 1e-4
        assert _strings(served["LABELS"])[row][0] == max(expected, key=expected.__getitem__)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_sentence_transformer_embeds_as_sentence_transformers(
    built: Path, server: EmbeddedServer, protocol: str
) -> None:
    from sentence_transformers import SentenceTransformer

    texts = list(SAMPLE_TEXTS)  # the long one is truncated at max_seq_length on both sides
    served = _infer(server, protocol, "embed", "TEXT", [t.encode() for t in texts], ["EMBEDDING"])[
        "EMBEDDING"
    ]
    expected = SentenceTransformer(str(built / "embed"), device="cpu").encode(texts, convert_to_numpy=True)
    cosines = (served * expected).sum(axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosines.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)  # its Normalize module


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_token_classifier_labels_each_token_as_transformers_pipeline(
    built: Path, server: EmbeddedServer, protocol: str
) -> None:
    from transformers import pipeline

    served = _infer(server, protocol, "entities", "TEXT", [t.encode() for t in TEXTS], ["LABELS", "SCORES"])
    reference = pipeline("token-classification", model=str(built / "entities"), device="cpu")
    labels = _strings(served["LABELS"])
    compared = 0
    for row, text in enumerate(TEXTS):
        for token in reference(text, aggregation_strategy="none", ignore_labels=[]):
            assert labels[row][token["index"]] == token["entity"]
            assert abs(float(served["SCORES"][row, token["index"]]) - token["score"]) <= 1e-4
            compared += 1
    assert compared > 20


@pytest.mark.parametrize("model", ["animals", "animals_crop"])
def test_an_image_classifier_answers_as_transformers_pipeline(
    built: Path, server: EmbeddedServer, model: str
) -> None:
    from transformers import AutoImageProcessor, pipeline

    images = sample_images()
    served = _infer(server, "grpc", model, "IMAGE", images, ["LABELS", "SCORES"])
    folder = str(built / model)
    processor = AutoImageProcessor.from_pretrained(folder, use_fast=False)
    reference = pipeline("image-classification", model=folder, image_processor=processor, device="cpu")
    for row, data in enumerate(images):
        expected = {i["label"]: i["score"] for i in reference(Image.open(io.BytesIO(data)), top_k=4)}
        got = dict(zip(_strings(served["LABELS"])[row], served["SCORES"][row].tolist(), strict=True))
        assert max(abs(got[label] - expected[label]) for label in expected) <= 1e-4
        assert _strings(served["LABELS"])[row][0] == max(expected, key=expected.__getitem__)


@pytest.mark.parametrize("model", ["topics", "embed", "animals_crop"])
def test_perf_analyzer_drives_each_pipeline_with_the_repositorys_data_file(
    built: Path, server: EmbeddedServer, model: str
) -> None:
    run_perf_analyzer(server.endpoints.grpc, "grpc", model, built / "repo" / model / PERF_ANALYZER_DATA)


def test_a_pipeline_that_disagrees_with_the_reference_fails_the_build_and_keeps_the_repository(
    built: Path, tmp_path: Path
) -> None:
    """sigmoid where transformers applies softmax: the end-to-end check names the figure, and the
    repository already there stays as it was."""
    make_bert_text_classifier(tmp_path / "topics", TOPICS)
    entry = {"name": "topics", "framework": "huggingface", "source": "topics", "task": "text-classification"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    build(tmp_path / "spec.yaml", tmp_path / "repo")
    before = (tmp_path / "repo" / MANIFEST).read_bytes()
    entry["pipeline"] = {"postprocess": {"activation": "sigmoid"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    with pytest.raises(VerificationError, match=r"differs from the reference's by \d"):
        build(tmp_path / "spec.yaml", tmp_path / "repo")
    assert (tmp_path / "repo" / MANIFEST).read_bytes() == before


def test_a_factory_returning_a_transformers_model_is_exported_with_parity(tmp_path: Path) -> None:
    """source: file.py:function returning a PreTrainedModel (the model alone: pipeline false)."""
    from generator.core.errors import ExportError

    make_bert_text_classifier(tmp_path / "topics", TOPICS)
    (tmp_path / "factory.py").write_text(
        "from pathlib import Path\n"
        "import torch\n"
        "from transformers import AutoModelForSequenceClassification\n\n"
        "def build():\n"
        "    return AutoModelForSequenceClassification.from_pretrained(Path(__file__).parent / 'topics')\n\n"
        "def not_transformers():\n"
        "    return torch.nn.Linear(2, 2)\n"
    )
    ids = [{"name": name, "dtype": "INT64", "dims": [-1]} for name in ("input_ids", "attention_mask")]
    entry = {
        "name": "from_factory",
        "framework": "huggingface",
        "source": "factory.py:build",
        "task": "text-classification",
        "pipeline": False,
        "inputs": ids,
        "values": {"attention_mask": {"min": 1, "max": 1}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    build(tmp_path / "spec.yaml", tmp_path / "repo")
    version = json.loads((tmp_path / "repo" / MANIFEST).read_text())["models"]["from_factory"]["versions"][
        "1"
    ]
    assert version["details"]["model_class"] == "BertForSequenceClassification"
    assert version["parity"]["compared"] and version["parity"]["max_abs_error"] < 1e-4
    assert [t["name"] for t in version["signature"]["outputs"]] == ["logits"]
    entry["source"] = "factory.py:not_transformers"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    with pytest.raises(ExportError, match=r"gave a Linear, not a transformers PreTrainedModel"):
        build(tmp_path / "spec.yaml", tmp_path / "repo2")
