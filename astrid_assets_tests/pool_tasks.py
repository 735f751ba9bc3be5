"""Tasks for the pool tests, in a module that imports nothing heavy: each spawned worker imports it by name."""

from __future__ import annotations

import os
from pathlib import Path


def square_after(marker: str, value: int) -> tuple[int, int]:
    """``value²`` and the pid that computed it; fails the first time it runs for a ``marker`` that ends in
    ``-flaky`` (a file records the first attempt, so a retry in another process sees it)."""
    if marker.endswith("-flaky") and not Path(marker).exists():
        Path(marker).touch()
        raise OSError(f"lost the connection to the object store on {value}")
    return value * value, os.getpid()


def always_fails(value: int) -> int:
    raise ValueError(f"frame {value} is corrupt")


def dies_once(marker: str) -> int:
    """Kills its worker process the first time (as the kernel's OOM killer would), then returns its pid."""
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(9)
    return os.getpid()


def thread_caps() -> dict:
    """What a worker's numerical libraries may use."""
    import torch  # a task importing torch after the worker started
    from threadpoolctl import threadpool_info

    from astrid_assets.science.subtraction.fft_backends import fft_threads

    return {"env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "pools": [pool["num_threads"] for pool in threadpool_info()], "torch": torch.get_num_threads(),
            "fft": fft_threads()}
