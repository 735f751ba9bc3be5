"""The data's own state, gain, read noise and saturation worked out from the pixels (calibrate.py),
on synthetic frames of known gain, pedestal and noise (frame_scenes, not the pipeline's simulator)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import sep
from astropy.io import fits
from scipy.ndimage import binary_dilation

from astrid_assets.defs.calibration import night_masters
from astrid_assets.science import masks
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.calibration.detector import (
    classify_data_state,
    estimate_gain,
    estimate_saturation,
    photon_transfer,
)
from astrid_assets.science.calibration.masters import build_masters
from astrid_assets.science.frames.files import read_frame
from astrid_assets_tests.science.frame_scenes import gaussian_stars, identity_masters, make_scene

NIGHT = "2024-03-01"
GAIN = 2.5  # e-/ADU
READ_NOISE = 6.0  # e-
PEDESTAL = 1100.0  # ADU
SKY = 1000.0  # e-


@pytest.fixture(scope="module")
def scene():
    return make_scene(2.5, shape=(256, 256), n_stars=120, sky=SKY, read_noise=READ_NOISE, n_cosmic=30, seed=11)


def as_uint16_fits(adu: np.ndarray, cards: dict) -> tuple[np.ndarray, fits.Header]:
    """Through a 16-bit unsigned FITS file (BITPIX 16, BZERO 32768), as a camera writes it."""
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.clip(np.rint(adu), 0, 65535).astype(np.uint16), fits.Header(cards)).writeto(buffer)
    return read_frame(buffer.getvalue(), NIGHT, "frame")


def blank_sky_noise_ratio(calibrated) -> float:
    """std((science - background) / sqrt(variance)) over usable pixels away from sources."""
    unusable = (calibrated.mask & (masks.UNUSABLE | masks.EDGE)) != 0
    residual = (calibrated.science - calibrated.background).astype(np.float32)
    _, segmentation = sep.extract(residual, 2.0, err=calibrated.background_rms, mask=unusable,
                                  segmentation_map=True, minarea=5)
    blank = ~unusable & ~binary_dilation(segmentation > 0, iterations=3)
    return float(np.std((residual / np.sqrt(calibrated.variance))[blank]))


# --------------------------------------------------------------------------- (d) gain


def test_gain_formula_inverts_the_photon_transfer_relation():
    level = 400.0  # ADU
    variance = level / GAIN + (READ_NOISE / GAIN) ** 2
    assert estimate_gain(level, variance, READ_NOISE) == pytest.approx(GAIN, rel=1e-9)
    assert estimate_gain(level, variance) == pytest.approx(GAIN / (1 + READ_NOISE**2 / (GAIN * level)), rel=1e-9)
    assert estimate_gain(-5.0, 10.0) is None and estimate_gain(10.0, 0.0) is None


@pytest.mark.parametrize("with_read_noise", [True, False])
def test_gain_is_estimated_from_the_sky_variance_without_a_gain_card(scene, with_read_noise):
    adu = (scene.electrons / GAIN).astype(np.float32)  # reduced: calibrated ADU, sky included
    cards = {"IMAGETYP": "object", "EXPTIME": 60.0, **({"RDNOISE": READ_NOISE} if with_read_noise else {})}
    calibrated = calibrate_frame(adu, fits.Header(cards), identity_masters(adu.shape))
    info = calibrated.info
    assert info["data_state"] == "reduced"
    assert info["gain_source"].startswith("estimated from sky variance")
    assert info["gain"] == pytest.approx(GAIN, rel=0.10)
    assert any("estimated from the sky" in text for text in info["assumptions"])
    # the frame is then in electrons: the sky level comes back
    assert np.median(calibrated.background) == pytest.approx(SKY, rel=0.10)
    assert blank_sky_noise_ratio(calibrated) == pytest.approx(1.0, abs=0.1)


def test_photon_transfer_of_flat_and_bias_pairs_gives_gain_and_read_noise():
    rng = np.random.default_rng(5)
    shape = (200, 200)
    bias_pattern = PEDESTAL + rng.normal(0, 3.0, shape[1])[None, :]
    response = 1.0 + 0.01 * rng.standard_normal(shape)

    def bias():
        return bias_pattern + rng.normal(0, READ_NOISE / GAIN, shape)

    def flat(level):
        electrons = rng.poisson(level * response).astype(float) + rng.normal(0, READ_NOISE, shape)
        return electrons / GAIN + bias_pattern

    gain, read_noise = photon_transfer([bias() for _ in range(5)], [flat(40000.0 * s) for s in (1.0, 1.03, 0.97)])
    assert gain == pytest.approx(GAIN, rel=0.03)
    assert read_noise == pytest.approx(READ_NOISE, rel=0.10)
    masters = build_masters([bias() for _ in range(3)], [], [flat(40000.0), flat(41000.0)])
    assert masters.gain == pytest.approx(GAIN, rel=0.05) and masters.read_noise == pytest.approx(READ_NOISE, rel=0.15)
    assert photon_transfer([bias()], [flat(40000.0), flat(40000.0)]) == (None, None)


# --------------------------------------------------------------------------- (e) data state


def test_a_raw_frame_with_a_pedestal_and_a_gain_card(scene):
    image, header = as_uint16_fits(scene.electrons / GAIN + PEDESTAL,
                                   {"IMAGETYP": "Light Frame", "GAIN": GAIN, "RDNOISE": READ_NOISE, "EXPTIME": 60.0})
    state = classify_data_state(image, header, calibrated_with_masters=False, gain=GAIN, read_noise=READ_NOISE)
    assert state.state == "raw" and "pedestal" in state.reason
    calibrated = calibrate_frame(image, header, identity_masters(image.shape))
    assert calibrated.info["data_state"] == "raw"
    assert calibrated.info["pedestal"] == pytest.approx(PEDESTAL, rel=0.03)
    assert np.median(calibrated.background) == pytest.approx(SKY, rel=0.08)
    assert blank_sky_noise_ratio(calibrated) == pytest.approx(1.0, abs=0.1)


def test_integer_counts_without_calibration_frames_or_history_are_raw(scene):
    image, header = as_uint16_fits(scene.electrons / GAIN + PEDESTAL, {"IMAGETYP": "Light Frame", "EXPTIME": 60.0})
    assert header["ORIGTYPE"] == "uint16"
    calibrated = calibrate_frame(image, header, identity_masters(image.shape))
    info = calibrated.info
    assert info["data_state"] == "raw" and info["pedestal"] is None
    assert "pedestal" in info["gain_source"]  # the estimate is an upper limit: the pedestal is in the sky level
    assert any("pedestal unknown" in text for text in info["assumptions"])
    assert blank_sky_noise_ratio(calibrated) == pytest.approx(1.0, abs=0.1)
    # a calibration history in the header makes the same pixels reduced
    header["CALSTAT"] = "BDF"
    assert classify_data_state(image, header, calibrated_with_masters=False).state == "reduced"


def test_a_frame_calibrated_with_the_nights_masters_is_raw_with_the_photon_transfer_gain(scene):
    rng = np.random.default_rng(8)
    shape = scene.electrons.shape

    def raw(electrons):
        return electrons / GAIN + PEDESTAL + rng.normal(0, READ_NOISE / GAIN, shape)

    biases = [raw(np.zeros(shape)) for _ in range(5)]
    flats = [raw(rng.poisson(np.full(shape, 30000.0 * s)).astype(float)) for s in (1.0, 1.02, 0.99)]
    masters = build_masters(biases, [], flats)
    frame = np.rint(scene.electrons / GAIN + PEDESTAL)  # the scene holds its read noise already
    calibrated = calibrate_frame(frame, fits.Header({"IMAGETYP": "LIGHT", "EXPOSURE": 60.0}), masters)
    info = calibrated.info
    assert info["data_state"] == "raw"
    assert info["gain_source"] == "photon transfer of the night's flat and bias pairs"
    assert info["gain"] == pytest.approx(GAIN, rel=0.05)
    assert info["noise_model"].startswith("Poisson model")
    assert blank_sky_noise_ratio(calibrated) == pytest.approx(1.0, abs=0.1)


def test_a_reduced_frame_is_reduced(scene):
    adu = (scene.electrons / GAIN).astype(np.float32)
    header = fits.Header({"IMAGETYP": "object", "GAIN": GAIN, "RDNOISE": READ_NOISE})
    state = classify_data_state(adu, header, calibrated_with_masters=False, gain=GAIN, read_noise=READ_NOISE)
    assert state.state == "reduced"
    assert state.sky == pytest.approx(SKY / GAIN, rel=0.02)
    assert state.sky_rms == pytest.approx(np.sqrt(SKY + READ_NOISE**2) / GAIN, rel=0.05)


@pytest.mark.parametrize(
    "cards",
    [{"GAIN": (1.0, "[e-/ADU] assumed: resampled survey pixels"), "RDNOISE": (0.0, "[e-] assumed")}, {}],
    ids=["assumed-cards", "no-cards"],
)
def test_a_sky_subtracted_frame_takes_its_variance_from_the_measured_noise(scene, cards):
    units = 0.01  # survey units per electron: the values are not photon counts
    data = ((scene.electrons - SKY) * units).astype(np.float32)
    header = fits.Header()
    for key, value in {"IMAGETYP": "object", **cards}.items():
        header[key] = value
    state = classify_data_state(data, header, calibrated_with_masters=False)
    assert state.state == "sky-subtracted" and state.negative_fraction > 0.3
    calibrated = calibrate_frame(data, header, identity_masters(data.shape))
    info = calibrated.info
    assert info["data_state"] == "sky-subtracted"
    assert info["gain"] == 1.0 and info["gain_source"] == "assumed 1 (sky-subtracted, cannot estimate)"
    assert info["read_noise"] is None
    assert "left out" in info["noise_model"]
    sky_variance = (np.sqrt(SKY + READ_NOISE**2) * units) ** 2
    assert np.median(calibrated.variance) == pytest.approx(sky_variance, rel=0.05)
    assert blank_sky_noise_ratio(calibrated) == pytest.approx(1.0, abs=0.1)
    assert ((calibrated.mask & masks.COSMIC_RAY) != 0).mean() < 0.02


# --------------------------------------------------------------------------- saturation


def test_saturation_from_a_pile_up_else_the_adc_ceiling():
    rng = np.random.default_rng(2)
    frame = rng.normal(1000.0, 20.0, (100, 100))
    found = estimate_saturation(frame, "float32")
    assert found.value is None
    assert estimate_saturation(np.rint(frame), "uint16").value == 65535.0
    assert "ADC ceiling 65535" in estimate_saturation(np.rint(frame), "uint16").source
    frame[40:45, 40:48] = 52000.0  # a star clipped at one value
    frame[39, 40:48] = 51500.0
    piled = estimate_saturation(frame, "uint16")
    assert piled.value == 52000.0 and "40 pixels piled up" in piled.source


@pytest.mark.parametrize("fwhm", [1.6, 6.0])
def test_saturation_plateau_with_read_noise_and_bias_structure(fwhm):
    """A full well read out through read noise and a sloping bias is a plateau, not one value: it is found from
    the pixels (no card) and every plateau pixel is masked; a frame whose brightest star is unsaturated has none."""
    rng = np.random.default_rng(4)
    shape, gain, full_well, bias = (200, 240), 2.0, 110000.0, 900.0
    xs, ys = rng.uniform(20, 220, 40), rng.uniform(20, 180, 40)
    fluxes = np.r_[np.exp(rng.uniform(np.log(2e3), np.log(2e5), 37)), [4e6, 6e6, 9e6]]  # the last three saturate
    electrons = rng.poisson(gaussian_stars(shape, xs, ys, fluxes, fwhm) + 800.0).astype(float)
    electrons = np.minimum(electrons, full_well) + rng.normal(0.0, 7.0, shape)
    bias_columns = bias + rng.normal(0.0, 2.0, shape[1]) + 3.0 * np.linspace(-1, 1, shape[1])
    adu = np.rint(electrons / gain + bias_columns[None, :])
    found = estimate_saturation(adu, "uint16")
    assert found.value is not None and found.value < 60000 and "plateau" in found.source
    plateau = electrons >= full_well - 3 * 7.0
    assert (adu[plateau] >= found.value).mean() >= 0.99
    assert np.count_nonzero(adu >= found.value) <= 1.5 * plateau.sum()
    unsaturated = np.rint(rng.poisson(gaussian_stars(shape, xs[:37], ys[:37], fluxes[:37], fwhm) + 800.0) / gain + bias)
    assert estimate_saturation(unsaturated, "uint16").value == 65535.0
    assert estimate_saturation(unsaturated.astype(np.float32), "float32").value is None


def test_without_a_saturation_card_the_estimate_is_used_and_said():
    rng = np.random.default_rng(3)
    raw = rng.normal(2000.0, 30.0, (128, 128))
    raw[60:64, 60:64] = 65535.0
    image, header = as_uint16_fits(raw, {"IMAGETYP": "Light Frame", "GAIN": 1.5, "RDNOISE": 8.0})
    calibrated = calibrate_frame(image, header, identity_masters(image.shape))
    assert calibrated.info["saturation"] == 65535.0
    assert "piled up" in calibrated.info["saturation_source"]
    assert (calibrated.mask[60:64, 60:64] & masks.SATURATED).all()
    assert any("saturation" in text for text in calibrated.info["assumptions"])


# --------------------------------------------------------------------------- per-frame robustness


class DictStore:
    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def get(self, key: str) -> bytes:
        return self.files[key]


def test_a_bad_calibration_frame_is_left_out_and_named_and_the_night_goes_on():
    rng = np.random.default_rng(9)
    shape = (64, 64)

    def fits_of(data, cards):
        buffer = io.BytesIO()
        fits.PrimaryHDU(data.astype(np.float32), fits.Header(cards)).writeto(buffer)
        return buffer.getvalue()

    files = {
        "b1": fits_of(PEDESTAL + rng.normal(0, 2, shape), {"IMAGETYP": "Bias Frame"}),
        "b2": fits_of(PEDESTAL + rng.normal(0, 2, shape), {"IMAGETYP": "Bias Frame"}),
        "b3": b"SIMPLE  =  T  truncated",
        "d1": fits_of(PEDESTAL + rng.normal(0, 2, shape), {"IMAGETYP": "Dark Frame"}),  # no exposure time
        "f1": fits_of(PEDESTAL + 20000 + rng.normal(0, 50, shape), {"IMAGETYP": "Flat Field"}),
        "f2": fits_of(PEDESTAL + 20000 + rng.normal(0, 50, (32, 32)), {"IMAGETYP": "Flat Field"}),
    }
    kinds = {"b1": "bias", "b2": "bias", "b3": "bias", "d1": "dark", "f1": "flat", "f2": "flat"}
    frames = pd.DataFrame({"frame_id": list(kinds), "imagetyp": list(kinds.values()), "path": list(kinds)})
    problems: list[str] = []
    masters = night_masters(frames, DictStore(files), NIGHT, problems)
    assert masters is not None and masters.bias.shape == shape
    text = "\n".join(problems)
    for frame_id, problem in (("b3", "unreadable"), ("d1", "exposure time"), ("f2", "shape")):
        assert f"night {NIGHT}, frame {frame_id}:" in text and problem in text
    problems.clear()
    only_flats = frames[frames.imagetyp == "flat"]
    assert night_masters(only_flats, DictStore(files), NIGHT, problems) is None
    assert "no usable bias" in problems[-1]
