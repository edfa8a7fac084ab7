"""Unit tests of the built-in pipeline steps: each step's pure class against the library it wraps
(``tokenizers``, Pillow, numpy) called directly, the catalogue's definitions per setting, and every bad
setting's error."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from generator.core.errors import MissingDependencyError, SpecError
from generator.steps import (
    STEP_KINDS,
    ImageSettings,
    PostprocessSettings,
    TokenizerSettings,
    dali,
    settings_schema,
    step_definition,
)
from generator.steps.image import PreprocessImage
from generator.steps.postprocess import Postprocess
from generator.steps.tokenizer import Tokenize

from ..conftest import imported_modules

STEPS_DIR = Path(__file__).resolve().parents[2] / "generator" / "steps"
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, triton serves models",
    "a tokenizer trained in a test on a few sentences",
    "pipelines chain a tokenizer, a model and a post-processor",
]
TEXTS = ["hello world", "the lazy dog jumps over the quick brown fox again and again and again", "", "triton"]


def train_wordpiece(path: Path, special: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")) -> Path:
    """A small BERT-like WordPiece tokenizer, trained offline on SENTENCES, saved as tokenizer.json."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        SENTENCES, trainers.WordPieceTrainer(vocab_size=150, special_tokens=list(special))
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    tokenizer.save(str(path))
    return path


def train_bpe(path: Path, special: tuple[str, ...] = ("<unk>",)) -> Path:
    """A small byte-level BPE tokenizer (GPT-2 style, no pad token unless ``special`` has one)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator(
        SENTENCES, trainers.BpeTrainer(vocab_size=300, special_tokens=list(special))
    )
    tokenizer.save(str(path))
    return path


@pytest.fixture
def wordpiece(tmp_path: Path) -> Path:
    return train_wordpiece(tmp_path / "tokenizer.json")


def reference_tokens(
    path: Path,
    texts: list[str],
    max_length: int,
    *,
    length: int | None,
    truncation: bool = True,
    special=True,
) -> dict[str, np.ndarray]:
    """The library's own encode, one text at a time, padded here to ``length`` (the longest when None)."""
    tokenizer = Tokenizer.from_file(str(path))
    if truncation:
        tokenizer.enable_truncation(max_length)
    encodings = [tokenizer.encode(text, add_special_tokens=special) for text in texts]
    width = length if length is not None else max(len(e.ids) for e in encodings)
    pad = tokenizer.token_to_id("[PAD]")
    result = {}
    for name, attribute, fill in (
        ("input_ids", "ids", pad),
        ("attention_mask", "attention_mask", 0),
        ("token_type_ids", "type_ids", 0),
    ):
        rows = [list(getattr(e, attribute)) + [fill] * (width - len(e.ids)) for e in encodings]
        result[name] = np.array(rows, dtype=np.int64)
    return result


# -- tokenizer ---------------------------------------------------------------------------------------------


def test_tokenize_pads_and_truncates_to_max_length_as_the_library_encodes(wordpiece: Path) -> None:
    outputs = Tokenize({"max_length": "8"}, wordpiece)(TEXTS)
    expected = reference_tokens(wordpiece, TEXTS, 8, length=8)
    assert set(outputs) == set(expected)
    for name, array in expected.items():
        assert outputs[name].dtype == np.int64 and outputs[name].shape == (len(TEXTS), 8)
        np.testing.assert_array_equal(outputs[name], array)
    assert outputs["input_ids"][2].tolist()[:2] == [
        Tokenizer.from_file(str(wordpiece)).token_to_id(t) for t in ("[CLS]", "[SEP]")
    ]
    assert outputs["attention_mask"][1].sum() == 8  # the long text was cut to max_length


def test_tokenize_longest_pads_to_the_longest_text_of_the_call(wordpiece: Path) -> None:
    tokenize = Tokenize({"max_length": 64, "padding": "longest"}, wordpiece)
    outputs = tokenize(TEXTS[:1] + TEXTS[3:])
    expected = reference_tokens(wordpiece, TEXTS[:1] + TEXTS[3:], 64, length=None)
    assert outputs["input_ids"].shape == (2, 4)  # [CLS] hello world [SEP]
    for name, array in expected.items():
        np.testing.assert_array_equal(outputs[name], array)
    assert tokenize(TEXTS)["input_ids"].shape[1] > 8


