"""The U-Net's place in the MLflow model registry, and the Dagster resources that reach MLflow.

What the aliases mean and when a challenger is promoted is decided without MLflow, in
:mod:`astrid_assets.ml.champions` (:func:`~astrid_assets.ml.champions.champion_alias`,
:func:`~astrid_assets.ml.champions.choose_alias`, :func:`~astrid_assets.ml.champions.judge_promotion`);
this module records those decisions in the registry of :data:`MODEL_NAME`. The version a champion
replaces is recorded on the new champion as the tag ``previous_<alias>`` (``previous_champion``,
``previous_champion-<slug>``) so that :func:`rollback` can restore it. Each version carries the tags
``instruments`` (the ``,``-separated instrument keys it was trained on) and ``operating_threshold``
(chosen by :func:`astrid_assets.ml.metrics.operating_threshold`).

* :class:`ModelRegistryResource` — the tracking server and registry (``MLFLOW_TRACKING_URI`` or a local store);
* :func:`mlflow_run` — dagster-mlflow's run resource with the embedded store's experiment prepared first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import ConfigurableResource, resource
from dagster_mlflow import mlflow_tracking
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from astrid_assets import settings
from astrid_assets.ml.champions import CHAMPION, PromotionDecision, challenger_alias, choose_alias, judge_promotion
from astrid_assets.ml.metrics import recorded_threshold

MODEL_NAME = "astrid-unet"
INSTRUMENTS_TAG, THRESHOLD_TAG = "instruments", "operating_threshold"


def registered_aliases(client: MlflowClient) -> dict[str, str]:
    """Every alias of :data:`MODEL_NAME` → its registry version; empty before the first registration."""
    try:
        return {alias: str(version) for alias, version in client.get_registered_model(MODEL_NAME).aliases.items()}
    except MlflowException:
        return {}


def version_by_alias(client: MlflowClient, alias: str) -> str | None:
    """Registry version holding ``alias``, or None."""
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias).version
    except MlflowException:
        return None


def decide_promotion(
    client: MlflowClient, version: str, metric: float, champion_metric: float | None, floor: float, margin: float,
    alias: str = CHAMPION,
) -> PromotionDecision:
    """Mark ``version`` the challenger of ``alias``, and give it ``alias`` if
    :func:`~astrid_assets.ml.champions.judge_promotion` says it passes the guardrails (floor and margin)."""
    client.set_registered_model_alias(MODEL_NAME, challenger_alias(alias), version)
    current = version_by_alias(client, alias)
    decision = judge_promotion(metric, current, champion_metric, floor, margin, alias)
    if decision.promoted:
        if current is not None:
            client.set_model_version_tag(MODEL_NAME, version, f"previous_{alias}", current)
        client.set_registered_model_alias(MODEL_NAME, alias, version)
    return decision


def register_model(tracking: Any, model) -> str:
    """Log the U-Net ``model`` (moved to the CPU) to the active run as ``model`` and register it as
    :data:`MODEL_NAME`; its registry version.  ``tracking``: MLflow's fluent API (the ``mlflow`` module
    or dagster-mlflow's resource)."""
    import torch

    info = tracking.pytorch.log_model(model.cpu(), name="model", registered_model_name=MODEL_NAME,
                                      serialization_format="pickle",
                                      pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    return str(info.registered_model_version)


def promote(
    client: MlflowClient, version: str, model_version: str, metric: float, champion_metric: float | None,
    floor: float, margin: float, alias: str = CHAMPION,
) -> PromotionDecision:
    """:func:`decide_promotion` of registry ``version`` for ``alias``, then tag it with its frozen-set ROC AUC
    ``metric`` (``frozen_roc_auc``) and the ``model_version`` it was trained as."""
    decision = decide_promotion(client, version, metric, champion_metric, floor, margin, alias)
    client.set_model_version_tag(MODEL_NAME, version, "frozen_roc_auc", str(metric))
    client.set_model_version_tag(MODEL_NAME, version, "model_version", model_version)
    return decision


def record_operating_point(
    client: MlflowClient, version: str, instruments: Sequence[str], threshold: float, completeness: float,
) -> None:
    """Tag registry ``version`` with the instruments it was trained on (``instruments``, ``,``-separated
    keys; empty when unknown), its ``operating_threshold`` and the ``operating_completeness`` it was chosen for."""
    client.set_model_version_tag(MODEL_NAME, version, INSTRUMENTS_TAG, ",".join(sorted(set(instruments))))
    client.set_model_version_tag(MODEL_NAME, version, THRESHOLD_TAG, repr(float(threshold)))
    client.set_model_version_tag(MODEL_NAME, version, "operating_completeness", repr(float(completeness)))


def version_threshold(client: MlflowClient, version: str) -> float:
    """The ``operating_threshold`` recorded with registry ``version``
    (:func:`astrid_assets.ml.metrics.recorded_threshold`: a default for a version without one)."""
    return recorded_threshold(client.get_model_version(MODEL_NAME, version).tags.get(THRESHOLD_TAG))


def rollback(client: MlflowClient, alias: str = CHAMPION) -> tuple[str, str]:
    """Give ``alias`` (``champion`` or ``champion-<slug>``) back to the version it replaced; returns
    (from_version, to_version)."""
    current = version_by_alias(client, alias)
    if current is None:
        raise ValueError(f"{MODEL_NAME} has no {alias} to roll back")
    previous = client.get_model_version(MODEL_NAME, current).tags.get(f"previous_{alias}")
    if not previous:
        raise ValueError(f"{alias} v{current} replaced no earlier {alias}; nothing to roll back to")
    client.set_registered_model_alias(MODEL_NAME, alias, previous)
    client.set_model_version_tag(MODEL_NAME, current, "rolled_back_to", previous)
    return current, previous


class ModelRegistryResource(ConfigurableResource):
    """The MLflow tracking server and model registry (``MLFLOW_TRACKING_URI`` or a local store)."""

    tracking_uri: str | None = None

    def uri(self) -> str:
        return self.tracking_uri or settings.mlflow_tracking_uri()

    def client(self) -> MlflowClient:
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        return MlflowClient(self.uri())

    def aliases(self) -> dict[str, str]:
        """Every alias of the registered U-Net → its registry version (empty before the first version)."""
        return registered_aliases(self.client())

    def champion_version(self, instrument: str | None = None) -> str | None:
        """Registry version of the champion that scores ``instrument``'s frames: under ``champion-<slug>``
        when that alias exists, else under ``champion``; None when neither does. No instrument: ``champion``."""
        aliases = self.aliases()
        alias = choose_alias(instrument, aliases)
        return aliases[alias] if alias is not None else None

    def load_version(self, version: str):
        """The U-Net of registry ``version`` (on the CPU)."""
        import mlflow.pytorch

        self.client()  # sets the tracking URI that the model URI resolves against
        return mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/{version}", map_location="cpu")

    def load_alias(self, alias: str):
        """(model, registry version) under ``alias`` exactly, or (None, None) when no version holds it."""
        version = version_by_alias(self.client(), alias)
        return (None, None) if version is None else (self.load_version(version), version)

    def load_champion(self, instrument: str | None = None):
        """(model, registry version) of the champion for ``instrument`` (see :meth:`champion_version`), or
        (None, None) when there is none."""
        version = self.champion_version(instrument)
        return (None, None) if version is None else (self.load_version(version), version)

    def operating_threshold(self, version: str) -> float:
        """The threshold recorded with registry ``version`` (chosen by
        :func:`astrid_assets.ml.metrics.operating_threshold`, the one place)."""
        return version_threshold(self.client(), version)


def prepare_experiment(tracking_uri: str, name: str) -> None:
    """Create the experiment with its artifacts under ``ASTRID_HOME`` on the embedded SQLite store.

    (MLflow would otherwise put a local store's artifacts in ``./mlruns`` of the working folder.)
    A tracking server decides its own artifact location.
    """
    if not tracking_uri.startswith("sqlite:"):
        return
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=settings.mlflow_local_artifacts())


@resource(config_schema=mlflow_tracking.config_schema, description=mlflow_tracking.description)
def mlflow_run(context):
    """dagster-mlflow's ``mlflow_tracking`` run, with the embedded store's experiment prepared first."""
    config = context.resource_config
    prepare_experiment(config.get("mlflow_tracking_uri") or settings.mlflow_tracking_uri(), config["experiment_name"])
    yield from mlflow_tracking.resource_fn(context)
