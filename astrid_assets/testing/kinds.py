"""Named skygen cells of the hard kinds of real data: what real observers bring and the simulator does not make.

Each kind is a :class:`~astrid_assets.testing.skygen.Cell` of the independent generator (it shares nothing with the
pipeline's simulator), evaluated through the nightly chain by :mod:`astrid_assets.testing.matrix` against the
issue's acceptance: >= 90 % of the frames after the first night differenced, completeness for fakes at S/N >= 10
>= 95 %, robust std(S_corr) on blank sky 1.00 +- 0.05, few unflagged false candidates per frame.
"""

from __future__ import annotations

from astrid_assets.testing.skygen import Cell

__all__ = ["KINDS"]

#: kind name -> cell. Frames of 512² keep the chain tests fast; the acceptance counts are per 1024² (scale by area).
KINDS: dict[str, Cell] = {
    # undersampled camera: frames sharper (FWHM 1.3-1.6 px) than their broader reference (1.8-2.0 px)
    "undersampled": Cell("undersampled-1.4-vs-1.9", psf="gaussian", fwhm=1.45, reference_fwhm=1.9, state="reduced",
                         shape=(512, 512), n_nights=3, frames_per_night=2, seed=31),
    # crowded Galactic-bulge-like field: 6000 stars per 512² (the detections blend), FWHM 5.4-6.6 px, flat-fielded,
    # no WCS (registered by star patterns)
    "crowded": Cell("crowded-moffat3-6-nowcs", psf="moffat", beta=3.0, fwhm=6.0, state="reduced", wcs=False,
                    shape=(512, 512), n_nights=3, frames_per_night=2, n_stars=6000, n_saturated=12, n_galaxies=2,
                    seed=32),
    # sparse survey cut-out: four bright stars (some leave the frame with the pointing), reduced and sky-subtracted,
    # no WCS
    "sparse": Cell("sparse-cutout-4-stars-nowcs", psf="gaussian", fwhm=2.5, state="sky_subtracted", wcs=False,
                   shape=(256, 256), n_nights=3, frames_per_night=2, n_stars=4, n_saturated=0, n_galaxies=2,
                   star_flux_min=40.0, seed=33),
    # drizzled space-telescope-like mosaics: a 2-px drizzle footprint (per-pixel noise 0.37 of a PSF's noise),
    # sky-subtracted, no gain card, MJD-OBS the only time card (seed 3), no cosmic rays
    "drizzled": Cell("drizzled-2px-skysub-nogain", psf="gaussian", fwhm=2.5, state="sky_subtracted", gain_card=False,
                     shape=(512, 512), n_nights=3, frames_per_night=2, drizzle=2.0, seed=3),
    # raw frames of a small telescope whose observer took bias, dark and flat frames on the first night only:
    # later nights are calibrated with those masters (dark scaled to each exposure)
    "raw-borrowed-masters": Cell("raw-gauss-2.2-masters-night-1", psf="gaussian", fwhm=2.2, state="raw",
                                 shape=(512, 512), n_nights=3, frames_per_night=2, calibration_nights=1, seed=35),
    # the yardstick: a well-sampled reduced field of the same size, for the per-frame cost of each kind
    "well-sampled": Cell("well-sampled-gauss-3", psf="gaussian", fwhm=3.0, state="reduced", shape=(512, 512),
                         n_nights=3, frames_per_night=2, seed=36),
}
