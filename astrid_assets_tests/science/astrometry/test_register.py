"""Registration through the WCS: known offsets and rotations land stars on the reference grid."""

import numpy as np
import pytest
import sep

from astrid_assets.science import masks
from astrid_assets.science.astrometry.register import (
    PixelMap,
    RegistrationError,
    _exact_input_pixels,
    register_to_reference,
)
from astrid_assets.science.astrometry.residuals import measure_registration_residuals
from astrid_assets_tests.science import scenes

REF_SHAPE = (384, 384)


def _sky_stars(rng: np.random.Generator, ref_wcs, n: int = 90):
    x, y = scenes.star_positions(REF_SHAPE, n, rng)
    return ref_wcs.pixel_to_world_values(x, y), x, y


def _observe_through(wcs, shape, world, flux, rng, fwhm=3.0):
    x, y = wcs.world_to_pixel_values(*world)
    model = scenes.render_stars(shape, x, y, flux, fwhm, "moffat")
    return scenes.observe(model, 300.0, 5.0, rng, fwhm), x, y


def _centroids(image: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float = 1.3):
    clean = np.ascontiguousarray(np.nan_to_num(image), dtype=np.float32)
    xw, yw, flag = sep.winpos(clean, x, y, sigma, mask=np.ascontiguousarray(~np.isfinite(image)))
    return xw, yw, flag


@pytest.mark.parametrize(
    ("rotation", "shift", "scale"),
    [(0.0, (7.3, -4.6), 1.0), (6.0, (12.3, -7.6), 1.02), (-90.0, (0.5, 0.5), 0.98)],
)
def test_frame_with_known_wcs_offset_lands_on_reference_grid(rotation, shift, scale) -> None:
    rng = np.random.default_rng(11)
    ref_wcs = scenes.tan_wcs(REF_SHAPE)
    frame_shape = (360, 400)
    frame_wcs = scenes.tan_wcs(frame_shape, rotation_deg=rotation, crpix_shift=shift, scale_arcsec=scale)
    world, x_ref, y_ref = _sky_stars(rng, ref_wcs)
    flux = np.exp(rng.uniform(np.log(3e4), np.log(3e5), x_ref.size))
    frame, _, _ = _observe_through(frame_wcs, frame_shape, world, flux, rng)

    registered = register_to_reference(
        frame.image - frame.background, frame.variance, frame.mask, frame_wcs, ref_wcs, REF_SHAPE
    )
    assert registered.image.dtype == np.float32 and registered.mask.dtype == np.uint16
    assert 0.5 < registered.overlap_fraction <= 1.0
    outside = (registered.mask & masks.NO_DATA) != 0
    assert np.all(np.isnan(registered.image[outside])) and np.all(np.isfinite(registered.image[~outside]))

    xw, yw, flag = _centroids(registered.image, x_ref, y_ref)
    ix, iy = np.rint(x_ref).astype(int), np.rint(y_ref).astype(int)
    # stars whose whole stamp received data
    from scipy import ndimage

    far_from_edge = ~ndimage.binary_dilation(outside, iterations=8)[iy, ix]
    good = (flag == 0) & far_from_edge
    assert good.sum() >= 40
    error = np.hypot(xw - x_ref, yw - y_ref)[good]
    assert np.max(error) < 0.1, f"max position error {np.max(error):.3f} px"
    assert np.median(error) < 0.03


def test_coarse_grid_map_matches_exact_wcs_transform() -> None:
    ref_wcs = scenes.tan_wcs(REF_SHAPE)
    frame_wcs = scenes.tan_wcs((300, 300), rotation_deg=33.0, crpix_shift=(40.0, -20.0), scale_arcsec=1.1)
    pixel_map = PixelMap(frame_wcs, ref_wcs, REF_SHAPE, grid_step=32)
    x_in, y_in = pixel_map.rows(0, REF_SHAPE[0])
    gx, gy = np.meshgrid(np.arange(REF_SHAPE[1]), np.arange(REF_SHAPE[0]))
    x_exact, y_exact = _exact_input_pixels(frame_wcs, ref_wcs, gx, gy)
    assert np.abs(x_in - x_exact).max() < 1e-3
    assert np.abs(y_in - y_exact).max() < 1e-3


def test_frame_off_the_field_raises_registration_error() -> None:
    ref_wcs = scenes.tan_wcs(REF_SHAPE)
    # 0.5 degree away: far more than the 384 arcsec field.
    elsewhere = scenes.tan_wcs(REF_SHAPE, ra=150.5, dec=2.3)
    image = np.ones(REF_SHAPE, np.float32)
    with pytest.raises(RegistrationError, match="off the reference"):
        register_to_reference(image, image, None, elsewhere, ref_wcs, REF_SHAPE)


