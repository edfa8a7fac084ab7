"""TensorFlow/Keras sources: Keras factories, .keras files and SavedModel directories converted with tf2onnx,
proved against TensorFlow, and served by the embedded Triton. Skipped without the tensorflow extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the tensorflow extra is not installed: pip install '.[tensorflow]'")
pytest.importorskip("tf2onnx", reason="the tensorflow extra is not installed: pip install '.[tensorflow]'")

import tritonclient.http as httpclient

from generator.build.exporters import get_exporter
from generator.build.exporters.tensorflow import _keep_native
from generator.build.parity import check_parity
from generator.build.run import build
from generator.core.errors import ExportError, MissingDependencyError
from generator.core.repository import MANIFEST
from generator.serve.launch import find_free_port
from generator.serve.server import EmbeddedServer
from generator.spec.models import Verify, parse_spec
from generator.validate.run import validate_repository

from ..conftest import REPO_ROOT

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "digits_keras.py"
KERAS_SPEC = f"""models:
  - name: digits_keras
    framework: tensorflow
    source: {EXAMPLE}:build
    max_batch_size: 64
    inputs:  [{{name: image, dtype: FP32, dims: [8, 8, 1]}}]
    outputs: [{{name: logits, dtype: FP32, dims: [10]}}]
"""


def _example() -> Any:
    """The examples' module (``digits_keras``), imported with its directory on sys.path."""
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import digits_keras
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    return digits_keras


def _write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / "spec.yaml"
    spec.write_text(text)
    return spec


def _one_line(error: pytest.ExceptionInfo[Exception]) -> str:
    text = str(error.value)
    assert "\n" not in text and len(error.value.problems) == 1, text
    return text


@pytest.fixture(scope="module")
def keras_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Keras example built into a repository (once for this module)."""
    root = tmp_path_factory.mktemp("keras")
    repo = root / "model_repository"
    build(_write_spec(root, KERAS_SPEC), repo)
    return repo


def test_importing_the_package_loads_no_tensorflow() -> None:
    code = (
        "import sys, generator, generator.build.run, generator.build.exporters, generator.build.exporters.tensorflow\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_tensorflow_start_up_noise_is_held_back_but_errors_pass() -> None:
    code = "from generator.build.exporters.tensorflow import _import_tensorflow\n_import_tensorflow()\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr, result.stderr
    assert not _keep_native("I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n", 2)
    assert _keep_native("E0000 00:00:1.0 1 kernel.cc:1] a real error\n", 2)
    assert _keep_native("Traceback (most recent call last):\n", 2)


def test_the_keras_example_exports_with_parity_and_accuracy(keras_repo: Path) -> None:
    assert validate_repository(keras_repo).ok
    entry = json.loads((keras_repo / MANIFEST).read_text())["models"]["digits_keras"]["versions"]["1"]
    parity = entry["parity"]
    assert parity["compared"] is True and parity["batch_sizes"] == [1, 64]
    assert 0 <= parity["max_abs_error"] < 1e-4 and not parity["problems"]
    assert entry["signature"]["inputs"] == [{"name": "image", "dtype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert entry["signature"]["outputs"] == [{"name": "logits", "dtype": "FP32", "shape": [-1, 10]}]
    details = entry["details"]
    assert details["opset"] == 17 and details["tensorflow"] == "2.21.0" and details["tf2onnx"] == "1.17.0"
    assert details["export_seconds"] > 0
    # The committed weights were loaded: the ONNX model classifies the held-out digits well.
    import onnxruntime as ort

    _, x_test, _, y_test = _example().load_nhwc()
    session = ort.InferenceSession(
        str(keras_repo / "digits_keras/1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(["logits"], {"image": x_test})
    assert (logits.argmax(1) == y_test).mean() > 0.95


def test_the_same_model_gives_the_same_bytes(keras_repo: Path, tmp_path: Path) -> None:
    build(_write_spec(tmp_path, KERAS_SPEC), tmp_path / "again")
    first = (keras_repo / "digits_keras/1/model.onnx").read_bytes()
    assert (tmp_path / "again/digits_keras/1/model.onnx").read_bytes() == first


def test_served_outputs_match_tensorflow(keras_repo: Path) -> None:
    module = _example()
    model, _ = module.build()
    _, x_test, _, _ = module.load_nhwc()
    images = x_test[:16]
    want = np.asarray(model(images, training=False))
    server = EmbeddedServer(
        keras_repo, http_port=find_free_port(), grpc_port=find_free_port(), metrics_port=find_free_port()
    )
    with server:
        client = httpclient.InferenceServerClient(server.endpoints.http)
        assert client.is_model_ready("digits_keras")
        request = httpclient.InferInput("image", list(images.shape), "FP32")
        request.set_data_from_numpy(images)
        result = client.infer("digits_keras", [request], outputs=[httpclient.InferRequestedOutput("logits")])
        got = result.as_numpy("logits")
        client.close()
    assert got.shape == (16, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_a_keras_file_keeps_the_keras_names(tmp_path: Path) -> None:
    model, _ = _example().build()
    model.save(tmp_path / "digits.keras")
    spec = _write_spec(
        tmp_path, "models:\n  - {name: from_file, framework: tensorflow, source: digits.keras}\n"
    )
    report = build(spec, tmp_path / "repo")
    (built,) = report.models
    assert [t.name for t in built.signature.inputs] == ["image"]
    assert [t.name for t in built.signature.outputs] == ["logits"]
    assert built.parity["compared"] and built.parity["max_abs_error"] < 1e-4
    assert built.max_batch_size == 8  # the batch axis is dynamic, so the default applies


def test_spec_names_rename_the_graph_and_opset_is_the_specs(tmp_path: Path) -> None:
    spec = _write_spec(
        tmp_path,
        f"models:\n  - name: renamed\n    framework: tensorflow\n    source: {EXAMPLE}:build\n"
        "    opset: 18\n"
        "    inputs:  [{name: pixels, dtype: FP32, dims: [8, 8, 1]}]\n"
        "    outputs: [{name: scores, dtype: FP32, dims: [10]}]\n",
    )
    report = build(spec, tmp_path / "repo")
    (built,) = report.models
    assert [t.name for t in built.signature.inputs] == ["pixels"]
    assert [t.name for t in built.signature.outputs] == ["scores"]
    assert built.parity["compared"] and built.parity["max_abs_error"] < 1e-4
    entry = json.loads((tmp_path / "repo" / MANIFEST).read_text())["models"]["renamed"]["versions"]["1"]
    assert entry["details"]["opset"] == 18
    assert 'name: "scores"' in (tmp_path / "repo/renamed/config.pbtxt").read_text()


KINDS = """
import keras
import numpy as np


