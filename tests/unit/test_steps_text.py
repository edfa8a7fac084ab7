"""The text steps against transformers, the library whose results they reproduce.

The tokenizer step (its pure class, from a Hugging Face model folder, a slow tokenizer's files or a
transformers tokenizer a factory returns) against ``AutoTokenizer.from_pretrained`` of the same folder
called with the same padding, truncation and max_length; the post-processing step against transformers'
text-classification pipeline; the token_labels step against its token-classification pipeline. The
tokenizers and models are tiny ones made here (tests/hf_models.py): nothing comes from a hub.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generator.core.errors import SpecError
from generator.steps import (
    PostprocessSettings,
    TokenizerSettings,
    TokenLabelsSettings,
    fast_tokenizer_json,
    settings_schema,
    step_definition,
    tokenizer_settings_from_folder,
)
from generator.steps.postprocess import Postprocess
from generator.steps.token_labels import TokenLabels
from generator.steps.tokenizer import Tokenize

from ..conftest import imported_modules
from ..hf_models import (
    TEXTS,
    make_bert_text_classifier,
    make_bert_token_classifier,
    make_bert_tokenizer,
    make_roberta_tokenizer,
    make_slow_bert_tokenizer,
)

transformers = pytest.importorskip("transformers")
STEPS_DIR = Path(__file__).resolve().parents[2] / "generator" / "steps"
ENTITIES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Files the steps make (converted tokenizers, inline labels) go to a cache of this module's own."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tokenizer folders as transformers saves them: BERT-like (fast, and slow files only), RoBERTa-like
    (right, and left padding with left truncation)."""
    root = tmp_path_factory.mktemp("tokenizers")
    return {
        "bert": make_bert_tokenizer(root / "bert"),
        "bert_slow": make_slow_bert_tokenizer(root / "bert_slow"),
        "roberta": make_roberta_tokenizer(root / "roberta"),
        "roberta_left": make_roberta_tokenizer(
            root / "roberta_left", padding_side="left", truncation_side="left"
        ),
    }


def step_tokenize(settings: dict[str, Any]) -> tuple[Tokenize, dict[str, str]]:
    """The step's pure class as the served step makes it: from the definition's parameters and file."""
    definition = step_definition("tokenizer", settings, Path("."))
    return Tokenize(definition.parameters, definition.version_files["tokenizer.json"]), definition.parameters


def reference(folder: Path, padding_side: str | None = None):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def assert_same(ours: dict[str, np.ndarray], theirs: Any, outputs: list[str]) -> None:
    assert list(ours) == outputs
    for name in outputs:
        expected = np.asarray(theirs[name])
        assert ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


@pytest.mark.parametrize("folder", ["bert", "bert_slow", "roberta", "roberta_left"])
@pytest.mark.parametrize(
    ("padding", "truncation"),
    [
        ("max_length", True),
        ("max_length", "longest_first"),
        ("max_length", "only_first"),
        ("longest", True),
        (True, False),
        ("longest", "do_not_truncate"),
    ],
)
@pytest.mark.parametrize("padding_side", [None, "left", "right"])
@pytest.mark.parametrize("max_length", [None, 7])
def test_tokenize_from_a_folder_equals_transformers(
    folders: dict[str, Path], folder: str, padding: Any, truncation: Any, padding_side: str | None, max_length
) -> None:
    settings: dict[str, Any] = {
        "tokenizer": str(folders[folder]),
        "padding": padding,
        "truncation": truncation,
    }
    if padding_side:
        settings["padding_side"] = padding_side
    if max_length:
        settings["max_length"] = max_length
    tokenize, parameters = step_tokenize(settings)
    theirs = reference(folders[folder], padding_side)
    expected = theirs(
        TEXTS,
        padding="longest" if padding is True else padding,
        truncation=truncation,
        max_length=max_length or theirs.model_max_length,
        return_tensors="np",
    )
    assert_same(tokenize(TEXTS), expected, list(theirs.model_input_names))
    assert parameters["padding_side"] == theirs.padding_side
    assert parameters["truncation_side"] == theirs.truncation_side
    assert tokenize.max_length == (max_length or theirs.model_max_length)


def test_tokenize_one_text_at_a_time_equals_a_batch(folders: dict[str, Path]) -> None:
    tokenize, _ = step_tokenize({"tokenizer": str(folders["roberta_left"]), "padding": "max_length"})
    theirs = reference(folders["roberta_left"])
    for text in TEXTS:
        expected = theirs([text], padding="max_length", truncation=True, return_tensors="np")
        assert_same(tokenize([text.encode("utf-8")]), expected, ["input_ids", "attention_mask"])


