"""Python models and ensembles built from a spec, validated, and served by the embedded Triton.

A user's Python model (text in, its UTF-8 length and upper-cased text out) and an ensemble of an ONNX
model and a Python model are built with the real build, served over HTTP and gRPC, and their outputs
compared with the same computations run in-process. The mistakes a user makes in a Python model or an
ensemble fail the build with one line each, naming the field or the file.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from generator.build.run import build
from generator.core.errors import GeneratorError
from generator.validate.run import validate_repository

from ..conftest import free_ports, make_linear_onnx

TEXT_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.suffix = args["model_config"]  # read once, as a real model reads its settings


    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            lengths = np.vectorize(lambda b: len(b.decode("utf-8")), otypes=[np.int64])(text)
            upper = np.vectorize(lambda b: b.decode("utf-8").upper().encode("utf-8"), otypes=[object])(text)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("LENGTH", lengths), pb_utils.Tensor("UPPER", upper.astype(np.object_))]
                )
            )
        return responses
"""

SCALE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json
        params = json.loads(args["model_config"])["parameters"]
        self.factor = float(params["factor"]["string_value"])
        self.offset = float(open(__file__.replace("model.py", "offset.txt")).read())

    def execute(self, requests):
        responses = []
        for request in requests:
            y = pb_utils.get_input_tensor_by_name(request, "y").as_numpy()
            z = (y * self.factor + self.offset).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("z", z)]))
        return responses