def sequential():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="scores")])


def two_in_two_out():
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Concatenate()([a, b])
    return keras.Model({"a": a, "b": b}, [keras.layers.Dense(2, name="s")(h), keras.layers.Dense(1, name="p")(h)])


class Doubler(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x) * 2.0


def subclassed():
    return Doubler(), np.ones((2, 5), np.float32)
"""


def test_sequential_multi_io_and_subclassed_models_convert(tmp_path: Path) -> None:
    (tmp_path / "kinds.py").write_text(KINDS)
    spec = _write_spec(
        tmp_path,
        "models:\n"
        "  - {name: sequential, framework: tensorflow, source: kinds.py:sequential}\n"
        "  - {name: two, framework: tensorflow, source: kinds.py:two_in_two_out}\n"
        "  - {name: subclassed, framework: tensorflow, source: kinds.py:subclassed}\n",
    )
    report = build(spec, tmp_path / "repo")
    io = {
        m.name: ([t.name for t in m.signature.inputs], [t.name for t in m.signature.outputs])
        for m in report.models
    }
    # Made-up Keras names (keras_tensor_N) become input_N / output_N; real layer names are kept.
    assert io == {
        "sequential": (["input_0"], ["scores"]),
        "two": (["a", "b"], ["s", "p"]),
        "subclassed": (["input_0"], ["output_0"]),
    }
    assert all(m.parity["compared"] and m.parity["max_abs_error"] < 1e-5 for m in report.models)
    assert validate_repository(tmp_path / "repo").ok


def test_a_saved_model_directory_converts_with_parity(tmp_path: Path) -> None:
    model, _ = _example().build()
    model.export(str(tmp_path / "saved"), verbose=False)
    spec = parse_spec(
        {
            "models": [
                {
                    "name": "saved",
                    "framework": "tensorflow",
                    "source": "saved",
                    "max_batch_size": 32,
                    "outputs": [{"name": "logits", "dtype": "FP32", "dims": [10]}],
                }
            ]
        },
        base_dir=tmp_path,
    )
    (entry,) = spec.models
    result = get_exporter("tensorflow").export(
        entry, spec.resolve_source(entry.source), tmp_path / "out" / "1"
    )
    # model.export() names the signature's input after the Keras input and its output output_0.
    assert [(t.name, t.shape) for t in result.signature.inputs] == [("image", (-1, 8, 8, 1))]
    assert [(t.name, t.shape) for t in result.signature.outputs] == [("logits", (-1, 10))]
    report = check_parity(entry, result, 32, Verify())
    assert report.compared and report.batch_sizes == [1, 32] and report.max_abs_error < 1e-4


def test_a_missing_factory_function_is_one_line(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, KERAS_SPEC.replace(":build", ":biuld"))
    with pytest.raises(ExportError) as caught:
        build(spec, tmp_path / "repo")
    assert "digits_keras.py has no function 'biuld'; use one of" in _one_line(caught)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("return 42", "gave a int, not a keras.Model; return the model, or (model, example_inputs)"),
        ("raise RuntimeError('no weights')", "raised RuntimeError: no weights; fix the factory"),
        (
            "return keras.Sequential([keras.Input((3,)), keras.layers.Lambda(tf.math.lgamma)])",
            "no ONNX conversion for the TensorFlow op(s) Lgamma",
        ),
        (
            "i = keras.Input((3,), name='x')\n    return keras.Model(i, keras.layers.Dense(2, name='y')(i))",
            "the spec names 2 outputs but the model has 1;",
        ),
    ],
    ids=["not-a-model", "factory-raises", "unsupported-op", "output-count"],
)
def test_bad_factories_are_one_line_export_errors(tmp_path: Path, factory: str, expected: str) -> None:
    (tmp_path / "bad.py").write_text(
        f"import keras\nimport tensorflow as tf\n\n\ndef make():\n    {factory}\n"
    )
    outputs = "    outputs: [{name: a, dtype: FP32, dims: [2]}, {name: b, dtype: FP32, dims: [2]}]\n"
    spec = _write_spec(
        tmp_path,
        "models:\n  - name: bad\n    framework: tensorflow\n    source: bad.py:make\n"
        + (outputs if expected.startswith("the spec names") else ""),
    )
    with pytest.raises(ExportError) as caught:
        build(spec, tmp_path / "repo")
    line = _one_line(caught)
    assert line.startswith("model 'bad': ") and expected in line


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: (p / "empty").mkdir(), "is a directory without saved_model.pb"),
        (lambda p: (p / "empty").write_text("x"), "is not a Keras model file (.keras, .h5, .hdf5)"),
    ],
    ids=["directory", "unknown-file"],
)
def test_bad_source_files_are_one_line_export_errors(tmp_path: Path, make: Any, expected: str) -> None:
    make(tmp_path)
    spec = parse_spec(
        {"models": [{"name": "bad", "framework": "tensorflow", "source": "empty"}]}, base_dir=tmp_path
    )
    with pytest.raises(ExportError) as caught:
        get_exporter("tensorflow").export(spec.models[0], tmp_path / "empty", tmp_path / "out" / "1")
    assert expected in _one_line(caught)


def test_without_tensorflow_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails as if absent
    monkeypatch.setenv("TRITONGEN_EXPORT_IN_PROCESS", "1")  # ... in this process, so export here
    spec = _write_spec(tmp_path, KERAS_SPEC)
    with pytest.raises(MissingDependencyError) as caught:
        build(spec, tmp_path / "repo")
    assert _one_line(caught) == (
        "the Python package 'tensorflow-cpu' is not installed (needed to export TensorFlow/Keras models); "
        "install it with: pip install 'tritongen[tensorflow]'"
    )


def test_the_cli_builds_a_keras_model_quietly(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, KERAS_SPEC)
    result = subprocess.run(
        [sys.executable, "-m", "generator", "build", str(spec), "--output", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "digits_keras v1: exported" in result.stdout
    assert "oneDNN" not in result.stderr and "absl" not in result.stderr, result.stderr
