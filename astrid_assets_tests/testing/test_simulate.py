"""Known-answer tests of the simulated survey: noise, PSF, WCS, determinism and transients."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import sep
from astropy.time import Time
from astropy.wcs import WCS
from scipy import integrate

from astrid_assets.science.psf.profile_fit import fit_moffat
from astrid_assets.testing import simulate
from astrid_assets.testing.simulate import (
    TRUTH_COLUMNS,
    SurveyConfig,
    detector,
    point_sources,
    simulate_frame,
    simulate_night,
    transient_catalogue,
)

CONFIG = SurveyConfig()
NIGHT = "2024-01-10"
NO_SOURCES = point_sources([], [], [])


@pytest.fixture(scope="module")
def night_frames() -> list[simulate.SimulatedFrame]:
    return simulate_night(NIGHT, CONFIG)  # how long it takes: benchmarks/bench_simulate.py


def star_grid(flux: float, spacing: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel star positions on a grid away from the edges (pixels, 0-based)."""
    rng = np.random.default_rng(7)
    centres = np.arange(spacing, CONFIG.shape[1] - spacing + 1, spacing, dtype=float)
    x, y = np.meshgrid(centres, centres)
    return x.ravel() + rng.uniform(-0.5, 0.5, x.size), y.ravel() + rng.uniform(-0.5, 0.5, y.size)


def electrons_above_sky(frame: simulate.SimulatedFrame, defects: bool = False) -> np.ndarray:
    """Raw frame minus the true bias, in electrons, minus the median sky (no flat applied)."""
    electrons = (frame.data - detector(CONFIG, defects).bias) * CONFIG.gain
    return electrons - np.median(electrons)


# --------------------------------------------------------------------------- noise and PSF


def test_blank_sky_noise_is_poisson_in_electrons_plus_read_noise():
    frame = simulate_frame(
        "F01", NIGHT, 0, CONFIG, sources=NO_SOURCES, flat_field=False, cosmic_rays=False, defects=False
    )
    residual = frame.data.astype(np.float64) - detector(CONFIG, defects=False).bias
    sky_adu = residual.mean()
    expected_noise = np.sqrt(sky_adu * CONFIG.gain + CONFIG.read_noise**2) / CONFIG.gain
    assert residual.std() / expected_noise == pytest.approx(1.0, abs=0.03)
    # the level itself: sky + dark current, converted with the gain
    expected_level = (frame.header["SKYLEV"] + CONFIG.dark_current * CONFIG.exptime) / CONFIG.gain
    assert sky_adu == pytest.approx(expected_level, rel=0.002)


@pytest.mark.parametrize("seeing", [2.5, 3.5])
def test_rendered_stars_have_the_requested_fwhm(seeing):
    x, y = star_grid(flux=2e5)
    frame = simulate_frame(
        "F01",
        NIGHT,
        0,
        CONFIG,
        seeing=seeing,
        sources=point_sources(x, y, np.full(x.size, 2e5)),
        flat_field=False,
        cosmic_rays=False,
        defects=False,
    )
    assert frame.header["SEEING"] == seeing
    electrons = electrons_above_sky(frame)
    variance = np.abs(electrons) + frame.header["SKYLEV"] + CONFIG.read_noise**2
    half = int(3 * seeing)
    fwhms, beta = [], []
    for xc, yc in zip(np.round(x).astype(int), np.round(y).astype(int), strict=True):
        cut = np.s_[yc - half : yc + half + 1, xc - half : xc + half + 1]
        fit = fit_moffat(electrons[cut], variance[cut], seeing)
        fwhms.append(fit.fwhm)
        beta.append(fit.beta)
    measured_arcsec = np.median(fwhms) * CONFIG.pixel_scale
    assert measured_arcsec == pytest.approx(seeing, rel=0.05)
    assert np.median(beta) == pytest.approx(CONFIG.moffat_beta, rel=0.15)

    # the flux is all there: a large aperture holds the Moffat's enclosed fraction
    image = np.ascontiguousarray(electrons, dtype=np.float32)
    alpha = simulate.moffat_alpha(seeing / CONFIG.pixel_scale, CONFIG.moffat_beta)
    flux, _, _ = sep.sum_circle(image, x, y, 15.0, subpix=10, bkgann=(20.0, 30.0))
    enclosed = 1 - (1 + (15.0 / alpha) ** 2) ** (1 - CONFIG.moffat_beta)
    annulus_share = (1 + (20.0 / alpha) ** 2) ** (1 - CONFIG.moffat_beta) - (1 + (30.0 / alpha) ** 2) ** (
        1 - CONFIG.moffat_beta
    )
    enclosed -= annulus_share * (15.0**2 / (30.0**2 - 20.0**2))  # star light in the sky annulus
    assert np.median(flux) == pytest.approx(2e5 * enclosed, rel=0.01)


