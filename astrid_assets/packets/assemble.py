"""A night's alert packets from AstrID's tables: the joins that turn rows into packets, and the cut-outs
cut from the stored difference and reference FITS files. No Dagster: the asset
(:mod:`astrid_assets.defs.packets`) reads the tables and the store and calls :func:`night_packets`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pandas as pd

from astrid_assets.packets.cutouts import cutout_fits
from astrid_assets.packets.packets import SCHEMA_VERSION, build_packet
from astrid_assets.science.frames.files import image_sections
from astrid_assets.science.injection.inject import summarise_completeness

__all__ = ["StoredCutouts", "injection_summary", "night_packets"]

#: Largest PSF stamp carried in a difference cut-out, px (a larger one is cropped about its centre).
MAX_PSF_SIZE = 31


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def detection_rows(
    detections: pd.DataFrame, candidates: pd.DataFrame, scores: pd.DataFrame, frames: pd.DataFrame,
    instruments: pd.DataFrame,
) -> pd.DataFrame:
    """``object_detections`` rows joined with their candidate's measurements, score and frame.

    Parameters
    ----------
    detections : pandas.DataFrame
        ``object_detections`` rows (``candidate_id``, ``object_id``, ``frame_id``, ``field``, ``mjd_obs``, …).
    candidates : pandas.DataFrame
        ``candidate_detections`` rows of the same nights (x, y on the reference grid, flux, sign, …).
    scores : pandas.DataFrame
        ``scored_detections`` rows (``real_probability``, ``model_version``, ``real``); may be empty.
    frames : pandas.DataFrame
        ``calibrated_frames`` rows (``frame_id``, ``filter``, ``zero_point``, ``exptime``, ``mjd_obs``).
    instruments : pandas.DataFrame
        ``raw_observations`` rows (``frame_id``, ``instrument``); may be empty.
    """
    measured = candidates.drop(columns=["night", "frame_id", "field", "ra", "dec"], errors="ignore")
    score_columns = ["candidate_id", "real_probability", "model_version", "real"]
    # the candidate's own measurements (x, y on the reference grid) and the score of record win
    replaced = (set(measured.columns) | set(score_columns)) - {"candidate_id"}
    rows = detections.drop(columns=sorted(replaced), errors="ignore").merge(measured, on="candidate_id", how="left")
    rows = rows.merge(scores.reindex(columns=score_columns).drop_duplicates("candidate_id"), on="candidate_id",
                      how="left")
    frame_columns = ["frame_id", "filter", "zero_point", "exptime", "mjd_obs"]
    frame_info = frames.reindex(columns=frame_columns).drop_duplicates("frame_id")
    rows = rows.drop(columns=["mjd_obs"], errors="ignore").merge(frame_info, on="frame_id", how="left")
    if "mjd_obs" in detections and rows.mjd_obs.isna().any():
        rows["mjd_obs"] = rows.mjd_obs.fillna(detections.set_index("candidate_id").mjd_obs.reindex(
            rows.candidate_id).reset_index(drop=True))
    instrument = instruments.reindex(columns=["frame_id", "instrument"]).drop_duplicates("frame_id")
    return rows.merge(instrument, on="frame_id", how="left")


def injection_summary(snr: np.ndarray, recovered: np.ndarray, at_operating_point: float | None = None) -> dict:
    """A night's injection summary for the packet: ``fakes``, ``completeness_snr_ge_10``, ``snr_50`` (from
    :func:`~astrid_assets.science.injection.inject.summarise_completeness`) and, where the night was scored,
    ``completeness_at_operating_point`` (fakes of S/N ≥ 6 detected and called real)."""
    summary = summarise_completeness(np.asarray(snr, float), np.asarray(recovered, bool))
    return {"fakes": int(np.size(snr)), "completeness_snr_ge_10": summary["completeness_snr_ge_10"],
            "snr_50": summary["snr_50"], "completeness_at_operating_point": at_operating_point}


class StoredCutouts:
    """Science, template and difference cut-outs of detections, cut from the stored FITS files.

    ``get`` reads an object-store key. The difference file (``DIFF``, ``VARIANCE``, ``MASK``, ``NEW``, ``PSF``)
    gives the science cut-out (``NEW``, the new frame on the reference grid, with the mask) and the difference
    cut-out (with its variance, mask and PSF); the reference file (``REF``, ``VARIANCE``, ``MASK``) the
    template cut-out. Only the windows cut are decoded (:func:`~astrid_assets.science.frames.files.image_sections`);
    the last ``keep`` files read are kept in memory (detections come frame by frame).
    """

    def __init__(self, get: Callable[[str], bytes], keep: int = 4):
        self.get = get
        self.keep = keep
        self._files: OrderedDict[str, dict] = OrderedDict()

    def _extensions(self, key: str) -> dict:
        if key not in self._files:
            self._files[key] = image_sections(self.get(key))
            while len(self._files) > self.keep:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        return self._files[key]

    def __call__(self, row: dict, difference_path: str | None, reference_path: str | None,
                 cards: dict | None = None) -> dict[str, bytes | None]:
        """The three cut-outs of a detection at ``row['x']``, ``row['y']`` (px on the reference grid)."""
        x, y = row.get("x"), row.get("y")
        found: dict[str, bytes | None] = {"science": None, "template": None, "difference": None}
        if x is None or y is None or not difference_path:
            return found
        extensions = self._extensions(difference_path)
        diff, header = extensions["DIFF"]
        mask = extensions["MASK"][0]
        psf = extensions["PSF"][0][...] if "PSF" in extensions else None
        if psf is not None and psf.shape[0] > MAX_PSF_SIZE:
            cut = (psf.shape[0] - MAX_PSF_SIZE) // 2
            psf = psf[cut:cut + MAX_PSF_SIZE, cut:cut + MAX_PSF_SIZE]
        card = {"FLUXRAT": header.get("FLUXRAT"), "METHOD": header.get("METHOD"), **(cards or {})}
        card = {key: value for key, value in card.items() if value is not None}
        found["science"] = cutout_fits(extensions["NEW"][0], x, y, header, mask=mask, cards=card)
        found["difference"] = cutout_fits(diff, x, y, header, variance=extensions["VARIANCE"][0], mask=mask,
                                          psf=psf, cards=card)
        if reference_path:
            reference = self._extensions(reference_path)
            image, ref_header = reference["REF"]
            found["template"] = cutout_fits(image, x, y, ref_header, variance=reference["VARIANCE"][0],
                                            mask=reference["MASK"][0], cards=card)
        return found


def night_packets(
    night_rows: pd.DataFrame, history_rows: pd.DataFrame, objects: pd.DataFrame, forced: pd.DataFrame,
    context: pd.DataFrame, frames: pd.DataFrame, cutouts: Callable[[dict], dict[str, bytes | None]],
    injection: dict | None, version: str = SCHEMA_VERSION,
) -> list[dict]:
    """The night's packets, one per object detection, in detection order (MJD, then candidate id).

    Parameters
    ----------
    night_rows : pandas.DataFrame
        The night's detections as :func:`detection_rows` joins them.
    history_rows : pandas.DataFrame
        The same for the detections of the :data:`~astrid_assets.packets.packets.HISTORY_DAYS` before
        (any night; the night's own earlier detections come from ``night_rows``).
    objects, forced, context : pandas.DataFrame
        ``transient_objects`` (the night's), ``forced_photometry`` (the window's) and ``object_context`` rows.
    frames : pandas.DataFrame
        ``calibrated_frames`` rows of the window (zero point and exposure time of the forced photometry).
    cutouts : callable
        ``row -> {"science": bytes, "template": bytes, "difference": bytes}`` (e.g. a :class:`StoredCutouts`
        bound to the night's difference paths).
    injection : dict or None
        :func:`~astrid_assets.packets.packets.injection_record` of the night.
    """
    if night_rows.empty:
        return []
    object_of = {row["object_id"]: row for row in _records(objects.drop_duplicates("object_id", keep="last"))}
    context_of = {row["object_id"]: row for row in _records(context.drop_duplicates("object_id", keep="last"))}
    frame_info = frames.reindex(columns=["frame_id", "zero_point", "exptime", "filter"]).drop_duplicates("frame_id")
    photometry = forced.drop(columns=["filter"], errors="ignore") if "filter" in frame_info else forced
    photometry = photometry.merge(frame_info, on="frame_id", how="left")
    limits = {(r["object_id"], r["frame_id"]): r.get("maglim_5sigma") for r in _records(photometry)}
    forced_of: dict[str, list[dict]] = {}
    for row in _records(photometry):
        forced_of.setdefault(row["object_id"], []).append(row)
    everything = pd.concat([frame for frame in (history_rows, night_rows) if len(frame)], ignore_index=True)
    history_of: dict[str, list[dict]] = {}
    for row in _records(everything):
        history_of.setdefault(row["object_id"], []).append(row)
    packets = []
    for row in _records(night_rows.sort_values(["mjd_obs", "candidate_id"], na_position="last")):
        object_id = row["object_id"]
        obj, ctx = object_of.get(object_id), context_of.get(object_id)
        detection = dict(row)
        if limits.get((object_id, row["frame_id"])) is not None:
            detection["diffmaglim"] = limits[(object_id, row["frame_id"])]
        packets.append(build_packet(detection, history_of.get(object_id, []), forced_of.get(object_id, []), obj, ctx,
                                    cutouts(row), injection, version))
    return packets
