"""Kubernetes manifests for a built repository: render, size, validate, write.

``deploy`` reads the spec and the built repository, derives each pod's ``nvidia.com/gpu`` request from
the models' instance groups, optionally sizes the fleet from a measured report (:mod:`generator.deploy.capacity`),
renders the manifests from the Jinja templates in ``templates/k8s/`` (a user's ``--templates`` directory
with its own ``k8s/NAME.yaml.j2`` comes first, as for config.pbtxt), validates every document, and writes
them. Built-in kinds are checked with ``kubernetes-validate`` in strict mode against
:data:`KUBERNETES_VERSION`; the custom resources (ServiceMonitor, InferenceService, KEDA's ScaledObject) and
the Kustomization against the trimmed JSON schemas in ``templates/k8s/schemas/``. Nothing is written unless all pass.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generator import __version__
from generator.core.errors import DeployError, MissingDependencyError
from generator.core.resources import templates_dir
from generator.core.templating import environment
from generator.core.triton import parse_config_text
from generator.core.uris import kserve_storage_uri
from generator.deploy.capacity import Capacity, capacity
from generator.deploy.options import default
from generator.spec.tuned import load_spec_with_tuned

__all__ = [
    "KUBERNETES_VERSION",
    "TRITON_RELEASE",
    "DeployConfig",
    "DeployResult",
    "LoadtestPlan",
    "ModelGroups",
    "deploy",
    "gpus_per_pod",
    "model_groups",
    "validate_documents",
]

#: The NGC container release that ships Triton 2.51, the server the repository is built and tested for.
TRITON_RELEASE = "24.10"
#: The Kubernetes version the manifests are validated against.
KUBERNETES_VERSION = "1.30.0"
METRIC = "triton_queue_us_per_request"
#: Where a gs:// Deployment mounts its optional service-account key (``key.json``).
GCS_KEY_DIRECTORY = "/var/secrets/google"
_SCHEMES = ("s3://", "gs://", "as://")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomization.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
}
#: The fleet's files around its autoscaler's (which go after the Services).
_FLEET_FILES = ("deployment.yaml", "services.yaml", "servicemonitor.yaml")
#: What scales the fleet: the files of each autoscaler.
AUTOSCALER_FILES = {
    "hpa": ("hpa.yaml", "prometheus-adapter-rule.yaml"),
    "keda": ("scaledobject.yaml",),
}
#: Where KEDA reads Prometheus by default: the Service the Prometheus operator creates in ``monitoring``.
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"


@dataclass(frozen=True)
class ModelGroups:
    """One model's instance groups, as the GPU request sees them.

    Attributes:
        model: The model's name.
        source: ``"config.pbtxt"`` (the built repository) or ``"spec"`` (not built yet).
        groups: ``{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}`` per group.
        gpus: GPUs a pod needs for this model (the highest GPU id + 1; 1 for KIND_GPU on any GPU).
    """

    model: str
    source: str
    groups: list[dict[str, Any]]
    gpus: int


@dataclass
class DeployResult:
    """What ``deploy`` wrote and why.

    Attributes:
        out: The output directory.
        files: The files written.
        image: The Triton image of the Deployment.
        gpus_per_pod: ``nvidia.com/gpu`` each pod requests (0: none).
        models: Each model's instance groups.
        capacity: The sizing, when a target was given.
        warnings: One line each.
    """

    out: Path
    files: list[Path]
    image: str
    gpus_per_pod: int
    models: list[ModelGroups]
    capacity: Capacity | None = None
    warnings: list[str] = field(default_factory=list)


def _group_gpus(kind: str, gpus: list[int]) -> int:
    if kind != "KIND_GPU":
        return 0
    return max(gpus) + 1 if gpus else 1


def _from_config(name: str, path: Path) -> ModelGroups | None:
    from tritonclient.grpc import model_config_pb2

    config = parse_config_text(path.read_text(encoding="utf-8"), origin=str(path))
    if config.platform == "ensemble":
        return None
    kinds = model_config_pb2.ModelInstanceGroup.Kind
    groups = [
        {"kind": kinds.Name(g.kind), "count": g.count, "gpus": list(g.gpus)} for g in config.instance_group
    ]
    return ModelGroups(
        name, "config.pbtxt", groups, max((_group_gpus(g["kind"], g["gpus"]) for g in groups), default=0)
    )


def _from_spec(model: Any) -> ModelGroups:
    settings = model.instance_group
    kind = f"KIND_{(settings.kind if settings and settings.kind else 'cpu').upper()}"
    gpus = list(settings.gpus or []) if settings else []
    group = {"kind": kind, "count": settings.count if settings else 1, "gpus": gpus}
    return ModelGroups(model.name, "spec", [group], _group_gpus(kind, gpus))


def model_groups(spec: Any, repository: Path) -> tuple[list[ModelGroups], list[str]]:
    """Each model's instance groups: from its built config.pbtxt, else from the spec (kind unset counts
    as build's default, cpu). Returns them and a warning naming the models read from the spec."""
    found: list[ModelGroups] = []
    unbuilt: list[str] = []
    for model in spec.models:
        config = repository / model.name / "config.pbtxt"
        if config.is_file():
            groups = _from_config(model.name, config)
            if groups is not None:
                found.append(groups)
            continue
        found.append(_from_spec(model))
        unbuilt.append(model.name)
    warnings = (
        [
            f"{', '.join(unbuilt)} not built in {repository}: GPU requests from the spec "
            "(build the repository so the deployment follows its configs)"
        ]
        if unbuilt
        else []
    )
    return found, warnings


