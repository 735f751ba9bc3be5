"""Synthetic real/bogus candidate stamps for the ML tests and the training benchmark.

Each candidate is a ``(3, 63, 63)`` float32 stack in electrons — science (sky included),
reference (its own sky, deeper: lower noise) and difference (science minus the PSF-matched
reference, sky-free) — with ``NaN`` beyond the image edge for ~10 % of candidates.

The noise of the three channels is coupled as in real differencing: difference noise is
science noise minus reference noise.  Every stamp gets a few unrelated field stars (which
cancel in the difference) and some a host galaxy.

Real (label 1), a point source within ±0.5 px of the centre with a Moffat PSF
(FWHM 2.5–3.5 px, β 2.5–4.5), PSF-optimal S/N in the difference log-uniform in 5–50:

* ``brightening`` (75 %): the source is in science and positive in the difference;
* ``fading`` (25 %): the source is brighter in the reference, negative in the difference.

Bogus (label 0), in equal shares:

* ``dipole``: a star at the centre subtracted with a 0.3–1.2 px misregistration;
* ``ring``: a bright star whose reference PSF width is mismatched by 5–15 % and flux by
  up to ±3 % (a core with a ring of the opposite sign — sometimes a PSF-like blob);
* ``artefact``: a cosmic ray (a single hot pixel or a 2–4 px track, sharper than the PSF,
  in science and difference) or a hot column segment, sometimes next to masked (NaN) pixels;
* ``noise``: pure noise, re-centred on the highest PSF-filtered fluctuation near the centre
  (what a detector reporting ~3.5σ peaks would hand over).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 63
CENTRE = SIZE // 2
REAL_KINDS = ("brightening", "fading")
BOGUS_KINDS = ("dipole", "ring", "artefact", "noise")


@dataclass
class SyntheticStamps:
    stamps: np.ndarray  #: (N, 3, 63, 63) float32, e-
    labels: np.ndarray  #: (N,) int64, 1 real / 0 bogus
    kinds: np.ndarray  #: (N,) str, see module docstring
    fwhm: np.ndarray  #: (N,) science FWHM, px
    nights: np.ndarray  #: (N,) int, night index 0..n_nights-1
    ids: np.ndarray  #: (N,) str


def moffat(fwhm: float, beta: float, x: float, y: float, oversample: int = 3, radius: int = 15) -> np.ndarray:
    """Pixel-integrated unit-flux Moffat profile centred on ``(x, y)`` (0-based pixel centres),
    rendered within ``radius`` px of the source (the wings beyond are dropped)."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    out = np.zeros((SIZE, SIZE))
    j0, j1 = max(int(round(y)) - radius, 0), min(int(round(y)) + radius + 1, SIZE)
    i0, i1 = max(int(round(x)) - radius, 0), min(int(round(x)) + radius + 1, SIZE)
    if j0 >= j1 or i0 >= i1:
        return out
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    dy = (np.arange(j0, j1)[:, None] + sub[None, :]).ravel()[:, None] - y
    dx = (np.arange(i0, i1)[:, None] + sub[None, :]).ravel()[None, :] - x
    profile = (1.0 + (dx**2 + dy**2) / alpha**2) ** (-beta)
    profile = profile.reshape(j1 - j0, oversample, i1 - i0, oversample).mean(axis=(1, 3))
    out[j0:j1, i0:i1] = profile * (beta - 1.0) / (np.pi * alpha**2)  # continuous-profile normalisation
    return out


