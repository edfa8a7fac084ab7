"""End-to-end parity of a Hugging Face pipeline: the served-to-be ensemble against the reference library.

The ensemble a ``framework: huggingface`` entry expanded into runs in this process exactly as the server
will run it (the built-in steps' own classes, the exported model in ONNX Runtime:
:func:`generator.build.pipelines.local_ensemble`), on raw inputs: texts of several lengths (an empty one,
accents and CJK, one longer than the tokenizer's max_length) or encoded images of several sizes and modes.
The reference is the library the model comes from, run on the same raw inputs: sentence-transformers'
``encode`` for a sentence-transformers folder, transformers' ``pipeline`` for everything else. The build
fails past the budget: cosine similarity below 0.9999 for embeddings; another label, or a probability
further than 1e-4, for classification.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from generator.build.pipelines import local_ensemble
from generator.core.errors import VerificationError

#: Texts both sides run: short and long, empty, punctuation and numbers, accents, CJK and an emoji.
SAMPLE_TEXTS = (
    "The weather is lovely today.",
    "Rain",
    "",
    "He scored twice in the second half, and the match ended 2-1!",
    "Ünïcödé naïve café: 東京 and 🙂",
    "numbers 12345 and symbols #@%&*",
    " ".join(["a much longer sentence that goes on"] * 40),
)
#: The smallest cosine similarity an embedding may have to the reference's.
MIN_COSINE = 0.9999
#: The largest difference of a probability (or score) from the reference's.
MAX_PROBABILITY_ERROR = 1e-4
SENTENCE_TRANSFORMERS = "sentence-transformers"


def sample_images() -> list[bytes]:
    """Encoded images of several sizes, aspect ratios and modes (seeded), one with an EXIF orientation:
    what clients send."""
    from PIL import Image

    rng = np.random.default_rng(20)
    images = []
    for (height, width), mode, fmt in (
        ((37, 53), "RGB", "PNG"),
        ((300, 200), "RGB", "JPEG"),
        ((64, 64), "L", "PNG"),
        ((48, 96), "RGBA", "PNG"),
        ((224, 224), "RGB", "PNG"),
    ):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        noise = rng.integers(0, 64, (height, width, channels)).astype(np.float32)
        pixels = np.clip(ramp + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        images.append(buffer.getvalue())
    # A phone photo: stored sideways, with the EXIF orientation (6: rotate 90 degrees) that turns it upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(images[1])).save(buffer, format="JPEG", exif=exif)
    images.append(buffer.getvalue())
    return images


def _texts(task: str) -> list[str]:
    # transformers' token-classification pipeline does not truncate: keep its texts within any max_length.
    return [t for t in SAMPLE_TEXTS if len(t) < 200] if task == "token-classification" else list(SAMPLE_TEXTS)


def _cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    ours = ours.reshape(len(ours), -1).astype(np.float64)
    theirs = theirs.reshape(len(theirs), -1).astype(np.float64)
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    return np.where(norms > 0, (ours * theirs).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)


def _embedding_check(ours: np.ndarray, theirs: np.ndarray, what: str) -> dict[str, Any]:
    cosines = _cosines(ours, theirs)
    worst = float(cosines.min())
    if worst < MIN_COSINE:
        row = int(cosines.argmin())
        raise VerificationError(
            f"{what}: the served pipeline's embedding of sample {row} has cosine similarity {worst:.6f} to "
            f"the reference's (at least {MIN_COSINE} needed); check the tokenizer settings and pooling"
        )
    return {"min_cosine": worst, "max_abs_error": float(np.abs(ours - theirs).max())}


def _label_check(
    rows: list[dict[str, float]], ours_labels: list[list[str]], ours_scores: np.ndarray, what: str
) -> dict[str, Any]:
    """Every reference label and score against ours (the same labels, scores within the budget)."""
    worst = 0.0
    for row, expected in enumerate(rows):
        served = dict(zip(ours_labels[row], ours_scores[row].tolist(), strict=False))
        for label, score in expected.items():
            if label not in served:
                raise VerificationError(
                    f"{what}: sample {row}: the reference returns label '{label}', the served pipeline "
                    f"{sorted(served)}; check postprocess.labels and top_k"
                )
            worst = max(worst, abs(served[label] - score))
        best = max(expected, key=expected.__getitem__)
        if (
            ours_labels[row][0] != best
            and abs(served[best] - served[ours_labels[row][0]]) > MAX_PROBABILITY_ERROR
        ):
            raise VerificationError(
                f"{what}: sample {row}: the served pipeline's top label is '{ours_labels[row][0]}', the "
                f"reference's '{best}'"
            )
    if worst > MAX_PROBABILITY_ERROR:
        raise VerificationError(
            f"{what}: a served probability differs from the reference's by {worst:.2e} (at most "
            f"{MAX_PROBABILITY_ERROR} allowed); check the activation and the preprocessing"
        )
    return {"max_abs_error": worst}


def _strings(values: np.ndarray) -> list[list[str]]:
    return [[v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in row] for row in values]


def _classification(outputs: Mapping[str, np.ndarray], reference: list[Any], what: str) -> dict[str, Any]:
    rows = [{item["label"]: float(item["score"]) for item in result} for result in reference]
    labels = _strings(outputs["LABELS"])
    return _label_check(rows, labels, np.asarray(outputs["SCORES"], dtype=np.float64), what)


def _tokens(outputs: Mapping[str, np.ndarray], reference: list[Any], what: str) -> dict[str, Any]:
    """Per-token labels: the reference's entity and score of each real token against ours at its index."""
    labels = _strings(outputs["LABELS"])
    scores = np.asarray(outputs["SCORES"], dtype=np.float64)
    worst, count = 0.0, 0
    for row, tokens in enumerate(reference):
        for token in tokens:
            index = int(token["index"])
            if labels[row][index] != token["entity"]:
                raise VerificationError(
                    f"{what}: sample {row} token {index} ('{token['word']}'): the served label is "
                    f"'{labels[row][index]}', the reference's '{token['entity']}'"
                )
            worst = max(worst, abs(scores[row, index] - float(token["score"])))
            count += 1
    if worst > MAX_PROBABILITY_ERROR:
        raise VerificationError(
            f"{what}: a served token score differs from the reference's by {worst:.2e} (at most "
            f"{MAX_PROBABILITY_ERROR} allowed)"
        )
    return {"max_abs_error": worst, "tokens": count}


