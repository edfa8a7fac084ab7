"""The image step against the libraries whose results it reproduces.

- transformers' image processors (the PIL backend classes, ``*ImageProcessorPil``: transformers 5 names its
  slow processors so, ``use_fast=False`` now meaning ``backend="pil"``; torchvision, which the fast ones
  need, is not installed) saved to folders here and loaded back, against the step built from the same
  folder with ``processor:``, on images of odd sizes, aspect ratios and modes: equal pixel values;
- TensorFlow: ``tf.image.resize`` without antialiasing against ``resize_method: tensorflow``, and
  ``tf.io.decode_png`` against the step's 16-bit conversion;
- transformers' own size and crop functions against the step's;
- every new spelling and every refusal, one line naming the setting.

Nothing comes from a hub: the processors are built from their classes with settings chosen here.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from generator.core.errors import SpecError
from generator.steps import (
    ImageSettings,
    image_settings_from_processor,
    override_image_settings,
    settings_schema,
    step_definition,
)
from generator.steps.hf_image import PROCESSORS
from generator.steps.image import PreprocessImage, center_crop, shortest_edge_size

transformers = pytest.importorskip("transformers")

#: Exact agreement is expected (the same Pillow calls, the same float operations); the bound is the brief's.
TOLERANCE = 1e-5


def encode(image: Image.Image, format: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def odd_images() -> dict[str, bytes]:
    """RGB images of odd sizes and aspect ratios (tall, wide, tiny, square), PNG and JPEG."""
    shapes = {"wide": (37, 53), "tall": (61, 23), "tiny": (5, 7), "square": (24, 24), "strip": (3, 40)}
    images = {name: encode(Image.fromarray(rgb(h, w, i))) for i, (name, (h, w)) in enumerate(shapes.items())}
    images["jpeg"] = encode(Image.fromarray(rgb(45, 31, 9)), "JPEG", quality=90)
    return images


def mode_images() -> dict[str, bytes]:
    """One image per Pillow mode a file may hold: transparency (RGBA, LA, P with tRNS), CMYK, 1, L, P, F."""
    rng = np.random.default_rng(5)
    base = Image.fromarray(rgb(29, 41, 11))
    alpha = Image.fromarray(rng.integers(0, 256, (29, 41), dtype=np.uint8))
    rgba = base.copy()
    rgba.putalpha(alpha)
    la = base.convert("L")
    la.putalpha(alpha)
    palette = base.quantize(16)
    floats = Image.fromarray(rng.uniform(-20, 300, (29, 41)).astype(np.float32))
    return {
        "RGBA": encode(rgba),
        "LA": encode(la),
        "P+tRNS": encode(palette, transparency=3),
        "P": encode(palette),
        "CMYK": encode(base.convert("CMYK"), "JPEG", quality=95),
        "1": encode(base.convert("1")),
        "L": encode(base.convert("L")),
        "F": encode(floats, "TIFF"),
    }


def processor_folder(root: Path, name: str, processor: Any) -> Path:
    folder = root / name
    processor.save_pretrained(folder)
    return folder


def hf_pixels(processor: Any, data: bytes) -> np.ndarray:
    """transformers' pixel values of one encoded image, decoded with Pillow as the step decodes it."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return processor(images=[image], return_tensors="np")["pixel_values"][0]


def step(settings: dict[str, Any], spec_dir: Path = Path(".")) -> PreprocessImage:
    """The step as the server runs it: from the definition's config parameters (strings)."""
    return PreprocessImage(step_definition("image", settings, spec_dir).parameters)


