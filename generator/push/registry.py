"""Which store serves each URI scheme, and the library (and extra) it needs."""

from __future__ import annotations

from generator.push.azure import AzureStore
from generator.push.gcs import GCSStore
from generator.push.s3 import S3Store
from generator.push.store import Store

#: URI scheme -> the store that reads and writes it.
STORES: dict[str, type[Store]] = {"s3": S3Store, "gs": GCSStore, "as": AzureStore}
#: Each store's library and the extra that installs it.
LIBRARIES = {
    "s3": ("boto3", "s3"),
    "gs": ("google-cloud-storage", "gcs"),
    "as": ("azure-storage-blob", "azure"),
}
