"""Cosmic rays without star cores: L.A.Cosmic with the noise model of the data and the measured PSF
(calibrate.py), on frames with known hits and stars (frame_scenes, not the pipeline's simulator).

Figures (van Dokkum 2001 describes why an undersampled PSF needs a higher object limit):
* recall: fraction of the pixels holding > 10 sky sigma of hit charge that are masked, >= 90 %;
* star cores: pixels within 1 FWHM of stars with peak S/N > 20 (away from hits), < 1 % masked;
* a sky-subtracted frame: < 2 % of its pixels masked.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrid_assets.science import masks
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.calibration.cosmics import (
    COSMIC_OBJLIM,
    cosmic_ray_mask,
    lacosmic_objlim,
    quick_fwhm,
    spare_psf_like,
)
from astrid_assets_tests.science.frame_scenes import cosmic_scores, identity_masters, make_scene


def cosmic(calibrated) -> np.ndarray:
    return (calibrated.mask & masks.COSMIC_RAY) != 0


@pytest.fixture(scope="module", params=[1.3, 1.6], ids=["fwhm1.3", "fwhm1.6"])
def undersampled(request):
    scene = make_scene(request.param, n_stars=300, seed=4)
    header = fits.Header({"IMAGETYP": "object", "GAIN": 1.0, "RDNOISE": 5.0, "EXPTIME": 60.0})
    return scene, calibrate_frame(scene.electrons, header, identity_masters(scene.electrons.shape))


def test_undersampled_star_cores_are_spared_and_hits_are_found(undersampled):
    scene, calibrated = undersampled
    scores = cosmic_scores(scene, cosmic(calibrated))
    assert scores["hits"] > 300 and scores["cores"] > 800
    assert scores["recall"] >= 0.90, scores
    assert scores["core_masked"] < 0.01, scores
    assert scores["masked_fraction"] < 0.01, scores
    info = calibrated.info
    assert info["cr_fwhm_px"] == pytest.approx(scene.fwhm, rel=0.1)
    assert info["cr_objlim"] > COSMIC_OBJLIM and info["cr_spared"] > 0


def test_moffat_psfs_are_spared_too():
    scene = make_scene(1.6, n_stars=300, seed=6, psf="moffat", beta=2.5)
    header = fits.Header({"IMAGETYP": "object", "GAIN": 1.0, "RDNOISE": 5.0})
    scores = cosmic_scores(scene, cosmic(calibrate_frame(scene.electrons, header,
                                                          identity_masters(scene.electrons.shape))))
    assert scores["recall"] >= 0.90 and scores["core_masked"] < 0.01, scores


def test_sky_subtracted_frame_is_not_eaten():
    """Survey cut-outs: sky removed, small units, and the fetcher's assumed GAIN = 1 / RDNOISE = 0 —
    which as a Poisson model made L.A.Cosmic flag most of the frame."""
    scene = make_scene(1.6, n_stars=300, seed=7)
    data = ((scene.electrons - 300.0) * 0.02).astype(np.float32)
    header = fits.Header()
    header["IMAGETYP"] = "object"
    header["GAIN"] = (1.0, "[e-/ADU] assumed: resampled survey pixels")
    header["RDNOISE"] = (0.0, "[e-] assumed: resampled survey pixels")
    calibrated = calibrate_frame(data, header, identity_masters(data.shape))
    assert calibrated.info["data_state"] == "sky-subtracted"
    scores = cosmic_scores(scene, cosmic(calibrated))
    assert scores["masked_fraction"] < 0.02, scores
    assert scores["recall"] >= 0.90 and scores["core_masked"] < 0.01, scores


def test_well_sampled_frames_keep_the_default_object_limit():
    assert lacosmic_objlim(None) == lacosmic_objlim(3.0) == COSMIC_OBJLIM
    assert lacosmic_objlim(1.3) > lacosmic_objlim(1.6) > lacosmic_objlim(2.2) > COSMIC_OBJLIM
    scene = make_scene(3.0, n_stars=300, seed=5)
    header = fits.Header({"IMAGETYP": "object", "GAIN": 1.0, "RDNOISE": 5.0})
    calibrated = calibrate_frame(scene.electrons, header, identity_masters(scene.electrons.shape))
    scores = cosmic_scores(scene, cosmic(calibrated))
    assert calibrated.info["cr_objlim"] == COSMIC_OBJLIM
    assert scores["recall"] >= 0.95 and scores["core_masked"] < 0.01, scores


def test_quick_fwhm_and_the_psf_test_on_their_own():
    scene = make_scene(1.3, shape=(256, 256), n_stars=120, n_cosmic=60, seed=9)
    signal = scene.electrons - 300.0
    rms = np.full(signal.shape, scene.sky_sigma, np.float32)
    assert quick_fwhm(signal, rms, np.zeros(signal.shape, bool)) == pytest.approx(1.3, rel=0.08)
    variance = np.full(signal.shape, scene.sky_sigma**2) + np.clip(scene.stars, 0, None)
    plain = cosmic_ray_mask(scene.electrons, np.zeros(signal.shape, bool), np.zeros(signal.shape, bool), 5.0, 1e30,
                            variance.astype(np.float32))  # no FWHM: plain L.A.Cosmic, objlim 5
    before = cosmic_scores(scene, plain)
    after_mask, spared = spare_psf_like(plain, signal, variance, 1.3)
    after = cosmic_scores(scene, after_mask)
    assert before["core_masked"] > 0.5  # the undersampled cores look like hits
    assert spared > 0 and after["core_masked"] < 0.05 and after["recall"] >= 0.9, (before, after)


def test_a_flag_beside_an_undersampled_peak_is_tested_at_the_peak():
    """L.A.Cosmic can flag a pixel next to an undersampled star's peak and not the peak: the group's own
    brightest pixel is then no local maximum. Tested at the peak it climbs to, it is a star and spared;
    lone hits stay flagged. (This flag, on a transient in one frame, kept it out of a co-added reference.)"""
    scene = make_scene(1.25, shape=(200, 200), n_stars=60, n_cosmic=25, seed=12)
    signal = scene.electrons - 300.0
    variance = np.full(signal.shape, scene.sky_sigma**2) + np.clip(scene.stars, 0, None)
    inside = (scene.xs > 5) & (scene.xs < 194) & (scene.ys > 5) & (scene.ys < 194)
    bright = np.flatnonzero((scene.peak_snr > 20) & inside)
    crmask = (scene.cosmic > 10 * scene.sky_sigma).copy()
    beside = []
    for k in bright:
        iy, ix = int(round(scene.ys[k])), int(round(scene.xs[k]))
        if crmask[iy - 3 : iy + 4, ix - 3 : ix + 4].any():
            continue
        peak = np.unravel_index(np.argmax(signal[iy - 1 : iy + 2, ix - 1 : ix + 2]), (3, 3))
        py, px = iy + peak[0] - 1, ix + peak[1] - 1
        crmask[py + 1, px - 1] = True  # a diagonal neighbour of the peak, the peak itself not flagged
        beside.append((py + 1, px - 1))
    assert len(beside) >= 10
    spared, _ = spare_psf_like(crmask, signal, variance, 1.25)
    assert not any(spared[y, x] for y, x in beside)
    hits = scene.cosmic > 10 * scene.sky_sigma
    assert spared[hits].mean() >= 0.95


def test_group_peaks_are_scipys_maximum_positions():
    """The brightest pixel of each cosmic-ray candidate group, found among the labelled pixels only."""
    from scipy import ndimage

    from astrid_assets.science.calibration.cosmics import _group_peaks

    rng = np.random.default_rng(0)
    for _ in range(5):
        values = rng.normal(size=(300, 280)).astype(np.float32)  # no ties: scipy leaves their order to its sort
        labels, n = ndimage.label(rng.random(values.shape) < 0.03, structure=np.ones((3, 3), bool))
        expected = np.array(ndimage.maximum_position(values, labels, np.arange(1, n + 1)), dtype=int)
        ys, xs = _group_peaks(values, labels)
        np.testing.assert_array_equal(np.column_stack([ys, xs]), expected)
