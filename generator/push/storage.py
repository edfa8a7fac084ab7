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
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.core.errors import MissingDependencyError, StorageError
from generator.core.repository import MANIFEST, sha256_file
from generator.core.triton import S3_ENDPOINT

logger = logging.getLogger(__name__)

#: Uploaded last when the repository has no build manifest: its presence means the push completed.
MARKER = ".tritongen-pushed"
#: Hex characters of the repository digest used in the prefix (64 bits).
DIGEST_CHARS = 16
#: Object metadata key holding a file's SHA-256.
SHA256_METADATA = "sha256"
#: Objects checked and uploaded at once by default (the manifest is always uploaded last, alone).
DEFAULT_JOBS = 8
#: Seconds a store's library keeps retrying a failed call before push reports it.
RETRY_SECONDS = 15
#: Connect and read timeouts (seconds) of one call to Google Cloud Storage.
_GCS_TIMEOUT = (5, 120)
#: Azure's client gives up connecting after 5 s (its own retry policy is set in ``_azure_options``).
_AZURE_TIMEOUTS = {"connection_timeout": 5, "read_timeout": 120}
#: Bucket names S3 and GCS accept (S3 allows 3-63 characters without '_'; GCS up to 222, '_' too).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
#: S3's own rule, which Triton's S3 path pattern follows (no '_').
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: One name of a prefix Triton reads back: its S3 path pattern takes these characters only, and its
#: parsers collapse '//' and would read '.' and '..' as other keys than the ones pushed.
_PREFIX_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
#: A host Triton's S3 path pattern takes in ``s3://http://HOST:PORT/...`` (a name or an IPv4 address).
_S3_HOST = re.compile(r"^[0-9A-Za-z.-]+$")
_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZURE_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
#: Left out of a push: written by a server that imported a Python model, not by the build.
_SKIPPED_DIRS = {"__pycache__"}


@dataclass(frozen=True)
class StorageURI:
    """A parsed object storage URI: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``as://account/container/prefix``.

    For Azure the ``bucket`` is the container and ``account`` the storage account.
    """

    scheme: str
    bucket: str
    prefix: str
    account: str = ""

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))


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


def parse_uri(uri: str) -> StorageURI:
    """Split ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``as://account/container/prefix``.

    ``az://`` is taken for ``as://``; an Azure account may be written ``ACCOUNT.blob.core.windows.net``.
    The prefix is what Triton reads back at the same keys: '/'-separated names of ASCII letters, digits,
    ``.``, ``-`` and ``_``, none of them ``.`` or ``..`` (trailing slashes are dropped).

    Raises:
        StorageError: Not such a URI, no bucket (container), or a prefix Triton cannot read back.
    """
    if any(c.isspace() or not c.isprintable() for c in uri):
        raise StorageError(f"{uri!r} holds whitespace or control characters; give the URI alone")
    try:
        scheme = urllib.parse.urlsplit(uri).scheme.lower()
    except ValueError as error:  # e.g. an unclosed '[' (an IPv6 address)
        raise StorageError(f"'{uri}' is not an object storage URI ({error})") from None
    if scheme == "az":
        scheme = "as"
    if scheme not in ("s3", "gs", "as") or not uri[len(scheme) : len(scheme) + 3] == "://":
        raise StorageError(
            f"'{uri}' is not an object storage URI; give s3://bucket/prefix "
            "(or gs://bucket/prefix, as://account/container/prefix)"
        )
    # The text itself, not urlsplit's parts: '?', '#', ';' and '%' are names of a key to refuse, not syntax.
    netloc, _, path = uri[len(scheme) + 3 :].partition("/")
    if not netloc:
        where = "account/container" if scheme == "as" else "bucket"
        raise StorageError(f"'{uri}' names no {where}; give {scheme}://{where}/prefix")
    if scheme != "as":
        if not _BUCKET.match(netloc):
            raise StorageError(
                f"'{netloc}' in '{uri}' is not a bucket name; use 3-222 lowercase letters, digits, '-', '_' "
                "and '.', starting and ending with a letter or digit"
            )
        if scheme == "s3" and not _S3_BUCKET.match(netloc):
            raise StorageError(
                f"'{netloc}' in '{uri}' is not a bucket name; S3 takes 3-63 lowercase letters, digits, '-' "
                "and '.', starting and ending with a letter or digit"
            )
        return StorageURI(scheme, netloc, _prefix(uri, path))
    container, _, prefix = path.partition("/")
    if not container:
        raise StorageError(f"'{uri}' names no container; give as://account/container/prefix")
    account = netloc.removesuffix(".blob.core.windows.net")
    if not _AZURE_ACCOUNT.match(account):
        raise StorageError(
            f"'{account}' in '{uri}' is not an Azure storage account; use 3-24 lowercase letters and digits"
        )
    if not _AZURE_CONTAINER.match(container):
        raise StorageError(
            f"'{container}' in '{uri}' is not an Azure container name; use 3-63 lowercase letters, digits and "
            "single '-', starting and ending with a letter or digit"
        )
    return StorageURI(scheme, container, _prefix(uri, prefix), account=account)


