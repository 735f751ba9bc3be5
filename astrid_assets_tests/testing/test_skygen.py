"""Known answers of the independent sky generator, measured from its pixels with astropy and sep (no AstrID code)."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.modeling import fitting, models
from astropy.stats import sigma_clipped_stats
from astropy.time import Time
from astropy.wcs import WCS

from astrid_assets.testing import skygen, skymodel
from astrid_assets.testing.skygen import Cell

SMALL = {"n_nights": 2, "frames_per_night": 2}


def _cards(cell: Cell, header) -> tuple[float, float, float]:
    """Gain (e-/ADU), read noise (e-) and saturation (ADU) under the cell's keyword convention."""
    return tuple(header[k] for k in skygen.conventions(cell)["gain_keys"])


def _science(folder: Path, cell: Cell) -> list[Path]:
    kind = skygen.conventions(cell)["science"]
    return sorted(f for f in folder.glob("*/*.fits") if fits.getheader(f)["IMAGETYP"] == kind)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    cell = Cell("t-gauss-2.5-reduced", fwhm=2.5, seed=20, **SMALL)
    root = tmp_path_factory.mktemp("reduced")
    return cell, root, skygen.write_drop(root, cell)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    cell = Cell("t-gauss-1.3-raw", fwhm=1.3, state="raw", seed=1, n_nights=1, frames_per_night=1)
    root = tmp_path_factory.mktemp("raw")
    return cell, root, skygen.write_drop(root, cell)


def test_blank_sky_noise_is_poisson_plus_read_noise(reduced):
    cell, root, _ = reduced
    for j, path in enumerate(sorted((root / "2015-03-10").glob("*.fits"))):
        gain, rn, _ = _cards(cell, fits.getheader(path))
        data = fits.getdata(path).astype(float) * gain
        model = skymodel.model_frame(cell, 0, j)
        yy, xx = np.indices(model.shape)
        a = np.column_stack([np.ones(model.size), xx.ravel(), yy.ravel()])
        keep = np.ones(model.size, bool)
        for _ in range(4):  # the sky plane under the sources
            coef = np.linalg.lstsq(a[keep], model.ravel()[keep], rcond=None)[0]
            keep = model.ravel() - a @ coef < 1.0
        blank = (model - (a @ coef).reshape(model.shape)) < 0.5
        pair = blank[:, 1:] & blank[:, :-1]
        assert pair.sum() > 20000
        diff = (data[:, 1:] - data[:, :-1])[pair]
        _, _, std = sigma_clipped_stats(diff, sigma=4.0)
        expected = np.sqrt(np.mean(model[blank]) + rn**2)
        assert std / np.sqrt(2) == pytest.approx(expected, rel=0.05)
        sky = skymodel.frame_table(cell).iloc[j]["sky"]
        assert np.median(data[blank]) == pytest.approx(sky, rel=0.03)


