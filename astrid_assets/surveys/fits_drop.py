"""A FITS drop folder: ``<root>/<YYYY-MM-DD>/*.fits`` — the night's files as a telescope wrote them.

Headers are read in the conventions of common acquisition software (MaxIm DL, N.I.N.A., IRAF,
SBIG; see :mod:`astrid_assets.science.frames.files`): the frame type from ``IMAGETYP`` words (``Light
Frame``, ``Bias Frame``, ``Dark Frame``, ``Flat Field``, ``LIGHT``, ``zero``, ``object``...), the
exposure from ``EXPTIME`` or ``EXPOSURE``, the time from ``DATE-OBS``, ``MJD-OBS`` or ``JD``, gain,
read noise and saturation from ``GAIN``/``EGAIN``/``GAINA``..., ``RDNOISE``/``READNOIS``/
``RDNOISEA``..., ``SATURATE``/``DATAMAX``/``SATURATA``... — and what is missing is worked out from
the pixels (gain from the sky's variance, saturation from a pile-up or the ADC ceiling) and
recorded as assumed. A WCS is not required (frames without one are registered by star patterns).
Files ending ``.fits``, ``.fit``, ``.fts`` (any case), ``.fits.fz`` or ``.fits.gz`` are read. The
field is read from ``FIELD`` (else ``OBJECT``); files are not validated here — ``raw_observations``
validates every frame the same way whatever its source.
"""

import re
import warnings
from pathlib import Path

from astropy.io import fits

from astrid_assets.surveys.base import RawFrame

SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fits.gz")


def safe_id(text: str) -> str:
    """A path-safe identifier: letters, digits, ``-``, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "frame"


def _field_of(path: Path) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path)
        return safe_id(str(header.get("FIELD") or header.get("OBJECT") or "drop"))
    except Exception:  # unreadable: raw_observations quarantines it with the precise reason
        return "unknown"


def fetch_fits_drop(root: str | Path, night: str) -> list[RawFrame]:
    """Every FITS file in ``<root>/<night>/``, sorted by name; ``[]`` if the folder is absent."""
    folder = Path(root) / night
    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))
    return [
        RawFrame(
            frame_id=safe_id(f"{night.replace('-', '')}-{path.name.split('.')[0]}"),
            night=night,
            field=_field_of(path),
            source="fits_drop",
            fits_bytes=path.read_bytes(),
        )
        for path in paths
    ]