def assert_matches(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    assert ours.dtype == np.float32, what  # transformers keeps uint8 without rescale and normalise
    assert theirs.dtype in (np.float32, np.uint8), what
    difference = float(np.abs(ours.astype(np.float64) - theirs).max())
    assert difference <= TOLERANCE, (what, difference)


# -- transformers' image processors ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def processors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Processor folders saved by transformers, each with the PIL-backend processor loaded back from it."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    root = tmp_path_factory.mktemp("processors")
    made = {
        "vit": ViTImageProcessorPil(size={"height": 30, "width": 20}),
        "clip": CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 20, "width": 18}),
        # a crop larger than the resized image (zeros around it), and a longest_edge cap
        "clip_padded": CLIPImageProcessorPil(
            size={"shortest_edge": 16, "longest_edge": 20}, crop_size={"height": 21, "width": 26}
        ),
        "bit_lanczos": BitImageProcessorPil(size={"shortest_edge": 19}, resample=1, crop_size=17),
        "deit_box": DeiTImageProcessorPil(size={"height": 26, "width": 30}, resample=4, crop_size=22),
        "convnext": ConvNextImageProcessorPil(size={"shortest_edge": 32}, resample=2, crop_pct=0.8),
        "convnext_warp": ConvNextImageProcessorPil(size={"shortest_edge": 384}, resample=5),
        "unscaled": ViTImageProcessorPil(
            size={"height": 9, "width": 13}, do_rescale=False, do_normalize=False, resample=0
        ),
    }
    return {
        name: (folder, type(made).from_pretrained(folder))
        for name, made in made.items()
        for folder in [processor_folder(root, name, made)]
    }


@pytest.mark.parametrize(
    "name", ["vit", "clip", "clip_padded", "bit_lanczos", "deit_box", "convnext", "convnext_warp", "unscaled"]
)
def test_a_processor_folder_gives_transformers_pixels(processors, name: str) -> None:
    folder, processor = processors[name]
    preprocess = step({"processor": str(folder)})
    for image, data in odd_images().items():
        assert_matches(preprocess([data])["pixel_values"][0], hf_pixels(processor, data), f"{name} {image}")


def test_every_mode_converts_as_transformers(processors) -> None:
    """CLIP's processor converts to RGB (do_convert_rgb): transparency composited onto white, the rest by
    Pillow; the step does the same with alpha: white, in NCHW and NHWC, and in grey as Pillow's L of that
    RGB. (A processor folder alone gives alpha: drop, as transformers' pipelines load images: the
    served pipeline is checked against them in tests/integration/test_huggingface.py.)"""
    folder, processor = processors["clip"]
    preprocess = step({"processor": str(folder), "alpha": "white"})
    nhwc = step({"processor": str(folder), "layout": "nhwc", "alpha": "white"})
    for mode, data in mode_images().items():
        expected = hf_pixels(processor, data)
        assert_matches(preprocess([data])["pixel_values"][0], expected, mode)
        assert_matches(nhwc([data])["pixel_values"][0], expected.transpose(1, 2, 0), mode)
    converted = transformers.image_transforms.convert_to_rgb(
        Image.open(io.BytesIO(mode_images()["RGBA"])), return_numpy=True
    )
    grey = np.asarray(Image.fromarray(converted).convert("L").resize((7, 5), Image.Resampling.BICUBIC))
    ours = step({"size": [5, 7], "channels": 1, "resample": 3, "scale": 1.0})([mode_images()["RGBA"]])
    np.testing.assert_array_equal(ours["pixel_values"][0, 0], grey.astype(np.float32))


