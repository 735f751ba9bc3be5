"""Candidate extraction: injected S/N-10 transients recovered with their position and flux;
completeness; flags; cut-outs."""

from dataclasses import replace

import numpy as np
import pytest

from astrid_assets.science import masks
from astrid_assets.science.detection import (
    FLAG_DIPOLE,
    FLAG_EDGE,
    FLAG_MASKED,
    FLAG_SHAPE,
    CandidateRules,
    FrameContext,
    Measurement,
    candidate_flags,
    describe_flags,
    detect_candidates,
    shape_flag,
)
from astrid_assets.science.detection.stamps import cut_stamps
from astrid_assets.science.injection.inject import completeness, inject_sources, match_catalogues
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.model import ShiftablePSF
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.zogy import zogy
from astrid_assets_tests.science import scenes

NEW_SKY, REF_SKY = 400.0, 40.0  # the reference stands for a deep co-add


def injection_grid(pair, rng, spacing=44.0, margin=40.0, shape=(512, 512)):
    """Grid positions (with sub-pixel jitter) at least 15 px from any static star."""
    gx, gy = np.meshgrid(np.arange(margin, shape[1] - margin, spacing), np.arange(margin, shape[0] - margin, spacing))
    x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, gy.size)
    distance = np.min(np.hypot(x[:, None] - pair.star_x, y[:, None] - pair.star_y), axis=1)
    return x[distance > 15], y[distance > 15]


def inject_and_detect(new_fwhm, ref_fwhm, snr, seed):
    """Static-star pair, transients at the given new-image S/N, PSFs estimated, ZOGY, SEP."""
    pair = scenes.make_pair(
        new_fwhm=new_fwhm,
        ref_fwhm=ref_fwhm,
        seed=seed,
        new_sky=NEW_SKY,
        ref_sky=REF_SKY,
        read_noise=5.0,
        ref_read_noise=2.0,
        flux_range=(3e3, 3e5),
    )
    rng = np.random.default_rng(seed + 100)
    x, y = injection_grid(pair, rng)
    snr = snr(x.size, rng) if callable(snr) else snr
    true_psf = render_psf(new_fwhm, 31, "moffat")
    injected = inject_sources(pair.new.image, pair.new.variance, true_psf, x, y, snr=snr, rng=rng)
    new_psf = estimate_psf(injected.image, pair.new.background, pair.new.background_rms)
    ref_psf = estimate_psf(pair.ref.image, pair.ref.background, pair.ref.background_rms)
    result = zogy(
        SubtractionImage(injected.image - pair.new.background, new_psf, pair.new.background_rms, injected.variance),
        SubtractionImage(pair.ref.image - pair.ref.background, ref_psf, pair.ref.background_rms, pair.ref.variance),
        ZogyOptions(backend="numpy"),
    )
    candidates = detect_candidates(
        result.S_corr,
        result.difference,
        result.difference_var,
        result.mask,
        scenes.tan_wcs((512, 512)),
        result.psf_fwhm,
        difference_psf=result.P_D,
    )
    return injected, result, candidates


