"""Push a built model repository to object storage under a content-addressed prefix.

``push(directory, "s3://bucket/prefix")`` uploads the repository to ``s3://bucket/prefix/<digest>/``,
where ``<digest>`` hashes every file's path and SHA-256 (the build manifest's hashes where it records a
file, the file's own bytes otherwise). A new build therefore lands beside the old one instead of over it,
and a fleet pointed at one digest never sees a half-written repository: the manifest (or, for a
hand-written repository, a marker object) is uploaded last, so its presence means the push completed.
Objects already there with the same size and SHA-256 are skipped: pushing an unchanged repository again
uploads nothing.

The returned URI is the one Triton loads (``--model-repository``): for an S3-compatible store at a custom
endpoint, Triton's own form ``s3://http://HOST:PORT/bucket/prefix/<digest>``. Credentials come from the
usual AWS sources (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.errors import MissingDependencyError, StorageError
from generator.repository import MANIFEST, sha256_file

logger = logging.getLogger(__name__)

#: Uploaded last when the repository has no build manifest: its presence means the push completed.
MARKER = ".tritongen-pushed"
#: Hex characters of the repository digest used in the prefix (64 bits).
DIGEST_CHARS = 16
#: Object metadata key holding a file's SHA-256.
SHA256_METADATA = "sha256"
#: Left out of a push: written by a server that imported a Python model, not by the build.
_SKIPPED_DIRS = {"__pycache__"}


@dataclass(frozen=True)
class StorageURI:
    """A parsed object storage URI: ``s3://bucket/prefix``."""

    scheme: str
    bucket: str
    prefix: str

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
    """

    uri: str
    digest: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Upload:
    relative: str
    body: Path | bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.body) if isinstance(self.body, bytes) else self.body.stat().st_size


_EXTRA_OF = {
    "gs": ("google-cloud-storage", "gcloud storage cp -r"),
    "as": ("azure-storage-blob", "azcopy copy"),
}


def parse_uri(uri: str) -> StorageURI:
    """Split ``s3://bucket/prefix`` (``gs://``, ``as://`` too) into scheme, bucket and prefix.

    Raises:
        StorageError: Not such a URI, or no bucket.
    """
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme == "az":
        scheme = "as"
    if scheme not in ("s3", "gs", "as") or "://" not in uri:
        raise StorageError(
            f"'{uri}' is not an object storage URI; give s3://bucket/prefix "
            "(or gs://bucket/prefix, as://account/container/prefix)"
        )
    if not parsed.netloc or parsed.query or parsed.fragment:
        raise StorageError(f"'{uri}' names no bucket; give {scheme}://bucket/prefix")
    return StorageURI(scheme, parsed.netloc, parsed.path.strip("/"))


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
    """The ``--model-repository`` value for a prefix: with an endpoint, Triton's ``s3://http://HOST:PORT/``."""
    if endpoint_url is None:
        return f"{location.scheme}://{location.bucket}/{key_prefix}"
    endpoint = urllib.parse.urlsplit(endpoint_url)
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
        raise StorageError(f"--endpoint-url '{endpoint_url}' is not an http(s)://HOST[:PORT] address")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    return f"s3://{endpoint.scheme}://{endpoint.hostname}:{port}/{location.bucket}/{key_prefix}"


def _s3_client(endpoint_url: str | None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as error:
        raise MissingDependencyError.for_package("boto3", "s3", "to push to s3://") from error
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _describe(error: Exception, location: StorageURI, endpoint_url: str | None) -> str:
    """A one-line reason for a failed S3 call, with what to check."""
    where = endpoint_url or "AWS S3"
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
    if code in ("NoSuchBucket", "404"):
        return f"the bucket '{location.bucket}' does not exist at {where}; create it first"
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (
            f"access to s3://{location.bucket} was refused ({code}); "
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"could not reach {where} for s3://{location.bucket} ({reason}); check --endpoint-url and the network"
    )


def _existing(client: Any, location: StorageURI, prefix: str) -> dict[str, int]:
    """Objects already under ``prefix/`` (key -> size)."""
    found: dict[str, int] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=location.bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            found[item["Key"]] = int(item["Size"])
    return found


def _s3_errors() -> tuple[type[Exception], ...]:
    """What boto3 raises for a store that refuses or cannot be reached."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (Boto3Error, BotoCoreError, ClientError)


def _same_object(client: Any, bucket: str, key: str, sha256: str) -> bool:
    head = client.head_object(Bucket=bucket, Key=key)
    return head.get("Metadata", {}).get(SHA256_METADATA) == sha256


def _upload(client: Any, bucket: str, key: str, body: Path | bytes, sha256: str) -> None:
    extra = {"Metadata": {SHA256_METADATA: sha256}}
    if isinstance(body, bytes):
        client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    else:
        client.upload_file(str(body), bucket, key, ExtraArgs=extra)


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


def _unsupported(location: StorageURI, digest: str) -> StorageError:
    package, command = _EXTRA_OF[location.scheme]
    target = f"{location.scheme}://{location.bucket}/{location.key(digest)}"
    return StorageError(
        f"push supports s3:// only ({package} uploads are not implemented); "
        f"copy the directory with `{command} DIR/* {target}/` and serve {target}"
    )


def push(
    directory: str | Path,
    uri: str,
    endpoint_url: str | None = None,
    client: Any = None,
) -> PushResult:
    """Upload a model repository to ``uri/<digest>/`` and return the URI Triton loads.

    Args:
        directory: The model repository (as ``build`` wrote it, or hand-written).
        uri: ``s3://bucket/prefix`` (the prefix may be empty).
        endpoint_url: An S3-compatible endpoint (``http://127.0.0.1:9000``); ``None`` for AWS, or the
            endpoint boto3 itself would take from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (so
            that the printed URI names it for Triton too).
        client: A boto3 S3 client to use instead of one made from the environment.

    Returns:
        The served URI, the digest, and the keys uploaded and skipped.

    Raises:
        StorageError: A bad URI or directory, or the store refused or could not be reached.
        MissingDependencyError: boto3 is not installed.
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
    if location.scheme != "s3":
        raise _unsupported(location, digest)
    prefix = location.key(digest)
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    result = PushResult(uri=triton_uri(location, prefix, endpoint_url), digest=digest)
    client = client if client is not None else _s3_client(endpoint_url)
    try:
        existing = _existing(client, location, prefix)
        for upload in _uploads(root, hashes, empty_dirs, digest):
            key = f"{prefix}/{upload.relative}"
            if existing.get(key) == upload.size and _same_object(client, location.bucket, key, upload.sha256):
                result.skipped.append(key)
                continue
            _upload(client, location.bucket, key, upload.body, upload.sha256)
            result.uploaded.append(key)
    except _s3_errors() as error:
        raise StorageError(_describe(error, location, endpoint_url)) from error
    logger.info(
        "pushed %s to %s: %d uploaded, %d already there",
        root,
        result.uri,
        len(result.uploaded),
        len(result.skipped),
    )
    return result