def gpus_per_pod(models: list[ModelGroups]) -> int:
    """GPUs one pod needs: every model's groups must find their GPU ids inside the pod."""
    return max((m.gpus for m in models), default=0)


def _check_inputs(name: str, model_repository: str | None) -> str:
    if not model_repository:
        raise DeployError(
            "deploy needs --model-repository URI: the s3://, gs:// or as:// URI `push` printed for the repository"
        )
    if not model_repository.startswith(_SCHEMES) or any(c.isspace() for c in model_repository):
        raise DeployError(
            f"--model-repository {model_repository!r} is not an object-storage URI; pods load the repository "
            "from s3://, gs:// or as:// (push it there first)"
        )
    if not _NAME.match(name) or len(name) > 45:
        raise DeployError(
            f"--name '{name}' is not a valid Kubernetes name; use up to 45 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return model_repository


def _context(
    name: str,
    model_repository: str,
    image: str,
    gpus: int,
    replicas: tuple[int, int],
    queue_target_us: int,
    reason: str,
) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/managed-by": "tritongen",
    }
    gpu = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {
        "name": name,
        "labels": labels,
        "selector": {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")},
        "pod_service_labels": {**labels, "tritongen.io/service": "pods"},
        "image": image,
        "release_tag": image.rsplit(":", 1)[-1],
        "model_repository": model_repository,
        "storage_uri": kserve_storage_uri(model_repository),
        "secret": f"{name}-storage",
        "args": [
            f"--model-repository={model_repository}",
            "--http-port=8000",
            "--grpc-port=8001",
            "--metrics-port=8002",
        ],
        "requests": {"cpu": "2", "memory": "8Gi", **gpu},
        "limits": {"memory": "8Gi", **gpu},
        "shm_size": "1Gi",
        "startup_seconds": 600,
        "replicas": replicas[0],
        "min_replicas": replicas[0],
        "max_replicas": replicas[1],
        "metric": METRIC,
        "queue_target": str(queue_target_us),
        "hpa_reason": reason,
        # gs://: a service-account key, where one is given, from the optional Secret NAME-gcs-key (key.json).
        # Without it the file is absent and Triton falls back to the metadata server (a workload identity).
        "gcs_key": {"secret": f"{name}-gcs-key", "directory": GCS_KEY_DIRECTORY}
        if model_repository.startswith("gs://")
        else None,
    }


def _render(templates: Path | None, context: dict[str, Any], names: list[str]) -> dict[str, str]:
    """Render ``k8s/NAME.j2`` for each name (a user's copy in ``templates`` first): name -> text."""
    import jinja2

    env = environment(Path(templates) if templates is not None else None)
    env.filters["q"] = lambda value: json.dumps(value, ensure_ascii=False)
    rendered: dict[str, str] = {}
    for filename in names:
        try:
            template = env.get_template(f"k8s/{filename}.j2")
            rendered[filename] = template.render(d=context, tool_version=__version__)
        except jinja2.TemplateError as exc:
            raise DeployError(
                f"template k8s/{filename}.j2 failed: {exc}; fix your copy in --templates or remove it"
            ) from None
    return rendered


#: The Locust master's port (Locust's own default), in the master's Service.
LOADTEST_MASTER_PORT = 5557
_LOADTEST_FILES = ("loadtest/master.yaml", "loadtest/workers.yaml", "loadtest/Dockerfile")


@dataclass(frozen=True)
class LoadtestPlan:
    """``deploy --loadtest``: a distributed load test of the fleet from inside the cluster.

    Attributes:
        model: The model (or ensemble) to load-test.
        workers: Locust worker pods.
        image: The load generator's image (built from the rendered Dockerfile).
        args: More ``loadtest`` arguments (``--sweep 1,16,64 --duration 60``...).
    """

    model: str
    workers: int = default("loadtest.workers")
    image: str = f"tritongen-loadtest:{__version__}"
    args: tuple[str, ...] = default("loadtest.args")


def _loadtest_context(name: str, plan: LoadtestPlan, out: Path) -> dict[str, Any]:
    """The master Job's and the workers' exact commands, and their labels."""
    master = f"{name}-loadtest-master"
    labels = {"app.kubernetes.io/managed-by": "tritongen", "app.kubernetes.io/part-of": f"{name}-loadtest"}
    master_command = [
        "python", "-m", "generator", "loadtest",
        "--master", "--expect-workers", str(plan.workers),
        "--master-bind-host", "0.0.0.0", "--master-bind-port", str(LOADTEST_MASTER_PORT),
        "--url", f"http://{name}:8000", "--allow-remote",
        "--model", plan.model, "--out", "/reports", *plan.args,
    ]  # fmt: skip
    worker_command = [
        "python", "-m", "generator", "loadtest-worker",
        "--master-host", master, "--master-port", str(LOADTEST_MASTER_PORT),
    ]  # fmt: skip
    return {
        "master": master,
        "workers_name": f"{name}-loadtest-workers",
        "master_labels": {**labels, "app.kubernetes.io/component": "loadtest-master"},
        "worker_labels": {**labels, "app.kubernetes.io/component": "loadtest-worker"},
        "image": plan.image,
        "workers": plan.workers,
        "master_port": LOADTEST_MASTER_PORT,
        "master_command": master_command,
        "worker_command": worker_command,
        "out_name": out.name,
    }


def _schema(name: str) -> dict[str, Any]:
    return json.loads((templates_dir() / "k8s" / "schemas" / name).read_text(encoding="utf-8"))


def _problems(document: Any, where: str, kubernetes_version: str) -> list[str]:
    import jsonschema
    import kubernetes_validate

    if not isinstance(document, dict):
        return [f"{where}: not a mapping"]
    schema = _CUSTOM_SCHEMAS.get((document.get("apiVersion"), document.get("kind")))
    if schema is not None:
        validator = jsonschema.Draft202012Validator(_schema(schema))
        return [
            f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(document)
        ]
    try:
        kubernetes_validate.validate(document, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path)) or "<root>"
        return [f"{where}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            f"{where}: no schema for {document.get('apiVersion')} {document.get('kind')} in Kubernetes {kubernetes_version}"
        ]
    return []


