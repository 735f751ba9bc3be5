"""Objects and forced photometry through the nightly chain, against the simulated survey's truth.

One run of ten nights (one field, three frames a night, 256² px; supernovae exploding on nights 5–7, after the
field's references have settled; an asteroid every night from the 5th) is shared by every assertion.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from dagster import DagsterInstance, Definitions

from astrid_assets.definitions import default_resources, nightly_assets, nightly_pipeline
from astrid_assets.io.tables import read_nights
from astrid_assets.partitions import night_range_tags
from astrid_assets.resources import SimulatedSurveyResource
from astrid_assets.testing.simulate.transients import (
    _asteroid_position,
    asteroid_track,
    supernova_flux,
    transient_catalogue,
)

pytestmark = pytest.mark.slow  # ten simulated nights through the nightly chain

NIGHTS = [str(day.date()) for day in pd.date_range("2024-01-01", "2024-01-10")]
FIELD = "F01"


class ShortSeasonSurvey(SimulatedSurveyResource):
    """The simulated survey with its supernovae exploding on 2024-01-05 … 07 and rising in 2–4 days."""

    def config(self):
        return dataclasses.replace(super().config(), transient_start="2024-01-05", transient_end="2024-01-07",
                                   n_supernovae=10, supernova_rise_days=(2.0, 4.0),
                                   supernova_peak_snr=(30.0, 300.0))


SURVEY = ShortSeasonSurvey(fields=[FIELD], frames_per_night=3, size=256)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from astrid_assets.io.tables import engine_for

    home = tmp_path_factory.mktemp("objects") / "astrid"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").touch()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASTRID_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(home / "dagster"))
        for variable in ("ASTRID_DATABASE_URL", "ASTRID_OBJECT_STORE", "ASTRID_FITS_DROP", "MLFLOW_TRACKING_URI"):
            patch.delenv(variable, raising=False)
        job = Definitions(assets=nightly_assets, jobs=[nightly_pipeline],
                          resources={**default_resources(), "simulated_survey": SURVEY}).resolve_job_def(
            "nightly_pipeline")
        result = job.execute_in_process(
            instance=DagsterInstance.get(), raise_on_error=False, tags=night_range_tags(NIGHTS[0], NIGHTS[-1]),
            run_config={"ops": {"candidate_detections": {"config": {"injection_frames": 0}}}})
        tables = {name: read_nights(name, NIGHTS) for name in (
            "reference_images", "difference_images", "candidate_detections", "object_detections",
            "transient_objects", "forced_photometry")}
        yield result, tables, home
    engine_for.cache_clear()


def latest_objects(tables) -> pd.DataFrame:
    return tables["transient_objects"].sort_values("night").groupby("object_id").last().reset_index()


def supernovae():
    return transient_catalogue(FIELD, SURVEY.config()).query("kind == 'supernova'").reset_index(drop=True)


def nearest(objects: pd.DataFrame, ra: float, dec: float) -> tuple[pd.DataFrame, np.ndarray]:
    separation = SkyCoord(objects.ra.to_numpy(), objects.dec.to_numpy(), unit="deg").separation(
        SkyCoord(ra, dec, unit="deg")).arcsec
    return objects, separation


def test_the_run_succeeds_and_references_settle_before_the_supernovae(chain):
    result, tables, _ = chain
    assert result.success
    references = tables["reference_images"].sort_values("night")
    ok = references[references.status == "ok"]
    assert ok.version.nunique() >= 2, "the window should rebuild the reference at least once (grid tie exercised)"
    assert not ok.decision.str.startswith(("built", "rebuilt")).iloc[-5:].any(), "references settled before Jan 5"


def test_supernovae_with_three_detections_become_exactly_one_object(chain):
    _, tables, _ = chain
    detections = tables["object_detections"]
    coords = SkyCoord(detections.ra.to_numpy(), detections.dec.to_numpy(), unit="deg")
    judged, good = 0, 0
    for sn in supernovae().itertuples():
        near = detections[coords.separation(SkyCoord(sn.ra, sn.dec, unit="deg")).arcsec < 1.5]
        if near.candidate_id.nunique() < 3:
            continue
        judged += 1
        good += near.object_id.nunique() == 1 and not near.moving.any()
    assert judged >= 5, f"only {judged} supernovae detected 3 times or more"
    assert good / judged >= 0.95, f"{good} of {judged} supernovae are exactly one object"


def test_asteroids_are_moving_objects_never_merged_into_static_ones(chain):
    _, tables, _ = chain
    detections = tables["object_detections"]
    config = SURVEY.config()
    on_asteroid = []
    for night in NIGHTS:
        track = asteroid_track(FIELD, night, config)
        tonight = detections[detections.night == night]
        if track is None or tonight.empty:
            continue
        for row in tonight.itertuples():
            ra, dec = _asteroid_position(track, row.mjd_obs + config.exptime / 2 / 86400.0)
            if SkyCoord(row.ra, row.dec, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcsec < 2.0:
                on_asteroid.append(row)
    assert len(on_asteroid) >= 6, "the asteroids should be detected"
    asteroid = pd.DataFrame(on_asteroid)
    assert asteroid.moving.mean() >= 0.9
    members = detections[detections.object_id.isin(asteroid.object_id)]
    assert set(members.candidate_id) == set(asteroid.candidate_id), "an asteroid's object holds nothing else"
    objects = latest_objects(tables)
    assert objects[objects.object_id.isin(asteroid.object_id)].moving.mean() >= 0.9


def test_forced_photometry_follows_the_true_light_curve_and_upper_limits_before_explosion(chain):
    _, tables, _ = chain
    config = SURVEY.config()
    photometry = tables["forced_photometry"]
    objects = latest_objects(tables)
    static = objects[~objects.moving.astype(bool)]
    within, total, before_explosion, limits = 0, 0, 0, 0
    for sn in supernovae().itertuples():
        _, separation = nearest(static, sn.ra, sn.dec)
        if separation.min() > 1.5:
            continue
        object_id = static.object_id.iloc[int(np.argmin(separation))]
        curve = photometry[photometry.object_id == object_id]
        truth = np.array([supernova_flux(m, pd.DataFrame([sn._asdict()]), config.exptime, config.zero_point)[0]
                          for m in curve.mjd_obs + config.exptime / 2 / 86400.0])
        pull = (curve.flux.to_numpy() - truth) / curve.flux_err.to_numpy()
        within += int((np.abs(pull) <= 3).sum())
        total += len(curve)
        pre = curve.mjd_obs.to_numpy() < sn.t_explosion
        before_explosion += int(pre.sum())
        limits += int((~curve.detected.astype(bool).to_numpy()[pre]).sum())
        assert curve.before_first_detection.astype(bool).to_numpy()[pre].all()
    assert total >= 50, f"only {total} forced epochs of supernovae"
    assert within / total >= 0.95, f"{within} of {total} epochs within 3σ of the true flux"
    assert before_explosion >= 10 and limits / before_explosion >= 0.95
    assert photometry[["flux", "flux_err", "snr", "flux_limit_5sigma", "maglim_5sigma"]].notna().all().all()


def test_light_curves_reach_the_object_store_and_the_metadata(chain):
    result, _, home = chain
    materializations = result.asset_materializations_for_node("forced_photometry")
    keys = [m.metadata["light_curves_key"].value for m in materializations if "light_curves_key" in m.metadata]
    assert keys and all((home / "objects" / key).read_bytes().startswith(b"\x89PNG") for key in keys)
    assert any("data:image/png;base64" in m.metadata["light_curves"].value
               for m in materializations if "light_curves" in m.metadata)
