"""Injection at a chosen S/N, catalogue matching and completeness curves."""

import numpy as np
import pytest

from astrid_assets.science.injection.inject import completeness, inject_sources, match_catalogues, psf_optimal_snr
from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.psf.profiles import render_psf


def test_injected_snr_is_the_psf_optimal_snr() -> None:
    rng = np.random.default_rng(1)
    shape = (256, 256)
    sigma = 20.0
    psf = render_psf(3.0, 25, "gaussian")
    gx, gy = np.meshgrid(np.arange(20, 240, 20.0), np.arange(20, 240, 20.0))
    x, y = gx.ravel() + 0.3, gy.ravel() - 0.2
    variance = np.full(shape, sigma**2, np.float32)
    fluxes = []
    for _ in range(10):
        blank = rng.normal(0.0, sigma, shape).astype(np.float32)
        injected = inject_sources(blank, variance, psf, x, y, snr=10.0, rng=rng, poisson=False)
        flux, _ = psf_photometry(injected.image, sigma**2, psf, x, y)
        fluxes.append(flux)
    fluxes = np.concatenate(fluxes)
    expected_flux = 10.0 * sigma / np.sqrt((psf.astype(float) ** 2).sum())
    assert injected.flux == pytest.approx(expected_flux, rel=0.01)
    # the measured S/N (uniform-weight PSF fit = optimal on flat noise) is 10 on average, spread 1
    assert np.mean(fluxes / expected_flux * 10.0) == pytest.approx(10.0, abs=0.15)
    assert np.std(fluxes / expected_flux * 10.0) == pytest.approx(1.0, abs=0.1)
    assert psf_optimal_snr(injected.flux, psf, variance, x, y) == pytest.approx(10.0, rel=1e-6)


def test_injection_adds_source_poisson_noise_and_variance() -> None:
    psf = render_psf(3.0, 25, "gaussian")
    image = np.zeros((64, 64), np.float32)
    variance = np.full((64, 64), 100.0, np.float32)
    injected = inject_sources(image, variance, psf, [32.0], [32.0], flux=1e5, rng=np.random.default_rng(0))
    assert injected.image.sum() == pytest.approx(1e5, rel=0.01)
    assert injected.variance.sum() - variance.sum() == pytest.approx(1e5, rel=1e-3)
    assert image.sum() == 0.0  # input untouched
    with pytest.raises(ValueError):
        inject_sources(image, variance, psf, [1.0], [1.0])


def test_match_catalogues_is_one_to_one_and_closest_first() -> None:
    truth = np.array([[10.0, 10.0], [11.0, 10.0], [50.0, 50.0], [80.0, 80.0]])
    detected = np.array([[10.9, 10.1], [50.5, 50.0], [10.2, 10.0], [90.0, 90.0]])
    matched = match_catalogues(truth, detected, radius=1.5)
    assert matched.tolist() == [2, 0, 1, -1]
    assert match_catalogues(truth, np.empty((0, 2))).tolist() == [-1, -1, -1, -1]


def test_completeness_curve_and_snr_50() -> None:
    rng = np.random.default_rng(2)
    snr = rng.uniform(2.0, 20.0, 20000)
    # a known logistic completeness with its midpoint at S/N 6
    recovered = rng.uniform(size=snr.size) < 1.0 / (1.0 + np.exp(-(snr - 6.0) * 2.0))
    result = completeness(snr, recovered, bins=np.arange(2.0, 20.5, 1.0))
    assert result.snr_50 == pytest.approx(6.0, abs=0.15)
    assert result.fraction[-1] > 0.99 and result.fraction[0] < 0.01
    assert np.all(result.n_injected > 0) and result.bin_centres.size == result.fraction.size
    assert np.isnan(completeness(snr, np.ones(snr.size, bool), bins=5).snr_50)
