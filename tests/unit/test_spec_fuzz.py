"""Property-based fuzzing of the spec: whatever a user writes either loads or fails with field-path
errors; never another exception. A spec that loads renders a config Triton's schema parses.

Specs are generated as a valid spec mutated at random: keys drawn from the real field names (any
letter case, empty, bracketed) and values drawn from what breaks parsers (bounds of int32/int64,
huge and negative numbers, NaN, nested lists, strings with markup and path characters).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.build.config import DeviceProfile, build_config, check_rendered, render
from generator.core.errors import GeneratorError, SpecError
from generator.core.signature import Signature, TensorInfo
from generator.core.templating import environment
from generator.spec.models import ModelSettings, ModelSpec, field_path, json_schema, load_spec, parse_spec
from generator.spec.names import files_destination
from generator.spec.tuned import TUNABLE, load_spec_with_tuned

FIELDS = sorted(
    set(ModelSpec.model_fields)
    | {"repository", "defaults", "models", "dims", "dtype", "reshape", "optional", "count", "kind"}
    | {"preferred_batch_size", "max_queue_delay_microseconds", "latest", "specific", "all", "seed"}
    | {"batch_sizes", "atol", "rtol", "batch_size", "data", "quantize", "fp16", "simplify", "budget"}
    | {"ensembles", "steps", "model", "input_map", "output_map", "min", "max", "opt", "tokenizer", "labels"}
)
EDGE_NUMBERS = [0, 1, -1, -5, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**12, 10**30]
STRINGS = [
    "",
    "..",
    ".",
    "/",
    "../x",
    "[/x]",
    "[red]x[/]",
    "x" * 300,
    "tritongen-manifest.json",
    "FP32",
    "-1",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(STRINGS),
    st.text(max_size=12),
)
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(FIELDS).map(str.capitalize),
    st.sampled_from(["", "[x]", "Threads", "str"]),
    st.text(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


small = st.integers(-2, 70)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", "", "[/x]"]),
        "dtype": st.sampled_from(["FP32", "INT64", "FP16", "BOOL", "STRING", "BF16", "TYPE_FP32", "FP33"]),
        "dims": st.lists(st.sampled_from([-2, -1, 0, 1, 3, 4, 2**40]), max_size=3),
    },
    optional={
        "reshape": st.lists(st.sampled_from([-1, 1, 4]), max_size=2),
        "optional": st.booleans(),
        "source_name": st.sampled_from(["x", "", "inner:0"]),
        "label_filename": st.sampled_from(["labels.txt", ""]),
    },
)
dims_lists = st.lists(st.sampled_from([-1, 0, 1, 16, 2**40]), max_size=2)
#: A built-in step or a user's Python model, with settings near the edges of what is valid.
python_models = st.fixed_dictionaries(
    {
        "framework": st.just("python"),
        "source": st.sampled_from(
            ["builtin:tokenizer", "builtin:postprocess", "builtin:image", "builtin:x", "p.py"]
        ),
    },
    optional={
        "step": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "tokenizer": st.sampled_from(["t.json", "text.py:tokenizer", ""]),
                    "max_length": small,
                    "padding": st.sampled_from(["max_length", "longest", "left"]),
                    "labels": st.sampled_from(["l.txt", ""]),
                    "top_k": small,
                    "size": st.lists(small, max_size=3),
                    "layout": st.sampled_from(["NCHW", "NHWC", "CHW"]),
                },
            ),
            values,
        ),
        "files": st.one_of(st.lists(st.sampled_from(["a.txt", "", "dir"]), max_size=2), values),
    },
)
ensemble_steps = st.lists(
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["m0", "m1", "e", "", "nope"]),
            "input_map": st.dictionaries(
                st.sampled_from(["x", "y", ""]), st.sampled_from(["X", "Y", ""]), max_size=2
            ),
            "output_map": st.dictionaries(
                st.sampled_from(["x", "y", ""]), st.sampled_from(["Y", "Z", ""]), max_size=2
            ),
        },
        optional={"version": st.integers(-2, 2)},
    ),
    max_size=3,
)
ensembles = st.fixed_dictionaries(
    {"name": st.sampled_from(["e", "m0", "", ".x"]), "steps": ensemble_steps},
    optional={
        "max_batch_size": small,
        "inputs": st.lists(tensors, max_size=1),
        "outputs": st.lists(tensors, max_size=1),
    },
)
#: Settings a user plausibly writes: real field names, values near the edges of what is valid.
plausible_settings = st.fixed_dictionaries(
    {},
    optional={
        "max_batch_size": small,
        "dynamic_batching": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={
                    "preferred_batch_size": st.lists(small, max_size=3),
                    "max_queue_delay_microseconds": small,
                    "priority_levels": small,
                    "default_priority_level": small,
                    "preserve_ordering": st.booleans(),
                    "default_queue_policy": st.fixed_dictionaries(
                        {},
                        optional={
                            "max_queue_size": small,
                            "timeout_action": st.sampled_from(["REJECT", "DELAY", "DROP"]),
                        },
                    ),
                },
            ),
        ),
        "instance_group": st.fixed_dictionaries(
            {},
            optional={
                "count": small,
                "kind": st.sampled_from(["cpu", "gpu", "auto"]),
                "gpus": st.lists(small, max_size=2),
            },
        ),
        "version_policy": st.one_of(
            st.fixed_dictionaries({"latest": small}),
            st.fixed_dictionaries({"all": st.booleans()}),
            st.fixed_dictionaries({"specific": st.lists(small, max_size=3)}),
        ),
        "parameters": st.dictionaries(
            st.sampled_from(
                ["intra_op_thread_count", "execution_mode", "enable_mem_arena", "INFERENCE_MODE", "x"]
            ),
            st.one_of(
                small, st.booleans(), st.sampled_from([math.nan, 2.0, "4x", "on", 2**31]), st.text(max_size=3)
            ),
            max_size=2,
        ),
        "warmup": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={"batch_size": small, "count": small, "data": st.sampled_from(["random", "zero"])},
            ),
        ),
        "response_cache": st.booleans(),
        "verify": st.fixed_dictionaries(
            {}, optional={"batch_sizes": st.lists(small, max_size=3), "seed": small, "enabled": st.booleans()}
        ),
        "opset": st.sampled_from([6, 7, 17, 20, 99, 100]),
        "format": st.sampled_from(["onnx", "torchscript", "tensorrt"]),
        "optimize": st.one_of(
            st.booleans(),
            st.fixed_dictionaries(
                {},
                optional={
                    "simplify": st.booleans(),
                    "quantize": st.sampled_from(["none", "dynamic"]),
                    "fp16": st.booleans(),
                },
            ),
        ),
        "inputs": st.lists(tensors, max_size=2),
        "outputs": st.lists(tensors, max_size=2),
        "accelerators": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["openvino", "cuda", "tensorrt"])}), max_size=1
        ),
        "version": st.integers(0, 3),
        "shapes": st.dictionaries(
            st.sampled_from(["x", "y"]),
            st.fixed_dictionaries({"min": dims_lists, "opt": dims_lists, "max": dims_lists}),
            max_size=2,
        ),
        "values": st.dictionaries(
            st.sampled_from(["x", "y"]), st.fixed_dictionaries({"min": small, "max": small}), max_size=2
        ),
    },
)


def _base_model(index: int) -> dict[str, Any]:
    return {
        "name": f"m{index}",
        "framework": "onnx",
        "source": "m.onnx",
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [4]}],
        "outputs": [{"name": "y", "dtype": "FP32", "dims": [3]}],
    }


@st.composite
def specs(draw: st.DrawFn) -> Any:
    """A valid two-model spec with a few random edits anywhere in it, or something else entirely."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    spec: dict[str, Any] = {
        "defaults": {"max_batch_size": 8},
        "models": [_base_model(0), _base_model(1)],
        "ensembles": [
            {
                "name": "e",
                "steps": [
                    {"model": "m0", "input_map": {"x": "X"}, "output_map": {"y": "Y"}},
                    {"model": "m1", "input_map": {"x": "Y"}, "output_map": {"y": "Z"}},
                ],
            }
        ],
    }
    for _ in range(draw(st.integers(1, 4))):
        target: Any = spec
        # Walk a random path into the spec, then set, replace or delete a key there.
        for _depth in range(draw(st.integers(0, 3))):
            if isinstance(target, dict) and target:
                child = target[draw(st.sampled_from(sorted(target, key=str)))]
            elif isinstance(target, list) and target:
                child = target[draw(st.integers(0, len(target) - 1))]
            else:
                break
            if not isinstance(child, (dict, list)):
                break
            target = child
        if isinstance(target, dict):
            if target and draw(st.booleans()):
                target.pop(draw(st.sampled_from(sorted(target, key=str))))
            target[draw(keys)] = draw(values)
        elif isinstance(target, list):
            target.append(draw(values))
    return spec


