"""The validator catches what Triton would refuse at load time, every problem at once."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from generator.core.errors import ValidationError
from generator.validate.run import validate_repository

from ..conftest import make_linear_onnx

GOOD = """
name: "lin"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def _repo(
    tmp_path: Path, config: str = GOOD, batch_dim: int | str = "batch", version: str | None = "1"
) -> Path:
    repo = tmp_path / "repo"
    model_dir = repo / "lin"
    model_dir.mkdir(parents=True)
    if version is not None:
        make_linear_onnx(model_dir / version / "model.onnx", batch_dim=batch_dim)
    (model_dir / "config.pbtxt").write_text(config)
    return repo


def _errors(repo: Path) -> list[str]:
    return [p.message for p in validate_repository(repo).errors]


def test_a_good_repository_passes(tmp_path: Path) -> None:
    report = validate_repository(_repo(tmp_path))
    assert report.ok and report.models == ["lin"] and not report.problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("dims: [ 4 ]", "dims: [ -1, 4 ]", "input 'x' dims [-1, 4] include the batch axis"),
        ('name: "x"', 'name: "X"', "input 'X' is not an input of 1/model.onnx; did you mean 'x'?"),
        (
            "data_type: TYPE_FP32 dims: [ 4 ]",
            "data_type: TYPE_FP16 dims: [ 4 ]",
            "input 'x' is TYPE_FP16 in config.pbtxt but FP32",
        ),
        ("[ 4, 8 ]", "[ 4, 32 ]", "preferred_batch_size 32 exceeds max_batch_size 16"),
        ('platform: "onnxruntime_onnx"', 'platform: "onnxruntime_onnx" backend: "tensorrt"', "disagree"),
        ("dims: [ 3 ]", "dims: [ 5 ]", "output 'y' dims [5] differ from 1/model.onnx's [3]"),
        ("dims: [ 4 ]", "dims: [ -1 ]", "input 'x' dims [-1] differ"),
        ('name: "lin"', 'name: "other"', "config name 'other' differs from its directory 'lin'"),
        (
            "max_batch_size: 16",
            'max_batch_size: 16\ndefault_model_filename: "m.onnx"',
            "version 1 has no m.onnx",
        ),
        ("max_batch_size: 16", "max_batch_size: sixteen", "does not parse"),
        (
            "instance_group [ { count: 1 kind: KIND_CPU } ]",
            "instance_group [ { count: 1 kind: KIND_CPU gpus: [0] } ]",
            "lists gpus but its kind is KIND_CPU",
        ),
    ],
)
def test_each_mistake_is_caught(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    errors = _errors(_repo(tmp_path, GOOD.replace(old, new)))
    assert any(expected in e for e in errors), errors


def test_a_fixed_batch_dimension_in_the_onnx(tmp_path: Path) -> None:
    errors = _errors(_repo(tmp_path, batch_dim=1))
    assert any("fixed first dimension (1) in 1/model.onnx, so Triton cannot batch it" in e for e in errors), (
        errors
    )
    assert validate_repository(
        _repo(
            tmp_path / "b",
            GOOD.replace("max_batch_size: 16", "max_batch_size: 0")
            .replace("dims: [ 4 ]", "dims: [ 1, 4 ]")
            .replace("dims: [ 3 ]", "dims: [ 1, 3 ]")
            .replace("dynamic_batching { preferred_batch_size: [ 4, 8 ] }", ""),
            batch_dim=1,
        )
    ).ok


def test_no_version_directory(tmp_path: Path) -> None:
    assert any("no version directory" in e for e in _errors(_repo(tmp_path, version=None)))


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    bad = (
        GOOD.replace('name: "x"', 'name: "X"')
        .replace("[ 4, 8 ]", "[ 64 ]")
        .replace("TYPE_FP32 dims: [ 3 ]", "TYPE_INT32 dims: [ 3 ]")
    )
    report = validate_repository(_repo(tmp_path, bad))
    assert len(report.errors) == 3  # the wrong input name, the preferred size, the output dtype
    with pytest.raises(ValidationError) as caught:
        report.raise_for_errors()
    assert len(caught.value.problems) == len(report.errors)


def test_missing_config_is_auto_completed_and_missing_repo_an_error(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "lin" / "config.pbtxt").unlink()
    report = validate_repository(repo)
    assert report.ok and not report.warnings and "auto-completes" in report.infos[0].message
    with pytest.raises(ValidationError, match="not a directory"):
        validate_repository(tmp_path / "absent")


# Hostile repositories: each case plants one mistake into the good repository above. Every one must
# come back as an error problem naming it (never an exception, never a hang), with a printable message.

Mutation = Callable[[Path, Path], object]
WARMUP = (
    'model_warmup [ {{ name: "w" batch_size: {batch} inputs {{ key: "{name}" '
    "value: {{ data_type: {dtype} dims: {dims} {data} }} }} }} ]\n"
)


def _config(text: str) -> Mutation:
    return lambda repo, model: (model / "config.pbtxt").write_text(text)


def _replace(old: str, new: str) -> Mutation:
    assert old in GOOD
    return _config(GOOD.replace(old, new))


def _warmup(
    batch: int = 4,
    name: str = "x",
    dtype: str = "TYPE_FP32",
    dims: str = "[ 4 ]",
    data: str = "zero_data: true",
) -> Mutation:
    return _config(GOOD + WARMUP.format(batch=batch, name=name, dtype=dtype, dims=dims, data=data))


def _replace_path(relative: str, make: Callable[[Path], object]) -> Mutation:
    def mutate(repo: Path, model: Path) -> None:
        path = model / relative
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        make(path)

    return mutate


def _truncate(repo: Path, model: Path) -> None:
    path = model / "1" / "model.onnx"
    path.write_bytes(path.read_bytes()[:40])


HOSTILE: dict[str, tuple[Mutation, str]] = {
    "warm-up dims differ from the input": (
        _warmup(dims="[ 5 ]"),
        "input 'x' dims [5] do not fit the input's dims [4]",
    ),
    "warm-up dims hold -1": (_warmup(dims="[ -1 ]"), "input 'x' dims [-1] must all be fixed sizes; use [4]"),
    "warm-up data type differs": (
        _warmup(dtype="TYPE_INT32"),
        "input 'x' is TYPE_INT32 but the input is TYPE_FP32",
    ),
    "warm-up feeds no input": (_warmup(name="X"), "feeds 'X', which is not an input; did you mean 'x'?"),
    "warm-up batch above max_batch_size": (_warmup(batch=32), "batch_size 32 exceeds max_batch_size 16"),
    "warm-up input without data": (_warmup(data=""), "input 'x' sets no data"),
    "warm-up file missing": (
        _warmup(data='input_data_file: "x.bin"'),
        "reads warmup/x.bin, which is missing",
    ),
    "specific version missing": (
        _config(GOOD + "version_policy { specific { versions: [ 2 ] } }\n"),
        "version_policy names version(s) 2 with no directory (it has 1), so Triton loads nothing",
    ),
    "latest zero versions": (
        _config(GOOD + "version_policy { latest { num_versions: 0 } }\n"),
        "num_versions 0, so Triton loads nothing",
    ),
    "all with no version directory": (
        lambda repo, model: (
            shutil.rmtree(model / "1"),
            (model / "config.pbtxt").write_text(GOOD + "version_policy { all { } }\n"),
        ),
        "no version directory; put the model file in lin/1/",
    ),
    "version directory with a leading zero": (
        lambda repo, model: (model / "1").rename(model / "01"),
        "no version directory",
    ),
    "version directory that is a file": (
        _replace_path("1", lambda p: p.write_text("1")),
        "no version directory",
    ),
    "config.pbtxt is a directory": (_replace_path("config.pbtxt", Path.mkdir), "config.pbtxt is a directory"),
    "config.pbtxt is a symlink loop": (
        _replace_path("config.pbtxt", lambda p: p.symlink_to(p.name)),
        "config.pbtxt is a broken symbolic link",
    ),
    "non-UTF-8 bytes in a string value": (
        lambda repo, model: (model / "config.pbtxt").write_bytes(GOOD.encode().replace(b'"x"', b'"x\xe9"')),
        "config.pbtxt line 5: a value holds bytes that are not UTF-8",
    ),
    ".git in the root": (
        lambda repo, model: (repo / ".git" / "objects").mkdir(parents=True),
        ".git: is not a model (a hidden",
    ),
    "a directory with no config and no version": (
        lambda repo, model: (repo / "docs").mkdir(),
        "docs: is not a model",
    ),
    "a dangling symlink in the root": (
        lambda repo, model: (repo / "old").symlink_to("gone"),
        "old: is a broken symbolic link",
    ),
    "a dangling symlink in the model": (
        lambda repo, model: (model / "2").symlink_to("gone"),
        "'2' is a broken symbolic link or cannot be read",
    ),
    "model file is an empty directory": (
        _replace_path("1/model.onnx", Path.mkdir),
        "1/model.onnx is a directory without model.onnx in it",
    ),
    "model file is a FIFO": (_replace_path("1/model.onnx", os.mkfifo), "1/model.onnx is not a regular file"),
    "model file is a symlink loop": (
        _replace_path("1/model.onnx", lambda p: p.symlink_to(p.name)),
        "version 1 has no model.onnx (a broken symbolic link)",
    ),
    "truncated ONNX": (_truncate, "not a readable ONNX model"),
    "dims with 0": (_replace("dims: [ 4 ]", "dims: [ 0 ]"), "input 'x' dims [0] hold 0"),
    "negative max_batch_size": (
        _replace("max_batch_size: 16", "max_batch_size: -1"),
        "max_batch_size -1 is negative",
    ),
    "unknown data_type number": (
        _replace("TYPE_FP32 dims: [ 4 ]", "99 dims: [ 4 ]"),
        "data_type 99 is not a Triton type",
    ),
    "unknown data_type name": (_replace("TYPE_FP32 dims: [ 4 ]", "TYPE_FLOAT dims: [ 4 ]"), "does not parse"),
    "name differs from the directory": (
        _replace('name: "lin"', 'name: "line"'),
        "config name 'line' differs",
    ),
    "backend tensorflow without a platform": (
        _replace('platform: "onnxruntime_onnx"', 'backend: "tensorflow"'),
        "backend 'tensorflow' needs a platform",
    ),
    "platform and backend disagree": (
        _replace('platform: "onnxruntime_onnx"', 'platform: "onnxruntime_onnx" backend: "pytorch"'),
        "platform 'onnxruntime_onnx' and backend 'pytorch' disagree; use backend 'onnxruntime'",
    ),
    "nothing tells the backend": (
        lambda repo, model: (
            (model / "1" / "model.onnx").rename(model / "1" / "lin.onnx"),
            (model / "config.pbtxt").write_text(GOOD.replace('platform: "onnxruntime_onnx"', "")),
        ),
        "neither platform nor backend is set and the version directory holds no model file",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_hostile_repository_gives_its_error(tmp_path: Path, case: str) -> None:
    mutate, expected = HOSTILE[case]
    repo = _repo(tmp_path)
    mutate(repo, repo / "lin")
    report = validate_repository(repo)
    assert any(expected in str(p) for p in report.errors), [str(p) for p in report.problems]
    assert all(str(p).isprintable() for p in report.problems)


CLEAN: dict[str, Mutation] = {
    "the good repository": lambda repo, model: None,
    "backend onnxruntime without platform": _replace(
        'platform: "onnxruntime_onnx"', 'backend: "onnxruntime"'
    ),
    "a comment that is not UTF-8": lambda repo, model: (model / "config.pbtxt").write_bytes(
        b"# r\xe9sum\xe9 \xff\xfe\n" + GOOD.encode() + b"# \x80\n"
    ),
    "a warm-up that fits": _warmup(),
    "a large ONNX model as a directory": lambda repo, model: (
        (model / "1" / "model.onnx").rename(model / "m"),
        (model / "1" / "model.onnx").mkdir(),
        (model / "m").rename(model / "1" / "model.onnx" / "model.onnx"),
    ),
    "plain files in the root": lambda repo, model: (repo / "README.md").write_text("models\n"),
    "a broken version that the policy does not load": lambda repo, model: (
        (model / "2").mkdir(),
        (model / "config.pbtxt").write_text(GOOD + "version_policy { specific { versions: [ 1 ] } }\n"),
    ),
    "a subdirectory named by a non-ASCII digit": lambda repo, model: (model / "\u00b2").mkdir(),
}


@pytest.mark.parametrize("case", sorted(CLEAN))
def test_clean_repositories_have_no_problem(tmp_path: Path, case: str) -> None:
    repo = _repo(tmp_path)
    CLEAN[case](repo, repo / "lin")
    report = validate_repository(repo)
    assert report.ok and not report.problems, [str(p) for p in report.problems]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            GOOD.replace("count: 1", "count: 0"),
            "instance_group count 0 is not positive, so Triton uses its default",
        ),
        (GOOD + "version_policy { specific { versions: [ 1, 2 ] } }\n", "version(s) 2 with no directory"),
        (GOOD + "response_cache { enable: true }\n", "caches a failed response too"),
    ],
)
def test_what_triton_tolerates_is_a_warning(tmp_path: Path, config: str, expected: str) -> None:
    report = validate_repository(_repo(tmp_path, config))
    assert report.ok and any(expected in p.message for p in report.warnings), [
        str(p) for p in report.problems
    ]