def _prefix(uri: str, path: str) -> str:
    """The prefix of ``uri`` (the path after the bucket or container), checked against what Triton reads.

    Triton's S3 path pattern takes ``(/[0-9a-zA-Z.\\-_]+)*`` after the bucket and its S3 parser collapses
    ``//``; a percent sign, '+' or a non-ASCII letter is kept by one client and escaped or decoded by
    another; ``.`` and ``..`` are resolved by some HTTP layers and not by others. Such a prefix is refused
    rather than pushed where Triton would look elsewhere.

    Raises:
        StorageError: A name of the prefix is not one Triton reads back.
    """
    prefix = path.rstrip("/")
    if not prefix:
        return ""
    for name in prefix.split("/"):
        if not name or name in (".", "..") or not _PREFIX_NAME.match(name):
            shown = name or "//"
            raise StorageError(
                f"'{shown}' in '{uri}' is not a path Triton reads back; a prefix is '/'-separated names of "
                "ASCII letters, digits, '.', '-' and '_' (not '.' or '..', no '//')"
            )
    return prefix


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    """Every file of the repository as (relative POSIX path, path), sorted, caches left out."""
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not _SKIPPED_DIRS.intersection(relative.parts[:-1]):
            yield relative.as_posix(), path


def _empty_dirs(directory: Path) -> list[str]:
    """Directories with no file below them (an ensemble's version directory), relative, sorted."""
    empty = []
    for path in sorted(directory.rglob("*")):
        if path.is_dir() and path.name not in _SKIPPED_DIRS and not any(p.is_file() for p in path.rglob("*")):
            empty.append(path.relative_to(directory).as_posix())
    return empty


def manifest_hashes(directory: Path) -> dict[str, str]:
    """The files the build manifest records (relative path -> sha256); empty when there is no manifest.

    The manifest names each model's ``config.pbtxt`` (``config_sha256``), the files of each version
    directory and the sample files beside the config.
    """
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    hashes: dict[str, str] = {}
    models = data.get("models") if isinstance(data, dict) else None
    for name, model in (models or {}).items():
        if not isinstance(model, dict):
            continue
        if isinstance(model.get("config_sha256"), str):
            hashes[f"{name}/config.pbtxt"] = model["config_sha256"]
        for relative, digest in (model.get("sample_files") or {}).items():
            hashes[f"{name}/{relative}"] = str(digest)
        for version, entry in (model.get("versions") or {}).items():
            for relative, digest in ((entry or {}).get("files") or {}).items():
                hashes[f"{name}/{version}/{relative}"] = str(digest)
    return hashes


def file_hashes(directory: Path) -> dict[str, str]:
    """Every file of the repository (relative path -> sha256): the manifest's hash where it has one."""
    recorded = manifest_hashes(directory)
    return {relative: recorded.get(relative) or sha256_file(path) for relative, path in _files(directory)}


def repository_digest(hashes: dict[str, str], empty_dirs: Sequence[str] = ()) -> str:
    """The content digest of a repository: SHA-256 over its sorted ``path sha256`` lines, shortened.

    The same files give the same digest on any machine; any changed, added or removed file (or empty
    directory) changes it.
    """
    digest = hashlib.sha256()
    for relative in sorted(hashes):
        digest.update(f"{relative}\0{hashes[relative]}\n".encode())
    for relative in empty_dirs:
        digest.update(f"{relative}/\0\n".encode())
    return digest.hexdigest()[:DIGEST_CHARS]