def _assert_field_path_errors(error: SpecError) -> None:
    assert error.problems
    for line in error.problems:
        assert line.startswith("spec: "), line
        assert ": " in line.removeprefix("spec: "), line
        assert "\n" not in line


def _assert_names_unique(spec: Any) -> None:
    """What a loaded spec guarantees the build: no name given twice where Triton or a file needs one."""
    for model in spec.models:
        inputs = [t.name for t in model.inputs or []]
        outputs = [t.name for t in model.outputs or []]
        assert len(set(inputs)) == len(inputs) and len(set(outputs)) == len(outputs), model
        assert model.target == "python" or not set(inputs) & set(outputs), model
        destinations = [files_destination(f) for f in model.files or []]
        assert len(set(destinations)) == len(destinations), model.files
    assert len({(m.name, m.version) for m in spec.models}) == len(spec.models)
    names = [m.name for m in spec.models] + [e.name for e in spec.ensembles]
    assert len({*names}) == len({m.name for m in spec.models}) + len(spec.ensembles), names
    for ensemble in spec.ensembles:
        written = [tensor for step in ensemble.steps for tensor in step.output_map.values()]
        declared = [t.name for t in (ensemble.inputs or []) + (ensemble.outputs or [])]
        assert len(set(written)) == len(written) and len(set(declared)) == len(declared), ensemble
        assert not set(written) & {t.name for t in ensemble.inputs or []}, ensemble


