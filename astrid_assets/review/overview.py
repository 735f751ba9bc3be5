"""The overview's figures that are not in tables: a night's injection completeness and the backends' health."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from astrid_assets import settings
from astrid_assets.io.arrays import load_arrays
from astrid_assets.io.object_store import ObjectStore, ObjectStoreError

__all__ = ["Overview"]

HEALTH_TTL_S = 60.0  #: the health checks are run again after this long
INJECTION_TTL_S = 300.0


@dataclass
class Overview:
    """Injection completeness per night (from ``candidate_detections/<night>/injections.npz``) and the checks
    of ``astrid doctor``, each cached for a while (both take longer than a page should)."""

    store: ObjectStore
    database_url: str
    object_store_url: str
    _injections: dict = field(default_factory=dict)
    _health: tuple[float, list] = (0.0, [])

    def completeness(self, night: str) -> dict | None:
        """``summarise_completeness`` of the night's injection test, with the number of fakes; None without one."""
        from astrid_assets.defs.detection import injection_key
        from astrid_assets.science.injection.inject import summarise_completeness

        cached = self._injections.get(night)
        if cached and time.monotonic() - cached[0] < INJECTION_TTL_S:
            return cached[1]
        try:
            arrays = load_arrays(self.store.get(injection_key(night)))
            summary = summarise_completeness(np.asarray(arrays["snr"], float), np.asarray(arrays["recovered"], bool))
            summary = {**summary, "n_fakes": int(len(arrays["snr"])), "night": night}
        except (ObjectStoreError, FileNotFoundError, KeyError, OSError, ValueError):
            summary = None
        self._injections[night] = (time.monotonic(), summary)
        return summary

    def health(self) -> list:
        """``astrid doctor``'s checks (without migrating): database, object store, MLflow."""
        from astrid_assets.cli import doctor

        checked, results = self._health
        if not results or time.monotonic() - checked > HEALTH_TTL_S:
            results = [doctor.check_database(self.database_url), doctor.check_object_store(self.object_store_url),
                       doctor.check_mlflow(settings.mlflow_tracking_uri())]
            self._health = (time.monotonic(), results)
        return results