def triton_uri(location: StorageURI, key_prefix: str, endpoint_url: str | None = None) -> str:
    """The ``--model-repository`` value for a prefix.

    S3 at a custom endpoint takes Triton's own form ``s3://http://HOST:PORT/bucket/prefix``; GCS and Azure
    have no endpoint in their URIs (Triton reads a GCS emulator from ``CLOUD_STORAGE_EMULATOR_ENDPOINT``).
    """
    if location.scheme == "as":
        return f"as://{location.account}/{location.bucket}/{key_prefix}".rstrip("/")
    if location.scheme == "gs" or endpoint_url is None:
        return f"{location.scheme}://{location.bucket}/{key_prefix}".rstrip("/")
    endpoint = _http_endpoint(endpoint_url)
    if not _S3_HOST.match(endpoint.hostname or ""):
        raise StorageError(
            f"Triton's s3://{endpoint.scheme}://HOST:PORT/bucket form takes a host name or IPv4 address, not "
            f"'{endpoint.hostname}' (of {endpoint_url}); give the endpoint by a name (localhost) or an IPv4 address"
        )
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    return f"s3://{endpoint.scheme}://{endpoint.hostname}:{port}/{location.bucket}/{key_prefix}"


def kserve_storage_uri(uri: str) -> str:
    """KServe's ``storageUri`` for a URI Triton loads.

    KServe reads ``s3://`` and ``gs://`` as they are; Azure Blob Storage it reads from the blob's https
    address, so ``as://account/container/path`` becomes ``https://account.blob.core.windows.net/container/path``.
    S3 at a custom endpoint (Triton's ``s3://[http://]HOST:PORT/bucket/path``) becomes ``s3://bucket/path``: KServe
    takes the endpoint from its storage secret's ``serving.kserve.io/s3-endpoint`` annotation.

    Raises:
        StorageError: Not an object storage URI.
    """
    endpoint = S3_ENDPOINT.match(uri)
    location = parse_uri(f"s3://{uri[endpoint.end() :]}" if endpoint is not None else uri)
    path = "/".join(p for p in (location.bucket, location.prefix) if p)
    if location.scheme != "as":
        return f"{location.scheme}://{path}"
    return f"https://{location.account}.blob.core.windows.net/{path}"


def _http_endpoint(endpoint_url: str, source: str = "--endpoint-url") -> urllib.parse.SplitResult:
    """``endpoint_url`` split, checked to be ``http(s)://HOST[:PORT]``; ``source`` names where it came from.

    Raises:
        StorageError: Not such an address (an unclosed ``[``, a bad port, no host).
    """
    try:
        endpoint = urllib.parse.urlsplit(endpoint_url)
        host = endpoint.hostname
    except ValueError as error:  # an unclosed '[' of an IPv6 address
        raise StorageError(
            f"{source} '{endpoint_url}' is not an http(s)://HOST[:PORT] address ({error})"
        ) from None
    if endpoint.scheme not in ("http", "https") or not host:
        raise StorageError(f"{source} '{endpoint_url}' is not an http(s)://HOST[:PORT] address")
    try:
        endpoint.port  # noqa: B018 - a bad port raises here
    except ValueError as error:
        raise StorageError(f"{source} '{endpoint_url}' has a bad port ({error})") from None
    return endpoint


