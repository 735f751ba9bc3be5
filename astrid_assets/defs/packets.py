"""``alert_packets`` (one Avro file of packets per night in the object store) and ``notifications`` (notable
transients mailed and posted once per object and filter). The packets are built by :mod:`astrid_assets.packets`,
the notifications by :mod:`astrid_assets.notifications`; these assets read the tables and the store."""

import hashlib
from datetime import date, timedelta

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, Config, MetadataValue

from astrid_assets import settings
from astrid_assets.defs.detection import DetectionConfig, injection_key
from astrid_assets.defs.frames import frame_store, log_failures
from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.io import schema
from astrid_assets.io.arrays import load_arrays
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.notifications import configured_channels, load_filters, notify_night
from astrid_assets.notifications.filters import describe
from astrid_assets.packets import HISTORY_DAYS, SCHEMA_VERSION, packet_bytes, read_packets, write_packets
from astrid_assets.packets.assemble import StoredCutouts, detection_rows, injection_summary, night_packets
from astrid_assets.packets.packets import injection_record
from astrid_assets.pool import FramePool, SerialPool
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.resources.pool import FramePoolResource


def no_checks(nights, rows):
    return iter(())


def _latest_metadata(instance, asset: str, night: str) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[night]), limit=1).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()} if records else {}


def night_injection(instance, store: ObjectStore, night: str) -> dict | None:
    """The ``injection`` record of ``night``: its injection test (``candidate_detections``), the detection
    threshold it ran at, and the completeness at the model's operating point (``scored_detections``)."""
    if not store.exists(injection_key(night)):
        return None
    fakes = load_arrays(store.get(injection_key(night)))
    detected = _latest_metadata(instance, "candidate_detections", night)
    scored = _latest_metadata(instance, "scored_detections", night).get("completeness_at_operating_point") or {}
    at_operating_point = scored.get(night) if isinstance(scored, dict) else None
    threshold = detected.get("threshold_s_corr", DetectionConfig().threshold)
    summary = injection_summary(fakes["snr"], fakes["recovered"], at_operating_point)
    return injection_record(summary, float(threshold))


def _night_minus(night: str, days: float) -> str:
    return str(date.fromisoformat(night) - timedelta(days=int(np.ceil(days))))


def cutouts_one(store_url: str, night: str, frame_id: str, difference_path: str, reference_path: str | None,
                positions: list[tuple[str, float, float]]) -> dict[str, dict[str, bytes | None]]:
    """The science, template and difference cut-outs of each detection ``(candidate_id, x, y)`` of one frame, by
    candidate. A task of the frame pool: keys in, a few kB a detection out."""
    cutter = StoredCutouts(frame_store(store_url).get)
    cards = {"NIGHT": night, "FRAME": frame_id}
    return {candidate: cutter({"x": x, "y": y}, difference_path, reference_path, cards=cards)
            for candidate, x, y in positions}


def packets_night(night: str, detections: pd.DataFrame, objects: pd.DataFrame, store: ObjectStore,
                  database: DatabaseResource, instance, pool: FramePool | None = None,
                  context: AssetExecutionContext | None = None) -> tuple[pd.DataFrame, dict]:
    """One night's packets written to ``alert_packets/<night>/packets.<hash>.avro``; their index rows. The cut-outs
    are made frame by frame in ``pool`` (serial: None); a frame whose cut-outs failed gives packets without them."""
    columns = list(schema.alert_packets.c.keys())
    if detections.empty:
        return pd.DataFrame(columns=columns), {"packets": 0, "note": "no object detections tonight"}
    first = _night_minus(night, HISTORY_DAYS)
    objects_tonight = set(detections.object_id)
    history = database.read_night_range("object_detections", first, _night_minus(night, 1))
    history = history[history.object_id.isin(objects_tonight)]
    nights = sorted({night, *history.night})
    candidates = database.read_nights("candidate_detections", nights)
    scores = database.read_nights("scored_detections", nights)
    frames = database.read_night_range("calibrated_frames", first, night)
    raw = database.read_nights("raw_observations", nights)
    forced = database.read_night_range("forced_photometry", first, night)
    forced = (forced[forced.object_id.isin(objects_tonight)].sort_values("night")
              .drop_duplicates(["object_id", "frame_id"], keep="last"))  # the latest baseline of each epoch
    object_context = database.read_nights("object_context", [night])
    differences = database.read_nights("difference_images", [night]).drop_duplicates("frame_id", keep="last")
    paths = {row.frame_id: (row.path, row.reference_path) for row in differences.itertuples()}
    tonight = detection_rows(detections, candidates, scores, frames, raw)
    tasks = [(store.url, night, frame_id, *paths[frame_id], [(row.candidate_id, row.x, row.y)
                                                            for row in group.itertuples()])
             for frame_id, group in tonight.groupby("frame_id") if paths.get(frame_id, (None, None))[0]]
    outcomes = (pool or SerialPool()).run_frames(cutouts_one, tasks, [f"frame {task[2]}" for task in tasks])
    if context is not None:
        log_failures(context, night, "cut-outs", outcomes)
    made = {candidate: found for outcome in outcomes if outcome.ok for candidate, found in outcome.value.items()}
    none = {"science": None, "template": None, "difference": None}

    packets = night_packets(
        tonight, detection_rows(history, candidates, scores, frames, raw), objects, forced, object_context, frames,
        lambda row: made.get(row["candidate_id"], none), night_injection(instance, store, night))
    content = write_packets(packets, sync_marker=hashlib.md5(f"astrid/{night}".encode()).digest())
    path = store.put_versioned(f"alert_packets/{night}/packets.avro", content)
    sizes = [packet_bytes(packet) for packet in packets]
    table = pd.DataFrame({
        "night": night, "candid": [p["candid"] for p in packets],
        "candidate_id": [p["candidate"]["candidate_id"] for p in packets],
        "object_id": [p["objectId"] for p in packets], "path": path, "schema_version": SCHEMA_VERSION,
        "packet_bytes": sizes, "magpsf": [p["candidate"]["magpsf"] for p in packets],
        "rb": [p["candidate"]["rb"] for p in packets], "rbversion": [p["candidate"]["rbversion"] for p in packets],
    }).reindex(columns=columns)
    metadata = {"packets": len(packets), "objects": int(table.object_id.nunique()), "path": path,
                "file_bytes": len(content), "max_packet_bytes": max(sizes), "schema_version": SCHEMA_VERSION,
                "with_cutouts": sum(p["cutoutDifference"] is not None for p in packets),
                "scored": int(table.rb.notna().sum())}
    return table, metadata


