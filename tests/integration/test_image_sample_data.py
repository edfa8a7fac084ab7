"""An image pipeline driven with the repository's own sample data by NVIDIA's perf_analyzer and by the load
test, over the embedded Triton: the built-in image step alone and an ensemble of it and a tiny ONNX
classifier, both protocols, zero failed requests. The load test also finds the image inputs through the
server's configs and generates images for them when no data file is given."""

from __future__ import annotations

import json
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
from generator.serve.server import EmbeddedServer

from ..conftest import free_ports, make_image_classifier_onnx, run_cli
from ..perf_analyzer import run_perf_analyzer

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


@pytest.mark.parametrize(
    ("model", "protocol"), [("prep", "http"), ("prep", "grpc"), ("classify", "http"), ("classify", "grpc")]
)
def test_perf_analyzer_drives_the_image_pipeline_with_its_data_file(
    repo: Path, server: EmbeddedServer, model: str, protocol: str
) -> None:
    before = _failures(server, "prep")
    run_perf_analyzer(_url(server, protocol), protocol, model, repo / model / PERF_ANALYZER_DATA)
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
