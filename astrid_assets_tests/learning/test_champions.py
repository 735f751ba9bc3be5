"""Per-instrument champions without servers: alias choice, promotion and rollback per alias, scoring by
the champion of each frame's instrument, the operating point of a trained model."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from astrid_assets.defs.learning import FROZEN_BENCHMARK_KEY, frozen_benchmark, frozen_benchmark_key
from astrid_assets.io.object_store import open_object_store
from astrid_assets.ml.champions import (
    CHALLENGER,
    CHAMPION,
    alias_for_instruments,
    assign_champions,
    challenger_alias,
    champion_alias,
    choose_alias,
    choose_operating_point,
    dataset_instruments,
    score_with_champions,
    split_values,
)
from astrid_assets.ml.dataset import SPLITS
from astrid_assets.ml.metrics import DEFAULT_THRESHOLD
from astrid_assets.resources.mlflow_registry import (
    MODEL_NAME,
    promote,
    record_operating_point,
    registered_aliases,
    rollback,
    version_threshold,
)

SCOPE_A = "0.5 m f/6.8 reflector / KAF-16803 CCD"
SCOPE_B = "AstrID-sim"


def test_alias_names():
    assert champion_alias(SCOPE_A) == "champion-0-5-m-f-6-8-reflector-kaf-16803-ccd"
    assert champion_alias(None) == champion_alias("") == CHAMPION
    assert champion_alias("astrid-sim") == champion_alias(SCOPE_B) == "champion-astrid-sim"
    assert challenger_alias(champion_alias(SCOPE_B)) == "challenger-astrid-sim"
    assert challenger_alias(CHAMPION) == CHALLENGER


def test_the_alias_a_version_competes_for():
    assert alias_for_instruments([SCOPE_A]) == champion_alias(SCOPE_A)
    assert alias_for_instruments([SCOPE_A, SCOPE_A, ""]) == champion_alias(SCOPE_A)
    assert alias_for_instruments([SCOPE_A, SCOPE_B]) == CHAMPION  # trained across instruments
    assert alias_for_instruments([]) == CHAMPION  # instruments unknown (an old dataset)


@pytest.mark.parametrize("instrument, aliases, chosen", [
    (SCOPE_A, {CHAMPION: "1", champion_alias(SCOPE_A): "2"}, champion_alias(SCOPE_A)),
    (SCOPE_B, {CHAMPION: "1", champion_alias(SCOPE_A): "2"}, CHAMPION),  # no champion of its own
    (None, {CHAMPION: "1", champion_alias(SCOPE_A): "2"}, CHAMPION),  # frame without a recorded instrument
    (float("nan"), {CHAMPION: "1"}, CHAMPION),  # a null read through pandas
    (SCOPE_A, {champion_alias(SCOPE_A): "2", CHALLENGER: "3"}, champion_alias(SCOPE_A)),
    (SCOPE_B, {champion_alias(SCOPE_A): "2", CHALLENGER: "3"}, None),  # nothing applies: unscored
    (SCOPE_A, {}, None),
])
def test_alias_choice(instrument, aliases, chosen):
    assert choose_alias(instrument, aliases) == chosen


class Registry:
    """An MlflowClient's registry calls over an in-memory registered model."""

    def __init__(self, aliases=None, tags=None):
        self.aliases, self.tags = dict(aliases or {}), {v: dict(t) for v, t in (tags or {}).items()}

    def set_registered_model_alias(self, name, alias, version):
        assert name == MODEL_NAME
        self.aliases[alias] = version

    def get_model_version_by_alias(self, name, alias):
        if alias not in self.aliases:
            raise MlflowException("no alias")
        return SimpleNamespace(version=self.aliases[alias])

    def get_registered_model(self, name):
        return SimpleNamespace(aliases=dict(self.aliases))

    def set_model_version_tag(self, name, version, key, value):
        self.tags.setdefault(version, {})[key] = value

    def get_model_version(self, name, version):
        return SimpleNamespace(tags=self.tags.get(version, {}))