@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.3, -0.45)])
def test_stars_are_integrated_over_pixels_not_sampled_at_centres(offset):
    fwhm, beta = 2.5, CONFIG.moffat_beta
    alpha = simulate.moffat_alpha(fwhm, beta)
    x, y = np.array([20.0 + offset[0]]), np.array([20.0 + offset[1]])
    stamps, y0, x0 = simulate.moffat_stamps(x, y, fwhm, beta, radius=12, oversample=5)

    def moffat(v: float, u: float) -> float:
        return (beta - 1) / (np.pi * alpha**2) * (1 + (u * u + v * v) / alpha**2) ** (-beta)

    for dy, dx in ((0, 0), (0, 1), (1, 1), (-2, 0)):
        j, i = 20 + dy - y0[0], 20 + dx - x0[0]
        u0, v0 = 20 + dx - x[0], 20 + dy - y[0]
        exact, _ = integrate.dblquad(moffat, u0 - 0.5, u0 + 0.5, v0 - 0.5, v0 + 0.5, epsabs=1e-10)
        assert stamps[0, j, i] == pytest.approx(exact, rel=4e-3)  # midpoint rule, 5x5 per pixel
    centre_sampled = moffat(20 - y[0], 20 - x[0])
    assert abs(stamps[0, 20 - y0[0], 20 - x0[0]] / centre_sampled - 1) > 0.02


def test_rendered_positions_follow_the_numpy_pixel_convention():
    x, y = star_grid(flux=1e5)
    frame = simulate_frame(
        "F01",
        NIGHT,
        0,
        CONFIG,
        sources=point_sources(x, y, np.full(x.size, 1e5)),
        flat_field=False,
        cosmic_rays=False,
        defects=False,
    )
    image = np.ascontiguousarray(electrons_above_sky(frame), dtype=np.float32)
    xw, yw, _ = sep.winpos(image, x, y, np.full(x.size, 1.5))
    assert np.max(np.hypot(xw - x, yw - y)) < 0.05


# --------------------------------------------------------------------------- WCS


def test_wcs_round_trip_and_truth_positions(night_frames):
    frames = night_frames
    science = [frame for frame in frames if frame.header["IMAGETYP"] == "object"]
    for frame in science:
        wcs = WCS(frame.header)
        px, py = np.meshgrid(np.linspace(0, 511, 9), np.linspace(0, 511, 9))
        ra, dec = wcs.pixel_to_world_values(px, py)
        bx, by = wcs.world_to_pixel_values(ra, dec)
        assert np.max(np.hypot(bx - px, by - py)) < 0.01
        tx, ty = wcs.world_to_pixel_values(frame.truth.ra.to_numpy(), frame.truth.dec.to_numpy())
        assert np.max(np.hypot(tx - frame.truth.x, ty - frame.truth.y)) < 0.01
        # pixel scale, rotation and pointing jitter are as configured
        cd = wcs.pixel_scale_matrix * 3600
        assert np.sqrt(abs(np.linalg.det(cd))) == pytest.approx(CONFIG.pixel_scale, rel=1e-6)
        rotation = np.degrees(np.arctan2(cd[0, 1], -cd[0, 0]))
        assert abs(rotation) <= CONFIG.max_rotation_deg
        ra0, dec0 = simulate.field_center(frame.field, CONFIG)
        offset = np.hypot((wcs.wcs.crval[0] - ra0) * np.cos(np.radians(dec0)), wcs.wcs.crval[1] - dec0) * 3600
        assert 0 < offset < 5 * CONFIG.pointing_jitter
    assert len({frame.header["CRVAL1"] for frame in science}) == len(science)


# --------------------------------------------------------------------------- determinism


def test_same_seed_night_field_gives_identical_frames(night_frames):
    frames = night_frames
    from_night = next(frame for frame in frames if frame.frame_id == "F02-20240110-s002")
    again = simulate_frame("F02", NIGHT, 1, CONFIG)
    assert np.array_equal(from_night.data, again.data)
    assert np.array_equal(from_night.cosmic_rays, again.cosmic_rays)
    assert from_night.truth.equals(again.truth)
    assert from_night.header.tostring() == again.header.tostring()
    other_night = simulate_frame("F02", "2024-01-11", 1, CONFIG)
    assert not np.array_equal(from_night.data, other_night.data)
    assert from_night.header["SEEING"] != other_night.header["SEEING"]
    other_seed = simulate_frame("F02", NIGHT, 1, SurveyConfig(seed=CONFIG.seed + 1))
    assert not np.array_equal(from_night.data, other_seed.data)


