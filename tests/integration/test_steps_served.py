"""The built-in steps served by the real embedded Triton: a hand-written repository whose configs come from
the catalogue's definitions (``backend: "python"``, dynamic batching), each step inferred over HTTP and
gRPC with concurrent requests, and every output compared with the step's pure class run in-process."""

from __future__ import annotations

import io
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from generator.serve.server import EmbeddedServer
from generator.steps import StepDefinition, step_definition
from generator.steps.image import PreprocessImage
from generator.steps.postprocess import Postprocess
from generator.steps.token_labels import TokenLabels
from generator.steps.tokenizer import Tokenize

from ..conftest import free_ports, settle
from ..hf_models import TEXTS, make_roberta_tokenizer
from ..unit.test_steps import SENTENCES, train_wordpiece

pytestmark = pytest.mark.integration

MAX_BATCH = 8
LABELS = ["cat", "dog", "bird", "fish", "horse"]
ENTITIES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
#: Each model of the repository: its step kind and settings.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "tokenizer": ("tokenizer", {"tokenizer": "tokenizer.json", "max_length": 12}),
    "tokenizer_longest": (
        "tokenizer",
        {
            "tokenizer": "tokenizer.json",
            "padding": "longest",
            "truncation": False,
            "dtype": "INT32",
            "outputs": ["input_ids", "attention_mask"],
        },
    ),
    "tokenizer_strict": ("tokenizer", {"tokenizer": "tokenizer.json", "max_length": 24, "truncation": False}),
    "image": ("image", {"size": [16, 12], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
    "image_grey": (
        "image",
        {"size": [8, 8], "channels": 1, "layout": "NHWC", "dtype": "FP16", "resize": "nearest", "scale": 1.0},
    ),
    "postprocess": ("postprocess", {"labels": "labels.txt", "top_k": 3}),
    "postprocess_logits": ("postprocess", {"classes": 6, "softmax": False, "top_k": 2}),
    # A Hugging Face tokenizer folder (RoBERTa-like, left padding and truncation) and per-token labels.
    "tokenizer_folder": ("tokenizer", {"tokenizer": "roberta", "padding": True}),
    "token_labels": ("token_labels", {"labels": ENTITIES}),
    "token_labels_sigmoid": ("token_labels", {"classes": 3, "activation": "sigmoid"}),
    # Served without batching (max_batch_size 0): a request is one text, one row of logits.
    "tokenizer_unbatched": ("tokenizer", {"tokenizer": "roberta", "padding": "max_length"}),
    "postprocess_unbatched": ("postprocess", {"labels": LABELS, "activation": "sigmoid"}),
    "token_labels_unbatched": ("token_labels", {"labels": ENTITIES}),
}
UNBATCHED = {"tokenizer_unbatched", "postprocess_unbatched", "token_labels_unbatched"}


def config_text(name: str, definition: StepDefinition, max_batch: int = MAX_BATCH) -> str:
    """A config.pbtxt for a step, as the definition describes it (dynamic batching when it batches)."""

    def tensors(specs: list[dict[str, Any]]) -> str:
        entries = []
        for spec in specs:
            entry = f'name: "{spec["name"]}" data_type: TYPE_{spec["dtype"]} dims: {spec["dims"]}'
            if "label_filename" in spec:
                entry += f' label_filename: "{spec["label_filename"]}"'
            entries.append("{ " + entry + " }")
        return ", ".join(entries)

    parameters = ", ".join(
        f"{{ key: {json.dumps(key)} value: {{ string_value: {json.dumps(value)} }} }}"
        for key, value in definition.parameters.items()
    )
    return (
        f'name: "{name}"\nbackend: "{definition.backend}"\nmax_batch_size: {max_batch}\n'
        f"input [ {tensors(definition.inputs)} ]\noutput [ {tensors(definition.outputs)} ]\n"
        + ("dynamic_batching { max_queue_delay_microseconds: 100000 }\n" if max_batch else "")
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        f"parameters [ {parameters} ]\n"
    )


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Files the steps make (an inline label list's labels.txt) go to a cache of this module's own."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the steps' settings name, as a spec's directory would hold them."""
    root = tmp_path_factory.mktemp("spec")
    train_wordpiece(root / "tokenizer.json")
    make_roberta_tokenizer(root / "roberta", padding_side="left", truncation_side="left")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root


@pytest.fixture(scope="module")
def definitions(spec_dir: Path) -> dict[str, StepDefinition]:
    return {name: step_definition(kind, settings, spec_dir) for name, (kind, settings) in MODELS.items()}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, definitions: dict[str, StepDefinition]
) -> Iterator[EmbeddedServer]:
    repository = tmp_path_factory.mktemp("steps") / "model_repository"
    for name, definition in definitions.items():
        version = repository / name / "1"
        version.mkdir(parents=True)
        assert definition.model_file is not None
        shutil.copy(definition.model_file, version / "model.py")
        for target, source in definition.version_files.items():
            shutil.copy(source, version / target)
        for target, source in definition.model_files.items():
            shutil.copy(source, repository / name / target)
        batch = 0 if name in UNBATCHED else MAX_BATCH
        (repository / name / "config.pbtxt").write_text(config_text(name, definition, batch))
    with EmbeddedServer(repository, **free_ports()) as embedded:
        yield embedded


Outputs = dict[str, np.ndarray]


def send_together(
    server: EmbeddedServer, model: str, jobs: list[tuple[str, dict[str, np.ndarray]]], outputs: list[str]
) -> list[Outputs | InferenceServerException]:
    """Send each job (protocol, inputs) from its own thread at the same moment; the outputs or the error."""
    results: list[Outputs | InferenceServerException] = [InferenceServerException("not sent")] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def send(index: int, protocol: str, inputs: dict[str, np.ndarray]) -> None:
        module = httpclient if protocol == "http" else grpcclient
        url = server.endpoints.http if protocol == "http" else server.endpoints.grpc
        client = module.InferenceServerClient(url)
        tensors = []
        for name, array in inputs.items():
            tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        try:
            barrier.wait(timeout=30)
            result = client.infer(model, tensors)
            results[index] = {name: result.as_numpy(name) for name in outputs}
        except InferenceServerException as error:
            results[index] = error
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def statistics(server: EmbeddedServer, model: str) -> tuple[int, int]:
    """(successful requests, executions) of a model so far."""
    with httpclient.InferenceServerClient(server.endpoints.http) as client:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"]), int(stats["execution_count"])


def run_concurrently(
    server: EmbeddedServer, model: str, batches: list[dict[str, np.ndarray]], outputs: list[str]
):
    """Each batch sent once over HTTP and once over gRPC, all at once; checks the model batched them."""
    requests_before, executions_before = statistics(server, model)
    jobs = [(protocol, batch) for batch in batches for protocol in ("http", "grpc")]
    results = send_together(server, model, jobs, outputs)
    failures = [result for result in results if isinstance(result, Exception)]
    assert not failures, [str(f) for f in failures[:3]]
    requests, executions = settle(
        lambda: statistics(server, model), lambda s: s[0] - requests_before >= len(jobs)
    )
    assert requests - requests_before == len(jobs)
    assert executions - executions_before < len(jobs), "execute() never got more than one request"
    return [(batch, result) for (_, batch), result in zip(jobs, results, strict=True)]


def text_batches(seed: int, count: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    words = " ".join(SENTENCES).replace(",", "").split()
    batches = []
    for _ in range(count):
        rows = [" ".join(rng.choice(words, int(rng.integers(1, 6)))) for _ in range(int(rng.integers(1, 4)))]
        batches.append({"text": np.array([[row.encode()] for row in rows], dtype=object)})
    return batches


def image_bytes(rng: np.random.Generator) -> bytes:
    height, width = (int(v) for v in rng.integers(5, 40, 2))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG" if rng.random() < 0.5 else "JPEG")
    return buffer.getvalue()


def image_batches(seed: int, count: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"image": np.array([[image_bytes(rng)] for _ in range(int(rng.integers(1, 4)))], dtype=object)}
        for _ in range(count)
    ]


def output_names(definition: StepDefinition) -> list[str]:
    return [spec["name"] for spec in definition.outputs]


@pytest.mark.parametrize("model", ["tokenizer", "tokenizer_longest", "tokenizer_strict"])
def test_tokenizer_served_equals_in_process(server, definitions, spec_dir: Path, model: str) -> None:
    definition = definitions[model]
    tokenize = Tokenize(definition.parameters, spec_dir / "tokenizer.json")
    served = run_concurrently(server, model, text_batches(seed=len(model)), output_names(definition))
    widths = set()
    for batch, outputs in served:
        expected = tokenize(batch["text"].reshape(-1).tolist())
        assert outputs.keys() == expected.keys()
        for name, array in expected.items():
            assert outputs[name].dtype == array.dtype
            np.testing.assert_array_equal(outputs[name], array)
        widths.add(outputs["input_ids"].shape[1])
    if model == "tokenizer_longest":
        assert len(widths) > 1  # each request padded to its own longest text
    else:
        assert widths == {int(definition.outputs[0]["dims"][0])}


def test_a_text_too_long_fails_only_its_own_request(server, definitions, spec_dir: Path) -> None:
    tokenize = Tokenize(definitions["tokenizer_strict"].parameters, spec_dir / "tokenizer.json")
    good = [
        {"text": np.array([[b"hello world"], [b"the lazy dog"]], dtype=object)},
        {"text": np.array([[b"triton"]], dtype=object)},
    ]
    long = {"text": np.array([[b"fine"], [" ".join(SENTENCES).encode()]], dtype=object)}
    jobs = [("grpc", good[0]), ("http", long), ("http", good[1]), ("grpc", good[0])]
    results = send_together(server, "tokenizer_strict", jobs, ["input_ids"])
    assert isinstance(results[1], InferenceServerException)
    assert "model 'tokenizer_strict': batch row 1:" in str(results[1])
    assert "more than max_length 24; set truncation: true or raise max_length" in str(results[1])
    for index in (0, 2, 3):
        outputs = results[index]
        assert isinstance(outputs, dict), outputs
        expected = tokenize(jobs[index][1]["text"].reshape(-1).tolist())["input_ids"]
        np.testing.assert_array_equal(outputs["input_ids"], expected)


@pytest.mark.parametrize("model", ["image", "image_grey"])
def test_image_served_equals_in_process(server, definitions, model: str) -> None:
    definition = definitions[model]
    preprocess = PreprocessImage(definition.parameters)
    for batch, outputs in run_concurrently(server, model, image_batches(seed=len(model)), ["pixel_values"]):
        expected = preprocess(batch["image"].reshape(-1).tolist())["pixel_values"]
        assert outputs["pixel_values"].dtype == expected.dtype
        assert list(outputs["pixel_values"].shape[1:]) == definition.outputs[0]["dims"]
        np.testing.assert_array_equal(outputs["pixel_values"], expected)


def test_a_corrupt_image_fails_only_its_own_request(server, definitions) -> None:
    preprocess = PreprocessImage(definitions["image"].parameters)
    rng = np.random.default_rng(7)
    good = [{"image": np.array([[image_bytes(rng)] for _ in range(2)], dtype=object)} for _ in range(3)]
    corrupt = {"image": np.array([[image_bytes(rng)], [b"\x89PNG\r\n\x1a\n not really"]], dtype=object)}
    jobs = [("http", good[0]), ("grpc", corrupt), ("grpc", good[1]), ("http", good[2])]
    requests_before, executions_before = statistics(server, "image")
    results = send_together(server, "image", jobs, ["pixel_values"])
    assert isinstance(results[1], InferenceServerException)
    assert "model 'image': batch row 1: cannot decode the image" in str(results[1])
    for index in (0, 2, 3):
        outputs = results[index]
        assert isinstance(outputs, dict), outputs
        expected = preprocess(jobs[index][1]["image"].reshape(-1).tolist())["pixel_values"]
        np.testing.assert_array_equal(outputs["pixel_values"], expected)
    # Triton 2.51 counts a request the Python backend answers with an error as a success in its statistics.
    requests, executions = settle(
        lambda: statistics(server, "image"), lambda s: s[0] - requests_before >= len(jobs)
    )
    assert requests - requests_before == len(jobs)
    assert executions - executions_before < len(jobs)  # the failing request shared an execution


@pytest.mark.parametrize("model", ["postprocess", "postprocess_logits"])
def test_postprocess_served_equals_in_process(server, definitions, spec_dir: Path, model: str) -> None:
    definition = definitions[model]
    classes = int(definition.inputs[0]["dims"][0])
    labels = spec_dir / "labels.txt" if "labels_file" in definition.parameters else None
    postprocess = Postprocess(definition.parameters, labels)
    rng = np.random.default_rng(3)
    batches = [
        {"logits": (rng.standard_normal((int(rng.integers(1, 4)), classes)) * 4).astype(np.float32)}
        for _ in range(6)
    ]
    for batch, outputs in run_concurrently(server, model, batches, output_names(definition)):
        expected = postprocess(batch["logits"])
        assert outputs.keys() == expected.keys()
        for name, array in expected.items():
            if array.dtype == object:
                assert outputs[name].tolist() == array.tolist()
            else:
                np.testing.assert_allclose(outputs[name], array, rtol=1e-6, atol=1e-7)


def test_postprocess_labels_serve_the_classification_extension(server) -> None:
    logits = np.array([[0.1, 3.0, -2.0, 1.0, 0.5]], dtype=np.float32)
    with httpclient.InferenceServerClient(server.endpoints.http) as client:
        tensor = httpclient.InferInput("logits", [1, 5], "FP32")
        tensor.set_data_from_numpy(logits)
        wanted = [httpclient.InferRequestedOutput("probabilities", class_count=2)]
        result = client.infer("postprocess", [tensor], outputs=wanted)
    classes = [entry.decode().split(":") for entry in result.as_numpy("probabilities")[0]]
    assert [(int(index), label) for _, index, label in classes] == [(1, "dog"), (3, "fish")]
    assert result.as_numpy("labels") is None  # only the requested output comes back


def test_a_tokenizer_folder_served_equals_in_process_and_transformers(
    server, definitions, spec_dir: Path
) -> None:
    """The folder's settings (left padding and truncation, model_max_length, model_input_names) hold in
    the served step as in transformers."""
    from transformers import AutoTokenizer

    definition = definitions["tokenizer_folder"]
    assert output_names(definition) == ["input_ids", "attention_mask"]
    tokenize = Tokenize(definition.parameters, definition.version_files["tokenizer.json"])
    reference = AutoTokenizer.from_pretrained(str(spec_dir / "roberta"))
    rng = np.random.default_rng(11)
    batches = [
        {
            "text": np.array(
                [[TEXTS[int(i)].encode()] for i in rng.choice(len(TEXTS), int(rng.integers(1, 4)))],
                dtype=object,
            )
        }
        for _ in range(6)
    ]
    for batch, outputs in run_concurrently(server, "tokenizer_folder", batches, output_names(definition)):
        texts = [text.decode() for text in batch["text"].reshape(-1)]
        expected = reference(texts, padding=True, truncation=True, return_tensors="np")
        for name, array in tokenize(texts).items():
            assert outputs[name].dtype == array.dtype
            np.testing.assert_array_equal(outputs[name], array)
            np.testing.assert_array_equal(outputs[name], expected[name])


@pytest.mark.parametrize("model", ["token_labels", "token_labels_sigmoid"])
def test_token_labels_served_equals_in_process(server, definitions, model: str) -> None:
    definition = definitions[model]
    labels = definition.version_files.get("labels.txt")
    token_labels = TokenLabels(definition.parameters, labels)
    classes = int(definition.inputs[0]["dims"][1])
    rng = np.random.default_rng(5)
    # One token count for the batches sent together (Triton batches requests of one shape), and others alone.
    batches = [
        {"logits": (rng.standard_normal((int(rng.integers(1, 4)), 6, classes)) * 3).astype(np.float32)}
        for _ in range(6)
    ]
    served = run_concurrently(server, model, batches, output_names(definition))
    lengths = [
        {"logits": rng.standard_normal((2, tokens, classes)).astype(np.float32)} for tokens in (1, 9, 30)
    ]
    alone = send_together(server, model, [("grpc", batch) for batch in lengths], output_names(definition))
    for batch, outputs in [*served, *zip(lengths, alone, strict=True)]:
        assert isinstance(outputs, dict), outputs
        expected = token_labels(batch["logits"])
        assert outputs.keys() == expected.keys()
        for name, array in expected.items():
            assert outputs[name].shape == batch["logits"].shape[:2]
            if array.dtype == object:
                assert outputs[name].tolist() == array.tolist()
            else:
                np.testing.assert_allclose(outputs[name], array, rtol=1e-6, atol=1e-7)


def test_token_labels_logits_of_another_width_fail_alone(server) -> None:
    """The config's dims [-1, N] let Triton refuse logits of another width before the step runs; the
    request beside it is answered."""
    good = {"logits": np.zeros((1, 4, 5), dtype=np.float32)}
    jobs = [("http", good), ("grpc", {"logits": np.zeros((1, 4, 3), dtype=np.float32)})]
    results = send_together(server, "token_labels", jobs, ["labels"])
    assert isinstance(results[0], dict) and results[0]["labels"].tolist() == [[b"O"] * 4]
    assert isinstance(results[1], InferenceServerException)
    assert (
        "unexpected shape for input 'logits' for model 'token_labels'. Expected [-1,-1,5], got [1,4,3]"
        in str(results[1])
    )


def test_steps_without_batching_answer_one_row_without_its_axis(server, definitions) -> None:
    """With max_batch_size 0 a request carries exactly the config's dims, and so do the outputs."""
    tokenize = Tokenize(
        definitions["tokenizer_unbatched"].parameters,
        definitions["tokenizer_unbatched"].version_files["tokenizer.json"],
    )
    postprocess = Postprocess(definitions["postprocess_unbatched"].parameters, LABELS)
    token_labels = TokenLabels(definitions["token_labels_unbatched"].parameters, ENTITIES)
    rng = np.random.default_rng(2)
    cases = [
        (
            "tokenizer_unbatched",
            {"text": np.array([TEXTS[4].encode()], dtype=object)},
            lambda a: tokenize([a[0]]),
        ),
        (
            "postprocess_unbatched",
            {"logits": rng.standard_normal(5).astype(np.float32)},
            lambda a: postprocess(a[None]),
        ),
        (
            "token_labels_unbatched",
            {"logits": rng.standard_normal((7, 5)).astype(np.float32)},
            lambda a: token_labels(a[None]),
        ),
    ]
    for model, inputs, expect in cases:
        names = output_names(definitions[model])
        for protocol in ("http", "grpc"):
            (outputs,) = send_together(server, model, [(protocol, inputs)], names)
            assert isinstance(outputs, dict), outputs
            expected = {name: array[0] for name, array in expect(next(iter(inputs.values()))).items()}
            for name, array in expected.items():
                assert list(outputs[name].shape) == list(array.shape), (model, name)
                if array.dtype == object:
                    assert outputs[name].tolist() == array.tolist()
                else:
                    np.testing.assert_allclose(outputs[name], array, rtol=1e-6, atol=1e-7)


# -- the image step from a Hugging Face processor folder, and TensorFlow's resize ---------------------------

#: Image models served by a repository of their own: (settings, the spec directory's processor folder).
IMAGE_MODELS: dict[str, dict[str, Any]] = {
    # a CLIP-style processor: the shortest edge to 24 (bicubic), a 20 x 18 centre crop, CLIP's mean and std
    "image_processor": {"processor": "clip"},
    # TensorFlow's bilinear resize of the shortest edge, a crop larger than some images, NHWC, FP16
    "image_tensorflow": {
        "resize": {"shortest_edge": 14, "longest_edge": 30},
        "center_crop": [16, 12],
        "resize_method": "tensorflow",
        "mean": 0.5,
        "std": 0.5,
        "layout": "nhwc",
        "dtype": "fp16",
    },
    # served without batching (max_batch_size 0): a request is one image, the output [C, H, W]
    "image_unbatched": {"processor": "clip", "resample": "bilinear"},
}


@pytest.fixture(scope="module")
def image_spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spec directory holding a processor folder saved by transformers."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    root = tmp_path_factory.mktemp("image_spec")
    processor = CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 20, "width": 18})
    processor.save_pretrained(root / "clip")
    return root


