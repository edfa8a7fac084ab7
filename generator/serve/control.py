"""One client for Triton's control plane over tritonclient, shared by the server's supervision and the load side.

:class:`ServerControl` asks one endpoint (a :class:`Target`) for its health and readiness, its repository
index, a model's config, metadata and statistics, and loads and unloads models through Triton's model
control. It speaks HTTP or gRPC (whichever the caller loads, so a gRPC-only endpoint works) and returns
plain JSON-like dicts with numbers as numbers (gRPC's JSON form writes 64-bit integers as strings; they are
converted here). Every failure becomes the caller's error class (:class:`~generator.core.errors.ServerError`
by default, :class:`~generator.core.errors.LoadTestError` for the load side), with a message that says what
to do.

The HTTP client runs on gevent (geventhttpclient): each client serves the thread that made it, and a thread
other than the main one calls :func:`release_thread_hub` before it ends.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

from generator.core.errors import GeneratorError, ServerError

__all__ = ["DEFAULT_PORTS", "ServerControl", "Target", "init_grpc_gevent", "release_thread_hub"]

logger = logging.getLogger(__name__)

#: Triton's default ports.
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}

_grpc_gevent_ready = False

_START_HINT = (
    "start it (python -m generator serve) and point the harness at it (--url, or Locust's --host), "
    "or let `loadtest --serve DIR` start one"
)


@dataclass(frozen=True)
class Target:
    """One Triton endpoint: the one a control client asks, and the one a load test sends requests to.

    Attributes:
        protocol: ``"http"`` or ``"grpc"``.
        host: Host name or address, without brackets.
        port: TCP port of the endpoint.
        base_path: URL path prefix of the HTTP endpoint (usually empty); unused for gRPC.
    """

    protocol: str
    host: str
    port: int
    base_path: str = ""

    @property
    def address(self) -> str:
        """``host:port`` as tritonclient wants it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The endpoint as a URL with the protocol as scheme, e.g. ``grpc://127.0.0.1:8001``."""
        return f"{self.protocol}://{self.address}{self.base_path}"

    def default_metrics_url(self) -> str:
        """Triton's metrics page on the same host at the default port 8002."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{DEFAULT_PORTS['metrics']}/metrics"


def init_grpc_gevent() -> None:
    """Make grpcio cooperate with gevent (Locust's concurrency). Must run before the process's first channel.

    Only the control plane uses grpcio (tritonclient.grpc): its few calls wait in a native thread while
    the users go on. The load itself does not go through grpcio (see :mod:`~generator.loadtest.grpcwire`).
    """
    global _grpc_gevent_ready
    if not _grpc_gevent_ready:
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _grpc_gevent_ready = True


def release_thread_hub() -> None:
    """Free the gevent hub of the calling thread, which an HTTP client made; call it where a thread ends.

    gevent gives every OS thread that waits on its sockets an event loop of its own, with file descriptors
    that outlive the thread; a thread started per server would leak them. Nothing is done where gevent
    was never imported, or where the standard library is patched for gevent (threads are greenlets then,
    and the hub is the process's).
    """
    if "gevent" not in sys.modules:
        return
    import gevent
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        return
    gevent.get_hub().destroy(destroy_loop=True)


class ServerControl:
    """Control-plane calls to one Triton endpoint.

    Args:
        target: The endpoint (its protocol picks tritonclient.http or tritonclient.grpc).
        timeout: Seconds to wait for connecting and for each answer.
        error: The error class every failure is raised as.
    """

    def __init__(
        self, target: Target, timeout: float = 10.0, *, error: type[GeneratorError] = ServerError
    ) -> None:
        self.target = target
        self.timeout = float(timeout)
        self.error = error
        if target.protocol == "http":
            import tritonclient.http as httpclient

            self._client: Any = httpclient.InferenceServerClient(
                target.address + target.base_path,
                connection_timeout=self.timeout,
                network_timeout=self.timeout,
            )
        else:
            import tritonclient.grpc as grpcclient

            init_grpc_gevent()
            self._client = grpcclient.InferenceServerClient(target.address)

    def close(self) -> None:
        """Close the connection. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> ServerControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._client is None:
            raise self.error("the control connection to Triton is closed")
        if self.target.protocol == "grpc":
            kwargs.setdefault("client_timeout", self.timeout)
            if method.startswith("get_"):
                kwargs["as_json"] = True
        return _numbers(getattr(self._client, method)(*args, **kwargs))

    def is_live(self) -> bool:
        """Whether the server answers its liveness check (never raises)."""
        try:
            return bool(self._call("is_server_live"))
        except Exception:
            return False

    def is_ready(self) -> bool:
        """Whether the server answers its readiness check: up, and every model it loads ready (never raises)."""
        try:
            return bool(self._call("is_server_ready"))
        except Exception:
            return False

    def check_ready(self) -> dict[str, Any]:
        """Check that the server answers and is ready; return its metadata (``name``, ``version``, ...).

        Raises:
            GeneratorError: (the ``error`` class) The server does not answer or is not ready.
        """
        where = f"Triton at {self.target.url}"
        try:
            metadata = self._call("get_server_metadata")
            ready = self._call("is_server_ready")
        except GeneratorError:
            raise
        except Exception as error:
            raise self.error(f"cannot reach {where} ({_reason(error)}); {_START_HINT}") from error
        if not ready:
            raise self.error(f"{where} answers but is not ready (models still loading?); retry in a moment")
        return dict(metadata)

    def model(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return the metadata and the config of a ready model.

        Raises:
            GeneratorError: (the ``error`` class) The model is unknown or not ready; the message lists the
                models that are.
        """
        try:
            ready = bool(self._call("is_model_ready", name))
        except Exception as error:
            raise self.error(
                f"cannot ask Triton at {self.target.url} about model '{name}' ({_reason(error)})"
            ) from error
        if not ready:
            served = self.ready_models()
            listing = ", ".join(served) if served else "none"
            raise self.error(
                f"model '{name}' is not ready on Triton at {self.target.url} (ready models: {listing}); "
                "check --model"
            )
        try:
            metadata = self._call("get_model_metadata", name)
        except Exception as error:
            raise self.error(f"cannot read model '{name}' from Triton ({_reason(error)})") from error
        return dict(metadata), self.config(name)

    def config(self, name: str) -> dict[str, Any]:
        """The config Triton serves a model with, as its JSON (the same over HTTP and gRPC).

        Raises:
            GeneratorError: (the ``error`` class) The config cannot be read (an unknown model, an
                unreachable server).
        """
        try:
            config = self._call("get_model_config", name)
        except Exception as error:
            raise self.error(
                f"cannot read the config of model '{name}' from Triton ({_reason(error)})"
            ) from error
        if self.target.protocol == "grpc":
            config = config.get("config", config)
        return dict(config)

    def load(self, name: str, config: str | None = None) -> None:
        """Load (or reload) a model through Triton's model control, optionally with a config of its own.

        A load that carries a config always reloads, even when the model's files are unchanged.

        Args:
            name: The model, as the repository names it.
            config: Model config JSON that replaces the repository's ``config.pbtxt`` for this load (the
                model's files still come from the repository), or None for the repository's own.

        Raises:
            GeneratorError: (the ``error`` class) Triton refused or failed the load; the message carries
                Triton's reason.
        """
        try:
            self._call("load_model", name, config=config)
        except Exception as error:
            raise self.error(f"Triton did not load model '{name}': {_reason(error)}") from error

    def unload(self, name: str) -> None:
        """Unload a model (not the models it depends on).

        Raises:
            GeneratorError: (the ``error`` class) Triton refused the unload.
        """
        try:
            self._call("unload_model", name)
        except Exception as error:
            raise self.error(f"Triton did not unload model '{name}': {_reason(error)}") from error

    def index(self) -> list[dict[str, Any]]:
        """The repository index: one entry per model (version) Triton knows, loaded or not.

        Returns:
            Entries with ``name``, and where Triton gives them ``version``, ``state`` (``READY``,
            ``LOADING``, ``UNLOADING``, ``UNAVAILABLE``) and ``reason``.

        Raises:
            GeneratorError: (the ``error`` class) The index could not be read.
        """
        try:
            index = self._call("get_model_repository_index")
        except Exception as error:
            raise self.error(
                f"cannot read the repository index of Triton at {self.target.url} ({_reason(error)})"
            ) from error
        entries = index.get("models", []) if isinstance(index, dict) else index
        return list(entries or [])

    def ready_models(self) -> list[str]:
        """Names of the models the server reports READY (empty when it cannot say)."""
        try:
            entries = self.index()
        except GeneratorError:
            return []
        return sorted({e["name"] for e in entries if e.get("state", "READY") == "READY" and "name" in e})

    def statistics(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Triton's cumulative inference statistics per model, summed over the model's versions.

        Several models are read in one call (Triton's statistics of every model), so their figures are
        taken at the same moment: an ensemble's steps and the ensemble agree on what they served.

        Returns:
            ``{model: {"inference_count", "execution_count", "success_count", "success_ns", "queue_count",
            "queue_ns", "compute_input_count", ..., "fail_count", "cache_hit_count", "cache_miss_count"}}``.

        Raises:
            GeneratorError: (the ``error`` class) The statistics could not be read, or have no entry for a
                model.
        """
        if not names:
            return {}
        asked = names[0] if len(names) == 1 else ""
        try:
            payload = self._call("get_inference_statistics", asked)
        except Exception as error:
            raise self.error(
                f"cannot read Triton's statistics for '{asked or ', '.join(names)}' ({_reason(error)})"
            ) from error
        entries: dict[str, list[dict[str, Any]]] = {}
        for entry in payload.get("model_stats", []):
            entries.setdefault(str(entry.get("name")), []).append(entry)
        missing = [name for name in names if name not in entries]
        if missing:
            raise self.error(
                f"Triton's statistics have no entry for {', '.join(repr(n) for n in missing)}; is it still loaded?"
            )
        return {name: _sum_versions(entries[name]) for name in names}


_STAT_KEYS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


def _sum_versions(entries: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {"inference_count": 0, "execution_count": 0}
    for key in _STAT_KEYS:
        totals[f"{key}_count"] = 0
        totals[f"{key}_ns"] = 0
    for entry in entries:
        totals["inference_count"] += int(entry.get("inference_count", 0))
        totals["execution_count"] += int(entry.get("execution_count", 0))
        stats = entry.get("inference_stats", {})
        for key in _STAT_KEYS:
            item = stats.get(key, {})
            totals[f"{key}_count"] += int(item.get("count", 0))
            totals[f"{key}_ns"] += int(item.get("ns", 0))
    return totals


_NUMERIC_KEYS = frozenset(
    ("shape", "dims", "count", "ns", "inference_count", "execution_count", "max_batch_size", "batch_size")
)


def _numbers(value: Any, numeric: bool = False) -> Any:
    """gRPC's JSON form writes int64 fields as strings; turn those of the numeric fields back into ints."""
    if isinstance(value, dict):
        return {k: _numbers(v, k in _NUMERIC_KEYS) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, numeric) for v in value]
    if numeric and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "StatusCode.UNAVAILABLE" in text or "Connection refused" in text or "connect" in text.lower():
        return f"nothing answers there: {text}"
    return text
