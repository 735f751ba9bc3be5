"""The learning assets' parts without servers: run configuration, dataset gates, MLflow record, registry calls."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from astrid_assets.defs.learning import FROZEN_BENCHMARK_KEY, RUN_PARAMETERS, TrainingRunConfig, frozen_benchmark
from astrid_assets.defs.quality_checks import TRAINING_DATASETS_CHECKS, training_datasets_checks
from astrid_assets.io.arrays import load_arrays, save_arrays
from astrid_assets.io.object_store import open_object_store
from astrid_assets.ml.champions import CHALLENGER, CHAMPION
from astrid_assets.ml.config import TrainingConfig
from astrid_assets.ml.dataset import SPLITS
from astrid_assets.ml.tracking import epoch_logger, finish_run, log_training_outcome, start_training_run
from astrid_assets.resources.mlflow_registry import MODEL_NAME, promote, register_model


def test_run_configuration_takes_its_parameters_and_defaults_from_training_config():
    defaults = TrainingConfig.defaults()
    fields = TrainingRunConfig.model_fields
    assert list(fields) == [*RUN_PARAMETERS, "resume", "processes", "roc_auc_floor", "promotion_margin",
                            "operating_completeness", "operating_min_snr"]
    assert fields["operating_completeness"].default == 0.95 and fields["operating_min_snr"].default == 6.0
    assert {name: fields[name].default for name in RUN_PARAMETERS} == {name: defaults[name] for name in RUN_PARAMETERS}
    assert fields["patience"].annotation is int and fields["learning_rate"].annotation is float
    assert TrainingRunConfig().training_config() == TrainingConfig()
    assert TrainingRunConfig(epochs=3, patience=2).training_config() == TrainingConfig(epochs=3, patience=2)
    # training processes: the run's, else the deployment's ASTRID_TRAIN_PROCESSES (1 when unset)
    assert TrainingRunConfig(processes=2).training_config().processes == 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASTRID_TRAIN_PROCESSES", "3")
        assert TrainingRunConfig().training_config().processes == 3
    assert set(RUN_PARAMETERS) <= {f.name for f in dataclasses.fields(TrainingConfig)}


def split_rows(n_real, n_bogus):
    return pd.DataFrame({"split": list(SPLITS), "n_real": n_real, "n_bogus": n_bogus})


@pytest.mark.parametrize("labels, table, passed", [
    (np.array([1, 0] * 40), split_rows([10, 15, 15], [10, 15, 15]), {"enough_samples", "both_classes",
                                                                      "class_balance"}),
    (np.array([1, 0] * 10), split_rows([10, 0, 0], [10, 0, 0]), {"class_balance"}),
    (np.array([1] * 2 + [0] * 98), split_rows([1, 1, 0], [70, 14, 14]), {"enough_samples"}),
])
def test_training_dataset_gates(labels, table, passed):
    results = list(training_datasets_checks(table, labels, min_samples=60, min_minority_fraction=0.05))
    assert [r.check_name for r in results] == [s.name for s in TRAINING_DATASETS_CHECKS]
    assert {r.check_name for r in results if r.passed} == passed
    assert all(s.blocking for s in TRAINING_DATASETS_CHECKS)
    assert results[0].metadata["samples"].value == len(labels)


def stored_dataset(n, seed):
    rng = np.random.default_rng(seed)
    return {"stamps": rng.normal(size=(n, 3, 63, 63)).astype(np.float32), "labels": np.arange(n) % 2,
            "fwhm": np.full(n, 3.0), "ids": np.array([f"c{seed}-{i}" for i in range(n)]),
            "split": (np.arange(n) % 3).astype(np.int8)}


def test_arrays_round_trip_and_the_benchmark_stays_frozen(tmp_path):
    first, second = stored_dataset(9, 1), stored_dataset(12, 2)
    loaded = load_arrays(save_arrays(first))
    assert loaded.keys() == first.keys() and all(np.array_equal(loaded[k], first[k]) for k in first)
    store = open_object_store(str(tmp_path))
    frozen = frozen_benchmark(store, first)
    assert store.exists(FROZEN_BENCHMARK_KEY)
    assert list(frozen.ids) == list(first["ids"][first["split"] == SPLITS.index("test")])
    assert list(frozen_benchmark(store, second).ids) == list(frozen.ids)  # the first dataset's, for good


class Recorder:
    """MLflow's fluent API as far as the training record uses it, writing down every call."""

    def __init__(self):
        self.calls = []
        self.data = SimpleNamespace(from_numpy=lambda labels, **kwargs: ("dataset", kwargs))
        self.pytorch = SimpleNamespace(log_model=self.log_model)

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def log_model(self, model, **kwargs):
        self.calls.append(("log_model", (), kwargs))
        return SimpleNamespace(registered_model_version=4)

    def active_run(self):
        return SimpleNamespace(info=SimpleNamespace(run_id="run-1"))


