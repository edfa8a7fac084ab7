"""Object storage URIs as Triton reads them: parsing, the prefix rules, and the forms each reader takes.

``parse_uri`` splits ``s3://bucket/prefix``, ``gs://bucket/prefix`` and ``as://account/container/prefix``
and refuses a prefix Triton would read back at other keys; ``triton_uri`` gives the ``--model-repository``
value of a pushed prefix (Triton's ``s3://http://HOST:PORT/bucket/prefix`` at a custom S3 endpoint);
``kserve_storage_uri`` gives KServe's ``storageUri``; ``http_endpoint`` checks an ``http(s)://HOST[:PORT]``
endpoint. Push, serve and deploy read these facts from here.

This module imports nothing of the project above the error tree.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from generator.core.errors import StorageError

#: Triton's form of an S3 URI at a custom endpoint: ``s3://[http://|https://]HOST:PORT/bucket/path``.
S3_ENDPOINT = re.compile(r"^s3://(?:(https?)://)?([0-9A-Za-z.\-]+):([0-9]+)/", re.IGNORECASE)
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


def triton_uri(location: StorageURI, key_prefix: str, endpoint_url: str | None = None) -> str:
    """The ``--model-repository`` value for a prefix.

    S3 at a custom endpoint takes Triton's own form ``s3://http://HOST:PORT/bucket/prefix``; GCS and Azure
    have no endpoint in their URIs (Triton reads a GCS emulator from ``CLOUD_STORAGE_EMULATOR_ENDPOINT``).
    """
    if location.scheme == "as":
        return f"as://{location.account}/{location.bucket}/{key_prefix}".rstrip("/")
    if location.scheme == "gs" or endpoint_url is None:
        return f"{location.scheme}://{location.bucket}/{key_prefix}".rstrip("/")
    endpoint = http_endpoint(endpoint_url)
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


def http_endpoint(endpoint_url: str, source: str = "--endpoint-url") -> urllib.parse.SplitResult:
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
