"""``raw_observations``: the night's frames from the configured survey sources."""

import io

import pandas as pd
from astropy.io import fits
from dagster import AssetExecutionContext, Config, MetadataValue

from astrid_assets import settings
from astrid_assets.defs.nightly import for_each_night, nightly_asset
from astrid_assets.defs.quality_checks import RAW_OBSERVATIONS_CHECKS, raw_observations_checks
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.resources import ObjectStoreResource, SimulatedSurveyResource
from astrid_assets.science.frames.files import (
    WCS_PROBLEM_CARD,
    FrameError,
    astropy_warnings_silenced,
    celestial_wcs,
    normalised_cards,
    provenance_cards,
    read_frame,
    to_fits_bytes,
)
from astrid_assets.science.frames.headers import (
    CALIBRATION_KINDS,
    exposure_time,
    header_gain,
    header_read_noise,
    image_type,
    imagetyp_card,
    instrument_key,
    observation_date,
    observation_mjd,
)
from astrid_assets.surveys.base import RawFrame
from astrid_assets.surveys.fits_drop import ASSUMED, fetch_fits_drop
from astrid_assets.surveys.simulated import fetch_simulated


class SkyTarget(Config):
    """A sky position to fetch from an archive (degrees, ICRS)."""

    field: str
    ra: float
    dec: float


class IngestConfig(Config):
    """Where the night's frames come from.

    With nothing set, ``ASTRID_FITS_DROP`` selects a FITS drop folder if it is set, and the
    simulated survey is used otherwise.
    """

    simulated: bool | None = None
    fits_drop: str | None = None
    skyview: list[SkyTarget] = []
    skyview_survey: str = "DSS2 Red"
    mast: list[SkyTarget] = []


def fetch_night(night: str, config: IngestConfig, survey: SimulatedSurveyResource) -> list[RawFrame]:
    """Every frame the configured sources have for ``night``."""
    fits_drop = config.fits_drop or (None if config.skyview or config.mast else settings.fits_drop_root())
    use_simulated = config.simulated if config.simulated is not None else not (
        fits_drop or config.skyview or config.mast
    )
    frames: list[RawFrame] = []
    if use_simulated:
        frames += fetch_simulated(night, survey.config())
    if fits_drop:
        frames += fetch_fits_drop(fits_drop, night)
    for target in config.skyview:
        from astrid_assets.surveys.skyview import fetch_skyview

        frames += fetch_skyview(night, target.field, target.ra, target.dec, survey=config.skyview_survey)
    for target in config.mast:
        from astrid_assets.surveys.mast import fetch_mast

        frames += fetch_mast(night, target.field, target.ra, target.dec)
    return frames


