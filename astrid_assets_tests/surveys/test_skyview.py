"""fetch_skyview against a canned SkyView, offline.

The network is replaced at ``requests.adapters.HTTPAdapter.send``: the transport under every
request astroquery makes (``BaseQuery._request``, its file downloads, MAST's login), so the
whole of astroquery's SkyView client runs for real and the tests see exactly what would have
gone on the wire.  The FITS SkyView hands back is the real SkyView cut-out of M13 shipped in
astropy's test data.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import astropy
import astropy.units as u
import numpy as np
import pytest
import requests
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from astrid_assets.science.frames.files import FrameError, read_frame
from astrid_assets.surveys.errors import SurveyError
from astrid_assets.surveys.skyview import fetch_skyview

M13 = SkyCoord(250.4235 * u.deg, 36.4613 * u.deg)  # the cluster's centre (SIMBAD)
NIGHT, FIELD = "2024-01-02", "M13"
FORM_URL = "https://skyview.gsfc.nasa.gov/current/cgi/basicform.pl"
FITS_URL = "https://skyview.gsfc.nasa.gov/tempspace/fits/skv4711_1.fits"

#: The parts of SkyView's query form (basicform.pl) astroquery reads: the form's action, the
#: survey lists (for validation) and the fields with their default values.
FORM_HTML = """<html><body>
<form name="query" action="runquery.pl" method="GET" target="skyview_out">
<input type='text' name='Position' value='' id='object'>
<select class='selectbox' multiple size=7 NAME='survey' id='Optical:DSS'>
<option>DSS</option><option>DSS1 Blue</option><option>DSS1 Red</option>
<option>DSS2 Red</option><option>DSS2 Blue</option><option>DSS2 IR</option></select>
<select class='selectbox' multiple size=7 NAME='survey' id='Optical:SDSS'>
<option>SDSSg</option><option>SDSSi</option><option>SDSSr</option></select>
<select name='coordinates' id='csys'><option selected>J2000</option><option>Galactic</option></select>
<select name='projection' id='proj'><option selected value='Tan'>Gnomonic (Tan)</option></select>
<input type='text' class='formtext' name='pixels' Value='300' SIZE=11 id='size_pix'>
<input type='text' class='formtext' name='size' SIZE=10 id='size_deg'>
<input type=checkbox name='float' id='float' checked>
<input TYPE='submit' Value='Submit Request'>
</form></body></html>"""

RESULTS_HTML = """<html><body><table><tr><td>DSS2 Red</td>
<td><a href='../../tempspace/fits/skv4711_1.fits'>FITS</a></td>
<td><a href='../../tempspace/fits/skv4711_1.jpg'>Quicklook</a></td></tr></table></body></html>"""

EMPTY_RESULTS_HTML = "<html><body><p>No images were generated.</p></body></html>"

Answer = tuple[int, bytes, dict[str, str]]


def m13_fits_bytes() -> bytes:
    """The SkyView cut-out of M13 (DSS, 300 x 300) from astropy's test data, as a FITS file.

    Stored uncompressed in astropy 8; should a later astropy ship it tile-compressed, the
    image is rewritten as the plain primary-HDU file SkyView serves.
    """
    path = Path(astropy.__file__).parent / "io/fits/hdu/compressed/tests/data/m13.fits"
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.data is not None)
        if isinstance(hdu, fits.PrimaryHDU):
            return path.read_bytes()
        out = io.BytesIO()
        fits.PrimaryHDU(hdu.data, hdu.header).writeto(out)
        return out.getvalue()


class FakeArchive:
    """Stands in for the network: answers each request ``requests`` would have sent.

    ``handler(request)`` returns ``(status, body, headers)`` or raises a ``requests``
    exception (a timeout, a refused connection).  Every request is kept in ``sent`` with the
    keyword arguments the transport got (``timeout``, ``stream``, ...).
    """

    def __init__(self, handler: Callable[[requests.PreparedRequest], Answer]) -> None:
        self.handler = handler
        self.sent: list[tuple[requests.PreparedRequest, dict]] = []

    def send(self, adapter: HTTPAdapter, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        self.sent.append((request, kwargs))
        status, body, headers = self.handler(request)
        response = requests.Response()
        response.status_code = status
        response.reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Error")
        response.url = request.url
        response.request = request
        response.headers = CaseInsensitiveDict({"Content-Length": str(len(body)), **headers})
        response.raw = io.BytesIO(b"" if request.method == "HEAD" else body)
        return response

    def urls(self, method: str = "GET") -> list[str]:
        return [r.url for r, _ in self.sent if r.method == method]


def install_fake_archive(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[requests.PreparedRequest], Answer]
) -> FakeArchive:
    """Put a :class:`FakeArchive` answering with ``handler`` in place of the network."""
    archive = FakeArchive(handler)
    monkeypatch.setattr(
        HTTPAdapter, "send", lambda adapter, request, **kw: archive.send(adapter, request, **kw)
    )
    return archive


@pytest.fixture
def offline(monkeypatch):
    """``offline(handler)`` puts a :class:`FakeArchive` in place of the network and returns it."""
    return lambda handler: install_fake_archive(monkeypatch, handler)


def skyview(results: str = RESULTS_HTML, fits_bytes: bytes | None = None) -> Callable:
    """A SkyView: the form, a result page (``results``), the FITS file it links to."""
    body = m13_fits_bytes() if fits_bytes is None else fits_bytes

    def handler(request: requests.PreparedRequest) -> Answer:
        url = urlsplit(request.url)
        if url.path.endswith("basicform.pl"):
            return 200, FORM_HTML.encode(), {"Content-Type": "text/html"}
        if url.path.endswith("runquery.pl"):
            return 200, results.encode(), {"Content-Type": "text/html"}
        if request.url == FITS_URL:
            return 200, body, {"Content-Type": "application/fits"}
        return 404, b"not here", {}

    return handler


def centre(header: fits.Header, shape: tuple[int, int]) -> SkyCoord:
    """Sky position of the image centre, by the header's WCS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # e.g. NAXIS of a merged header
        wcs = WCS(header).celestial
    return wcs.pixel_to_world((shape[1] - 1) / 2, (shape[0] - 1) / 2)


