"""The object store behaves the same on a local folder and on a real S3-compatible server."""

import boto3
import pytest

from astrid_assets.io.object_store import LocalObjectStore, ObjectStoreError, S3ObjectStore


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.integration)])
def store(request, tmp_path):
    if request.param == "folder":
        return LocalObjectStore(tmp_path / "objects")
    request.getfixturevalue("s3_endpoint")
    bucket = f"astrid-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return S3ObjectStore(f"s3://{bucket}/prefix")


def test_put_get_list_delete(store):
    store.put("raw/2024-01-02/a.fits", b"alpha")
    store.put("raw/2024-01-02/b.fits", b"beta")
    store.put("raw/2024-01-03/c.fits", b"gamma")
    assert store.get("raw/2024-01-02/b.fits") == b"beta"
    assert store.list("raw/2024-01-02/") == ["raw/2024-01-02/a.fits", "raw/2024-01-02/b.fits"]
    store.delete(["raw/2024-01-02/a.fits"])
    assert store.list("raw/") == ["raw/2024-01-02/b.fits", "raw/2024-01-03/c.fits"]
    with pytest.raises(KeyError, match="a.fits"):
        store.get("raw/2024-01-02/a.fits")


def test_versioned_keys_are_content_addressed_and_prune_keeps_the_named(store):
    first = store.put_versioned("cal/n/frame.fits", b"v1")
    assert store.put_versioned("cal/n/frame.fits", b"v1") == first
    second = store.put_versioned("cal/n/frame.fits", b"v2")
    assert second != first and second.endswith(".fits")
    assert store.get(first) == b"v1"  # the earlier version is untouched until pruned
    assert store.prune("cal/n/", keep={second}) == [first]
    assert store.list("cal/n/") == [second]


def test_local_store_leaves_no_partial_file_when_a_write_fails(tmp_path, monkeypatch):
    store = LocalObjectStore(tmp_path)
    store.put("x/frame.fits", b"good")

    def broken_replace(*_args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        store.put("x/frame.fits", b"half-written")
    monkeypatch.undo()
    assert store.get("x/frame.fits") == b"good"
    assert store.list("x/") == ["x/frame.fits"]


def test_unreachable_s3_fails_cleanly_without_credentials_in_the_message(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETLOOKING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3ObjectStore("s3://bucket/prefix", max_attempts=2, connect_timeout=0.5)
    with pytest.raises(ObjectStoreError) as failure:
        store.put("a/b.fits", b"x")
    message = str(failure.value)
    assert "put_object 'a/b.fits' in s3://bucket/prefix failed" in message
    assert "very-secret-value" not in message and "AKIDSECRETLOOKING" not in message
