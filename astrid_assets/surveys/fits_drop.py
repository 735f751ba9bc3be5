"""A FITS drop folder: ``<root>/<YYYY-MM-DD>/*.fits`` — the night's files as a telescope wrote them.

Headers are read in the conventions of common acquisition software (MaxIm DL, N.I.N.A., IRAF,
SBIG; see :mod:`astrid_assets.science.frames.files`): the frame type from ``IMAGETYP`` words (``Light
Frame``, ``Bias Frame``, ``Dark Frame``, ``Flat Field``, ``LIGHT``, ``zero``, ``object``...), the
exposure from ``EXPTIME`` or ``EXPOSURE``, the time from ``DATE-OBS``, ``MJD-OBS`` or ``JD``, gain,
read noise and saturation from ``GAIN``/``EGAIN``/``GAINA``..., ``RDNOISE``/``READNOIS``/
``RDNOISEA``..., ``SATURATE``/``DATAMAX``/``SATURATA``... — and what is missing is worked out from
the pixels (gain from the sky's variance, saturation from a pile-up or the ADC ceiling) and
recorded as assumed. A WCS is not required (frames without one are registered by star patterns).
Files ending ``.fits``, ``.fit``, ``.fts`` (any case), ``.fits.fz`` or ``.fits.gz`` are read; files
are not validated here — ``raw_observations`` validates every frame the same way whatever its source.

The field of a frame (:func:`frame_fields`), with the reason recorded in ``RawFrame.field_reason``:

* ``FIELD``, else ``OBJECT``, as written (made path-safe);
* a science frame without either: its pointing (WCS centre, else ``RA``/``DEC``,
  ``OBJCTRA``/``OBJCTDEC``, ``TELRA``/``TELDEC``... cards), grouped with the frames pointing within
  a quarter of the frame's width and named after the pointing (``P123.46+45.61``), see
  :mod:`astrid_assets.science.frames.pointing`. The earlier nights of the drop folder are read
  first (headers only, oldest first), so a later night at (nearly) the same pointing gets the same
  field id as the first night that saw it;
* a calibration or other frame without either: ``drop`` (calibration frames are matched by type,
  not by field);
* a science frame with no pointing at all: grouped by its **star pattern** with the frames whose
  stars it matches (any night, any dither or rotation) and named ``S-<file stem of the group's first
  frame>``, see :mod:`astrid_assets.science.frames.star_fields`;
* a science frame with no pointing and fewer than three stars: ``drop``, the one field of the folder's
  unplaced frames — an assumption (the frames may be of several targets), said so in the reason.
"""

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from astropy.io import fits

from astrid_assets.science.frames.headers import image_type
from astrid_assets.science.frames.pointing import Pointing, group_pointings, header_pointing
from astrid_assets.science.frames.star_fields import StarFieldGroups
from astrid_assets.surveys.base import RawFrame

SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fits.gz")
_NIGHT = re.compile(r"\d{4}-\d{2}-\d{2}")


def safe_id(text: str) -> str:
    """A path-safe identifier: letters, digits, ``-``, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "frame"


#: Field of the frames that are not placed on the sky (no FIELD/OBJECT card, no pointing or not science).
UNPLACED_FIELD = "drop"
#: Start of the reason of a field that was assumed, not read or worked out.
ASSUMED = "assumed:"
#: Control stars of the drop folder's files without a field card or pointing, by file version: a range run
#: reads earlier nights again for every night, and measures each file once.
_STARS_MEASURED: dict = {}


def _image_header(path: Path) -> fits.Header:
    """The header of the file's image: the primary HDU's, or the first extension's when the primary
    holds no data (a tile-compressed ``.fits.fz``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=False) as hdus:
            header = hdus[0].header
            if not header.get("NAXIS") and len(hdus) > 1 and hdus[1].header.get("NAXIS"):
                merged = header.copy()
                merged.extend(hdus[1].header, update=True)
                return merged
            return header.copy()