"""


def _spec() -> dict:
    return {
        "repository": "repo",
        "defaults": {"max_batch_size": 8, "instance_group": {"count": 1}},
        "models": [
            {
                "name": "text_stats",
                "framework": "python",
                "source": "text_model.py",
                "inputs": [{"name": "TEXT", "dtype": "BYTES", "dims": [1]}],
                "outputs": [
                    {"name": "LENGTH", "dtype": "INT64", "dims": [1]},
                    {"name": "UPPER", "dtype": "STRING", "dims": [1]},
                ],
            },
            {"name": "linear", "framework": "onnx", "source": "linear.onnx"},
            {
                "name": "scale",
                "framework": "python",
                "source": "scale.py",
                "files": ["offset.txt"],
                "parameters": {"factor": 2.0},
                "inputs": [{"name": "y", "dtype": "FP32", "dims": [3]}],
                "outputs": [{"name": "z", "dtype": "FP32", "dims": [3], "label_filename": "labels.txt"}],
            },
        ],
        "ensembles": [
            {
                "name": "linear_scaled",
                "steps": [
                    {"model": "linear", "input_map": {"x": "X"}, "output_map": {"y": "Y"}},
                    {"model": "scale", "input_map": {"y": "Y"}, "output_map": {"z": "Z"}},
                ],
            }
        ],
    }


def _project(directory: Path, spec: dict) -> Path:
    (directory / "text_model.py").write_text(TEXT_MODEL)
    (directory / "scale.py").write_text(SCALE_MODEL)
    (directory / "offset.txt").write_text("0.5")
    (directory / "labels.txt").write_text("a\nb\nc\n")
    path = directory / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    directory = tmp_path_factory.mktemp("pipeline")
    weights, bias = make_linear_onnx(directory / "linear.onnx")
    spec = _project(directory, _spec())
    build(spec, directory / "repo")
    yield directory / "repo", weights, bias


def test_python_models_and_ensembles_are_built_as_triton_loads_them(built: tuple) -> None:
    repo, _, _ = built
    text = (repo / "text_stats" / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "TYPE_STRING" in text and "platform" not in text
    assert (repo / "text_stats" / "1" / "model.py").read_text() == TEXT_MODEL
    assert (repo / "scale" / "1" / "offset.txt").read_text() == "0.5"  # files: copied beside model.py
    assert (repo / "scale" / "labels.txt").read_text() == "a\nb\nc\n"  # label_filename: in the model dir
    ensemble = (repo / "linear_scaled" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ensemble and "instance_group" not in ensemble
    assert (repo / "linear_scaled" / "1").is_dir()
    report = validate_repository(repo)
    assert report.problems == []


def test_an_unchanged_pipeline_is_reused(built: tuple, tmp_path: Path) -> None:
    repo, _, _ = built
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    spec = repo.parent / "pipeline.yaml"
    report = build(spec, copy)
    statuses = {m.name: m.status for m in report.models}
    assert statuses == {
        "text_stats": "reused",
        "linear": "reused",
        "scale": "reused",
        "linear_scaled": "configured",
    }
    (repo.parent / "offset.txt").write_text("0.25")
    try:
        statuses = {m.name: m.status for m in build(spec, copy).models}
        assert statuses["scale"] == "exported"  # a listed file changed
    finally:
        (repo.parent / "offset.txt").write_text("0.5")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_outputs_match_in_process(built: tuple, protocol: str) -> None:
    from generator.serve.server import EmbeddedServer

    repo, weights, bias = built
    if protocol == "http":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module
    words = np.array([["héllo"], ["Triton ensembles"], [""]], dtype=object)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    with EmbeddedServer(repo, **free_ports()) as server:
        url = server.endpoints.http if protocol == "http" else server.endpoints.grpc
        client = client_module.InferenceServerClient(url)
        text = client_module.InferInput("TEXT", list(words.shape), "BYTES")
        text.set_data_from_numpy(np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(words))
        result = client.infer("text_stats", [text])
        assert result.as_numpy("LENGTH").tolist() == [[5], [16], [0]]
        assert [u.decode("utf-8") for u in result.as_numpy("UPPER").ravel()] == [
            "HÉLLO",
            "TRITON ENSEMBLES",
            "",
        ]
        tensor = client_module.InferInput("X", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        served = client.infer("linear_scaled", [tensor]).as_numpy("Z")
    np.testing.assert_allclose(served, (x @ weights + bias) * 2.0 + 0.5, rtol=1e-5, atol=1e-5)


def _build_fails(tmp_path: Path, spec: dict, model_text: str | None = None) -> str:
    path = _project(tmp_path, spec)
    make_linear_onnx(tmp_path / "linear.onnx")
    if model_text is not None:
        (tmp_path / "text_model.py").write_text(textwrap.dedent(model_text))
    repo = tmp_path / "repo"
    with pytest.raises(GeneratorError) as caught:
        build(path, repo)
    assert not repo.exists()  # nothing half-written
    return "\n".join(caught.value.problems)


@pytest.mark.parametrize(
    ("model_text", "expected"),
    [
        ("def broken(:\n    pass\n", "model 'text_stats': model.py line 1: invalid syntax"),
        ("class Model:\n    pass\n", "model 'text_stats': model.py defines no class TritonPythonModel"),
        (
            "import not_a_module_here\nclass TritonPythonModel:\n    def execute(self, r): ...\n",
            "importing model.py failed: ModuleNotFoundError",
        ),
        ("class TritonPythonModel:\n    pass\n", "TritonPythonModel in model.py has no execute method"),
    ],
)
def test_python_model_mistakes_fail_the_build_in_one_line(
    tmp_path: Path, model_text: str, expected: str
) -> None:
    problems = _build_fails(tmp_path, _spec(), model_text)
    assert expected in problems
    assert "Traceback" not in problems and len(problems.splitlines()) == 1


def test_ensemble_wiring_mistakes_name_the_spec_field(tmp_path: Path) -> None:
    spec = _spec()
    spec["ensembles"][0]["steps"] = [
        {"model": "linaer", "input_map": {"x": "X"}, "output_map": {"y": "Y"}},
        {"model": "scale", "input_map": {"why": "Y"}, "output_map": {"z": "Z"}},
    ]
    problems = _build_fails(tmp_path, spec)
    assert "ensembles[0].steps[0].model" in problems and "linear" in problems  # the closest name
    assert "ensembles[0].steps[1].input_map" in problems and "why" in problems
    # the misspelt model's input 'X' is not reported as "no ensemble input" too: one line per mistake
    assert len(problems.splitlines()) == 2, problems