@nightly_asset(kinds={"avro", "sql"}, deps=["candidate_detections", "scored_detections", "object_context"])
def alert_packets(
    context: AssetExecutionContext, object_detections: pd.DataFrame, transient_objects: pd.DataFrame,
    forced_photometry: pd.DataFrame, object_store: ObjectStoreResource, database: DatabaseResource,
    frame_pool: FramePoolResource,
):
    """One Avro alert packet per object detection of the night (schema ``astrid_alert_<version>.avsc``,
    modelled on ZTF 4.02 and Rubin 11.0): the detection with its real probability and the model version that
    gave it, 30 days of history and forced photometry, the object, its catalogue context, gzipped-FITS
    science / template / difference cut-outs with WCS, variance and mask, and the night's injection-recovery
    completeness. One Avro file per night in the object store; one index row per packet."""
    store = object_store.open()
    yield from for_each_night(context, lambda night: packets_night(
        night, night_rows(object_detections, night), night_rows(transient_objects, night), store, database,
        context.instance, frame_pool.open(), context), no_checks,
        upstream={"object_detections": object_detections, "transient_objects": transient_objects,
                  "forced_photometry": forced_photometry}, database=database)


class NotificationsConfig(Config):
    """Which packets are notable and whether to send them; channels come from the environment (settings)."""

    enabled: bool = True  #: the switch (``ASTRID_NOTIFICATIONS=off`` turns them off everywhere too)
    filters_file: str | None = None  #: YAML file of filters (astrid_assets.notifications.filters)
    filters_yaml: str | None = None  #: the same YAML inline; neither: the default filter ``notable``


def notifications_night(night: str, packets_rows: pd.DataFrame, config: NotificationsConfig, store: ObjectStore,
                        database: DatabaseResource, log) -> tuple[pd.DataFrame, dict]:
    filters = load_filters(config.filters_file or config.filters_yaml)
    packets = [packet for path in sorted(set(packets_rows.path)) for packet in read_packets(store.get(path))]
    enabled = config.enabled and settings.notifications_enabled()
    channels = configured_channels() if enabled else []
    table = notify_night(night, packets, filters, channels, database.resolved_url(), enabled=enabled, log=log)
    counts = table.status.value_counts().to_dict() if len(table) else {}
    metadata = {"packets": len(packets), "matched": len(table), **{k: int(v) for k, v in counts.items()},
                "enabled": enabled, "channels": ",".join(repr(c) for c in channels) or "none",
                "filters": MetadataValue.json([describe(f) for f in filters])}
    return table, metadata


@nightly_asset(kinds={"sql"})
def notifications(
    context: AssetExecutionContext, config: NotificationsConfig, alert_packets: pd.DataFrame,
    object_store: ObjectStoreResource, database: DatabaseResource,
):
    """The night's notable transients — packets passing a filter (real probability, magnitude or S/N, not by a
    Gaia star or a known solar-system object, rising) — mailed over SMTP and/or posted to a webhook, each
    (object, filter) once however often the night is re-run (keys in ``notifications_sent``)."""
    store = object_store.open()
    yield from for_each_night(context, lambda night: notifications_night(
        night, night_rows(alert_packets, night), config, store, database, context.log), no_checks,
        upstream={"alert_packets": alert_packets}, database=database)