def test_small_overlap_raises_registration_error() -> None:
    ref_wcs = scenes.tan_wcs(REF_SHAPE)
    mostly_off = scenes.tan_wcs(REF_SHAPE, crpix_shift=(330.0, 0.0))  # 14 % overlap
    image = np.ones(REF_SHAPE, np.float32)
    with pytest.raises(RegistrationError, match="minimum"):
        register_to_reference(image, image, None, mostly_off, ref_wcs, REF_SHAPE, min_overlap=0.25)


def test_mask_bits_and_variance_propagate() -> None:
    ref_wcs = scenes.tan_wcs(REF_SHAPE)
    frame_wcs = scenes.tan_wcs(REF_SHAPE, crpix_shift=(10.4, 3.7))  # pure shift
    image = np.full(REF_SHAPE, 100.0, np.float32)
    variance = np.full(REF_SHAPE, 50.0, np.float32)
    mask = np.zeros(REF_SHAPE, np.uint16)
    mask[200, 150] = masks.COSMIC_RAY
    image[200, 150] = 1e6  # the hit must not leak into unflagged pixels
    registered = register_to_reference(image, variance, mask, frame_wcs, ref_wcs, REF_SHAPE)
    hit = (registered.mask & masks.COSMIC_RAY) != 0
    assert 1 <= hit.sum() <= 16
    clean = ~hit & ((registered.mask & masks.NO_DATA) == 0)
    assert np.allclose(registered.image[clean], 100.0, atol=1e-3)
    assert np.allclose(registered.variance[clean], 50.0, atol=1e-3)
    # The frame is shifted by +10.4 px in x: the hit lands near x = 150 - 10.4.
    jy, jx = np.nonzero(hit)
    assert abs(jx.mean() - (150 - 10.4)) < 1.5 and abs(jy.mean() - (200 - 3.7)) < 1.5
    assert np.all((registered.mask[:, -10:] & masks.NO_DATA) != 0)


def test_registration_residuals_measure_a_known_offset() -> None:
    rng = np.random.default_rng(12)
    ref_wcs = scenes.tan_wcs(REF_SHAPE)
    world, x_ref, y_ref = _sky_stars(rng, ref_wcs)
    flux = np.exp(rng.uniform(np.log(5e4), np.log(5e5), x_ref.size))
    reference, _, _ = _observe_through(ref_wcs, REF_SHAPE, world, flux, rng)
    # The frame's WCS is wrong by 0.3 px in x and -0.2 px in y.
    true_wcs = scenes.tan_wcs(REF_SHAPE, crpix_shift=(5.0, 5.0))
    stated_wcs = scenes.tan_wcs(REF_SHAPE, crpix_shift=(5.3, 4.8))
    frame, _, _ = _observe_through(true_wcs, REF_SHAPE, world, flux, rng)
    registered = register_to_reference(
        frame.image - frame.background, frame.variance, frame.mask, stated_wcs, ref_wcs, REF_SHAPE
    )
    residuals = measure_registration_residuals(
        registered.image,
        np.sqrt(registered.variance),
        reference.image - reference.background,
        np.sqrt(reference.variance),
        registered.mask,
    )
    assert residuals.n_stars >= 30
    assert residuals.dx == pytest.approx(-0.3, abs=0.03)
    assert residuals.dy == pytest.approx(0.2, abs=0.03)
    assert residuals.rms_x < 0.05 and residuals.rms_y < 0.05
    corrected = register_to_reference(
        frame.image - frame.background,
        frame.variance,
        frame.mask,
        stated_wcs,
        ref_wcs,
        REF_SHAPE,
        pixel_offset=(residuals.dx, residuals.dy),
    )
    again = measure_registration_residuals(
        corrected.image,
        np.sqrt(corrected.variance),
        reference.image - reference.background,
        np.sqrt(reference.variance),
        corrected.mask,
    )
    assert abs(again.dx) < 0.02 and abs(again.dy) < 0.02


def test_resampling_conserves_star_flux_across_pixel_scales() -> None:
    rng = np.random.default_rng(13)
    ref_wcs = scenes.tan_wcs(REF_SHAPE)
    frame_wcs = scenes.tan_wcs(REF_SHAPE, rotation_deg=3.0, scale_arcsec=1.1)  # bigger pixels
    world, x_ref, y_ref = _sky_stars(rng, ref_wcs, n=40)
    flux = np.full(x_ref.size, 1e5)
    fx, fy = frame_wcs.world_to_pixel_values(*world)
    model = scenes.render_stars(REF_SHAPE, fx, fy, flux, 3.0 / 1.1, "gaussian")  # 3 ref px wide
    registered = register_to_reference(model, model + 1.0, None, frame_wcs, ref_wcs, REF_SHAPE)
    surface = register_to_reference(model, model + 1.0, None, frame_wcs, ref_wcs, REF_SHAPE, conserve_flux=False)
    inside = (x_ref > 30) & (x_ref < 354) & (y_ref > 30) & (y_ref < 354)
    kept, _, _ = sep.sum_circle(np.nan_to_num(registered.image), x_ref[inside], y_ref[inside], 10.0)
    lost, _, _ = sep.sum_circle(np.nan_to_num(surface.image), x_ref[inside], y_ref[inside], 10.0)
    assert np.median(kept) == pytest.approx(1e5, rel=0.005)
    assert np.median(lost) == pytest.approx(1e5 * 1.1**2, rel=0.01)  # surface brightness kept instead