def test_promotion_and_rollback_per_alias():
    alias_a, alias_b = champion_alias(SCOPE_A), champion_alias(SCOPE_B)
    registry = Registry({CHAMPION: "1"})
    first_a = promote(registry, "2", "a1", 0.95, None, floor=0.9, margin=0.0, alias=alias_a)
    assert first_a.promoted and first_a.reason.endswith(f"first {alias_a}")
    assert registry.aliases == {CHAMPION: "1", alias_a: "2", challenger_alias(alias_a): "2"}
    assert promote(registry, "3", "b1", 0.93, None, floor=0.9, margin=0.0, alias=alias_b).promoted
    better_a = promote(registry, "4", "a2", 0.97, 0.95, floor=0.9, margin=0.01, alias=alias_a)
    assert better_a.promoted and better_a.champion_before == "2"
    assert registry.tags["4"][f"previous_{alias_a}"] == "2" and registry.aliases[CHAMPION] == "1"
    assert not promote(registry, "5", "a3", 0.96, 0.97, floor=0.9, margin=0.0, alias=alias_a).promoted
    assert registry.aliases[alias_a] == "4" and registry.aliases[challenger_alias(alias_a)] == "5"
    assert not promote(registry, "6", "b2", float("nan"), 0.93, floor=0.9, margin=0.0, alias=alias_b).promoted
    assert registered_aliases(registry)[alias_b] == "3"

    assert rollback(registry, alias_a) == ("4", "2")
    assert registry.aliases[alias_a] == "2" and registry.aliases[alias_b] == "3" and registry.aliases[CHAMPION] == "1"
    with pytest.raises(ValueError, match=f"{alias_b} v3 replaced no earlier"):
        rollback(registry, alias_b)
    with pytest.raises(ValueError, match="no champion-nowhere"):
        rollback(registry, "champion-nowhere")
    with pytest.raises(ValueError, match="champion v1 replaced no earlier"):
        rollback(registry)  # the plain champion, as before


def test_operating_point_tags():
    registry = Registry()
    record_operating_point(registry, "7", [SCOPE_B, SCOPE_A, SCOPE_B], 0.3125, 0.95)
    assert registry.tags["7"] == {"instruments": f"{SCOPE_A},{SCOPE_B}", "operating_threshold": "0.3125",
                                  "operating_completeness": "0.95"}
    assert version_threshold(registry, "7") == 0.3125
    assert version_threshold(registry, "8") == DEFAULT_THRESHOLD  # a version from before operating points


def test_dataset_instruments_from_arrays_rows_or_unknown():
    arrays = {"instruments": np.array([SCOPE_B, SCOPE_A, SCOPE_B, ""])}
    assert dataset_instruments(arrays) == [SCOPE_A, SCOPE_B]
    rows = pd.DataFrame({"split": list(SPLITS), "instruments": [SCOPE_A, f"{SCOPE_A},{SCOPE_B}", None]})
    assert dataset_instruments({}, rows) == [SCOPE_A, SCOPE_B]
    assert dataset_instruments({}, pd.DataFrame({"split": list(SPLITS)})) == []
    assert dataset_instruments({}) == []


def test_scoring_uses_each_frames_champion_and_its_threshold():
    candidates = pd.DataFrame({"night": "2024-01-02", "candidate_id": [f"c{i}" for i in range(6)],
                               "frame_id": ["fa", "fb", "fc", "fa", "fz", "fb"]})
    instruments = {"fa": SCOPE_A, "fb": SCOPE_B, "fc": "Other scope", "fz": None}
    aliases = {CHAMPION: "1", champion_alias(SCOPE_A): "2", champion_alias(SCOPE_B): "3", CHALLENGER: "9"}
    chosen = assign_champions(candidates, instruments, aliases)
    assert chosen.version.tolist() == ["2", "3", "1", "2", "1", "3"]
    assert chosen.alias.tolist()[:3] == [champion_alias(SCOPE_A), champion_alias(SCOPE_B), CHAMPION]

    stamps = np.arange(6, dtype=float) / 10  # a "stamp" per candidate: its probability under any model
    loaded = []
    table, thresholds = score_with_champions(
        candidates, chosen.version.tolist(), lambda rows: stamps[rows],
        lambda version: loaded.append(version) or version, {"1": 0.5, "2": 0.25, "3": 0.45}.get,
        lambda model, batch: batch)
    assert sorted(loaded) == ["1", "2", "3"]  # each model loaded once
    assert thresholds == {"1": 0.5, "2": 0.25, "3": 0.45}
    assert table.model_version.tolist() == ["2", "3", "1", "2", "1", "3"]
    assert table.real_probability.tolist() == pytest.approx(stamps.tolist())
    assert table.real.tolist() == [False, False, False, True, False, True]  # 0.3 >= 0.25, 0.5 >= 0.45

    none_apply = assign_champions(candidates, instruments, {champion_alias(SCOPE_A): "2"})
    table, _ = score_with_champions(candidates, none_apply.version.tolist(), lambda rows: stamps[rows],
                                    lambda version: version, lambda version: 0.5, lambda model, batch: batch)
    unscored = table[table.frame_id != "fa"]
    assert unscored.model_version.isna().all() and unscored.real.isna().all()
    assert unscored.real_probability.isna().all() and table.model_version[table.frame_id == "fa"].eq("2").all()


