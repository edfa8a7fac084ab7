"""A ``framework: huggingface`` entry in the spec: what it expands into, read from the folder's files, what
stays overridable, and one-line errors for what cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.build.pipelines import resolve_model
from generator.core.errors import SpecError
from generator.spec.models import parse_spec

from ..hf_models import make_bert_text_classifier, make_bert_token_classifier, make_sentence_transformer

TOPICS = ["food", "sport", "weather"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    make_bert_text_classifier(root / "topics", TOPICS)
    make_bert_text_classifier(root / "multi", TOPICS, problem_type="multi_label_classification")
    make_sentence_transformer(root / "embed")
    make_bert_token_classifier(root / "entities", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    return root


def _spec(root: Path, *entries: dict, **top: object):
    return parse_spec({"models": list(entries), **top}, base_dir=root)


def _entry(name: str, source: str, task: str, **extra: object) -> dict:
    return {"name": name, "framework": "huggingface", "source": source, "task": task, **extra}


def test_a_text_classifier_becomes_tokenizer_model_postprocess_and_an_ensemble(folders: Path) -> None:
    spec = _spec(folders, _entry("topics", "topics", "text-classification"))
    models = {model.name: model for model in spec.models}
    assert list(models) == ["topics_preprocess", "topics_model", "topics_postprocess"]
    tokenizer = models["topics_preprocess"]
    assert tokenizer.source == "builtin:tokenizer"
    assert tokenizer.step["max_length"] == 32  # the folder's model_max_length
    assert tokenizer.step["padding"] == "longest"
    model = models["topics_model"]
    assert (model.framework, model.task, model.pipeline) == ("huggingface", "text-classification", False)
    assert [t.name for t in model.inputs] == list(tokenizer.step["outputs"])
    post = models["topics_postprocess"]
    assert post.step["labels"] == TOPICS  # config.id2label, in class order
    assert post.step["activation"] == "softmax"
    (ensemble,) = spec.ensembles
    assert ensemble.name == "topics"
    assert [step.model for step in ensemble.steps] == list(models)
    assert ensemble.steps[0].input_map == {"text": "TEXT"}
    assert spec.huggingface["topics"]["parts"] == {
        "preprocess": "topics_preprocess",
        "model": "topics_model",
        "postprocess": "topics_postprocess",
    }


def test_a_multi_label_classifier_gets_sigmoid_as_transformers_does(folders: Path) -> None:
    spec = _spec(folders, _entry("multi", "multi", "text-classification"))
    assert spec.models[2].step["activation"] == "sigmoid"


def test_a_sentence_transformer_exports_its_pooling_in_the_graph(folders: Path) -> None:
    spec = _spec(folders, _entry("embed", "embed", "sentence-similarity"))
    assert [m.name for m in spec.models] == ["embed_preprocess", "embed_model"]
    assert spec.models[1].task == "feature-extraction"
    assert spec.models[0].step["max_length"] == 48  # its max_seq_length
    record = spec.huggingface["embed"]
    assert record["embedding"] == {"pooling": "mean", "normalize": True, "sentence_transformers": True}
    assert spec.ensembles[0].steps[-1].output_map == {"embedding": "EMBEDDING"}


def test_token_classification_ends_in_per_token_labels(folders: Path) -> None:
    spec = _spec(folders, _entry("ner", "entities", "ner"))
    assert spec.models[2].source == "builtin:token_labels"
    assert spec.ensembles[0].steps[-1].output_map == {"labels": "LABELS", "scores": "SCORES"}


def test_every_part_stays_overridable(folders: Path) -> None:
    entry = _entry(
        "topics",
        "topics",
        "text-classification",
        max_batch_size=16,
        pipeline={"preprocess": {"max_length": 24, "padding": "max_length"}, "postprocess": {"top_k": 1}},
    )
    own_post = {"name": "topics_postprocess", "framework": "python", "source": "builtin:postprocess"}
    own_post["step"] = {"classes": 3, "softmax": False, "top_k": 2}
    spec = _spec(folders, entry, own_post)
    models = {model.name: model for model in spec.models}
    assert models["topics_preprocess"].step["max_length"] == 24
    assert models["topics_preprocess"].max_batch_size == 16  # the steps batch as the model does
    assert models["topics_model"].max_batch_size == 16
    assert models["topics_postprocess"].step == own_post["step"]  # the spec's own model, not derived
    assert spec.huggingface["topics"]["derived"] == ["preprocess", "model"]


def test_pipeline_false_is_the_model_alone(folders: Path) -> None:
    inputs = [{"name": "input_ids", "dtype": "INT64", "dims": [-1]}]
    spec = _spec(folders, _entry("m", "topics", "text-classification", pipeline=False, inputs=inputs))
    assert [m.name for m in spec.models] == ["m"] and not spec.ensembles and not spec.huggingface


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry("a", "nowhere", "text-classification"), r"models\[0\]\.source: no model folder at"),
        (_entry("a", ".", "text-classification"), r"has no config.json"),
        (
            _entry("a", "topics", "summarization"),
            r"models\[0\]\.task: unknown task 'summarization'; use one of",
        ),
        (_entry("a", "topics", "text-classification", pooling="mean"), r"apply to task feature-extraction"),
        (_entry("a", "topics", "feature-extraction", normalize=True), r"normalize: needs pooling"),
        ({"name": "a", "framework": "huggingface", "source": "topics"}, r"needs a task"),
        ({"name": "a", "framework": "onnx", "source": "m.onnx", "task": "ner"}, r"huggingface only"),
        (_entry("a", "topics", "text-classification", format="torchscript"), r"served as onnx"),
    ],
)
def test_what_cannot_work_is_one_line_naming_the_field(folders: Path, entry: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        _spec(folders, entry)
    assert all("\n" not in line for line in caught.value.problems)


def test_a_derived_steps_problem_names_the_entry_and_the_part(folders: Path) -> None:
    entry = _entry("topics", "topics", "text-classification", pipeline={"postprocess": {"top_k": 9}})
    spec = _spec(folders, {"name": "first", "framework": "onnx", "source": "x.onnx"}, entry)
    assert spec.where(3) == "models[1] (topics_postprocess)" and spec.where(0) == "models[0]"
    with pytest.raises(SpecError, match=r"models\[1\] \(topics_postprocess\)\.step\.top_k: 9 is more"):
        resolve_model(spec.models[3], folders, spec.where(3))


_settings_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 600),
    st.text(max_size=4),
    st.lists(st.integers(0, 40), max_size=3),
)
_overrides = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.dictionaries(
        st.sampled_from(
            ["max_length", "padding", "truncation", "size", "top_k", "labels", "activation", "x"]
        ),
        _settings_values,
        max_size=3,
    ),
)
#: huggingface entries near the edges: folders that are and are not model folders, factories, tasks and
#: their aliases, overrides of every kind.
hf_entries = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["h", "h.x", "", "a/b"]),
        "framework": st.just("huggingface"),
        "source": st.sampled_from(
            ["topics", "embed", "entities", "nowhere", "", ".", "x.py:f", "topics/config.json"]
        ),
        "task": st.one_of(
            st.sampled_from(["text-classification", "feature-extraction", "ner", "Sentence_Similarity"]),
            st.sampled_from(["image-classification", "summarization", ""]),
            st.integers(),
        ),
    },
    optional={
        "pipeline": st.one_of(
            st.booleans(),
            st.text(max_size=2),
            st.fixed_dictionaries(
                {}, optional={"preprocess": _overrides, "postprocess": _overrides, "y": _overrides}
            ),
        ),
        "pooling": st.sampled_from(["mean", "cls", "none", "sum"]),
        "normalize": st.one_of(st.booleans(), st.text(max_size=2)),
        "max_batch_size": st.one_of(st.integers(-1, 64), st.text(max_size=2)),
        "version": st.integers(0, 3),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(entry=hf_entries, twice=st.booleans())
def test_any_huggingface_entry_expands_or_fails_with_field_paths(
    folders: Path, entry: dict, twice: bool
) -> None:
    """Whatever the entry, the spec loads and each derived step resolves, or every problem is one line
    at its field path; no internal error."""
    data = {"models": [entry, dict(entry, name="other")] if twice else [entry]}
    try:
        spec = parse_spec(data, base_dir=folders, origin="spec")
        for index, model in enumerate(spec.models):
            resolve_model(model, folders, spec.where(index))
    except SpecError as error:
        assert error.problems
        for line in error.problems:
            assert "\n" not in line and ": " in line, line
        return
    assert {e.name for e in spec.ensembles} <= {entry["name"], "other"}
