"""Known solar-system objects at an epoch, through IMCCE's SkyBoT cone search (``astroquery.imcce``).

``SkybotClass.cone_search(centre, radius, epoch, location=...)`` returns the asteroids, comets and planets
whose computed position at the epoch lies in the cone (Berthier et al. 2006, ASP Conf. Ser. 351, 367), with
their V magnitude. The position is seen from ``location`` (an MPC observatory code; ``500``, the geocentre, by
default: the topocentric parallax of a main-belt asteroid is a few arcsec, so give the observatory's code).
"""

import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time

from astrid_assets.catalogues.cones import Cone

__all__ = ["query_skybot"]

COLUMNS = ["Name", "Number", "ra", "dec", "V", "Type"]


def query_skybot(cone: Cone, epoch_mjd: float, location: str = "500", timeout_s: float = 60.0) -> pd.DataFrame:
    """Solar-system objects in ``cone`` at ``epoch_mjd`` (UTC): ``Name``, ``Number`` (0: unnumbered),
    ``ra``, ``dec`` (deg, J2000 astrometric), ``V`` (mag), ``Type``. Nothing there: no rows. Raises what the
    service raises."""
    from astroquery.imcce import SkybotClass, conf

    from astrid_assets.surveys.skyview import use_timeout

    client = SkybotClass()
    use_timeout(client._session, timeout_s)
    with conf.set_temp("timeout", max(1, round(timeout_s))):  # an integer item
        try:
            table = client.cone_search(SkyCoord(cone.ra * u.deg, cone.dec * u.deg), cone.radius_arcsec * u.arcsec,
                                       Time(epoch_mjd, format="mjd", scale="utc"), location=location, cache=False)
        except RuntimeError as error:
            if "No solar system object was found" in str(error):
                return pd.DataFrame(columns=COLUMNS)
            raise
    if len(table) == 0:
        return pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame({
        "Name": [str(n) for n in table["Name"]], "Number": [int(n) for n in table["Number"].filled(0)],
        "ra": [float(v) for v in u.Quantity(table["RA"], u.deg).value],
        "dec": [float(v) for v in u.Quantity(table["DEC"], u.deg).value],
        "V": [float(v) for v in u.Quantity(table["V"]).value], "Type": [str(t) for t in table["Type"]],
    })