def test_a_flagged_pixel_beside_a_star_core_masks_only_its_neighbours() -> None:
    """A cosmic-ray flag next to a star's peak: the pixel is filled from its neighbours before the cubic spline,
    so only the resampled pixels whose 2 x 2 support holds it are masked, and the rest of the star is as it would
    be without the flag. (Filled with the frame's median and masked over the 4 x 4 support, the star's whole core
    was masked in that frame, and a transient in it was clipped out of the co-added reference.)"""
    rng = np.random.default_rng(21)
    shape = (96, 96)
    ref_wcs = scenes.tan_wcs(shape)
    frame_wcs = scenes.tan_wcs(shape, rotation_deg=0.4, crpix_shift=(0.37, -0.61))
    model = scenes.render_stars(shape, np.array([47.3]), np.array([48.6]), np.array([4e4]), 1.4, "gaussian")
    frame = scenes.observe(model, 300.0, 5.0, rng, 1.4)
    image = frame.image - frame.background
    clean = register_to_reference(image, frame.variance, None, frame_wcs, ref_wcs, shape)
    flagged = frame.mask.copy()
    flagged[50, 48] = masks.COSMIC_RAY  # the peak pixel is [49, 47]; this diagonal neighbour holds 8 % of it
    hit = image.copy()
    hit[50, 48] += 3e3  # the flagged value itself is wrong
    registered = register_to_reference(hit, frame.variance, flagged, frame_wcs, ref_wcs, shape)
    masked = (registered.mask & masks.COSMIC_RAY) != 0
    assert 1 <= masked.sum() <= 4
    near = np.zeros(shape, bool)
    near[40:58, 38:56] = True
    error = np.abs(registered.image - clean.image)[near & ~masked]
    # measured: 1.2 % of the peak at worst, 2.9 % of the star's flux summed over its unmasked pixels
    # (flagging a side neighbour holding 78 % of the peak instead: 2.4 % and 5.8 %)
    assert error.max() < 0.03 * float(np.nanmax(clean.image))
    assert error.sum() < 0.05 * 4e4


def test_a_last_block_of_one_row_still_conserves_flux() -> None:
    """Blocks of ``block_rows`` leave a one-row block when the grid has ``k·block_rows + 1`` rows; its area ratio
    needs a neighbouring row (it was taken as 1, so the last row kept the input frame's surface brightness)."""
    shape = (9, 64)
    ref_wcs = scenes.tan_wcs(shape, scale_arcsec=1.0)
    frame_wcs = scenes.tan_wcs((12, 80), scale_arcsec=0.8)
    flat = np.ones((12, 80), np.float32)
    registered = register_to_reference(flat, flat, None, frame_wcs, ref_wcs, shape, block_rows=4)
    inside = np.isfinite(registered.image)
    assert registered.image[inside] == pytest.approx(1.0 / 0.8**2, rel=1e-3)  # input pixels per reference pixel
    assert np.isfinite(registered.image[-1, 5:-5]).all()


def test_area_ratio_is_the_maps_jacobian_to_the_corners() -> None:
    """The counts-conserving factor is the determinant of the exact map's Jacobian, at the grid's edges too (one-sided
    finite differences were off by 4e-6 there for a SIP distortion)."""
    from astropy.wcs import Sip

    from astrid_assets.science.astrometry.register import PixelMap, _exact_input_pixels

    shape = (1024, 1024)
    ref_wcs = scenes.tan_wcs(shape, scale_arcsec=0.4)
    frame_wcs = scenes.tan_wcs((900, 900), scale_arcsec=0.5)
    frame_wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    a, b = np.zeros((4, 4)), np.zeros((4, 4))
    a[2, 0], a[0, 2], b[1, 1], a[3, 0] = 3e-6, -2e-6, 4e-6, 1e-9
    frame_wcs.sip = Sip(a, b, None, None, frame_wcs.wcs.crpix)
    pixel_map = PixelMap(frame_wcs, ref_wcs, shape)
    area = pixel_map.area_rows(0, shape[0])
    step = 1e-3
    for y, x in ((0, 0), (0, 1023), (1023, 1023), (511, 3), (700, 400)):
        xs, ys = _exact_input_pixels(frame_wcs, ref_wcs, np.array([x + step, x - step, x, x]),
                                     np.array([y, y, y + step, y - step]))
        jacobian = np.array([[xs[0] - xs[1], xs[2] - xs[3]], [ys[0] - ys[1], ys[2] - ys[3]]]) / (2 * step)
        assert area[y, x] == pytest.approx(abs(np.linalg.det(jacobian)), rel=1e-6)