def _render_declared(spec: Any, profile: DeviceProfile | None = None) -> None:
    """Render each model's config from its declared I/O and parse it back with Triton's schema."""
    _assert_names_unique(spec)
    env = environment()
    for model in spec.models:
        if not model.inputs or not model.outputs:
            continue
        batch = (-1,) if (model.max_batch_size or 0) > 0 else ()

        def info(t: Any, batch: tuple[int, ...] = batch) -> TensorInfo:
            return TensorInfo(t.name, t.dtype, batch + tuple(t.dims))

        signature = Signature(tuple(map(info, model.inputs)), tuple(map(info, model.outputs)))
        try:
            config = build_config(
                model, signature, "onnxruntime_onnx", profile or DeviceProfile(), "model.onnx"
            )
            check_rendered(render(config, env), config, f"{model.name}/config.pbtxt")
        except GeneratorError as exc:  # a clear error about the spec is fine; "unparsable" is not
            assert all("does not parse" not in line for line in exc.problems), exc.problems


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(specs())
def test_any_spec_loads_or_fails_with_field_paths(data: Any) -> None:
    try:
        spec = parse_spec(data, origin="spec")
    except SpecError as error:
        _assert_field_path_errors(error)
        return
    _render_declared(spec)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(python_models, st.lists(ensembles, max_size=2))
def test_python_models_and_ensembles_load_or_fail_with_field_paths(model: dict, pipelines: list) -> None:
    data = {"models": [_base_model(0), _base_model(1), {"name": "p", **model}], "ensembles": pipelines}
    try:
        spec = parse_spec(data, origin="spec")
    except SpecError as error:
        _assert_field_path_errors(error)
        return
    assert [e.name for e in spec.ensembles] == [e["name"] for e in pipelines]
    _assert_names_unique(spec)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(plausible_settings, st.sampled_from(["cpu", "gpu", "auto"]))
def test_plausible_settings_load_and_render_or_fail_with_field_paths(extra: dict, device: str) -> None:
    try:
        spec = parse_spec({"models": [{**_base_model(0), **extra}]}, origin="spec")
    except SpecError as error:
        _assert_field_path_errors(error)
        return
    _render_declared(spec, DeviceProfile.parse(device, None))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(specs(), st.sampled_from(["plain", "duplicate"]))
def test_any_spec_file_loads_or_fails_in_one_error_type(tmp_path_factory: Any, data: Any, twist: str) -> None:
    text = yaml.safe_dump(data, allow_unicode=True) if not _has_nan(data) else "models: .nan\n"
    if twist == "duplicate":
        text = "models: []\n" + text
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) if twist != "plain" else _loads_or_spec_error():
        load_spec(path)


class _loads_or_spec_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is None or issubclass(kind, SpecError)


