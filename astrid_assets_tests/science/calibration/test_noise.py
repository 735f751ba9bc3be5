"""The Poisson noise model checked against the measured sky noise (a header gain that does not describe the data)."""

import numpy as np
import pytest

from astrid_assets.science.calibration.noise import NoiseModel


def _frame(true_gain: float, header_gain: float, read_noise_e: float = 8.0, sky_e: float = 2000.0, seed: int = 1):
    """A flat sky observed with ``true_gain`` e-/ADU, converted to "electrons" with ``header_gain``."""
    rng = np.random.default_rng(seed)
    shape = (256, 256)
    electrons = rng.poisson(sky_e, shape) + rng.normal(0.0, read_noise_e, shape)
    adu = electrons / true_gain
    science = adu * header_gain
    model = NoiseModel(science=science, flat=np.ones(shape), dark_electrons=np.zeros(shape),
                       read_noise=read_noise_e * header_gain / true_gain, poisson=True, source_gain=1.0)
    background = np.full(shape, float(np.median(science)))
    background_rms = np.full(shape, float(np.std(science)))
    return model, science, background, background_rms


def test_a_correct_gain_keeps_the_poisson_model():
    model, _, background, rms = _frame(true_gain=2.0, header_gain=2.0)
    checked, note = model.matched_to_sky(background, rms, np.ones(background.shape, bool), gain=2.0)
    assert note is None and checked.photon_scale == 1.0


@pytest.mark.parametrize("true_gain", [1.0, 4.0])
def test_a_wrong_header_gain_is_replaced_by_the_measured_sky_noise(true_gain):
    model, science, background, rms = _frame(true_gain=true_gain, header_gain=2.0)
    checked, note = model.matched_to_sky(background, rms, np.ones(background.shape, bool), gain=2.0)
    assert note is not None and "effective gain" in note
    # the effective gain found is the true one, and the variance map now describes the pixels' scatter
    assert checked.photon_scale == pytest.approx(2.0 / true_gain, rel=0.05)
    variance = checked.variance(background, rms)
    assert float(np.std(science)) / float(np.sqrt(np.median(variance))) == pytest.approx(1.0, abs=0.02)
    assert float(np.std(science)) / float(np.sqrt(np.median(model.variance(background, rms)))) != pytest.approx(
        1.0, abs=0.1)
