"""The generate step without Triton: its settings and definition, its folder checks, the per-request values,
the incremental decoding, and :class:`Generate` against transformers' own ``generate`` on a tiny GPT-2-like
model made here (greedy, seeded sampling, stop sequences, repetition penalty, the context's bound)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generator.core.errors import ExportError, SpecError
from generator.steps import STEP_KINDS, GenerateSettings, step_definition
from generator.steps import generate as step
from generator.steps.generate_settings import VALUE_INPUTS

from ..conftest import imported_modules
from ..hf_models import CORPUS, GenerateReference, make_bert_text_classifier, make_gpt2_lm

STEPS_DIR = Path(step.__file__).parent
CONTEXT = 48
PROMPTS = ["hello world", "the quick brown fox", "héllo wörld, café", "日本語 🙂", ""]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gpt2_lm(tmp_path_factory.mktemp("spec") / "lm", n_positions=CONTEXT)


@pytest.fixture(scope="module")
def generate(folder: Path) -> step.Generate:
    return step.Generate(folder, {"max_new_tokens": 12})


@pytest.fixture(scope="module")
def reference(folder: Path) -> GenerateReference:
    return GenerateReference(folder)


def _ids(tokens: list[step.Token]) -> list[int]:
    return [t.token_id for t in tokens]


# The settings and the definition.


def test_the_definition_is_a_decoupled_python_model(folder: Path) -> None:
    definition = step_definition(
        "generate", {"model": "lm", "stop": ["\n", "é"], "threads": 2}, folder.parent
    )
    assert definition.decoupled and definition.backend == "python"
    assert definition.model_file == STEPS_DIR / "generate.py"
    assert definition.version_files == {"model": folder}
    assert definition.inputs[0] == {"name": "text_input", "dtype": "STRING", "dims": [1]}
    optional = {i["name"]: (i["dtype"], i["dims"]) for i in definition.inputs[1:] if i["optional"]}
    assert optional == {name: (dtype, dims) for name, (dtype, dims) in VALUE_INPUTS.items()}
    assert {name: dtype for name, (dtype, _) in VALUE_INPUTS.items()} == step.VALUE_DTYPES
    assert [o["name"] for o in definition.outputs] == ["text_output", "token_id"]
    assert definition.parameters == {
        "model_folder": "model",
        "max_new_tokens": "64",
        "stop": '["\\n", "é"]',
        "full_text": "false",
        "skip_special_tokens": "true",
        "dtype": "float32",
        "threads": "2",
    }
    full = step_definition("generate", {"model": "lm", "full_text": True}, folder.parent)
    assert full.outputs[-1] == {"name": "full_text", "dtype": "STRING", "dims": [1]}
    schema = STEP_KINDS["generate"].model_json_schema()
    assert schema["additionalProperties"] is False
    assert all(field.get("description") for field in schema["properties"].values())


def test_the_step_reads_its_parameters_back(folder: Path, reference: GenerateReference) -> None:
    """The definition's parameters, as the config carries them, are the step's defaults."""
    settings = {"model": "lm", "do_sample": True, "temperature": 0.5, "top_k": 5, "max_new_tokens": 7}
    parameters = dict(step_definition("generate", settings, folder.parent).parameters)
    assert parameters.pop("model_folder") == "model"  # the folder's name in the version directory
    served = step.Generate(folder, parameters)
    expected = reference("hello", seed=11, do_sample=True, temperature=0.5, top_k=5, max_new_tokens=7)
    assert _ids(served("hello", seed=11)) == expected


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({}, "step.model: required setting is missing; add it"),
        ({"model": "lm", "temperature": 0}, "step.temperature: must be greater than 0 (got 0)"),
        ({"model": "lm", "top_p": 1.5}, "step.top_p: must be at most 1 (got 1.5)"),
        ({"model": "lm", "top_k": -1}, "step.top_k: must be at least 0 (got -1)"),
        ({"model": "lm", "stop": ["a", ""]}, "step.stop: holds an empty stop sequence; give non-empty ones"),
        ({"model": "lm", "dtype": "int8"}, "step.dtype: must be 'float32', 'float16', 'bfloat16' or 'auto'"),
        ({"model": "lm", "max_new_tokens": 9, "max_new_tokens_limit": 8}, "max_new_tokens 9 is more than"),
        ({"model": "lm", "beams": 4}, "step.beams: unknown setting; the settings of this step are: model,"),
        (
            {"model": "lm", "max_new_tokens": CONTEXT},
            f"step.max_new_tokens: {CONTEXT} leaves no room for a prompt",
        ),
        ({"model": "nowhere"}, "step.model: '"),
    ],
)
def test_bad_settings_are_one_line_each(folder: Path, settings: dict[str, Any], line: str) -> None:
    with pytest.raises(SpecError) as caught:
        step_definition("generate", settings, folder.parent)
    assert len(caught.value.problems) == 1 and line in caught.value.problems[0], caught.value.problems


def test_folders_that_are_not_causal_lms(tmp_path: Path, folder: Path) -> None:
    classifier = make_bert_text_classifier(tmp_path / "classifier", ["a", "b"])
    with pytest.raises(SpecError, match="holds BertForSequenceClassification, not a causal language model"):
        step_definition("generate", {"model": str(classifier)}, tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(json.loads((folder / "config.json").read_text())))
    with pytest.raises(SpecError) as caught:
        step_definition("generate", {"model": "bare"}, tmp_path)
    assert [line.split("'")[2].split(";")[0] for line in caught.value.problems] == [
        " has no weights (model.safetensors or pytorch_model.bin)",
        " has no tokenizer (tokenizer.json)",
    ]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpecError, match="is a file, not a folder"):
        step_definition("generate", {"model": "file"}, tmp_path)
    (bare / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match=r"has no readable config\.json"):
        step_definition("generate", {"model": "bare"}, tmp_path)


def test_the_step_file_is_self_contained() -> None:
    """It runs in Triton's Python backend stub: numpy at the top, torch and transformers where they are used,
    nothing from this package."""
    tree = ast.parse((STEPS_DIR / "generate.py").read_text())
    modules = imported_modules(STEPS_DIR / "generate.py")
    allowed = {
        "__future__",
        "json",
        "math",
        "collections",
        "pathlib",
        "typing",
        "numpy",
        "torch",
        "transformers",
    }
    assert modules <= allowed | {"triton_python_backend_utils"}, modules
    top = {
        a.name.split(".")[0]
        for n in tree.body
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not top & {"torch", "transformers", "triton_python_backend_utils"}


# The per-request values.


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("max_new_tokens", "12", 12),
        ("max_new_tokens", np.int32(3), 3),
        ("do_sample", "true", True),
        ("do_sample", np.bool_(False), False),
        ("do_sample", 1, True),
        ("temperature", 0.5, 0.5),
        ("temperature", "2", 2.0),
        ("top_k", 0, 0),
        ("top_p", 1, 1.0),
        ("seed", 2**63 - 1, 2**63 - 1),
        ("stop", "end", ("end",)),
        ("stop", '["a", "b"]', ("a", "b")),
        ("stop", "[not json", ("[not json",)),
        ("stop", np.array([b"x", "é".encode()], dtype=object), ("x", "é")),
    ],
)
def test_values_are_converted(name: str, value: object, expected: object) -> None:
    assert step.check_value(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_new_tokens", 0, "max_new_tokens: must be between 1 and 2147483647 (got 0)"),
        ("max_new_tokens", 2.5, "max_new_tokens: expected a whole number, got '2.5'"),
        ("max_new_tokens", True, "max_new_tokens: expected a whole number, got True"),
        ("do_sample", "perhaps", "do_sample: expected true or false, got 'perhaps'"),
        (
            "temperature",
            0,
            "temperature: must be greater than 0 (got 0); for greedy decoding send do_sample false",
        ),
        ("temperature", "nan", "temperature: expected a finite number, got nan"),
        ("top_p", 0, "top_p: must be greater than 0 and at most 1 (got 0)"),
        ("top_k", -2, "top_k: must be between 0 and 9223372036854775807 (got -2)"),
        ("repetition_penalty", -1, "repetition_penalty: must be greater than 0 (got -1)"),
        ("seed", -1, "seed: must be between 0 and 9223372036854775807 (got -1)"),
        ("stop", "", "stop: holds an empty stop sequence; send non-empty ones"),
        ("stop", 3, "stop: expected stop sequences, got 3"),
        ("beams", 2, "unknown generation value 'beams'; send some of max_new_tokens, do_sample,"),
    ],
)
def test_bad_values_are_one_line(name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        step.check_value(name, value)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_request_values_from_inputs_and_parameters() -> None:
    inputs = {"max_new_tokens": np.array([5], np.int32), "stop": np.array([b"a", b"b"], dtype=object)}
    values = step.request_values(inputs, {"temperature": 0.5, "triton_enable_empty_final_response": True})
    assert (
        values["max_new_tokens"] == 5
        and list(values["stop"]) == [b"a", b"b"]
        and values["temperature"] == 0.5
    )
    with pytest.raises(
        ValueError, match=r"^unknown request parameter 'max_tokens'; the generation values are"
    ):
        step.request_values({}, {"max_tokens": 3})
    with pytest.raises(
        ValueError, match=r"^seed: sent both as an input and as a request parameter; send it once$"
    ):
        step.request_values({"seed": np.array([1])}, {"seed": 1})
    with pytest.raises(ValueError, match=r"^top_k: send one value, got 2$"):
        step.request_values({"top_k": np.array([[1], [2]])}, {})


# Incremental decoding.


def test_pieces_add_up_to_the_decoded_text(reference: GenerateReference) -> None:
    tokenizer = reference.tokenizer
    for text in [*CORPUS, "日本語のテキスト 🙂🙂 ½", "<|endoftext|>hello<|endoftext|>"]:
        ids = tokenizer(text)["input_ids"]
        decoder = step.IncrementalDecoder(tokenizer)
        pieces = [decoder.push(token) for token in ids]
        assert "".join(pieces) + decoder.flush() == tokenizer.decode(ids, skip_special_tokens=True)
        assert not any("\ufffd" in piece for piece in pieces)  # a split character waits for its last byte
    decoder = step.IncrementalDecoder(tokenizer)
    partial = tokenizer("🙂")["input_ids"]
    assert len(partial) > 1 and [decoder.push(t) for t in partial[:-1]] == [""] * (len(partial) - 1)
    assert decoder.flush() == tokenizer.decode(partial[:-1])  # what is held back, as decoded


# Generation against transformers.


def test_greedy_generation_equals_transformers(generate: step.Generate, reference: GenerateReference) -> None:
    for prompt in PROMPTS:
        tokens = generate(prompt)
        expected = reference(prompt, max_new_tokens=12, do_sample=False)
        assert _ids(tokens) == expected, prompt
        text = reference.tokenizer.decode(expected, skip_special_tokens=True)
        assert "".join(t.text for t in tokens) == text == tokens[-1].full_text
        assert [t.last for t in tokens] == [False] * (len(tokens) - 1) + [True]


def test_sampling_with_a_seed_equals_transformers(
    generate: step.Generate, reference: GenerateReference
) -> None:
    values = {"do_sample": True, "temperature": 1.3, "top_k": 30, "top_p": 0.8, "max_new_tokens": 20}
    for seed in (0, 1, 2):
        assert _ids(generate("hello", seed=seed, **values)) == reference("hello", seed=seed, **values)
    # Greedy decoding ignores the sampling values, as transformers does.
    greedy = generate("hello", do_sample=False, temperature=5.0, top_k=1, seed=4)
    assert _ids(greedy) == reference("hello", max_new_tokens=12, do_sample=False)
    penalty = generate("the quick brown fox", repetition_penalty=1.4, max_new_tokens=20)
    expected = reference("the quick brown fox", max_new_tokens=20, do_sample=False, repetition_penalty=1.4)
    assert _ids(penalty) == expected


def test_stop_sequences_end_after_the_token_that_completes_one(
    generate: step.Generate, reference: GenerateReference
) -> None:
    prompt = "the lazy dog"
    free = generate(prompt, max_new_tokens=30)
    text = prompt
    for k, token in enumerate(free):
        text += token.text
        piece = token.text.strip()
        if k >= 2 and piece.isascii() and piece.isalpha() and text.find(piece) == len(text) - len(piece):
            break
    else:
        pytest.fail(f"no usable stop sequence in {[t.text for t in free]!r}")
    stopped = generate(prompt, max_new_tokens=30, stop=[piece, "never here"])
    assert _ids(stopped) == _ids(free)[: k + 1]
    assert _ids(stopped) == reference(prompt, max_new_tokens=30, do_sample=False, stop_strings=[piece])
    assert stopped[-1].last and stopped[-1].full_text.endswith(piece)


def _prompt_of(reference: GenerateReference, count: int) -> str:
    """A prompt of ``count`` tokens (a prefix of the corpus)."""
    text = " ".join(CORPUS)
    return next(
        text[:n] for n in range(len(text)) if len(reference.tokenizer(text[:n])["input_ids"]) == count
    )


def test_max_new_tokens_and_the_context(generate: step.Generate, reference: GenerateReference) -> None:
    assert len(generate("hello", max_new_tokens=3)) == 3
    prompt = _prompt_of(reference, CONTEXT - 5)
    with pytest.raises(ValueError) as caught:
        generate.plan(prompt, {"max_new_tokens": 6})
    assert str(caught.value) == (
        f"max_new_tokens: the prompt's {CONTEXT - 5} tokens and 6 new ones exceed the model's {CONTEXT}-token "
        "context; send a shorter prompt or fewer max_new_tokens"
    )
    # The default (12) is cut to what the context leaves.
    assert _ids(generate(prompt)) == reference(prompt, max_new_tokens=5, do_sample=False)
    with pytest.raises(ValueError, match="exceed the model's 48-token context"):
        generate.plan(_prompt_of(reference, CONTEXT), {})
    limited = step.Generate(generate.model.name_or_path, {"max_new_tokens_limit": 4})
    with pytest.raises(
        ValueError, match=r"^max_new_tokens: 5 is more than this model allows \(4\); ask fewer$"
    ):
        limited.plan("hello", {"max_new_tokens": 5})


def test_a_prompt_with_no_tokens_starts_from_the_start_token(generate: step.Generate) -> None:
    assert generate.plan("", {}).prompt_ids == [generate.tokenizer.bos_token_id]


def test_on_token_false_stops_after_that_token(generate: step.Generate, reference: GenerateReference) -> None:
    seen: list[step.Token] = []

    def stop_at_three(token: step.Token) -> bool:
        seen.append(token)
        return len(seen) < 3

    tokens = generate.run(generate.plan("hello world", {"max_new_tokens": 10}), stop_at_three)
    assert tokens == seen and len(tokens) == 3 and not tokens[-1].last
    assert _ids(tokens) == reference("hello world", max_new_tokens=10, do_sample=False)[:3]


def test_settings_values_are_checked_on_load(folder: Path) -> None:
    with pytest.raises(ValueError, match="temperature: must be greater than 0"):
        step.Generate(folder, {"temperature": "0"})
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16, auto, got 'int4'"):
        step.Generate(folder, {"dtype": "int4"})
    with pytest.raises(ValueError, match=r"^threads: must be at least 1 \(got 0\)$"):
        step.Generate(folder, {"threads": "0"})
    with pytest.raises(ValueError, match=r"^max_new_tokens_limit: expected a whole number, got 'many'$"):
        step.Generate(folder, {"max_new_tokens_limit": "many"})


# The build's side.


def test_the_build_resolves_a_decoupled_model(folder: Path) -> None:
    from generator.build.pipelines import resolve_model
    from generator.spec.models import ModelSpec

    entry = {"name": "lm", "framework": "python", "source": "builtin:generate", "step": {"model": "lm"}}
    resolved = resolve_model(ModelSpec.model_validate(entry), folder.parent, "models[0]")
    assert resolved.decoupled is True
    assert [t.name for t in resolved.inputs or [] if t.optional] == list(VALUE_INPUTS)
    with pytest.raises(SpecError, match=r"^models\[0\].decoupled: the generate step sends many responses"):
        resolve_model(ModelSpec.model_validate({**entry, "decoupled": False}), folder.parent, "models[0]")


def test_a_factory_makes_the_model_folder(tmp_path: Path, folder: Path, reference: GenerateReference) -> None:
    from generator.build.exporters.python import make_step_file
    from generator.spec.models import ModelSpec

    factory = tmp_path / "lm.py"
    factory.write_text(
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n\n"
        "def build():\n"
        f"    return AutoModelForCausalLM.from_pretrained({str(folder)!r}), AutoTokenizer.from_pretrained({str(folder)!r})\n\n\n"
        f"def path():\n    return {str(folder)!r}\n\n\n"
        "def wrong():\n    return 42\n"
    )

    def made(function: str) -> Path:
        entry = {
            "name": "lm",
            "framework": "python",
            "source": "builtin:generate",
            "step": {"model": f"lm.py:{function}"},
        }
        target = tmp_path / function / "model"
        return Path(
            make_step_file(ModelSpec.model_validate(entry), factory, target, progress=lambda stage: None)
        )

    for function in ("build", "path"):
        generated = step.Generate(made(function), {"max_new_tokens": 6})("hello")
        assert _ids(generated) == reference("hello", max_new_tokens=6, do_sample=False)
    with pytest.raises(ExportError) as caught:
        made("wrong")
    assert str(caught.value) == (
        "model 'lm': step.model: lm.py:wrong returned int; return the model and its tokenizer (model, tokenizer: "
        "transformers objects with save_pretrained) or the path of a model folder"
    )


def test_settings_model_is_exported() -> None:
    assert STEP_KINDS["generate"] is GenerateSettings
