"""Named numpy arrays as one compressed ``.npz`` blob (how the learning assets store datasets in the object store)."""

from __future__ import annotations

import io

import numpy as np


def save_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` archive."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_arrays(content: bytes) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive's bytes, by name (no pickled objects)."""
    with np.load(io.BytesIO(content), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
