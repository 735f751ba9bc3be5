"""The fixed detector signature of the survey (the same in every frame of a seed).

:class:`Detector` and :func:`detector`: bias structure (ADU), flat-field response
(vignetting x PRNU x bad-column response, median 1), dark current (e- / s / pixel, with a
hot column and hot pixels) and the map of defective pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from astrid_assets.testing.simulate.config import SurveyConfig
from astrid_assets.testing.simulate.conventions import _seed_sequence


@dataclass(frozen=True)
class Detector:
    """The fixed detector signature (same for every frame of a survey seed).

    ``bias`` ADU; ``flat`` response (vignetting x PRNU x column response) normalised to a
    median of 1, which defines "unit response" for fluxes and ``MAGZP``; ``dark``
    e-/s/pixel; ``bad_columns`` maps ``'dead'``, ``'low'``, ``'hot'`` to column indices
    (the hot column runs from row ``hot_column_start`` to the top);
    ``defects`` is the boolean map of all defective pixels (bad columns and hot pixels).

    Attributes
    ----------
    bias : numpy.ndarray
        Bias level with column and row structure, ADU, ``[y, x]``.
    flat : numpy.ndarray
        Flat-field response, dimensionless, median 1.
    dark : numpy.ndarray
        Dark current, e- / s / pixel.
    bad_columns : dict of str to tuple of int
        ``'dead'``, ``'low'``, ``'hot'`` → 0-based column indices.
    hot_column_start : int
        First (0-based) row of the hot column.
    hot_pixels : tuple of numpy.ndarray
        ``(rows, columns)`` of the hot pixels, 0-based.
    defects : numpy.ndarray of bool
        All defective pixels (all False with ``defects=False``).
    """

    bias: np.ndarray
    flat: np.ndarray
    dark: np.ndarray
    bad_columns: dict[str, tuple[int, ...]]
    hot_column_start: int
    hot_pixels: tuple[np.ndarray, np.ndarray]
    defects: np.ndarray


@lru_cache(maxsize=8)
def detector(config: SurveyConfig, defects: bool = True) -> Detector:
    """The detector of the survey (deterministic from ``config.seed``).  Arrays are read-only.

    With ``defects=False`` the bad columns and hot pixels are left out (bias, vignetting and
    PRNU stay the same).  Cached per ``(config, defects)``.

    Parameters
    ----------
    config : SurveyConfig
        The survey (``seed``, ``shape`` and the detector parameters).
    defects : bool, default True
        Include the bad columns and hot pixels.

    Returns
    -------
    Detector
        The detector; its arrays are read-only and shared between calls.
    """
    ny, nx = config.shape
    bias_rng, flat_rng, defect_rng = (
        np.random.default_rng(s) for s in _seed_sequence(config.seed, "detector").spawn(3)
    )
    columns = np.arange(nx)
    rows = np.arange(ny)
    bias = (
        config.bias_level
        + config.bias_column_rms * bias_rng.standard_normal(nx)[None, :]
        + config.bias_column_ramp * (columns / max(nx - 1, 1))[None, :]
        + config.bias_row_amplitude * np.sin(2 * np.pi * rows / ny * 1.5 + bias_rng.uniform(0, 2 * np.pi))[:, None]
    )
    radius2 = ((rows[:, None] - (ny - 1) / 2) ** 2 + (columns[None, :] - (nx - 1) / 2) ** 2) / (
        ((ny - 1) / 2) ** 2 + ((nx - 1) / 2) ** 2
    )
    flat = (1.0 - config.vignetting * radius2) * (1.0 + config.prnu * flat_rng.standard_normal((ny, nx)))
    dark = np.full((ny, nx), config.dark_current)

    n_bad = config.n_dead_columns + config.n_low_columns + config.n_hot_columns
    chosen = defect_rng.choice(np.arange(16, nx - 16), size=n_bad, replace=False)
    dead = chosen[: config.n_dead_columns]
    low = chosen[config.n_dead_columns : config.n_dead_columns + config.n_low_columns]
    hot = chosen[config.n_dead_columns + config.n_low_columns :]
    hot_start = int(defect_rng.integers(0, ny // 2))
    hot_y = defect_rng.integers(0, ny, config.n_hot_pixels)
    hot_x = defect_rng.integers(0, nx, config.n_hot_pixels)
    hot_rate = 10 ** defect_rng.uniform(0.0, 1.3, config.n_hot_pixels)  # 1-20 e-/s
    defect_map = np.zeros((ny, nx), dtype=bool)
    if defects:
        flat[:, dead] *= config.dead_column_response
        flat[:, low] *= config.low_column_response
        dark[hot_start:, hot] += config.hot_column_dark
        dark[hot_y, hot_x] += hot_rate
        defect_map[:, dead] = True
        defect_map[:, low] = True
        defect_map[hot_start:, hot] = True
        defect_map[hot_y, hot_x] = True
    flat /= np.median(flat)  # "unit response" = the median pixel, as a master flat is normalised
    for array in (bias, flat, dark, defect_map):
        array.setflags(write=False)
    return Detector(
        bias=bias,
        flat=flat,
        dark=dark,
        bad_columns={"dead": tuple(map(int, dead)), "low": tuple(map(int, low)), "hot": tuple(map(int, hot))},
        hot_column_start=hot_start,
        hot_pixels=(hot_y, hot_x),
        defects=defect_map,
    )
