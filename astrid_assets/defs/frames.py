"""What the per-frame tasks of the nightly steps share in a pool worker (:mod:`astrid_assets.pool`).

A task gets the object store's URL and keys, never arrays: the store is opened once per worker process and
the images every frame of a field needs (its reference, the night's master calibrations) are read once per
worker, not once per frame. Objects under these keys never change (content-addressed or versioned keys).
"""

from __future__ import annotations

import os
from functools import lru_cache

from dagster import AssetExecutionContext

from astrid_assets.io.object_store import ObjectStore, open_object_store
from astrid_assets.pool import FrameOutcome
from astrid_assets.science.frames.files import read_extensions
from astrid_assets.science.pipeline import measure_reference
from astrid_assets.science.products import Reference

#: What boto3 reads from the environment: a store is opened again when any of them changes.
S3_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION")


def frame_store(url: str) -> ObjectStore:
    """The object store at ``url``, opened once per process (again if its S3 settings change)."""
    return _open_store(url, tuple(os.environ.get(name) for name in S3_VARIABLES))


@lru_cache(maxsize=4)
def _open_store(url: str, s3_settings: tuple) -> ObjectStore:
    return open_object_store(url)


@lru_cache(maxsize=2)
def stored_reference(url: str, key: str, measured: bool = False) -> Reference:
    """The reference at ``key`` of the store at ``url``, read once per process (``measured``: with its stars
    and PSF, measured here if it was stored without them)."""
    reference = Reference.from_extensions(read_extensions(frame_store(url).get(key)))
    return measure_reference(reference) if measured else reference


def log_failures(context: AssetExecutionContext, night: str, step: str, outcomes: list[FrameOutcome]) -> None:
    """A warning for each frame whose task failed every attempt (its row says so too)."""
    for outcome in outcomes:
        if not outcome.ok:
            context.log.warning(f"night {night}, {outcome.label}: {step} failed after {outcome.attempts} "
                                f"attempt(s): {outcome.error}")
