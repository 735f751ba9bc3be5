"""training_datasets: labelled stamps for the U-Net, from people's labels, from injections, or both."""

import json
import time

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset

from astrid_assets.defs.detection import frame_seed, stamps_from_bytes
from astrid_assets.defs.quality_checks import TRAINING_DATASETS_CHECKS, training_datasets_checks
from astrid_assets.io import schema
from astrid_assets.io.arrays import save_arrays
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.labels import labelled_candidates
from astrid_assets.ml.dataset import CHANNELS, SPLITS, STAMP_SIZE, content_digest, split_by_night, split_codes
from astrid_assets.ml.injection_set import (
    Examples,
    cap_injections,
    injected_examples,
    labelled_examples,
    moving_objects,
    recurring_changes,
)
from astrid_assets.partitions import dataset_versions
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.science.frames.files import read_extensions
from astrid_assets.science.products import CalibratedFrame, Reference

#: where a dataset's examples come from (``DatasetConfig.source``)
DATASET_SOURCES = ("labels", "injections", "mixed")


class DatasetConfig(Config):
    """What a training dataset collects."""

    name: str = "astrid"
    source: str = "labels"  #: labels (people's), injections (no labels needed) or mixed (both)
    night_start: str = "0001-01-01"  #: first night of candidates to collect (default: all)
    night_end: str = "9999-12-31"
    sources: list[str] = []  #: raw-frame sources to include (simulated, fits_drop, skyview, mast); empty: all
    confidence_threshold: float = 0.6  #: minimum fraction of a candidate's labels agreeing with its consensus
    consensus: str = "majority"  #: how several people's labels combine: majority or dawid-skene (review.consensus)
    max_samples: int = 20000  #: stratified subsample above this
    split_fractions: list[float] = [0.7, 0.15, 0.15]  #: train / val / test, whole nights per split
    seed: int = 0
    min_samples: int = 60  #: gate: fewer samples block training
    min_minority_fraction: float = 0.05  #: gate: rarer class below this fraction blocks training
    human_weight: float = 1.0  #: mixed: loss weight of a human-labelled example (an injected or detected one: 1)
    injection_rounds: int = 2  #: injections: independent injections per differenced frame
    injection_fakes: int = 50  #: injections: fakes per injection
    injection_snr: list[float] = [4.0, 100.0]  #: injections: PSF-optimal S/N range of the fakes (log-uniform)
    injection_host_fraction: float = 0.3  #: injections: share of new sources on or beside a source (galaxies, stars)
    injection_change_fraction: float = 0.4  #: injections: share of fakes that brighten or fade a source by 20–100 %
    injection_threshold: float = 5.0  #: injections: detection threshold on |S_corr| (as candidate_detections')
    injection_max_real_per_bogus: float = 15.0  #: injections: fakes kept at most this many per bogus example


def collect_stamps(candidates: pd.DataFrame, store: ObjectStore) -> np.ndarray:
    """The (N, 3, 63, 63) stamps of ``candidates``, in their order."""
    stamps = np.empty((len(candidates), len(CHANNELS), STAMP_SIZE, STAMP_SIZE), np.float32)
    positions = {cid: i for i, cid in enumerate(candidates.candidate_id)}
    for path, group in candidates.groupby("stamp_path"):
        stack = stamps_from_bytes(store.get(path))
        stamps[[positions[c] for c in group.candidate_id]] = stack[group.stamp_index.to_numpy()]
    return stamps


def human_examples(config: DatasetConfig, database: DatabaseResource, store: ObjectStore) -> Examples:
    """Candidates of the window with a consensus label of at least ``confidence_threshold`` agreement."""
    candidates = labelled_candidates(database.resolved_url(), config.night_start, config.night_end,
                                     config.consensus)
    candidates = candidates[candidates.agreement >= config.confidence_threshold]
    if config.sources and len(candidates):
        raw = database.read_nights("raw_observations", sorted(candidates.night.unique()))
        candidates = candidates[candidates.frame_id.isin(set(raw.frame_id[raw.source.isin(config.sources)]))]
    candidates = candidates.sort_values("candidate_id").reset_index(drop=True)
    weight = config.human_weight if config.source == "mixed" else 1.0
    return labelled_examples(collect_stamps(candidates, store), candidates,
                             (candidates.label == "real").to_numpy(np.int64), "human", weight)


