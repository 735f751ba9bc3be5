"""FFT back ends: torch (run here on the CPU; on CUDA in production) gives scipy's ZOGY to 1e-5; the automatic
choice follows CUDA; the difference records which back end ran."""

import numpy as np
import pytest
import torch
from astropy.io import fits

from astrid_assets.science.products import Difference
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.fft_backends import NumpyBackend, TorchBackend, select_backend
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.zogy import zogy
from astrid_assets_tests.science import scenes

SHAPE = (256, 256)


def star_pair(seed: int = 3):
    """A field of 30 stars seen at FWHM 2.5 px (new, with a transient) and 4 px (reference), Poisson and read
    noise, variance maps with the sources' Poisson term."""
    rng = np.random.default_rng(seed)
    x, y, flux = rng.uniform(20, 236, 30), rng.uniform(20, 236, 30), 10 ** rng.uniform(3, 5, 30)
    transient = scenes.render_stars(SHAPE, np.array([128.3]), np.array([100.6]), np.array([5000.0]), 2.5)

    def observe(fwhm, sky, read, extra):
        model = scenes.render_stars(SHAPE, x, y, flux, fwhm) + extra
        image = rng.poisson(sky + model) + rng.normal(0.0, read, SHAPE) - sky
        return image.astype(np.float32), (sky + read**2 + model).astype(np.float32)

    new, new_var = observe(2.5, 400.0, 5.0, transient)
    ref, ref_var = observe(4.0, 40.0, 2.0, 0.0)
    return (SubtractionImage(new, render_psf(2.5, 25, "moffat"), 20.6, new_var),
            SubtractionImage(ref, render_psf(4.0, 25, "moffat"), 6.6, ref_var))


@pytest.mark.parametrize("options", [
    {"flux_ratio": 1.0, "astrometric_sigma": (0.05, 0.05)},
    # as the nightly chain runs it: measured noise correlation, the PSF-model error calibrated at stars
    {"flux_ratio": 1.0, "astrometric_sigma": (0.05, 0.05), "noise_correlation": "measured", "psf_error": "auto"},
], ids=["plain", "nightly"])
def test_torch_backend_gives_scipys_zogy(options) -> None:
    images = star_pair()
    scipy_result = zogy(*images, ZogyOptions(backend="numpy", **options))
    torch_result = zogy(*images, ZogyOptions(backend="torch-cpu", **options))
    assert (scipy_result.backend, torch_result.backend) == ("numpy", "torch-cpu")
    for name in ("D", "S", "S_corr", "difference"):  # float32 FFTs: round-off relative to the image's scale
        a, b = getattr(scipy_result, name), getattr(torch_result, name)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max(), err_msg=name)
    np.testing.assert_allclose(torch_result.difference_var, scipy_result.difference_var, rtol=1e-5)
    for name in ("F_D", "F_S", "psf_error", "psf_fwhm"):
        assert getattr(torch_result, name) == pytest.approx(getattr(scipy_result, name), rel=1e-5, abs=1e-12), name
    # a robust std (a median) of S_corr: within S_corr's own round-off
    s_corr_scale = np.abs(scipy_result.S_corr).max()
    assert abs(torch_result.s_corr_std - scipy_result.s_corr_std) <= 1e-5 * s_corr_scale
    peak = np.unravel_index(np.argmax(scipy_result.S_corr), SHAPE)
    assert peak == (101, 128)  # the transient, found by both
    assert np.argmax(torch_result.S_corr) == np.argmax(scipy_result.S_corr)


def test_automatic_choice_is_torch_on_cuda_else_scipy() -> None:
    """With torch imported (as here), ``auto`` is torch on the GPU when CUDA is available, scipy otherwise."""
    chosen = select_backend("auto")
    if torch.cuda.is_available():
        assert isinstance(chosen, TorchBackend) and chosen.name == "torch-cuda"
    else:
        assert isinstance(chosen, NumpyBackend) and chosen.name == "numpy"
    assert select_backend("torch-cpu").name == "torch-cpu"
    assert select_backend("torch").name == ("torch-cuda" if torch.cuda.is_available() else "torch-cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        select_backend("cupy")


def test_the_difference_records_its_backend() -> None:
    zeros = np.zeros((8, 8), np.float32)
    difference = Difference(
        new=zeros, reference=zeros, difference=zeros, variance=zeros + 1, s_corr=zeros,
        mask=np.zeros((8, 8), np.uint16), psf=render_psf(2.0, 7, "moffat"), psf_fwhm=2.0, new_fwhm=2.0,
        flux_ratio=1.0, s_corr_std=1.0, registration_rms=0.1, method="zogy", fft_backend="torch-cuda")
    hdus = difference.to_hdus(fits.Header())
    assert hdus[0].header["FFTBACK"] == "torch-cuda"
    extensions = {hdu.name: (hdu.data, hdu.header) for hdu in hdus}
    assert Difference.from_extensions(extensions, zeros).fft_backend == "torch-cuda"
    del extensions["DIFF"][1]["FFTBACK"]  # a difference stored before the card existed ran on scipy
    assert Difference.from_extensions(extensions, zeros).fft_backend == "numpy"
