"""Per-instrument champions against real servers: PostgreSQL tables, S3 objects, an MLflow tracking server.

Three small U-Nets are trained through ``unet_models`` (one epoch each) on synthetic stamp sets of
instrument A, of instrument B, and of both: they become ``champion-<A>``, ``champion-<B>`` and the plain
``champion``. A night's candidates from frames of A, B, a third instrument C and a frame with no
``raw_observations`` row are then scored by ``scored_detections``: each by its own instrument's champion,
C's and the unknown frame's by ``champion``, each at the operating threshold of the version that scored it.
Then a new version of A, registered and promoted through the registry functions, is rolled back with
``astrid rollback --instrument``: only A's alias moves. The registry is this module's own (its own
MLflow server), so no other test's versions interfere.
"""

import argparse

import boto3
import mlflow
import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, Definitions

from astrid_assets.defs.detection import stamps_to_bytes
from astrid_assets.io import schema
from astrid_assets.io.arrays import save_arrays
from astrid_assets.io.object_store import open_object_store
from astrid_assets.io.tables import engine_for, read_nights
from astrid_assets.ml.champions import CHAMPION, champion_alias
from astrid_assets.ml.dataset import SPLITS, content_digest, split_by_night, split_codes
from astrid_assets.ml.unet import UNet
from astrid_assets.resources.mlflow_registry import (
    MODEL_NAME,
    promote,
    register_model,
    registered_aliases,
    version_by_alias,
)
from astrid_assets.testing import servers
from astrid_assets.testing.stamps import make_stamps

pytestmark = pytest.mark.integration

SCOPE_A = "0.5 m f/6.8 reflector / KAF-16803 CCD"
SCOPE_B = "AstrID-sim"
SCOPE_C = "1.0 m RC / QHY600M"  # has no champion of its own
NIGHT = "2024-01-07"
TINY_MODEL = {"epochs": 1, "base_channels": 4, "batch_size": 32, "device": "cpu", "roc_auc_floor": 0.0}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, s3_endpoint):
    """PostgreSQL + S3 + this module's own MLflow server, and the definitions of the nightly and learning assets."""
    from astrid_assets.definitions import (
        default_resources,
        learning_assets,
        nightly_assets,
        nightly_pipeline,
        train_unet,
    )

    home = tmp_path_factory.mktemp("astrid-champions")
    (home / "dagster").mkdir()
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    s3 = boto3.client("s3")
    for bucket in ("astrid-champions", "astrid-champions-mlflow"):
        s3.create_bucket(Bucket=bucket)
    with servers.postgres_database("astrid_champions") as url, \
            servers.mlflow_server(home, "s3://astrid-champions-mlflow/artifacts", s3_endpoint) as mlflow_uri, \
            pytest.MonkeyPatch.context() as patch:
        for name, value in {"ASTRID_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                            "ASTRID_DATABASE_URL": url, "ASTRID_OBJECT_STORE": "s3://astrid-champions/astrid",
                            "MLFLOW_TRACKING_URI": mlflow_uri}.items():
            patch.setenv(name, value)
        defs = Definitions(assets=nightly_assets + learning_assets, resources=default_resources(),
                           jobs=[nightly_pipeline, train_unet])
        schema.metadata.create_all(engine_for(url), tables=[schema.training_datasets, schema.raw_observations,
                                                            schema.candidate_detections])
        yield defs, DagsterInstance.get(), url, mlflow_uri


def store_dataset(url: str, version: str, instruments: list[str], seed: int, with_snr: bool) -> None:
    """A synthetic stamp set as ``training_datasets`` stores one: arrays in the object store, a row per split."""
    synthetic = make_stamps(160, seed=seed, n_nights=6)
    split_of = split_codes(split_by_night(synthetic.nights, (0.6, 0.2, 0.2), seed=0), len(synthetic.labels))
    keys = np.array([instruments[i % len(instruments)] for i in range(len(synthetic.labels))])
    arrays = {"stamps": synthetic.stamps, "labels": synthetic.labels, "split": split_of, "fwhm": synthetic.fwhm,
              "ids": synthetic.ids.astype(str), "nights": synthetic.nights.astype(str), "instruments": keys}
    if with_snr:  # injected fakes of known S/N; bogus have none
        arrays["snr"] = np.where(synthetic.labels == 1, np.random.default_rng(seed).uniform(4, 40, len(keys)), np.nan)
    digest = content_digest(synthetic.stamps, synthetic.labels, synthetic.ids.tolist())
    path = open_object_store("s3://astrid-champions/astrid").put(f"training_datasets/{version}/{digest[:16]}.npz",
                                                                 save_arrays(arrays))
    rows = [{"dataset_version": version, "name": "champions", "split": name,
             "n_real": int(synthetic.labels[split_of == code].sum()),
             "n_bogus": int((1 - synthetic.labels[split_of == code]).sum()), "digest": digest, "path": path,
             "instruments": ",".join(sorted(set(keys[split_of == code])))} for code, name in enumerate(SPLITS)]
    with engine_for(url).begin() as connection:
        connection.execute(schema.training_datasets.insert(), rows)


def train(defs, instance, version: str, config: dict) -> dict:
    for partitions in ("dataset_versions", "model_versions"):
        instance.add_dynamic_partitions(partitions, [version])
    result = defs.resolve_job_def("train_unet").execute_in_process(
        partition_key=version, instance=instance, run_config={"ops": {"unet_models": {"config": config}}})
    assert result.success
    return {k: v.value for k, v in result.asset_materializations_for_node("unet_models")[0].metadata.items()}


