"""The U-Net's place in the MLflow model registry: challenger, champion, promotion and rollback.

MLflow 3 aliases name the roles: every new version becomes ``challenger``; it becomes ``champion``
only if its ROC AUC on the frozen benchmark set meets an absolute floor and beats the current
champion's, measured on that same set now, by a margin. The version it replaces is recorded on the
new champion as the tag ``previous_champion`` so that :func:`rollback` can restore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

MODEL_NAME = "astrid-unet"
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    champion_before: str | None  #: registry version that was champion before the decision
    champion_metric: float | None


def version_by_alias(client: MlflowClient, alias: str) -> str | None:
    """Registry version holding ``alias``, or None."""
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias).version
    except MlflowException:
        return None


def decide_promotion(
    client: MlflowClient, version: str, metric: float, champion_metric: float | None, floor: float, margin: float
) -> PromotionDecision:
    """Mark ``version`` challenger, and champion if it passes the guardrails (see module docstring)."""
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
    current = version_by_alias(client, CHAMPION)
    if metric < floor:
        return PromotionDecision(False, f"frozen-set ROC AUC {metric:.4f} is below the floor {floor:.4f}",
                                 current, champion_metric)
    if current is not None and champion_metric is not None and metric < champion_metric + margin:
        return PromotionDecision(
            False, f"frozen-set ROC AUC {metric:.4f} does not beat champion v{current} "
                   f"({champion_metric:.4f}) by the margin {margin:.4f}", current, champion_metric)
    if current is not None:
        client.set_model_version_tag(MODEL_NAME, version, "previous_champion", current)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    why = "first champion" if current is None else f"beats champion v{current} ({champion_metric:.4f})"
    return PromotionDecision(True, f"frozen-set ROC AUC {metric:.4f}: {why}", current, champion_metric)


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
    floor: float, margin: float,
) -> PromotionDecision:
    """:func:`decide_promotion` for registry ``version``, then tag it with its frozen-set ROC AUC ``metric``
    (``frozen_roc_auc``) and the ``model_version`` it was trained as."""
    decision = decide_promotion(client, version, metric, champion_metric, floor, margin)
    client.set_model_version_tag(MODEL_NAME, version, "frozen_roc_auc", str(metric))
    client.set_model_version_tag(MODEL_NAME, version, "model_version", model_version)
    return decision


def rollback(client: MlflowClient) -> tuple[str, str]:
    """Give ``champion`` back to the version it replaced; returns (from_version, to_version)."""
    current = version_by_alias(client, CHAMPION)
    if current is None:
        raise ValueError(f"{MODEL_NAME} has no champion to roll back")
    previous = client.get_model_version(MODEL_NAME, current).tags.get("previous_champion")
    if not previous:
        raise ValueError(f"champion v{current} replaced no earlier champion; nothing to roll back to")
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, previous)
    client.set_model_version_tag(MODEL_NAME, current, "rolled_back_to", previous)
    return current, previous
