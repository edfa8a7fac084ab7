"""Sample data for inputs that take encoded images: the built-in image step's and an ensemble input feeding
it. The perf_analyzer file ``build`` writes holds PNG and JPEG images as Triton's serialized BYTES in base64,
and the load test generates images for such inputs. Pillow (opening every image), tritonclient's own
BYTES serialization and the image step as the server runs it (:class:`PreprocessImage`) are the judges."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from generator.build.input_values import InputTensor, ShapePoint
from generator.build.run import build
from generator.build.sample_data import PERF_ANALYZER_DATA, perf_analyzer_data
from generator.core.sample_images import deserialize_bytes, image_inputs, sample_images, serialize_bytes
from generator.core.triton import parse_model_config
from generator.loadtest.datafiles import load_payload_samples
from generator.loadtest.payloads import make_batches, model_info
from generator.steps.image import PreprocessImage

from ..conftest import make_image_classifier_onnx, make_linear_onnx

STEPS = {
    # name -> (step settings, the pixel_values dims the config declares)
    "prep": ({"size": [24, 20]}, [3, 24, 20]),
    "prep_grey": ({"size": [9, 31], "channels": 1, "layout": "NHWC", "dtype": "FP16"}, [9, 31, 1]),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two image steps, a classifier, an ensemble of the first and the classifier, and a linear model."""
    root = tmp_path_factory.mktemp("images")
    make_image_classifier_onnx(root / "classifier.onnx", (24, 20))
    make_linear_onnx(root / "linear.onnx")
    spec = {
        "defaults": {"max_batch_size": 4},
        "models": [
            *(
                {"name": name, "framework": "python", "source": "builtin:image", "step": settings}
                for name, (settings, _) in STEPS.items()
            ),
            {"name": "classifier", "framework": "onnx", "source": "classifier.onnx"},
            {"name": "linear", "framework": "onnx", "source": "linear.onnx"},
        ],
        "ensembles": [
            {
                "name": "classify",
                "steps": [
                    {"model": "prep", "input_map": {"image": "IMAGE"}, "output_map": {"pixel_values": "PX"}},
                    {
                        "model": "classifier",
                        "input_map": {"pixel_values": "PX"},
                        "output_map": {"logits": "L"},
                    },
                ],
            }
        ],
    }
    (root / "spec.yaml").write_text(json.dumps(spec))
    build(root / "spec.yaml", root / "repo")
    return root / "repo"


def _samples(repo: Path, model: str, name: str) -> list[bytes]:
    """The encoded images of one input in a model's perf_analyzer file, one per sample, read with
    tritonclient's own BYTES deserializer."""
    document = json.loads((repo / model / PERF_ANALYZER_DATA).read_text())
    images = []
    for entry in document["data"]:
        assert list(entry) == [name] and entry[name]["shape"] == [1] and set(entry[name]) == {"b64", "shape"}
        [image] = deserialize_bytes_tensor(base64.b64decode(entry[name]["b64"]))
        images.append(image)
    return images


def _config(repo: Path, model: str) -> dict:
    from google.protobuf.json_format import MessageToDict

    proto = parse_model_config((repo / model / "config.pbtxt").read_text())
    return MessageToDict(proto, preserving_proto_field_name=True)


@pytest.mark.parametrize("model", list(STEPS))
def test_the_image_step_data_file_holds_images_around_its_size_that_the_step_reads(
    repo: Path, model: str
) -> None:
    settings, dims = STEPS[model]
    height, width = settings["size"]
    images = _samples(repo, model, "image")
    assert len(images) == 8 and len(set(images)) == 8
    opened = [Image.open(io.BytesIO(data)) for data in images]
    assert {picture.format for picture in opened} == {"PNG", "JPEG"}
    assert {"RGB", "L", "RGBA"} <= {picture.mode for picture in opened}
    assert opened[0].size == (width, height)  # the first exactly the step's size, the others around it
    assert len({picture.size for picture in opened}) > 4
    for picture in opened:
        assert (
            0.4 * height <= picture.size[1] <= 1.7 * height and 0.4 * width <= picture.size[0] <= 1.7 * width
        )
        picture.load()  # decodes completely
    # The step as the server runs it, with the config's parameters, takes every one.
    parameters = {key: value["string_value"] for key, value in _config(repo, model)["parameters"].items()}
    pixels = PreprocessImage(parameters)(images)["pixel_values"]
    assert pixels.shape == (8, *dims) and np.isfinite(pixels.astype(np.float32)).all()


