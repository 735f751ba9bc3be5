"""What every survey source hands to ``raw_observations``: FITS files as fetched."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RawFrame:
    """One FITS file fetched for a night, before any validation.

    ``fits_bytes`` is the file exactly as the source delivered it, so that a truncated or
    unreadable file is reported by the same validation code whatever its source.
    """

    frame_id: str  #: unique across the survey, e.g. ``"F01-20240102-s001"``; safe in a path
    night: str  #: observing night, UTC date ``YYYY-MM-DD``
    field: str  #: sky field (pointing) name
    source: str  #: ``"simulated"``, ``"fits_drop"``, ``"skyview"`` or ``"mast"``
    fits_bytes: bytes
    #: how ``field`` was decided, e.g. ``"header OBJECT"``; starts ``"assumed:"`` when it was assumed
    field_reason: str = ""
