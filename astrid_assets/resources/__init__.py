"""Dagster resources: the object store, the survey sources and their settings.

Every secret comes from the environment (see :mod:`astrid_assets.settings`); nothing here holds one.
"""

from dagster import ConfigurableResource, resource
from dagster_mlflow import mlflow_tracking

from astrid_assets import settings
from astrid_assets.io.object_store import ObjectStore, open_object_store
from astrid_assets.testing.simulate import SurveyConfig


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


class ModelRegistryResource(ConfigurableResource):
    """The MLflow tracking server and model registry (``MLFLOW_TRACKING_URI`` or a local store)."""

    tracking_uri: str | None = None

    def uri(self) -> str:
        return self.tracking_uri or settings.mlflow_tracking_uri()

    def client(self):
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        return mlflow.MlflowClient(self.uri())

    def aliases(self) -> dict[str, str]:
        """Every alias of the registered U-Net → its registry version (empty before the first version)."""
        from astrid_assets.registry import registered_aliases

        return registered_aliases(self.client())

    def champion_version(self, instrument: str | None = None) -> str | None:
        """Registry version of the champion that scores ``instrument``'s frames: under ``champion-<slug>``
        when that alias exists, else under ``champion``; None when neither does. No instrument: ``champion``."""
        from astrid_assets.registry import choose_alias

        aliases = self.aliases()
        alias = choose_alias(instrument, aliases)
        return aliases[alias] if alias is not None else None

    def load_version(self, version: str):
        """The U-Net of registry ``version`` (on the CPU)."""
        import mlflow.pytorch

        from astrid_assets.registry import MODEL_NAME

        self.client()  # sets the tracking URI that the model URI resolves against
        return mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/{version}", map_location="cpu")

    def load_alias(self, alias: str):
        """(model, registry version) under ``alias`` exactly, or (None, None) when no version holds it."""
        from astrid_assets.registry import version_by_alias

        version = version_by_alias(self.client(), alias)
        return (None, None) if version is None else (self.load_version(version), version)

    def load_champion(self, instrument: str | None = None):
        """(model, registry version) of the champion for ``instrument`` (see :meth:`champion_version`), or
        (None, None) when there is none."""
        version = self.champion_version(instrument)
        return (None, None) if version is None else (self.load_version(version), version)

    def operating_threshold(self, version: str) -> float:
        """The real/bogus probability threshold recorded with registry ``version`` (0.5 when none is)."""
        from astrid_assets.registry import version_threshold

        return version_threshold(self.client(), version)


def prepare_experiment(tracking_uri: str, name: str) -> None:
    """Create the experiment with its artifacts under ``ASTRID_HOME`` on the embedded SQLite store.

    (MLflow would otherwise put a local store's artifacts in ``./mlruns`` of the working folder.)
    A tracking server decides its own artifact location.
    """
    if not tracking_uri.startswith("sqlite:"):
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=settings.mlflow_local_artifacts())


@resource(config_schema=mlflow_tracking.config_schema, description=mlflow_tracking.description)
def mlflow_run(context):
    """dagster-mlflow's ``mlflow_tracking`` run, with the embedded store's experiment prepared first."""
    config = context.resource_config
    prepare_experiment(config.get("mlflow_tracking_uri") or settings.mlflow_tracking_uri(), config["experiment_name"])
    yield from mlflow_tracking.resource_fn(context)