def test_tokenize_without_truncation(wordpiece: Path) -> None:
    with pytest.raises(ValueError, match=r"batch row 1: \d+ tokens, more than max_length 8; set truncation"):
        Tokenize({"max_length": 8, "truncation": "false"}, wordpiece)(TEXTS)
    outputs = Tokenize({"max_length": 8, "truncation": False, "padding": "longest"}, wordpiece)(TEXTS)
    expected = reference_tokens(wordpiece, TEXTS, 8, length=None, truncation=False)
    np.testing.assert_array_equal(outputs["input_ids"], expected["input_ids"])
    assert outputs["input_ids"].shape[1] > 8


def test_tokenize_options(wordpiece: Path) -> None:
    settings = {
        "max_length": 6,
        "add_special_tokens": "false",
        "dtype": "INT32",
        "outputs": "input_ids,attention_mask",
    }
    outputs = Tokenize(settings, wordpiece)(TEXTS)
    expected = reference_tokens(wordpiece, TEXTS, 6, length=6, special=False)
    assert list(outputs) == ["input_ids", "attention_mask"]
    assert outputs["input_ids"].dtype == np.int32
    np.testing.assert_array_equal(outputs["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(outputs["attention_mask"], expected["attention_mask"])


def test_tokenize_takes_bytes_and_names_a_row_that_is_not_utf8(wordpiece: Path) -> None:
    tokenize = Tokenize({}, wordpiece)
    as_bytes = tokenize([t.encode() for t in TEXTS])
    np.testing.assert_array_equal(as_bytes["input_ids"], tokenize(TEXTS)["input_ids"])
    assert as_bytes["input_ids"].shape == (len(TEXTS), 128)
    with pytest.raises(ValueError, match=r"batch row 1: the text is not valid UTF-8"):
        tokenize([b"fine", b"\xff\xfe broken"])


def test_tokenize_finds_the_pad_token(tmp_path: Path) -> None:
    named = train_bpe(tmp_path / "named.json", special=("<unk>", "<pad>"))
    assert Tokenize({}, named).pad_token == "<pad>"
    assert Tokenize({}, named)(["hello"])["input_ids"][0, -1] == Tokenizer.from_file(str(named)).token_to_id(
        "<pad>"
    )

    sectioned = Tokenizer.from_file(str(train_bpe(tmp_path / "s.json", special=("<unk>", "<blank>"))))
    sectioned.enable_padding(pad_id=sectioned.token_to_id("<blank>"), pad_token="<blank>")
    sectioned.save(str(tmp_path / "sectioned.json"))
    assert Tokenize({}, tmp_path / "sectioned.json").pad_token == "<blank>"

    bare = train_bpe(tmp_path / "bare.json")
    with pytest.raises(ValueError, match=r"has no pad token .* set pad_token to one of its tokens"):
        Tokenize({}, bare)
    tokenize = Tokenize({"pad_token": "<unk>", "max_length": 5}, bare)
    assert tokenize(["hello"])["input_ids"][0, -1] == Tokenizer.from_file(str(bare)).token_to_id("<unk>")
    with pytest.raises(ValueError, match="pad_token 'nope' is not in the vocabulary"):
        Tokenize({"pad_token": "nope"}, bare)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_length": 0}, "max_length must be at least 1"),
        ({"padding": "none"}, "padding must be max_length or longest"),
        ({"dtype": "FP32"}, "dtype must be INT64 or INT32"),
        ({"outputs": "input_ids,offsets"}, "outputs must be some of"),
        ({"truncation": "maybe"}, "expected true or false"),
    ],
)
def test_tokenize_refuses_bad_settings(wordpiece: Path, settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tokenize(settings, wordpiece)


# -- image -------------------------------------------------------------------------------------------------


def encoded(array: np.ndarray, format: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=format)
    return buffer.getvalue()


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def reference_pixels(
    data: bytes, mode: str, size: tuple[int, int], resample, scale, mean, std, layout="NCHW"
):
    """Pillow and numpy called directly: decode, convert, resize, (x * scale - mean) / std, layout."""
    image = Image.open(io.BytesIO(data)).convert(mode).resize((size[1], size[0]), resample)
    values = np.asarray(image, dtype=np.float64).reshape(size[0], size[1], -1)
    values = (values * scale - np.asarray(mean)) / np.asarray(std)
    return values.transpose(2, 0, 1) if layout == "NCHW" else values


def test_preprocess_png_and_jpeg_like_pillow(tmp_path: Path) -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    settings = {"size": "12,10", "mean": ",".join(map(str, mean)), "std": std}
    images = [encoded(picture(30, 40, 1)), encoded(picture(20, 16, 2), "JPEG"), encoded(picture(7, 5, 3))]
    outputs = PreprocessImage(settings)(images)
    values = outputs["pixel_values"]
    assert list(outputs) == ["pixel_values"] and values.dtype == np.float32 and values.shape == (3, 3, 12, 10)
    for row, data in enumerate(images):
        expected = reference_pixels(data, "RGB", (12, 10), Image.Resampling.BILINEAR, 1 / 255, mean, std)
        np.testing.assert_allclose(values[row], expected, rtol=1e-5, atol=1e-5)


def test_preprocess_grey_nhwc_fp16_nearest() -> None:
    preprocess = PreprocessImage(
        {
            "size": [4, 6],
            "channels": 1,
            "resize": "nearest",
            "layout": "NHWC",
            "dtype": "FP16",
            "scale": 1.0,
            "mean": [128],
            "std": [64],
        }
    )
    # opaque: transparency (composited onto white) is tested in test_steps_image.py
    rgba = np.dstack([picture(8, 12, 4), np.full((8, 12), 255, np.uint8)])
    data = encoded(rgba, mode="RGBA")
    values = preprocess([data])["pixel_values"]
    assert values.dtype == np.float16 and values.shape == (1, 4, 6, 1) and preprocess.dims == [4, 6, 1]
    expected = reference_pixels(data, "L", (4, 6), Image.Resampling.NEAREST, 1.0, [128], [64], layout="NHWC")
    np.testing.assert_allclose(values[0].astype(np.float64), expected, rtol=1e-3, atol=1e-3)


def test_preprocess_bicubic_and_defaults() -> None:
    data = encoded(picture(9, 9, 5))
    values = PreprocessImage({"size": [5, 5], "resize": "bicubic"})([data])["pixel_values"]
    expected = reference_pixels(data, "RGB", (5, 5), Image.Resampling.BICUBIC, 1 / 255, [0, 0, 0], [1, 1, 1])
    np.testing.assert_allclose(values[0], expected, rtol=1e-6, atol=1e-6)
    assert values.min() >= 0.0 and values.max() <= 1.0


def test_preprocess_names_the_row_of_an_image_it_cannot_decode() -> None:
    preprocess = PreprocessImage({"size": [4, 4]})
    good = encoded(picture(8, 8))
    with pytest.raises(
        ValueError, match=r"batch row 1: cannot decode the image: not an image format Pillow can read"
    ):
        preprocess([good, b"not an image"])
    truncated = encoded(picture(64, 64), "JPEG")[:300]
    with pytest.raises(ValueError, match=r"(?i)batch row 2: cannot decode the image: .*truncated"):
        preprocess([good, good, truncated])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "size is required"),
        ({"size": "4,5,6"}, r"size must be \[height, width\]"),
        ({"size": [4, 4], "channels": 2}, "channels must be 1 or 3"),
        ({"size": [4, 4], "resize": "area"}, "resize must be {shortest_edge: N}"),
        ({"size": [4, 4], "mean": [1, 2]}, "mean needs 3 value"),
        ({"size": [4, 4], "std": [1, 0, 1]}, "std must not be 0"),
        ({"size": [4, 4], "layout": "CHW"}, "layout must be NCHW or NHWC"),
        ({"size": [4, 4], "dtype": "INT8"}, "dtype must be FP32 or FP16"),
    ],
)
def test_preprocess_refuses_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PreprocessImage(settings)


