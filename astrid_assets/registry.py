"""The U-Net's place in the MLflow model registry: challengers, champions, promotion and rollback.

MLflow 3 aliases name the roles. A model version trained on the frames of one instrument competes
for that instrument's alias ``champion-<slug>`` (:func:`champion_alias`; the slug of the instrument
key, :func:`~astrid_assets.science.frames.headers.instrument_slug`), measured on that instrument's frozen
benchmark; a version trained across instruments, or on data whose instruments are unknown, competes
for the plain ``champion``. Every new version becomes its alias's challenger (``challenger`` or
``challenger-<slug>``); it becomes champion only if its ROC AUC on the frozen benchmark set meets an
absolute floor and beats the current holder's, measured on that same set now, by a margin. The
version it replaces is recorded on the new champion as the tag ``previous_<alias>``
(``previous_champion``, ``previous_champion-<slug>``) so that :func:`rollback` can restore it.

Scoring picks, per candidate, the champion of its frame's instrument, else the plain champion
(:func:`choose_alias`). Each version carries the tags ``instruments`` (the ``,``-separated instrument
keys it was trained on) and ``operating_threshold`` (the real/bogus probability threshold chosen for
a stated completeness; :data:`DEFAULT_THRESHOLD` for versions without one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from astrid_assets.science.frames.headers import instrument_slug

MODEL_NAME = "astrid-unet"
CHAMPION, CHALLENGER = "champion", "challenger"
INSTRUMENTS_TAG, THRESHOLD_TAG = "instruments", "operating_threshold"
#: The probability threshold of a version that records none.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    champion_before: str | None  #: registry version that held the alias before the decision
    champion_metric: float | None


def champion_alias(instrument: str | None = None) -> str:
    """``champion-<slug>`` of an instrument key (or slug); the plain ``champion`` for None or ""."""
    return f"{CHAMPION}-{instrument_slug(instrument)}" if instrument else CHAMPION


def challenger_alias(alias: str) -> str:
    """The challenger alias that goes with a champion alias (``challenger``, ``challenger-<slug>``)."""
    return CHALLENGER + alias[len(CHAMPION):]


def alias_for_instruments(instruments: Sequence[str]) -> str:
    """The alias a version trained on ``instruments`` competes for: one instrument's own, else ``champion``."""
    distinct = sorted({key for key in instruments if key})
    return champion_alias(distinct[0]) if len(distinct) == 1 else CHAMPION


def choose_alias(instrument: str | None, aliases: Mapping[str, str]) -> str | None:
    """The alias that scores a frame of ``instrument``: its ``champion-<slug>`` when ``aliases`` (alias →
    version, as the registry holds them) has it, else ``champion`` when it has that, else None."""
    own = champion_alias(instrument) if isinstance(instrument, str) and instrument else None
    for alias in (own, CHAMPION):
        if alias is not None and alias in aliases:
            return alias
    return None


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
    """Mark ``version`` the challenger of ``alias``, and give it ``alias`` if it passes the guardrails
    (see module docstring); an undefined (NaN) ROC AUC never promotes."""
    client.set_registered_model_alias(MODEL_NAME, challenger_alias(alias), version)
    current = version_by_alias(client, alias)
    if math.isnan(metric):
        return PromotionDecision(False, "frozen-set ROC AUC is undefined (the benchmark holds one class)",
                                 current, champion_metric)
    if metric < floor:
        return PromotionDecision(False, f"frozen-set ROC AUC {metric:.4f} is below the floor {floor:.4f}",
                                 current, champion_metric)
    if current is not None and champion_metric is not None and metric < champion_metric + margin:
        return PromotionDecision(
            False, f"frozen-set ROC AUC {metric:.4f} does not beat {alias} v{current} "
                   f"({champion_metric:.4f}) by the margin {margin:.4f}", current, champion_metric)
    if current is not None:
        client.set_model_version_tag(MODEL_NAME, version, f"previous_{alias}", current)
    client.set_registered_model_alias(MODEL_NAME, alias, version)
    measured = "" if champion_metric is None else f" ({champion_metric:.4f})"
    why = f"first {alias}" if current is None else f"beats {alias} v{current}{measured}"
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
    """The ``operating_threshold`` of registry ``version``; :data:`DEFAULT_THRESHOLD` when it has none."""
    value = client.get_model_version(MODEL_NAME, version).tags.get(THRESHOLD_TAG)
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLD
    return threshold if math.isfinite(threshold) else DEFAULT_THRESHOLD


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