def test_cutout_is_an_astrid_frame_centred_on_m13(offline):
    archive = offline(skyview())

    frames = fetch_skyview(NIGHT, FIELD, 250.4226, 36.4602, survey="DSS2 Red", pixels=512, radius_arcmin=8)

    assert [f.frame_id for f in frames] == ["M13-20240102-skyview-DSS2_Red-001"]
    frame = frames[0]
    assert (frame.night, frame.field, frame.source) == (NIGHT, FIELD, "skyview")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", frame.frame_id)
    with fits.open(io.BytesIO(frame.fits_bytes), checksum=True) as hdul:
        header, data = hdul[0].header, hdul[0].data
        assert centre(header, data.shape).separation(M13) < 3 * u.arcmin
        assert header["DATE-OBS"] == "2024-01-02T00:00:00.000"
        assert header["MJD-OBS"] == pytest.approx(60311.0)
        assert header["DATESRC"] == "night"
        assert "ORIGDATE" not in header  # this cut-out carries no date of its own
        assert header["FILTER"] == "R"
        assert header["EXPTIME"] == 3600.0
        assert (header["GAIN"], header["RDNOISE"]) == (1.0, 0.0)
        assert header["IMAGETYP"] == "object"
        assert (header["FIELD"], header["SURVEY"]) == (FIELD, "DSS2 Red")
        # the pixels are SkyView's, untouched
        original = fits.getdata(io.BytesIO(m13_fits_bytes()))
        np.testing.assert_array_equal(data, original)
    image, merged = read_frame(frame.fits_bytes, NIGHT, frame.frame_id)  # AstrID's own validation
    assert image.shape == (300, 300) and merged["IMAGETYP"] == "object"
    # every request had a timeout, and the FITS came from the link on the result page
    assert all(kwargs["timeout"] for _, kwargs in archive.sent)
    assert archive.urls()[-1] == FITS_URL


def test_query_sent_carries_position_survey_and_size(offline):
    archive = offline(skyview())

    fetch_skyview(NIGHT, FIELD, 250.4226, 36.4602, survey="DSS2 Red", pixels=512, radius_arcmin=8)

    [query] = [urlsplit(u) for u in archive.urls() if "runquery.pl" in u]
    params = {k: v[0] for k, v in parse_qs(query.query).items()}
    ra, dec = (float(x) for x in params["Position"].split())
    assert (
        SkyCoord(ra * u.deg, dec * u.deg, frame="fk5").separation(SkyCoord(250.4226, 36.4602, unit="deg"))
        < 2 * u.arcsec
    )
    assert params["survey"] == "DSS2 Red"
    assert params["pixels"] == "512"
    assert float(params["size"]) == pytest.approx(16 / 60)  # 2 x radius, degrees
    assert (params["projection"], params["coordinates"]) == ("Tan", "J2000")


def test_archive_date_is_kept_as_origdate(offline):
    with fits.open(io.BytesIO(m13_fits_bytes())) as hdul:
        hdul[0].header["DATE-OBS"] = "1993-05-20T08:15:00"
        out = io.BytesIO()
        hdul.writeto(out)
    offline(skyview(fits_bytes=out.getvalue()))

    [frame] = fetch_skyview(NIGHT, FIELD, 250.4226, 36.4602)

    header = fits.getheader(io.BytesIO(frame.fits_bytes))
    assert header["DATE-OBS"] == "2024-01-02T00:00:00.000"
    assert header["ORIGDATE"] == "1993-05-20T08:15:00"


def test_no_image_gives_no_frames(offline):
    offline(skyview(results=EMPTY_RESULTS_HTML))

    assert fetch_skyview(NIGHT, FIELD, 250.4226, 36.4602) == []


def test_truncated_file_is_passed_on_as_fetched_for_validation(offline):
    truncated = m13_fits_bytes()[:50_000]
    offline(skyview(fits_bytes=truncated))

    [frame] = fetch_skyview(NIGHT, FIELD, 250.4226, 36.4602)

    assert frame.fits_bytes == truncated
    with pytest.raises(FrameError, match="truncated"):
        read_frame(frame.fits_bytes, NIGHT, frame.frame_id)


def test_http_error_raises_survey_error_naming_the_request(offline):
    offline(lambda request: (503, b"Service Unavailable", {}))

    with pytest.raises(SurveyError) as error:
        fetch_skyview(NIGHT, FIELD, 250.4226, 36.4602, survey="DSS2 Red")

    message = str(error.value)
    for expected in ("SkyView DSS2 Red", NIGHT, FIELD, "250.42260", "+36.46020", "503"):
        assert expected in message
    assert isinstance(error.value.__cause__, requests.HTTPError)


def test_timeout_raises_survey_error(offline):
    def silent(request):
        raise requests.exceptions.ReadTimeout("read timed out")

    offline(silent)

    with pytest.raises(SurveyError, match=r"SkyView DSS2 Red: .*night 2024-01-02, field M13.*ReadTimeout"):
        fetch_skyview(NIGHT, FIELD, 250.4226, 36.4602, timeout_s=5)


def test_bad_night_is_rejected_before_any_request(offline):
    archive = offline(skyview())

    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        fetch_skyview("2024/01/02", FIELD, 250.4226, 36.4602)
    assert archive.sent == []
