"""The tuned settings file: its name and format, reading and writing it, and merging it into the spec."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydantic
import pytest
import yaml

from generator.core.errors import SpecError
from generator.spec.models import load_spec
from generator.spec.tuned import (
    TunedEntry,
    TunedInfo,
    load_spec_with_tuned,
    read_tuned,
    tuned_path,
    write_tuned,
)

SPEC = """\
repository: out
defaults:
  max_batch_size: 64
  dynamic_batching: {preferred_batch_size: [16, 32], max_queue_delay_microseconds: 500}
  instance_group: {count: 2, kind: cpu}
  parameters: {intra_op_thread_count: 4, inter_op_thread_count: 2}
models:
  - name: cnn
    framework: onnx
    source: cnn.onnx
    warmup: {batch_size: 8}
  - name: cnn
    framework: onnx
    source: cnn_v2.onnx
    version: 2
  - name: linear
    framework: onnx
    source: linear.onnx
    instance_group: {count: 1}
"""

ENTRY = TunedEntry(
    settings={
        "max_batch_size": 16,
        "dynamic_batching": {"max_queue_delay_microseconds": 100, "preferred_batch_size": [4, 8]},
        "instance_group": {"count": 3},
        "parameters": {"intra_op_thread_count": 1},
    },
    trial="20261123T101500Z/7",
    objective="max throughput at 16 users subject to p99_ms <= 20",
    measured={"users": 16, "throughput": 2480.5, "p50_ms": 5.1, "p99_ms": 9.8},
    tuned_at="2026-11-23T10:15:00+00:00",
)


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "generator.yaml"
    path.write_text(SPEC)
    return path


def _tuned(spec_path: Path, models: dict) -> Path:
    path = tuned_path(spec_path)
    path.write_text(yaml.safe_dump({"format": 1, "models": models}))
    return path


def _problems(spec_path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_with_tuned(spec_path)
    return caught.value.problems


def test_the_file_is_named_after_the_spec_beside_it() -> None:
    assert tuned_path(Path("examples/generator.yaml")) == Path("examples/generator.tuned.yaml")
    assert tuned_path(Path("tritongen.yaml")) == Path("tritongen.tuned.yaml")
    assert tuned_path(Path("/a/b/serving.yml")) == Path("/a/b/serving.tuned.yaml")


def test_a_missing_or_empty_file_holds_no_settings(spec_path: Path) -> None:
    assert read_tuned(tuned_path(spec_path)) == {}
    tuned_path(spec_path).write_text("# nothing tuned yet\n")
    assert read_tuned(tuned_path(spec_path)) == {}
    spec, info = load_spec_with_tuned(spec_path)
    assert spec == load_spec(spec_path)
    assert info.applied == {} and info.warnings == []


def test_write_then_read_gives_the_same_entries(spec_path: Path) -> None:
    path = write_tuned(spec_path, {"cnn": ENTRY})
    assert path == spec_path.parent / "generator.tuned.yaml"
    assert read_tuned(path) == {"cnn": ENTRY}
    text = path.read_text()
    assert text.startswith(
        "# Tuned serving settings for generator.yaml, written by `python -m generator tune`"
    )
    assert "build with --no-tuned" in text
    # Readable: one line per setting, figures on one line, the timestamp a string.
    assert (
        "      dynamic_batching: {max_queue_delay_microseconds: 100, preferred_batch_size: [4, 8]}\n" in text
    )
    assert "      instance_group: {count: 3}\n" in text
    assert "    measured: {users: 16, throughput: 2480.5, p50_ms: 5.1, p99_ms: 9.8}\n" in text
    assert "    tuned_at: '2026-11-23T10:15:00+00:00'\n" in text


def test_the_same_entries_give_the_same_bytes(spec_path: Path) -> None:
    shuffled = TunedEntry(
        settings={key: ENTRY.settings[key] for key in reversed(list(ENTRY.settings))},
        trial=ENTRY.trial,
        objective=ENTRY.objective,
        measured=ENTRY.measured,
        tuned_at=ENTRY.tuned_at,
    )
    first = write_tuned(spec_path, {"linear": ENTRY, "cnn": ENTRY}).read_bytes()
    tuned_path(spec_path).unlink()
    second = write_tuned(spec_path, {"cnn": shuffled, "linear": shuffled}).read_bytes()
    assert first == second
    write_tuned(spec_path, {})  # rewriting what is there changes nothing
    assert tuned_path(spec_path).read_bytes() == first


def test_writing_keeps_the_other_models_entries(spec_path: Path) -> None:
    write_tuned(spec_path, {"cnn": ENTRY, "linear": TunedEntry(settings={"max_batch_size": 4}, trial="r1/1")})
    newer = TunedEntry(settings={"dynamic_batching": False}, trial="r2/5")
    write_tuned(spec_path, {"linear": newer})
    assert read_tuned(tuned_path(spec_path)) == {"cnn": ENTRY, "linear": newer}


def test_the_write_replaces_the_file_whole_and_leaves_no_temporary_file(spec_path: Path) -> None:
    path = write_tuned(spec_path, {"cnn": ENTRY})
    os.chmod(path, 0o640)
    with path.open() as old:
        write_tuned(spec_path, {"linear": ENTRY})
        assert "linear" not in old.read()  # a reader of the old file still sees all of the old file
    assert sorted(p.name for p in spec_path.parent.iterdir()) == ["generator.tuned.yaml", "generator.yaml"]
    assert path.stat().st_mode & 0o777 == 0o640
    assert set(read_tuned(path)) == {"cnn", "linear"}


def test_measured_figures_may_be_numpy_numbers(spec_path: Path) -> None:
    entry = TunedEntry(
        settings={"max_batch_size": np.int64(8)},
        trial="r/1",
        measured={"throughput": np.float64(812.25), "users": np.int32(4), "note": "cpu"},
    )
    path = write_tuned(spec_path, {"cnn": entry})
    read = read_tuned(path)["cnn"]
    assert read.settings == {"max_batch_size": 8}
    assert read.measured == {"throughput": 812.25, "users": 4, "note": "cpu"}


def test_settings_merge_over_the_defaults_and_the_models_own_values(spec_path: Path) -> None:
    _tuned(
        spec_path,
        {
            "cnn": {
                "settings": {
                    "max_batch_size": 16,
                    "dynamic_batching": {"max_queue_delay_microseconds": 100},
                    "instance_group": {"count": 3},
                    "parameters": {"intra_op_thread_count": 1},
                },
                "trial": "run/7",
            },
            "linear": {"settings": {"dynamic_batching": False}, "trial": "run/2"},
        },
    )
    spec, info = load_spec_with_tuned(spec_path)
    cnn1, cnn2, linear = spec.models
    for cnn in (cnn1, cnn2):  # every version of that name
        assert cnn.max_batch_size == 16
        # Mappings merge key by key: the delay is tuned, the preferred sizes stay the defaults'.
        assert cnn.dynamic_batching.max_queue_delay_microseconds == 100
        assert cnn.dynamic_batching.preferred_batch_size == [16, 32]
        assert cnn.instance_group.count == 3 and cnn.instance_group.kind == "cpu"
        assert cnn.parameters == {"intra_op_thread_count": 1, "inter_op_thread_count": 2}
    assert cnn1.warmup.batch_size == 8  # what is not tuned is the spec's
    assert linear.dynamic_batching is False
    assert linear.max_batch_size == 64 and linear.instance_group.count == 1
    assert set(info.applied) == {"cnn", "linear"} and info.path == tuned_path(spec_path)
    assert info.warnings == []
    assert info.record("cnn") == {
        "file": "generator.tuned.yaml",
        "trial": "run/7",
        "settings": info.applied["cnn"].settings,
    }
    assert info.record("other") is None


def test_a_tuned_mapping_switches_a_feature_the_spec_switched_off(spec_path: Path) -> None:
    spec_path.write_text(SPEC.replace("    instance_group: {count: 1}", "    dynamic_batching: false"))
    _tuned(
        spec_path, {"linear": {"settings": {"dynamic_batching": {"preferred_batch_size": [2]}}, "trial": "t"}}
    )
    linear = load_spec_with_tuned(spec_path)[0].models[2]
    assert linear.dynamic_batching.preferred_batch_size == [2]
    assert linear.dynamic_batching.max_queue_delay_microseconds == 0


def test_no_tuned_builds_from_the_spec_alone(spec_path: Path) -> None:
    _tuned(spec_path, {"cnn": {"settings": {"max_batch_size": 2}, "trial": "t"}})
    spec, info = load_spec_with_tuned(spec_path, use_tuned=False)
    assert spec.models[0].max_batch_size == 64
    assert info == TunedInfo()
    assert load_spec(spec_path).models[0].max_batch_size == 64  # load_spec never reads the file


def test_an_entry_for_a_model_the_spec_lacks_is_a_warning(spec_path: Path) -> None:
    _tuned(
        spec_path,
        {
            "cnn": {"settings": {"max_batch_size": 16}, "trial": "t"},
            "retired": {"settings": {"max_batch_size": 8}, "trial": "t"},
        },
    )
    spec, info = load_spec_with_tuned(spec_path)
    assert spec.models[0].max_batch_size == 16
    assert set(info.applied) == {"cnn"}
    assert len(info.warnings) == 1
    warning = info.warnings[0]
    assert warning.startswith(
        f"{tuned_path(spec_path)}: models.retired: no model 'retired' in generator.yaml"
    )
    assert "delete the entry" in warning


def test_a_bad_value_is_reported_against_the_tuned_file_with_its_path(spec_path: Path) -> None:
    tuned = _tuned(
        spec_path,
        {
            "cnn": {"settings": {"max_batch_size": -1, "instance_group": {"count": 0}}, "trial": "t"},
            "linear": {
                "settings": {"dynamic_batching": {"priority_levels": 2, "default_priority_level": 3}},
                "trial": "t",
            },
        },
    )
    problems = _problems(spec_path)
    # Once each, though two versions of cnn take the same entry.
    assert [line.split(";")[0] for line in problems] == [
        f"{tuned}: models.cnn.settings.max_batch_size: must be at least 0 (got -1)",
        f"{tuned}: models.cnn.settings.instance_group.count: must be at least 1 (got 0)",
        f"{tuned}: models.linear.settings.dynamic_batching: default_priority_level must be between 1 and "
        "priority_levels (2)",
    ]
    assert all(line.endswith("or build with --no-tuned") for line in problems)


def test_a_spec_problem_is_still_the_specs(spec_path: Path) -> None:
    spec_path.write_text(SPEC.replace("    warmup: {batch_size: 8}", "    warmup: {batch_size: 0}"))
    _tuned(spec_path, {"cnn": {"settings": {"max_batch_size": 16}, "trial": "t"}})
    assert _problems(spec_path) == [f"{spec_path}: models[0].warmup.batch_size: must be at least 1 (got 0)"]


def test_a_key_that_cannot_be_tuned_is_refused_naming_the_allowed_ones(spec_path: Path) -> None:
    tuned = _tuned(spec_path, {"cnn": {"settings": {"max_batch_size": 16, "opset": 17}, "trial": "t"}})
    assert _problems(spec_path) == [
        f"{tuned}: models.cnn.settings.opset: cannot be tuned; settings may hold only max_batch_size, "
        "dynamic_batching, sequence_batching, instance_group, parameters; delete it"
    ]
    with pytest.raises(pydantic.ValidationError, match="opset cannot be tuned"):
        TunedEntry(settings={"opset": 17}, trial="t")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("format: 2\nmodels: {}\n", "format: 2 is not a format this tritongen reads (only 1)"),
        ("models: {}\n", "format: required field is missing; add format: 1"),
        ("format: 1\nmodel: {}\n", "model: unknown field; the file holds only format: 1 and models:"),
        ("format: 1\nmodels: [cnn]\n", "models: must be a mapping of model name -> settings and trial"),
        ("- cnn\n", "(top level): must be a mapping with format: 1 and models:"),
        ("format: 1\nmodels:\n  cnn: {settings: {}}\n", "models.cnn.trial: required field is missing"),
        (
            "format: 1\nmodels:\n  cnn: {settings: {}, trial: t, trail: u}\n",
            "models.cnn.trail: unknown field; did you mean 'trial'?",
        ),
        ("format: 1\nmodels:\n  cnn: 3\n", "models.cnn: must be a mapping with settings: and trial:"),
        (
            "format: 1\nmodels:\n  a.b: {settings: [], trial: t}\n",
            'models["a.b"].settings: Input should be a valid dictionary',
        ),
        (
            "format: 1\nmodels:\n  cnn: {settings: {}, trial: a}\n  cnn: {settings: {}, trial: b}\n",
            'key "cnn" appears twice',
        ),
        ("format: 1\nmodels: {cnn: [\n", "YAML does not parse"),
    ],
)
def test_a_malformed_file_is_refused_with_the_path_and_the_fix(
    spec_path: Path, text: str, expected: str
) -> None:
    tuned_path(spec_path).write_text(text)
    with pytest.raises(SpecError) as caught:
        read_tuned(tuned_path(spec_path))
    assert any(str(tuned_path(spec_path)) in line and expected in line for line in caught.value.problems), (
        caught.value.problems
    )


def test_a_malformed_file_is_not_overwritten(spec_path: Path) -> None:
    path = tuned_path(spec_path)
    path.write_text("format: 1\nmodels: {cnn: {settings: {}, trial: t}}\nnotes: mine\n")
    with pytest.raises(SpecError, match="notes: unknown field"):
        write_tuned(spec_path, {"linear": ENTRY})
    assert "notes: mine" in path.read_text()


def test_an_unquoted_timestamp_reads_as_text(spec_path: Path) -> None:
    path = tuned_path(spec_path)
    path.write_text(
        "format: 1\nmodels:\n  cnn: {settings: {}, trial: t, tuned_at: 2026-11-23T10:15:00+00:00}\n"
    )
    assert read_tuned(path)["cnn"].tuned_at == "2026-11-23T10:15:00+00:00"
