"""A Pan-STARRS1 star–galaxy score near each object, through MAST's catalogue API (``astroquery.mast``).

``Catalogs.query_region(..., catalog="Panstarrs", data_release="dr2", table="mean")`` with the few columns
needed. The score served as ``sgscore`` is **not** the PS1 point-source catalogue's machine-learned score
(PS1-PSC, Tachibana & Miller 2018, PASP 130, 128001, ZTF's ``sgscore1``), which MAST's API does not serve:
it is the PS1 DR2 morphological rule that MAST documents for separating stars from galaxies,

    point source if  iMeanPSFMag − iMeanKronMag ≤ 0.05 mag  (Farrow et al. 2014, MNRAS 437, 748),

served as 1.0 (point source) or 0.0 (extended), with the scale of ZTF's score (1 star .. 0 galaxy); null where
the source has no i-band PSF or Kron magnitude. ``ps1_distance_arcsec`` is the distance to the nearest PS1 source
with at least two detections (single detections are mostly artefacts), as ZTF's ``distpsnr1``.
"""

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord

from astrid_assets.catalogues.cones import Cone

__all__ = ["POINT_SOURCE_MAX_PSF_MINUS_KRON", "panstarrs_context", "query_panstarrs"]

#: iMeanPSFMag − iMeanKronMag (mag) up to which a PS1 source is a point source (sgscore 1).
POINT_SOURCE_MAX_PSF_MINUS_KRON = 0.05
COLUMNS = ["objID", "raMean", "decMean", "nDetections", "iMeanPSFMag", "iMeanKronMag"]


def _client(timeout_s: float):
    from astroquery.mast import CatalogsClass

    from astrid_assets.surveys.skyview import use_timeout

    client = CatalogsClass()
    use_timeout(client._service_api_connection._session, timeout_s)
    return client


def query_panstarrs(cone: Cone, timeout_s: float = 60.0, client=None) -> pd.DataFrame:
    """PS1 DR2 ``mean`` sources in ``cone`` with ≥ 2 detections: ``objID``, ``ra``, ``dec`` (deg),
    ``iMeanPSFMag``, ``iMeanKronMag`` (mag; NaN where PS1 has none). Raises what the archive raises."""
    client = client or _client(timeout_s)
    table = client.query_region(SkyCoord(cone.ra * u.deg, cone.dec * u.deg), radius=cone.radius_arcsec * u.arcsec,
                                catalog="Panstarrs", data_release="dr2", table="mean", columns=COLUMNS)
    frame = pd.DataFrame({c: np.ma.filled(np.ma.asarray(table[c], dtype=float), np.nan) for c in COLUMNS[1:]}
                         ) if len(table) else pd.DataFrame(columns=COLUMNS[1:], dtype=float)
    frame.insert(0, "objID", [str(v) for v in table["objID"]] if len(table) else [])
    for magnitude in ("iMeanPSFMag", "iMeanKronMag"):  # PS1 writes -999 for "no measurement"
        frame[magnitude] = frame[magnitude].where(frame[magnitude] > -900)
    frame = frame[frame.nDetections >= 2]
    return frame.rename(columns={"raMean": "ra", "decMean": "dec"}).reset_index(drop=True)


def panstarrs_context(matched: pd.DataFrame) -> pd.DataFrame:
    """``sgscore`` (1 point source, 0 extended, see the module) and ``ps1_distance_arcsec`` from each object's
    nearest PS1 source (NaN where none)."""
    difference = matched.iMeanPSFMag.astype(float) - matched.iMeanKronMag.astype(float)
    score = np.where(difference.isna(), np.nan, (difference <= POINT_SOURCE_MAX_PSF_MINUS_KRON).astype(float))
    return pd.DataFrame({"sgscore": score, "ps1_distance_arcsec": matched.distance_arcsec.astype(float)},
                        index=matched.index)