def _fwhm_of_stars(data: np.ndarray, stars, gain: float, saturate: float, fwhm: float, psf: str) -> list[float]:
    """FWHM of bright isolated unsaturated stars, fitted on the pixels with astropy.modeling (plus a constant)."""
    r = int(np.ceil(3 * fwhm))
    out = []
    for s in stars[stars["kind"] == "star"].itertuples():
        x, y = int(round(s.x)), int(round(s.y))
        if not (r <= x < data.shape[1] - r and r <= y < data.shape[0] - r):
            continue
        d = np.hypot(stars["x"] - s.x, stars["y"] - s.y)
        stamp = data[y - r:y + r + 1, x - r:x + r + 1]
        border = np.concatenate([stamp[0], stamp[-1], stamp[:, 0], stamp[:, -1]])
        sky, noise = np.median(border), 1.4826 * np.median(np.abs(border - np.median(border)))
        if (np.sum((d < 4 * fwhm + 3 * stars["h"]) & (stars["flux"] > 0.02 * s.flux)) > 1
                or stamp.max() > 0.5 * saturate or s.flux / (1.13 * fwhm**2) / gain < 25 * noise):
            continue
        yy, xx = np.mgrid[y - r:y + r + 1, x - r:x + r + 1]
        if psf == "gaussian":
            start = models.Gaussian2D(stamp.max() - sky, s.x, s.y, fwhm / 2.355, fwhm / 2.355)
        else:
            start = models.Moffat2D(stamp.max() - sky, s.x, s.y, fwhm, 3.0)
        model, weights = start + models.Const2D(sky), np.ones_like(stamp)
        for _ in range(3):  # refit without the pixels a cosmic ray hit
            try:
                model = fitting.LevMarLSQFitter()(model, xx, yy, stamp, weights=weights, maxiter=500)
            except fitting.NonFiniteValueError:
                break
            expected = model(xx, yy)
            sigma = np.sqrt(noise**2 + np.clip(expected - sky, 0.0, None) / gain)
            weights = (np.abs(stamp - expected) < 5 * sigma) / sigma
        fit = model[0]
        if psf == "gaussian":
            c, s_ = np.cos(fit.theta.value), np.sin(fit.theta.value)
            rot = np.array([[c, -s_], [s_, c]])
            cov = rot @ np.diag([fit.x_stddev.value**2, fit.y_stddev.value**2]) @ rot.T - np.eye(2) / 12.0  # pixel
            det = np.linalg.det(cov)
            out.append(2.0 * np.sqrt(2.0 * np.log(2.0)) * det**0.25 if det > 0 else np.nan)
        else:
            out.append(abs(fit.fwhm))
    return [f for f in out if np.isfinite(f)]  # a fit that failed (say a cosmic ray on the core) has no FWHM


@pytest.mark.parametrize("cell", [
    Cell("t-gauss-2.5", fwhm=2.5, seed=30, n_nights=1, frames_per_night=2),
    Cell("t-moffat-6", psf="moffat", beta=3.5, fwhm=6.0, seed=36, n_nights=1, frames_per_night=2),
], ids=lambda c: c.name)
def test_measured_fwhm_of_bright_isolated_stars(cell, tmp_path):
    skygen.write_drop(tmp_path, cell)
    frames = skymodel.frame_table(cell)
    measured = []
    for j, (path, truth) in enumerate(zip(sorted(tmp_path.glob("*/*.fits")), frames["fwhm"], strict=True)):
        header = fits.getheader(path)
        data = fits.getdata(path).astype(np.float64)
        gain, _, saturate = _cards(cell, header)
        fwhms = _fwhm_of_stars(data, skymodel.catalog(cell, 0, j), gain, saturate, cell.fwhm, cell.psf)
        assert len(fwhms) >= 3
        assert np.median(fwhms) == pytest.approx(truth, rel=0.05)
        measured.append(np.median(fwhms))
    assert np.median(measured) == pytest.approx(cell.fwhm, rel=0.10)


def test_truth_radec_maps_through_the_written_wcs_to_truth_xy(reduced):
    cell, root, truth = reduced
    assert len(truth) >= 6 * 2 and set(truth["night"]) == {"2015-03-11"}
    for file, rows in truth.groupby("file"):
        header = fits.getheader(root / rows["night"].iloc[0] / file)
        wcs = WCS(header)
        scale = wcs.proj_plane_pixel_scales()[0].to_value("arcsec")
        assert abs(scale - 1.0) > 0.1
        x, y = wcs.all_world2pix(rows["ra"], rows["dec"], 0)
        assert np.max(np.hypot(x - rows["x"], y - rows["y"])) < 0.05
    # Fixed sky positions, offset pointings: the same transient sits at different pixels in different frames.
    spread = truth.groupby("transient_id")[["x", "y", "ra", "dec"]].agg(np.ptp)
    assert (spread["ra"] < 1e-9).all() and (spread["dec"] < 1e-9).all()
    assert (np.hypot(spread["x"], spread["y"]) > 0.3).all()