def _reference(library: str, task: str, folder: Path, settings: Mapping[str, Any], inputs: list[Any]) -> Any:
    """The reference library's results on the raw inputs."""
    from generator.build.exporters.huggingface import import_transformers

    transformers = import_transformers()
    if library == SENTENCE_TRANSFORMERS:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        return model.encode(inputs, batch_size=len(inputs), convert_to_numpy=True)
    if task == "image-classification":
        from PIL import Image

        processor = transformers.AutoImageProcessor.from_pretrained(str(folder), use_fast=False)
        pipe = transformers.pipeline(task, model=str(folder), image_processor=processor, device="cpu")
        images = [Image.open(io.BytesIO(data)) for data in inputs]
        return [pipe(image, top_k=len(pipe.model.config.id2label)) for image in images]
    pipe = transformers.pipeline(task, model=str(folder), tokenizer=str(folder), device="cpu")
    limits = {"truncation": True, "max_length": int(settings.get("max_length", 512))}
    if task == "text-classification":
        return [pipe(text, top_k=None, **limits) for text in inputs]
    if task == "token-classification":
        return [pipe(text, aggregation_strategy="none", ignore_labels=[]) for text in inputs]
    return [np.asarray(pipe(text, tokenize_kwargs=limits))[0] for text in inputs]


