"""The ``deploy`` command's options, declared once: the CLI's parser,
:class:`~generator.deploy.manifests.DeployConfig` and its defaults all come from :data:`OPTIONS`.

Each :class:`~generator.core.options.Option` row names a flag, its type, default and help, and the
:class:`~generator.deploy.manifests.DeployConfig` field it sets (``loadtest.workers``: the field of its
:class:`~generator.deploy.manifests.LoadtestPlan`, which exists only with ``--loadtest MODEL``).

Kept apart from :mod:`~generator.deploy.manifests` so that building the CLI's parser imports neither the
spec nor the templates.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from generator.core.errors import DeployError
from generator.core.options import Option, config_default, config_values

__all__ = ["OPTIONS", "config_from_args", "default", "loadtest_arguments"]


def loadtest_arguments(text: str) -> tuple[str, ...]:
    """``deploy --loadtest-args`` split into arguments as a POSIX shell splits them.

    Raises:
        DeployError: a quotation is not closed, or the text ends in a backslash.
    """
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:  # shlex's only error: "No closing quotation", "No escaped character"
        reason = str(exc).lower() or "unbalanced quoting"
        raise DeployError(
            f"--loadtest-args {json.dumps(text)}: {reason}; close the quote, or escape a literal quote "
            "or backslash with a backslash"
        ) from None


OPTIONS: tuple[Option, ...] = (
    Option("spec", ("spec",), "YAML spec (default: generator.yaml, else the bundled example)", nargs="?"),
    Option("out", ("--out",), "directory for the manifests (default: {default})", default="deploy"),
    Option(
        "model_repository", ("--model-repository",), "object-storage URI the pods load (what `push` printed)"
    ),
    Option("repository", ("--repository",), "the built repository (default: the spec's `repository`)"),
    Option("kserve", ("--kserve",), "also write a KServe InferenceService", default=False, switch=True),
    Option("templates", ("--templates",), "directory with your own k8s/*.yaml.j2 templates"),
    Option(
        "name", ("--name",), "name of the Deployment, Services, HPA (default {default})", default="triton"
    ),
    Option("image", ("--image",), "Triton image (default: the official release matching Triton 2.51)"),
    Option(
        "replicas",
        ("--replicas",),
        "replicas without a capacity target (default {default})",
        type=int,
        default=1,
    ),
    Option(
        "queue_target_us",
        ("--queue-target-us",),
        "HPA target: queue time per request in us (default {default})",
        type=int,
        default=5000,
    ),
    Option(
        "autoscaler",
        ("--autoscaler",),
        "hpa: an HPA on the Prometheus adapter's metric (default); keda: a KEDA ScaledObject on Prometheus",
        default="hpa",
        choices=("hpa", "keda"),
    ),
    Option(
        "prometheus_url",
        ("--prometheus-url",),
        "the Prometheus KEDA queries (default: the Prometheus operator's in namespace monitoring)",
    ),
    Option("target_rps", ("--target-rps",), "size the fleet for this many requests/s", type=float),
    Option("max_p99_ms", ("--max-p99-ms",), "... at this p99 latency", type=float),
    Option("report", ("--report",), "the loadtest report.json (or tune.json) measured on one replica"),
    Option("headroom", ("--headroom",), "spare fraction on top (default {default})", type=float, default=0.3),
    Option("price_per_hour", ("--price-per-hour",), "price of one replica per hour", type=float),
    Option(
        "loadtest",
        ("--loadtest",),
        "also write a distributed load test of MODEL from inside the cluster (loadtest/)",
        field="loadtest.model",
        metavar="MODEL",
    ),
    Option(
        "loadtest_workers",
        ("--loadtest-workers",),
        "Locust worker pods (default {default})",
        field="loadtest.workers",
        type=int,
        default=2,
    ),
    Option(
        "loadtest_image",
        ("--loadtest-image",),
        "the load generator's image (default tritongen-loadtest:VERSION)",
        field="loadtest.image",
        parse=lambda image: image or None,
    ),
    Option(
        "loadtest_args",
        ("--loadtest-args",),
        'more loadtest arguments for the master, e.g. "--sweep 1,16,64 --duration 60"',
        field="loadtest.args",
        default="",
        parse=loadtest_arguments,
    ),
)

_PLAN = tuple(option for option in OPTIONS if option.target.startswith("loadtest."))


def default(field: str) -> Any:
    """The default of config field ``field``: of :class:`~generator.deploy.manifests.DeployConfig`, or
    ``loadtest.NAME`` of its :class:`~generator.deploy.manifests.LoadtestPlan` (a new copy).

    Raises:
        KeyError: No option sets ``field``.
    """
    return config_default(OPTIONS, field)


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~generator.deploy.manifests.DeployConfig` of parsed ``deploy`` options.

    Raises:
        DeployError: ``--loadtest-args`` does not split (only read with ``--loadtest``).
    """
    from generator.deploy.manifests import DeployConfig, LoadtestPlan

    plan = None
    if args.loadtest:
        fields = config_values(_PLAN, args)
        plan = LoadtestPlan(**{name.removeprefix("loadtest."): value for name, value in fields.items()})
    values = config_values(tuple(option for option in OPTIONS if option not in _PLAN), args)
    return DeployConfig(**values, loadtest=plan)