def test_the_training_record(tmp_path):
    tracking, config = Recorder(), TrainingConfig(epochs=2, device="cpu")
    start_training_run(tracking, "v2", "v1", config, {"git_commit": "abc"}, np.array([0, 1]), "s3://b/x.npz", "d" * 64)
    epoch_logger(tracking)(1, {"val_loss": 0.5})
    log_training_outcome(tracking, config, {"roc_auc": 0.9}, {"roc_auc": 0.8}, [{"split": "train"}], {"seed": 0},
                         b"png", tmp_path)
    assert finish_run(tracking) == "run-1"
    names = [name for name, _, _ in tracking.calls]
    assert names == ["set_tags", "log_params", "log_input", "log_metrics", "log_metrics", "log_metrics", "log_text",
                     "log_dict", "log_dict", "log_artifact", "end_run"]
    calls = {name: (args, kwargs) for name, args, kwargs in tracking.calls}
    assert calls["set_tags"][0][0] == {"mlflow.runName": "unet_v2", "dataset_version": "v1", "model_version": "v2",
                                       "git_commit": "abc"}
    assert calls["log_params"][0][0] == config.to_dict()
    assert calls["log_input"] == ((("dataset", {"source": "s3://b/x.npz", "name": "training_datasets:v1",
                                                 "digest": "d" * 32}),), {"context": "training"})
    assert tracking.calls[3][1:] == (({"val_loss": 0.5},), {"step": 1})
    assert [c[1][0] for c in tracking.calls[4:6]] == [{"test_roc_auc": 0.9}, {"frozen_roc_auc": 0.8}]
    assert calls["log_artifact"][0] == (str(tmp_path / "training_curves.png"), "plots")
    assert (tmp_path / "training_curves.png").read_bytes() == b"png"


def test_registration_logs_the_model_under_the_registry_name():
    import torch

    tracking = Recorder()
    assert register_model(tracking, torch.nn.Linear(1, 1)) == "4"
    (name, _, kwargs), = tracking.calls
    assert name == "log_model" and kwargs["registered_model_name"] == MODEL_NAME and kwargs["name"] == "model"


class Registry:
    """An MlflowClient's alias and tag calls, over a registry whose champion is ``champion``."""

    def __init__(self, champion=None):
        self.aliases, self.tags = {} if champion is None else {CHAMPION: champion}, []

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = version

    def get_model_version_by_alias(self, name, alias):
        from mlflow.exceptions import MlflowException

        if alias not in self.aliases:
            raise MlflowException("no alias")
        return SimpleNamespace(version=self.aliases[alias])

    def set_model_version_tag(self, name, version, key, value):
        assert name == MODEL_NAME
        self.tags.append((version, key, value))


def test_promotion_guardrails_and_tags():
    first = Registry()
    decision = promote(first, "1", "v1", 0.97, None, floor=0.9, margin=0.0)
    assert decision.promoted and first.aliases == {CHALLENGER: "1", CHAMPION: "1"}
    assert first.tags == [("1", "frozen_roc_auc", "0.97"), ("1", "model_version", "v1")]
    worse = Registry(champion="1")
    assert not promote(worse, "2", "v2", 0.95, 0.97, floor=0.9, margin=0.0).promoted
    assert worse.aliases == {CHAMPION: "1", CHALLENGER: "2"}
    below = Registry()
    assert not promote(below, "1", "v1", 0.5, None, floor=0.9, margin=0.0).promoted
    assert CHAMPION not in below.aliases
    better = Registry(champion="1")
    assert promote(better, "3", "v3", 0.99, 0.97, floor=0.9, margin=0.01).promoted
    assert ("3", "previous_champion", "1") in better.tags and better.aliases[CHAMPION] == "3"