def frame_centre(image, header: fits.Header) -> tuple[float | None, float | None]:
    """ICRS (ra, dec) in degrees of the frame centre from its celestial WCS; (None, None) without one."""
    wcs, _ = celestial_wcs(header, image.shape)
    if wcs is None:
        return None, None
    try:
        with astropy_warnings_silenced():
            centre = wcs.pixel_to_world((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2).icrs
        return float(centre.ra.deg), float(centre.dec.deg)
    except Exception:  # a WCS astropy can build but not place on the sky: treated as absent
        return None, None


def frame_row(raw: RawFrame, image, header: fits.Header, path: str | None) -> dict:
    """The ``raw_observations`` row of an accepted frame.

    Exposure time, observation time, gain and read noise are read through the header helpers
    of :mod:`astrid_assets.science.frames.files` (``EXPTIME``/``EXPOSURE``..., ``MJD-OBS``/``DATE-OBS``/
    ``JD``, ``GAIN``/``EGAIN``/``GAINA``..., ``RDNOISE``/``READNOIS``/``RDNOISEA``...); a value the
    header does not give is null.  ``ra``/``dec`` (frame centre, ICRS) are null without a WCS;
    ``has_wcs`` says whether the frame has a usable celestial WCS and ``wcs_problem`` why a
    malformed one was dropped; ``imagetyp_card`` is the frame-type card as written; ``instrument``
    is the frame's instrument key (``TELESCOP`` / ``INSTRUME``, else the source: see
    :func:`~astrid_assets.science.frames.headers.instrument_key`); ``field_reason`` says how the
    source decided the field (``"header OBJECT"``, a pointing..., ``"assumed: ..."``; null where the
    source does not say).
    """
    kind = image_type(header)
    ra, dec = frame_centre(image, header)
    return {
        "night": raw.night,
        "frame_id": raw.frame_id,
        "field": raw.field,
        "source": raw.source,
        "imagetyp": kind,
        "imagetyp_card": imagetyp_card(header),
        "filter": str(header.get("FILTER", "")).strip() or None,
        "exptime": exposure_time(header),
        "date_obs": observation_date(header),
        "mjd_obs": observation_mjd(header),
        "ra": ra if kind == "object" else None,
        "dec": dec if kind == "object" else None,
        "has_wcs": ra is not None,
        "wcs_problem": header.get(WCS_PROBLEM_CARD),
        "gain": header_gain(header).value,
        "read_noise": header_read_noise(header).value,
        "ny": image.shape[0],
        "nx": image.shape[1],
        "path": path,
        "status": "ok",
        "problem": None,
        "instrument": instrument_key(header, raw.source),
        "field_reason": raw.field_reason or None,
    }


@nightly_asset(
    kinds={"fits", "sql"},
    check_specs=RAW_OBSERVATIONS_CHECKS,
)
def raw_observations(
    context: AssetExecutionContext,
    config: IngestConfig,
    object_store: ObjectStoreResource,
    simulated_survey: SimulatedSurveyResource,
):
    """The night's science and calibration frames, one row per frame, FITS in the object store.

    Every frame is validated (readable FITS, a 2-D numeric image that is not all NaN). A frame
    that fails is quarantined — its file kept under ``quarantine/`` and its row marked
    ``quarantined`` with the problem — and the rest of the night goes on. Science frames without
    a celestial WCS are accepted (``has_wcs`` false: they are registered by star patterns); a
    malformed WCS is dropped and its problem kept in ``wcs_problem``. Frame types follow the
    ``IMAGETYP`` conventions of common acquisition software; frames that are neither science nor
    calibration (focus, test, arc...) keep their row as ``other``. A drop-folder frame without a
    ``FIELD``/``OBJECT`` card is put in a field by its pointing (``field_reason`` says how; a field
    that had to be assumed is logged as a warning and counted in ``fields_assumed``). The stored header gains the
    standard ``EXPTIME``/``MJD-OBS``/``DATE-OBS`` cards where it only had other spellings. A night
    with no frames is an empty partition, not an error.
    """
    store = object_store.open()
    yield from for_each_night(context, lambda night: ingest_night(
        context, night, config, store, simulated_survey), raw_observations_checks)


def ingest_night(
    context: AssetExecutionContext, night: str, config: IngestConfig, store: ObjectStore,
    simulated_survey: SimulatedSurveyResource,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``raw_observations`` rows and metadata."""
    rows, quarantined = [], []
    for raw in fetch_night(night, config, simulated_survey):
        if raw.field_reason.startswith(ASSUMED):
            context.log.warning(f"{raw.frame_id}: field {raw.field!r} {raw.field_reason}")
        try:
            image, header = read_frame(raw.fits_bytes, night, raw.frame_id)
        except FrameError as error:
            context.log.warning(f"quarantined: {error}")
            path = store.put(f"quarantine/raw_observations/{night}/{raw.frame_id}.fits", raw.fits_bytes)
            quarantined.append({"frame_id": raw.frame_id, "problem": error.problem})
            rows.append({
                "night": night, "frame_id": raw.frame_id, "field": raw.field, "source": raw.source,
                "path": path, "status": "quarantined", "problem": error.problem,
                "field_reason": raw.field_reason or None,
            })
            continue
        header.extend(normalised_cards(header), update=True)
        header.extend(provenance_cards("raw_observations", night), update=True)
        with fits.open(io.BytesIO(raw.fits_bytes), memmap=False) as original:
            extras = [hdu.copy() for hdu in original[1:] if isinstance(hdu, fits.BinTableHDU)]
        content = to_fits_bytes([fits.PrimaryHDU(image, header), *extras])
        path = store.put_versioned(f"raw_observations/{night}/{raw.frame_id}.fits", content)
        rows.append(frame_row(raw, image, header, path))
    frame_table = pd.DataFrame(rows, columns=list(schema.raw_observations.c.keys()))
    accepted = frame_table[frame_table.status == "ok"]
    if frame_table.empty:
        context.log.info(f"night {night}: no frames from the configured sources")
    science = accepted[accepted.imagetyp == "object"]
    no_wcs = science[science.ra.isna()] if len(science) else science
    return frame_table, {
        "frames": len(accepted),
        "science_frames": len(science),
        "calibration_frames": int(accepted.imagetyp.isin(CALIBRATION_KINDS).sum()),
        "other_frames": int((accepted.imagetyp == "other").sum()),
        "science_frames_without_wcs": len(no_wcs),
        "frame_types": MetadataValue.json(
            {str(k): int(v) for k, v in accepted.groupby(accepted.imagetyp.fillna("?")).size().items()}
        ),
        "fields": MetadataValue.json(sorted(accepted.field.unique().tolist())),
        "fields_assumed": int(accepted.field_reason.fillna("").str.startswith(ASSUMED).sum()),
        "quarantined": len(quarantined),
        "quarantine": MetadataValue.md(
            "\n".join(f"- `{q['frame_id']}`: {q['problem']}" for q in quarantined) or "none"
        ),
        "sources": MetadataValue.json(sorted(frame_table.source.unique().tolist())),
        "object_store": settings.redact_url(store.url),
    }
