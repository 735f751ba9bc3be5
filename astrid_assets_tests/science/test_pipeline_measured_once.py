"""Each image measured once: differencing a measured frame against a stored reference extracts the new
frame's stars at most once and the reference's never, and the injection check extracts nothing more."""

import numpy as np
import pandas as pd
import pytest
import sep
from astropy.io import fits

from astrid_assets.science.frames.files import read_extensions, to_fits_bytes
from astrid_assets.science.injection.fakes import injection_recovery
from astrid_assets.science.measurements import measure_frame, measure_reference
from astrid_assets.science.pipeline import difference_frame, find_candidates
from astrid_assets.science.products import CalibratedFrame, Difference, Reference
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets_tests.science import scenes

SHAPE = (384, 384)


@pytest.fixture(scope="module")
def pair():
    """A measured frame (rotated, shifted WCS with a 0.6 px pointing error) and a measured, stored reference."""
    rng = np.random.default_rng(7)
    ref_wcs = scenes.tan_wcs(SHAPE)
    frame_wcs = scenes.tan_wcs(SHAPE, rotation_deg=2.0, crpix_shift=(4.3, -2.1))
    x, y = scenes.star_positions(SHAPE, 70, rng)
    flux = np.exp(rng.uniform(np.log(3e3), np.log(2e5), x.size))
    world = ref_wcs.pixel_to_world_values(x, y)
    reference = scenes.observe(scenes.render_stars(SHAPE, x, y, flux, 3.5), 40.0, 2.0, rng, 3.5)
    fx, fy = frame_wcs.world_to_pixel_values(*world)
    frame = scenes.observe(scenes.render_stars(SHAPE, fx + 0.6, fy, flux, 2.6), 300.0, 5.0, rng, 2.6)
    stored = Reference(
        image=(reference.image - reference.background).astype(np.float32), variance=reference.variance,
        mask=reference.mask, psf=render_psf(3.5, 25, "moffat", 3.0).astype(np.float32),
        header=ref_wcs.to_header(relax=True))
    # built and measured once, then read back as the differencing asset reads it
    stored = Reference.from_extensions(read_extensions(to_fits_bytes(measure_reference(stored).to_hdus())))
    calibrated = measure_frame(CalibratedFrame(
        science=frame.image, mask=frame.mask, variance=frame.variance,
        background=np.full(SHAPE, frame.background, np.float32),
        background_rms=np.full(SHAPE, frame.background_rms, np.float32), header=frame_wcs.to_header(relax=True)))
    return calibrated, stored


@pytest.fixture
def extractions(monkeypatch):
    """Every SEP extraction made, as the image it was made on."""
    made: list[np.ndarray] = []
    real_extract = sep.extract

    def counting_extract(data, *args, **kwargs):
        made.append(np.array(data, copy=True))
        return real_extract(data, *args, **kwargs)

    monkeypatch.setattr(sep, "extract", counting_extract)
    return made


def test_stored_measurements_round_trip(pair):
    frame, reference = pair
    assert reference.stars is not None and len(reference.stars) >= 20
    assert reference.psf_field is not None and reference.psf_field.constant.fwhm == pytest.approx(3.5, abs=0.5)
    assert frame.stars is not None and frame.psf is not None and frame.psf.fwhm == pytest.approx(2.6, abs=0.4)
    back = CalibratedFrame.from_extensions(read_extensions(to_fits_bytes(_frame_hdus(frame))))
    np.testing.assert_array_equal(back.stars["x"], frame.stars["x"])
    np.testing.assert_array_equal(back.psf.image, frame.psf.image)
    assert back.psf.fwhm == frame.psf.fwhm


def _frame_hdus(frame: CalibratedFrame) -> list:
    """The calibrated-frame FITS layout (``calibrated_frames``)."""
    science = fits.PrimaryHDU(frame.science, frame.header)
    science.name = "SCI"
    return [science, fits.ImageHDU(frame.mask, name="MASK"), fits.ImageHDU(frame.variance, name="VARIANCE"),
            fits.ImageHDU(frame.background, name="BKG"), fits.ImageHDU(frame.background_rms, name="BKGRMS"),
            *frame.measurement_hdus()]


def test_differencing_extracts_the_new_frame_once_and_the_reference_never(pair, extractions):
    frame, reference = pair
    difference = difference_frame(frame, reference)
    on_reference = [image for image in extractions if np.allclose(image, reference.image, atol=1e-3)]
    assert on_reference == [], "the reference's stars were extracted again"
    assert len(extractions) <= 1, f"{len(extractions)} extractions of the new frame"
    assert abs(difference.pixel_offset[0] - 0.6) < 0.1, "the pointing error is measured from the stored stars"
    assert 0.9 < difference.s_corr_std < 1.1


def test_the_injection_check_reuses_the_difference(pair, extractions):
    frame, reference = pair
    difference = Difference.from_extensions(
        read_extensions(to_fits_bytes(difference_frame(frame, reference).to_hdus(reference.header))), reference.image)
    original, _ = find_candidates(difference, reference.wcs)
    extractions.clear()
    outcome = injection_recovery(frame, reference, original, np.random.default_rng(1), n_fakes=30,
                                 snr_range=(15.0, 30.0), like=difference)
    of_the_frame = [image for image in extractions  # candidate detection on S_corr is not a star extraction
                    if np.corrcoef(image.ravel(), difference.new.ravel())[0, 1] > 0.5]
    assert of_the_frame == [], "the frame with fakes is differenced with the untouched frame's measurements"
    assert np.mean(outcome.recovered) >= 0.9
    assert isinstance(original, pd.DataFrame) and len(outcome.recovered) >= 25
