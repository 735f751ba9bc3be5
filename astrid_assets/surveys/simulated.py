"""The simulated survey as a source: the offline default for demos and end-to-end tests.

Each science frame's FITS carries its truth catalogue (what was injected, with expected S/N) as a
``TRUTH`` binary-table extension, so later steps (completeness, the simulated curator) read the
truth from the stored file instead of re-simulating.
"""

import io

from astropy.io import fits
from astropy.table import Table

from astrid_assets.science.simulate import SimulatedFrame, SurveyConfig, simulate_night
from astrid_assets.surveys.base import RawFrame

TRUTH_EXTENSION = "TRUTH"


def frame_fits_bytes(frame: SimulatedFrame) -> bytes:
    """The frame as a FITS file: raw image in the primary HDU, truth catalogue in ``TRUTH``."""
    hdus = frame.to_hdulist()
    if len(frame.truth):
        truth = fits.BinTableHDU(Table.from_pandas(frame.truth.reset_index(drop=True)))
        truth.name = TRUTH_EXTENSION
        hdus.append(truth)
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


def fetch_simulated(night: str, config: SurveyConfig) -> list[RawFrame]:
    """The night's simulated calibration and science frames."""
    return [
        RawFrame(
            frame_id=frame.frame_id,
            night=night,
            field=frame.field,
            source="simulated",
            fits_bytes=frame_fits_bytes(frame),
        )
        for frame in simulate_night(night, config)
    ]


def read_truth(fits_bytes: bytes):
    """The ``TRUTH`` catalogue of a simulated frame as a DataFrame (empty if it has none)."""
    import pandas as pd

    with fits.open(io.BytesIO(fits_bytes), memmap=False) as hdus:
        if TRUTH_EXTENSION not in hdus:
            return pd.DataFrame()
        return Table(hdus[TRUTH_EXTENSION].data).to_pandas()