@pytest.mark.parametrize(("new_fwhm", "ref_fwhm"), [(2.5, 4.0), (4.0, 2.5)])
def test_snr10_transients_recovered_with_position_and_flux(new_fwhm, ref_fwhm) -> None:
    """~140 point sources at S/N 10 (PSF-optimal, new image) in two realisations.

    The positional error of each source is set by the S/N in the difference image (~8-9
    after the reference's noise) and the width of P_D: the Cramer-Rao bound is ~0.28 px per
    axis, so the *median* radial error is required below 0.5 px and the scatter near the
    bound; the flux must be unbiased within 10 % and its error honest.
    """
    offsets, flux_ratio, pulls, bounds = [], [], [], []
    for seed in (21, 22):
        injected, result, candidates = inject_and_detect(new_fwhm, ref_fwhm, 10.0, seed)
        truth_xy = np.column_stack([injected.x, injected.y])
        matched = match_catalogues(truth_xy, candidates[["x", "y"]].to_numpy(), radius=1.5)
        assert np.all(matched >= 0), f"missed {np.sum(matched < 0)} of {matched.size} S/N-10 sources"
        found = candidates.iloc[matched]
        assert np.all(found["sign"] == 1)
        offsets.append(found[["x", "y"]].to_numpy() - truth_xy)
        flux_ratio.append(found["flux"].to_numpy() / injected.flux)
        pulls.append((found["flux"].to_numpy() - injected.flux) / found["flux_err"].to_numpy())
        # Cramer-Rao bound on x for a PSF fit on D (white noise of variance difference_var).
        grad_y, grad_x = np.gradient(result.P_D.astype(float))
        noise = np.sqrt(np.median(result.difference_var))
        bounds.append(noise / (injected.flux.mean() * np.sqrt((grad_x**2).sum())))
        # Candidates besides the injected sources: the Euler-characteristic expectation of pure
        # noise excursions above 5 sigma is ~0.15 per 512 x 512 image (false_detection_expectation).
        assert len(candidates) - matched.size <= 2
    offsets = np.concatenate(offsets)
    flux_ratio = np.concatenate(flux_ratio)
    pulls = np.concatenate(pulls)
    radial = np.hypot(*offsets.T)
    assert offsets.shape[0] >= 120
    assert np.median(radial) < 0.5
    assert np.abs(offsets.mean(axis=0)).max() < 0.1  # no systematic offset
    assert offsets.std(axis=0).max() < 1.3 * np.mean(bounds)
    assert abs(flux_ratio.mean() - 1.0) < 0.10
    assert 0.8 < pulls.std() < 1.25


def test_completeness_reaches_95_percent_at_snr_10() -> None:
    truth_snr, recovered = [], []
    for seed in (31, 32, 33):
        injected, _, candidates = inject_and_detect(2.5, 4.0, lambda n, rng: rng.uniform(3.0, 30.0, n), seed)
        positives = candidates[candidates["sign"] == 1]
        matched = match_catalogues(
            np.column_stack([injected.x, injected.y]), positives[["x", "y"]].to_numpy(), radius=1.5
        )
        truth_snr.append(injected.snr)
        recovered.append(matched >= 0)
    truth_snr, recovered = np.concatenate(truth_snr), np.concatenate(recovered)
    result = completeness(truth_snr, recovered, bins=np.arange(3.0, 31.0, 1.5))
    assert recovered[truth_snr >= 10].mean() >= 0.95
    assert truth_snr.size >= 180
    # Threshold |S_corr| >= 5 with the reference's extra noise: 50 % near S/N 5.5 - 6.5.
    assert 4.5 < result.snr_50 < 7.5
    assert recovered[truth_snr < 4].mean() < 0.2


def test_candidate_columns_flags_and_coordinates() -> None:
    shape = (256, 256)
    rng = np.random.default_rng(3)
    s_corr = rng.normal(0, 1, shape).astype(np.float32)
    psf = render_psf(3.0, 21, "gaussian")
    peak = psf / psf.max()

    def add(image, x, y, amplitude):
        x1, y1 = min(x + 11, shape[1]), min(y + 11, shape[0])
        image[y - 10 : y1, x - 10 : x1] += amplitude * peak[: y1 - y + 10, : x1 - x + 10]

    add(s_corr, 60, 60, 30.0)  # clean
    add(s_corr, 150, 100, 25.0)  # dipole
    add(s_corr, 154, 100, -25.0)
    add(s_corr, 249, 128, 20.0)  # near the edge
    add(s_corr, 100, 200, 20.0)  # on a masked pixel
    mask = np.zeros(shape, np.uint16)
    mask[200, 101] = masks.COSMIC_RAY
    difference = 50.0 * s_corr
    variance = np.full(shape, 2500.0, np.float32)
    wcs = scenes.tan_wcs(shape)
    table = detect_candidates(s_corr, difference, variance, mask, wcs, psf_fwhm=3.0, threshold=5.0, difference_psf=psf)
    assert set(table.columns) >= {
        "x",
        "y",
        "ra",
        "dec",
        "flux",
        "flux_err",
        "snr",
        "fwhm",
        "elongation",
        "sharpness",
        "sign",
        "flags",
        "rule_score",
    }

    def row(x, y):
        distance = np.hypot(table["x"] - x, table["y"] - y)
        assert distance.min() < 0.5
        return table.loc[distance.idxmin()]

    clean = row(60, 60)
    assert clean["flags"] == 0 and clean["sign"] == 1 and clean["rule_score"] > 0.9
    assert clean["fwhm"] == pytest.approx(3.0, rel=0.15) and clean["elongation"] < 1.2
    ra, dec = wcs.pixel_to_world_values(clean["x"], clean["y"])
    assert clean["ra"] == pytest.approx(ra) and clean["dec"] == pytest.approx(dec)
    assert int(row(150, 100)["flags"]) & FLAG_DIPOLE and row(154, 100)["sign"] == -1
    assert int(row(154, 100)["flags"]) & FLAG_DIPOLE
    assert int(row(249, 128)["flags"]) & FLAG_EDGE
    assert int(row(100, 200)["flags"]) & FLAG_MASKED
    assert "MASKED" in describe_flags(int(row(100, 200)["flags"]))
    assert table["rule_score"].between(0, 1).all()
    assert clean["rule_score"] > row(150, 100)["rule_score"]