def test_legacy_processor_files_read_as_transformers_reads_them(tmp_path: Path) -> None:
    """Files in the older forms the hub still holds: feature_extractor_type, an int size (square for ViT,
    the shortest edge for CLIP and ConvNeXT), an int crop_size, keys left to the class's defaults."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    half = [0.5, 0.5, 0.5]
    files = {
        "vit": (ViTImageProcessorPil, {"feature_extractor_type": "ViTFeatureExtractor", "size": 28}),
        "clip": (
            CLIPImageProcessorPil,
            {
                "feature_extractor_type": "CLIPFeatureExtractor",
                "size": 26,
                "crop_size": 22,
                "do_center_crop": True,
            },
        ),
        "convnext": (
            ConvNextImageProcessorPil,
            {"feature_extractor_type": "ConvNextFeatureExtractor", "size": 30, "crop_pct": 0.875},
        ),
        "vit_fast": (
            ViTImageProcessorPil,
            {"image_processor_type": "ViTImageProcessorFast", "size": [18, 25], "image_mean": half},
        ),
    }
    for name, (cls, content) in files.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "preprocessor_config.json").write_text(json.dumps(content))
        processor = cls.from_pretrained(folder)
        preprocess = step({"processor": name}, tmp_path)
        for image, data in odd_images().items():
            assert_matches(
                preprocess([data])["pixel_values"][0], hf_pixels(processor, data), f"{name} {image}"
            )


def test_derived_settings_are_plain_valid_values(processors) -> None:
    folder, _ = processors["clip_padded"]
    derived = image_settings_from_processor(folder)
    assert derived["resize"] == {"shortest_edge": 16, "longest_edge": 20}
    assert derived["center_crop"] == [21, 26] and derived["resample"] == "bicubic"
    assert json.loads(json.dumps(derived)) == derived
    ImageSettings.model_validate(derived)
    assert image_settings_from_processor(folder / "preprocessor_config.json") == derived
    convnext = image_settings_from_processor(processors["convnext"][0])
    assert convnext["resize"] == {"shortest_edge": int(32 / 0.8)} and convnext["center_crop"] == [32, 32]
    assert image_settings_from_processor(processors["convnext_warp"][0])["resize"] == {
        "height": 384,
        "width": 384,
    }
    unscaled = image_settings_from_processor(processors["unscaled"][0])
    assert unscaled["scale"] == 1.0 and "mean" not in unscaled and unscaled["resample"] == "nearest"


def test_the_spec_overrides_what_the_processor_says(processors) -> None:
    folder, _ = processors["clip"]
    definition = step_definition(
        "image", {"processor": str(folder), "center_crop": 12, "mean": 0.5, "dtype": "fp16"}, Path(".")
    )
    assert definition.outputs[0]["dims"] == [3, 12, 12] and definition.outputs[0]["dtype"] == "FP16"
    assert definition.parameters["resize"] == '{"shortest_edge": 24}'
    assert definition.parameters["mean"] == "0.5,0.5,0.5"
    assert definition.parameters["resample"] == "bicubic"
    warped = step_definition("image", {"processor": str(folder), "size": [10, 11]}, Path("."))
    assert "resize" not in warped.parameters and warped.parameters["size"] == "10,11"
    assert warped.outputs[0]["dims"] == [3, 20, 18]  # the processor's crop stays
    derived = image_settings_from_processor(folder)
    kept = json.loads(json.dumps(derived))
    assert "resize" not in override_image_settings(derived, {"size": 10})
    cropped = override_image_settings(derived, {"resize": {"shortest_edge": 30}, "crop_pct": 0.9})
    assert "center_crop" not in cropped and cropped["resize"] == {"shortest_edge": 30}
    assert derived == kept  # left as it was
    ImageSettings.model_validate(cropped)


def test_the_table_of_processors_is_transformers_own() -> None:
    """Each class's defaults (for keys a file leaves out) as transformers 5 declares them, and each class's
    preprocessing the generic one (ConvNeXT's own resize aside)."""
    import importlib

    from transformers.image_processing_backends import PilBackend

    modules = {
        "ViT": "vit",
        "DeiT": "deit",
        "Beit": "beit",
        "CLIP": "clip",
        "ChineseCLIP": "chinese_clip",
        "Bit": "bit",
        "MobileNetV1": "mobilenet_v1",
        "MobileNetV2": "mobilenet_v2",
        "Siglip": "siglip",
        "Blip": "blip",
        "Pvt": "pvt",
        "ConvNext": "convnext",
    }
    assert set(PROCESSORS) == {f"{prefix}ImageProcessor" for prefix in modules}
    for prefix, module in modules.items():
        cls = getattr(
            importlib.import_module(f"transformers.models.{module}.image_processing_pil_{module}"),
            f"{prefix}ImageProcessorPil",
        )
        ours = PROCESSORS[f"{prefix}ImageProcessor"]
        assert int(cls.resample) == ours.resample, prefix
        assert tuple(cls.image_mean) == ours.mean and tuple(cls.image_std) == ours.std, prefix
        assert cls.default_to_square == ours.square, prefix
        assert dict(cls.size) == ours.size, prefix
        assert bool(getattr(cls, "do_center_crop", None)) == ours.center_crop, prefix
        crop = getattr(cls, "crop_size", None)
        assert (crop["height"] if crop else None) == ours.crop_size, prefix
        assert cls.do_resize and cls.do_rescale and cls.do_normalize and cls.rescale_factor == 1 / 255
        if prefix != "ConvNext":  # ConvNeXT's resize is its crop_pct rule (tested against it above)
            assert cls.resize is PilBackend.resize, prefix
        for method in ("center_crop", "rescale", "normalize", "convert_to_rgb", "process_image"):
            assert getattr(cls, method) is getattr(PilBackend, method), (prefix, method)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            {"image_processor_type": "ViTImageProcessor", "do_pad": True},
            "do_pad: true is a step the image step",
        ),
        (
            {"image_processor_type": "ViTImageProcessor", "size": {"longest_edge": 30}},
            'size {"longest_edge": 30}: the image step resizes to {height, width}',
        ),
        (
            {"image_processor_type": "ViTImageProcessor", "size": {"max_height": 3, "max_width": 4}},
            "set the step's resize (or size) in the spec",
        ),
        (
            {"image_processor_type": "LevitImageProcessor"},
            "image_processor_type 'LevitImageProcessor': the image step reproduces only BeitImageProcessor",
        ),
        ({"size": 3}, "no image_processor_type: the image step reproduces only"),
        (
            {"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 3}},
            'crop_size {"height": 3}: must be {height: H, width: W}',
        ),
        (
            {"image_processor_type": "ViTImageProcessor", "resample": 7},
            "resample 7: not one of Pillow's filters",
        ),
        (
            {"image_processor_type": "ViTImageProcessor", "image_mean": "x"},
            'image_mean "x": must be a number or one per channel',
        ),
        (
            {"image_processor_type": "ConvNextImageProcessor", "size": {"height": 3, "width": 3}},
            "ConvNeXT's processor takes only {shortest_edge: N}",
        ),
        (
            {"image_processor_type": "ConvNextImageProcessor", "size": 224, "crop_pct": 0},
            "crop_pct 0: must be a number in (0, 1]",
        ),
    ],
)
def test_what_the_step_cannot_reproduce_is_named(tmp_path: Path, content: dict, fragment: str) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(content))
    with pytest.raises(SpecError) as raised:
        image_settings_from_processor(tmp_path)
    assert len(raised.value.problems) == 1 and fragment in raised.value.problems[0], raised.value.problems
    assert str(tmp_path / "preprocessor_config.json") in raised.value.problems[0]
    with pytest.raises(SpecError) as through_the_step:
        step_definition("image", {"processor": "."}, tmp_path)
    assert through_the_step.value.problems[0].startswith("step.processor: ")