def frame_fields(paths: list[Path], known: Iterable[str] = (), star_groups: StarFieldGroups | None = None
                 ) -> list[tuple[str, str]]:
    """Field id and the reason for it, for each file of one night (see the module's description).

    Parameters
    ----------
    paths : list of pathlib.Path
        The night's files, in a stable order (by name): the first frame of a pointing names its field.
    known : iterable of str
        Field ids of earlier nights; a pointing within the grouping radius of one keeps its name.
    star_groups : StarFieldGroups or None, default None
        The star-pattern groups of earlier nights (updated): a science frame without a field card or
        pointing joins the group whose stars it matches, or founds one
        (:mod:`~astrid_assets.science.frames.star_fields`). None: such frames go to ``drop``.

    Returns
    -------
    list of (str, str)
        ``(field, reason)`` per file; ``("unknown", ...)`` for an unreadable file (quarantined
        later by ``raw_observations``).
    """
    decided: list[tuple[str, str] | None] = []
    placed: list[tuple[int, Pointing]] = []
    for index, path in enumerate(paths):
        try:
            header = _image_header(path)
        except Exception:  # unreadable: raw_observations quarantines it with the precise reason
            decided.append(("unknown", "unreadable header"))
            continue
        for key in ("FIELD", "OBJECT"):
            value = header.get(key)
            if value is not None and not isinstance(value, bool) and str(value).strip():
                decided.append((safe_id(str(value).strip()), f"header {key}"))
                break
        else:
            kind = image_type(header)
            pointing = header_pointing(header) if kind == "object" else None
            if kind != "object":
                decided.append((UNPLACED_FIELD, f"{kind} frame without FIELD/OBJECT: not a sky field"))
            elif pointing is None:
                by_stars = star_groups.assign(path) if star_groups is not None else None
                decided.append(by_stars or (
                    UNPLACED_FIELD, f"{ASSUMED} no FIELD/OBJECT card, no pointing (no WCS, no RA/DEC cards) and too "
                                    f"few stars to match: put with every unplaced frame of the drop folder"))
            else:
                decided.append(None)
                placed.append((index, pointing))
    for (index, _), named in zip(placed, group_pointings([p for _, p in placed], known), strict=True):
        decided[index] = named
    return [entry for entry in decided if entry is not None]


def _paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))


def known_fields(root: str | Path, night: str, star_groups: StarFieldGroups | None = None) -> list[str]:
    """Field ids given to the drop folder's nights before ``night``, oldest night first.

    Parameters
    ----------
    root : str or pathlib.Path
        The drop folder.
    night : str
        ``YYYY-MM-DD``; only the folders of earlier nights are read (headers only, and the pixels of
        frames without a field card or pointing when ``star_groups`` is given).
    star_groups : StarFieldGroups or None, default None
        Filled with the star-pattern groups of those nights.

    Returns
    -------
    list of str
        Distinct field ids in the order they were first given.
    """
    known: dict[str, None] = {}
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and _NIGHT.fullmatch(p.name) and p.name < night)
    for folder in folders:
        for field, _ in frame_fields(_paths(folder), known, star_groups):
            known.setdefault(field, None)
    return list(known)


def fetch_fits_drop(root: str | Path, night: str, known: Iterable[str] = ()) -> list[RawFrame]:
    """Every FITS file in ``<root>/<night>/``, sorted by name; ``[]`` if the folder is absent.

    Each frame's field is decided by :func:`frame_fields`, matching pointings against the fields of
    the folder's earlier nights (:func:`known_fields`) and ``known`` (field ids from elsewhere, e.g.
    earlier ``raw_observations`` rows; matched first).
    """
    folder = Path(root) / night
    if not folder.is_dir():
        return []
    paths = _paths(folder)
    groups = StarFieldGroups(cache=_STARS_MEASURED)
    fields = frame_fields(paths, [*known, *known_fields(root, night, groups)], groups)
    return [
        RawFrame(
            frame_id=safe_id(f"{night.replace('-', '')}-{path.name.split('.')[0]}"),
            night=night,
            field=field,
            source="fits_drop",
            fits_bytes=path.read_bytes(),
            field_reason=reason,
        )
        for path, (field, reason) in zip(paths, fields, strict=True)
    ]