def test_the_settings_a_folder_implies(folders: dict[str, Path], tmp_path: Path) -> None:
    assert tokenizer_settings_from_folder(folders["roberta_left"]) == {
        "tokenizer": str(folders["roberta_left"]),
        "max_length": 24,
        "padding_side": "left",
        "truncation_side": "left",
        "pad_token": "<pad>",
        "outputs": ["input_ids", "attention_mask"],
    }
    bert = tokenizer_settings_from_folder(folders["bert"])
    assert bert["outputs"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert "padding_side" not in bert  # transformers' own default (right) is the step's
    for folder in folders.values():
        TokenizerSettings.model_validate(tokenizer_settings_from_folder(folder))

    # model_max_length is capped by the model's positions; transformers' "no bound" is no bound.
    capped = shutil.copytree(folders["bert"], tmp_path / "capped")
    (capped / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 20}))
    assert tokenizer_settings_from_folder(capped)["max_length"] == 20
    unbounded = tmp_path / "unbounded"
    transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folders["roberta"] / "tokenizer.json"), pad_token="<pad>"
    ).save_pretrained(str(unbounded))
    assert json.loads((unbounded / "tokenizer_config.json").read_text())["model_max_length"] > 1e29
    found = tokenizer_settings_from_folder(unbounded)
    assert "max_length" not in found and found["pad_token"] == "<pad>"
    assert (
        step_definition("tokenizer", {"tokenizer": str(unbounded)}, Path(".")).parameters["max_length"]
        == "128"
    )

    # Older folders: special tokens as AddedToken mappings, in special_tokens_map.json; model_input_names.
    old = shutil.copytree(folders["bert"], tmp_path / "old")
    config = json.loads((old / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    config["model_input_names"] = ["input_ids", "attention_mask"]
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    (old / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": {"content": "[MASK]", "lstrip": False}})
    )
    found = tokenizer_settings_from_folder(old)
    assert found["pad_token"] == "[MASK]" and found["outputs"] == ["input_ids", "attention_mask"]
    tokenize, parameters = step_tokenize({"tokenizer": str(old), "padding": "longest"})
    assert parameters["pad_token"] == "[MASK]"
    assert_same(
        tokenize(TEXTS),
        reference(old)(TEXTS, padding=True, truncation=True, return_tensors="np"),
        found["outputs"],
    )


def test_a_slow_tokenizer_is_converted_once(folders: dict[str, Path]) -> None:
    first = step_definition("tokenizer", {"tokenizer": str(folders["bert_slow"])}, Path("."))
    again = step_definition("tokenizer", {"tokenizer": str(folders["bert_slow"])}, Path("."))
    made = first.version_files["tokenizer.json"]
    assert made.name == "tokenizer.json" and made.parent != folders["bert_slow"]
    assert again.version_files["tokenizer.json"] == made
    assert not (folders["bert_slow"] / "tokenizer.json").exists()  # the user's folder is left as it is
    # The vocabulary of vocab.txt, one token a line.
    lines = (folders["bert_slow"] / "vocab.txt").read_text().splitlines()
    assert json.loads(made.read_text())["model"]["vocab"] == {token: i for i, token in enumerate(lines)}


def test_folder_problems_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (tmp_path / "badjson").mkdir()
    make_bert_tokenizer(tmp_path / "badjson")
    (tmp_path / "badjson" / "tokenizer_config.json").write_text("{")
    cases = {
        "empty": "step.tokenizer: '{}' holds no tokenizer.json and no slow tokenizer files (vocab.txt,",
        "broken": "step.tokenizer: transformers cannot load a tokenizer from '{}' (",
        "badjson": "step.tokenizer: '{}/tokenizer_config.json' is not valid JSON (",
    }
    for name, message in cases.items():
        with pytest.raises(SpecError) as caught:
            step_definition("tokenizer", {"tokenizer": name}, tmp_path)
        assert len(caught.value.problems) == 1 and "\n" not in caught.value.problems[0]
        assert caught.value.problems[0].startswith(message.format(tmp_path / name)), caught.value.problems


def test_a_transformers_tokenizer_is_saved_with_its_own_settings(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    theirs = transformers.AutoTokenizer.from_pretrained(
        str(folders["bert"]), padding_side="left", truncation_side="left", model_max_length=9
    )
    theirs(["a call leaves state in the backend"], padding="max_length", max_length=30, truncation=True)
    state = (theirs.backend_tokenizer.padding, theirs.backend_tokenizer.truncation)
    text = fast_tokenizer_json(theirs)
    assert text is not None and fast_tokenizer_json(object()) is None
    assert (theirs.backend_tokenizer.padding, theirs.backend_tokenizer.truncation) == state  # not changed
    (tmp_path / "tokenizer.json").write_text(text)
    tokenize, parameters = step_tokenize(
        {"tokenizer": str(tmp_path / "tokenizer.json"), "padding": "longest"}
    )
    assert (parameters["padding_side"], parameters["truncation_side"], parameters["max_length"]) == (
        "left",
        "left",
        "9",
    )
    expected = theirs(TEXTS, padding=True, truncation=True, return_tensors="np")
    assert_same(tokenize(TEXTS), expected, ["input_ids", "attention_mask", "token_type_ids"])


def test_a_factory_may_return_a_transformers_tokenizer(folders: dict[str, Path], tmp_path: Path) -> None:
    from generator.build.exporters.python import make_step_file
    from generator.spec.models import ModelSpec

    factory = tmp_path / "text.py"
    factory.write_text(
        "from transformers import AutoTokenizer\n\n\n"
        "def tokenizer():\n"
        f"    return AutoTokenizer.from_pretrained({str(folders['roberta'])!r}, padding_side='left')\n"
    )
    model = ModelSpec.model_validate(
        {
            "name": "tok",
            "framework": "python",
            "source": "builtin:tokenizer",
            "step": {"tokenizer": "text.py:tokenizer"},
        }
    )
    target = tmp_path / "made" / "tokenizer.json"
    assert make_step_file(model, factory, target, progress=lambda stage: None) == str(target)
    tokenize, parameters = step_tokenize(
        {"tokenizer": str(target), "padding": "longest", "outputs": ["input_ids", "attention_mask"]}
    )
    assert parameters["padding_side"] == "left" and parameters["max_length"] == "24"
    expected = reference(folders["roberta"], "left")(
        TEXTS, padding=True, truncation=True, return_tensors="np"
    )
    assert_same(tokenize(TEXTS), expected, ["input_ids", "attention_mask"])


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"padding": True}, ("longest", True)),
        ({"padding": "true"}, ("longest", True)),
        ({"truncation": "longest_first"}, ("max_length", True)),
        ({"truncation": "only_first"}, ("max_length", True)),
        ({"truncation": "do_not_truncate", "padding": "longest"}, ("longest", False)),
        ({"truncation": "false", "padding": "longest"}, ("longest", False)),
    ],
)
def test_transformers_spellings(folders: dict[str, Path], settings: dict, expected: tuple) -> None:
    definition = step_definition("tokenizer", {"tokenizer": str(folders["bert"]), **settings}, Path("."))
    assert (definition.settings.padding, definition.settings.truncation) == expected
    tokenize = Tokenize(definition.parameters, definition.version_files["tokenizer.json"])
    assert (tokenize.padding, tokenize.truncation) == expected
    assert Tokenize({**settings, "max_length": 5}, folders["bert"] / "tokenizer.json").padding == expected[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"padding": False}, "step.padding: no padding (false, do_not_pad) leaves the texts of a batch at"),
        ({"padding": "do_not_pad"}, "a served batch needs one shape; use longest (true) or max_length"),
        ({"truncation": "only_second"}, "step.truncation: only_second truncates the second text of a pair"),
        ({"padding_side": "center"}, "step.padding_side: must be 'left' or 'right' (got \"center\")"),
        ({"truncation_side": "up"}, "step.truncation_side: must be 'left' or 'right' (got \"up\")"),
        ({"outputs": []}, "step.outputs: must hold at least 1 item(s), got 0"),
    ],
)
def test_bad_spellings_are_named(folders: dict[str, Path], settings: dict, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        step_definition("tokenizer", {"tokenizer": str(folders["bert"]), **settings}, Path("."))
    assert len(caught.value.problems) == 1 and message in caught.value.problems[0], caught.value.problems


# -- post-processing against transformers' pipelines --------------------------------------------------------


def model_logits(folder: Path, task: str, tokens: dict[str, np.ndarray]) -> np.ndarray:
    """The tiny model's logits for the step's tokens (what the served model step computes)."""
    import torch

    auto = (
        transformers.AutoModelForSequenceClassification
        if task == "text"
        else transformers.AutoModelForTokenClassification
    )
    model = auto.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(**{name: torch.from_numpy(array) for name, array in tokens.items()}).logits.numpy()


CLASSIFIERS = {
    # name: labels, problem_type, the activation transformers' pipeline applies
    "softmax": (["negative", "neutral", "positive"], None, "softmax"),
    "multi_label": (["sport", "food", "weather", "news"], "multi_label_classification", "sigmoid"),
    "single_logit": (["score"], None, "sigmoid"),
}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_postprocess_equals_the_text_classification_pipeline(tmp_path: Path, name: str) -> None:
    labels, problem_type, activation = CLASSIFIERS[name]
    folder = make_bert_text_classifier(tmp_path / name, labels, problem_type, initializer_range=0.5)
    tokenize, _ = step_tokenize({"tokenizer": str(folder), "padding": "longest"})
    texts = [text for text in TEXTS if text.strip()]
    logits = model_logits(folder, "text", tokenize(texts))
    definition = step_definition(
        "postprocess", {"labels": labels, "activation": activation, "top_k": len(labels)}, Path(".")
    )
    assert definition.version_files["labels.txt"].read_text().splitlines() == labels
    ours = Postprocess(definition.parameters, definition.version_files["labels.txt"])(logits)
    pipeline = transformers.pipeline("text-classification", model=str(folder), top_k=None)
    for row, results in enumerate(pipeline(texts, truncation=True)):
        assert [r["label"] for r in results] == [label.decode() for label in ours["labels"][row]]
        np.testing.assert_allclose(ours["scores"][row], [r["score"] for r in results], rtol=0, atol=1e-5)


def test_postprocess_activation_settings(tmp_path: Path) -> None:
    sigmoid = step_definition("postprocess", {"labels": ["a", "b", "c"], "activation": "sigmoid"}, tmp_path)
    assert sigmoid.parameters["activation"] == "sigmoid"
    assert sigmoid.outputs[0] == {
        "name": "probabilities",
        "dtype": "FP32",
        "dims": [3],
        "label_filename": "labels.txt",
    }
    assert sigmoid.model_files == sigmoid.version_files
    logits = np.array([[-100.0, 0.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(
        Postprocess(sigmoid.parameters, ["a", "b", "c"])(logits)["probabilities"],
        1 / (1 + np.exp(-logits.astype(np.float64))),
        rtol=1e-6,
        atol=1e-30,
    )
    raw = step_definition("postprocess", {"classes": 3, "activation": "none"}, tmp_path)
    assert [o["name"] for o in raw.outputs] == ["scores", "indices"]
    assert Postprocess(raw.parameters)(logits)["scores"].tolist() == [[3.0, 0.0, -100.0]]
    # The former softmax: true|false stays, and may agree with activation.
    assert (
        step_definition("postprocess", {"classes": 3, "softmax": False}, tmp_path).parameters["activation"]
        == "none"
    )
    agreed = step_definition(
        "postprocess", {"classes": 3, "softmax": True, "activation": "softmax"}, tmp_path
    )
    assert agreed.parameters["activation"] == "softmax"
    # Inline labels with the same text are the same file.
    again = step_definition("postprocess", {"labels": ["a", "b", "c"]}, tmp_path)
    assert again.version_files == sigmoid.version_files


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        (
            "postprocess",
            {"classes": 3, "softmax": True, "activation": "sigmoid"},
            "step: softmax: true disagrees with activation: sigmoid; set activation alone",
        ),
        (
            "postprocess",
            {"classes": 3, "activation": "relu"},
            "step.activation: must be 'softmax', 'sigmoid' or 'none' (got \"relu\")",
        ),
        ("postprocess", {"labels": []}, "step.labels: is an empty list; list one label per class"),
        ("postprocess", {"labels": ["a", ""]}, "step.labels: labels at 1 are not one line of text each"),
        ("postprocess", {"labels": ["a", "b\nc"]}, "step.labels: labels at 1 are not one line of text each"),
        ("postprocess", {"labels": [True, "no"]}, "step.labels: labels at 0 are not one line of text each"),
        (
            "postprocess",
            {"labels": 3},
            "step.labels: must be a label file's path or a list of labels (got 3)",
        ),
        (
            "postprocess",
            {"labels": ["a", "b"], "classes": 3},
            "step.classes: 3 classes but step.labels lists 2 labels",
        ),
        ("token_labels", {}, "step.classes: the number of classes is unknown; set classes or labels"),
        (
            "token_labels",
            {"classes": 2, "top_k": 1},
            "step.top_k: unknown setting; the settings of this step are: classes, labels, activation",
        ),
        (
            "token_labels",
            {"labels": ["a"], "classes": 2},
            "step.classes: 2 classes but step.labels lists 1 labels",
        ),
        (
            "token_labels",
            {"classes": 2, "activation": "max"},
            "step.activation: must be 'softmax', 'sigmoid' or 'none'",
        ),
        ("token_labels", {"labels": "missing.txt"}, "missing.txt' does not exist"),
    ],
)
def test_bad_label_settings_are_named(tmp_path: Path, kind: str, settings: dict, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        step_definition(kind, settings, tmp_path)
    assert len(caught.value.problems) == 1 and message in caught.value.problems[0], caught.value.problems


def test_token_labels_definition(tmp_path: Path) -> None:
    (tmp_path / "entities.txt").write_text("\n".join(ENTITIES) + "\n")
    definition = step_definition("token_labels", {"labels": "entities.txt"}, tmp_path)
    assert definition.model_file == STEPS_DIR / "token_labels.py" and definition.backend == "python"
    assert definition.inputs == [{"name": "logits", "dtype": "FP32", "dims": [-1, 5]}]
    assert definition.outputs == [
        {"name": "labels", "dtype": "STRING", "dims": [-1]},
        {"name": "scores", "dtype": "FP32", "dims": [-1]},
        {"name": "indices", "dtype": "INT64", "dims": [-1]},
    ]
    assert definition.parameters == {"classes": "5", "activation": "softmax", "labels_file": "labels.txt"}
    assert (
        definition.version_files == {"labels.txt": tmp_path / "entities.txt"} and definition.model_files == {}
    )
    bare = step_definition("token_labels", {"classes": 7, "activation": "none"}, tmp_path)
    assert [o["name"] for o in bare.outputs] == ["scores", "indices"] and bare.version_files == {}
    logits = np.random.default_rng(0).standard_normal((2, 3, 7)).astype(np.float32)
    outputs = TokenLabels(bare.parameters)(logits)
    np.testing.assert_array_equal(outputs["indices"], logits.argmax(-1))
    np.testing.assert_array_equal(outputs["scores"], logits.max(-1))
    with pytest.raises(ValueError, match=r"expected logits of shape \[rows, tokens, 7\], got \[2, 7\]"):
        TokenLabels(bare.parameters)(logits[0, :2])
    assert TokenLabelsSettings().activation == "softmax"


def test_token_labels_equal_the_token_classification_pipeline(tmp_path: Path) -> None:
    folder = make_bert_token_classifier(tmp_path / "ner", ENTITIES, initializer_range=0.5)
    texts = [*[text for text in TEXTS if text.strip()][:-1], "Ada Lovelace visited Paris and Berlin"]
    tokenize, _ = step_tokenize({"tokenizer": str(folder), "padding": "longest"})
    tokens = tokenize(texts)
    definition = step_definition("token_labels", {"labels": ENTITIES}, Path("."))
    ours = TokenLabels(definition.parameters, ENTITIES)(model_logits(folder, "token", tokens))
    pipeline = transformers.pipeline(
        "token-classification", model=str(folder), aggregation_strategy="none", ignore_labels=[]
    )
    # The real tokens: attended to, and not the special tokens the tokenizer adds ([CLS], [SEP], [PAD]).
    mask = transformers.AutoTokenizer.from_pretrained(str(folder))(
        texts, padding=True, truncation=True, return_special_tokens_mask=True, return_tensors="np"
    )
    np.testing.assert_array_equal(mask["input_ids"], tokens["input_ids"])
    for row, entities in enumerate(pipeline(texts)):
        real = np.flatnonzero(tokens["attention_mask"][row] & (1 - mask["special_tokens_mask"][row])).tolist()
        assert [e["index"] for e in entities] == real
        assert [e["entity"] for e in entities] == [ours["labels"][row, i].decode() for i in real]
        np.testing.assert_allclose(
            [e["score"] for e in entities], ours["scores"][row, real], rtol=0, atol=1e-5
        )
        assert [ENTITIES[i] for i in ours["indices"][row, real]] == [e["entity"] for e in entities]


def test_token_labels_step_file_is_self_contained_and_its_defaults_agree() -> None:
    from generator.steps import token_labels

    modules = imported_modules(STEPS_DIR / "token_labels.py")
    assert modules <= {"__future__", "json", "collections", "pathlib", "numpy", "triton_python_backend_utils"}
    for name, value in token_labels.DEFAULTS.items():
        assert getattr(TokenLabelsSettings(), name) == value, name
    assert all(field.get("description") for field in settings_schema("token_labels")["properties"].values())
    assert PostprocessSettings(classes=2).applied == "softmax"
