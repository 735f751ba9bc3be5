"""Dagster resources: the object store, the database, the survey sources and MLflow.

Every secret comes from the environment (see :mod:`astrid_assets.settings`); nothing here holds one.
MLflow — the tracking run and the model registry (:class:`ModelRegistryResource`, :func:`mlflow_run`) — is in
:mod:`astrid_assets.resources.mlflow_registry`.
"""

from dagster import ConfigurableResource

from astrid_assets import settings
from astrid_assets.io.object_store import ObjectStore, open_object_store
from astrid_assets.resources.mlflow_registry import ModelRegistryResource, mlflow_run, prepare_experiment
from astrid_assets.testing.simulate import SurveyConfig

__all__ = ["DatabaseResource", "ModelRegistryResource", "ObjectStoreResource", "SimulatedSurveyResource",
           "mlflow_run", "prepare_experiment"]


class ObjectStoreResource(ConfigurableResource):
    """Images and weights: ``url`` if set, else ``ASTRID_OBJECT_STORE``, else a local folder."""

    url: str | None = None

    def open(self) -> ObjectStore:
        return open_object_store(self.url or settings.object_store_url())


class SimulatedSurveyResource(ConfigurableResource):
    """Settings of the built-in simulated survey (the offline default source)."""

    seed: int = 2024
    fields: list[str] = ["F01", "F02"]
    frames_per_night: int = 3
    size: int = 512  #: frame side in pixels

    def config(self) -> SurveyConfig:
        return SurveyConfig(
            seed=self.seed,
            fields=tuple(self.fields),
            frames_per_night=self.frames_per_night,
            shape=(self.size, self.size),
        )


class DatabaseResource(ConfigurableResource):
    """Read access to AstrID's tables beyond an asset's own inputs (e.g. a reference window).

    ``url`` if set, else ``ASTRID_DATABASE_URL``, else SQLite under ``ASTRID_HOME`` — the same
    database the table IO manager writes to.
    """

    url: str | None = None

    def resolved_url(self) -> str:
        """The database this resource reads: ``url`` if set, else the configured one."""
        return settings.resolved_database_url(self.url)

    def read_nights(self, table: str, nights: list[str]):
        from astrid_assets.io.tables import read_nights

        return read_nights(table, nights, self.resolved_url())

    def read_night_range(self, table: str, first: str, last: str, **equal):
        """Rows of ``table`` for the nights ``first`` … ``last`` where each ``column=value`` holds."""
        from astrid_assets.io.tables import read_night_range

        return read_night_range(table, first, last, self.resolved_url(), **equal)