def _under(prefix: str) -> str:
    """The listing prefix of the objects under ``prefix`` (every object of the bucket for ``""``)."""
    return f"{prefix}/" if prefix else ""


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class _Store:
    """The calls push and serve's check make on one bucket (or Azure container): list, upload, look an object
    up, and explain a failure."""

    #: What the store's library raises when the store refuses or cannot be reached.
    errors: tuple[type[Exception], ...] = ()
    #: Where the endpoint was given (checked when the store cannot be reached; "" for the cloud's own),
    #: and what to do when the bucket is missing.
    endpoint_hint = "--endpoint-url"
    missing_fix = "create it first"

    def _unreachable_fix(self) -> str:
        return f"check {self.endpoint_hint} and the network" if self.endpoint_hint else "check the network"

    def listing(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        """Objects under ``prefix/``: key -> (size, recorded SHA-256 or ``None`` if the listing has none)."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` is there."""
        raise NotImplementedError

    def any_under(self, prefix: str) -> bool:
        """Whether any object is under ``prefix/`` (the whole bucket for an empty prefix)."""
        raise NotImplementedError

    def recorded_sha256(self, key: str) -> str | None:
        """The SHA-256 recorded on an object, for stores whose listing carries no metadata."""
        return None

    def put(self, key: str, body: Path | bytes, sha256: str) -> None:
        """Upload ``body`` to ``key`` with its SHA-256 in the object's metadata."""
        raise NotImplementedError

    def describe(self, error: Exception) -> str:
        """A one-line reason for a failed call, with what to check."""
        raise NotImplementedError


class _S3Store(_Store):
    def __init__(self, location: StorageURI, endpoint_url: str | None, client: Any = None) -> None:
        try:
            import boto3  # noqa: F401 - the library itself, not only what an earlier import left loaded
            from boto3.exceptions import Boto3Error
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as error:
            raise MissingDependencyError.for_package("boto3", "s3", "to push to s3://") from error
        self.errors = (Boto3Error, BotoCoreError, ClientError)
        self.location, self.endpoint_url = location, endpoint_url
        self.client = client if client is not None else self._client(endpoint_url)

    @staticmethod
    def _client(endpoint_url: str | None) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=60)
        # A session of its own: boto3's default one keeps the credentials it found first, whatever the
        # environment says now.
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)

    def listing(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        found: dict[str, tuple[int, str | None]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=_under(prefix)):
            for item in page.get("Contents", []):
                found[item["Key"]] = (int(item["Size"]), None)  # S3 lists no metadata
        return found

    def recorded_sha256(self, key: str) -> str | None:
        head = self.client.head_object(Bucket=self.location.bucket, Key=key)
        return head.get("Metadata", {}).get(SHA256_METADATA)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def any_under(self, prefix: str) -> bool:
        page = self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=_under(prefix), MaxKeys=1)
        return bool(page.get("Contents"))

    def put(self, key: str, body: Path | bytes, sha256: str) -> None:
        extra = {"Metadata": {SHA256_METADATA: sha256}}
        if isinstance(body, bytes):
            self.client.put_object(Bucket=self.location.bucket, Key=key, Body=body, **extra)
        else:
            self.client.upload_file(str(body), self.location.bucket, key, ExtraArgs=extra)

    def describe(self, error: Exception) -> str:
        from botocore.exceptions import NoCredentialsError

        where, bucket = self.endpoint_url or "AWS S3", self.location.bucket
        if isinstance(error, NoCredentialsError):
            return (
                "no AWS credentials were found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (Triton reads "
                "them too) or AWS_PROFILE"
            )
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            return f"the bucket '{bucket}' does not exist at {where}; {self.missing_fix}"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access to s3://{bucket} was refused ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        return f"could not reach {where} for s3://{bucket} ({_reason(error)}); {self._unreachable_fix()}"