def test_flag_rules_read_a_measurement_and_their_cuts() -> None:
    """Each flag rule is a function of one candidate's measurement, its frame and the cuts."""
    shape = (64, 64)
    s_corr = np.zeros(shape, np.float32)
    s_corr[32, 35] = -4.0  # a 4-sigma opposite lobe 3 px from the candidate
    mask = np.zeros(shape, np.uint16)
    mask[40, 20] = masks.COSMIC_RAY
    planes = {"no_data": np.zeros(shape, bool), "unusable": mask != 0, "bright_star": np.zeros(shape, bool)}
    frame = FrameContext(
        s_corr=s_corr, difference=s_corr, difference_var=np.ones(shape, np.float32), mask=mask, **planes,
        psf=ShiftablePSF(render_psf(3.0, 21, "gaussian")), psf_tiles=None, psf_fwhm=3.0, kernel_half=10,
        edge=10, threshold=5.0,
    )
    point = Measurement(x=32.0, y=32.0, sign=1, s_corr_peak=10.0, footprint_masked=False, snr=30.0,
                        fwhm=3.0, elongation=1.1, sharpness=1.0)
    rules = CandidateRules()
    assert candidate_flags(point, frame, rules) == FLAG_DIPOLE  # 4 >= max(3, 0.3 x 10)
    assert candidate_flags(point, frame, CandidateRules(dipole_fraction=0.5)) == 0  # 4 < 0.5 x 10
    assert candidate_flags(replace(point, x=21.0, y=38.0), frame, rules) == FLAG_MASKED  # 2.2 px from a cosmic
    assert candidate_flags(replace(point, x=5.0), frame, rules) & FLAG_EDGE
    trail = replace(point, elongation=2.5)
    assert shape_flag(trail, frame, rules) == FLAG_SHAPE
    assert shape_flag(replace(trail, snr=15.0), frame, rules) == 0  # too faint to judge its shape
    assert shape_flag(replace(point, fwhm=float("nan"), sharpness=float("nan")), frame, rules) == 0
    assert shape_flag(trail, frame, CandidateRules(shape_max_elongation=3.0)) == 0
    assert CandidateRules().edge_width(psf_fwhm=5.0, kernel_half=12) == 15


def test_cut_stamps_shape_centre_and_padding() -> None:
    image = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    stamps = cut_stamps({"new": image, "ref": 2 * image}, np.array([60.2, 0.0]), np.array([50.4, 99.0]), size=63)
    assert stamps.shape == (2, 2, 63, 63) and stamps.dtype == np.float32
    assert stamps[0, 0, 31, 31] == image[50, 60]
    assert stamps[0, 1, 31, 31] == 2 * image[50, 60]
    assert np.isnan(stamps[1, 0, 0, 0]) and np.isnan(stamps[1, 0, 40, 31])  # beyond the image
    assert stamps[1, 0, 31, 31] == image[99, 0]
    zero_filled = cut_stamps({"d": image}, [0.0], [0.0], size=63, fill=0.0)
    assert zero_filled[0, 0, 0, 0] == 0.0
