"""Training: the AUC it reaches, early stopping, checkpoints and resume, determinism, prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from astrid_assets.ml.evaluation import evaluate, predict
from astrid_assets.ml.training import TrainingConfig, load_checkpoint, train
from astrid_assets.ml.unet import load_weights

#: the mechanics tests: a small, fast model
SMALL = {"base_channels": 4, "depth": 2, "batch_size": 16, "learning_rate": 3e-3, "warmup_epochs": 0.5}


def no_timing(history):
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


def test_config_overrides_and_resolved_yaml():
    config = TrainingConfig.from_dict(
        {"epochs": "12", "learning_rate": "1e-3", "grad_clip": "none", "augment": "false"}
    )
    assert (config.epochs, config.learning_rate, config.grad_clip, config.augment) == (12, 1e-3, None, False)
    snapshot = yaml.safe_load(config.to_yaml())
    assert snapshot["device"] in ("cpu", "cuda")  # 'auto' resolved
    assert snapshot["mixed_precision"] is (snapshot["device"] == "cuda")
    assert snapshot["epochs"] == 12 and set(snapshot) == set(TrainingConfig.__dataclass_fields__)
    assert TrainingConfig.from_dict(snapshot) == config.resolved()
    with pytest.raises(ValueError, match="unknown"):
        TrainingConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="epochs"):
        TrainingConfig.from_dict({"epochs": 2.5})
    with pytest.raises(ValueError, match="learning_rate"):
        TrainingConfig(learning_rate=-1.0)


def test_model_reaches_auc_095_on_held_out_nights(stamp_set, night_split, tmp_path):
    config = TrainingConfig(
        epochs=2, batch_size=16, learning_rate=5e-3, warmup_epochs=0.3, base_channels=8, patience=None, seed=1
    )
    train_set, val_set = stamp_set.subset(night_split.train), stamp_set.subset(night_split.val)
    test_set = stamp_set.subset(night_split.test)
    seen = []  # how long this training takes: benchmarks/bench_training.py (--reference-run)
    result = train(train_set, val_set, config, tmp_path / "run", on_epoch=lambda e, m: seen.append((e, m)))
    metrics = evaluate(result.model, test_set)
    print(
        f"\ntrain {len(train_set)} stamps, {config.epochs} epochs: test ROC AUC {metrics['roc_auc']:.4f}, "
        f"F1 {metrics['f1']:.3f}, dice {metrics['dice']:.3f}"
    )
    assert metrics["roc_auc"] >= 0.95
    assert metrics["f1"] >= 0.85 and metrics["dice"] > 0.3
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == len(test_set)
    assert [e for e, _ in seen] == [1, 2]
    expected = {"train_loss", "val_loss", "val_precision", "val_recall", "val_f1", "val_roc_auc", "val_dice"}
    assert expected | {"learning_rate"} <= set(seen[0][1])
    assert all(isinstance(v, float) and math.isfinite(v) for _, m in seen for v in m.values())
    assert seen[-1][1]["val_loss"] < seen[0][1]["val_loss"]

    # batched prediction agrees with the saved best weights; no candidates, no probabilities
    p_set = predict(result.model, test_set, batch_size=50)
    assert p_set.shape == (len(test_set),) and ((p_set >= 0) & (p_set <= 1)).all()
    best = load_weights(result.best_checkpoint)
    np.testing.assert_allclose(predict(best, test_set), p_set, atol=1e-6)
    assert predict(result.model, np.zeros((0, 3, 63, 63), np.float32)).shape == (0,)


def test_predict_normalises_raw_stamps(synthetic, stamp_set):
    model = train(
        stamp_set.subset(np.arange(32)), stamp_set.subset(np.arange(32, 48)), TrainingConfig(epochs=1, **SMALL)
    ).model
    from_raw, masks = predict(model, synthetic.stamps[:10], batch_size=4, return_masks=True)
    np.testing.assert_allclose(from_raw, predict(model, stamp_set.subset(np.arange(10))), atol=1e-6)
    assert masks.shape == (10, 63, 63) and ((masks >= 0) & (masks <= 1)).all()


def test_early_stopping_on_a_plateau(small_sets, tmp_path):
    train_set, val_set = small_sets
    config = TrainingConfig(epochs=20, patience=2, **{**SMALL, "learning_rate": 0.0})
    result = train(train_set, val_set, config, tmp_path)
    assert result.stopped_early
    assert result.best_epoch == 1
    assert result.epochs_completed == 3 < config.epochs  # epoch 1 best, then 2 without improvement
    assert len({row["val_loss"] for row in result.history}) == 1  # nothing learnt: flat
    assert load_checkpoint(tmp_path / "last.pt")["stopped_early"] is True
    # the same run with learning on does not stop at epoch 3
    learning = train(train_set, val_set, TrainingConfig(epochs=4, patience=2, **SMALL), tmp_path / "learning")
    assert not learning.stopped_early and learning.epochs_completed == 4


class Interrupted(Exception):
    pass


def test_resume_continues_and_matches_an_uninterrupted_run(small_sets, tmp_path):
    train_set, val_set = small_sets
    config = TrainingConfig(epochs=4, patience=None, checkpoint_every=2, **SMALL)

    def crash_after_2(epoch, metrics):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(train_set, val_set, config, tmp_path / "a", on_epoch=crash_after_2)
    checkpoint = load_checkpoint(tmp_path / "a" / "last.pt")
    assert checkpoint["epoch"] == 2
    assert {"model", "optimizer", "scheduler", "scaler", "best_val_loss", "best_epoch", "rng", "config"} <= set(
        checkpoint
    )
    assert {"torch", "numpy", "python"} <= set(checkpoint["rng"])
    assert (tmp_path / "a" / "best.pt").exists() and (tmp_path / "a" / "epoch_0002.pt").exists()

    epochs = []
    resumed = train(train_set, val_set, config, tmp_path / "a", on_epoch=lambda e, m: epochs.append(e), resume=True)
    assert epochs == [3, 4] and resumed.epochs_run == [3, 4] and resumed.epochs_completed == 4
    assert resumed.resumed_from == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]

    straight = train(train_set, val_set, config, tmp_path / "b")
    final_a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    final_b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name  # bitwise, deterministic CPU mode
    assert no_timing(resumed.history) == no_timing(straight.history)
    assert resumed.best_epoch == straight.best_epoch


def test_resume_without_a_checkpoint_starts_afresh(small_sets, tmp_path):
    train_set, val_set = small_sets
    result = train(train_set, val_set, TrainingConfig(epochs=1, **SMALL), tmp_path, resume=True)
    assert result.resumed_from == 0 and result.epochs_run == [1]


def test_resume_extends_a_finished_run(small_sets, tmp_path):
    train_set, val_set = small_sets
    first = train(train_set, val_set, TrainingConfig(epochs=2, patience=None, **SMALL), tmp_path)
    assert first.epochs_run == [1, 2]
    longer = train(train_set, val_set, TrainingConfig(epochs=3, patience=None, **SMALL), tmp_path, resume=True)
    assert longer.epochs_run == [3] and len(longer.history) == 3
    with pytest.raises(ValueError, match="architecture"):
        train(train_set, val_set, TrainingConfig(epochs=4, **{**SMALL, "base_channels": 6}), tmp_path, resume=True)


def test_deterministic_rerun_gives_identical_metrics(small_sets):
    train_set, val_set = small_sets
    config = TrainingConfig(epochs=2, seed=5, **SMALL)
    first = train(train_set, val_set, config)
    second = train(train_set, val_set, config)
    assert no_timing(first.history) == no_timing(second.history)
    assert evaluate(first.model, val_set) == evaluate(second.model, val_set)
    other_seed = train(train_set, val_set, config.replace(seed=6))
    assert no_timing(other_seed.history) != no_timing(first.history)
    assert not torch.are_deterministic_algorithms_enabled()  # the global setting is restored
