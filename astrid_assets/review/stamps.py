"""Candidate stamps as PNG, with the stretch fixed when the PNG is made, cached.

A candidate's science / reference / difference stamps (63 × 63 px, the frame's ``(N, 3, 63, 63)``
stack in the object store, :func:`astrid_assets.defs.detection.stamps_from_bytes`) become 8-bit
grey PNGs at their native size; the page enlarges them without smoothing. Two stretches:

* ``zscale`` — linear between IRAF's zscale limits (astropy :class:`~astropy.visualization.ZScaleInterval`);
* ``asinh`` — the 0.5–99.5 percentile range, then :class:`~astropy.visualization.AsinhStretch`
  (a = 0.1): faint wings and a bright core in one image (Lupton et al. 2004, PASP 116, 133).

Rows are flipped so that the image's first row is at the bottom (``origin="lower"``, as the previews).
Non-finite pixels are black. A stack is read once per frame and every PNG made once (LRU caches).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from astropy.visualization import AsinhStretch, PercentileInterval, ZScaleInterval
from PIL import Image

from astrid_assets.defs.detection import stamps_from_bytes
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.science.products import STAMP_CHANNELS

__all__ = ["STRETCHES", "StampCache", "stamp_png"]

STRETCHES = ("zscale", "asinh")


def _scaled(image: np.ndarray, stretch: str) -> np.ndarray:
    """``image`` mapped to [0, 1] by ``stretch``."""
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape)
    values = image[finite]
    if stretch == "zscale":
        low, high = ZScaleInterval().get_limits(values)
    else:
        low, high = PercentileInterval(99.0).get_limits(values)
    span = high - low if high > low else 1.0
    scaled = np.clip((np.where(finite, image, low) - low) / span, 0, 1)
    return AsinhStretch(0.1)(scaled) if stretch == "asinh" else scaled


def stamp_png(image: np.ndarray, stretch: str = "zscale") -> bytes:
    """An 8-bit grey PNG of one stamp with ``stretch`` (``zscale`` or ``asinh``)."""
    if stretch not in STRETCHES:
        raise ValueError(f"unknown stretch {stretch!r}: use one of {', '.join(STRETCHES)}")
    pixels = np.round(_scaled(np.asarray(image, float), stretch) * 255).astype(np.uint8)[::-1]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def remember(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class StampCache:
    """PNGs of candidate stamps from the object store, each made once.

    Parameters
    ----------
    store : ObjectStore
        Where the stamp stacks are.
    stacks : int, default 32
        Frames' stacks kept in memory (about 48 kB per candidate).
    images : int, default 6000
        PNGs kept (about 2–4 kB each).
    """

    def __init__(self, store: ObjectStore, stacks: int = 32, images: int = 6000):
        self.store = store
        self._stacks = _LRU(stacks)
        self._images = _LRU(images)
        self._lock = threading.Lock()

    def stack(self, stamp_path: str) -> np.ndarray:
        """The frame's ``(N, 3, 63, 63)`` stack."""
        with self._lock:
            if stamp_path in self._stacks:
                self._stacks.move_to_end(stamp_path)
                return self._stacks[stamp_path]
        stack = stamps_from_bytes(self.store.get(stamp_path))
        with self._lock:
            return self._stacks.remember(stamp_path, stack)

    def png(self, stamp_path: str, stamp_index: int, channel: str, stretch: str) -> bytes:
        """The PNG of one channel (``science``, ``reference``, ``difference``) of one candidate."""
        if channel not in STAMP_CHANNELS:
            raise ValueError(f"unknown channel {channel!r}: use one of {', '.join(STAMP_CHANNELS)}")
        key = (stamp_path, int(stamp_index), channel, stretch)
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        png = stamp_png(self.stack(stamp_path)[int(stamp_index), STAMP_CHANNELS.index(channel)], stretch)
        with self._lock:
            return self._images.remember(key, png)