def injection_examples(
    context: AssetExecutionContext, config: DatasetConfig, database: DatabaseResource, store: ObjectStore,
    exclude: set[str],
) -> tuple[Examples, dict]:
    """Recovered fakes of every differenced frame of the window (real) and the untouched frames'
    candidates (bogus, less the ids in ``exclude``); and what was done, for the metadata.

    A frame that cannot be injected is reported and skipped; the rest of the window goes on.
    """
    differences = database.read_night_range("difference_images", config.night_start, config.night_end)
    differences = differences[differences.status == "ok"]
    candidates = database.read_night_range("candidate_detections", config.night_start, config.night_end)
    if config.sources and len(differences):
        raw = database.read_nights("raw_observations", sorted(differences.night.unique()))
        allowed = set(raw.frame_id[raw.source.isin(config.sources)])
        differences = differences[differences.frame_id.isin(allowed)]
    candidates = candidates[candidates.frame_id.isin(set(differences.frame_id))
                            & ~candidates.candidate_id.isin(exclude)].sort_values("candidate_id")
    references: dict[str, Reference] = {}
    parts, skipped = [], {}
    started = time.perf_counter()
    for row in differences.sort_values(["night", "frame_id"]).itertuples():
        try:
            if row.reference_path not in references:
                extensions = read_extensions(store.get(row.reference_path))
                references[row.reference_path] = Reference.from_extensions(extensions)
            frame = CalibratedFrame.from_extensions(read_extensions(store.get(row.calibrated_path)))
            rng = np.random.default_rng([frame_seed(row.night, row.frame_id), config.seed])
            parts.append(injected_examples(
                frame, references[row.reference_path], candidates[candidates.frame_id == row.frame_id], row.night,
                row.frame_id, rng, rounds=config.injection_rounds, fakes_per_round=config.injection_fakes,
                snr_range=tuple(config.injection_snr), host_fraction=config.injection_host_fraction,
                change_fraction=config.injection_change_fraction,
                threshold=config.injection_threshold))
        except Exception as error:  # one frame that cannot be injected does not sink the dataset
            skipped[row.frame_id] = f"{type(error).__name__}: {error}"
            context.log.warning(f"dataset {context.partition_key}, night {row.night}, frame {row.frame_id}: "
                                f"no injection examples: {error}")
    real = Examples.concatenate(parts)
    stamps = collect_stamps(candidates, store)
    calibrated = database.read_night_range("calibrated_frames", config.night_start, config.night_end)
    frames = (calibrated.drop_duplicates("frame_id").set_index("frame_id") if len(calibrated)
              else pd.DataFrame(columns=["pixel_scale", "mjd_obs"], dtype=float))
    located = candidates.assign(pixel_scale=candidates.frame_id.map(frames.pixel_scale),
                                mjd=candidates.frame_id.map(frames.mjd_obs))
    recurring, moving = recurring_changes(located, stamps), moving_objects(located)
    astrophysical = recurring | moving
    bogus = labelled_examples(stamps[~astrophysical], candidates[~astrophysical],
                              np.zeros(int((~astrophysical).sum()), np.int64), "detection")
    seconds = time.perf_counter() - started
    report = {"frames_injected": len(parts), "frames_skipped": MetadataValue.json(skipped),
              "fakes_recovered": len(real), "detections_as_bogus": len(bogus),
              "recurring_changes_left_out": int(recurring.sum()),
              "moving_objects_left_out": int((moving & ~recurring).sum()),
              "injection_seconds": round(seconds, 1),
              "examples_per_second": round((len(real) + len(bogus)) / max(seconds, 1e-9), 2),
              "bogus_context": "no catalogue context (known variables, minor planets) in this deployment; "
                               "recurring changes (>= 2 exposures, same sign, >= 5 % of the reference flux) and "
                               "tracklets (a source moving at a constant rate through >= 3 exposures of a night) "
                               "left out of the bogus class as likely astrophysical"}
    return Examples.concatenate([real, bogus]), report


def frame_instruments(database: DatabaseResource, examples: Examples) -> np.ndarray:
    """Each example's instrument key (``raw_observations.instrument`` of its frame; "" where unknown)."""
    if not len(examples):
        return np.empty(0, str)
    raw = database.read_nights("raw_observations", sorted(set(examples.nights)))
    if "instrument" not in raw:
        return np.full(len(examples), "")
    by_frame = raw.drop_duplicates("frame_id").set_index("frame_id").instrument.fillna("")
    return pd.Series(examples.frames).map(by_frame).fillna("").to_numpy(str)


