"""Google Cloud Storage (and its emulators) through google-cloud-storage (the ``gcs`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from generator.core.errors import MissingDependencyError, StorageError
from generator.core.uris import StorageURI
from generator.push.store import RETRY_SECONDS, SHA256_METADATA, Store, reason, under

#: Connect and read timeouts (seconds) of one call to Google Cloud Storage.
_GCS_TIMEOUT = (5, 120)


class GCSStore(Store):
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
            prefix=under(prefix),
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
        return f"could not reach {where} for gs://{bucket} ({reason(error)}); {self._unreachable_fix()}"
