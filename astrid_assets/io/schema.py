"""Table schemas of AstrID's database, declared explicitly (SQLAlchemy Core).

Every nightly table carries ``night`` (``YYYY-MM-DD``, the partition key, indexed) so that a
partition is replaced or read with one indexed predicate. Text dates compare correctly as strings.
"""

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()


def _nightly_table(name: str, *columns: Column) -> Table:
    table = Table(name, metadata, Column("night", String(10), nullable=False), *columns)
    Index(f"ix_{name}_night", table.c.night)
    return table


raw_observations = _nightly_table(
    "raw_observations",
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("source", String(32), nullable=False),
    Column("imagetyp", String(16)),
    Column("filter", String(32)),
    Column("exptime", Float),
    Column("date_obs", String(32)),
    Column("mjd_obs", Float),
    Column("has_wcs", Boolean),
    Column("wcs_problem", Text),  # why a malformed WCS was set aside
    Column("imagetyp_card", String(32)),  # IMAGETYP as written by the acquisition software
    Column("ra", Float),  # deg, frame centre (ICRS); null for calibration frames
    Column("dec", Float),
    Column("gain", Float),  # e-/ADU
    Column("read_noise", Float),  # e-
    Column("ny", Integer),
    Column("nx", Integer),
    Column("path", Text),  # object-store key of the FITS file
    Column("status", String(16), nullable=False),  # ok | quarantined
    Column("problem", Text),
    Column("instrument", String(128)),  # TELESCOP / INSTRUME, else the source (science.headers.instrument_key)
    Column("field_reason", Text),  # how the field was decided (header OBJECT, pointing...); "assumed: ..." if assumed
)

calibrated_frames = _nightly_table(
    "calibrated_frames",
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("filter", String(32)),
    Column("mjd_obs", Float),
    Column("path", Text),  # object-store key of the SCI/MASK/VARIANCE FITS
    Column("calibration", String(32)),  # night-masters | archive-reduced | uncalibrated
    Column("fwhm_px", Float),
    Column("fwhm_arcsec", Float),
    Column("elongation", Float),
    Column("sky", Float),  # e-/pixel
    Column("noise", Float),  # e- rms/pixel
    Column("depth_mag", Float),  # 5-sigma point source, mag (needs a zero point)
    Column("data_state", String(16)),  # raw | reduced | sky_subtracted
    Column("gain", Float),  # e-/ADU
    Column("gain_source", Text),
    Column("read_noise", Float),  # e-
    Column("read_noise_source", Text),
    Column("saturation", Float),  # ADU
    Column("saturation_source", Text),
    Column("pedestal", Float),  # ADU
    Column("noise_model", Text),
    Column("cr_fwhm_px", Float),
    Column("cr_objlim", Float),
    Column("cr_pixels", Integer),
    Column("assumptions", Text),  # "; "-separated
    Column("limiting_flux", Float),  # e- in the exposure, 5-sigma PSF-optimal point source (no zero point needed)
    Column("exptime", Float),  # s
    Column("pixel_scale", Float),  # arcsec/px (1 where unknown: fwhm_arcsec is then in px)
    Column("psf_model", String(16)),  # gaussian | moffat (majority of the PSF stars' fits)
    Column("psf_beta", Float),  # median Moffat index (null for a Gaussian)
    Column("zero_point", Float),  # MAGZP, mag for 1 e-/s
    Column("stars", Text),  # zero-point stars, JSON [[x, y, aperture flux e-], ...] (science/zeropoints.py)
    Column("n_sources", Integer),
    Column("masked_fraction", Float),
    Column("quality_score", Float),
    Column("usable", Boolean, nullable=False),
    Column("reasons", Text),  # why a frame is not usable ("; "-separated)
    Column("status", String(16), nullable=False),  # ok | failed
    Column("problem", Text),
)

def table_for(name: str) -> Table:
    """The declared table called ``name``; a clear error if none is declared."""
    try:
        return metadata.tables[name]
    except KeyError:
        raise KeyError(
            f"no table {name!r} is declared in astrid_assets/io/schema.py "
            f"(declared: {', '.join(sorted(metadata.tables))})"
        ) from None


reference_images = _nightly_table(
    "reference_images",
    Column("field", String(64), nullable=False),
    Column("path", Text),  # object-store key of the REF/VARIANCE/MASK/PSF FITS
    Column("n_frames", Integer),
    Column("fwhm_px", Float),
    Column("input_frames", Text),  # frame ids co-added, ","-separated
    Column("status", String(16), nullable=False),  # ok | missing | failed
    Column("problem", Text),
    Column("version", String(32)),  # content hash of the input frames: the reference version
    Column("shallow", Boolean),  # fewer input frames than ReferenceConfig.min_frames
    Column("selection", String(32)),  # auto | pinned-window | pinned-frames
    Column("decision", Text),  # built | kept (why) | rebuilt (why)
    Column("sensitivity", Float),  # relative point-source S/N of the co-add (anchor frame = its own)
)

