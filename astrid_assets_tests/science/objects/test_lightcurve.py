"""Baseline correction, limits and magnitudes of a forced light curve."""

import numpy as np
import pandas as pd

from astrid_assets.science.objects.lightcurve import baseline_correct, to_magnitudes


def test_the_baseline_of_each_reference_version_comes_from_its_epochs_before_discovery():
    rows = pd.DataFrame({
        "mjd_obs": [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        # a reference holding 40 e- of the object's host; a cosmic ray on the first epoch
        "flux": [3000.0, -40.0, -38.0, -42.0, 960.0, 1960.0, 500.0],
        "flux_err": [10.0] * 7,
        "reference_version": ["v1"] * 6 + ["v2"],  # v2: no epoch before discovery, left uncorrected
    })
    out = baseline_correct(rows, first_mjd=4.0)
    assert np.allclose(out.baseline[:6], -40.0) and out.baseline[6] == 0.0
    assert np.allclose(out.flux[4:6], [1000.0, 2000.0])
    assert out.before_first_detection.tolist() == [True] * 4 + [False] * 3


def test_upper_limits_and_magnitudes():
    rows = pd.DataFrame({"flux": [30.0, 6000.0], "flux_err": [10.0, 20.0], "zero_point": [25.0, np.nan],
                         "exptime": [60.0, 60.0]})
    out = to_magnitudes(rows)
    assert out.detected.tolist() == [False, True]
    assert np.isnan(out.mag[0]) and np.isclose(out.maglim_5sigma[0], 25.0 - 2.5 * np.log10(50.0 / 60.0))
    assert np.isnan(out.mag[1]) and np.isnan(out.maglim_5sigma[1])  # no zero point: fluxes only
    assert np.allclose(out.flux_limit_5sigma, [50.0, 100.0])
