"""Frame assembly: the simulator's entry points.

:func:`simulate_frame` (one science frame), :func:`simulate_calibrations` (a night's biases,
darks and flats) and :func:`simulate_night` (both), each a :class:`SimulatedFrame` in raw ADU
with its truth table (fluxes in e- at unit response).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from astrid_assets.testing.simulate.catalogues import _place, field_center, make_wcs
from astrid_assets.testing.simulate.ccd import Detector, detector
from astrid_assets.testing.simulate.config import (
    _DEFAULT_CONFIG,
    TRUTH_COLUMNS,
    SimulatedFrame,
    SurveyConfig,
    _Conditions,
    _draw_conditions,
)
from astrid_assets.testing.simulate.conventions import (
    _midnight,
    _seed_sequence,
    exposure_start,
    flux_to_mag,
    night_date,
    sky_rate,
)
from astrid_assets.testing.simulate.headers import _base_header, _science_header
from astrid_assets.testing.simulate.readout import _cosmic_ray_charge, _readout, bleed
from astrid_assets.testing.simulate.rendering import _render_galaxies, _render_point_sources
from astrid_assets.testing.simulate.transients import sources_at


def _frame_wcs(field: str, conditions: _Conditions, config: SurveyConfig) -> WCS:
    ra, dec = field_center(field, config)
    ra += conditions.jitter[0] / 3600.0 / np.cos(np.deg2rad(dec))
    dec += conditions.jitter[1] / 3600.0
    return make_wcs((ra, dec), config, conditions.rotation_deg)


def _night_label(night: str | dt.date) -> str:
    return f"{night_date(night):%Y%m%d}"


def _empty_truth() -> pd.DataFrame:
    return pd.DataFrame(
        {column: pd.Series(dtype="object" if column in ("source_id", "kind") else float) for column in TRUTH_COLUMNS}
    )


def simulate_frame(
    field: str = "F01",
    night: str | dt.date = "2024-01-01",
    index: int = 0,
    config: SurveyConfig = _DEFAULT_CONFIG,
    *,
    seeing: float | None = None,
    sources: pd.DataFrame | None = None,
    flat_field: bool = True,
    cosmic_rays: bool = True,
    defects: bool = True,
    trail_arcsec: float = 0.0,
    trail_angle_deg: float = 0.0,
) -> SimulatedFrame:
    """Simulate science frame ``index`` (0-based) of ``field`` on ``night``.

    Switches for tests: ``seeing`` (arcsec FWHM, default drawn from ``seeing_range``);
    ``sources`` (default: the field's sky at this epoch; otherwise a table with ``x, y``
    in 0-based pixels — see :func:`point_sources` — or ``ra, dec`` in degrees, and
    ``flux`` in e-; rows of kind ``galaxy`` also need the shape columns of
    :func:`sky_catalogue`; an empty table gives blank sky); ``flat_field=False`` gives unit
    response; ``cosmic_rays=False``; ``defects=False`` removes bad columns and hot pixels;
    ``trail_arcsec``/``trail_angle_deg`` smear every source along a line (tracking error,
    angle counter-clockwise from +x).  Conditions (seeing, pointing, sky) and noise use
    separate random streams, so a switch does not change the other draws.

    Parameters
    ----------
    field : str, default "F01"
        Field name.
    night : str or datetime.date, default "2024-01-01"
        Observing night (UTC date).
    index : int, default 0
        0-based science frame index within the night.
    config : SurveyConfig, default SurveyConfig()
        The survey.
    seeing : float or None, default None
        Seeing FWHM (before pixelisation), arcsec; None draws it from ``seeing_range``.
    sources : pandas.DataFrame or None, default None
        Source table (see above); None: :func:`sources_at` for this exposure.
    flat_field : bool, default True
        Apply the detector's flat response (False: unit response).
    cosmic_rays : bool, default True
        Add cosmic rays.
    defects : bool, default True
        Include bad columns and hot pixels.
    trail_arcsec : float, default 0.0
        Length of the tracking trail, arcsec.
    trail_angle_deg : float, default 0.0
        Its direction, deg counter-clockwise from +x.

    Returns
    -------
    SimulatedFrame
        Raw frame (ADU) with header, truth of the sources whose centres lie on the detector,
        cosmic-ray and saturation masks.
    """
    date = night_date(night)
    streams = _seed_sequence(config.seed, "frame", field, date.toordinal(), index).spawn(4)
    condition_rng, photon_rng, read_rng, cosmic_rng = (np.random.default_rng(s) for s in streams)
    conditions = _draw_conditions(condition_rng, config)
    if seeing is not None:
        conditions = _Conditions(float(seeing), conditions.sky_mag, conditions.jitter, conditions.rotation_deg)
    start = exposure_start(field, date, index, config)
    wcs = _frame_wcs(field, conditions, config)
    fwhm_px = conditions.seeing / config.pixel_scale
    trail_px = (
        trail_arcsec / config.pixel_scale * float(np.cos(np.deg2rad(trail_angle_deg))),
        trail_arcsec / config.pixel_scale * float(np.sin(np.deg2rad(trail_angle_deg))),
    )
    catalogue = sources_at(field, date, start, config) if sources is None else sources
    table = _place(catalogue, wcs, trail_px, config)
    ny, nx = config.shape
    reach = 60
    table = table[(table.x > -reach) & (table.x < nx + reach) & (table.y > -reach) & (table.y < ny + reach)]
    table = table.reset_index(drop=True)

    det = detector(config, defects)
    response = det.flat if flat_field else np.ones(config.shape)
    sky_electrons = sky_rate(conditions.sky_mag, config) * config.exptime
    col = np.clip(np.floor(table.x.to_numpy() + 0.5).astype(int), 0, nx - 1)
    row = np.clip(np.floor(table.y.to_numpy() + 0.5).astype(int), 0, ny - 1)
    local_response = response[row, col]
    local_background = local_response * sky_electrons + det.dark[row, col] * config.exptime + config.read_noise**2
    source_image = np.zeros(config.shape)
    is_galaxy = (table.kind == "galaxy").to_numpy()
    snr = np.zeros(len(table))
    snr[~is_galaxy] = _render_point_sources(
        source_image,
        table[~is_galaxy],
        fwhm_px,
        local_response[~is_galaxy],
        local_background[~is_galaxy],
        config,
    )
    snr[is_galaxy] = _render_galaxies(
        source_image,
        table[is_galaxy],
        fwhm_px,
        conditions.rotation_deg,
        trail_px,
        local_response[is_galaxy],
        local_background[is_galaxy],
        config,
    )

    expected = response * (sky_electrons + source_image) + det.dark * config.exptime
    electrons = photon_rng.poisson(expected).astype(float)
    cr_charge = (
        _cosmic_ray_charge(cosmic_rng, config.shape, config.exptime, config) if cosmic_rays else np.zeros(config.shape)
    )
    electrons += cr_charge
    bled = bleed(electrons, config.full_well)
    raw = _readout(electrons, read_rng, det, config)

    truth = _truth(table.assign(snr=snr), config)
    header = _science_header(config, start, field, conditions, wcs, sky_electrons, trail_arcsec)
    frame_id = f"{field}-{_night_label(date)}-s{index + 1:03d}"
    header["FRAMEID"] = (frame_id, "unique frame identifier")
    return SimulatedFrame(
        frame_id=frame_id,
        field=field,
        header=header,
        data=raw,
        truth=truth,
        cosmic_rays=cr_charge > 0,
        saturated=(raw >= config.saturate) | bled,
        cosmic_ray_electrons=cr_charge.astype(np.float32),
    )


def _truth(table: pd.DataFrame, config: SurveyConfig) -> pd.DataFrame:
    """Truth rows for the sources whose centres fall on the detector."""
    ny, nx = config.shape
    x, y = table.x.to_numpy(), table.y.to_numpy()
    rows = table[(x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)]
    if rows.empty:
        return _empty_truth()
    flux = rows.flux.to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "source_id": rows.source_id.to_numpy(),
            "kind": rows.kind.to_numpy(),
            "ra": rows.ra.to_numpy(dtype=float),
            "dec": rows.dec.to_numpy(dtype=float),
            "x": rows.x.to_numpy(dtype=float),
            "y": rows.y.to_numpy(dtype=float),
            "flux": flux,
            "flux_baseline": rows.flux_baseline.to_numpy(dtype=float),
            "mag": flux_to_mag(flux, config.exptime, config.zero_point),
            "snr": rows.snr.to_numpy(dtype=float),
        }
    )


def _calibration_frame(kind: str, number: int, date: dt.date, config: SurveyConfig, det: Detector) -> SimulatedFrame:
    exptime = {"bias": 0.0, "dark": config.dark_exptime, "flat": config.flat_exptime}[kind]
    streams = _seed_sequence(config.seed, "calibration", kind, date.toordinal(), number).spawn(4)
    level_rng, photon_rng, read_rng, cosmic_rng = (np.random.default_rng(s) for s in streams)
    expected = det.dark * exptime
    if kind == "flat":
        expected = expected + det.flat * config.flat_level * level_rng.uniform(0.8, 1.2)
    electrons = photon_rng.poisson(expected).astype(float)
    cr_charge = _cosmic_ray_charge(cosmic_rng, config.shape, exptime, config)
    electrons += cr_charge
    bled = bleed(electrons, config.full_well)
    raw = _readout(electrons, read_rng, det, config)
    offset = {"bias": 0, "dark": 10, "flat": 30}[kind]
    start = _midnight(date) + dt.timedelta(minutes=offset + 2 * number)
    header = _base_header(config, start, exptime, kind, "CAL")
    frame_id = f"CAL-{_night_label(date)}-{kind}{number + 1:02d}"
    header["FRAMEID"] = (frame_id, "unique frame identifier")
    return SimulatedFrame(
        frame_id=frame_id,
        field="CAL",
        header=header,
        data=raw,
        truth=_empty_truth(),
        cosmic_rays=cr_charge > 0,
        saturated=(raw >= config.saturate) | bled,
        cosmic_ray_electrons=cr_charge.astype(np.float32),
    )


def simulate_calibrations(night: str | dt.date, config: SurveyConfig = _DEFAULT_CONFIG) -> list[SimulatedFrame]:
    """The night's ``n_bias`` biases, ``n_dark`` darks (``dark_exptime``) and ``n_flat``
    twilight flats (``flat_level`` e- x 0.8-1.2, with the detector's flat response).

    Parameters
    ----------
    night : str or datetime.date
        Observing night (UTC date).
    config : SurveyConfig, default SurveyConfig()
        The survey.

    Returns
    -------
    list of SimulatedFrame
        Biases, then darks, then flats (field ``"CAL"``, empty truth), raw ADU.
    """
    date = night_date(night)
    det = detector(config)
    counts = {"bias": config.n_bias, "dark": config.n_dark, "flat": config.n_flat}
    return [_calibration_frame(kind, number, date, config, det) for kind, n in counts.items() for number in range(n)]


def simulate_night(night: str | dt.date, config: SurveyConfig = _DEFAULT_CONFIG) -> list[SimulatedFrame]:
    """All frames of one night: the shared calibration frames, then ``frames_per_night``
    science frames of every field in ``config.fields`` order.

    Parameters
    ----------
    night : str or datetime.date
        Observing night (UTC date).
    config : SurveyConfig, default SurveyConfig()
        The survey.

    Returns
    -------
    list of SimulatedFrame
        Calibration frames, then science frames.
    """
    frames = simulate_calibrations(night, config)
    for field in config.fields:
        frames.extend(simulate_frame(field, night, index, config) for index in range(config.frames_per_night))
    return frames
