"""Frames AstrID did not make: the MaxIm DL pair of ESO 085-030 (``README.md`` of the ``real_data`` folder).

Light frames with no GAIN, RDNOISE, SATURATE or WCS, 16-bit unsigned with BZERO, sky included, and
no calibration frames: read as AstrID reads a FITS drop, calibrated with the identity masters of a
night without calibration frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import sep
from scipy.ndimage import binary_dilation

from astrid_assets.defs.calibration import archive_reduced
from astrid_assets.science import masks
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.frames.files import read_frame
from astrid_assets.science.frames.headers import exposure_time, image_type, observation_mjd

FRAMES = ("aligned_eso085-030-004", "aligned_eso085-030-005")  #: in the real_data fixture's eso085-030/


def test_the_real_frames_are_there(real_data):
    """Both frames are in the real-data folder (the ``real_data`` fixture skips, or fails in CI, without it)."""
    assert sorted(path.stem for path in (real_data / "eso085-030").glob("*.fit")) == list(FRAMES)


@pytest.fixture(scope="module", params=FRAMES)
def real(request, real_data):
    path = real_data / "eso085-030" / f"{request.param}.fit"
    image, header = read_frame(path.read_bytes(), "2015-12-27", path.stem)
    return image, header, calibrate_frame(image, header, archive_reduced(image.shape))


def test_the_maxim_dl_header_is_understood(real):
    image, header, _ = real
    assert image_type(header) == "object"  # IMAGETYP = 'Light Frame'
    assert exposure_time(header) == 60.0
    assert observation_mjd(header) == pytest.approx(57383.27, abs=0.01)  # DATE-OBS, JD
    assert header["ORIGTYPE"] == "uint16" and image.dtype == np.float32


def test_real_frames_are_calibrated_with_a_consistent_noise_model(real):
    _, _, calibrated = real
    unusable = (calibrated.mask & (masks.UNUSABLE | masks.EDGE)) != 0
    assert ((calibrated.mask & masks.UNUSABLE) != 0).mean() < 0.02
    residual = (calibrated.science - calibrated.background).astype(np.float32)
    _, segmentation = sep.extract(residual, 2.0, err=calibrated.background_rms, mask=unusable,
                                  segmentation_map=True, minarea=5)
    blank = ~unusable & ~binary_dilation(segmentation > 0, iterations=3)
    assert blank.sum() > 100_000
    ratio = float(np.std((residual / np.sqrt(calibrated.variance))[blank]))
    assert 0.9 <= ratio <= 1.1


def test_what_was_assumed_is_recorded(real):
    _, _, calibrated = real
    info = calibrated.info
    assert info["data_state"] == "raw"  # uint16 counts, no calibration history, no calibration frames
    assert info["gain_source"].startswith("estimated from sky variance")
    assert 0.5 < info["gain"] < 5.0
    # 67 (frame 004) and 132 (005) pixels sit at the ADC ceiling 65535, with a tail just below it: the plateau
    assert info["read_noise"] is None and 65000.0 < info["saturation"] <= 65535.0
    assert info["cr_fwhm_px"] is not None and 1.5 < info["cr_fwhm_px"] < 5.0
    text = " ".join(info["assumptions"])
    assert "pedestal" in text and "gain" in text and "saturation" in text