def validate_documents(texts: dict[str, str], kubernetes_version: str = KUBERNETES_VERSION) -> int:
    """Validate every YAML document of ``{filename: text}``; return how many were checked.

    Raises:
        MissingDependencyError: kubernetes-validate is not installed.
        DeployError: One line per invalid document (file, kind/name, field path, reason).
    """
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        raise MissingDependencyError.for_package(
            "kubernetes-validate", extra="deploy", purpose="to validate the Kubernetes manifests"
        ) from None
    problems: list[str] = []
    checked = 0
    for filename, text in texts.items():
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{filename} is not YAML ({str(exc).splitlines()[0]}); check its template")
            continue
        for document in documents:
            kind = document.get("kind", "?") if isinstance(document, dict) else "?"
            name = (document.get("metadata") or {}).get("name", "") if isinstance(document, dict) else ""
            problems += _problems(document, f"{filename} {kind} {name}".rstrip(), kubernetes_version)
            checked += 1
    if problems:
        raise DeployError(*problems)
    return checked


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class DeployConfig:
    """What ``deploy`` renders. Each field is a ``deploy`` option, declared once with its default in
    :data:`generator.deploy.options.OPTIONS`: ``DeployConfig(model_repository=URI)`` is what
    ``python -m generator deploy --model-repository URI`` does.

    Attributes:
        model_repository: The object-storage URI the pods load (what ``push`` printed); required.
        spec: The spec (default: generator.yaml, else the bundled example).
        out: Directory the manifests go to (created).
        kserve: Also write a KServe InferenceService (``inferenceservice.yaml``, outside the kustomization).
        templates: A directory whose ``k8s/*.yaml.j2`` replace the built-in ones.
        repository: The built repository (default: the spec's ``repository``).
        name: Name of the Deployment, Services, HPA, ServiceMonitor.
        image: The Triton image (default: the official one of :data:`TRITON_RELEASE`).
        replicas: Replicas when no capacity target is given (HPA max is twice that).
        queue_target_us: The autoscaler's target queue time per request, microseconds, averaged over pods.
        autoscaler: ``hpa`` (an ``autoscaling/v2`` HPA on a Pods metric the Prometheus adapter serves,
            with the adapter's rule) or ``keda`` (a KEDA ScaledObject reading Prometheus at
            ``prometheus_url``); both scale on the same queue time per request.
        prometheus_url: The Prometheus KEDA queries (default :data:`DEFAULT_PROMETHEUS`).
        target_rps, max_p99_ms, report, headroom, price_per_hour: Size the fleet from a measured report
            (all of ``target_rps``, ``max_p99_ms`` and ``report`` together); see :mod:`generator.deploy.capacity`.
        loadtest: Also write a distributed load test of the fleet (``loadtest/``: the Locust master
            Job and its Service, the worker Deployment, the load generator's Dockerfile).
    """

    model_repository: str | None = default("model_repository")
    spec: str | Path | None = default("spec")
    out: str | Path = default("out")
    kserve: bool = default("kserve")
    templates: str | Path | None = default("templates")
    repository: str | Path | None = default("repository")
    name: str = default("name")
    image: str | None = default("image")
    replicas: int = default("replicas")
    queue_target_us: int = default("queue_target_us")
    autoscaler: str = default("autoscaler")
    prometheus_url: str | None = default("prometheus_url")
    target_rps: float | None = default("target_rps")
    max_p99_ms: float | None = default("max_p99_ms")
    report: str | Path | None = default("report")
    headroom: float = default("headroom")
    price_per_hour: float | None = default("price_per_hour")
    loadtest: LoadtestPlan | None = None


