"""The subtraction inputs: options validated when made; a pair's mask is the two images' masks combined."""

from dataclasses import replace

import numpy as np
import pytest

from astrid_assets.science import masks
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.inputs import ClassicOptions, SubtractionImage, ZogyOptions, pair_mask
from astrid_assets.science.subtraction.zogy import zogy


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ZogyOptions(backend="cuda"), "unknown backend"),
        (lambda: ZogyOptions(background="poly"), "background must be one of"),
        (lambda: ZogyOptions(flux_ratio=0.0), "flux_ratio must be positive"),
        (lambda: ZogyOptions(flux_ratio=np.nan), "flux_ratio must be positive"),
        (lambda: ZogyOptions(flux_ratio_err=-0.1), "flux_ratio_err"),
        (lambda: ZogyOptions(psf_error="yes"), "psf_error"),
        (lambda: ZogyOptions(psf_error=-0.01), "psf_error"),
        (lambda: ClassicOptions(method="sinc"), "unknown method"),
        (lambda: ClassicOptions(regularisation=0.0), "regularisation"),
        (lambda: SubtractionImage(np.zeros((8, 8)), np.ones((3, 3)), 0.0), "sigma must be positive"),
    ],
)
def test_bad_values_are_refused_when_made(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_the_mask_of_a_pair_may_be_given_on_either_image() -> None:
    rng = np.random.default_rng(0)
    shape = (128, 128)
    mask = np.zeros(shape, np.uint16)
    mask[40:43, 60:62] = masks.SATURATED
    psf = render_psf(3.0, 15, "moffat")
    new = SubtractionImage(rng.normal(0.0, 10.0, shape).astype(np.float32), psf, 10.0)
    ref = SubtractionImage(rng.normal(0.0, 5.0, shape).astype(np.float32), psf, 5.0)
    assert pair_mask(new, ref) is None
    options = ZogyOptions(flux_ratio=1.0, backend="numpy")
    on_new = zogy(replace(new, mask=mask), ref, options)
    on_ref = zogy(new, replace(ref, mask=mask), options)
    on_both = zogy(replace(new, mask=mask), replace(ref, mask=mask), options)
    for result in (on_ref, on_both):
        np.testing.assert_array_equal(result.S_corr, on_new.S_corr)
        np.testing.assert_array_equal(result.mask, mask)
    other = np.zeros(shape, np.uint16)
    other[0, 0] = masks.NO_DATA
    np.testing.assert_array_equal(pair_mask(replace(new, mask=mask), replace(ref, mask=other)), mask | other)
