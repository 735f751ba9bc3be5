"""Training on two CPU processes (DDP with gloo, launched by torchrun): same ROC AUC as one, exact resume."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from astrid_assets.ml.checkpoints import load_checkpoint
from astrid_assets.ml.dataset import StampSet
from astrid_assets.ml.distributed import start_training, train_in_processes
from astrid_assets.ml.evaluation import evaluate, predict
from astrid_assets.ml.training import TrainingConfig, train
from astrid_assets.ml.unet import load_weights

#: the resume test: a small, fast model (as test_training.SMALL)
SMALL = {"base_channels": 4, "depth": 2, "batch_size": 16, "learning_rate": 3e-3, "warmup_epochs": 0.5}


def central(stamp_set: StampSet, side: int = 31) -> StampSet:
    """The central ``side``² pixels of every stamp (the candidate stays on the central pixel): 4× less work."""
    lo = (stamp_set.inputs.shape[-1] - side) // 2
    window = np.s_[..., lo : lo + side, lo : lo + side]
    return StampSet(np.ascontiguousarray(stamp_set.inputs[window]), stamp_set.labels,
                    np.ascontiguousarray(stamp_set.masks[window]))


def no_timing(history):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


@pytest.mark.slow
def test_two_processes_reach_the_roc_auc_of_one(stamp_set, night_split, tmp_path):
    train_set = central(stamp_set.subset(night_split.train[:480]))
    val_set = central(stamp_set.subset(night_split.val[:120]))
    test_set = central(stamp_set.subset(night_split.test))
    config = TrainingConfig(epochs=4, batch_size=16, learning_rate=5e-3, warmup_epochs=0.3, base_channels=8,
                            patience=None, seed=1)
    one = train(train_set, val_set, config, tmp_path / "one")
    reported = []
    two = train_in_processes(train_set, val_set, config.replace(processes=2), tmp_path / "two",
                             on_epoch=lambda epoch, metrics: reported.append((epoch, metrics)))
    auc_one, auc_two = (float(evaluate(result.model, test_set)["roc_auc"]) for result in (one, two))
    print(f"\ntest ROC AUC ({len(test_set)} stamps): one process {auc_one:.4f}, two processes {auc_two:.4f}")
    assert auc_one >= 0.95 and auc_two >= 0.95  # both learnt
    assert abs(auc_one - auc_two) <= 0.01

    # rank 0 reported every epoch to this process, as train() does; the batches differed from one process's
    assert [epoch for epoch, _ in reported] == [1, 2, 3, 4] == [row["epoch"] for row in two.history]
    assert no_timing([{"epoch": e, **m} for e, m in reported]) == no_timing(two.history)
    assert [row["train_loss"] for row in two.history] != [row["train_loss"] for row in one.history]
    assert two.config["processes"] == 2 and two.epochs_run == [1, 2, 3, 4]
    # its checkpoints are a one-process U-Net's: the best one is the returned model
    assert load_checkpoint(two.last_checkpoint)["epoch"] == 4
    np.testing.assert_array_equal(predict(load_weights(two.best_checkpoint), test_set), predict(two.model, test_set))


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie has stopped
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(stamp_set, night_split, tmp_path):
    train_set = stamp_set.subset(night_split.train[:192])
    val_set = stamp_set.subset(night_split.val[:32])
    config = TrainingConfig(epochs=3, patience=None, processes=2, **SMALL)
    straight = train_in_processes(train_set, val_set, config, tmp_path / "straight")

    job = start_training(train_set, val_set, config, tmp_path / "run", tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not (first := job.new_epochs()):
        assert job.process.poll() is None and time.monotonic() < deadline, job.log_tail()
        time.sleep(0.02)
    time.sleep(0.3 * first[0][1]["epoch_seconds"])  # into epoch 2's training steps
    workers = job.worker_pids()
    job.kill()
    assert len(workers) == 2
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in workers)  # the workers died with their torchrun agent
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1  # killed inside epoch 2
    assert not (tmp_path / "run" / "result.json").exists()

    resumed = train_in_processes(train_set, val_set, config, tmp_path / "killed", resume=True)
    assert resumed.resumed_from == 1 and resumed.epochs_run == [2, 3]
    assert no_timing(resumed.history) == no_timing(straight.history)
    final, reference = (load_checkpoint(path / "last.pt")["model"] for path in (tmp_path / "killed",
                                                                                  tmp_path / "straight"))
    assert final.keys() == reference.keys()
    for name in final:
        assert torch.equal(final[name], reference[name]), name  # bit for bit: gloo, deterministic CPU mode


def test_one_process_trains_here(small_sets):
    """``processes=1`` is plain :func:`train` in the calling process (no torchrun), bit for bit."""
    train_set, val_set = small_sets
    config = TrainingConfig(epochs=1, **SMALL)
    here = train_in_processes(train_set, val_set, config)
    direct = train(train_set, val_set, config)
    assert no_timing(here.history) == no_timing(direct.history)


@pytest.mark.slow
def test_the_unet_models_step_trains_on_two_processes(tmp_path, monkeypatch):
    """``ASTRID_TRAIN_PROCESSES=2``: the step launches torchrun, and MLflow (the embedded store) gets each
    epoch's metrics once — from rank 0, through the step — and the registered model."""
    import mlflow
    from dagster import DagsterInstance, Definitions

    from astrid_assets.io import schema
    from astrid_assets.io.arrays import save_arrays
    from astrid_assets.io.object_store import open_object_store
    from astrid_assets.io.tables import engine_for
    from astrid_assets.ml.dataset import SPLITS, content_digest, split_by_night, split_codes
    from astrid_assets.testing.stamps import make_stamps

    url, store_url = f"sqlite:///{tmp_path / 'astrid.db'}", str(tmp_path / "objects")
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for name, value in {"ASTRID_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster"),
                        "ASTRID_DATABASE_URL": url, "ASTRID_OBJECT_STORE": store_url,
                        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                        "ASTRID_TRAIN_PROCESSES": "2"}.items():
        monkeypatch.setenv(name, value)
    from astrid_assets.definitions import default_resources, learning_assets, train_unet

    synthetic = make_stamps(120, seed=4, n_nights=6)
    split_of = split_codes(split_by_night(synthetic.nights, (0.6, 0.2, 0.2), seed=0), len(synthetic.labels))
    arrays = {"stamps": synthetic.stamps, "labels": synthetic.labels, "split": split_of, "fwhm": synthetic.fwhm,
              "ids": synthetic.ids.astype(str), "nights": synthetic.nights.astype(str)}
    digest = content_digest(synthetic.stamps, synthetic.labels, synthetic.ids.tolist())
    path = open_object_store(store_url).put(f"training_datasets/d1/{digest[:16]}.npz", save_arrays(arrays))
    schema.metadata.create_all(engine_for(url), tables=[schema.training_datasets])
    with engine_for(url).begin() as connection:
        connection.execute(schema.training_datasets.insert(), [
            {"dataset_version": "d1", "name": "ddp", "split": name, "digest": digest, "path": path,
             "n_real": int(synthetic.labels[split_of == code].sum()),
             "n_bogus": int((1 - synthetic.labels[split_of == code]).sum())} for code, name in enumerate(SPLITS)])

    defs = Definitions(assets=learning_assets, resources=default_resources(), jobs=[train_unet])
    instance = DagsterInstance.get()
    for partitions in ("dataset_versions", "model_versions"):
        instance.add_dynamic_partitions(partitions, ["d1"])
    config = {"epochs": 2, "base_channels": 4, "batch_size": 16, "device": "cpu", "roc_auc_floor": 0.0}
    result = defs.resolve_job_def("train_unet").execute_in_process(
        partition_key="d1", instance=instance, run_config={"ops": {"unet_models": {"config": config}}})
    assert result.success
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("unet_models")[0].metadata.items()}
    run = mlflow.MlflowClient().get_run(metadata["mlflow_run_id"])
    assert run.data.params["processes"] == "2"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
    assert sorted(metric.step for metric in history) == [1, 2]  # once per epoch: rank 0's report alone
    assert metadata["registry_version"] and 0.0 <= metadata["test_roc_auc"] <= 1.0
    # rank 0's checkpoints went to the object store, for a later resume
    (tmp_path / "last.pt").write_bytes(open_object_store(store_url).get("unet_models/d1/checkpoints/last.pt"))
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["processes"] == 2