def _check(config: DeployConfig) -> tuple[str, str]:
    """The repository URI and the Prometheus URL, once the options are checked."""
    uri = _check_inputs(config.name, config.model_repository)
    sizing = (config.target_rps, config.max_p99_ms, config.report)
    if any(v is not None for v in sizing) and not all(v is not None for v in sizing):
        raise DeployError("capacity needs --target-rps, --max-p99-ms and --report together; pass all three")
    if config.replicas < 1 or config.queue_target_us < 1:
        raise DeployError("--replicas and --queue-target-us must be at least 1")
    if config.autoscaler not in AUTOSCALER_FILES:
        raise DeployError(f"--autoscaler '{config.autoscaler}' is not one of {', '.join(AUTOSCALER_FILES)}")
    prometheus_url = config.prometheus_url or DEFAULT_PROMETHEUS
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", prometheus_url):
        raise DeployError(f"--prometheus-url '{prometheus_url}' is not an http(s)://HOST[:PORT] address")
    return uri, prometheus_url


def _sizing(config: DeployConfig, gpus: int) -> tuple[Capacity | None, tuple[int, int], str]:
    """The capacity from the measured report (None without one), the replica bounds, and why."""
    if config.report is None:
        reason = f"Replicas from --replicas {config.replicas} (no capacity target given)."
        return None, (config.replicas, 2 * config.replicas), reason
    sized = capacity(
        Path(config.report),
        config.target_rps,  # type: ignore[arg-type]
        config.max_p99_ms,  # type: ignore[arg-type]
        gpus,
        config.headroom,
        config.price_per_hour,
    )
    return sized, (sized.replicas, sized.max_replicas), "Replicas from capacity.json."


