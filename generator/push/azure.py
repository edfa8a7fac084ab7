"""Azure Blob Storage (and Azurite) through azure-storage-blob (the ``azure`` extra): the client, its
retries and timeouts, and the credential from Azure's usual variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from generator.core.errors import MissingDependencyError, StorageError
from generator.core.uris import StorageURI
from generator.push.store import SHA256_METADATA, Store, reason, under

#: Azure's client gives up connecting after 5 s (its own retry policy is set in ``_azure_options``).
_AZURE_TIMEOUTS = {"connection_timeout": 5, "read_timeout": 120}


class AzureStore(Store):
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
        blobs = self.container.list_blobs(name_starts_with=under(prefix) or None, results_per_page=1)
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
            return f"could not reach {where} ({reason(error)}); {self._unreachable_fix()}"
        return f"Azure refused the push to container '{container}' at {where} ({reason(error)})"


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