def test_transient_flux_and_snr_in_the_pixels(reduced):
    cell, root, truth = reduced
    assert np.array_equal(skymodel.model_frame(cell, 0, 0), skymodel.model_frame(cell, 0, 0, transients=False))
    assert truth["snr"].between(8, 60).all() and truth["snr"].max() > 30 and truth["on_galaxy"].sum() >= 2
    yy, xx = np.indices(cell.shape)
    z = []
    for (night, file), rows in truth.groupby(["night", "file"]):
        j = int(rows["frame_index"].iloc[0])
        gain, rn, _ = _cards(cell, fits.getheader(root / night / file))
        data = fits.getdata(root / night / file).astype(float) * gain
        with_t, without = skymodel.model_frame(cell, 1, j), skymodel.model_frame(cell, 1, j, transients=False)
        for row in rows.itertuples():
            d2 = (xx - row.x) ** 2 + (yy - row.y) ** 2
            big = d2 < (4 * cell.fwhm) ** 2
            signal = (with_t - without)[big]
            assert signal.sum() == pytest.approx(row.flux, rel=0.005)
            assert np.sum(signal * xx[big]) / signal.sum() == pytest.approx(row.x, abs=0.01)
            assert np.sum(signal * yy[big]) / signal.sum() == pytest.approx(row.y, abs=0.01)
            p = signal / row.flux
            assert row.flux * np.sqrt(np.sum(p**2 / (with_t[big] + rn**2))) == pytest.approx(row.snr, rel=0.01)
            ap = d2 < (1.5 * cell.fwhm) ** 2
            measured = np.sum((data - without)[ap])
            z.append((measured - np.sum((with_t - without)[ap])) / np.sqrt(np.sum(with_t[ap] + rn**2)))
    z = np.abs(np.array(z))
    assert np.median(z) < 1.0 and np.mean(z < 3.0) > 0.9


def test_raw_cell_is_uint16_with_calibration_frames(raw):
    cell, root, truth = raw
    conv = skygen.conventions(cell)
    assert (conv["bias"], conv["dark"], conv["flat"], conv["science"]) == ("BIAS", "DARK", "FLAT", "LIGHT")
    files = sorted((root / "2015-03-10").glob("*.fits"))
    kinds = [fits.getheader(f)["IMAGETYP"] for f in files]
    assert sorted(kinds) == sorted(["BIAS"] * 5 + ["DARK"] * 3 + ["FLAT"] * 5 + ["LIGHT"])
    levels = {}
    for f, kind in zip(files, kinds, strict=True):
        with fits.open(f, do_not_scale_image_data=True) as hdul:
            h = hdul[0].header
            assert h["BITPIX"] == 16 and h["BZERO"] == 32768 and hdul[0].data.dtype.kind == "i"
        data = fits.getdata(f)
        assert data.dtype == np.uint16
        levels.setdefault(kind, []).append(np.median(data))
        if kind == "LIGHT":
            science, science_header = data, h
    exposure = conv["exposure_key"]
    darks = [fits.getheader(f) for f, k in zip(files, kinds, strict=True) if k == "DARK"]
    assert all(d[exposure] == science_header[exposure] > 0 for d in darks)
    assert 400 <= np.median(levels["BIAS"]) <= 1110
    gain, rn, _ = _cards(cell, science_header)
    bias = [fits.getdata(f).astype(float) for f, k in zip(files, kinds, strict=True) if k == "BIAS"]
    # Read noise from two bias frames; rounding to integer ADU adds 1/12 ADU^2 to each.
    assert np.std(bias[1] - bias[0]) / np.sqrt(2) == pytest.approx(np.hypot(rn / gain, np.sqrt(1 / 12)), rel=0.03)
    assert np.median(levels["FLAT"]) - np.median(levels["BIAS"]) == pytest.approx(20000, rel=0.1)
    assert _cards(cell, science_header)[2] == 60000 and np.sum(science >= 60000) > 3
    assert truth.empty  # a single night is only the reference


