"""Alert packets: versioned Avro records of detections (schema in ``schema/``), their cut-outs, and a night's
packets assembled from AstrID's tables. No Dagster import; the asset is :mod:`astrid_assets.defs.packets`."""

from astrid_assets.packets.cutouts import STAMP_SIZE, cutout_fits, read_cutout
from astrid_assets.packets.packets import (
    HISTORY_DAYS,
    SCHEMA_VERSION,
    build_packet,
    candid_of,
    load_schema,
    packet_bytes,
    read_packets,
    readable_by,
    schema_versions,
    write_packets,
)

__all__ = [
    "HISTORY_DAYS", "SCHEMA_VERSION", "STAMP_SIZE", "build_packet", "candid_of", "cutout_fits", "load_schema",
    "packet_bytes", "read_cutout", "read_packets", "readable_by", "schema_versions", "write_packets",
]
