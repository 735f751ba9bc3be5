"""The whole per-frame science chain on the simulated survey, checked against its truth catalogue."""

import numpy as np
import pytest

from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.calibration.masters import build_masters
from astrid_assets.science.calibration.quality import measure_quality
from astrid_assets.science.injection.inject import match_catalogues
from astrid_assets.science.pipeline import build_reference, difference_frame, find_candidates
from astrid_assets.science.products import CalibratedFrame
from astrid_assets.testing.simulate import SurveyConfig, simulate_night

pytestmark = pytest.mark.slow  # a simulated survey through the science pipeline over six nights

SURVEY = SurveyConfig(fields=("F01",), frames_per_night=2)
REFERENCE_NIGHTS = ["2024-01-01", "2024-01-02"]
SEARCH_NIGHTS = ["2024-02-01", "2024-02-15", "2024-03-01", "2024-03-15"]


def calibrated_night(night: str):
    frames = simulate_night(night, SURVEY)
    of_type = lambda kind: [f for f in frames if f.header["IMAGETYP"] == kind]  # noqa: E731
    masters = build_masters([f.data for f in of_type("bias")],
                            [(f.data, f.header["EXPTIME"]) for f in of_type("dark")],
                            [f.data for f in of_type("flat")])
    out = []
    for frame in of_type("object"):
        calibrated = calibrate_frame(frame.data, frame.header, masters)
        image = CalibratedFrame(calibrated.science, calibrated.mask, calibrated.variance, calibrated.background,
                                calibrated.background_rms, frame.header)
        out.append((image, measure_quality(calibrated, frame.header), frame.truth))
    return out


@pytest.fixture(scope="module")
def reference():
    frames = [f for night in REFERENCE_NIGHTS for f in calibrated_night(night)]
    reference, _ = build_reference([f[0] for f in frames], [f[1]["fwhm_px"] for f in frames],
                                   [f[1]["depth_mag"] for f in frames])
    return reference


@pytest.fixture(scope="module")
def searched(reference):
    """(truth of new transients on the reference grid, candidates) for every searched frame."""
    results = []
    for night in SEARCH_NIGHTS:
        for image, _quality, truth in calibrated_night(night):
            difference = difference_frame(image, reference)
            candidates, stamps = find_candidates(difference, reference.wcs)
            assert stamps.shape == (len(candidates), 3, 63, 63)
            x, y = reference.wcs.world_to_pixel_values(truth.ra.to_numpy(), truth.dec.to_numpy())
            results.append((truth.assign(ref_x=x, ref_y=y), candidates, difference))
    return results


def test_new_transients_with_snr_at_least_10_are_recovered(searched):
    """Supernovae and asteroids (absent from the reference) with expected S/N ≥ 10: ≥ 95 % found."""
    found, total, offsets = 0, 0, []
    for truth, candidates, _ in searched:
        new = truth[truth.kind.isin(["supernova", "asteroid"]) & (truth.snr >= 10)]
        new = new[(new.ref_x > 20) & (new.ref_x < 492) & (new.ref_y > 20) & (new.ref_y < 492)]
        positive = candidates[candidates.sign > 0]
        match = match_catalogues(new[["ref_x", "ref_y"]].to_numpy(), positive[["x", "y"]].to_numpy(), 1.5)
        found += int((match >= 0).sum())
        total += len(new)
        hit = match >= 0
        offsets += list(np.hypot(positive.x.to_numpy()[match[hit]] - new.ref_x.to_numpy()[hit],
                                 positive.y.to_numpy()[match[hit]] - new.ref_y.to_numpy()[hit]))
    assert total >= 15, f"the simulated nights should hold enough transients, got {total}"
    assert found / total >= 0.95, f"recovered {found} of {total}"
    assert np.median(offsets) < 0.5


def test_static_stars_leave_no_clean_candidates_and_s_corr_is_unit_normal(searched):
    for truth, candidates, difference in searched:
        stars = truth[(truth.kind == "star") & (truth.snr >= 20)]
        clean = candidates[candidates["flags"] == 0]
        on_stars = match_catalogues(clean[["x", "y"]].to_numpy(), stars[["ref_x", "ref_y"]].to_numpy(), 1.5)
        assert (on_stars >= 0).sum() <= 1, "static stars must not leave clean detections"
        assert abs(difference.s_corr_std - 1.0) < 0.05


def test_fitted_flux_ratio_matches_the_unchanged_transparency(searched):
    """Same MAGZP and EXPTIME in every frame, no clouds: F_new / F_ref is 1 (fitted, not assumed)."""
    ratios = np.array([difference.flux_ratio for _, _, difference in searched])
    assert np.abs(ratios - 1.0).max() < 0.02, ratios


def test_a_frame_off_the_reference_is_refused_with_a_clear_reason(reference):
    image, _, _ = calibrated_night(SEARCH_NIGHTS[0])[0]
    moved = image.header.copy()
    moved["CRVAL1"] += 1.0  # one degree: far beyond the 8.5' field
    from astrid_assets.science.astrometry.register import RegistrationError

    with pytest.raises(RegistrationError, match="overlap|off"):
        difference_frame(CalibratedFrame(image.science, image.mask, image.variance, image.background,
                                         image.background_rms, moved), reference)


def test_fading_variable_is_a_negative_detection(searched):
    negatives = 0
    for truth, candidates, _difference in searched:
        faded = truth[(truth.kind == "variable") & (truth.flux_baseline - truth.flux > 8 * np.sqrt(
            truth.flux_baseline + 400 * 30))]
        negative = candidates[candidates.sign < 0]
        match = match_catalogues(faded[["ref_x", "ref_y"]].to_numpy(), negative[["x", "y"]].to_numpy(), 1.5)
        negatives += int((match >= 0).sum())
    assert negatives >= 1
