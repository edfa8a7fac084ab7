"""The rendered manifests against the real server: the probes' paths answer, and the Prometheus adapter
rule's metrics are ones Triton exports; the GPU request comes from the built configs."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from generator.deploy.manifests import DeployConfig, deploy

pytestmark = pytest.mark.integration
pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed: pip install 'tritongen[deploy]'"
)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_probes_and_adapter_rule_match_the_real_server(
    example_repo: Path, example_server, tmp_path: Path
) -> None:
    config = DeployConfig("s3://models/example", out=tmp_path / "out", repository=example_repo)
    result = deploy(config)
    assert {m.source for m in result.models} == {"config.pbtxt"} and not result.warnings
    assert result.gpus_per_pod == 0  # the example builds for CPU

    deployment = yaml.safe_load((result.out / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    endpoints = example_server.endpoints
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        status, _ = _get(f"http://{endpoints.http}{container[probe]['httpGet']['path']}")
        assert status == 200, probe

    client = httpclient.InferenceServerClient(endpoints.http)
    try:
        config = client.get_model_config("digits_linear")
        image = httpclient.InferInput(config["input"][0]["name"], [2, *config["input"][0]["dims"]], "FP32")
        image.set_data_from_numpy(np.zeros([2, *map(int, config["input"][0]["dims"])], dtype=np.float32))
        client.infer("digits_linear", [image])
    finally:
        client.close()

    rule = yaml.safe_load((result.out / "prometheus-adapter-rule.yaml").read_text())["data"]["rules.yaml"]
    names = set(re.findall(r"\bnv_[a-z_]+", rule))
    assert names == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    _, metrics = _get(endpoints.metrics)
    for name in names:
        assert re.search(rf'^{name}\{{[^}}]*model="digits_linear"[^}}]*\}} [0-9.e+]+$', metrics, re.M), name