def _loadtest_texts(config: DeployConfig, spec: Any, templates: Path | None) -> dict[str, str]:
    """``loadtest/``'s files for ``config.loadtest``, rendered."""
    plan = config.loadtest
    assert plan is not None
    if plan.workers < 1:
        raise DeployError("--loadtest-workers must be at least 1")
    names = {m.name for m in spec.models} | {e.name for e in spec.ensembles}
    if plan.model not in names:
        known = ", ".join(sorted(names))
        raise DeployError(f"--loadtest '{plan.model}' is no model of the spec; use one of {known}")
    context = _loadtest_context(config.name, plan, Path(config.out))
    return _render(templates, context, list(_LOADTEST_FILES))


def deploy(config: DeployConfig) -> DeployResult:
    """Render, validate and write the Kubernetes manifests for a spec's repository.

    Args:
        config: What to render (see :class:`DeployConfig`; ``DeployConfig(model_repository=URI)`` renders
            with the ``deploy`` command's defaults).

    Raises:
        DeployError: Bad options, a failing template, an invalid document, or no level meets the target.
        SpecError: The spec does not load.
    """
    uri, prometheus_url = _check(config)
    spec, _ = load_spec_with_tuned(config.spec)
    repository = config.repository if config.repository is not None else spec.repository
    models, warnings = model_groups(spec, Path(repository))
    gpus = gpus_per_pod(models)
    sized, bounds, reason = _sizing(config, gpus)
    image = config.image or f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
    context = _context(config.name, uri, image, gpus, bounds, config.queue_target_us, reason)
    fleet = [*_FLEET_FILES[:2], *AUTOSCALER_FILES[config.autoscaler], *_FLEET_FILES[2:]]
    context.update(resources=fleet, prometheus_url=prometheus_url, pods_service=f"{config.name}-pods")
    templates = Path(config.templates) if config.templates else None
    names = [*fleet, "kustomization.yaml", *(["inferenceservice.yaml"] if config.kserve else [])]
    texts = _render(templates, context, names)
    if config.loadtest is not None:
        texts.update(_loadtest_texts(config, spec, templates))
    validate_documents({k: v for k, v in texts.items() if k.endswith(".yaml")})
    if sized is not None:
        texts["capacity.json"] = json.dumps(sized.as_dict(), indent=2) + "\n"
        texts["capacity.txt"] = "\n".join(sized.derivation) + "\n"
    target = Path(config.out)
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for filename, text in texts.items():
        _write(target / filename, text)
        files.append(target / filename)
    return DeployResult(target, files, image, gpus, models, sized, warnings)