def _galaxy(x: float, y: float, scale: float, axis_ratio: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    u = (xx - x) * np.cos(angle) + (yy - y) * np.sin(angle)
    v = (-(xx - x) * np.sin(angle) + (yy - y) * np.cos(angle)) / axis_ratio
    profile = np.exp(-np.sqrt(u**2 + v**2) / scale)
    return profile / profile.sum()


def _psf_snr_flux(snr: float, sigma: float, psf: np.ndarray) -> float:
    """Flux whose PSF-optimal S/N on a background of rms ``sigma`` is ``snr``."""
    return snr * sigma / np.sqrt(np.sum(psf**2))


def _one(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    fwhm = rng.uniform(2.5, 3.5)
    beta = rng.uniform(2.5, 4.5)
    ref_fwhm = rng.uniform(2.5, 3.5)
    sky = rng.uniform(300.0, 1500.0)
    sigma_s = np.sqrt(sky + 25.0)
    sigma_r = sigma_s * rng.uniform(0.3, 0.6)
    ref_sky = rng.uniform(100.0, 2000.0)
    noise_s = rng.standard_normal((SIZE, SIZE)) * sigma_s
    noise_r = rng.standard_normal((SIZE, SIZE)) * sigma_r
    sigma_d = np.hypot(sigma_s, sigma_r)
    if kind == "noise":
        # re-centre the noise on its highest PSF-filtered fluctuation within 12 px of the centre
        kernel = moffat(fwhm, beta, CENTRE, CENTRE)
        diff_noise = noise_s - noise_r
        filtered = np.real(np.fft.ifft2(np.fft.fft2(diff_noise) * np.conj(np.fft.fft2(np.fft.ifftshift(kernel)))))
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        near = (yy - CENTRE) ** 2 + (xx - CENTRE) ** 2 <= 144
        j, i = np.unravel_index(np.argmax(np.where(near, filtered, -np.inf)), filtered.shape)
        shift = (CENTRE - j, CENTRE - i)
        noise_s = np.roll(noise_s, shift, axis=(0, 1))
        noise_r = np.roll(noise_r, shift, axis=(0, 1))

    static_s = np.zeros((SIZE, SIZE))  # static scene with the science PSF
    static_r = np.zeros((SIZE, SIZE))  # the same scene with the reference PSF
    transient = np.zeros((SIZE, SIZE))  # science minus reference, PSF-matched
    artefact_s = np.zeros((SIZE, SIZE))  # artefacts in the science frame (also in the difference)

    # unrelated field stars, away from the centre
    for _ in range(rng.poisson(2.0)):
        while True:
            x, y = rng.uniform(2, SIZE - 3, 2)
            if np.hypot(x - CENTRE, y - CENTRE) > 8:
                break
        flux = np.exp(rng.uniform(np.log(20), np.log(2000))) * sigma_s
        static_s += flux * moffat(fwhm, beta, x, y)
        static_r += flux * moffat(ref_fwhm, beta, x, y)

    # a host galaxy for some candidates
    if rng.random() < (0.35 if kind in REAL_KINDS else 0.15):
        gx, gy = CENTRE + rng.uniform(-4, 4, 2)
        host = np.exp(rng.uniform(np.log(300), np.log(5000))) * sigma_s
        galaxy = _galaxy(gx, gy, rng.uniform(1.5, 5.0), rng.uniform(0.4, 1.0), rng.uniform(0, np.pi))
        static_s += host * galaxy
        static_r += host * galaxy

    x0, y0 = CENTRE + rng.uniform(-0.5, 0.5, 2)
    psf = moffat(fwhm, beta, x0, y0)
    if kind == "brightening":
        flux = _psf_snr_flux(np.exp(rng.uniform(np.log(5), np.log(50))), sigma_d, psf)
        transient += flux * psf
    elif kind == "fading":
        flux = _psf_snr_flux(np.exp(rng.uniform(np.log(5), np.log(50))), sigma_d, psf)
        remaining = flux * rng.uniform(0.0, 1.0)
        static_s += remaining * psf
        static_r += remaining * moffat(ref_fwhm, beta, x0, y0)
        static_r += flux * moffat(ref_fwhm, beta, x0, y0)  # what faded: only in the reference
        transient -= flux * psf
    elif kind == "dipole":
        flux = np.exp(rng.uniform(np.log(50), np.log(500))) * sigma_s
        angle = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(0.3, 1.2)
        xs, ys = x0 + shift * np.cos(angle), y0 + shift * np.sin(angle)
        static_s += flux * psf
        static_r += flux * moffat(ref_fwhm, beta, xs, ys)
        transient += flux * (psf - moffat(fwhm, beta, xs, ys))
    elif kind == "ring":
        flux = np.exp(rng.uniform(np.log(100), np.log(1000))) * sigma_s
        mismatch = rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.15)
        scale = 1.0 + rng.uniform(-0.03, 0.03)
        static_s += flux * psf
        static_r += flux * moffat(ref_fwhm, beta, x0, y0)
        transient += flux * (psf - scale * moffat(fwhm * (1 + mismatch), beta, x0, y0))
    elif kind == "artefact":
        choice = rng.random()
        j, i = int(round(y0)), int(round(x0))
        if choice < 0.5:  # single hot pixel (cosmic ray hit)
            artefact_s[j, i] += rng.uniform(8, 100) * sigma_s
        elif choice < 0.8:  # short track
            length = rng.integers(2, 5)
            dj, di = [(0, 1), (1, 0), (1, 1), (1, -1)][rng.integers(4)]
            amp = rng.uniform(8, 60) * sigma_s
            for k in range(length):
                artefact_s[j + k * dj, i + k * di] += amp * rng.uniform(0.6, 1.0)
        else:  # hot column segment
            half = rng.integers(3, 15)
            artefact_s[j - half : j + half + 1, i] += rng.uniform(5, 30) * sigma_s
    elif kind != "noise":
        raise ValueError(kind)

    science = sky + static_s + artefact_s + noise_s
    if kind == "brightening":  # new light (the other residuals are in the difference only)
        science += transient
    reference = ref_sky + static_r + noise_r
    difference = transient + artefact_s + noise_s - noise_r  # the static scene cancels
    stack = np.stack([science, reference, difference]).astype(np.float32)

    if kind == "artefact" and rng.random() < 0.4:  # masked (saturated/bad) pixels next to the artefact
        j, i = int(round(y0)) + rng.integers(-3, 4), int(round(x0)) + rng.integers(-3, 4)
        stack[:, j - 1 : j + 2, i - 1 : i + 1] = np.nan
    if rng.random() < 0.1:  # beyond the image edge
        distance = rng.integers(8, 30)
        side = rng.integers(4)
        if side == 0:
            stack[:, : CENTRE - distance] = np.nan
        elif side == 1:
            stack[:, CENTRE + distance + 1 :] = np.nan
        elif side == 2:
            stack[:, :, : CENTRE - distance] = np.nan
        else:
            stack[:, :, CENTRE + distance + 1 :] = np.nan
    return stack, fwhm


def make_stamps(n: int, seed: int = 0, real_fraction: float = 0.5, n_nights: int = 20) -> SyntheticStamps:
    """``n`` synthetic candidates (``real_fraction`` of them real), spread over ``n_nights`` nights."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < real_fraction).astype(np.int64)
    kinds = np.where(
        labels == 1,
        rng.choice(REAL_KINDS, n, p=[0.75, 0.25]),
        rng.choice(BOGUS_KINDS, n),
    )
    stamps = np.empty((n, 3, SIZE, SIZE), np.float32)
    fwhm = np.empty(n)
    for k in range(n):
        stamps[k], fwhm[k] = _one(str(kinds[k]), rng)
    nights = rng.integers(0, n_nights, n)
    ids = np.array([f"cand-{seed}-{k:06d}" for k in range(n)])
    return SyntheticStamps(stamps, labels, kinds, fwhm, nights, ids)
