"""Image subtraction: ZOGY, the classic PSF-matched subtraction, tiles for varying PSFs, FFT back ends."""

from astrid_assets.science.subtraction.at_stars import NodeKernels, node_kernels, psf_error_at_stars
from astrid_assets.science.subtraction.classic import ClassicResult, classic_subtraction
from astrid_assets.science.subtraction.fft_backends import (
    BACKENDS,
    NumpyBackend,
    TorchBackend,
    embedded_rfft2,
    fft_threads,
    filtered_variance,
    limit_fft_threads,
    select_backend,
    wrap_embed,
)
from astrid_assets.science.subtraction.image_pair import (
    BACKGROUND_BLOCK,
    BACKGROUND_CLEAN_SCORE,
    BACKGROUND_MODELS,
    background_plane,
    odd_common_stamps,
    robust_std,
    sanitise_pair,
)
from astrid_assets.science.subtraction.inputs import (
    CLASSIC_METHODS,
    ClassicOptions,
    SubtractionImage,
    ZogyOptions,
    pair_mask,
)
from astrid_assets.science.subtraction.tiles import (
    aperture_flux_ratio,
    blend_stamps,
    estimated_psf_errors,
    tent_weights,
    tile_nodes,
    zogy_field,
    zogy_tiled,
)
from astrid_assets.science.subtraction.zogy import ZogyResult, zogy
from astrid_assets.science.subtraction.zogy_kernels import ZogyKernels, zogy_filters, zogy_kernels

__all__ = [
    "SubtractionImage",
    "ZogyOptions",
    "ClassicOptions",
    "CLASSIC_METHODS",
    "pair_mask",
    "ClassicResult",
    "classic_subtraction",
    "BACKENDS",
    "NumpyBackend",
    "TorchBackend",
    "select_backend",
    "wrap_embed",
    "embedded_rfft2",
    "filtered_variance",
    "fft_threads",
    "limit_fft_threads",
    "odd_common_stamps",
    "sanitise_pair",
    "robust_std",
    "BACKGROUND_MODELS",
    "BACKGROUND_CLEAN_SCORE",
    "BACKGROUND_BLOCK",
    "background_plane",
    "tile_nodes",
    "tent_weights",
    "blend_stamps",
    "zogy_tiled",
    "aperture_flux_ratio",
    "zogy_field",
    "ZogyResult",
    "zogy",
    "ZogyKernels",
    "zogy_filters",
    "zogy_kernels",
    "estimated_psf_errors",
    "NodeKernels",
    "node_kernels",
    "psf_error_at_stars",
]
