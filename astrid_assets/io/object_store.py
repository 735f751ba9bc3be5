"""Object store for images, arrays and model weights: a local folder or an S3-compatible bucket.

Keys are ``/``-separated (``<asset>/<partition>/<name>``). One interface, two backends chosen by
the URL alone (``ASTRID_OBJECT_STORE``): a folder path, or ``s3://bucket/prefix`` for AWS S3,
Cloudflare R2 or MinIO, whose endpoint boto3 reads from ``AWS_ENDPOINT_URL_S3`` and whose
credentials come from the standard AWS variables.

Writes are complete-or-absent: the folder backend writes a temporary file and renames it into
place; an S3 ``PutObject`` is atomic. :meth:`ObjectStore.put_versioned` adds a content hash to the
key so that a re-run that writes the same bytes lands on the same key, and a failed run never
overwrites the objects the last good partition points at.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath


class ObjectStoreError(RuntimeError):
    """The object store could not be read or written (the message never carries credentials)."""


class ObjectStore(ABC):
    """Bytes under keys; see the module docstring for the conventions."""

    url: str

    @abstractmethod
    def put(self, key: str, content: bytes) -> str:
        """Store ``content`` at ``key`` atomically; returns the key."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes at ``key``; :class:`KeyError` naming the key if absent."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, sorted."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove ``keys`` (absent keys are ignored)."""

    def exists(self, key: str) -> bool:
        return key in self.list(key)

    def put_versioned(self, key: str, content: bytes) -> str:
        """Store under ``<stem>.<sha256[:12]><suffix>``: same bytes, same key; returns the key."""
        path = PurePosixPath(key)
        digest = hashlib.sha256(content).hexdigest()[:12]
        return self.put(str(path.with_name(f"{path.stem}.{digest}{path.suffix}")), content)

    def prune(self, prefix: str, keep: set[str]) -> list[str]:
        """Delete the keys under ``prefix`` that are not in ``keep``; returns what was deleted."""
        stale = [key for key in self.list(prefix) if key not in keep]
        self.delete(stale)
        return stale


class LocalObjectStore(ObjectStore):
    """A folder on a local or shared file system."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"object key {key!r} escapes the store root")
        return path

    def put(self, key: str, content: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no object {key!r} in {self.url}") from None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        folder = base if base.is_dir() else base.parent
        if not folder.exists():
            return []
        keys = (
            str(path.relative_to(self.root).as_posix())
            for path in folder.rglob("*")
            if path.is_file() and not path.name.startswith(".tmp-")
        )
        return sorted(key for key in keys if key.startswith(prefix))

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)


class S3ObjectStore(ObjectStore):
    """An S3-compatible bucket (AWS S3, Cloudflare R2, MinIO) through boto3.

    Checksums are computed only when an operation requires them
    (``request_checksum_calculation="when_required"``): boto3 ≥ 1.36 otherwise sends CRC
    checksum headers by default, which Cloudflare R2 rejected. Transient errors are retried
    with boto3's standard exponential backoff (``max_attempts``), then raised as
    :class:`ObjectStoreError`.
    """

    def __init__(self, url: str, max_attempts: int = 5, connect_timeout: float = 5.0):
        import boto3
        from botocore.config import Config

        bucket_and_prefix = url.removeprefix("s3://")
        self.bucket, _, prefix = bucket_and_prefix.partition("/")
        self.prefix = prefix.strip("/")
        self.url = url
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=30,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # Endpoint (AWS_ENDPOINT_URL_S3), region and credentials come from boto3's own
        # environment variables, so R2, MinIO and AWS need no code change.
        self.client = boto3.client("s3", config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, action: str, key: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, action)(Bucket=self.bucket, **kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404"}:
                raise KeyError(f"no object {key!r} in {self.url}") from None
            raise ObjectStoreError(f"object store: {action} {key!r} in {self.url} failed: {code}") from None
        except BotoCoreError as error:
            raise ObjectStoreError(
                f"object store: {action} {key!r} in {self.url} failed: {type(error).__name__}"
            ) from None

    def put(self, key: str, content: bytes) -> str:
        self._call("put_object", key, Key=self._key(key), Body=content)
        return key

    def get(self, key: str) -> bytes:
        return self._call("get_object", key, Key=self._key(key))["Body"].read()

    def list(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list_objects_v2", prefix, Prefix=self._key(prefix), **extra)
            strip = len(self.prefix) + 1 if self.prefix else 0
            keys += [item["Key"][strip:] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(key)} for key in keys[start : start + 1000]]
            self._call("delete_objects", "(batch)", Delete={"Objects": batch, "Quiet": True})


def open_object_store(url: str) -> ObjectStore:
    """The store a URL names: ``s3://bucket/prefix`` or a folder path."""
    return S3ObjectStore(url) if url.startswith("s3://") else LocalObjectStore(url)