class _GCSStore(_Store):
    """Google Cloud Storage through google-cloud-storage; an endpoint (an emulator) is used anonymously."""

    def __init__(self, location: StorageURI, endpoint_url: str | None, client: Any = None) -> None:
        try:
            import google.cloud.storage  # noqa: F401 - the library itself, not only its dependencies
            from google.api_core.exceptions import GoogleAPIError
            from google.auth.exceptions import GoogleAuthError
            from requests.exceptions import RequestException
        except ImportError as error:
            raise MissingDependencyError.for_package(
                "google-cloud-storage", "gcs", "to push to gs://"
            ) from error
        self.errors = (GoogleAPIError, GoogleAuthError, RequestException)
        self.location, self.endpoint_url = location, endpoint_url
        try:
            client = client if client is not None else self._client(endpoint_url)
        except GoogleAuthError as error:
            raise StorageError(self.describe(error)) from error
        self.bucket = client.bucket(location.bucket)
        self.client = client

    @staticmethod
    def _client(endpoint_url: str | None) -> Any:
        from google.cloud import storage

        if endpoint_url is None:
            return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project="tritongen",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint_url},
        )

    def listing(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        blobs = self.client.list_blobs(
            self.location.bucket, prefix=f"{prefix}/", timeout=_GCS_TIMEOUT, retry=self._retry()
        )
        return {
            blob.name: (int(blob.size or 0), (blob.metadata or {}).get(SHA256_METADATA)) for blob in blobs
        }

    def exists(self, key: str) -> bool:
        return bool(self.bucket.blob(key).exists(timeout=_GCS_TIMEOUT, retry=self._retry()))

    def any_under(self, prefix: str) -> bool:
        blobs = self.client.list_blobs(
            self.location.bucket,
            prefix=_under(prefix),
            max_results=1,
            timeout=_GCS_TIMEOUT,
            retry=self._retry(),
        )
        return next(iter(blobs), None) is not None

    def put(self, key: str, body: Path | bytes, sha256: str) -> None:
        blob = self.bucket.blob(key)
        blob.metadata = {SHA256_METADATA: sha256}
        options = {
            "content_type": "application/octet-stream",
            "timeout": _GCS_TIMEOUT,
            "retry": self._retry(),
        }
        if isinstance(body, bytes):
            blob.upload_from_string(body, **options)
        else:
            blob.upload_from_filename(str(body), **options)

    @staticmethod
    def _retry() -> Any:
        """The library's retry policy, cut from 120 s to :data:`RETRY_SECONDS` so a dead store fails soon."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(RETRY_SECONDS)

    def describe(self, error: Exception) -> str:
        from google.api_core.exceptions import Forbidden, NotFound, Unauthorized
        from google.auth.exceptions import DefaultCredentialsError

        where, bucket = self.endpoint_url or "Google Cloud Storage", self.location.bucket
        if isinstance(error, DefaultCredentialsError):
            return (
                "no Google credentials were found; set GOOGLE_APPLICATION_CREDENTIALS to a service-account key "
                "file or run `gcloud auth application-default login`"
            )
        if isinstance(error, NotFound):
            return f"the bucket '{bucket}' does not exist at {where}; {self.missing_fix}"
        if isinstance(error, (Forbidden, Unauthorized)):
            return f"access to gs://{bucket} was refused; check GOOGLE_APPLICATION_CREDENTIALS and the bucket's IAM"
        return f"could not reach {where} for gs://{bucket} ({_reason(error)}); {self._unreachable_fix()}"


class _AzureStore(_Store):
    """Azure Blob Storage through azure-storage-blob; the bucket of the URI is the container."""

    def __init__(self, location: StorageURI, endpoint_url: str | None, client: Any = None) -> None:
        try:
            import azure.storage.blob  # noqa: F401 - the library itself, not only azure-core
            from azure.core.exceptions import AzureError
        except ImportError as error:
            raise MissingDependencyError.for_package(
                "azure-storage-blob", "azure", "to push to as://"
            ) from error
        self.errors = (AzureError,)
        self.location = location
        self.account_url = endpoint_url or f"https://{location.account}.blob.core.windows.net"
        service = client if client is not None else self._client(location, endpoint_url)
        if getattr(service, "primary_hostname", None):  # the connection string's endpoint; not .url (a SAS)
            self.account_url = f"{service.scheme}://{service.primary_hostname}"
        self.container = service.get_container_client(location.bucket)

    @staticmethod
    def _client(location: StorageURI, endpoint_url: str | None) -> Any:
        from azure.storage.blob import BlobServiceClient

        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection_string and endpoint_url is None:
            try:
                return BlobServiceClient.from_connection_string(connection_string, **_azure_options())
            except ValueError as error:
                raise StorageError(
                    f"AZURE_STORAGE_CONNECTION_STRING is not a connection string ({error})"
                ) from error
        account_url = endpoint_url or f"https://{location.account}.blob.core.windows.net"
        return BlobServiceClient(
            account_url, credential=_azure_credential(location.account), **_azure_options()
        )

    def listing(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        return {
            blob.name: (int(blob.size or 0), (blob.metadata or {}).get(SHA256_METADATA))
            for blob in self.container.list_blobs(name_starts_with=f"{prefix}/", include=["metadata"])
        }

    def exists(self, key: str) -> bool:
        return bool(self.container.get_blob_client(key).exists())

    def any_under(self, prefix: str) -> bool:
        blobs = self.container.list_blobs(name_starts_with=_under(prefix) or None, results_per_page=1)
        return next(iter(blobs), None) is not None

    def put(self, key: str, body: Path | bytes, sha256: str) -> None:
        metadata = {SHA256_METADATA: sha256}
        if isinstance(body, bytes):
            self.container.upload_blob(key, body, overwrite=True, metadata=metadata)
            return
        with body.open("rb") as stream:
            self.container.upload_blob(key, stream, overwrite=True, metadata=metadata, max_concurrency=4)

    def describe(self, error: Exception) -> str:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            ResourceNotFoundError,
            ServiceRequestError,
        )

        container, where = self.location.bucket, self.account_url
        if isinstance(error, ResourceNotFoundError):
            return f"the container '{container}' does not exist at {where}; {self.missing_fix}"
        if isinstance(error, ClientAuthenticationError) or getattr(error, "status_code", None) in (401, 403):
            return (
                f"access to container '{container}' at {where} was refused; check AZURE_STORAGE_KEY "
                "(or AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN)"
            )
        if isinstance(error, ServiceRequestError):
            return f"could not reach {where} ({_reason(error)}); {self._unreachable_fix()}"
        return f"Azure refused the push to container '{container}' at {where} ({_reason(error)})"


def _azure_options() -> dict[str, Any]:
    """Timeouts, and 3 retries 1, 3 and 5 s apart rather than the library's 10 from 15 s up (minutes)."""
    from azure.storage.blob import ExponentialRetry

    retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3)
    return {"retry_policy": retry, **_AZURE_TIMEOUTS}