def test_operating_point_of_a_model_with_and_without_snr():
    val_labels, test_labels = np.array([1, 1, 1, 1, 0, 0]), np.array([1, 1, 0, 0])
    val_scores, test_scores = np.array([0.9, 0.8, 0.7, 0.05, 0.3, 0.1]), np.array([0.75, 0.6, 0.72, 0.2])
    with_snr = choose_operating_point(val_labels, val_scores, np.array([20, 10, 8, 2, np.nan, np.nan]), test_labels,
                                      test_scores, np.array([12, 9, np.nan, np.nan]), 1.0, 6.0)
    # the S/N 2 fake does not count: every bright real kept from 0.7, the bogus below up to 0.3, the threshold
    # midway in log-odds
    assert with_snr.threshold == pytest.approx(0.5) and "S/N >= 6" in with_snr.note
    assert with_snr.test_completeness == 1.0 and with_snr.test_bogus_rejection == 0.5
    without = choose_operating_point(val_labels, val_scores, None, test_labels, test_scores, None, 1.0, 6.0)
    assert without.threshold == 0.05 and "all reals" in without.note
    fallback = choose_operating_point(np.array([0, 0]), np.array([0.2, 0.4]), None, test_labels, test_scores, None,
                                      0.95, 6.0)
    assert fallback.threshold == DEFAULT_THRESHOLD and "no real example" in fallback.note
    arrays = {"split": np.array([0, 1, 2, 1]), "snr": np.array([1.0, 2.0, 3.0, 4.0])}
    assert split_values(arrays, "snr", "val").tolist() == [2.0, 4.0] and split_values(arrays, "x", "val") is None


def test_frozen_benchmark_per_instrument(tmp_path):
    store = open_object_store(str(tmp_path))
    n = 12
    arrays = {"stamps": np.random.default_rng(0).normal(size=(n, 3, 63, 63)).astype(np.float32),
              "labels": np.array([1, 0] * 6), "fwhm": np.full(n, 3.0), "ids": np.array([f"c{i}" for i in range(n)]),
              "split": np.array([2] * 8 + [0] * 4, np.int8),
              "instruments": np.array([SCOPE_A] * 4 + [SCOPE_B] * 4 + [SCOPE_A] * 4)}
    frozen_a = frozen_benchmark(store, arrays, SCOPE_A)
    assert store.exists(frozen_benchmark_key(SCOPE_A)) and not store.exists(FROZEN_BENCHMARK_KEY)
    assert frozen_benchmark_key(SCOPE_A) == "unet_models/frozen_benchmark/0-5-m-f-6-8-reflector-kaf-16803-ccd.npz"
    assert list(frozen_a.ids) == ["c0", "c1", "c2", "c3"]
    later = {**arrays, "ids": np.array([f"d{i}" for i in range(n)])}
    assert list(frozen_benchmark(store, later, SCOPE_A).ids) == ["c0", "c1", "c2", "c3"]  # frozen
    assert list(frozen_benchmark(store, arrays).ids) == [f"c{i}" for i in range(8)]  # the shared one: every test
    one_class = {**arrays, "labels": np.ones(n, int)}
    frozen_benchmark(store, one_class, "Elsewhere")
    assert not store.exists(frozen_benchmark_key("Elsewhere"))  # an undefined ROC AUC is not frozen
