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
    Column("ra", Float),  # deg, frame centre (ICRS); null for calibration frames
    Column("dec", Float),
    Column("gain", Float),  # e-/ADU
    Column("read_noise", Float),  # e-
    Column("ny", Integer),
    Column("nx", Integer),
    Column("path", Text),  # object-store key of the FITS file
    Column("status", String(16), nullable=False),  # ok | quarantined
    Column("problem", Text),
)

calibrated_frames = _nightly_table(
    "calibrated_frames",
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("filter", String(32)),
    Column("mjd_obs", Float),
    Column("path", Text),  # object-store key of the SCI/MASK/VARIANCE FITS
    Column("calibration", String(32)),  # night-masters | archive-reduced
    Column("fwhm_px", Float),
    Column("fwhm_arcsec", Float),
    Column("elongation", Float),
    Column("sky", Float),  # e-/pixel
    Column("noise", Float),  # e- rms/pixel
    Column("depth_mag", Float),  # 5-sigma point source
    Column("zero_point", Float),  # MAGZP, mag for 1 e-/s
    Column("n_sources", Integer),
    Column("masked_fraction", Float),
    Column("quality_score", Float),
    Column("usable", Boolean, nullable=False),
    Column("reasons", Text),  # why a frame is not usable ("; "-separated)
    Column("status", String(16), nullable=False),  # ok | failed
    Column("problem", Text),
)

candidate_detections = _nightly_table(
    "candidate_detections",
    Column("candidate_id", String(64), nullable=False),
    Column("frame_id", String(128), nullable=False),
    Column("field", String(64), nullable=False),
    Column("x", Float),  # pixel position in the calibrated frame (0-based)
    Column("y", Float),
    Column("ra", Float),  # deg (ICRS)
    Column("dec", Float),
    Column("flux", Float),  # e-, signed (negative for a fading source)
    Column("flux_err", Float),
    Column("snr", Float),
    Column("score", Float),  # real/bogus score, 0..1
    Column("flags", Integer),  # mask bits under the detection footprint
    Column("sign", Integer),  # +1 brightening, -1 fading
    Column("stamp_path", Text),  # object-store key of the cutout stamps
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