# -- postprocess -------------------------------------------------------------------------------------------


def test_postprocess_softmax_and_top_k_as_numpy() -> None:
    logits = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32) * 5
    logits[0, 3] = 1000.0  # large logits stay finite
    outputs = Postprocess({"classes": "10", "top_k": "3"})(logits)
    exp = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    order = np.argsort(-probabilities, axis=1)[:, :3]
    assert list(outputs) == ["probabilities", "scores", "indices"]
    np.testing.assert_allclose(outputs["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(outputs["indices"], order)
    np.testing.assert_allclose(outputs["scores"], np.take_along_axis(probabilities, order, 1), rtol=1e-5)
    assert outputs["probabilities"].dtype == np.float32 and outputs["indices"].dtype == np.int64
    assert outputs["indices"][0, 0] == 3


def test_postprocess_labels_without_softmax(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n\n")
    logits = np.array([[0.5, 2.0, -1.0], [3.0, 3.0, 1.0]], dtype=np.float32)
    outputs = Postprocess({"softmax": "false"}, labels)(logits)
    assert list(outputs) == ["scores", "indices", "labels"]  # no probabilities without softmax
    np.testing.assert_array_equal(outputs["indices"], [[1, 0, 2], [0, 1, 2]])  # ties in class order
    np.testing.assert_array_equal(outputs["scores"], [[2.0, 0.5, -1.0], [3.0, 3.0, 1.0]])
    assert outputs["labels"].tolist() == [[b"dog", b"cat", b"bird"], [b"cat", b"dog", b"bird"]]
    assert Postprocess({}, ["a", "b"]).top_k == 2


@pytest.mark.parametrize(
    ("settings", "labels", "message"),
    [
        ({}, None, "the number of classes is unknown"),
        ({"classes": 3}, ["a", "b"], "classes is 3 but there are 2 labels"),
        ({"classes": 3, "top_k": 4}, None, r"top_k must be between 1 and classes \(3\)"),
        ({"classes": 0}, None, "classes must be at least 1"),
    ],
)
def test_postprocess_refuses_bad_settings(settings: dict, labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Postprocess(settings, labels)


def test_postprocess_refuses_logits_of_another_width() -> None:
    with pytest.raises(ValueError, match=r"expected logits of shape \[rows, 4\], got \[2, 3\]"):
        Postprocess({"classes": 4})(np.zeros((2, 3), np.float32))


# -- the catalogue -----------------------------------------------------------------------------------------


def test_tokenizer_definition(wordpiece: Path) -> None:
    definition = step_definition("tokenizer", {"tokenizer": wordpiece.name}, wordpiece.parent)
    assert definition.backend == "python" and definition.model_file == STEPS_DIR / "tokenizer.py"
    assert definition.inputs == [{"name": "text", "dtype": "STRING", "dims": [1]}]
    assert definition.outputs == [
        {"name": name, "dtype": "INT64", "dims": [128]}
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert definition.version_files == {"tokenizer.json": wordpiece} and definition.model_files == {}
    assert definition.parameters["pad_token"] == "[PAD]"
    longest = step_definition(
        "tokenizer",
        {
            "tokenizer": str(wordpiece),
            "padding": "longest",
            "dtype": "int32",
            "outputs": ["input_ids"],
            "max_length": 16,
        },
        Path("/nonexistent"),  # an absolute tokenizer path does not depend on the spec's directory
    )
    assert longest.outputs == [{"name": "input_ids", "dtype": "INT32", "dims": [-1]}]
    # The step file reads the parameters back to the same behaviour as the settings say.
    tokenize = Tokenize(longest.parameters, wordpiece)
    assert (tokenize.padding, tokenize.max_length, tokenize.outputs, tokenize.dtype) == (
        "longest",
        16,
        ("input_ids",),
        np.int32,
    )


def test_image_definition() -> None:
    settings = {"size": [32, 48], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 0.003}
    definition = step_definition("image", settings, Path("."))
    assert definition.inputs == [{"name": "image", "dtype": "STRING", "dims": [1]}]
    assert definition.outputs == [{"name": "pixel_values", "dtype": "FP32", "dims": [3, 32, 48]}]
    assert definition.model_file == STEPS_DIR / "image.py" and definition.write_dali is None
    preprocess = PreprocessImage(definition.parameters)
    assert (preprocess.height, preprocess.width, preprocess.scale) == (32, 48, 0.003)
    np.testing.assert_array_equal(preprocess.std, [0.25] * 3)
    nhwc = step_definition(
        "image", {"size": [8, 9], "channels": 1, "layout": "NHWC", "dtype": "FP16"}, Path(".")
    )
    assert nhwc.outputs == [{"name": "pixel_values", "dtype": "FP16", "dims": [8, 9, 1]}]
    assert PreprocessImage(nhwc.parameters).dims == [8, 9, 1]


@pytest.mark.skipif(dali.dali_available(), reason="NVIDIA DALI is installed here")
def test_image_dali_without_dali_says_how_to_install_it() -> None:
    with pytest.raises(
        MissingDependencyError, match=r"nvidia-dali-cuda120 \(or use the image step's backend: python\)"
    ):
        step_definition("image", {"size": [8, 8], "backend": "dali"}, Path("."))


@pytest.mark.skipif(
    not dali.dali_available(),
    reason="NVIDIA DALI (nvidia.dali) is not installed; install it with " + dali.INSTALL_HINT,
)
def test_image_dali_writes_a_pipeline(tmp_path: Path) -> None:
    definition = step_definition("image", {"size": [8, 8], "backend": "dali"}, Path("."))
    assert (
        definition.backend == "dali" and definition.model_file is None and definition.write_dali is not None
    )
    assert definition.inputs == [{"name": "image", "dtype": "UINT8", "dims": [-1]}]
    definition.write_dali(tmp_path / "1" / "model.dali", 8)
    assert (tmp_path / "1" / "model.dali").stat().st_size > 0


def test_postprocess_definition(tmp_path: Path) -> None:
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(7)) + "\n")
    definition = step_definition("postprocess", {"labels": "classes.txt", "top_k": 3}, tmp_path)
    assert definition.inputs == [{"name": "logits", "dtype": "FP32", "dims": [7]}]
    assert definition.outputs == [
        {"name": "probabilities", "dtype": "FP32", "dims": [7], "label_filename": "labels.txt"},
        {"name": "scores", "dtype": "FP32", "dims": [3]},
        {"name": "indices", "dtype": "INT64", "dims": [3]},
        {"name": "labels", "dtype": "STRING", "dims": [3]},
    ]
    assert definition.version_files == {"labels.txt": labels} and definition.model_files == {
        "labels.txt": labels
    }
    assert definition.parameters == {
        "classes": "7",
        "top_k": "3",
        "activation": "softmax",
        "labels_file": "labels.txt",
    }

    raw = step_definition("postprocess", {"classes": 1000, "softmax": False}, tmp_path)
    assert [o["name"] for o in raw.outputs] == ["scores", "indices"]
    assert raw.outputs[0]["dims"] == [5] and raw.version_files == {} and raw.model_files == {}
    no_softmax_labels = step_definition("postprocess", {"labels": str(labels), "softmax": False}, Path("."))
    assert no_softmax_labels.model_files == {} and no_softmax_labels.version_files == {"labels.txt": labels}
    assert step_definition("postprocess", {"classes": 3}, tmp_path).parameters["top_k"] == "3"


def test_settings_instances_are_accepted(wordpiece: Path) -> None:
    settings = TokenizerSettings(tokenizer=str(wordpiece), max_length=9)
    assert step_definition("tokenizer", settings, Path(".")).outputs[0]["dims"] == [9]


def _problems(kind: str, settings: dict, spec_dir: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        step_definition(kind, settings, spec_dir)
    return caught.value.problems


@pytest.mark.parametrize(
    ("kind", "settings", "expected"),
    [
        ("tokenizer", {}, ["step.tokenizer: required setting is missing; add it"]),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "max_length": 0},
            ["step.max_length: must be at least 1 (got 0)"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "padding": "none"},
            ["step.padding: must be 'max_length' or 'longest' (got \"none\")"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "truncation": "maybe"},
            ["step.truncation: must be a valid boolean"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "add_special_tokens": []},
            ["step.add_special_tokens: must be a valid boolean"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "dtype": "FP32"},
            ["step.dtype: must be 'INT64' or 'INT32' (got \"FP32\")"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "outputs": ["ids"]},
            ["step.outputs[0]: must be 'input_ids', 'attention_mask' or 'token_type_ids' (got \"ids\")"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "outputs": []},
            ["step.outputs: must hold at least 1 item(s), got 0"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "outputs": ["input_ids", "input_ids"]},
            ["step.outputs: names an output twice"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "pad_token": ""},
            ["step.pad_token: must not be empty"],
        ),
        (
            "tokenizer",
            {"tokenizer": "tok.json", "max_len": 8},
            ["step.max_len: unknown setting; the settings of this step are: tokenizer, max_length"],
        ),
        ("image", {}, ["step: size is required: [height, width] of the output"]),
        (
            "image",
            {"size": [4, 4, 4]},
            ["step.size: must be [height, width] or one number (a square), got 3"],
        ),
        ("image", {"size": [4, 0]}, ["step.size: height and width must be positive integers"]),
        ("image", {"size": [4, 4], "channels": 4}, ["step.channels: must be 1 or 3 (got 4)"]),
        (
            "image",
            {"size": [4, 4], "resize": "area"},
            ["step.resize: must be {shortest_edge: N}", "or a filter name (nearest, lanczos", '(got "area")'],
        ),
        ("image", {"size": [4, 4], "scale": 0}, ["step.scale: must be greater than 0 (got 0)"]),
        ("image", {"size": [4, 4], "scale": float("inf")}, ["step.scale: must be a finite number"]),
        ("image", {"size": [4, 4], "mean": [0.5]}, ["step: mean needs 3 value(s), one per channel, got 1"]),
        ("image", {"size": [4, 4], "std": [1, 0, 1]}, ["step: std values must not be 0"]),
        (
            "image",
            {"size": [4, 4], "channels": 1, "std": [float("nan")]},
            ["step: std values must be finite numbers"],
        ),
        ("image", {"size": [4, 4], "layout": "CHW"}, ["step.layout: must be 'NCHW' or 'NHWC' (got \"CHW\")"]),
        (
            "image",
            {"size": [4, 4], "dtype": "UINT8"},
            ["step.dtype: must be 'FP32' or 'FP16' (got \"UINT8\")"],
        ),
        (
            "image",
            {"size": [4, 4], "backend": "opencv"},
            ["step.backend: must be 'python' or 'dali' (got \"opencv\")"],
        ),
        ("postprocess", {}, ["step.classes: the number of classes is unknown; set classes or labels"]),
        ("postprocess", {"classes": 0}, ["step.classes: must be at least 1 (got 0)"]),
        ("postprocess", {"classes": 3, "top_k": 0}, ["step.top_k: must be at least 1 (got 0)"]),
        (
            "postprocess",
            {"classes": 3, "top_k": 4},
            ["step.top_k: 4 is more than the 3 classes; use at most 3"],
        ),
        ("postprocess", {"classes": 3, "softmax": "perhaps"}, ["step.softmax: must be a valid boolean"]),
        (
            "postprocess",
            {"labels": "labels.txt", "classes": 4},
            ["step.classes: 4 classes but '", "has 3 labels; make them agree or leave classes out"],
        ),
        (
            "postprocess",
            {"labels": "empty.txt"},
            ["step.labels: '", "empty.txt' has no labels; write one label per line"],
        ),
        (
            "postprocess",
            {"labels": "gaps.txt"},
            ["step.labels: '", "gaps.txt' has empty labels on line(s) 2; one label per line"],
        ),
        ("postprocess", {"labels": "binary.txt"}, ["step.labels: cannot read '", "as UTF-8 text"]),
        (
            "postprocess",
            {"labels": "missing.txt"},
            ["step.labels: '", "missing.txt' does not exist; give the path relative to the spec's directory"],
        ),
        ("postprocess", {"labels": "."}, ["step.labels: '", "' is a directory, not a file"]),
        ("postprocess", {"classes": 3, "labels_file": "x"}, ["step.labels_file: unknown setting"]),
    ],
)
def test_every_bad_setting_is_named(tmp_path: Path, kind: str, settings: dict, expected: list[str]) -> None:
    train_wordpiece(tmp_path / "tok.json")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "gaps.txt").write_text("a\n\nc\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    problems = _problems(kind, settings, tmp_path)
    assert len(problems) == 1, problems
    for fragment in expected:
        assert fragment in problems[0], problems


def test_tokenizer_file_problems_are_named(tmp_path: Path) -> None:
    (tmp_path / "notjson.json").write_text("{")
    (tmp_path / "other.json").write_text('{"vocab": {}}')
    train_bpe(tmp_path / "bare.json")
    cases = {
        "missing.json": "step.tokenizer: '{}' does not exist",
        "notjson.json": "step.tokenizer: '{}' is not a tokenizer.json file (",
        "other.json": "step.tokenizer: '{}' is not a Hugging Face tokenizer.json (it has no 'model' section)",
        "bare.json": "step.padding: padding needs a pad token and the tokenizer '{}' has none",
    }
    for name, message in cases.items():
        assert message.format(tmp_path / name) in _problems("tokenizer", {"tokenizer": name}, tmp_path)[0]
    settings = {"tokenizer": "bare.json", "pad_token": "<nope>"}
    assert _problems("tokenizer", settings, tmp_path) == [
        f"step.pad_token: '<nope>' is not a token of '{tmp_path / 'bare.json'}'; name one of its tokens"
    ]
    settings["pad_token"] = "<unk>"
    assert step_definition("tokenizer", settings, tmp_path).parameters["pad_token"] == "<unk>"


def test_several_problems_come_one_line_each(tmp_path: Path) -> None:
    problems = _problems("image", {"size": [4, -1], "layout": "x", "dtype": "y", "extra": 1}, tmp_path)
    assert [line.split(":")[0] for line in problems] == [
        "step.size",
        "step.layout",
        "step.dtype",
        "step.extra",
    ]


def test_unknown_kind() -> None:
    with pytest.raises(
        SpecError,
        match=r"source: 'builtin:ocr' is not a built-in step; use one of builtin:tokenizer, builtin:image, builtin:postprocess",
    ):
        step_definition("ocr", {}, Path("."))


def test_schema_and_defaults_agree_with_the_step_files() -> None:
    from generator.steps import image, postprocess, tokenizer

    assert set(STEP_KINDS) == {"tokenizer", "image", "postprocess", "token_labels", "generate"}
    for kind in STEP_KINDS:
        schema = settings_schema(kind)
        assert schema["additionalProperties"] is False
        assert all(field.get("description") for field in schema["properties"].values()), kind
    tokenizer_defaults = TokenizerSettings(tokenizer="t.json")
    for name, value in tokenizer.DEFAULTS.items():
        expected = getattr(tokenizer_defaults, name)
        if expected is None and name == "outputs":  # the folder's model_input_names, else all three
            continue
        assert (list(value) if isinstance(value, tuple) else value) == expected, name
    image_defaults = ImageSettings(size=[1, 1])
    for name, value in image.DEFAULTS.items():
        assert value == getattr(image_defaults, name), name
    post_defaults = PostprocessSettings()
    for name, value in postprocess.DEFAULTS.items():
        assert value == getattr(post_defaults, name), name


def test_step_files_are_self_contained() -> None:
    """They run inside Triton's Python backend with numpy and their one library: no package imports."""
    allowed = {
        "__future__",
        "io",
        "json",
        "collections",
        "pathlib",
        "numpy",
        "tokenizers",
        "PIL",
        "triton_python_backend_utils",
    }
    for name in ("tokenizer.py", "image.py", "postprocess.py"):
        modules = imported_modules(STEPS_DIR / name)
        assert modules <= allowed, (name, modules - allowed)
        tree = ast.parse((STEPS_DIR / name).read_text())
        top_level = {
            alias.name
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        assert (
            "triton_python_backend_utils" not in top_level
            and "Image" not in top_level
            and "Tokenizer" not in top_level
        )


def test_the_catalogue_imports_no_step_library() -> None:
    code = "import sys, generator.steps; print(sorted(m for m in ('tokenizers', 'PIL', 'nvidia.dali') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.replace("'", '"')) == []