def test_static_sky_is_the_same_every_night(night_frames):
    frames = night_frames
    first = next(frame for frame in frames if frame.frame_id == "F01-20240110-s001").truth
    later = simulate_frame("F01", "2024-02-20", 2, CONFIG).truth
    static = ["star", "galaxy"]
    a = first[first.kind.isin(static)].set_index("source_id")
    b = later[later.kind.isin(static)].set_index("source_id")
    common = a.index.intersection(b.index)
    assert len(common) > 0.95 * min(len(a), len(b))
    assert np.array_equal(
        a.loc[common, ["ra", "dec", "flux", "flux_baseline"]], b.loc[common, ["ra", "dec", "flux", "flux_baseline"]]
    )
    assert (a.flux == a.flux_baseline).all()
    assert not np.allclose(a.loc[common, "x"], b.loc[common, "x"])  # but the pointing moved
    assert simulate.sky_catalogue("F01", CONFIG).equals(simulate.sky_catalogue("F01", CONFIG))
    assert not simulate.sky_catalogue("F01", CONFIG).ra.equals(simulate.sky_catalogue("F02", CONFIG).ra)


# --------------------------------------------------------------------------- transients


def test_supernovae_explode_after_the_reference_window():
    supernovae = transient_catalogue("F01", CONFIG).query("kind == 'supernova'")
    assert len(supernovae) == CONFIG.n_supernovae
    first = Time("2024-01-06T00:00:00").mjd
    last = Time("2024-04-01T00:00:00").mjd
    assert ((supernovae.t_explosion >= first) & (supernovae.t_explosion <= last)).all()
    assert supernovae.peak_snr.min() >= 5 and supernovae.peak_snr.max() <= 200
    assert (supernovae.t_rise.between(10, 20)).all()
    for night in ("2024-01-01", "2024-01-05"):
        truth = simulate.sources_at("F01", night, simulate.exposure_start("F01", night, 0, CONFIG), CONFIG)
        assert (truth.query("kind == 'supernova'").flux == 0).all()
        assert not (truth.kind == "asteroid").any()


def test_a_supernova_is_absent_before_explosion_and_present_after():
    supernovae = transient_catalogue("F01", CONFIG).query("kind == 'supernova'")
    sn = supernovae.loc[supernovae.peak_snr.idxmax()]
    explosion = Time(sn.t_explosion, format="mjd").datetime.date()
    clean = dict(cosmic_rays=False, flat_field=False, defects=False)
    before = simulate_frame("F01", explosion - dt.timedelta(days=1), 0, CONFIG, **clean)
    peak = simulate_frame("F01", explosion + dt.timedelta(days=round(sn.t_rise)), 0, CONFIG, **clean)
    row_before = before.truth.set_index("source_id").loc[sn.source_id]
    row_peak = peak.truth.set_index("source_id").loc[sn.source_id]
    assert row_before.flux == 0 and row_before.snr == 0 and np.isnan(row_before.mag)
    assert row_peak.flux > 0.8 * 10 ** (-0.4 * (sn.peak_mag - CONFIG.zero_point)) * CONFIG.exptime
    assert row_peak.flux_baseline == 0 and row_peak.snr > 50
    # ... and it is in the pixels: aperture sum at the SN minus the same aperture before explosion
    sums = []
    for frame, row in ((before, row_before), (peak, row_peak)):
        image = np.ascontiguousarray(frame.data - detector(CONFIG, False).bias, dtype=np.float32) * CONFIG.gain
        image -= np.median(image)
        total, _, _ = sep.sum_circle(image, [row.x], [row.y], 12.0)
        sums.append(total[0])
    assert sums[1] - sums[0] == pytest.approx(row_peak.flux, rel=0.1)


def test_variable_star_baseline_is_its_mean_flux():
    variables = transient_catalogue("F01", CONFIG).query("kind == 'variable'")
    times = np.random.default_rng(1).uniform(60300, 61300, 4000)
    fluxes = np.array([simulate.variable_flux(t, variables, 60.0, 25.0)[0] for t in times])
    _, baseline = simulate.variable_flux(times[0], variables, 60.0, 25.0)
    assert fluxes.mean(axis=0) == pytest.approx(baseline, rel=0.01)
    amplitude = -2.5 * np.log10(fluxes.min(axis=0) / fluxes.max(axis=0))
    assert amplitude == pytest.approx(variables.amplitude.to_numpy(), rel=0.02)


def test_the_asteroid_moves_between_frames(night_frames):
    frames = night_frames
    rows = [frame.truth.query("kind == 'asteroid'").iloc[0] for frame in frames if frame.field == "F01"]
    assert len(rows) == CONFIG.frames_per_night and len({row.source_id for row in rows}) == 1
    track = simulate.asteroid_track("F01", NIGHT, CONFIG)
    rate = np.hypot(track["rate_ra"], track["rate_dec"])  # arcsec / min
    for first, second in zip(rows, rows[1:], strict=False):
        moved = np.hypot((second.ra - first.ra) * np.cos(np.radians(first.dec)), second.dec - first.dec) * 3600
        assert moved == pytest.approx(rate * CONFIG.frame_interval_min, rel=0.01)
        assert moved > 5
    assert simulate.asteroid_track("F01", "2024-01-05", CONFIG) is None


