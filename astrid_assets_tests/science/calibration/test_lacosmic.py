"""The L.A.Cosmic loop of :mod:`astrid_assets.science.calibration.cosmics` gives astroscrappy's mask to the pixel."""

import astroscrappy
import numpy as np
import pytest
from scipy.ndimage import median_filter

from astrid_assets.science.calibration.cosmics import _fill_from_rows
from astrid_assets.science.calibration.lacosmic import _clean_meanmask, lacosmic


def _frame(seed: int, shape=(300, 257)):
    rng = np.random.default_rng(seed)
    image = rng.normal(200.0, 12.0, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    stars = zip(rng.uniform(0, shape[0], 40), rng.uniform(0, shape[1], 40), rng.uniform(300, 40000, 40), strict=True)
    for y, x, flux in stars:
        profile = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2)) / (2 * np.pi * 1.5**2)
        image += (flux * profile).astype(np.float32)
    ys, xs = rng.integers(0, shape[0], 300), rng.integers(0, shape[1], 300)
    image[ys, xs] += rng.uniform(60, 3000, 300).astype(np.float32)  # hits, some of two or three pixels
    image[np.clip(ys + 1, 0, shape[0] - 1), xs] += rng.uniform(0, 900, 300).astype(np.float32)
    image[ys, np.clip(xs + 1, 0, shape[1] - 1)] += rng.uniform(0, 400, 300).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[rng.integers(0, shape[0], 60), rng.integers(0, shape[1], 60)] = True
    mask[:, 17] |= rng.random(shape[0]) < 0.5  # a bad column
    return image, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_variance", [False, True])
def test_lacosmic_matches_astroscrappy(seed, with_variance):
    image, mask = _frame(seed)
    variance = (np.clip(image, 0, None) + 25.0).astype(np.float32) * 1.3 if with_variance else None
    options = dict(sigclip=4.5, sigfrac=0.3, objlim=5.0 + 3.3 * seed, readnoise=5.0, satlevel=3000.0, niter=4)
    expected, _ = astroscrappy.detect_cosmics(image, inmask=mask, invar=variance, gain=1.0, verbose=False, **options)
    found = lacosmic(image, mask, variance, **options)
    assert expected.sum() > 50
    np.testing.assert_array_equal(found, expected)


def test_lacosmic_on_a_large_frame_uses_cut_outs_and_matches():
    image, mask = _frame(5, shape=(520, 600))  # above the size where the fine structure is cut out
    options = dict(sigclip=4.5, sigfrac=0.3, objlim=5.0, readnoise=5.0, satlevel=1e30, niter=6)
    expected, _ = astroscrappy.detect_cosmics(image, inmask=mask, gain=1.0, verbose=False, **options)
    np.testing.assert_array_equal(lacosmic(image, mask, None, **options), expected)


def test_fill_from_rows_is_the_row_median_filter():
    image, mask = _frame(3)
    image = image.astype(np.float64)
    expected = np.where(mask, median_filter(image, size=(1, 5), mode="nearest"), image)
    np.testing.assert_array_equal(_fill_from_rows(image, mask), expected)


def test_clean_meanmask_without_good_neighbours_takes_the_level():
    array = np.arange(49, dtype=np.float32).reshape(7, 7)
    crmask = np.zeros((7, 7), bool)
    crmask[1:6, 1:6] = True
    _clean_meanmask(array, crmask, np.zeros((7, 7), bool), 99.0)
    assert array[3, 3] == np.float32(99.0)
    assert array[2, 2] == np.float32(np.mean([0, 1, 2, 3, 4, 7, 14, 21, 28]))


@pytest.mark.parametrize("width", [5, 7, 9])
def test_network_medians_are_astroscrappys(width):
    from astroscrappy.utils import sepmedfilt5, sepmedfilt7, sepmedfilt9

    from astrid_assets.science.calibration.lacosmic import _sepmedfilt

    scrappy = {5: sepmedfilt5, 7: sepmedfilt7, 9: sepmedfilt9}[width]
    rng = np.random.default_rng(width)
    for shape in ((150, 131), (70, 400)):  # blocks of rows that end inside the frame, a wide strip
        image = rng.normal(100.0, 10.0, shape).astype(np.float32)
        image[rng.random(shape) < 0.05] = 50.0  # ties
        np.testing.assert_array_equal(_sepmedfilt(image, width), scrappy(image))
    image[3, 4] = np.nan  # non-finite values go to astroscrappy, which orders them its own way
    np.testing.assert_array_equal(_sepmedfilt(image, width), scrappy(image))


def test_later_passes_on_a_mosaic_of_cut_outs_match(monkeypatch):
    from astrid_assets.science.calibration import lacosmic as module

    image, mask = _frame(6, shape=(900, 700))  # hits sparse enough that later passes take cut-outs
    shapes = []
    one_pass = module._laplacian_cosmics
    monkeypatch.setattr(module, "_laplacian_cosmics",
                        lambda clean, *args: shapes.append(clean.shape) or one_pass(clean, *args))
    options = dict(sigclip=4.5, sigfrac=0.3, objlim=5.0, readnoise=5.0, satlevel=1e30, niter=4)
    expected, _ = astroscrappy.detect_cosmics(image, inmask=mask, gain=1.0, verbose=False, **options)
    np.testing.assert_array_equal(lacosmic(image, mask, None, **options), expected)
    mosaics = [shape for shape in shapes[1:] if shape[1] == 700 and shape != (900, 700)]
    assert mosaics, f"no pass on a mosaic of cut-outs: {shapes}"
