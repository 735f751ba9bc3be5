"""ZOGY (Zackay, Ofek & Gal-Yam 2016) known answers: normalisation, false alarms, static and
faded sources, flux ratio; the classic subtraction; backend agreement."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import norm

from astrid_assets.science import masks
from astrid_assets.science.detection.candidates import detect_candidates, false_detection_expectation
from astrid_assets.science.photometry.flux_ratio import FluxRatioError, fit_flux_ratio
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.classic import classic_subtraction
from astrid_assets.science.subtraction.inputs import ClassicOptions, SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.zogy import zogy
from astrid_assets_tests.science import scenes

NEW_SKY, REF_SKY = 400.0, 40.0
NEW_READ, REF_READ = 5.0, 2.0


def noise_pair(shape, seed):
    """Flat sky with Poisson + read noise, background subtracted; the variance maps."""
    rng = np.random.default_rng(seed)
    new = rng.poisson(NEW_SKY, shape) + rng.normal(0.0, NEW_READ, shape) - NEW_SKY
    ref = rng.poisson(REF_SKY, shape) + rng.normal(0.0, REF_READ, shape) - REF_SKY
    new_var = np.full(shape, NEW_SKY + NEW_READ**2, np.float32)
    ref_var = np.full(shape, REF_SKY + REF_READ**2, np.float32)
    return new.astype(np.float32), ref.astype(np.float32), new_var, ref_var


def noise_zogy(shape, new_fwhm, ref_fwhm, seed):
    new, ref, new_var, ref_var = noise_pair(shape, seed)
    return zogy(
        SubtractionImage(new, render_psf(new_fwhm, 25, "moffat"), float(np.sqrt(new_var[0, 0])), new_var),
        SubtractionImage(ref, render_psf(ref_fwhm, 25, "moffat"), float(np.sqrt(ref_var[0, 0])), ref_var),
        ZogyOptions(flux_ratio=1.0, backend="numpy"),
    )


@pytest.mark.parametrize(("new_fwhm", "ref_fwhm"), [(2.5, 4.0), (4.0, 2.5), (2.0, 6.0)])
def test_s_corr_has_unit_variance_on_blank_sky(new_fwhm, ref_fwhm) -> None:
    result = noise_zogy((512, 512), new_fwhm, ref_fwhm, seed=1)
    assert result.S_corr.std() == pytest.approx(1.0, abs=0.05)
    assert result.s_corr_std == pytest.approx(1.0, abs=0.05)
    assert abs(result.S_corr.mean()) < 0.05
    # D is white with unit variance (eq. 13); the difference noise map is consistent.
    assert result.D.std() == pytest.approx(1.0, abs=0.03)
    assert result.difference.std() == pytest.approx(np.sqrt(result.difference_var.mean()), rel=0.03)
    assert result.P_D.sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("new_fwhm", "ref_fwhm"), [(2.5, 4.0), (4.0, 2.5)])
def test_noise_only_pair_false_detections(new_fwhm, ref_fwhm) -> None:
    """|S_corr| >= 5 detections against the Gaussian expectation.

    naive = resolution elements (area / noise-equivalent area of P_D) × 2 P(z > 5); the
    Euler-characteristic expectation for a smooth field is ~20× larger and reported too.
    """
    shape = (512, 512)
    result = noise_zogy(shape, new_fwhm, ref_fwhm, seed=7)
    candidates = detect_candidates(
        result.S_corr,
        result.difference,
        result.difference_var,
        result.mask,
        None,
        result.psf_fwhm,
        threshold=5.0,
        difference_psf=result.P_D,
    )
    expectation = false_detection_expectation(shape[0] * shape[1], result.P_D, 5.0, perimeter=2 * sum(shape))
    assert len(candidates) <= 2 * expectation["naive"]
    assert len(candidates) <= 2 * expectation["euler"]
    # The count is sensitive: S_corr 20 % too wide would give many false detections.
    widened = detect_candidates(
        1.2 * result.S_corr,
        result.difference,
        result.difference_var,
        result.mask,
        None,
        result.psf_fwhm,
        threshold=5.0,
        difference_psf=result.P_D,
    )
    assert len(widened) > 2 * expectation["euler"]


@pytest.mark.parametrize(("new_fwhm", "ref_fwhm"), [(2.5, 4.0), (4.0, 2.5)])
def test_s_corr_tail_matches_the_gaussian(new_fwhm, ref_fwhm) -> None:
    """Fraction of pixels with |S_corr| >= u equals 2 P(z > u) (a 5 % error in the
    normalisation would move the u = 3.5 fraction by ~50 %)."""
    result = noise_zogy((1024, 1024), new_fwhm, ref_fwhm, seed=3)
    for u, tolerance in ((2.0, 0.05), (3.0, 0.15), (3.5, 0.25)):
        observed = np.mean(np.abs(result.S_corr) >= u)
        assert observed == pytest.approx(2 * norm.sf(u), rel=tolerance), u


def make_scene(new_fwhm, ref_fwhm, seed, **kwargs):
    options = {
        "flux_range": (3e3, 1e6),
        "new_sky": NEW_SKY,
        "ref_sky": REF_SKY,
        "read_noise": NEW_READ,
        "ref_read_noise": REF_READ,
    } | kwargs
    return scenes.make_pair(new_fwhm=new_fwhm, ref_fwhm=ref_fwhm, seed=seed, **options)


def run_zogy(pair, new_image=None, new_var=None, source_noise=True, psf_size=25, **kwargs):
    new_image = pair.new.image if new_image is None else new_image
    new_var = pair.new.variance if new_var is None else new_var
    new_psf = estimate_psf(new_image, pair.new.background, pair.new.background_rms, size=psf_size)
    ref_psf = estimate_psf(pair.ref.image, pair.ref.background, pair.ref.background_rms, size=psf_size)
    variances = (new_var, pair.ref.variance) if source_noise else (None, None)
    return zogy(
        SubtractionImage(new_image - pair.new.background, new_psf, pair.new.background_rms, variances[0]),
        SubtractionImage(pair.ref.image - pair.ref.background, ref_psf, pair.ref.background_rms, variances[1]),
        ZogyOptions(backend="numpy", **kwargs),
    )


def far_from_stars(pair, candidates_xy, distance=25.0):
    """The candidate positions at least ``distance`` px from every static star."""
    keep = [xy for xy in candidates_xy if np.min(np.hypot(pair.star_x - xy[0], pair.star_y - xy[1])) > distance]
    return np.asarray(keep)


@pytest.mark.parametrize(
    ("new_fwhm", "ref_fwhm", "brightest", "psf_size"),
    [(2.5, 4.0, 3e5, 25), (4.0, 2.5, 3e5, 25), (2.5, 4.0, 1e6, 31), (4.0, 2.5, 1e6, 31)],
)
def test_static_stars_leave_no_detection_and_faded_source_is_negative(new_fwhm, ref_fwhm, brightest, psf_size) -> None:
    """80 static stars up to ``brightest`` e- (S/N up to ~550 / ~1000) leave no candidate; two
    sources present only in the reference are found as negative candidates with their flux.

    The scene renders stars in 31-px stamps; the 1e6 e- case uses 31-px PSF models so that the
    models cover all the light (with 25-px models the brightest star leaves a wing arc at
    13.8 px from its centre, see the report)."""
    shape = (512, 512)
    seed = 5
    stars_only = make_scene(new_fwhm, ref_fwhm, seed=seed, flux_range=(3e3, brightest))
    grid = [(x, y) for x in np.arange(60.3, 460, 37.0) for y in np.arange(60.7, 460, 37.0)]
    faded_xy = far_from_stars(stars_only, grid)[:2]
    faded_flux = np.array([3e4, 1e4])  # reference e-; absent from the new image
    ref_extra = scenes.render_stars(shape, faded_xy[:, 0], faded_xy[:, 1], faded_flux, ref_fwhm)
    pair = make_scene(new_fwhm, ref_fwhm, seed=seed, flux_range=(3e3, brightest), ref_model_extra=ref_extra)
    assert np.allclose(pair.star_x, stars_only.star_x)
    result = run_zogy(pair, psf_size=psf_size)
    assert result.flux_ratio == pytest.approx(1.0, abs=0.01)
    candidates = detect_candidates(
        result.S_corr,
        result.difference,
        result.difference_var,
        result.mask,
        None,
        result.psf_fwhm,
        difference_psf=result.P_D,
    )
    # exactly the two faded sources, both negative, nothing at the 80 static stars
    assert len(candidates) == 2, candidates[["x", "y", "s_corr_peak", "flags"]]
    assert np.all(candidates["sign"] == -1)
    for (x, y), flux in zip(faded_xy, faded_flux, strict=True):
        distance = np.hypot(candidates["x"] - x, candidates["y"] - y)
        match = candidates.loc[distance.idxmin()]
        assert distance.min() < 0.5
        assert -match["flux"] == pytest.approx(flux, rel=0.1)
        assert match["flags"] == 0
    assert pair.star_flux.max() > 0.8 * brightest
    # Without the source-noise term (eqs. 26-27) the bright static stars would be "detected":
    # the known answer above is not trivially met.
    plain = run_zogy(pair, source_noise=False, flux_ratio=result.flux_ratio, psf_size=psf_size)
    star_peaks = [
        np.abs(plain.S_corr[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4]).max()
        for x, y in zip(pair.star_x, pair.star_y, strict=True)
    ]
    assert max(star_peaks) > 5


def test_flux_ratio_is_fitted_from_stars() -> None:
    pair = make_scene(2.5, 4.0, seed=6, flux_ratio=0.8)
    result = run_zogy(pair)
    # PSF fluxes inside the 25-px stamp: the broader reference loses ~0.4 % more to its wings.
    assert result.flux_ratio == pytest.approx(0.8, rel=0.01)
    assert result.flux_ratio_err < 0.005
    assert np.abs(result.S_corr).max() < 5.5
    new_psf = render_psf(2.5, 25, "moffat")
    with pytest.raises(FluxRatioError):
        fit_flux_ratio(np.zeros((64, 64)), np.zeros((64, 64)), new_psf, new_psf, 1.0, 1.0)


def test_astrometric_noise_term_absorbs_misregistration() -> None:
    shape = (384, 384)
    pair = make_scene(3.0, 3.0, seed=8, shape=shape, n_stars=50, flux_range=(3e4, 1e6))
    shifted = ndimage.shift(pair.new.image, (0.0, 0.15), order=3, mode="nearest")  # 0.15 px error
    plain = run_zogy(pair, new_image=shifted, flux_ratio=1.0)
    corrected = run_zogy(pair, new_image=shifted, flux_ratio=1.0, astrometric_sigma=(0.15, 0.15))
    assert np.abs(plain.S_corr).max() > 5  # bright stars leave dipoles
    assert np.abs(corrected.S_corr).max() < 5  # eqs. 30-33 account for them


def test_masked_pixels_are_zeroed_and_flagged() -> None:
    new, ref, new_var, ref_var = noise_pair((256, 256), seed=2)
    new[100, 100] = np.nan
    ref[50, 60] = 1e7
    mask = np.zeros(new.shape, np.uint16)
    mask[50, 60] = masks.SATURATED
    psf = render_psf(3.0, 25, "moffat")
    result = zogy(SubtractionImage(new, psf, 20.6, new_var, mask), SubtractionImage(ref, psf, 6.6, ref_var),
                  ZogyOptions(flux_ratio=1.0, backend="numpy"))
    assert result.mask[100, 100] & masks.NO_DATA
    assert result.mask[50, 60] & masks.SATURATED
    assert np.all(np.isfinite(result.S_corr))
    assert np.abs(result.S_corr).max() < 5.5


def test_torch_backend_matches_numpy() -> None:
    """The torch path (run here on the CPU; on CUDA in production) gives the numpy answer."""
    new, ref, new_var, ref_var = noise_pair((256, 256), seed=4)
    new_psf, ref_psf = render_psf(2.5, 25, "moffat"), render_psf(4.0, 25, "moffat")
    images = (SubtractionImage(new, new_psf, 20.6, new_var), SubtractionImage(ref, ref_psf, 6.6, ref_var))
    cpu = zogy(*images, ZogyOptions(flux_ratio=1.0, astrometric_sigma=(0.05, 0.05), backend="numpy"))
    torch_cpu = zogy(*images, ZogyOptions(flux_ratio=1.0, astrometric_sigma=(0.05, 0.05), backend="torch-cpu"))
    assert torch_cpu.backend == "torch-cpu"
    for name in ("D", "S", "S_corr", "difference_var"):
        a, b = getattr(cpu, name), getattr(torch_cpu, name)
        assert np.abs(a - b).max() < 1e-4 * max(1.0, np.abs(a).max()), name


@pytest.mark.parametrize("method", ["fourier", "alard_lupton"])
@pytest.mark.parametrize(("new_fwhm", "ref_fwhm"), [(2.5, 4.0), (4.0, 2.5)])
def test_classic_subtraction_finds_transient_with_unit_variance_score(method, new_fwhm, ref_fwhm) -> None:
    shape = (384, 384)
    transient = scenes.render_stars(shape, np.array([200.4]), np.array([180.7]), np.array([8000.0]), new_fwhm)
    pair = make_scene(
        new_fwhm, ref_fwhm, seed=9, shape=shape, n_stars=40, flux_range=(3e3, 1e5), new_model_extra=transient
    )
    new_psf = estimate_psf(pair.new.image, pair.new.background, pair.new.background_rms)
    ref_psf = estimate_psf(pair.ref.image, pair.ref.background, pair.ref.background_rms)
    result = classic_subtraction(
        SubtractionImage(pair.new.image - pair.new.background, new_psf, pair.new.background_rms, pair.new.variance),
        SubtractionImage(pair.ref.image - pair.ref.background, ref_psf, pair.ref.background_rms, pair.ref.variance),
        ClassicOptions(method=method),
    )
    assert result.flux_ratio == pytest.approx(1.0, abs=0.02)
    assert result.convolved == ("new" if new_fwhm < ref_fwhm else "ref")
    assert result.significance_std == pytest.approx(1.0, abs=0.07)
    peak = np.unravel_index(np.argmax(result.significance), shape)
    assert abs(peak[0] - 180.7) <= 1 and abs(peak[1] - 200.4) <= 1
    assert result.significance.max() > 10