def _azure_credential(account: str) -> Any:
    """The credential for an account: its key, a SAS token, or Azure's default chain where installed.

    Raises:
        StorageError: None of these is there.
    """
    key = os.environ.get("AZURE_STORAGE_KEY")
    if key:
        return {"account_name": os.environ.get("AZURE_STORAGE_ACCOUNT") or account, "account_key": key}
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        return sas
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        # Azure takes no anonymous writes: say what to set rather than fail after the client's retries.
        raise StorageError(
            "no Azure credentials were found; set AZURE_STORAGE_KEY (the account key, which Triton reads too), "
            "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_SAS_TOKEN, or install azure-identity"
        ) from None
    return DefaultAzureCredential()


_STORES: dict[str, type[_Store]] = {"s3": _S3Store, "gs": _GCSStore, "as": _AzureStore}
#: Each store's library and the extra that installs it.
_LIBRARIES = {
    "s3": ("boto3", "s3"),
    "gs": ("google-cloud-storage", "gcs"),
    "as": ("azure-storage-blob", "azure"),
}


def _endpoint(scheme: str, endpoint_url: str | None) -> str | None:
    """The endpoint given, or the one the store's own tools would read from the environment."""
    if endpoint_url:
        _http_endpoint(endpoint_url)
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
            _http_endpoint(value, name)
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
    empty_dirs = _empty_dirs(root)
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
    store = _STORES[location.scheme](location, endpoint_url, client)
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
    store: _Store,
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
    store: _Store, existing: dict[str, tuple[int, str | None]], prefix: str, upload: _Upload
) -> tuple[str, bool]:
    """Upload one object unless it is already there; returns its key and whether it was uploaded."""
    key = f"{prefix}/{upload.relative}"
    if _already_there(store, existing.get(key), key, upload):
        return key, False
    store.put(key, upload.body, upload.sha256)
    return key, True


def _already_there(store: _Store, listed: tuple[int, str | None] | None, key: str, upload: _Upload) -> bool:
    """Whether ``key`` already holds the upload: same size and the same recorded SHA-256."""
    if listed is None or listed[0] != upload.size:
        return False
    recorded = listed[1] if listed[1] is not None else store.recorded_sha256(key)
    return recorded == upload.sha256


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
            _http_endpoint(endpoint_url, "CLOUD_STORAGE_EMULATOR_ENDPOINT")
            hint = "CLOUD_STORAGE_EMULATOR_ENDPOINT"
        elif location.scheme == "as" and os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            hint = "AZURE_STORAGE_CONNECTION_STRING"
    try:
        store = _STORES[location.scheme](location, endpoint_url, client)
    except MissingDependencyError:
        package, extra = _LIBRARIES[location.scheme]
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