def _has_nan(data: Any) -> bool:
    if isinstance(data, float):
        return math.isnan(data)
    if isinstance(data, dict):
        return any(_has_nan(k) or _has_nan(v) for k, v in data.items())
    if isinstance(data, list):
        return any(map(_has_nan, data))
    return False


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"name": ".."}, "models[0].name: '..' cannot be a model name"),
        ({"name": "tritongen-manifest.json"}, "cannot be a model name"),
        ({"name": "x" * 300}, "models[0].name: String should have at most 200 characters"),
        ({"max_batch_size": 2**31}, "models[0].max_batch_size: must be at most 2147483647"),
        ({"max_batch_size": 10**12}, "models[0].max_batch_size: must be at most 2147483647"),
        ({"verify": {"seed": -5}}, "models[0].verify.seed: must be at least 0"),
        ({"verify": {"batch_sizes": [-1]}}, "models[0].verify.batch_sizes[0]: must be at least 1"),
        ({"version_policy": {"specific": [0]}}, "models[0].version_policy.specific[0]: must be at least 1"),
        ({"Max_batch_size": 4}, "models[0].Max_batch_size: unknown field; did you mean 'max_batch_size'?"),
        ({"": 4}, 'models[0][""]: unknown field'),
        ({"[x]": 4}, 'models[0]["[x]"]: unknown field'),
        ({"parameters": {"Threads": [1]}}, "models[0].parameters.Threads: must be a string, an integer"),
        ({"warmup": 3}, "models[0].warmup: must be a mapping of settings, or true/false"),
    ],
)
def test_reported_mistakes_are_one_line_with_their_field_path(edit: dict, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [{**_base_model(0), **edit}]}, origin="s.yaml")
    assert len(caught.value.problems) == 1, caught.value.problems
    assert expected in caught.value.problems[0], caught.value.problems


def test_duplicate_model_is_reported_at_the_second_entry() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"models": [_base_model(0), _base_model(0)]}, origin="s.yaml")
    assert caught.value.problems == [
        "s.yaml: models[1].name: model 'm0' version 1 appears twice (also models[0]); give each a different "
        "version or name"
    ]


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("models:\n  - {name: a, framework: onnx, source: a.onnx}\nmodels: []\n")
    with pytest.raises(SpecError, match=r"spec.yaml:3:1: .*key \"models\" appears twice.*first on line 1"):
        load_spec(path)


