"""Push a built model repository to object storage under a content-addressed prefix.

``push(directory, "s3://bucket/prefix")`` uploads the repository to ``s3://bucket/prefix/<digest>/``,
where ``<digest>`` hashes every file's path and SHA-256 (the build manifest's hashes where it records a
file, the file's own bytes otherwise). A new build therefore lands beside the old one instead of over it,
and a fleet pointed at one digest never sees a half-written repository: the manifest (or, for a
hand-written repository, a marker object) is uploaded last, so its presence means the push completed.
Objects already there with the same size and SHA-256 are skipped: pushing an unchanged repository again
uploads nothing.

Three stores, each through its own library (an optional extra): S3 with boto3 (``s3``), Google Cloud
Storage with google-cloud-storage (``gcs``), Azure Blob Storage with azure-storage-blob (``azure``).

The returned URI is the one Triton loads (``--model-repository``): for an S3-compatible store at a custom
endpoint, Triton's own form ``s3://http://HOST:PORT/bucket/prefix/<digest>``; for a GCS emulator the plain
``gs://`` URI, with ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` for Triton's environment in ``PushResult.environment``.
Credentials come from each store's usual sources: AWS's variables and profiles; Google's application default
credentials (``GOOGLE_APPLICATION_CREDENTIALS``); ``AZURE_STORAGE_CONNECTION_STRING``, or
``AZURE_STORAGE_KEY`` (the variable Triton reads too), or ``AZURE_STORAGE_SAS_TOKEN``, or Azure's default
credential chain where ``azure-identity`` is installed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.core.errors import StorageError
from generator.core.repository import MANIFEST
from generator.core.uris import StorageURI, http_endpoint, parse_uri, triton_uri
from generator.push.digest import empty_directories, file_hashes, repository_digest
from generator.push.registry import STORES
from generator.push.store import MARKER, Store

logger = logging.getLogger(__name__)

#: Objects checked and uploaded at once by default (the manifest is always uploaded last, alone).
DEFAULT_JOBS = 8


@dataclass
class PushResult:
    """What a push did.

    Attributes:
        uri: The URI to give Triton (``--model-repository``), the digest's prefix included.
        digest: The repository's content digest (the last part of the prefix).
        uploaded: Keys uploaded by this push.
        skipped: Keys already present with the same content.
        environment: Variables Triton's environment needs to read ``uri`` (a GCS emulator's endpoint).
        notes: What a user should know about serving ``uri`` (Triton reads Azure only from Azure).
    """

    uri: str
    digest: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Upload:
    relative: str
    body: Path | bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.body) if isinstance(self.body, bytes) else self.body.stat().st_size


def _endpoint(scheme: str, endpoint_url: str | None) -> str | None:
    """The endpoint given, or the one the store's own tools would read from the environment."""
    if endpoint_url:
        http_endpoint(endpoint_url)
        return endpoint_url.rstrip("/")
    names = {
        "s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        "gs": ("CLOUD_STORAGE_EMULATOR_ENDPOINT", "STORAGE_EMULATOR_HOST"),
    }.get(scheme, ())
    for name in names:
        value = os.environ.get(name)
        if value:
            if "://" not in value:  # STORAGE_EMULATOR_HOST may be a bare HOST:PORT
                value = f"http://{value}"
            http_endpoint(value, name)
            return value.rstrip("/")
    return None