def test_missing_and_malformed_processor_files(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"has no preprocessor_config\.json; give a Hugging Face model folder"
    ):
        image_settings_from_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{")
    with pytest.raises(SpecError, match="is not a JSON file"):
        image_settings_from_processor(tmp_path)
    with pytest.raises(SpecError, match=r"step.processor: '.*nowhere' does not exist"):
        step_definition("image", {"processor": "nowhere"}, tmp_path)


# -- TensorFlow: tf.image.resize and the 16-bit conversion ------------------------------------------------------


@pytest.fixture(scope="module")
def tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("method", ["bilinear", "nearest", "bicubic"])
def test_tensorflow_resize_equals_tf_image_resize(tf, method: str) -> None:
    rng = np.random.default_rng(len(method))
    for trial in range(8):
        height, width = (int(v) for v in rng.integers(3, 50, 2))
        out = [int(v) for v in rng.integers(2, 64, 2)]
        channels = 3 if trial % 2 else 1
        data = encode(Image.fromarray(rgb(height, width, trial)).convert("RGB" if channels == 3 else "L"))
        preprocess = step(
            {"size": out, "channels": channels, "resize_method": "tensorflow", "resample": method}
        )
        decoded = tf.io.decode_png(data, channels=channels)
        expected = tf.image.resize(decoded, out, method=method, antialias=False).numpy()
        pixels = preprocess.decode(data)
        assert pixels.shape == expected.shape
        np.testing.assert_allclose(pixels, expected, rtol=0, atol=1e-4)  # float32 of 0-255 values
        values = preprocess([data])["pixel_values"][0]
        assert_matches(
            values, (expected.astype(np.float64) / 255).astype(np.float32).transpose(2, 0, 1), method
        )


def test_tensorflow_resize_with_shortest_edge_and_crop(tf) -> None:
    """The shortest-edge size as transformers computes it, tf.image.resize to it, transformers' crop."""
    from transformers.image_transforms import center_crop as hf_center_crop

    settings = {"resize": {"shortest_edge": 20}, "center_crop": [18, 22], "resize_method": "tensorflow"}
    preprocess = step({**settings, "resample": "bicubic", "scale": 1.0})
    for name, data in odd_images().items():
        # decoded by Pillow, as the step decodes: TensorFlow's JPEG decoder differs by a few levels
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        size = transformers.image_transforms.get_resize_output_image_size(
            decoded, 20, default_to_square=False, input_data_format="channels_last"
        )
        resized = tf.image.resize(decoded, size, method="bicubic", antialias=False).numpy()
        expected = hf_center_crop(resized, (18, 22), input_data_format="channels_last")
        np.testing.assert_allclose(preprocess.decode(data), expected, rtol=0, atol=1e-4, err_msg=name)


def test_sixteen_bit_grey_is_scaled_as_tensorflow_decodes_it(tf) -> None:
    """A 16-bit PNG (Pillow's I;16) and the same values as I;16B and I (32-bit) TIFFs: the high byte, as
    tf.io.decode_png gives it, not Pillow's clipping (which turns most of the image white)."""
    values = np.random.default_rng(3).integers(0, 65536, (13, 17), dtype=np.uint16)
    values[0, :4] = [0, 255, 256, 65535]
    png = encode(Image.fromarray(values))
    expected = tf.io.decode_png(png, channels=3, dtype=tf.uint8).numpy()
    files = {
        "I;16": png,
        "I;16B": encode(Image.fromarray(values.astype(">u2")), "TIFF"),
        "I": encode(Image.fromarray(values.astype(np.int32)), "TIFF"),
    }
    preprocess = step({"resize": "none", "center_crop": [13, 17], "scale": 1.0})
    grey = step({"size": [13, 17], "channels": 1, "scale": 1.0})
    for mode, data in files.items():
        assert Image.open(io.BytesIO(data)).mode == mode
        np.testing.assert_array_equal(preprocess.decode(data), expected, err_msg=mode)
        np.testing.assert_array_equal(grey.decode(data)[..., 0], expected[..., 0], err_msg=mode)
    assert float(np.mean(expected == 255)) < 0.05  # not the clipped, almost white image
    sixteen_rgb = tf.io.encode_png(np.random.default_rng(4).integers(0, 65536, (7, 9, 3), dtype=np.uint16))
    data = sixteen_rgb.numpy()
    np.testing.assert_array_equal(
        preprocess_any(data), tf.io.decode_png(data, channels=3, dtype=tf.uint8).numpy()
    )


def preprocess_any(data: bytes) -> np.ndarray:
    """An image's pixels as decoded and converted, without a resize."""
    with Image.open(io.BytesIO(data)) as image:
        size = [image.height, image.width]
    return step({"resize": "none", "center_crop": size, "scale": 1.0}).decode(data)


def test_sixteen_bit_transparency_is_composited_onto_white(tf) -> None:
    values = np.random.default_rng(6).integers(0, 65536, (8, 10), dtype=np.uint16)
    data = encode(Image.fromarray(values), transparency=int(values[2, 3]))
    rgba = Image.fromarray(tf.io.decode_png(data, channels=4, dtype=tf.uint8).numpy())
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    assert expected[2, 3].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(preprocess_any(data), expected)


# -- the size and crop arithmetic against transformers' functions ------------------------------------------


def test_shortest_edge_sizes_are_transformers_own() -> None:
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio

    for height in (1, 3, 7, 224, 333, 640):
        for width in (1, 5, 224, 500, 1001):
            image = np.zeros((height, width, 3), np.uint8)
            for edge in (1, 16, 224, 299):
                expected = get_resize_output_image_size(
                    image, edge, default_to_square=False, input_data_format="channels_last"
                )
                assert shortest_edge_size(height, width, edge) == tuple(expected), (height, width, edge)
                for longest in (edge, edge + 1, 2 * edge, 3 * edge + 7):
                    capped = get_size_with_aspect_ratio((height, width), edge, longest)
                    assert shortest_edge_size(height, width, edge, longest) == tuple(capped)


def test_center_crop_is_transformers_own() -> None:
    from transformers.image_transforms import center_crop as hf_center_crop

    pixels = np.random.default_rng(2).integers(1, 256, (7, 10, 3), dtype=np.uint8)
    for height in (1, 4, 6, 7, 8, 11):
        for width in (2, 5, 9, 10, 13, 16):
            expected = hf_center_crop(pixels, (height, width), input_data_format="channels_last")
            np.testing.assert_array_equal(
                center_crop(pixels, height, width), expected, err_msg=f"{height}x{width}"
            )


# -- spellings and refusals --------------------------------------------------------------------------------


def test_spellings_users_write() -> None:
    data = encode(Image.fromarray(rgb(21, 34, 8)))
    reference = step({"size": [16, 16], "mean": [0.5] * 3, "std": [0.5] * 3, "layout": "NHWC"})([data])
    for spelling in (
        {"size": 16, "mean": 0.5, "std": 0.5, "layout": "nhwc"},
        {"resize": {"height": 16, "width": 16}, "mean": 0.5, "std": [0.5, 0.5, 0.5], "layout": "nhwc"},
        {"size": [16, 16], "resize": "bilinear", "mean": 0.5, "std": 0.5, "layout": "NHWC"},
        {"size": 16, "resample": 2, "mean": 0.5, "std": 0.5, "layout": "nhwc"},
    ):
        np.testing.assert_array_equal(
            step(spelling)([data])["pixel_values"], reference["pixel_values"], str(spelling)
        )
    settings = ImageSettings.model_validate({"size": 16, "layout": "nhwc", "mean": 0.5, "resize": "bicubic"})
    assert settings.size == [16, 16] and settings.layout == "NHWC" and settings.mean == [0.5] * 3
    assert settings.resample == "bicubic" and settings.resize is None


@pytest.mark.parametrize(
    ("code", "name"), list(enumerate(["nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"]))
)
def test_every_filter_by_name_and_code_is_pillows(code: int, name: str) -> None:
    data = encode(Image.fromarray(rgb(23, 31, code)))
    expected = np.asarray(Image.open(io.BytesIO(data)).resize((12, 9), Image.Resampling(code)), np.float32)
    for resample in (name, code, name.upper()):
        values = step({"size": [9, 12], "resample": resample, "scale": 1.0, "layout": "NHWC"})([data])
        np.testing.assert_array_equal(values["pixel_values"][0], expected)


def test_crop_pct_is_convnext_rule(processors) -> None:
    """crop_pct with resize {shortest_edge: N} is ConvNeXT's processor below 384."""
    _, processor = processors["convnext"]
    preprocess = step(
        {"resize": {"shortest_edge": 32}, "crop_pct": 0.8, "mean": 0.5, "std": 0.5, "resample": "bilinear"}
    )
    for image, data in odd_images().items():
        assert_matches(preprocess([data])["pixel_values"][0], hf_pixels(processor, data), image)


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"size": 8, "resize": {"shortest_edge": 8}},
            "step: size and resize: {shortest_edge: 8} both set the resize",
        ),
        ({"resize": {"shortest_edge": 8}}, "step: resize: {shortest_edge: 8} keeps each image's own size"),
        (
            {"resize": "none"},
            "step: resize: none keeps each image's own size, and a batch needs one; add center_crop",
        ),
        ({"center_crop": 8}, "step: center_crop without a resize: set size or resize"),
        ({"resize": {"height": 8}}, "step.resize: must be {shortest_edge: N} (with longest_edge: M or not)"),
        ({"resize": {"shortest_edge": 0}, "center_crop": 2}, "step.resize: must be {shortest_edge: N}"),
        (
            {"size": 8, "resample": "area"},
            'step.resample: must be one of nearest, lanczos, bilinear, bicubic, box, hamming, or Pillow\'s code 0-5 (got "area")',
        ),
        ({"size": 8, "resample": 6}, "step.resample: must be one of"),
        (
            {"size": 8, "resize": "bicubic", "resample": "nearest"},
            "step: resize: bicubic (a filter) and resample: nearest disagree",
        ),
        ({"size": 8, "crop_pct": 0.9}, "step: crop_pct needs resize: {shortest_edge: N} and no center_crop"),
        ({"resize": {"shortest_edge": 9}, "crop_pct": 1.5}, "step.crop_pct: must be at most 1 (got 1.5)"),
        (
            {"size": 8, "resize_method": "tensorflow", "resample": "lanczos"},
            "step: resize_method: tensorflow does bilinear, nearest, bicubic, not resample: lanczos",
        ),
        ({"size": 8, "resize_method": "opencv"}, "step.resize_method: must be 'pillow' or 'tensorflow'"),
        ({"size": [8, 0]}, "step.size: height and width must be positive integers"),
        ({"size": 8, "center_crop": [1, 2, 3]}, "step.center_crop: must be [height, width] or one number"),
        ({"size": 8, "mean": "x"}, "step.mean: must be a number (for every channel) or a list of numbers"),
        ({"size": 8, "channels": 1, "std": [1, 2]}, "step: std needs 1 value(s), one per channel, got 2"),
        ({"size": 8, "processor": ""}, "step.processor: must not be empty"),
    ],
)
def test_bad_settings_are_one_line_each(settings: dict, line: str) -> None:
    with pytest.raises(SpecError) as raised:
        step_definition("image", settings, Path("."))
    assert len(raised.value.problems) == 1 and raised.value.problems[0].startswith(line), (
        raised.value.problems
    )


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"resize": {"shortest_edge": 8}, "center_crop": 8},
            "step.resize: backend: dali resizes to a fixed size only",
        ),
        (
            {"size": 8, "center_crop": 4},
            "step.center_crop: backend: dali does not crop yet; use backend: python",
        ),
        ({"resize": {"shortest_edge": 8}, "crop_pct": 0.5}, "step.crop_pct: backend: dali does not crop yet"),
        ({"size": 8, "resize_method": "tensorflow"}, "step.resize_method: backend: dali resizes with DALI"),
        (
            {"size": 8, "resample": "lanczos"},
            "step.resample: backend: dali does bilinear, nearest, bicubic, not lanczos",
        ),
    ],
)
def test_dali_refuses_what_its_pipeline_cannot_do(settings: dict, line: str) -> None:
    with pytest.raises(SpecError) as raised:
        step_definition("image", {**settings, "backend": "dali"}, Path("."))
    assert any(problem.startswith(line) for problem in raised.value.problems), raised.value.problems
    assert all(problem.startswith("step.") and "\n" not in problem for problem in raised.value.problems)


