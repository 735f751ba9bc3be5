"""Candidate flags on real-sky troubles, with known answers (scenes.py, 512², not the simulator).

Before / after (the same scenes; "before" is detect.py with MASKED reaching one FWHM from unusable
pixels, EDGE ``max(10, 3 FWHM)`` and no bright-star mask):

* A saturated star of 3e7 e- (full well 1e5 e-: 42 saturated pixels in the new image, 126 masked
  after the bleed growth of both images): before, 6 candidates, 4 of them 17–18 px from the star
  (12–13 px from the mask, |S_corr| 8.2–11.2) flagged only DIPOLE; after, all 6 MASKED (the mask
  is grown by the 15-px half-size of the 31-px P_D stamp).
* Bright transients 12.4 px inside the left and top borders (P_D FWHM 3.4 px, so the old edge
  was 10 px; the kernel half-size is 15 px): before, neither flagged EDGE; after, both.
* Saturated stars of 3e6 and 3e7 e-: before, no bright-star mask; after, BRIGHT_STAR reaches
  15.6 and 23.8 px from them in the new image (27.1 and 40.7 px in the deeper reference), and
  a transient 24 px from the fainter star (outside its MASKED reach) is flagged BRIGHT_STAR
  (before: no flag at all).
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from scipy.ndimage import distance_transform_edt

from astrid_assets.science import masks
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.calibration.detector import bright_star_radius, saturation_mask
from astrid_assets.science.detection import (
    FLAG_BRIGHT_STAR,
    FLAG_DIPOLE,
    FLAG_EDGE,
    FLAG_MASKED,
    FLAG_NAMES,
    FLAG_SHAPE,
    describe_flags,
    detect_candidates,
)
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.zogy import zogy
from astrid_assets_tests.science import scenes
from astrid_assets_tests.science.frame_scenes import identity_masters

SHAPE = (512, 512)
NEW_FWHM, REF_FWHM = 2.5, 4.0
FULL_WELL = 1e5  # e- (gain 1)
PSF_SIZE = 31  # PSF stamps into ZOGY: P_D has this side, half-size 15


def subtract(pair: scenes.Pair, mask: np.ndarray):
    """ZOGY with the true PSFs (31-px stamps) and the combined mask, then detection."""
    result = zogy(
        SubtractionImage(pair.new.image - pair.new.background, render_psf(NEW_FWHM, PSF_SIZE, "moffat"),
                         pair.new.background_rms, pair.new.variance, mask),
        SubtractionImage(pair.ref.image - pair.ref.background, render_psf(REF_FWHM, PSF_SIZE, "moffat"),
                         pair.ref.background_rms, pair.ref.variance, mask),
        ZogyOptions(flux_ratio=1.0, backend="numpy"),
    )
    candidates = detect_candidates(
        result.S_corr, result.difference, result.difference_var, result.mask, None, result.psf_fwhm,
        difference_psf=result.P_D,
    )
    return result, candidates


def make_pair(seed: int, x, y, flux, transients=None) -> scenes.Pair:
    """Static field plus stars of ``flux`` e- at ``(x, y)`` in both images, transients in the new one."""
    x, y, flux = (np.atleast_1d(np.asarray(v, float)) for v in (x, y, flux))
    new_extra = scenes.render_stars(SHAPE, x, y, flux, NEW_FWHM)
    if transients is not None:
        tx, ty, tf = (np.atleast_1d(np.asarray(v, float)) for v in transients)
        new_extra = new_extra + scenes.render_stars(SHAPE, tx, ty, tf, NEW_FWHM)
    return scenes.make_pair(
        new_fwhm=NEW_FWHM, ref_fwhm=REF_FWHM, seed=seed, new_sky=400.0, ref_sky=40.0, ref_read_noise=2.0,
        new_model_extra=new_extra, ref_model_extra=scenes.render_stars(SHAPE, x, y, flux, REF_FWHM),
    )


def nearest(candidates, x: float, y: float):
    distance = np.hypot(candidates["x"] - x, candidates["y"] - y)
    assert len(candidates) and distance.min() < 1.5, f"nothing detected at ({x}, {y})"
    return candidates.loc[distance.idxmin()]


def test_flag_bits_keep_their_meaning() -> None:
    assert (FLAG_MASKED, FLAG_EDGE, FLAG_DIPOLE, FLAG_SHAPE, FLAG_BRIGHT_STAR) == (1, 2, 4, 8, 16)
    assert list(FLAG_NAMES) == ["MASKED", "EDGE", "DIPOLE", "SHAPE", "BRIGHT_STAR", "BRIGHT_SOURCE", "UNCONFIRMED"]
    assert FLAG_NAMES["BRIGHT_SOURCE"] == 32 and FLAG_NAMES["UNCONFIRMED"] == 64  # a new flag takes a new bit
    assert describe_flags(FLAG_BRIGHT_STAR | FLAG_EDGE) == ["EDGE", "BRIGHT_STAR"]
    assert int(masks.BRIGHT_STAR) == 64 and not masks.UNUSABLE & masks.BRIGHT_STAR
    assert masks.describe(int(masks.BRIGHT_STAR | masks.SATURATED)) == ["SATURATED", "BRIGHT_STAR"]


def test_candidates_around_a_masked_saturated_star_are_flagged_masked() -> None:
    """3e7 e- star, saturated pixels masked as calibration does (``saturation_mask``, bleed growth)
    in both images: every candidate it leaves is MASKED (before: 4 of 6 only DIPOLE)."""
    x0, y0 = 256.3, 255.6
    pair = make_pair(5, x0, y0, 3e7)
    mask = np.zeros(SHAPE, np.uint16)
    for frame in (pair.new, pair.ref):
        mask[saturation_mask(frame.image, FULL_WELL)] |= masks.SATURATED
        frame.image = np.minimum(frame.image, FULL_WELL).astype(np.float32)
    assert 30 <= int((pair.new.image >= FULL_WELL).sum()) <= 60
    result, candidates = subtract(pair, mask)
    half = result.P_D.shape[0] // 2
    assert half == PSF_SIZE // 2
    unusable = (result.mask & masks.UNUSABLE) != 0
    distance = distance_transform_edt(~unusable)[
        np.rint(candidates["y"]).astype(int), np.rint(candidates["x"]).astype(int)
    ]
    flags = candidates["flags"].to_numpy()
    within = distance <= half - 1  # pixel-centre distance; the flag measures from the sub-pixel position
    assert np.all(flags[within] & FLAG_MASKED), candidates[within]
    near_star = np.hypot(candidates["x"] - x0, candidates["y"] - y0) < 60
    assert np.all(flags[near_star] & FLAG_MASKED), candidates[near_star]
    assert not np.any(flags[near_star] == FLAG_DIPOLE)  # the old symptom: dipole-only artefacts


@pytest.mark.parametrize(("tx", "ty"), [(12.4, 300.2), (250.3, SHAPE[0] - 1 - 12.4)])
def test_bright_transient_within_the_kernel_half_size_of_the_border_is_edge(tx, ty) -> None:
    """12.4 px from a border: outside the old ``max(10, 3 FWHM)`` = 10 px, inside the 15-px kernel
    half-size over which the periodic FFTs wrap it onto the opposite border."""
    pair = make_pair(9, [], [], [], transients=(tx, ty, 5e4))
    result, candidates = subtract(pair, np.zeros(SHAPE, np.uint16))
    assert 3 * result.psf_fwhm < 12.4 < result.P_D.shape[0] // 2
    assert int(nearest(candidates, tx, ty)["flags"]) & FLAG_EDGE
    half = result.P_D.shape[0] // 2
    x, y = candidates["x"].to_numpy(), candidates["y"].to_numpy()
    border = np.minimum.reduce([x, y, SHAPE[1] - 1 - x, SHAPE[0] - 1 - y]) < half
    assert np.all(candidates["flags"].to_numpy()[border] & FLAG_EDGE)


def calibrated_pair(pair: scenes.Pair):
    """Both frames through ``calibrate_frame`` (gain 1, SATURATE = full well), as a pipeline would."""
    header = fits.Header({"IMAGETYP": "Light Frame", "GAIN": 1.0, "RDNOISE": 5.0, "SATURATE": FULL_WELL,
                          "EXPTIME": 60.0})
    out = []
    for frame in (pair.new, pair.ref):
        frame.image = np.minimum(frame.image, FULL_WELL).astype(np.float32)
        out.append(calibrate_frame(frame.image, header, identity_masters(SHAPE)))
    return out


def test_bright_star_mask_grows_with_brightness_and_flags_candidates_on_it() -> None:
    xs, ys, fluxes = np.array([150.2, 360.4]), np.array([180.7, 330.3]), np.array([3e6, 3e7])
    tx, ty = 150.2 + 22.0, 180.7 - 10.0  # 24.2 px from the fainter star, beyond its MASKED reach
    clean_x, clean_y = 400.3, 120.6
    pair = make_pair(7, xs, ys, fluxes, transients=([tx, clean_x], [ty, clean_y], [3e4, 3e4]))
    new, ref = calibrated_pair(pair)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for calibrated, fwhm in ((new, NEW_FWHM), (ref, REF_FWHM)):
        bright = (calibrated.mask & masks.BRIGHT_STAR) != 0
        reach = []
        for x, y, flux in zip(xs, ys, fluxes, strict=True):
            r = np.hypot(xx - x, yy - y)
            reach.append(r[bright & (r < 80)].max())
            assert np.all(bright[r <= reach[-1] - 1.5])  # a filled disc
            # Where the star's Moffat (β = 3) wing, untruncated, falls to the sky rms per pixel:
            # 12.0 and 17.8 px in the new image, 19.8 and 29.4 px in the reference.
            alpha = fwhm / (2 * np.sqrt(2 ** (1 / 3) - 1))
            peak = flux * 2 / (np.pi * alpha**2)
            truth = alpha * np.sqrt((peak / np.median(calibrated.background_rms)) ** (1 / 3) - 1)
            assert reach[-1] >= truth
        assert reach[1] > reach[0] + 5.0
    assert bright_star_radius(200, 1e5, 20, 2.5) > bright_star_radius(50, 1e5, 20, 2.5) > np.sqrt(50 / np.pi)
    pair.new.image = new.science
    pair.ref.image = ref.science
    pair.new.background, pair.ref.background = new.background, ref.background
    pair.new.variance, pair.ref.variance = new.variance, ref.variance
    _, candidates = subtract(pair, new.mask | ref.mask)
    on_wing = nearest(candidates, tx, ty)
    assert int(on_wing["flags"]) & FLAG_BRIGHT_STAR and not int(on_wing["flags"]) & FLAG_MASKED
    assert "BRIGHT_STAR" in describe_flags(int(on_wing["flags"]))
    assert int(nearest(candidates, clean_x, clean_y)["flags"]) == 0


def test_bright_source_flags_a_change_small_beside_a_static_source() -> None:
    """BRIGHT_SOURCE: a static pixel within the kernel's reach at least ``bright_source_contrast`` times the
    candidate's significant peak; not judged without a static image."""
    from dataclasses import replace as _replace

    from astrid_assets.science.detection.flags import (
        FLAG_BRIGHT_SOURCE,
        CandidateRules,
        FrameContext,
        Measurement,
        bright_source_flag,
    )
    from astrid_assets.science.psf.model import ShiftablePSF
    from astrid_assets.science.psf.profiles import render_psf

    shape = (64, 64)
    psf = render_psf(3.0, 21, "gaussian")
    static = np.zeros(shape, np.float32)
    static[32, 40] = 5.0e4  # a bright star's core 8 px from the candidate
    planes = {name: np.zeros(shape, bool) for name in ("no_data", "unusable", "bright_star")}
    frame = FrameContext(
        s_corr=np.zeros(shape, np.float32), difference=np.zeros(shape, np.float32),
        difference_var=np.ones(shape, np.float32), mask=np.zeros(shape, np.uint16), **planes,
        psf=ShiftablePSF(psf), psf_tiles=None, psf_fwhm=3.0, kernel_half=10, edge=10, threshold=5.0, static=static,
    )
    # significant peak: 6 sigma x 20 e- x max(P) ~ 11 e-: the star is ~4600 times brighter
    faint = Measurement(x=32.0, y=32.0, sign=1, s_corr_peak=6.0, footprint_masked=False, snr=6.0,
                        fwhm=3.0, elongation=1.0, sharpness=1.0, flux_err=20.0)
    rules = CandidateRules()
    assert bright_source_flag(faint, frame, rules) == FLAG_BRIGHT_SOURCE
    assert bright_source_flag(_replace(faint, x=10.0), frame, rules) == 0  # 30 px away: beyond the kernel
    bright = _replace(faint, s_corr_peak=600.0)  # a change a hundredth of the star's peak or more
    assert bright_source_flag(bright, frame, rules) == 0
    assert bright_source_flag(faint, _replace(frame, static=None), rules) == 0
    assert bright_source_flag(_replace(faint, flux_err=float("nan")), frame, rules) == 0
