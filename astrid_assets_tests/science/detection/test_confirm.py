"""Confirmation by the night's other frames (``science.detection.confirm``), with known answers: a steady
transient in two differences of a field stays unflagged, a one-frame hit is flagged UNCONFIRMED, a frame that does
not cover the position (NO_DATA) or is too shallow to tell says nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from astrid_assets.science import masks
from astrid_assets.science.detection import (
    DEFAULT_RULES,
    FLAG_DIPOLE,
    FLAG_UNCONFIRMED,
    detect_candidates,
    flag_unconfirmed,
    look_at,
    refuted_by,
)
from astrid_assets.science.psf.profiles import render_psf

SHAPE, SIGMA, FWHM = (96, 96), 10.0, 3.0


def _difference(rng, sources, sigma=SIGMA):
    """A white-noise difference (e-) with PSF sources ``(x, y, flux)`` and its variance map."""
    psf = render_psf(FWHM, 15, "gaussian")
    image = rng.normal(0.0, sigma, SHAPE)
    for x, y, flux in sources:
        image[int(y) - 7 : int(y) + 8, int(x) - 7 : int(x) + 8] += flux * psf
    return image, np.full(SHAPE, sigma**2), psf


def test_look_at_measures_a_known_flux_and_says_nothing_off_the_data():
    rng = np.random.default_rng(1)
    image, variance, psf = _difference(rng, [(40, 50, 2000.0)])
    mask = np.zeros(SHAPE, np.uint16)
    mask[:, 80:] = masks.NO_DATA
    flux, err = look_at(image, variance, psf, mask, np.array([40.0, 85.0, -20.0]), np.array([50.0, 50.0, 10.0]))
    expected_err = SIGMA / np.sqrt((psf**2).sum())
    assert err[0] == pytest.approx(expected_err, rel=1e-3)
    assert abs(flux[0] - 2000.0) < 4 * expected_err
    assert np.isnan(flux[1]) and np.isnan(flux[2])  # NO_DATA, off the grid: not covered


def test_refuted_by_follows_the_flux_scale_and_the_combined_error():
    # the candidate's 1000 ± 100 e- in a frame of ratio 1 is 500 e- in a frame of ratio 0.5 (its error 50)
    args = dict(flux=np.full(4, 1000.0), flux_err=np.full(4, 100.0), sign=np.ones(4), ratio=np.ones(4),
                other_err=np.full(4, 50.0), other_ratio=np.full(4, 0.5), sigma=3.0)
    combined = np.hypot(50.0, 50.0)
    other = np.array([500.0, 500.0 - 2.9 * combined, 500.0 - 3.1 * combined, np.nan])
    assert refuted_by(other_flux=other, **args).tolist() == [False, False, True, False]
    # a fading candidate (negative flux) is refuted by a frame that shows no fading
    assert refuted_by(np.array([-1000.0]), np.array([100.0]), np.array([-1]), np.array([1.0]), np.array([0.0]),
                      np.array([100.0]), np.array([1.0]), 3.0).tolist() == [True]
    # a systematic part of the flux widens the error: 6 % short at S/N 80 refutes nothing with 10 % of it
    bright = dict(flux=np.array([3400.0]), flux_err=np.array([43.0]), sign=np.array([1]), ratio=np.array([1.0]),
                  other_flux=np.array([3200.0]), other_err=np.array([46.0]), other_ratio=np.array([1.0]), sigma=3.0)
    assert refuted_by(**bright).tolist() == [True] and refuted_by(**bright, systematic=0.1).tolist() == [False]


def _candidates(frame_id, image, variance, psf):
    found = detect_candidates(_score(image, variance, psf), image, variance, None, None, FWHM, difference_psf=psf)
    return found.assign(frame_id=frame_id, field="F")


def _score(image, variance, psf):
    """The matched-filter S/N image of a white-noise difference (S_corr's role here)."""
    from scipy.signal import fftconvolve

    return fftconvolve(image, psf[::-1, ::-1], mode="same") / np.sqrt(variance[0, 0] * (psf**2).sum())


def test_a_one_frame_hit_is_flagged_and_a_steady_transient_is_not():
    rng = np.random.default_rng(7)
    steady, hit = (30.0, 30.0, 1500.0), (65.0, 60.0, 900.0)  # S/N ≈ 25 and ≈ 15 in frame a
    a = _difference(rng, [steady, hit])
    b = _difference(rng, [(30.0, 30.0, 1500.0 * 0.8)])  # the same night, transparency 0.8: no hit
    table = pd.concat([_candidates("a", *a), _candidates("b", *b)], ignore_index=True)
    table = table.assign(ratio=table.frame_id.map({"a": 1.0, "b": 0.8}))
    looks = []
    for frame, (image, variance, psf), ratio in (("a", a, 1.0), ("b", b, 0.8)):
        others = table.index[table.frame_id != frame]
        flux, err = look_at(image, variance, psf, None, table.x[others], table.y[others])
        looks.append(pd.DataFrame({"candidate": others, "flux": flux, "flux_err": err, "ratio": ratio}))
    flagged = flag_unconfirmed(table, pd.concat(looks, ignore_index=True), DEFAULT_RULES)
    assert "ratio" not in flagged.columns
    near = lambda t, x, y: t[np.hypot(t.x - x, t.y - y) < 2]  # noqa: E731
    on_steady, on_hit = near(flagged, 30, 30), near(flagged, 65, 60)
    assert len(on_steady) == 2 and not (on_steady["flags"] & FLAG_UNCONFIRMED).any()
    assert len(on_hit) == 1 and int(on_hit["flags"].iloc[0]) & FLAG_UNCONFIRMED
    before = near(table, 65, 60).rule_score.iloc[0]
    assert on_hit.rule_score.iloc[0] == pytest.approx(before * dict(DEFAULT_RULES.rule_score_flag_factors)[64])
    # a frame that does not cover the hit, or is far too shallow to tell, refutes nothing
    silent = pd.concat(looks, ignore_index=True)
    silent.loc[silent.candidate == on_hit.index[0], ["flux", "flux_err"]] = [np.nan, np.nan]
    assert not near(flag_unconfirmed(table, silent, DEFAULT_RULES), 65, 60)["flags"].iloc[0] & FLAG_UNCONFIRMED
    shallow = pd.concat(looks, ignore_index=True)
    shallow.loc[shallow.candidate == on_hit.index[0], ["flux", "flux_err"]] = [0.0, 1e4]
    assert not near(flag_unconfirmed(table, shallow, DEFAULT_RULES), 65, 60)["flags"].iloc[0] & FLAG_UNCONFIRMED
    # flags already set stay set
    assert (flag_unconfirmed(table.assign(flags=FLAG_DIPOLE), silent, DEFAULT_RULES)["flags"] & FLAG_DIPOLE).all()