def test_names_from_the_repository_print_as_one_line(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "a\x1b[31m\nb").mkdir()
    (repo / os.fsdecode(b"\xff\xfe")).mkdir()
    problems = validate_repository(repo).problems
    assert {p.model for p in problems} == {"a\\x1b[31m\\nb", "\\xff\\xfe"}
    assert all(str(p).isprintable() for p in problems)


def _with_parameters(entries: dict[str, str], serving: str = 'platform: "onnxruntime_onnx"') -> str:
    text = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in entries.items()
    )
    return GOOD.replace('platform: "onnxruntime_onnx"', serving) + text


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "intra_op_thread_count",
            "x",
            "parameters 'intra_op_thread_count': must be a whole number of threads",
        ),
        ("intra_op_thread_count", "nan", "(got 'nan')"),
        ("inter_op_thread_count", "true", "for the ONNX Runtime backend (got 'true')"),
        ("intra_op_thread_count", "4x", "(got '4x')"),  # std::stoi would read 4
        ("intra_op_thread_count", "2147483648", "(got '2147483648')"),  # std::stoi would throw
        ("intra_op_thread_count", "-1", "(got '-1')"),
        ("execution_mode", "2", "must be 0 (sequential) or 1 (parallel)"),
        ("enable_mem_pattern", "yes", "must be true or false (also on/off, 1/0)"),
        ("cudnn_conv_algo_search", "3", "0 (exhaustive), 1 (heuristic) or 2 (default)"),
        ("gpu_mem_limit", "4GB", "a whole number of bytes"),
    ],
)
def test_backend_parameters_the_backend_refuses_are_errors(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    errors = _errors(_repo(tmp_path, _with_parameters({key: value})))
    assert [e for e in errors if expected in e and f"'{key}'" in e], errors


def test_backend_parameters_the_backend_reads_pass(tmp_path: Path) -> None:
    good = {
        "intra_op_thread_count": "2",
        "inter_op_thread_count": "0",
        "execution_mode": "1",
        "enable_mem_arena": "ON",
        "enable_mem_pattern": "false",
        "gpu_mem_limit": "18446744073709551615",
        "my_own_setting": "anything",  # not a backend's: the user's own
    }
    report = validate_repository(_repo(tmp_path, _with_parameters(good)))
    assert report.ok and not report.problems, [str(p) for p in report.problems]


def test_pytorch_parameters_are_typed_and_a_removed_one_is_a_warning(tmp_path: Path) -> None:
    config = _with_parameters(
        {"INFERENCE_MODE": "maybe", "INTRA_OP_THREAD_COUNT": "1.5", "ENABLE_NVFUSER": "true"},
        'backend: "pytorch"',
    )
    problems = validate_repository(_repo(tmp_path, config)).problems
    assert "parameters 'INFERENCE_MODE': must be true or false" in str([str(p) for p in problems])
    assert "parameters 'INTRA_OP_THREAD_COUNT': must be a whole number" in str([str(p) for p in problems])
    removed = [p for p in problems if "ENABLE_NVFUSER" in p.message]
    assert [p.severity for p in removed] == ["warning"] and "removed in Triton 23.12" in removed[0].message


@pytest.mark.parametrize(("dims", "refused"), [([1], False), ([1, 1], False), ([2], True)])
def test_a_scalar_output_of_a_model_without_batching_takes_only_ones(dims: list[int], refused: bool) -> None:
    # The ONNX Runtime backend's rule (onnxruntime.cc, ValidateOutputs): a scalar model tensor of a model
    # that does not batch is written with 1s in the config, since Triton has no empty dims.
    from tritonclient.grpc import model_config_pb2

    from generator.core.signature import Signature, TensorInfo
    from generator.validate.artifacts import check_against_model

    config = model_config_pb2.ModelConfig(name="m", max_batch_size=0)
    config.input.add(name="x", data_type=model_config_pb2.TYPE_FP32, dims=[4])
    config.output.add(name="y", data_type=model_config_pb2.TYPE_FP32, dims=dims)
    signature = Signature((TensorInfo("x", "FP32", (4,)),), (TensorInfo("y", "FP32", ()),))
    problems = check_against_model(config, signature, "1/model.onnx")
    assert bool(problems) == refused
    if refused:
        assert "scalar" in problems[0] and "write dims: [1]" in problems[0]


@pytest.mark.parametrize(
    ("gpus", "listed", "verdict"),
    [
        (frozenset({0, 1}), [1], None),  # Triton makes it KIND_GPU: it has GPU 1
        (frozenset({0}), [1], "error"),  # GPU 1 missing: KIND_CPU, refused for listing gpus
        (None, [7], "warning"),  # the serving machine unknown (and this one has no GPU 7)
    ],
)
def test_kind_auto_with_gpus_is_judged_for_the_serving_machine(
    gpus: frozenset[int] | None, listed: list[int], verdict: str | None
) -> None:
    # Triton's NormalizeInstanceGroup: KIND_AUTO becomes KIND_GPU when every listed GPU is present, else
    # KIND_CPU, which its instance-group check then refuses for listing GPUs.
    from tritonclient.grpc import model_config_pb2

    from generator.validate.artifacts import check_gpus
    from generator.validate.config import check_config
    from generator.validate.schema import Server

    config = model_config_pb2.ModelConfig(name="m", backend="python", max_batch_size=0)
    config.input.add(name="x", data_type=model_config_pb2.TYPE_FP32, dims=[4])
    config.output.add(name="y", data_type=model_config_pb2.TYPE_FP32, dims=[4])
    config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_AUTO, count=1, gpus=listed)
    assert not [m for s, m in check_config(config, "m") if "gpus" in m]
    server = Server.this_machine(gpus) if gpus is not None else Server(gpus=None)
    found = check_gpus(config, server)
    assert [s for s, _ in found] == ([verdict] if verdict else [])
    if verdict:
        assert "KIND_AUTO" in found[0][1] and f"{listed}" in found[0][1]


@pytest.mark.parametrize(("backend", "severities"), [("python", ["warning"]), ("onnxruntime", ["error"])])
def test_execution_accelerators_are_judged_only_for_onnx_runtime(backend: str, severities: list[str]) -> None:
    # Triton loads a Python model that names any accelerator (its backend ignores them); the ONNX Runtime
    # backend refuses a name it does not know ('unknown Execution Accelerator').
    from tritonclient.grpc import model_config_pb2

    from generator.validate.run import _check_accelerators

    config = model_config_pb2.ModelConfig(name="m", backend=backend)
    config.optimization.execution_accelerators.cpu_execution_accelerator.add(name="turbo")
    assert [severity for severity, _ in _check_accelerators(config)] == severities