def test_no_wcs_cell_writes_no_wcs_cards(tmp_path):
    cell = Cell("t-nowcs", psf="moffat", beta=2.0, fwhm=2.5, wcs=False, gain_card=False, seed=2, **SMALL)
    truth = skygen.write_drop(tmp_path, cell)
    for f in tmp_path.glob("*/*.fits"):
        header = fits.getheader(f)
        assert not any(k.startswith(("CTYPE", "CRVAL", "CRPIX", "CD1_", "CD2_", "PC1_", "CDELT")) for k in header)
        assert not {"GAIN", "EGAIN", "GAINA", "RDNOISE", "SATURATE"} & set(header)
    assert truth["ra"].notna().all() and truth["dec"].between(-90, 90).all()


def test_headers_follow_the_cell_conventions(tmp_path):
    for cell in skygen.COVERING_CELLS:
        small = dataclasses.replace(cell, n_nights=2, frames_per_night=1, shape=(200, 260))
        conv = skygen.conventions(small)
        skygen.write_drop(tmp_path / cell.name, small)
        nights = sorted(p.name for p in (tmp_path / cell.name).iterdir())
        first = date.fromisoformat(cell.first_night)
        assert nights == [first.isoformat(), (first + timedelta(days=1)).isoformat()]
        science = _science(tmp_path / cell.name, small)
        assert len(science) == 2
        for f in science:
            h = fits.getheader(f)
            assert "FIELD" not in h and "astrid" not in repr(h).lower() and " " in h["OBJECT"]
            assert h["FILTER"] == conv["filter"] and h[conv["exposure_key"]] > 0
            assert [k for k in ("DATE-OBS", "MJD-OBS", "JD") if k in h] == list(conv["time_cards"])
            t = Time(h["DATE-OBS"]) if "DATE-OBS" in h else Time(h["MJD-OBS"], format="mjd")
            assert t.iso[:10] == f.parent.name and 2 <= t.datetime.hour < 5
            assert ("MAGZP" in h) == cell.magzp and ("CTYPE1" in h) == cell.wcs
            assert all(k in h for k in conv["gain_keys"] or ()) and cell.gain_card == any(
                k in h for keys in skygen.GAIN_KEYS for k in keys)
    assert skygen.ARCHIVAL_CELL.first_night == "1995-06-02"


def test_covering_cells_cover_every_axis_value():
    cells = skygen.COVERING_CELLS
    assert 6 <= len(cells) <= 8
    assert {(c.psf, c.beta if c.psf == "moffat" else None) for c in cells} >= {
        ("gaussian", None), ("moffat", 2.0), ("moffat", 5.0)}
    assert {c.fwhm for c in cells} >= {1.3, 2.5, 6.0}
    assert {c.state for c in cells} == {"raw", "reduced", "sky_subtracted"}
    for axis in ("wcs", "gain_card", "magzp"):
        assert {getattr(c, axis) for c in cells} == {True, False}
    assert {c.first_night[:4] for c in cells} == {"2003", "2015"}
    conv = [skygen.conventions(c) for c in cells]
    assert {c["science"] for c in conv} == set(skygen.SCIENCE_TYPES)
    assert {c["bias"] for c, cell in zip(conv, cells, strict=True) if cell.state == "raw"} == set(skygen.BIAS_TYPES)
    assert {c["gain_keys"] for c in conv} - {None} == set(skygen.GAIN_KEYS)
    assert {c["time_cards"] for c in conv} == set(skygen.TIME_CARDS)
    assert len({c.name for c in cells}) == len(cells)


def test_same_cell_gives_identical_bytes(tmp_path):
    cell = Cell("t-det", state="raw", fwhm=2.5, seed=5, n_nights=2, frames_per_night=1)
    a = skygen.write_drop(tmp_path / "a", cell)
    skymodel._plan.cache_clear()
    skymodel._night.cache_clear()
    b = skygen.write_drop(tmp_path / "b", cell)
    assert a.equals(b)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").glob("*/*.fits"))
    assert len(files) == 2 * 14
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    other = skygen.write_drop(tmp_path / "c", dataclasses.replace(cell, seed=6))
    assert not np.allclose(other[["x", "y"]].to_numpy()[:3], a[["x", "y"]].to_numpy()[:3])