# --------------------------------------------------------------------------- frames and detector


def test_a_night_has_calibrations_and_science_frames(night_frames):
    frames = night_frames
    kinds = [frame.header["IMAGETYP"] for frame in frames]
    assert kinds.count("bias") == CONFIG.n_bias and kinds.count("dark") == CONFIG.n_dark
    assert kinds.count("flat") == CONFIG.n_flat
    assert kinds.count("object") == len(CONFIG.fields) * CONFIG.frames_per_night
    assert len({frame.frame_id for frame in frames}) == len(frames)
    assert {"F01-20240110-s001", "CAL-20240110-bias01", "CAL-20240110-flat05"} <= {f.frame_id for f in frames}
    for frame in frames:
        assert frame.data.dtype == np.float32 and frame.data.shape == CONFIG.shape
        assert list(frame.truth.columns) == list(TRUTH_COLUMNS)
        header = frame.header
        assert Time(header["DATE-OBS"], scale="utc").mjd == pytest.approx(header["MJD-OBS"], abs=1e-8)
        for key in ("FILTER", "EXPTIME", "GAIN", "RDNOISE", "SATURATE", "FIELD"):
            assert key in header
        assert frame.data.max() <= header["SATURATE"]
        hdus = frame.to_hdulist()
        assert np.array_equal(hdus[0].data, frame.data) and hdus[0].header["IMAGETYP"] == header["IMAGETYP"]
        if header["IMAGETYP"] == "object":
            assert {"MAGZP", "SEEING"} <= set(header) and WCS(header).has_celestial
            assert 2.5 <= header["SEEING"] <= 3.5
            assert set(frame.truth.kind) <= set(simulate.SOURCE_KINDS)
        else:
            assert frame.truth.empty and frame.field == "CAL"
    flats = [frame.data for frame in frames if frame.header["IMAGETYP"] == "flat"]
    assert max(flat.max() for flat in flats) < CONFIG.saturate


def test_bad_columns_are_the_same_in_every_frame(night_frames):
    frames = night_frames
    det = detector(CONFIG)
    dead = det.bad_columns["dead"][0]
    for frame in frames:
        if frame.header["IMAGETYP"] in ("flat", "object"):
            neighbours = np.median(frame.data[:, [dead - 3, dead + 3]]) - np.median(det.bias)
            level = np.median(frame.data[:, dead]) - np.median(det.bias)
            assert level < 0.1 * neighbours
    hot = det.bad_columns["hot"][0]
    for frame in frames:
        if frame.header["IMAGETYP"] == "dark":
            rows = slice(det.hot_column_start, None)
            excess = np.median(frame.data[rows, hot] - frame.data[rows, hot - 2]) * CONFIG.gain
            assert excess == pytest.approx(CONFIG.hot_column_dark * CONFIG.dark_exptime, rel=0.2)


def test_a_bright_star_saturates_and_bleeds_along_its_column():
    frame = simulate_frame(
        "F01", NIGHT, 0, CONFIG, sources=point_sources([200.3], [300.6], [2e7]), cosmic_rays=False, defects=False
    )
    assert frame.data[301, 200] == CONFIG.saturate
    rows, cols = np.nonzero(frame.saturated)
    assert np.ptp(rows) > 2 * np.ptp(cols)  # bleed trail runs along the column


def test_cosmic_rays_are_sharp_and_unflattened():
    blank = dict(sources=NO_SOURCES, defects=False)
    flat = simulate_frame("F01", NIGHT, 0, CONFIG, flat_field=True, **blank)
    assert flat.cosmic_rays.sum() > 50
    assert np.array_equal(flat.cosmic_rays, flat.cosmic_ray_electrons > 0)
    # single-pixel hits exist: some hit pixels have no hit neighbour
    hits = flat.cosmic_rays
    padded = np.pad(hits, 1)
    neighbours = sum(np.roll(np.roll(padded, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))[1:-1, 1:-1]
    assert np.any(hits & (neighbours == 1))
    # the deposited charge reaches the raw frame without the flat-field response
    no_cr = simulate_frame("F01", NIGHT, 0, CONFIG, flat_field=True, cosmic_rays=False, **blank)
    added = (flat.data.astype(float) - no_cr.data) * CONFIG.gain
    assert np.allclose(added[~hits], 0)
    vignetted = detector(CONFIG, defects=False).flat < 0.93
    strong = (flat.cosmic_ray_electrons > 1000) & vignetted
    assert strong.sum() > 3
    ratio = np.median(added[strong] / flat.cosmic_ray_electrons[strong])
    assert ratio == pytest.approx(1.0, abs=0.02)
