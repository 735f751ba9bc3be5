"""The nearest Gaia DR3 source of each object, through the Gaia archive's TAP service (``astroquery.gaia``).

One synchronous ADQL query (``GaiaClass.launch_job``) per group of up to :data:`MAX_CIRCLES_PER_QUERY`
objects: the union of one small circle per object, so the archive returns only the sources near the
objects (never a whole field that the 2000-row cap of a synchronous job would cut).

"A star" (``is_star``): the nearest source within the match radius has a significant parallax or proper
motion, ``parallax / parallax_error > 5`` or ``sqrt((pmra/pmra_error)^2 + (pmdec/pmdec_error)^2) > 5``
(:data:`STAR_SNR`). Galaxies and quasars have neither (Gaia Collaboration, Vallenari et al. 2023, A&A 674, A1);
a faint star without significant astrometry is not called a star. No source within the radius: ``is_star``
is null.
"""

import http.client

import numpy as np
import pandas as pd

__all__ = ["GAIA_HOST", "STAR_SNR", "gaia_context", "gaia_query", "query_gaia"]

GAIA_HOST = "gea.esac.esa.int"
#: Parallax or proper-motion significance above which the nearest Gaia source is "a star".
STAR_SNR = 5.0
#: Objects per ADQL query (one CIRCLE each).
MAX_CIRCLES_PER_QUERY = 100
COLUMNS = ["source_id", "ra", "dec", "phot_g_mean_mag", "parallax", "parallax_error", "pmra", "pmra_error",
           "pmdec", "pmdec_error"]


def gaia_query(positions: pd.DataFrame, radius_arcsec: float) -> str:
    """ADQL for the Gaia DR3 sources within ``radius_arcsec`` of any of ``positions`` (``ra``, ``dec``, deg)."""
    circles = " OR ".join(
        f"1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.7f}, {dec:+.7f}, {radius_arcsec / 3600.0:.7f}))"
        for ra, dec in zip(positions.ra.to_numpy(float), positions.dec.to_numpy(float), strict=True))
    return f"SELECT {', '.join(COLUMNS)} FROM gaiadr3.gaia_source WHERE {circles}"


def _client(timeout_s: float):
    """A ``GaiaClass`` whose every connection has a timeout (astroquery's waits forever) and that asks
    nothing at construction (no server messages)."""
    from astroquery.gaia import GaiaClass  # imported here: the module asks the archive for messages at import
    from astroquery.utils.tap.conn.tapconn import ConnectionHandler, TapConn

    class TimedConnections(ConnectionHandler):
        def get_connection(self, *, ishttps=False, cookie=None, verbose=False):
            return http.client.HTTPSConnection(GAIA_HOST, 443, timeout=timeout_s)

        def get_connection_secure(self, verbose):
            return http.client.HTTPSConnection(GAIA_HOST, 443, timeout=timeout_s)

    tap = TapConn(ishttps=True, host=GAIA_HOST, server_context="tap-server", tap_context="tap", port=443,
                  sslport=443, upload_context="Upload", table_edit_context="TableTool", data_context="data",
                  datalink_context="datalink", connhandler=TimedConnections(GAIA_HOST, 443, 443))
    return GaiaClass(tap_plus_conn_handler=tap, show_server_messages=False)


def query_gaia(positions: pd.DataFrame, radius_arcsec: float, timeout_s: float = 60.0) -> pd.DataFrame:
    """Gaia DR3 sources within ``radius_arcsec`` of ``positions``: the columns :data:`COLUMNS` (deg, mag, mas,
    mas/yr), one query per :data:`MAX_CIRCLES_PER_QUERY` positions. Raises what the archive raises."""
    client = _client(timeout_s)
    tables = []
    for start in range(0, len(positions), MAX_CIRCLES_PER_QUERY):
        job = client.launch_job(gaia_query(positions.iloc[start:start + MAX_CIRCLES_PER_QUERY], radius_arcsec),
                                output_format="votable")
        table = job.get_results()
        if job.failed:
            raise RuntimeError(f"Gaia archive job failed: {job.get_phase()}")
        table = table.to_pandas() if len(table) else pd.DataFrame(columns=COLUMNS)
        table.columns = [c.lower() for c in table.columns]
        tables.append(table[COLUMNS])
    found = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    return found.drop_duplicates("source_id").reset_index(drop=True)


def significance(value, error) -> np.ndarray:
    """``value / error`` (NaN where either is missing or the error is not positive)."""
    value, error = np.asarray(value, float), np.asarray(error, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(error > 0, value / error, np.nan)


def gaia_context(matched: pd.DataFrame) -> pd.DataFrame:
    """``object_context``'s Gaia columns from each object's nearest source (:func:`~astrid_assets.catalogues.
    cones.nearest` of :func:`query_gaia`'s rows; NaN where none): ``gaia_source_id``, ``gaia_distance_arcsec``,
    ``gaia_g`` (mag), ``gaia_parallax_snr``, ``gaia_pm_snr`` and ``is_star`` (see the module)."""
    parallax_snr = significance(matched.parallax, matched.parallax_error)
    pm_snr = np.hypot(significance(matched.pmra, matched.pmra_error),
                      significance(matched.pmdec, matched.pmdec_error))
    found = matched.source_id.notna().to_numpy()
    star = (np.nan_to_num(parallax_snr, nan=0.0) > STAR_SNR) | (np.nan_to_num(pm_snr, nan=0.0) > STAR_SNR)
    return pd.DataFrame({
        "gaia_source_id": [str(int(s)) if f else None for s, f in zip(matched.source_id, found, strict=True)],
        "gaia_distance_arcsec": matched.distance_arcsec.astype(float),
        "gaia_g": matched.phot_g_mean_mag.astype(float), "gaia_parallax_snr": parallax_snr, "gaia_pm_snr": pm_snr,
        "is_star": [bool(s) if f else None for s, f in zip(star, found, strict=True)],
    }, index=matched.index)
