"""Serve's check that a push completed: the manifest (or the marker) is there, before Triton serves a
repository from object storage.
"""

from __future__ import annotations

import os
from typing import Any

from generator.core.errors import MissingDependencyError, StorageError
from generator.core.repository import MANIFEST
from generator.core.uris import S3_ENDPOINT, http_endpoint, parse_uri
from generator.push.registry import LIBRARIES, STORES
from generator.push.store import MARKER


def check_pushed(uri: str, client: Any = None) -> None:
    """Refuse a repository URI whose push did not complete, before Triton serves part of it.

    A push uploads the manifest (or, for a hand-written repository, the marker ``.tritongen-pushed``) last;
    without it, objects under the prefix are what an interrupted push left, and Triton would load
    whichever models happen to be complete. The store is asked through its own library (the same extra as
    push), at the endpoint Triton reads: the one in ``s3://http://HOST:PORT/...``, the GCS emulator of
    ``CLOUD_STORAGE_EMULATOR_ENDPOINT``, Azure's connection string or account. A repository uploaded by
    other means is served once an (empty) ``.tritongen-pushed`` object is put at its root.

    Args:
        uri: The URI Triton loads: what push printed, or any ``s3://``, ``gs://`` or ``as://`` repository.
        client: The library's client to use instead of one made from the environment.

    Raises:
        StorageError: Nothing is under the prefix, the push did not complete, or the store cannot be read
            (unreachable, missing bucket, missing or refused credentials).
        MissingDependencyError: The store's library is not installed (the error names the extra).
    """
    endpoint = S3_ENDPOINT.match(uri)
    if endpoint is not None:
        protocol, host, port = endpoint.groups()
        location = parse_uri(f"s3://{uri[endpoint.end() :]}")
        endpoint_url: str | None = f"{(protocol or 'http').lower()}://{host}:{port}"
        hint = "the endpoint in the URI"
    else:
        location = parse_uri(uri)
        endpoint_url, hint = None, ""
        emulator = os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT")
        if location.scheme == "gs" and emulator:  # Triton reads a GCS emulator from this variable only
            endpoint_url = emulator if "://" in emulator else f"http://{emulator}"
            http_endpoint(endpoint_url, "CLOUD_STORAGE_EMULATOR_ENDPOINT")
            hint = "CLOUD_STORAGE_EMULATOR_ENDPOINT"
        elif location.scheme == "as" and os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            hint = "AZURE_STORAGE_CONNECTION_STRING"
    try:
        store = STORES[location.scheme](location, endpoint_url, client)
    except MissingDependencyError:
        package, extra = LIBRARIES[location.scheme]
        raise MissingDependencyError.for_package(
            package, extra, f"to check that a push to {location.scheme}:// completed before serving it"
        ) from None
    store.endpoint_hint, store.missing_fix = hint, "check the URI"
    shown = uri.rstrip("/")
    try:
        if not store.any_under(location.prefix):
            raise StorageError(f"nothing is stored under {shown}; push the repository there first")
        if store.exists(location.key(MANIFEST)) or store.exists(location.key(MARKER)):
            return
    except store.errors as error:
        raise StorageError(store.describe(error)) from error
    raise StorageError(
        f"the push to {shown} did not complete (neither {MANIFEST} nor {MARKER} is there); push again. "
        f"For a repository uploaded by other means, put an empty object '{MARKER}' at {shown}/ once it is complete"
    )
