"""``frame_pool``: the pool a run's nightly steps hand their frames to (:mod:`astrid_assets.pool`).

Chosen by the deployment alone (``ASTRID_POOL``, ``ASTRID_WORKERS``, ``ASTRID_DASK_ADDRESS``); one pool per
run, started at its first use and released when the run ends. Beyond one host — a ``dask`` pool, or a
run launcher that places runs on other machines (``K8sRunLauncher``, ``DockerRunLauncher``) — the run
fails at its start, saying why, unless its tables are in PostgreSQL, its objects in an S3 bucket and
the Dagster instance off SQLite (:func:`astrid_assets.settings.multi_host_problems`).
"""

from __future__ import annotations

from dagster import ConfigurableResource, DagsterInstance, InitResourceContext
from pydantic import PrivateAttr

from astrid_assets import settings
from astrid_assets.pool import FramePool, open_pool


def instance_placement(instance: DagsterInstance | None) -> tuple[str | None, str | None]:
    """Class names of ``instance``'s run launcher and run storage (None where there is no instance)."""
    if instance is None:
        return None, None
    return type(instance.run_launcher).__name__, type(instance.run_storage).__name__


class FramePoolResource(ConfigurableResource):
    """The frame pool of a run; its kind and size come from the environment (see the module docstring)."""

    _pool: FramePool | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        launcher, storage = instance_placement(context.instance)
        settings.require_multi_host_storage(settings.pool_kind(), launcher, storage)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def open(self) -> FramePool:
        """The run's pool, started on first use."""
        if self._pool is None:
            self._pool = open_pool()
        return self._pool