def store_night(url: str) -> pd.DataFrame:
    """Candidates of one night on frames of A, B, C and a frame without a raw_observations row."""
    frames = {"fa": SCOPE_A, "fb": SCOPE_B, "fc": SCOPE_C, "fx": None}
    synthetic = make_stamps(4 * len(frames), seed=7, n_nights=1)
    store = open_object_store("s3://astrid-champions/astrid")
    candidates = []
    for i, frame in enumerate(frames):
        stack = stamps_to_bytes(synthetic.stamps[4 * i:4 * i + 4])
        path = store.put(f"candidate_detections/{NIGHT}/{frame}.npy", stack)
        candidates += [{"night": NIGHT, "candidate_id": f"{frame}-{k}", "frame_id": frame, "field": "F01",
                        "stamp_path": path, "stamp_index": k} for k in range(4)]
    with engine_for(url).begin() as connection:
        connection.execute(schema.raw_observations.insert(), [
            {"night": NIGHT, "frame_id": frame, "field": "F01", "source": "fits_drop", "status": "ok",
             "instrument": key} for frame, key in frames.items() if key is not None])
        connection.execute(schema.candidate_detections.insert(), candidates)
    return pd.DataFrame(candidates)


def test_each_candidate_is_scored_by_its_instruments_champion(deployment):
    defs, instance, url, mlflow_uri = deployment
    store_dataset(url, "a1", [SCOPE_A], seed=1, with_snr=True)
    store_dataset(url, "b1", [SCOPE_B], seed=2, with_snr=False)  # a dataset from before S/N was recorded
    store_dataset(url, "x1", [SCOPE_A, SCOPE_B], seed=3, with_snr=False)
    models = {version: train(defs, instance, version, TINY_MODEL) for version in ("a1", "b1", "x1")}
    alias_a, alias_b = champion_alias(SCOPE_A), champion_alias(SCOPE_B)
    assert [models[v]["champion_alias"] for v in ("a1", "b1", "x1")] == [alias_a, alias_b, CHAMPION]
    assert all(model["promoted"] for model in models.values()), models
    version_of = {v: models[v]["registry_version"] for v in models}

    client = mlflow.MlflowClient(mlflow_uri)
    aliases = registered_aliases(client)
    assert {alias_a: version_of["a1"], alias_b: version_of["b1"], CHAMPION: version_of["x1"]}.items() <= aliases.items()
    tags = {v: client.get_model_version(MODEL_NAME, version_of[v]).tags for v in models}
    assert tags["a1"]["instruments"] == SCOPE_A and tags["x1"]["instruments"] == f"{SCOPE_A},{SCOPE_B}"
    thresholds = {version_of[v]: float(tags[v]["operating_threshold"]) for v in models}
    assert all(0.0 <= t <= 1.0 for t in thresholds.values())
    assert models["a1"]["operating_threshold"] == thresholds[version_of["a1"]]
    assert "S/N >= 6" in models["a1"]["operating_note"] and "all reals" in models["b1"]["operating_note"]
    run = client.get_run(models["a1"]["mlflow_run_id"])
    assert float(run.data.params["operating_threshold"]) == thresholds[version_of["a1"]]
    assert run.data.params["operating_completeness"] == "0.95" and "test_bogus_rejection" in run.data.metrics
    with engine_for(url).connect() as connection:
        rows = pd.read_sql("SELECT * FROM unet_models", connection).set_index("model_version")
    assert rows.loc["a1", "operating_threshold"] == pytest.approx(thresholds[version_of["a1"]])
    assert rows.loc["b1", "instruments"] == SCOPE_B and rows.loc["x1", "champion_alias"] == CHAMPION

    candidates = store_night(url)
    result = defs.resolve_job_def("nightly_pipeline").execute_in_process(
        partition_key=NIGHT, instance=instance, asset_selection=[AssetKey("scored_detections")])
    assert result.success
    scored = read_nights("scored_detections", [NIGHT]).set_index("candidate_id").loc[candidates.candidate_id]
    expected = {"fa": version_of["a1"], "fb": version_of["b1"], "fc": version_of["x1"], "fx": version_of["x1"]}
    assert scored.model_version.tolist() == [expected[f] for f in candidates.frame_id]
    assert scored.real_probability.between(0, 1).all()
    at_threshold = scored.real_probability >= scored.model_version.map(thresholds)
    assert scored.real.astype(bool).tolist() == at_threshold.tolist()
    metadata = result.asset_materializations_for_node("scored_detections")[0].metadata
    assert metadata["scored"].value == len(candidates) and metadata["likely_real"].value == int(at_threshold.sum())

    # a rollback moves one instrument's alias only
    from astrid_assets.cli.commands import rollback

    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run():  # a new version of A, registered and promoted through the registry functions
        forced = register_model(mlflow, UNet(base_channels=4))
    assert promote(client, forced, "a2", 0.99, None, floor=0.0, margin=-1.0, alias=alias_a).promoted
    assert version_by_alias(client, alias_a) == forced
    assert rollback(argparse.Namespace(instrument=SCOPE_A, alias=None)) == 0
    assert version_by_alias(client, alias_a) == version_of["a1"]
    assert registered_aliases(client)[alias_b] == version_of["b1"] and version_by_alias(client, CHAMPION) == \
        version_of["x1"]
