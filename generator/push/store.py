"""The store interface push and serve's check call on one bucket (or Azure container), and what every
store shares: the metadata key of a file's SHA-256, the completion marker, the retry budget.

Each store (:mod:`generator.push.s3`, :mod:`generator.push.gcs`, :mod:`generator.push.azure`) implements
:class:`Store` over its own library, imported when the store is made.
"""

from __future__ import annotations

from pathlib import Path

#: Uploaded last when the repository has no build manifest: its presence means the push completed.
MARKER = ".tritongen-pushed"
#: Object metadata key holding a file's SHA-256.
SHA256_METADATA = "sha256"
#: Seconds a store's library keeps retrying a failed call before push reports it.
RETRY_SECONDS = 15


def under(prefix: str) -> str:
    """The listing prefix of the objects under ``prefix`` (every object of the bucket for ``""``)."""
    return f"{prefix}/" if prefix else ""


def reason(error: Exception) -> str:
    """The first line of a library's error (at most 200 characters), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


class Store:
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
