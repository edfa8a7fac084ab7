"""An image pipeline driven with the repository's own sample data by NVIDIA's perf_analyzer and by the load
test, over the embedded Triton: the built-in image step alone and an ensemble of it and a tiny ONNX
classifier, both protocols, zero failed requests. The load test also finds the image inputs through the
server's configs and generates images for them when no data file is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient

from generator.build.run import build
from generator.build.sample_data import PERF_ANALYZER_DATA
from generator.core.errors import LoadTestError
from generator.loadtest.images import image_inputs
from generator.loadtest.target import resolve_target
from generator.serve.control import ServerControl
from generator.serve.launch import locate_triton
from generator.serve.server import EmbeddedServer

from ..conftest import free_ports, make_image_classifier_onnx, run_cli

pytestmark = pytest.mark.integration

SIZE = [24, 20]
SPEC = {
    "defaults": {"max_batch_size": 4},
    "models": [
        {"name": "prep", "framework": "python", "source": "builtin:image", "step": {"size": SIZE}},
        {"name": "classifier", "framework": "onnx", "source": "classifier.onnx"},
    ],
    "ensembles": [
        {
            "name": "classify",
            "steps": [
                {"model": "prep", "input_map": {"image": "IMAGE"}, "output_map": {"pixel_values": "PX"}},
                {
                    "model": "classifier",
                    "input_map": {"pixel_values": "PX"},
                    "output_map": {"logits": "LOGITS"},
                },
            ],
        }
    ],
}
SHORT = ("--users", "2", "--duration", "2", "--warmup", "0.5")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image_data")
    make_image_classifier_onnx(root / "classifier.onnx", (SIZE[0], SIZE[1]))
    (root / "spec.yaml").write_text(json.dumps(SPEC))
    build(root / "spec.yaml", root / "repo")
    return root / "repo"


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(repo, **free_ports()) as running:
        yield running


def _url(server: EmbeddedServer, protocol: str) -> str:
    return server.endpoints.http if protocol == "http" else server.endpoints.grpc


def _failures(server: EmbeddedServer, model: str) -> tuple[int, int]:
    """Triton's (successful, failed) request counts of a model."""
    with httpclient.InferenceServerClient(server.endpoints.http) as client:
        [stats] = client.get_inference_statistics(model)["model_stats"]
    counts = stats["inference_stats"]
    return int(counts["success"]["count"]), int(counts["fail"]["count"])


def _perf_analyzer() -> Path | None:
    """perf_analyzer 2.51 on PATH, or where the repository's benchmark unpacks it."""
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache / "tritongen" / "perf_analyzer-2.51.0" / "perf_analyzer"
    return binary if binary.is_file() else None


def _libraries(directory: Path) -> dict[str, str]:
    """An environment whose LD_LIBRARY_PATH gives perf_analyzer the libraries the server's wheel carries
    (libcudart.so.12; libb64.so.0d where the system lacks it)."""
    libs = locate_triton().libs_dir
    for pattern, name in (("libcudart*.so*", "libcudart.so.12"), ("libb64*.so*", "libb64.so.0d")):
        found = sorted(libs.glob(pattern))
        if found:
            (directory / name).symlink_to(found[0])
    search = [str(directory), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, search))}


@pytest.mark.parametrize(
    ("model", "protocol"), [("prep", "http"), ("prep", "grpc"), ("classify", "http"), ("classify", "grpc")]
)
def test_perf_analyzer_drives_the_image_pipeline_with_its_data_file(
    repo: Path, server: EmbeddedServer, model: str, protocol: str
) -> None:
    binary = _perf_analyzer()
    if binary is None:
        pytest.skip("perf_analyzer is not installed (it ships in the tritonclient 2.51.0 wheel)")
    before = _failures(server, "prep")
    with tempfile.TemporaryDirectory() as libs:
        command = [
            str(binary), "-m", model, "-u", _url(server, protocol), "-i", protocol, "-b", "2",
            "--input-data", str(repo / model / PERF_ANALYZER_DATA),
            "--concurrency-range", "2", "--measurement-interval", "500", "--stability-percentage", "999",
            "--max-trials", "3",
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, env=_libraries(Path(libs)), timeout=180
        )
    if result.returncode != 0 and "error while loading shared libraries" in result.stderr:
        pytest.skip(f"perf_analyzer cannot start here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Throughput:" in result.stdout and "error" not in result.stdout.lower()
    after = _failures(server, "prep")
    assert after[1] == before[1] and after[0] - before[0] > 10  # every image decoded


def _loadtest(cwd: Path, *args: str) -> dict[str, Any]:
    result = run_cli("loadtest", *args, *SHORT, "--out", "out", cwd=cwd, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((cwd / "out" / "report.json").read_text())
    [run] = report["runs"]
    assert run["failures"] == 0 and run["error_rate"] == 0 and not run["errors"], run["errors"]
    assert run["requests"] > 0 and report["totals"]["failures"] == 0
    return report


@pytest.mark.parametrize(
    ("model", "protocol", "data"),
    [
        ("classify", "grpc", True),
        ("prep", "http", True),
        ("classify", "http", False),
        ("prep", "grpc", False),
    ],
)
def test_the_load_test_sends_images_from_the_data_file_or_its_own(
    repo: Path, server: EmbeddedServer, tmp_path: Path, model: str, protocol: str, data: bool
) -> None:
    before = _failures(server, "prep")
    given = ("--data", str(repo / model / PERF_ANALYZER_DATA)) if data else ()
    report = _loadtest(
        tmp_path,
        "--model",
        model,
        "--url",
        f"{protocol}://{_url(server, protocol)}",
        "--batch-size",
        "2",
        *given,
    )
    assert report["replies"][model]
    after = _failures(server, "prep")
    assert after[1] == before[1] and after[0] > before[0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_image_inputs_are_found_through_the_servers_configs(server: EmbeddedServer, protocol: str) -> None:
    target = resolve_target(f"{protocol}://{_url(server, protocol)}")
    with ServerControl(target, error=LoadTestError) as control:
        found = {name: image_inputs(name, control.config) for name in ("prep", "classifier", "classify")}
    assert found == {"prep": {"image": tuple(SIZE)}, "classifier": {}, "classify": {"IMAGE": tuple(SIZE)}}