def subsample(examples: Examples, max_samples: int, seed: int) -> Examples:
    """At most ``max_samples`` examples, the same fraction of each class (stratified), in id order."""
    rng = np.random.default_rng(seed)
    keep = np.arange(len(examples))
    if len(examples) > max_samples:
        fraction = max_samples / len(examples)
        keep = np.concatenate([rng.choice(np.flatnonzero(examples.labels == label),
                                          int(round(fraction * (examples.labels == label).sum())), replace=False)
                               for label in (0, 1)])
    return examples.subset(keep[np.argsort(examples.ids[keep], kind="stable")])


@asset(
    partitions_def=dataset_versions,
    metadata={"partition_expr": "dataset_version"},
    io_manager_key="table_io_manager",
    kinds={"numpy", "sql"},
    group_name="learning",
    deps=["candidate_detections"],
    check_specs=TRAINING_DATASETS_CHECKS,
)
def training_datasets(
    context: AssetExecutionContext, config: DatasetConfig, object_store: ObjectStoreResource,
    database: DatabaseResource,
):
    """Labelled stamps of a night window with per-pixel masks, split by night, from ``config.source``:

    - ``labels``: validated candidates, consensus labels (unsure ignored) with agreement ≥
      ``confidence_threshold``; masks are the measured footprint of real candidates, empty for bogus;
    - ``injections`` (no labels needed): fakes injected with each differenced frame's measured PSF and
      recovered by the same differencing and detection are real (mask: the injected footprint), the
      candidates of the untouched frames are bogus (:mod:`astrid_assets.ml.injection_set`);
    - ``mixed``: both, human-labelled examples weighted ``human_weight`` in the loss, and left out of
      the bogus detections.

    Train / validation / test hold whole nights so that no night leaks across splits. Arrays go to
    the object store (with each example's ``origin``, fake ``snr`` and loss ``weights``); one manifest
    row per split (counts per class, nights, content hash, source) to the database.
    """
    if config.source not in DATASET_SOURCES:
        raise ValueError(f"dataset {context.partition_key}: unknown source {config.source!r}; "
                         f"choose one of {', '.join(DATASET_SOURCES)}")
    version = context.partition_key
    store = object_store.open()
    parts, report = [], {}
    if config.source in ("labels", "mixed"):
        parts.append(human_examples(config, database, store))
    if config.source in ("injections", "mixed"):
        injected, report = injection_examples(context, config, database, store,
                                              exclude=set(parts[0].ids) if parts else set())
        parts.append(injected)
    examples = cap_injections(Examples.concatenate(parts), config.injection_max_real_per_bogus, config.seed)
    if report:
        report["fakes_kept"] = int((examples.origin == "injection").sum())
    examples = subsample(examples, config.max_samples, config.seed)
    labels = examples.labels
    fwhm = np.full(len(examples), 3.0)  # masks are stored; kept for datasets' readers that derive them
    split = split_by_night(examples.nights, tuple(config.split_fractions), config.seed)
    split_of = split_codes(split, len(examples))
    instruments = frame_instruments(database, examples)
    digest = content_digest(examples.stamps, labels, examples.ids.tolist())
    path = store.put(f"training_datasets/{version}/{digest[:16]}.npz",
                     save_arrays(examples.arrays() | {"split": split_of, "fwhm": fwhm, "instruments": instruments}))
    rows = []
    for code, name in enumerate(SPLITS):
        chosen = split_of == code
        rows.append({"dataset_version": version, "name": config.name, "night_start": config.night_start,
                     "night_end": config.night_end, "split": name, "n_real": int(labels[chosen].sum()),
                     "n_bogus": int((1 - labels[chosen]).sum()),
                     "nights": ",".join(sorted(set(examples.nights[chosen]))), "digest": digest, "path": path,
                     "config": json.dumps(config.model_dump()), "source": config.source,
                     "instruments": ",".join(sorted(set(instruments[chosen]) - {""}))})
    table = pd.DataFrame(rows).reindex(columns=list(schema.training_datasets.c.keys()))
    origins = pd.Series(examples.origin).value_counts().to_dict()
    yield Output(table, metadata={
        "source": config.source, "samples": len(examples), "real": int(labels.sum()),
        "bogus": int(len(labels) - labels.sum()),
        "by_origin": MetadataValue.json({k: int(v) for k, v in origins.items()}),
        "digest": digest, **report,
        "splits": MetadataValue.md(table[["split", "n_real", "n_bogus", "nights"]].to_markdown(index=False)),
    })
    yield from training_datasets_checks(table, labels, config.min_samples, config.min_minority_fraction)

