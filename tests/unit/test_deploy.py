"""deploy: Kubernetes manifests rendered, validated offline (no cluster), sized from a measured report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from generator.core.errors import DeployError, GeneratorError
from generator.core.resources import examples_dir, templates_dir
from generator.deploy.manifests import (
    GCS_KEY_DIRECTORY,
    KUBERNETES_VERSION,
    TRITON_RELEASE,
    DeployConfig,
    LoadtestPlan,
    deploy,
    validate_documents,
)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed: pip install 'tritongen[deploy]'"
)

REPO_ROOT = Path(__file__).resolve().parents[2]
URI = "s3://models/repository/0123abcd"


def _spec(tmp_path: Path, instance_group: str) -> Path:
    onnx = examples_dir() / "digits_linear.onnx"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"repository: {tmp_path / 'repo'}\n"
        "models:\n"
        f"  - {{name: linear, framework: onnx, source: {onnx}, instance_group: {instance_group}}}\n"
        f"  - {{name: other, framework: onnx, source: {onnx}, instance_group: {{count: 1, kind: cpu}}}}\n"
    )
    return spec


def _documents(out: Path) -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(out.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[(document["kind"], document.get("metadata", {}).get("name", ""))] = document
    return found


def _container(out: Path) -> dict:
    return _documents(out)[("Deployment", "triton")]["spec"]["template"]["spec"]["containers"][0]


def test_every_document_passes_strict_validation(tmp_path: Path) -> None:
    result = deploy(
        DeployConfig(URI, _spec(tmp_path, "{count: 1, kind: gpu}"), tmp_path / "out", kserve=True)
    )
    documents = _documents(result.out)
    kinds = sorted(kind for kind, _ in documents)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "InferenceService",
            "Kustomization",
            "Service",
            "Service",
            "ServiceMonitor",
        ]
    )
    for document in documents.values():
        if document["kind"] in ("ServiceMonitor", "InferenceService", "Kustomization"):
            continue
        # The same check as deploy's, run here on what was written: strict (unknown fields refused).
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    container = _container(result.out)
    assert container["image"] == f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
    assert f"--model-repository={URI}" in container["args"]
    assert [p["containerPort"] for p in container["ports"]] == [8000, 8001, 8002]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert documents[("Service", "triton-pods")]["spec"]["clusterIP"] == "None"
    hpa = documents[("HorizontalPodAutoscaler", "triton")]["spec"]
    assert hpa["metrics"][0]["type"] == "Pods"
    kserve = documents[("InferenceService", "triton")]["spec"]["predictor"]["model"]
    assert kserve["modelFormat"] == {"name": "triton"} and kserve["protocolVersion"] == "v2"
    assert kserve["storageUri"] == URI
    kustomization = documents[("Kustomization", "")]
    assert all((result.out / name).is_file() for name in kustomization["resources"])


@pytest.mark.parametrize(
    ("uri", "storage_uri"),
    [
        ("gs://models/fleet/0123456789abcdef", "gs://models/fleet/0123456789abcdef"),
        ("as://acct/models/fleet/0123", "https://acct.blob.core.windows.net/models/fleet/0123"),
        ("s3://http://10.0.0.5:9000/models/fleet/0123", "s3://models/fleet/0123"),
    ],
)
def test_kserve_storage_uri_is_kserves_form_of_every_store(
    tmp_path: Path, uri: str, storage_uri: str
) -> None:
    result = deploy(DeployConfig(uri, _spec(tmp_path, "{kind: cpu}"), tmp_path / "out", kserve=True))
    documents = _documents(result.out)
    assert (
        documents[("InferenceService", "triton")]["spec"]["predictor"]["model"]["storageUri"] == storage_uri
    )
    assert f"--model-repository={uri}" in _container(result.out)["args"]  # Triton itself reads the URI as is


def test_a_gcs_repository_gets_an_optional_key_mount_and_others_none(tmp_path: Path) -> None:
    gcs = deploy(
        DeployConfig("gs://models/fleet/0123", _spec(tmp_path, "{kind: cpu}"), tmp_path / "gcs")
    )  # validated strictly
    container = _container(gcs.out)
    assert container["env"] == [
        {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_DIRECTORY}/key.json"}
    ]
    assert {"name": "gcs-key", "mountPath": GCS_KEY_DIRECTORY, "readOnly": True} in container["volumeMounts"]
    volumes = _documents(gcs.out)[("Deployment", "triton")]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "gcs-key", "secret": {"secretName": "triton-gcs-key", "optional": True}} in volumes
    for uri in ("s3://models/fleet/0123", "as://acct/models/fleet/0123"):
        out = deploy(DeployConfig(uri, _spec(tmp_path, "{kind: cpu}"), tmp_path / uri[:2])).out
        assert "env" not in _container(out) and len(_container(out)["volumeMounts"]) == 1


def test_strict_validation_refuses_unknown_fields_and_bad_custom_resources() -> None:
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x, colour: red}\nspec: {}\n"
    monitor = (
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\n"
        "spec: {selector: {}, endpoints: [{port: 8002}]}\n"
    )
    with pytest.raises(DeployError) as error:
        validate_documents({"d.yaml": deployment, "m.yaml": monitor})
    assert any("colour" in line for line in error.value.problems)
    assert any("m.yaml ServiceMonitor x: spec.endpoints.0.port" in line for line in error.value.problems)


@pytest.mark.parametrize(
    ("instance_group", "gpus"),
    [
        ("{count: 2, kind: cpu}", 0),
        ("{count: 1, kind: gpu}", 1),
        ("{count: 4, kind: gpu}", 1),  # count is per GPU: more instances, no more GPUs
        ("{count: 1, kind: gpu, gpus: [0, 1]}", 2),
        ("{count: 1, kind: gpu, gpus: [3]}", 4),  # the pod must see GPU id 3
        ("{count: 1, kind: auto}", 0),
    ],
)
def test_gpu_requests_follow_the_specs_instance_groups(
    tmp_path: Path, instance_group: str, gpus: int
) -> None:
    result = deploy(DeployConfig(URI, _spec(tmp_path, instance_group), tmp_path / "out"))
    assert result.gpus_per_pod == gpus
    resources = _container(result.out)["resources"]
    if gpus:
        assert resources["requests"]["nvidia.com/gpu"] == str(gpus) == resources["limits"]["nvidia.com/gpu"]
    else:
        assert "nvidia.com/gpu" not in resources["requests"] and "nvidia.com/gpu" not in resources["limits"]
    assert result.warnings and "linear, other not built" in result.warnings[0]


def test_the_built_configs_win_over_the_spec(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "{count: 1, kind: cpu}")
    for name, group in (("linear", "kind: KIND_GPU\n  gpus: [0, 2]"), ("other", "kind: KIND_CPU")):
        (tmp_path / "repo" / name).mkdir(parents=True)
        (tmp_path / "repo" / name / "config.pbtxt").write_text(
            f'name: "{name}"\nplatform: "onnxruntime_onnx"\ninstance_group [{{\n  count: 1\n  {group}\n}}]\n'
        )
    result = deploy(DeployConfig(URI, spec, tmp_path / "out"))
    assert result.gpus_per_pod == 3 and not result.warnings
    assert [m.source for m in result.models] == ["config.pbtxt", "config.pbtxt"]
    assert _container(result.out)["resources"]["limits"]["nvidia.com/gpu"] == "3"


def _report(path: Path, levels: list[tuple[int, float, float, float]]) -> Path:
    runs = [
        {
            "users": users,
            "requests_per_s": rps,
            "throughput": rps,
            "latency_ms": {"p99": p99},
            "error_rate": err,
        }
        for users, rps, p99, err in levels
    ]
    path.write_text(json.dumps({"levels": [lv[0] for lv in levels], "runs": runs}))
    return path


def test_capacity_follows_from_the_report(tmp_path: Path) -> None:
    # 16 users: fastest, but it failed requests; 32 users: over the latency limit. 8 users is the level.
    report = _report(
        tmp_path / "report.json",
        [(1, 90.0, 4.0, 0.0), (8, 310.0, 18.0, 0.0), (16, 420.0, 22.0, 0.01), (32, 500.0, 60.0, 0.0)],
    )
    config = DeployConfig(
        URI,
        _spec(tmp_path, "{count: 1, kind: gpu, gpus: [0, 1]}"),
        tmp_path / "out",
        target_rps=2000,
        max_p99_ms=25,
        report=report,
        headroom=0.3,
        price_per_hour=3.5,
    )
    result = deploy(config)
    sized = result.capacity
    assert sized is not None
    replicas = math.ceil(2000 * 1.3 / 310.0)
    assert (sized.per_replica_rps, sized.level["users"]) == (310.0, 8)
    assert (sized.replicas, sized.max_replicas, sized.gpus) == (replicas, 2 * replicas, 2 * replicas)
    assert sized.cost_per_hour == pytest.approx(replicas * 3.5)
    written = json.loads((result.out / "capacity.json").read_text())
    assert written["replicas"] == replicas and written["derivation"] == sized.derivation
    assert (result.out / "capacity.txt").read_text().splitlines() == sized.derivation
    documents = _documents(result.out)
    hpa = documents[("HorizontalPodAutoscaler", "triton")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (replicas, 2 * replicas)
    assert documents[("Deployment", "triton")]["spec"]["replicas"] == replicas


def test_keda_scales_on_the_same_queue_time_with_the_capacity_bounds(tmp_path: Path) -> None:
    report = _report(tmp_path / "report.json", [(1, 90.0, 4.0, 0.0), (8, 310.0, 18.0, 0.0)])
    config = DeployConfig(
        URI,
        _spec(tmp_path, "{kind: cpu}"),
        tmp_path / "out",
        target_rps=2000,
        max_p99_ms=25,
        report=report,
        autoscaler="keda",
        prometheus_url="http://prometheus.observability:9090",
        queue_target_us=2500,
    )
    result = deploy(config)
    replicas = math.ceil(2000 * 1.3 / 310.0)
    documents = _documents(result.out)  # validated on writing: the ScaledObject against its kept schema
    assert not any(kind in ("HorizontalPodAutoscaler", "ConfigMap") for kind, _ in documents)
    scaled = documents[("ScaledObject", "triton")]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (replicas, 2 * replicas)
    assert scaled["scaleTargetRef"]["name"] == "triton"
    trigger = scaled["triggers"][0]
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "Value")
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.observability:9090"
    assert trigger["metadata"]["threshold"] == "2500"
    assert 'nv_inference_queue_duration_us{service="triton-pods"}' in trigger["metadata"]["query"]
    kustomization = documents[("Kustomization", "")]["resources"]
    assert "scaledobject.yaml" in kustomization and "hpa.yaml" not in kustomization
    assert sorted(p.name for p in result.out.glob("*.yaml")) == sorted([*kustomization, "kustomization.yaml"])


def test_a_scaled_object_outside_its_schema_is_refused() -> None:
    bad = (
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\n"
        "spec: {scaleTargetRef: {name: x}, triggers: [{type: prometheus, metadata: {threshold: 5}}]}\n"
    )
    with pytest.raises(
        DeployError, match=r"scaledobject.yaml ScaledObject x: spec.triggers.0.metadata.threshold"
    ):
        validate_documents({"scaledobject.yaml": bad})


def test_capacity_from_a_tune_report_takes_the_slowest_model(tmp_path: Path) -> None:
    def model(rps: float) -> dict:
        levels = [{"users": 4, "requests_per_s": rps, "p99_ms": 10.0, "error_rate": 0.0}]
        return {"winner": 2, "trials": [{"number": 1, "levels": []}, {"number": 2, "levels": levels}]}

    tune = tmp_path / "tune.json"
    tune.write_text(json.dumps({"models": {"fast": model(800.0), "slow": model(200.0)}}))
    config = DeployConfig(
        URI, _spec(tmp_path, "{kind: cpu}"), tmp_path / "out", target_rps=500, max_p99_ms=20, report=tune
    )
    result = deploy(config)
    assert result.capacity is not None
    assert result.capacity.level["model"] == "slow"
    assert result.capacity.replicas == math.ceil(500 * 1.3 / 200.0)


def test_a_user_template_overrides_a_built_in_one(tmp_path: Path) -> None:
    mine = tmp_path / "mine" / "k8s"
    mine.mkdir(parents=True)
    builtin = (templates_dir() / "k8s" / "servicemonitor.yaml.j2").read_text()
    (mine / "servicemonitor.yaml.j2").write_text(builtin.replace("interval: 15s", "interval: 5s"))
    result = deploy(
        DeployConfig(URI, _spec(tmp_path, "{kind: cpu}"), tmp_path / "out", templates=tmp_path / "mine")
    )
    monitor = _documents(result.out)[("ServiceMonitor", "triton")]
    assert monitor["spec"]["endpoints"][0]["interval"] == "5s"
    # A user template that writes something invalid is refused before anything is written.
    (mine / "servicemonitor.yaml.j2").write_text(builtin.replace("port: metrics", "port: 8002"))
    with pytest.raises(
        DeployError, match=r"servicemonitor.yaml ServiceMonitor triton: spec.endpoints.0.port"
    ):
        deploy(
            DeployConfig(URI, _spec(tmp_path, "{kind: cpu}"), tmp_path / "out2", templates=tmp_path / "mine")
        )
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_repository": None}, "deploy needs --model-repository"),
        ({"model_repository": "/data/repo"}, "is not an object-storage URI"),
        ({"model_repository": "s3://b/p\n  x"}, "is not an object-storage URI"),
        ({"name": "Triton_1"}, "--name 'Triton_1' is not a valid Kubernetes name"),
        ({"autoscaler": "vpa"}, "--autoscaler 'vpa' is not one of hpa, keda"),
        ({"prometheus_url": "prometheus:9090"}, "--prometheus-url 'prometheus:9090' is not an http"),
        ({"target_rps": 10.0}, "needs --target-rps, --max-p99-ms and --report together"),
        (
            {"target_rps": 10.0, "max_p99_ms": 5.0, "report": "missing.json"},
            "--report missing.json does not exist",
        ),
        ({"target_rps": 10.0, "max_p99_ms": 1.0, "report": "REPORT"}, "no level of the load test"),
        (
            {"target_rps": -1.0, "max_p99_ms": 1.0, "report": "REPORT"},
            "--target-rps must be a positive number",
        ),
        ({"templates": "no-such-dir"}, "--templates 'no-such-dir' is not a directory"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    report = _report(tmp_path / "report.json", [(1, 50.0, 3.0, 0.0)])
    kwargs = {k: (str(report) if v == "REPORT" else v) for k, v in kwargs.items()}
    arguments = {"model_repository": URI, **kwargs}
    with pytest.raises(GeneratorError) as error:  # DeployError; ConfigError for --templates
        deploy(DeployConfig(spec=_spec(tmp_path, "{kind: cpu}"), out=tmp_path / "out", **arguments))
    assert len(error.value.problems) == 1 and "\n" not in str(error.value)
    assert message in str(error.value)


def test_cli_renders_and_prints_the_capacity(tmp_path: Path) -> None:
    report = _report(tmp_path / "report.json", [(1, 100.0, 5.0, 0.0), (8, 400.0, 20.0, 0.0)])
    command = [sys.executable, "-m", "generator", "deploy", str(_spec(tmp_path, "{kind: gpu}"))]
    command += ["--out", str(tmp_path / "out"), "--model-repository", URI, "--kserve"]
    command += [
        "--target-rps",
        "1000",
        "--max-p99-ms",
        "25",
        "--report",
        str(report),
        "--price-per-hour",
        "2",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "replicas = ceil(1000 req/s x (1 + 0.3 headroom) / 400) = 4" in done.stdout
    assert "nvidia.com/gpu per pod: 1" in done.stdout
    assert (tmp_path / "out" / "inferenceservice.yaml").is_file()
    bad = subprocess.run(command[:5], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: deploy needs --model-repository URI: the s3://, gs:// or as:// URI `push` printed for the repository"
    ]
    keda = [*command[:5], "--out", str(tmp_path / "keda"), "--model-repository", URI, "--autoscaler", "keda"]
    done = subprocess.run(keda, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "keda" / "scaledobject.yaml").is_file() and not (
        tmp_path / "keda" / "hpa.yaml"
    ).exists()


def test_loadtest_needs_a_model_of_the_spec(tmp_path: Path) -> None:
    with pytest.raises(
        DeployError, match=r"--loadtest 'nope' is no model of the spec; use one of .*text_pipeline"
    ):
        deploy(
            DeployConfig(
                "s3://bucket/repo",
                examples_dir() / "generator.yaml",
                tmp_path / "out",
                repository=tmp_path / "none",
                loadtest=LoadtestPlan("nope"),
            )
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("loadtest_args", "reason"),
    [("--sweep '1,2", "no closing quotation"), ("--sweep 1\\", "no escaped character")],
)
def test_loadtest_args_that_do_not_split_are_one_line_errors(
    tmp_path: Path, loadtest_args: str, reason: str
) -> None:
    command = [sys.executable, "-m", "generator", "deploy", str(_spec(tmp_path, "{kind: cpu}"))]
    command += ["--out", str(tmp_path / "out"), "--model-repository", URI, "--loadtest", "linear"]
    done = subprocess.run(
        [*command, "--loadtest-args", loadtest_args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"error: --loadtest-args {json.dumps(loadtest_args)}: {reason}; close the quote, or escape a literal "
        "quote or backslash with a backslash"
    ]
    assert not (tmp_path / "out").exists()
    quoted = subprocess.run(
        [*command, "--loadtest-args", "--sweep '1,2' --duration 5"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert quoted.returncode == 0, quoted.stderr
    documents = yaml.safe_load_all((tmp_path / "out" / "loadtest" / "master.yaml").read_text())
    job = next(d for d in documents if d["kind"] == "Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-4:] == ["--sweep", "1,2", "--duration", "5"]  # the quotes were the shell's