@pytest.fixture(scope="module")
def image_definitions(image_spec_dir: Path) -> dict[str, StepDefinition]:
    return {
        name: step_definition("image", settings, image_spec_dir) for name, settings in IMAGE_MODELS.items()
    }


@pytest.fixture(scope="module")
def image_server(
    tmp_path_factory: pytest.TempPathFactory, image_definitions: dict[str, StepDefinition]
) -> Iterator[EmbeddedServer]:
    repository = tmp_path_factory.mktemp("image_steps") / "model_repository"
    for name, definition in image_definitions.items():
        version = repository / name / "1"
        version.mkdir(parents=True)
        assert definition.model_file is not None and not definition.version_files
        shutil.copy(definition.model_file, version / "model.py")
        batch = 0 if name == "image_unbatched" else MAX_BATCH
        (repository / name / "config.pbtxt").write_text(config_text(name, definition, batch))
    with EmbeddedServer(repository, **free_ports()) as embedded:
        yield embedded


def mixed_image_bytes(rng: np.random.Generator) -> bytes:
    """An image of a random size in a random mode: RGB, RGBA, P with transparency, L, or 16-bit grey."""
    height, width = (int(v) for v in rng.integers(5, 48, 2))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    kind = int(rng.integers(0, 5))
    options: dict[str, Any] = {}
    if kind == 1:
        image.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
    elif kind == 2:
        image, options = image.quantize(8), {"transparency": 2}
    elif kind == 3:
        image = image.convert("L")
    elif kind == 4:
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("model", ["image_processor", "image_tensorflow"])
def test_image_step_from_processor_and_tensorflow_served_equals_in_process(
    image_server, image_definitions, image_spec_dir: Path, model: str
) -> None:
    """Over HTTP and gRPC, batched by Triton: the served step equals PreprocessImage in-process; the
    processor's step equals transformers' own processor loaded from the folder, on images loaded as its
    pipelines load them."""
    from transformers.image_utils import load_image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    definition = image_definitions[model]
    preprocess = PreprocessImage(definition.parameters)
    reference = CLIPImageProcessorPil.from_pretrained(image_spec_dir / "clip")
    rng = np.random.default_rng(len(model))
    batches = [
        {"image": np.array([[mixed_image_bytes(rng)] for _ in range(int(rng.integers(1, 4)))], dtype=object)}
        for _ in range(6)
    ]
    for batch, outputs in run_concurrently(image_server, model, batches, ["pixel_values"]):
        images = batch["image"].reshape(-1).tolist()
        expected = preprocess(images)["pixel_values"]
        assert outputs["pixel_values"].dtype == expected.dtype
        assert list(outputs["pixel_values"].shape[1:]) == definition.outputs[0]["dims"]
        np.testing.assert_array_equal(outputs["pixel_values"], expected)
        if model != "image_processor":
            continue
        for row, data in enumerate(images):
            with Image.open(io.BytesIO(data)) as image:
                if image.mode.startswith("I"):
                    continue  # transformers clips 16-bit grey to white; the step scales it
                if image.mode == "P" and "transparency" in image.info:
                    # load_image keeps a palette's transparent colour as a key that CLIP's convert_rgb
                    # then composites onto white, where the step (alpha: drop) keeps the colour: a known
                    # difference, in README.
                    continue
                # A processor folder gives the step transformers' pipelines' loading (EXIF orientation,
                # alpha dropped: load_image) before the processor.
                theirs = reference(images=[load_image(image)], return_tensors="np")["pixel_values"][0]
            np.testing.assert_allclose(outputs["pixel_values"][row], theirs, rtol=0, atol=1e-5)


def test_image_step_without_batching_answers_one_image_without_its_axis(
    image_server, image_definitions
) -> None:
    definition = image_definitions["image_unbatched"]
    preprocess = PreprocessImage(definition.parameters)
    rng = np.random.default_rng(8)
    for protocol in ("http", "grpc"):
        data = mixed_image_bytes(rng)
        (outputs,) = send_together(
            image_server,
            "image_unbatched",
            [(protocol, {"image": np.array([data], dtype=object)})],
            ["pixel_values"],
        )
        assert isinstance(outputs, dict), outputs
        assert list(outputs["pixel_values"].shape) == definition.outputs[0]["dims"]
        np.testing.assert_array_equal(outputs["pixel_values"], preprocess([data])["pixel_values"][0])
