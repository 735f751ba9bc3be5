"""Known-answer tests of CCD reduction (calibrate.py) and frame quality (quality.py) on simulated frames."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrid_assets.science import masks
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.calibration.masters import MasterCalibrations, build_masters, sigma_clipped_combine
from astrid_assets.science.calibration.quality import (
    QualityLimits,
    mark_seeing_outliers,
    measure_quality,
    seeing_outliers,
    verdict,
)
from astrid_assets.science.products import CalibratedFrame
from astrid_assets.testing.simulate import (
    SurveyConfig,
    detector,
    point_sources,
    simulate_calibrations,
    simulate_frame,
)

CONFIG = SurveyConfig()
NIGHT = "2024-01-10"
BOX = 64  # pixels, side of the boxes whose sky medians are compared


@pytest.fixture(scope="module")
def masters() -> MasterCalibrations:
    frames = simulate_calibrations(NIGHT, CONFIG)
    by_type = {kind: [f for f in frames if f.header["IMAGETYP"] == kind] for kind in ("bias", "dark", "flat")}
    return build_masters(
        [f.data for f in by_type["bias"]],
        [(f.data, f.header["EXPTIME"]) for f in by_type["dark"]],
        [f.data for f in by_type["flat"]],
    )


@pytest.fixture(scope="module")
def science(masters):
    """Two full simulated science frames and their calibrations."""
    frames = [simulate_frame("F01", NIGHT, 0, CONFIG), simulate_frame("F02", NIGHT, 1, CONFIG)]
    return [(frame, calibrate_frame(frame.data, frame.header, masters)) for frame in frames]


@pytest.fixture(scope="module")
def blank_sky(masters):
    frame = simulate_frame("F01", NIGHT, 2, CONFIG, sources=point_sources([], [], []))
    return frame, calibrate_frame(frame.data, frame.header, masters)


def box_medians(image: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Median of the good pixels in each BOX x BOX box."""
    ny, nx = image.shape
    values = np.where(good, image, np.nan).reshape(ny // BOX, BOX, nx // BOX, BOX).swapaxes(1, 2)
    return np.nanmedian(values.reshape(ny // BOX, nx // BOX, -1), axis=2)


def flagged(calibrated: CalibratedFrame, flag: np.uint16) -> np.ndarray:
    return (calibrated.mask & flag) != 0


def noise_electrons(frame) -> np.ndarray:
    """True per-pixel noise (e-) of the raw frame before cosmic rays: sky, dark, read noise."""
    det = detector(CONFIG)
    return np.sqrt(det.flat * frame.header["SKYLEV"] + det.dark * CONFIG.exptime + CONFIG.read_noise**2)


# --------------------------------------------------------------------------- masters


def test_sigma_clipped_combine_rejects_a_cosmic_ray_in_a_small_stack():
    rng = np.random.default_rng(3)
    frames = [100 + rng.normal(0, 2, (32, 32)) for _ in range(5)]
    frames[2][10, 10] += 5000
    combined = sigma_clipped_combine(frames)
    assert combined.dtype == np.float32
    assert abs(combined[10, 10] - 100) < 5
    assert abs(combined.mean() - 100) < 0.1
    assert np.mean(frames, axis=0)[10, 10] > 1000  # a plain mean would not


def test_masters_in_row_blocks_and_threads_equal_the_whole_stack_at_once():
    """Each pixel is combined on its own: blocks of rows, on threads, give astropy's whole-stack result to the bit."""
    from astropy.stats import sigma_clip

    from astrid_assets.science.calibration.masters import ROW_BLOCK, flat_defects

    rng = np.random.default_rng(5)
    frames = [1000 + rng.normal(0, 10, (2 * ROW_BLOCK + 37, 50)) for _ in range(6)]
    for frame in frames:
        hit = rng.random(frame.shape) < 0.02
        frame[hit] += rng.uniform(100, 5000, hit.sum())
    stack = np.stack(frames)
    clipped = sigma_clip(stack, sigma=3.0, axis=0, cenfunc="median", stdfunc="mad_std", maxiters=3)
    whole = np.ma.filled(np.ma.mean(clipped, axis=0), np.median(stack, axis=0)).astype(np.float32)
    assert np.array_equal(sigma_clipped_combine(frames), whole)
    assert np.array_equal(sigma_clipped_combine(frames, threads=3), whole)
    flat = 1 + rng.normal(0, 0.01, frames[0].shape)
    flat[ROW_BLOCK - 1 :, 20] = 0.8  # a bad column across the blocks' seams
    assert np.array_equal(flat_defects(flat, threads=2), flat_defects(flat)) and flat_defects(flat)[:, 20].sum() > 200


def test_masters_recover_the_detector(masters):
    det = detector(CONFIG)
    assert masters.bias.shape == masters.dark.shape == masters.flat.shape == CONFIG.shape
    read_noise_adu = CONFIG.read_noise / CONFIG.gain
    assert np.std(masters.bias - det.bias) < read_noise_adu  # 5 biases averaged: ~rn/sqrt(5)
    assert np.median(masters.flat) == pytest.approx(1.0, abs=1e-6)
    good = ~det.defects
    assert np.median(np.abs(masters.flat - det.flat)[good]) < 0.005
    hot = det.bad_columns["hot"][0]
    rate = np.median(masters.dark[det.hot_column_start :, hot])  # ADU/s
    assert rate * CONFIG.gain == pytest.approx(CONFIG.dark_current + CONFIG.hot_column_dark, rel=0.05)
    assert np.median(masters.dark) * CONFIG.gain == pytest.approx(CONFIG.dark_current, abs=0.01)


def test_bad_columns_and_hot_pixels_are_found(masters, science):
    det = detector(CONFIG)
    assert masters.bad_pixels[det.defects].all()
    false_bad = masters.bad_pixels & ~det.defects
    assert false_bad.mean() < 1e-4
    for _, calibrated in science:
        bad = flagged(calibrated, masks.BAD_PIXEL)
        for kind in ("dead", "low"):
            for column in det.bad_columns[kind]:
                assert bad[:, column].all(), kind
        for column in det.bad_columns["hot"]:
            assert bad[det.hot_column_start :, column].all()
        assert bad[det.hot_pixels].all()


def test_shape_mismatch_is_a_clear_error(masters):
    raw = np.zeros((100, 120), np.float32)
    with pytest.raises(ValueError, match="shape"):
        calibrate_frame(raw, fits.Header({"GAIN": 1.6, "RDNOISE": 5.0, "EXPTIME": 60.0}), masters)
    with pytest.raises(ValueError, match="shape"):
        build_masters([np.zeros((10, 10))], [], [np.ones((10, 12))])


# --------------------------------------------------------------------------- calibrated frames


def test_flat_fielded_sky_is_uniform_and_in_electrons(blank_sky):
    frame, calibrated = blank_sky
    assert calibrated.science.dtype == np.float32 and calibrated.mask.dtype == np.uint16
    good = (calibrated.mask & (masks.UNUSABLE | masks.EDGE)) == 0
    boxes = box_medians(calibrated.science, good)
    assert np.ptp(boxes) / np.median(boxes) < 0.01
    assert np.std(calibrated.background) / np.mean(calibrated.background) < 0.01
    # sky level in electrons at median response, as the simulator defines it
    assert np.median(boxes) == pytest.approx(frame.header["SKYLEV"], rel=0.005)
    # the vignetting that was removed is far larger than the tolerance
    raw_boxes = box_medians(frame.data - detector(CONFIG).bias, good)
    assert np.ptp(raw_boxes) / np.median(raw_boxes) > 0.05


def test_noise_maps_match_the_pixel_noise(blank_sky):
    frame, calibrated = blank_sky
    good = (calibrated.mask & (masks.UNUSABLE | masks.EDGE)) == 0
    residual = (calibrated.science - calibrated.background)[good]
    measured = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    assert np.median(calibrated.background_rms[good]) == pytest.approx(measured, rel=0.03)
    assert np.sqrt(np.median(calibrated.variance[good])) == pytest.approx(measured, rel=0.05)
    assert np.median(calibrated.background_rms) == pytest.approx(np.median(noise_electrons(frame)), rel=0.05)


def test_cosmic_rays_are_masked_without_masking_clean_pixels(science, blank_sky):
    """Completeness per pixel: pixels whose injected charge exceeds 5 sigma of the local noise.
    False masks: pixels with no injected charge flagged COSMIC_RAY."""
    found, total, false, clean = 0, 0, 0, 0
    for frame, calibrated in [*science, blank_sky]:
        strong = frame.cosmic_ray_electrons > 5 * noise_electrons(frame)
        masked = (calibrated.mask & masks.UNUSABLE) != 0
        found += int((strong & masked).sum())
        total += int(strong.sum())
        cosmic = flagged(calibrated, masks.COSMIC_RAY)
        false += int((cosmic & ~frame.cosmic_rays).sum())
        clean += int((~frame.cosmic_rays).sum())
    assert total > 500
    assert found / total >= 0.95
    assert false / clean < 1e-3


def test_saturated_stars_are_flagged(masters):
    frame = simulate_frame("F01", NIGHT, 0, CONFIG, sources=point_sources([200.3, 400.0], [300.6, 100.2], [2e7, 3e4]))
    calibrated = calibrate_frame(frame.data, frame.header, masters)
    saturated = flagged(calibrated, masks.SATURATED)
    assert frame.saturated.sum() > 10
    assert saturated[frame.saturated].all()
    assert saturated[301, 200] and not saturated[100, 400]
    assert saturated.sum() < 4 * frame.saturated.sum()


def test_edges_are_flagged(blank_sky):
    _, calibrated = blank_sky
    edge = flagged(calibrated, masks.EDGE)
    assert edge[:8].all() and edge[-8:].all() and edge[:, :8].all() and edge[:, -8:].all()
    assert not edge[8:-8, 8:-8].any()


# --------------------------------------------------------------------------- quality


def test_measured_fwhm_matches_the_seeing_header(science):
    for frame, calibrated in science:
        quality = measure_quality(calibrated, frame.header)
        assert quality["fwhm_arcsec"] == pytest.approx(frame.header["SEEING"], rel=0.10)
        assert quality["fwhm_px"] == pytest.approx(quality["fwhm_arcsec"] / CONFIG.pixel_scale, rel=1e-6)
        assert 1.0 <= quality["elongation"] < 1.15
        assert quality["sky"] == pytest.approx(frame.header["SKYLEV"], rel=0.01)
        assert quality["n_sources"] >= 30 and 0 < quality["masked_fraction"] < 0.02
        assert 0 < quality["quality_score"] <= 1
        # depth: the magnitude at which the injected stars reach S/N 5 (truth, frame centre)
        stars = frame.truth.query("kind == 'star' and abs(x - 256) < 150 and abs(y - 256) < 150")
        stars = stars.sort_values("snr")
        truth_depth = np.interp(np.log(5.0), np.log(stars.snr), stars.mag)
        assert quality["depth_mag"] == pytest.approx(truth_depth, abs=0.15)
        assert verdict(quality) == (True, [])


def test_terrible_seeing_is_not_usable(masters):
    frame = simulate_frame("F01", NIGHT, 0, CONFIG, seeing=6.0)
    quality = measure_quality(calibrate_frame(frame.data, frame.header, masters), frame.header)
    assert quality["fwhm_arcsec"] == pytest.approx(6.0, rel=0.10)
    usable, reasons = verdict(quality, QualityLimits(max_fwhm_arcsec=4.0))  # a site's own absolute limit
    assert not usable and any("FWHM" in reason for reason in reasons)
    # by default seeing is judged against the night's other frames of the field (no absolute limit)
    assert seeing_outliers(["F01"] * 3, [2.0, 2.2, quality["fwhm_px"]])[2].startswith("FWHM")
    assert seeing_outliers(["F01"] * 3, [2.0, 2.2, 2.1]) == ["", "", ""]
    usable, reasons = verdict(quality, QualityLimits(max_fwhm_arcsec=4.0))
    assert not usable and any("FWHM" in reason for reason in reasons)


def test_trailed_frame_is_not_usable(masters):
    frame = simulate_frame("F01", NIGHT, 0, CONFIG, trail_arcsec=8.0, trail_angle_deg=30.0)
    quality = measure_quality(calibrate_frame(frame.data, frame.header, masters), frame.header)
    usable, reasons = verdict(quality)  # no absolute seeing limit by default: the trail shows as elongation
    assert not usable and any("elongation" in reason for reason in reasons)
    usable, reasons = verdict(quality, QualityLimits(max_fwhm_arcsec=4.0))
    assert any("FWHM" in reason for reason in reasons) and any("elongation" in reason for reason in reasons)


def test_verdict_names_each_failed_limit():
    good = {"fwhm_arcsec": 2.5, "elongation": 1.05, "n_sources": 200, "masked_fraction": 0.01}
    assert verdict(good) == (True, [])
    limits = QualityLimits()
    bad = {"fwhm_arcsec": float("nan"), "elongation": 2.0, "n_sources": 0, "masked_fraction": 0.5}
    usable, reasons = verdict(bad, limits)
    assert not usable and len(reasons) == 4
    assert "FWHM" in reasons[0] and "elongation" in reasons[1] and reasons[2] == "no source detected"
    assert "masked" in reasons[3]
    # a sparse cut-out of a few stars is usable: a frame is refused for its sources only when it has none
    assert verdict({**good, "n_sources": 4}) == (True, [])


def test_a_nights_seeing_outlier_is_marked_unusable_with_its_reason():
    """calibrated_frames judges seeing against the night's other frames of the field (no absolute limit)."""
    import pandas as pd

    rows = pd.DataFrame({
        "frame_id": ["a", "b", "c", "d", "e", "f"], "field": ["F1", "F1", "F1", "F2", "F2", "F2"],
        "fwhm_px": [1.4, 1.5, 3.4, 6.0, 6.3, 5.8], "usable": [True, True, True, True, False, True],
        "reasons": [None, None, None, None, "only 3 sources detected (minimum 10)", None],
        "status": ["ok"] * 6})
    marked = mark_seeing_outliers(rows)
    assert marked.usable.tolist() == [True, True, False, True, False, True]  # 3.4 > 2 x 1.5; 6 px is F2's normal
    assert marked.reasons[2].startswith("FWHM 3.40 px exceeds 2 x the night's median 1.50 px")
    assert marked.reasons[4] == "only 3 sources detected (minimum 10)"
