"""The server's control plane over tritonclient: health, metadata, model config, statistics.

One class, :class:`ServerControl`, speaks HTTP or gRPC (whichever the test loads, so a gRPC-only endpoint
works) and returns plain JSON-like dicts with numbers as numbers (gRPC's JSON form writes 64-bit integers as
strings; they are converted here). Every failure becomes a :class:`LoadTestError` that says what to do.
"""

from __future__ import annotations

import logging
from typing import Any

from generator.core.errors import LoadTestError
from generator.loadtest.target import Target

__all__ = ["ServerControl", "init_grpc_gevent"]

logger = logging.getLogger(__name__)

_grpc_gevent_ready = False

_START_HINT = (
    "start it (python -m generator serve) and point the harness at it (--url, or Locust's --host), "
    "or let `loadtest --serve DIR` start one"
)


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


class ServerControl:
    """Control-plane calls to one Triton endpoint.

    Args:
        target: The endpoint (its protocol picks tritonclient.http or tritonclient.grpc).
        timeout: Seconds to wait for connecting and for each answer.
    """

    def __init__(self, target: Target, timeout: float = 10.0) -> None:
        self.target = target
        self.timeout = float(timeout)
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
            raise LoadTestError("the control connection to Triton is closed")
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

    def check_ready(self) -> dict[str, Any]:
        """Check that the server answers and is ready; return its metadata (``name``, ``version``, ...).

        Raises:
            LoadTestError: The server does not answer or is not ready.
        """
        where = f"Triton at {self.target.url}"
        try:
            metadata = self._call("get_server_metadata")
            ready = self._call("is_server_ready")
        except LoadTestError:
            raise
        except Exception as error:
            raise LoadTestError(f"cannot reach {where} ({_reason(error)}); {_START_HINT}") from error
        if not ready:
            raise LoadTestError(
                f"{where} answers but is not ready (models still loading?); retry in a moment"
            )
        return dict(metadata)

    def model(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return the metadata and the config of a ready model.

        Raises:
            LoadTestError: The model is unknown or not ready; the message lists the models that are.
        """
        try:
            ready = bool(self._call("is_model_ready", name))
        except Exception as error:
            raise LoadTestError(
                f"cannot ask Triton at {self.target.url} about model '{name}' ({_reason(error)})"
            ) from error
        if not ready:
            served = self.ready_models()
            listing = ", ".join(served) if served else "none"
            raise LoadTestError(
                f"model '{name}' is not ready on Triton at {self.target.url} (ready models: {listing}); "
                "check --model"
            )
        try:
            metadata = self._call("get_model_metadata", name)
        except Exception as error:
            raise LoadTestError(f"cannot read model '{name}' from Triton ({_reason(error)})") from error
        return dict(metadata), self.config(name)

    def config(self, name: str) -> dict[str, Any]:
        """The config Triton serves a model with, as its JSON (the same over HTTP and gRPC).

        Raises:
            LoadTestError: The config cannot be read (an unknown model, an unreachable server).
        """
        try:
            config = self._call("get_model_config", name)
        except Exception as error:
            raise LoadTestError(
                f"cannot read the config of model '{name}' from Triton ({_reason(error)})"
            ) from error
        if self.target.protocol == "grpc":
            config = config.get("config", config)
        return dict(config)

    def load(self, name: str, config: str | None = None) -> None:
        """Load (or reload) a model through Triton's model control, optionally with a config of its own.

        Args:
            name: The model, as the repository names it.
            config: Model config JSON that replaces the repository's ``config.pbtxt`` for this load (the
                model's files still come from the repository), or None for the repository's own.

        Raises:
            LoadTestError: Triton refused or failed the load; the message carries Triton's reason.
        """
        try:
            self._call("load_model", name, config=config)
        except Exception as error:
            raise LoadTestError(f"Triton did not load model '{name}': {_reason(error)}") from error

    def unload(self, name: str) -> None:
        """Unload a model (waits until it is unloaded). Raises :class:`LoadTestError` when Triton refuses."""
        try:
            self._call("unload_model", name)
        except Exception as error:
            raise LoadTestError(f"Triton did not unload model '{name}': {_reason(error)}") from error

    def ready_models(self) -> list[str]:
        """Names of the models the server reports READY (empty when it cannot say)."""
        try:
            index = self._call("get_model_repository_index")
        except Exception:
            return []
        entries = index.get("models", []) if isinstance(index, dict) else index
        return sorted({e["name"] for e in entries if e.get("state", "READY") == "READY" and "name" in e})

    def statistics(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Triton's cumulative inference statistics per model, summed over the model's versions.

        Several models are read in one call (Triton's statistics of every model), so their figures are
        taken at the same moment: an ensemble's steps and the ensemble agree on what they served.

        Returns:
            ``{model: {"inference_count", "execution_count", "success_count", "success_ns", "queue_count",
            "queue_ns", "compute_input_count", ..., "fail_count", "cache_hit_count", "cache_miss_count"}}``.

        Raises:
            LoadTestError: The statistics could not be read, or have no entry for a model.
        """
        if not names:
            return {}
        asked = names[0] if len(names) == 1 else ""
        try:
            payload = self._call("get_inference_statistics", asked)
        except Exception as error:
            raise LoadTestError(
                f"cannot read Triton's statistics for '{asked or ', '.join(names)}' ({_reason(error)})"
            ) from error
        entries: dict[str, list[dict[str, Any]]] = {}
        for entry in payload.get("model_stats", []):
            entries.setdefault(str(entry.get("name")), []).append(entry)
        missing = [name for name in names if name not in entries]
        if missing:
            raise LoadTestError(
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
