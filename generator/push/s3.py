"""Amazon S3 and S3-compatible stores (MinIO, moto, Ceph) through boto3 (the ``s3`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from generator.core.errors import MissingDependencyError
from generator.core.uris import StorageURI
from generator.push.store import SHA256_METADATA, Store, reason, under


class S3Store(Store):
    """Amazon S3 or an S3-compatible store through boto3; a custom endpoint is its ``endpoint_url``."""

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
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=under(prefix)):
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
        page = self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=under(prefix), MaxKeys=1)
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
        return f"could not reach {where} for s3://{bucket} ({reason(error)}); {self._unreachable_fix()}"