def _triton_environment(location: StorageURI, endpoint_url: str | None) -> dict[str, str]:
    """What Triton's environment needs to read the pushed URI beyond the usual credentials."""
    if location.scheme == "gs" and endpoint_url:
        return {"CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint_url}
    return {}


def _notes(location: StorageURI, endpoint_url: str | None) -> list[str]:
    if location.scheme == "as" and endpoint_url:
        return [
            f"Triton reads as:// only from https://{location.account}.blob.core.windows.net, "
            f"not from {endpoint_url}"
        ]
    return []


def _uploads(root: Path, hashes: dict[str, str], empty_dirs: list[str], digest: str) -> list[_Upload]:
    """What to upload, in order: the files, the empty directories, then the manifest (or the marker)."""
    last = MANIFEST if MANIFEST in hashes else MARKER
    uploads = [
        _Upload(relative, root / relative, sha) for relative, sha in hashes.items() if relative != last
    ]
    # S3 has no directories: an empty one (an ensemble's version directory) is kept as a "dir/" object.
    uploads += [_Upload(f"{relative}/", b"", hashlib.sha256(b"").hexdigest()) for relative in empty_dirs]
    if last == MANIFEST:
        uploads.append(_Upload(MANIFEST, root / MANIFEST, hashes[MANIFEST]))
    else:
        marker = f"{digest}\n".encode()
        uploads.append(_Upload(MARKER, marker, hashlib.sha256(marker).hexdigest()))
    return uploads


def push(
    directory: str | Path,
    uri: str,
    endpoint_url: str | None = None,
    client: Any = None,
    jobs: int = DEFAULT_JOBS,
) -> PushResult:
    """Upload a model repository to ``uri/<digest>/`` and return the URI Triton loads.

    Args:
        directory: The model repository (as ``build`` wrote it, or hand-written).
        uri: ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``as://account/container/prefix`` (the
            prefix may be empty).
        endpoint_url: Another endpoint than the cloud's own: an S3-compatible store
            (``http://127.0.0.1:9000``), a GCS emulator, or an Azure account URL
            (``http://127.0.0.1:10000/devstoreaccount1``). ``None`` takes the one the store's tools read
            from the environment (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``;
            ``CLOUD_STORAGE_EMULATOR_ENDPOINT``/``STORAGE_EMULATOR_HOST``), so that the result names it
            for Triton too.
        client: The library's client to use instead of one made from the environment (a boto3 S3
            client, a ``google.cloud.storage.Client``, an ``azure.storage.blob.BlobServiceClient``).
        jobs: Objects checked and uploaded at once (the manifest always last, alone).

    Returns:
        The served URI, the digest, and the keys uploaded and skipped.

    Raises:
        StorageError: A bad URI or directory, or the store refused or could not be reached.
        MissingDependencyError: The store's library is not installed (the error names the extra).
    """
    root = Path(directory)
    location = parse_uri(uri)
    if not root.is_dir():
        raise StorageError(f"the model repository {root} does not exist or is not a directory")
    hashes = file_hashes(root)
    if not hashes:
        raise StorageError(f"the model repository {root} has no files; build it first")
    empty_dirs = empty_directories(root)
    digest = repository_digest(hashes, empty_dirs)
    prefix = location.key(digest)
    endpoint_url = _endpoint(location.scheme, endpoint_url)
    result = PushResult(
        uri=triton_uri(location, prefix, endpoint_url),
        digest=digest,
        environment=_triton_environment(location, endpoint_url),
        notes=_notes(location, endpoint_url),
    )
    if jobs < 1:
        raise StorageError(f"--jobs must be at least 1, not {jobs}")
    store = STORES[location.scheme](location, endpoint_url, client)
    *files, last = _uploads(root, hashes, empty_dirs, digest)
    try:
        existing = store.listing(prefix)
        if _complete(store, existing, prefix, files, last):
            outcomes = [(f"{prefix}/{upload.relative}", False) for upload in (*files, last)]
        else:
            send = functools.partial(_send, store, existing, prefix)
            pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="push")
            try:
                outcomes = list(pool.map(send, files))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # a failure stops what has not started
            outcomes.append(send(last))  # the manifest (or marker) once every other object is there
    except store.errors as error:
        raise StorageError(store.describe(error)) from error
    for key, uploaded in outcomes:
        (result.uploaded if uploaded else result.skipped).append(key)
    logger.info(
        "pushed %s to %s: %d uploaded, %d already there",
        root,
        result.uri,
        len(result.uploaded),
        len(result.skipped),
    )
    return result


def _complete(
    store: Store,
    existing: dict[str, tuple[int, str | None]],
    prefix: str,
    files: list[_Upload],
    last: _Upload,
) -> bool:
    """Whether an earlier push of this very repository completed: its last object (the manifest or marker)
    is there with this push's hash, and every other object is listed with its size.

    The prefix is the digest of every file's hash, so those objects hold this content: one check of the last
    object stands for all (S3 then needs one HEAD, not one per object).
    """
    if not _already_there(
        store, existing.get(f"{prefix}/{last.relative}"), f"{prefix}/{last.relative}", last
    ):
        return False
    return all(existing.get(f"{prefix}/{u.relative}", (-1, None))[0] == u.size for u in files)


def _send(
    store: Store, existing: dict[str, tuple[int, str | None]], prefix: str, upload: _Upload
) -> tuple[str, bool]:
    """Upload one object unless it is already there; returns its key and whether it was uploaded."""
    key = f"{prefix}/{upload.relative}"
    if _already_there(store, existing.get(key), key, upload):
        return key, False
    store.put(key, upload.body, upload.sha256)
    return key, True


def _already_there(store: Store, listed: tuple[int, str | None] | None, key: str, upload: _Upload) -> bool:
    """Whether ``key`` already holds the upload: same size and the same recorded SHA-256."""
    if listed is None or listed[0] != upload.size:
        return False
    recorded = listed[1] if listed[1] is not None else store.recorded_sha256(key)
    return recorded == upload.sha256
