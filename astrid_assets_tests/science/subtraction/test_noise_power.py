"""Correlated noise in ZOGY: the measured autocorrelation, the matched filter's variance factor, and S_corr of
unit variance for drizzle-like inputs, with white-noise inputs unchanged."""

import numpy as np
import pytest
from scipy import ndimage

from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.noise_power import measure_noise_correlation, measurement_windows
from astrid_assets.science.subtraction.zogy import zogy
from astrid_assets.testing.skygen import drizzle_kernel

SHAPE = (384, 384)
NEW_PSF, REF_PSF = render_psf(2.5, 25, "moffat"), render_psf(3.5, 25, "moffat")


def pair(seed: int, drizzled: bool, faint_sky: float = 0.0):
    """Noise pair (new σ 20 e-, reference σ 8 e-), optionally both drizzled by a 2-px footprint, optionally with
    the same faint static sources in both (each below 2σ of the reference's noise at its peak)."""
    rng = np.random.default_rng(seed)
    new, ref = rng.normal(0.0, 20.0, SHAPE), rng.normal(0.0, 8.0, SHAPE)
    if faint_sky:
        static = np.zeros(SHAPE)
        static[rng.integers(0, SHAPE[0], 4000), rng.integers(0, SHAPE[1], 4000)] = faint_sky
        new += ndimage.convolve(static, NEW_PSF, mode="wrap")
        ref += ndimage.convolve(static, REF_PSF, mode="wrap")
    if drizzled:
        kernel = drizzle_kernel(2.0)
        new, ref = (ndimage.convolve(image, kernel, mode="wrap") for image in (new, ref))
    return new.astype(np.float32), ref.astype(np.float32)


def subtract(new, ref, mode: str, sigmas=None):
    """ZOGY with the images' noise ``sigmas`` (e-), by default each one's per-pixel rms (what a sky-noise measurement
    of a drizzled mosaic gives)."""
    sigmas = sigmas or (float(new.std()), float(ref.std()))
    images = [SubtractionImage(image, psf, sigma, np.full(SHAPE, sigma**2, np.float32))
              for image, psf, sigma in ((new, NEW_PSF, sigmas[0]), (ref, REF_PSF, sigmas[1]))]
    return zogy(*images, ZogyOptions(flux_ratio=1.0, backend="numpy", noise_correlation=mode))


def test_the_filter_factor_is_the_variance_a_filtered_image_really_has():
    rng = np.random.default_rng(0)
    for drizzled in (False, True):
        image = rng.normal(0.0, 10.0, (512, 512))
        if drizzled:
            image = ndimage.convolve(image, drizzle_kernel(2.0), mode="wrap")
        noise = measure_noise_correlation(image.astype(np.float32), None, float(image.std()))
        filtered = ndimage.convolve(image, NEW_PSF, mode="wrap")
        true_factor = filtered.var() / (image.var() * (NEW_PSF**2).sum())
        assert noise.method == "measured" and noise.n_pixels > 200_000
        assert noise.pixel_ratio == pytest.approx(1.0, abs=0.01)
        assert noise.filter_factor(NEW_PSF) == pytest.approx(true_factor, rel=0.03)
    assert true_factor > 4.0  # a 2-px drizzle: a PSF's noise 2.2x what the per-pixel rms says


@pytest.mark.parametrize("mode", ["measured", "difference"])
def test_drizzled_inputs_get_unit_variance_scores_and_white_ones_stay_unchanged(mode):
    new, ref = pair(1, drizzled=True)
    assert subtract(new, ref, "white").s_corr_std > 2.0  # independent pixels assumed: far outside the gate
    result = subtract(new, ref, mode)
    assert result.s_corr_std == pytest.approx(1.0, abs=0.05)
    assert result.noise_correlation == mode and result.s_corr_norm > 1.4  # S's noise over the maps' (recorded)
    new, ref = pair(2, drizzled=False)
    white = subtract(new, ref, "white")
    measured = subtract(new, ref, mode)
    assert white.s_corr_std == pytest.approx(1.0, abs=0.05)
    assert measured.s_corr_std == pytest.approx(1.0, abs=0.05)
    assert measured.s_corr_norm == pytest.approx(1.0, abs=0.03)
    assert np.abs(measured.S_corr - white.S_corr).max() < 0.1


def test_a_transient_keeps_its_significance():
    """A drizzled transient's S_corr peak with the measured noise equals its peak over the white score's spread."""
    new, ref = pair(3, drizzled=True)
    stamp = ndimage.convolve(np.pad(NEW_PSF, 4), drizzle_kernel(2.0))
    half = stamp.shape[0] // 2
    new[192 - half: 193 + half, 192 - half: 193 + half] += 3000.0 * stamp
    white = subtract(new, ref, "white")
    peak_white = float(white.S_corr[190:195, 190:195].max()) / white.s_corr_std
    for mode in ("measured", "difference"):
        result = subtract(new, ref, mode)
        assert float(result.S_corr[190:195, 190:195].max()) == pytest.approx(peak_white, rel=0.05)
        assert peak_white > 15


def test_faint_static_sky_is_not_taken_for_correlated_noise_in_the_difference():
    """Faint sources below detection, the same in both images, read as correlated noise in each input but cancel
    in the difference: the difference's measurement keeps S_corr at unit variance, the inputs' lowers it."""
    new, ref = pair(4, drizzled=False, faint_sky=400.0)
    white, difference, measured = (subtract(new, ref, mode, (20.0, 8.0)) for mode in ("white", "difference",
                                                                                         "measured"))
    print(f"\nstd(S_corr): white {white.s_corr_std:.3f}, difference {difference.s_corr_std:.3f}, "
          f"inputs measured {measured.s_corr_std:.3f}")
    assert white.s_corr_std == pytest.approx(1.0, abs=0.05)
    assert difference.s_corr_std == pytest.approx(1.0, abs=0.05)
    assert measured.s_corr_std < difference.s_corr_std - 0.03


def test_a_large_frame_is_measured_in_windows_and_gets_the_true_factor():
    """A 1536² drizzled frame (2.4 Mpx) is measured in four windows of 1 Mpx in all (its cost does not grow with
    the frame), and the filter factor is the true one, as on the whole frame."""
    rng = np.random.default_rng(3)
    image = ndimage.convolve(rng.normal(0.0, 10.0, (1536, 1536)), drizzle_kernel(2.0), mode="wrap")
    windows = measurement_windows(image.shape)
    assert len(windows) == 4 and sum((w[0].stop - w[0].start) * (w[1].stop - w[1].start) for w in windows) <= 1 << 20
    noise = measure_noise_correlation(image.astype(np.float32), None, float(image.std()))
    filtered = ndimage.convolve(image, NEW_PSF, mode="wrap")
    true_factor = filtered.var() / (image.var() * (NEW_PSF**2).sum())
    assert 500_000 < noise.n_pixels <= 1 << 20
    assert noise.filter_factor(NEW_PSF) == pytest.approx(true_factor, rel=0.03)