difference_images = _nightly_table(
    "difference_images",
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("path", Text),  # object-store key of the DIFF/SCORR/VARIANCE/MASK/NEW/PSF FITS
    Column("calibrated_path", Text),
    Column("reference_path", Text),
    Column("method", String(16)),  # zogy | classic
    Column("flux_ratio", Float),  # F_new / F_ref
    Column("psf_fwhm", Float),  # px, PSF of the difference
    Column("new_fwhm", Float),  # px
    Column("s_corr_std", Float),  # robust std of S_corr over usable pixels (1 on blank sky)
    Column("registration_rms", Float),  # px
    Column("masked_fraction", Float),
    Column("status", String(16), nullable=False),  # ok | skipped | rejected
    Column("problem", Text),
    Column("reason", String(32)),  # why not differenced, one word: no_reference | unusable | registration | psf | ...
    Column("reference_version", String(32)),  # version of the reference this difference used
    Column("registration", String(16)),  # wcs | star-pattern
)

candidate_detections = _nightly_table(
    "candidate_detections",
    Column("candidate_id", String(160), nullable=False),
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("x", Float),  # px on the reference grid, 0-based
    Column("y", Float),
    Column("ra", Float),  # deg, ICRS
    Column("dec", Float),
    Column("sign", Integer),  # +1 brightened, -1 faded since the reference
    Column("flux", Float),  # e- in the new frame, PSF fit on the difference (signed)
    Column("flux_err", Float),
    Column("snr", Float),
    Column("s_corr_peak", Float),
    Column("fwhm", Float),  # px
    Column("elongation", Float),
    Column("sharpness", Float),
    Column("rule_score", Float),  # [0, 1], from the measurements and flags (science.detection.candidates)
    Column("flags", Integer),  # detect.FLAG_* bits
    Column("stamp_path", Text),  # object-store key of the (N, 3, 63, 63) stamp stack of the frame
    Column("stamp_index", Integer),  # row of this candidate in that stack
)
Index("ix_candidate_detections_candidate_id", candidate_detections.c.candidate_id)


# --- Tables people write (outside Dagster runs); migrated with Alembic (astrid_assets/io/migrations) ---

validations = Table(
    "validations",
    metadata,
    Column("validation_id", Integer, primary_key=True, autoincrement=True),
    Column("candidate_id", String(160), nullable=False),
    Column("night", String(10), nullable=False),  # the candidate's night, for windowed dataset queries
    Column("label", String(8), nullable=False),  # real | bogus | unsure
    Column("labeller", String(128), nullable=False),
    Column("labelled_at", String(32), nullable=False),  # ISO 8601 UTC
    Column("note", Text),
)
Index("ix_validations_candidate_id", validations.c.candidate_id)
Index("ix_validations_night", validations.c.night)

LABELS = ("real", "bogus", "unsure")


# --- Learning loop: partitioned by dataset version / model version (dynamic partitions) ---

training_datasets = Table(
    "training_datasets",
    metadata,
    Column("dataset_version", String(64), nullable=False),
    Column("name", String(128)),
    Column("night_start", String(10)),
    Column("night_end", String(10)),
    Column("split", String(8), nullable=False),  # train | val | test
    Column("n_real", Integer, nullable=False),
    Column("n_bogus", Integer, nullable=False),
    Column("nights", Text),  # ","-separated nights of this split
    Column("digest", String(64), nullable=False),  # sha256 over stamps, labels and candidate ids
    Column("path", Text, nullable=False),  # object-store key of the arrays (.npz)
    Column("config", Text),  # the collect configuration, JSON
    Column("source", String(16)),  # labels | injections | mixed
    Column("instruments", Text),  # ","-separated instrument keys of this split's frames
)
Index("ix_training_datasets_version", training_datasets.c.dataset_version)

unet_models = Table(
    "unet_models",
    metadata,
    Column("model_version", String(64), nullable=False),
    Column("dataset_version", String(64), nullable=False),
    Column("dataset_digest", String(64)),
    Column("mlflow_run_id", String(64)),
    Column("registry_version", String(16)),
    Column("weights_path", Text),
    Column("best_epoch", Integer),
    Column("epochs_completed", Integer),
    Column("stopped_early", Boolean),
    Column("test_roc_auc", Float),
    Column("test_f1", Float),
    Column("frozen_roc_auc", Float),
    Column("promoted", Boolean),
    Column("decision", Text),
    Column("manifest", Text),  # reproducibility manifest, JSON
    Column("instruments", Text),  # ","-separated instrument keys it was trained for (empty: unknown)
    Column("champion_alias", String(160)),  # the alias it competes for: champion or champion-<slug>
    Column("operating_threshold", Float),  # probability threshold chosen for operating_completeness on val
    Column("test_completeness", Float),  # at that threshold, on the test split's qualifying reals
    Column("test_bogus_rejection", Float),  # at that threshold, on the test split's bogus
)
Index("ix_unet_models_version", unet_models.c.model_version)

scored_detections = _nightly_table(
    "scored_detections",
    Column("candidate_id", String(160), nullable=False),
    Column("frame_id", String(128), nullable=False),
    Column("real_probability", Float),  # null when no champion was available
    Column("model_version", String(64)),  # registry version of the champion that scored it
    Column("real", Boolean),  # real_probability >= that version's operating threshold; null when unscored
)