def _hidden_states(ours: np.ndarray, reference: list[np.ndarray], what: str) -> dict[str, Any]:
    """Token embeddings: ours (padded to the batch's longest) against each text's own, token by token."""
    worst = 1.0
    for row, theirs in enumerate(reference):
        worst = min(worst, float(_cosines(ours[row, : len(theirs)], theirs).min()))
    if worst < MIN_COSINE:
        raise VerificationError(
            f"{what}: a served token embedding has cosine similarity {worst:.6f} to the reference's (at "
            f"least {MIN_COSINE} needed); check the tokenizer settings"
        )
    return {"min_cosine": worst}


def pooled(tokens: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """One text's token embeddings [S, H] (no padding) pooled as sentence-transformers pools them."""
    if pooling == "cls":
        vector = tokens[0]
    elif pooling == "max":
        vector = tokens.max(axis=0)
    else:
        vector = tokens.sum(axis=0) / (np.sqrt(len(tokens)) if pooling == "mean_sqrt_len" else len(tokens))
    return vector / max(float(np.linalg.norm(vector)), 1e-12) if normalize else vector


def pipeline_parity(repository: Path, name: str, record: Mapping[str, Any], spec_dir: Path) -> dict[str, Any]:
    """Run the ensemble ``name`` of ``repository`` in-process and the reference library on the same raw
    inputs; return the figures measured.

    Args:
        repository: The (staged) repository holding the ensemble and its steps.
        name: The ensemble's name.
        record: What the entry expanded into (:meth:`generator.spec.huggingface.Expansion.record`).
        spec_dir: Where the record's source resolves.

    Raises:
        VerificationError: past the budget, with the sample and the figure.
    """
    task = str(record["task"])
    folder = Path(record["source"])
    folder = folder if folder.is_absolute() else spec_dir / folder
    library = _library(task, record)
    what = f"pipeline '{name}' ({task}) against {library}"
    ensemble = local_ensemble(repository, name)
    settings = _step_settings(repository, record)
    if task == "image-classification":
        inputs: list[Any] = sample_images()
        feeds = {"IMAGE": np.array([[data] for data in inputs], dtype=object)}
    else:
        inputs = _texts(task)
        feeds = {"TEXT": np.array([[text.encode("utf-8")] for text in inputs], dtype=object)}
    outputs = ensemble(feeds)
    reference = _reference(library, task, folder, settings, inputs)
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "text-classification": lambda: _classification(outputs, reference, what),
        "image-classification": lambda: _classification(outputs, reference, what),
        "token-classification": lambda: _tokens(outputs, reference, what),
    }
    if task in checks:
        figures = checks[task]()
    elif "EMBEDDING" in outputs:
        plan = record.get("embedding") or {}
        if library != SENTENCE_TRANSFORMERS:  # token embeddings from transformers, pooled as planned
            reference = np.stack([pooled(t, plan["pooling"], plan["normalize"]) for t in reference])
        figures = _embedding_check(np.asarray(outputs["EMBEDDING"]), np.asarray(reference), what)
    else:
        figures = _hidden_states(np.asarray(outputs["LAST_HIDDEN_STATE"]), reference, what)
    return {"reference": library, "samples": len(inputs), **figures}


def _library(task: str, record: Mapping[str, Any]) -> str:
    """The reference library: sentence-transformers for a sentence-transformers folder exported as it is,
    else transformers."""
    if task == "feature-extraction" and (record.get("embedding") or {}).get("sentence_transformers"):
        return SENTENCE_TRANSFORMERS
    return "transformers"


def _step_settings(repository: Path, record: Mapping[str, Any]) -> dict[str, str]:
    """The preprocessing step's parameters as served (its max_length, say)."""
    from generator.core.triton import parse_model_config

    name = record["parts"]["preprocess"]
    config = parse_model_config((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
    return {key: value.string_value for key, value in config.parameters.items()}
