"""Table schemas of AstrID's database, declared explicitly (SQLAlchemy Core).

Every nightly table carries ``night`` (``YYYY-MM-DD``, the partition key, indexed) so that a
partition is replaced or read with one indexed predicate. Text dates compare correctly as strings.
"""

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

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
    Column("calibration", String(32)),  # night-masters | masters of <night> | archive-reduced | uncalibrated
    Column("masters_path", Text),  # object-store key of the master calibrations applied (null: none)
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
    Column("registration", String(16)),  # wcs | star-pattern | sparse-stars | correlation (astrometry.align)
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
    Column("model_version", String(64)),  # registry version whose real_probability was on screen (null: none)
    Column("real_probability", Float),  # the probability shown when the label was given
    Column("source", String(16)),  # review (the scanning page); null: the command line
)
Index("ix_validations_candidate_id", validations.c.candidate_id)
Index("ix_validations_night", validations.c.night)
Index("ix_validations_labeller", validations.c.labeller)

LABELS = ("real", "bogus", "unsure")

people = Table(  # who may sign in to the scanning page (astrid_assets.review.auth)
    "people",
    metadata,
    Column("person_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("password_hash", Text),  # scrypt$n$r$p$salt$hash; null: signed in by a trusted proxy only
    Column("role", String(16), nullable=False),  # labeller | expert
    Column("created_at", String(32), nullable=False),  # ISO 8601 UTC
)

ROLES = ("labeller", "expert")

expert_reviews = Table(  # an expert's verdict on a candidate; overrides the labellers' consensus
    "expert_reviews",
    metadata,
    Column("review_id", Integer, primary_key=True, autoincrement=True),
    Column("candidate_id", String(160), nullable=False),
    Column("night", String(10), nullable=False),
    Column("person", String(128), nullable=False),
    Column("confirmed", Boolean, nullable=False),  # true: a real transient; false: not one
    Column("importance", Integer, nullable=False),  # 1 (routine) .. 5 (follow up now)
    Column("reviewed_at", String(32), nullable=False),  # ISO 8601 UTC
    Column("note", Text),
)
Index("ix_expert_reviews_candidate_id", expert_reviews.c.candidate_id)


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


# --- Objects, light curves and context (issue 21): nightly, other assets read them ---

object_detections = _nightly_table(
    "object_detections",
    Column("candidate_id", String(160), nullable=False),
    Column("object_id", String(64), nullable=False),
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("mjd_obs", Float),
    Column("ra", Float),  # deg, ICRS; null without WCS
    Column("dec", Float),
    Column("x", Float),  # px on the field's stable grid (science.objects.grid), 0-based
    Column("y", Float),
    Column("moving", Boolean),  # part of a tracklet (a solar-system body), not of a static object
    Column("position_err_px", Float),  # 1-sigma centroid error of the detection on the stable grid
    Column("sign", Integer),  # +1 brightened, -1 faded (candidate_detections.sign)
    Column("snr", Float),
    Column("real_probability", Float),  # champion's (scored_detections); null unscored
    Column("model_version", String(64)),
)
Index("ix_object_detections_object_id", object_detections.c.object_id)

transient_objects = _nightly_table(
    "transient_objects",
    Column("object_id", String(64), nullable=False),  # stable across nights and re-runs
    Column("field", String(64), nullable=False),
    Column("ra", Float),  # deg, ICRS, mean of detections; null without WCS
    Column("dec", Float),
    Column("x", Float),  # px on the field's stable grid, 0-based
    Column("y", Float),
    Column("first_mjd", Float),
    Column("last_mjd", Float),
    Column("first_night", String(10)),
    Column("last_night", String(10)),
    Column("n_detections", Integer),  # all nights up to and including this one
    Column("real_probability", Float),  # champion's, latest scored detection; null unscored
    Column("model_version", String(64)),  # registry version that gave real_probability
    Column("moving", Boolean),  # a tracklet (solar-system body) rather than a static object
    Column("ssnamenr", String(64)),  # known solar-system object (SkyBoT) or null
    Column("position_err_px", Float),  # 1-sigma error of the mean position on the stable grid
)
Index("ix_transient_objects_object_id", transient_objects.c.object_id)

forced_photometry = _nightly_table(
    "forced_photometry",
    Column("object_id", String(64), nullable=False),
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("mjd_obs", Float),
    Column("filter", String(32)),
    Column("flux", Float),  # e- in the new frame, PSF fit on the difference, baseline-corrected
    Column("flux_err", Float),
    Column("snr", Float),
    Column("flux_limit_5sigma", Float),  # e-, 5 * flux_err
    Column("mag", Float),  # null without zero point or flux <= 0
    Column("mag_err", Float),
    Column("maglim_5sigma", Float),  # null without zero point
    Column("before_first_detection", Boolean),
    Column("baseline", Float),  # e-, weighted mean of the epochs before the object appeared (subtracted)
    Column("detected", Boolean),  # snr >= 5 (else an upper limit)
    Column("reference_version", String(32)),
)
Index("ix_forced_photometry_object_id", forced_photometry.c.object_id)

object_context = _nightly_table(
    "object_context",
    Column("object_id", String(64), nullable=False),
    Column("gaia_source_id", String(32)),
    Column("gaia_distance_arcsec", Float),
    Column("gaia_g", Float),  # mag
    Column("gaia_parallax_snr", Float),
    Column("gaia_pm_snr", Float),
    Column("is_star", Boolean),
    Column("sgscore", Float),  # Pan-STARRS PS1-PSC score, 1 star .. 0 galaxy
    Column("ps1_distance_arcsec", Float),
    Column("ssnamenr", String(64)),
    Column("ssdistnr", Float),  # arcsec
    Column("ssmagnr", Float),  # V mag
    Column("context_note", Text),  # why a catalogue gave nothing (unreachable, no WCS, nothing near)
)


# --- Alert packets and notifications (issue 21; astrid_assets/packets, astrid_assets/notifications) ---

alert_packets = _nightly_table(
    # one row per packet: an index of the night's Avro file (the packets themselves are in the object store)
    "alert_packets",
    Column("candid", BigInteger, nullable=False),  # the packet's ZTF-style 63-bit detection id
    Column("candidate_id", String(160), nullable=False),
    Column("object_id", String(64), nullable=False),
    Column("path", Text, nullable=False),  # object-store key of the night's Avro file
    Column("schema_version", String(16), nullable=False),
    Column("packet_bytes", Integer),  # the record alone, Avro binary (the file's schema is written once)
    Column("magpsf", Float),
    Column("rb", Float),  # real probability, with rbversion the model version that gave it
    Column("rbversion", String(64)),
)

notifications = _nightly_table(
    # one row per (object, filter) that a notification filter matched on the night, and what was done
    "notifications",
    Column("object_id", String(64), nullable=False),
    Column("candid", BigInteger, nullable=False),
    Column("filter_name", String(64), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # sent | already_sent | disabled | no_channel | failed
    Column("channels", Text),  # ","-separated: email, webhook
    Column("problem", Text),
)

notifications_sent = Table(
    # not nightly: a key is never deleted by a re-run, so an (object, filter) is notified once
    "notifications_sent",
    metadata,
    Column("idempotency_key", String(64), primary_key=True),
    Column("object_id", String(64), nullable=False),
    Column("filter_name", String(64), nullable=False),
    Column("night", String(10), nullable=False),
    Column("candid", BigInteger, nullable=False),
    Column("channels", Text),
    Column("status", String(16), nullable=False),  # sending (claimed) | sent
    Column("sent_at", String(32), nullable=False),  # ISO 8601 UTC
)