def test_the_ensemble_input_feeding_the_step_takes_the_steps_images(repo: Path) -> None:
    assert _samples(repo, "classify", "IMAGE") == _samples(repo, "prep", "image")


def test_image_inputs_are_found_in_image_steps_only(repo: Path) -> None:
    assert image_inputs(_config(repo, "prep")) == {"image": (24, 20)}
    assert image_inputs(_config(repo, "prep_grey")) == {"image": (9, 31)}  # NHWC: [H, W, C]
    for model in ("classifier", "linear", "classify"):
        assert image_inputs(_config(repo, model)) == {}
    linear = json.loads((repo / "linear" / PERF_ANALYZER_DATA).read_text())["data"][0]
    assert "content" in linear["x"]  # other models keep their values
    # Without the layout parameter, the channels' place says which dims are the height and width.
    bare = {**_config(repo, "prep_grey"), "parameters": {}}
    assert image_inputs(bare) == {"image": (9, 31)}


def test_the_images_are_seeded() -> None:
    tensors = [InputTensor("image", "STRING", (1,)), InputTensor("x", "FP32", (2,))]
    shapes = ShapePoint("opt", {"image": [1], "x": [2]})
    first = perf_analyzer_data("m", tensors, shapes, {}, seed=0, images={"image": (16, 16)})
    assert first == perf_analyzer_data("m", tensors, shapes, {}, seed=0, images={"image": (16, 16)})
    other = perf_analyzer_data("m", tensors, shapes, {}, seed=1, images={"image": (16, 16)})
    assert first is not None and other is not None
    assert [e["image"] for e in first["data"]] != [e["image"] for e in other["data"]]
    assert all("content" in e["x"] and e["image"]["shape"] == [1] for e in first["data"])
    rng = np.random.default_rng(3)
    assert sample_images(rng, (7, 5), 3) != sample_images(rng, (7, 5), 3)  # the generator moves on


def test_serialized_bytes_are_tritons() -> None:
    values = [b"ab", b"\x00\xff\x00", b"", bytes(range(256)) * 3]
    expected = serialize_byte_tensor(np.array(values, dtype=np.object_)).item()
    assert serialize_bytes(values) == expected
    assert deserialize_bytes(expected) == values
    assert deserialize_bytes(b"") == []
    for broken, message in (
        (expected[:-1], "element 3 claims 768 bytes, but 767 remain"),
        (expected + b"\x01\x00", "element 4 starts 2 byte"),
    ):
        with pytest.raises(ValueError, match=message):
            deserialize_bytes(broken)


def test_the_load_test_generates_images_for_image_inputs_and_reads_the_data_file(repo: Path) -> None:
    metadata = {
        "name": "classify",
        "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": "L", "datatype": "FP32", "shape": [-1, 4]}],
    }
    config = {"name": "classify", "max_batch_size": 4, "platform": "ensemble"}
    info = model_info(metadata, config, images={"IMAGE": (24, 20)})
    batches = make_batches(info, 3, seed=2, variants=4)
    images = [data for batch in batches for data in batch["IMAGE"].reshape(-1)]
    assert all(batch["IMAGE"].shape == (3, 1) for batch in batches) and len(set(images)) > 4
    pixels = PreprocessImage({"size": [24, 20]})(images)["pixel_values"]
    assert pixels.shape == (12, 3, 24, 20)
    again = make_batches(info, 3, seed=2, variants=4)
    assert [b["IMAGE"].tolist() for b in again] == [b["IMAGE"].tolist() for b in batches]
    # Without images known, the input gets words; the data file's images are read back as they are.
    assert b" " in make_batches(model_info(metadata, config), 1, variants=1)[0]["IMAGE"][0, 0]
    samples = load_payload_samples(repo / "classify" / PERF_ANALYZER_DATA)
    read = make_batches(info, 2, samples=samples)
    assert [d for b in read for d in b["IMAGE"].reshape(-1)] == _samples(repo, "classify", "IMAGE")