def test_deep_nesting_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("models: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(path)


def test_schema_still_describes_the_settings() -> None:
    assert set(ModelSettings.model_fields) <= set(json_schema()["$defs"]["ModelSpec"]["properties"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(plausible_settings, st.dictionaries(st.sampled_from(TUNABLE), values, max_size=4), values),
    st.sampled_from(["m0", "elsewhere"]),
)
def test_any_tuned_settings_load_or_fail_with_the_tuned_files_field_paths(
    tmp_path_factory: Any, tuned: Any, name: str
) -> None:
    # What `tune` writes, or a hand edit of it: the build reads it or reports one line per problem, each
    # naming the tuned file (or the spec) and a field path; never another exception.
    root = tmp_path_factory.mktemp("tuned")
    (root / "spec.yaml").write_text(yaml.safe_dump({"models": [_base_model(0)]}))
    entry = {"settings": tuned, "trial": "20261123T000000Z/1"}
    (root / "spec.tuned.yaml").write_text(
        yaml.safe_dump({"format": 1, "models": {name: entry}}, allow_unicode=True)
    )
    try:
        spec, info = load_spec_with_tuned(root / "spec.yaml")
    except SpecError as error:
        assert error.problems
        for line in error.problems:
            assert "spec.tuned.yaml: " in line or "spec.yaml: " in line, line
            assert "\n" not in line
        return
    if name == "elsewhere":
        assert info.warnings and not info.applied
    _render_declared(spec)


#: Where a spec can give a name twice, and how each duplicate is made.
DUPLICATE_KINDS = (
    "input",
    "output",
    "input_as_output",
    "model",
    "ensemble",
    "ensemble_input",
    "ensemble_output",
    "ensemble_input_as_output",
    "step_output",
    "files",
)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)


@st.composite
def duplicated_specs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid spec (random names, dims and dtypes) with one name given twice; the repeat's field path."""
    tensor_names = draw(st.lists(names, min_size=4, max_size=4, unique=True))
    x, y, big_x, big_y = tensor_names

    def tensor(name: str) -> dict[str, Any]:
        dims = draw(st.lists(st.sampled_from([-1, 1, 3]), min_size=1, max_size=3))
        return {"name": name, "dtype": draw(st.sampled_from(["FP32", "INT64", "FP16"])), "dims": dims}

    models = [
        {
            **_base_model(i),
            "inputs": [tensor(x)],
            "outputs": [tensor(y)],
            "max_batch_size": draw(st.integers(0, 64)),
        }
        for i in range(2)
    ]
    files = draw(st.lists(st.sampled_from(["a.txt", "d/b.txt", "lib", "e/"]), unique=True, max_size=2))
    python = {"name": "p", "framework": "python", "source": "p.py", "inputs": [tensor(x)]}
    models.append({**python, "outputs": [tensor(y)], "files": files or None})
    ensemble = {
        "name": "e",
        "inputs": [tensor(big_x)],
        "outputs": [tensor(big_y)],
        "steps": [
            {"model": "m0", "input_map": {x: big_x}, "output_map": {y: "T"}},
            {"model": "m1", "input_map": {x: "T"}, "output_map": {y: big_y}},
        ],
    }
    spec = {"models": models, "ensembles": [ensemble]}
    kind = draw(st.sampled_from(DUPLICATE_KINDS))
    model_index = draw(st.integers(0, 2))
    model = models[model_index]
    if kind in ("input", "output"):
        tensors = model[f"{kind}s"]
        tensors.insert(draw(st.integers(1, len(tensors))), tensor(tensors[0]["name"]))
        where = f"models[{model_index}].{kind}s[{[t['name'] for t in tensors].index(tensors[0]['name'], 1)}]"
    elif kind == "input_as_output":
        model, model_index = models[model_index % 2], model_index % 2  # a Python model may do it
        model["outputs"].append(tensor(model["inputs"][0]["name"]))
        where = f"models[{model_index}].outputs[1]"
    elif kind == "model":
        models.append({**_base_model(model_index % 2), "max_batch_size": draw(st.integers(0, 64))})
        where = f"models[{len(models) - 1}]"
    elif kind == "ensemble":
        copy = {**ensemble, "name": draw(st.sampled_from(["m0", "m1", "p", "e"]))}
        spec["ensembles"].append(copy)
        where = "ensembles[1]"
    elif kind in ("ensemble_input", "ensemble_output"):
        tensors = ensemble[f"{kind.removeprefix('ensemble_')}s"]
        tensors.append(tensor(tensors[0]["name"]))
        where = f"ensembles[0].{kind.removeprefix('ensemble_')}s[1]"
    elif kind == "ensemble_input_as_output":
        ensemble["outputs"].append(tensor(big_x))
        where = "ensembles[0].outputs[1]"
    elif kind == "step_output":
        step = draw(st.integers(0, 1))
        written = draw(st.sampled_from([big_x, "T", big_y]))
        ensemble["steps"][step]["output_map"]["extra"] = written
        where = _first_rewrite(ensemble)
    else:
        listed = draw(st.sampled_from(["a.txt", "d/b.txt", "lib", "e/", "model.py"]))
        again = f"{draw(st.sampled_from(['x', 'x/y', '.']))}/{listed.rstrip('/').split('/')[-1]}"
        python["files"] = [*(files or []), again] if listed != "model.py" else [again]
        where = "models[2].files"
        models[2] = {**python, "outputs": models[2]["outputs"]}
        if listed != "model.py" and files_destination(listed) not in map(files_destination, files):
            python["files"].insert(0, listed)
    return spec, where


def _first_rewrite(ensemble: dict[str, Any]) -> str:
    """The field path of the first step output that writes an ensemble input or an already written tensor."""
    seen = {tensor["name"] for tensor in ensemble["inputs"]}
    for index, step in enumerate(ensemble["steps"]):
        for output, tensor in step["output_map"].items():
            if tensor in seen:
                return field_path(("steps", index, "output_map", output), "ensembles[0]")
            seen.add(tensor)
    raise AssertionError("no tensor is written twice")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(duplicated_specs())
def test_a_name_given_twice_is_a_spec_error_at_the_repeat(case: tuple[dict[str, Any], str]) -> None:
    data, where = case
    with pytest.raises(SpecError) as caught:
        parse_spec(data, origin="spec")
    _assert_field_path_errors(caught.value)
    assert any(line.startswith(f"spec: {where}") for line in caught.value.problems), (where, caught.value)