def test_the_schema_shows_the_new_forms() -> None:
    properties = settings_schema("image")["properties"]
    assert {"integer", "array"} <= {entry.get("type") for entry in properties["size"]["anyOf"]}
    assert {"string", "object"} <= {entry.get("type") for entry in properties["resize"]["anyOf"]}
    for name in ("center_crop", "crop_pct", "resample", "resize_method", "processor"):
        assert properties[name]["description"], name


def test_preprocess_image_reads_the_older_parameters() -> None:
    """A config written before these settings (size "H,W", resize as the filter) still reads the same."""
    data = encode(Image.fromarray(rgb(17, 19, 1)))
    old = PreprocessImage(
        {"size": "8,9", "resize": "bicubic", "mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25"}
    )
    new = step({"size": [8, 9], "resample": "bicubic", "mean": 0.5, "std": 0.25})
    np.testing.assert_array_equal(old([data])["pixel_values"], new([data])["pixel_values"])
    with pytest.raises(ValueError, match="resize: bicubic and resample: nearest disagree"):
        PreprocessImage({"size": "8,9", "resize": "bicubic", "resample": "nearest"})


def test_a_processor_folder_loads_images_as_transformers_pipelines_do(processors) -> None:
    """Derived from a processor, the step turns an image upright by its EXIF orientation and drops its
    alpha channel, as transformers' load_image does before a pipeline's processor sees the image."""
    from transformers.image_utils import load_image

    from generator.build.hf_parity import sample_images

    folder, processor = processors["clip"]
    preprocess = step({"processor": str(folder)})
    for index, data in enumerate(sample_images()):
        loaded = load_image(Image.open(io.BytesIO(data)))
        expected = processor(images=[loaded], return_tensors="np")["pixel_values"][0]
        assert_matches(preprocess([data])["pixel_values"][0], expected, f"sample {index}")
    sideways = sample_images()[-1]
    upright = step({"processor": str(folder), "exif_orientation": False})([sideways])["pixel_values"]
    assert not np.allclose(upright, preprocess([sideways])["pixel_values"])  # the orientation mattered
