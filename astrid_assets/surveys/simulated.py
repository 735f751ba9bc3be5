"""The simulated survey as a source: the offline default for demos and end-to-end tests.

Each science frame's FITS carries its truth catalogue (what was injected, with expected S/N) as a
``TRUTH`` binary-table extension, so later steps (completeness, the simulated curator) read the
truth from the stored file instead of re-simulating.
"""

import io

from astropy.io import fits
from astropy.table import Table

from astrid_assets.surveys.base import RawFrame
from astrid_assets.testing.simulate import SimulatedFrame, SurveyConfig, simulate_night

TRUTH_EXTENSION = "TRUTH"
#: The demo's window of nights: the simulated survey's first week (its transients start on night 6).
DEMO_NIGHTS = ("2024-01-01", "2024-01-07")


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


def night_truth(raw_frames, store):
    """Truth catalogues of a night's simulated science frames, with a ``frame_id`` column.

    ``raw_frames`` are ``raw_observations`` rows; ``store`` the object store holding their files.
    """
    import pandas as pd

    simulated = raw_frames[(raw_frames.source == "simulated") & (raw_frames.imagetyp == "object")
                           & (raw_frames.status == "ok")]
    catalogues = [read_truth(store.get(row.path)).assign(frame_id=row.frame_id) for row in simulated.itertuples()]
    return pd.concat(catalogues, ignore_index=True) if catalogues else pd.DataFrame()
