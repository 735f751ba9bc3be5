"""Benchmark of AstrID's storage: candidate rows through the table IO manager, FITS frames through the object store.

Usage::

    .venv/bin/python benchmarks/bench_storage.py                       # 30 nights, ~100k rows, 200 frames
    .venv/bin/python benchmarks/bench_storage.py --rows 20000 --frames 40 --output /tmp/storage.json

Tables: ``candidate_detections`` rows (30 nights, ~3.3k rows each) go through the same path the
assets use — Dagster's ``DbIOManager`` with AstrID's :class:`~astrid_assets.io.tables.TableIOManager`
(``handle_output`` per night: one transaction that deletes the partition and inserts its rows;
``load_input`` per night) — on SQLite (a file in a temporary folder) and on the machine's
PostgreSQL (a fresh database created for the run and dropped after). Each night is written twice:
*write* into an empty table, then *rewrite* replacing the partition, then *read*.

Objects: float32 FITS frames (512² by default) through ``put_versioned`` (content hash + put, as
the assets write) and ``get``, on a local folder and on moto's S3 server, started on loopback in its
own process group and stopped after (:mod:`astrid_assets.testing.servers`). MB/s counts FITS bytes
(1 MB = 10⁶ bytes).

Unreachable backends (``--backends unreachable``): how long a write takes to fail, retries and backoff
included, against a port on loopback that refuses connections — an S3 ``put`` (boto3's standard retries,
then :class:`~astrid_assets.io.object_store.ObjectStoreError`) and a PostgreSQL connection
(:func:`~astrid_assets.io.tables.connect_with_retry`, then ``DatabaseUnavailableError``). The storage-fault
tests check that such a run fails cleanly and names the backend; how long that takes is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "storage.json"
FIRST_NIGHT = "2024-02-01"


def candidate_rows(night: str, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """``count`` candidate-like rows for ``night``, with the columns of ``candidate_detections``."""
    frame = rng.integers(1, 13, count)
    flux = rng.normal(0, 2000, count)
    flux_err = rng.uniform(50, 300, count)
    compact = night.replace("-", "")
    return pd.DataFrame(
        {
            "night": night,
            "candidate_id": [f"C{compact}-{i:06d}" for i in range(count)],
            "frame_id": [f"F{f % 4 + 1:02d}-{compact}-s{f:03d}" for f in frame],
            "field": [f"F{f % 4 + 1:02d}" for f in frame],
            "x": rng.uniform(0, 2048, count),
            "y": rng.uniform(0, 2048, count),
            "ra": rng.uniform(149, 151, count),
            "dec": rng.uniform(1, 3, count),
            "flux": flux,
            "flux_err": flux_err,
            "snr": np.abs(flux) / flux_err,
            "rule_score": rng.uniform(0, 1, count),
            "flags": rng.integers(0, 1 << 10, count),
            "sign": np.where(flux >= 0, 1, -1),
            "stamp_path": [f"candidate_detections/{night}/C{compact}-{i:06d}.npz" for i in range(count)],
        }
    )


def nights(count: int) -> list[str]:
    return [str(day.date()) for day in pd.date_range(FIRST_NIGHT, periods=count, freq="D")]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_table(name: str, url: str, tables: dict[str, pd.DataFrame]) -> dict:
    """Write, rewrite and read every night through the TableIOManager; rows/s for each."""
    from dagster import DagsterInstance, DagsterType, build_input_context, build_output_context

    from astrid_assets.io.tables import TableIOManager
    from astrid_assets.partitions import nightly_partitions

    io_manager = TableIOManager(database_url=url).create_io_manager(None)
    instance = DagsterInstance.ephemeral()  # one for all contexts (each would otherwise build its own)
    frame_type = DagsterType(
        lambda context, value: isinstance(value, pd.DataFrame), name="DataFrame", typing_type=pd.DataFrame
    )

    def output_contexts() -> dict:
        return {
            night: build_output_context(
                asset_key="candidate_detections",
                partition_key=night,
                asset_partitions_def=nightly_partitions,
                definition_metadata={"partition_expr": "night"},
                name="result",
                instance=instance,
            )
            for night in tables
        }

    # Contexts are built before timing (an output context takes metadata once, so one set per pass):
    # what is timed is the IO manager and the database.
    passes = [output_contexts(), output_contexts()]
    inputs = {
        night: build_input_context(
            asset_key="candidate_detections",
            partition_key=night,
            asset_partitions_def=nightly_partitions,
            upstream_output=upstream,
            dagster_type=frame_type,
            instance=instance,
        )
        for night, upstream in output_contexts().items()
    }

    def write_all() -> None:
        outputs = passes.pop(0)
        for night, rows in tables.items():
            io_manager.handle_output(outputs[night], rows)

    loaded: dict[str, pd.DataFrame] = {}

    def read_all() -> None:
        for night in tables:
            loaded[night] = io_manager.load_input(inputs[night])

    total = sum(len(rows) for rows in tables.values())
    write_s, rewrite_s, read_s = timed(write_all), timed(write_all), timed(read_all)
    read_rows = sum(len(frame) for frame in loaded.values())
    if read_rows != total:
        raise AssertionError(f"{name}: wrote {total} rows, read back {read_rows}")
    first = next(iter(tables))
    if not np.allclose(
        loaded[first].sort_values("candidate_id").flux.to_numpy(),
        tables[first].sort_values("candidate_id").flux.to_numpy(),
    ):
        raise AssertionError(f"{name}: rows read back differ from those written")
    return {
        "backend": name,
        "kind": "table",
        "rows": total,
        "nights": len(tables),
        "write_s": round(write_s, 3),
        "rewrite_s": round(rewrite_s, 3),
        "read_s": round(read_s, 3),
        "write_rows_per_s": round(total / write_s),
        "rewrite_rows_per_s": round(total / rewrite_s),
        "read_rows_per_s": round(total / read_s),
    }


def fits_frames(count: int, size: int, rng: np.random.Generator) -> list[bytes]:
    """``count`` float32 FITS frames of ``size``² pixels (sky + noise), serialised once."""
    from astropy.io import fits

    from astrid_assets.science.frames.files import to_fits_bytes

    frames = []
    for index in range(count):
        image = (rng.normal(400.0, 20.0, (size, size))).astype(np.float32)
        header = fits.Header({"IMAGETYP": "object", "FRAMENO": index})
        frames.append(to_fits_bytes([fits.PrimaryHDU(image, header)]))
    return frames


def bench_objects(name: str, store, frames: list[bytes]) -> dict:
    """Put every frame (``put_versioned``) then get every one back; MB/s each way."""
    keys: list[str] = []

    def put_all() -> None:
        keys.extend(
            store.put_versioned(f"bench/2024-02-01/frame-{i:04d}.fits", content) for i, content in enumerate(frames)
        )

    got: list[bytes] = []

    def get_all() -> None:
        got.extend(store.get(key) for key in keys)

    put_s, get_s = timed(put_all), timed(get_all)
    if got != frames:
        raise AssertionError(f"{name}: objects read back differ from those written")
    store.delete(keys)
    megabytes = sum(len(content) for content in frames) / 1e6
    return {
        "backend": name,
        "kind": "objects",
        "objects": len(frames),
        "megabytes": round(megabytes, 1),
        "put_s": round(put_s, 3),
        "get_s": round(get_s, 3),
        "put_mb_per_s": round(megabytes / put_s, 1),
        "get_mb_per_s": round(megabytes / get_s, 1),
        "put_objects_per_s": round(len(frames) / put_s, 1),
        "get_objects_per_s": round(len(frames) / get_s, 1),
    }


def bench_unreachable() -> list[dict]:
    """Seconds for a write to fail against a closed port: an S3 put, a PostgreSQL connection (median of 3)."""
    import logging
    import socket
    import statistics

    from astrid_assets.io.object_store import ObjectStoreError, S3ObjectStore
    from astrid_assets.io.tables import (
        CONNECT_ATTEMPTS,
        CONNECT_BACKOFF_S,
        DatabaseUnavailableError,
        connect_with_retry,
    )

    closed = socket.socket()  # bound, never listening: connections are refused and no one else takes the port
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    saved = {name: os.environ.get(name) for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
                                                     "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "astrid-bench",
                       "AWS_SECRET_ACCESS_KEY": "astrid-bench", "AWS_DEFAULT_REGION": "us-east-1"})

    def fails(action: Callable[[], object], error: type[Exception]) -> float:
        started = time.perf_counter()
        try:
            action()
        except error:
            return time.perf_counter() - started
        raise AssertionError(f"{action} did not fail with {error.__name__}")

    try:
        store = S3ObjectStore("s3://astrid-bench/astrid")
        s3 = statistics.median(fails(lambda: store.put("bench/probe", b"x"), ObjectStoreError) for _ in range(3))
        url = f"postgresql+psycopg2://astrid@127.0.0.1:{port}/astrid"
        quiet = logging.getLogger("astrid-bench-unreachable")  # not the retry warnings: the time they take
        quiet.disabled = True
        database = statistics.median(fails(lambda: connect_with_retry(url, log=quiet), DatabaseUnavailableError)
                                     for _ in range(3))
    finally:
        closed.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    backoff = sum(CONNECT_BACKOFF_S * 2**n for n in range(CONNECT_ATTEMPTS - 1))
    return [{"backend": "s3 (closed port)", "kind": "unreachable", "fail_s": round(s3, 3)},
            {"backend": "postgresql (closed port)", "kind": "unreachable", "fail_s": round(database, 3),
             "backoff_s": backoff}]


def environment() -> dict:
    import dagster
    import sqlalchemy

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "dagster": dagster.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }


def print_table(results: list[dict]) -> None:
    print(f"\n{'backend':12s} {'what':26s} {'write':>12s} {'rewrite':>12s} {'read':>12s}")
    for entry in results:
        if entry["kind"] == "unreachable":
            print(f"{entry['backend']:24s} a write fails after {entry['fail_s']:.2f} s")
        elif entry["kind"] == "table":
            print(
                f"{entry['backend']:12s} {str(entry['rows']) + ' rows, ' + str(entry['nights']) + ' nights':26s}"
                f" {entry['write_rows_per_s']:>8,d} r/s {entry['rewrite_rows_per_s']:>8,d} r/s"
                f" {entry['read_rows_per_s']:>8,d} r/s"
            )
        else:
            print(
                f"{entry['backend']:12s} {str(entry['objects']) + ' FITS, ' + str(entry['megabytes']) + ' MB':26s}"
                f" {entry['put_mb_per_s']:>7.1f} MB/s {'':>12s} {entry['get_mb_per_s']:>7.1f} MB/s"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--rows", type=int, default=100_000, help="rows in all, spread over the nights")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="frame side in pixels")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["sqlite", "postgresql", "folder", "s3", "unreachable"],
        choices=["sqlite", "postgresql", "folder", "s3", "unreachable"],
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    import boto3

    from astrid_assets.io.object_store import LocalObjectStore, S3ObjectStore
    from astrid_assets.io.tables import engine_for
    from astrid_assets.testing import servers

    rng = np.random.default_rng(2024)
    per_night = -(-args.rows // args.nights)
    tables = {night: candidate_rows(night, per_night, rng) for night in nights(args.nights)}
    results = []
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="astrid-bench-")))
        if "sqlite" in args.backends:
            results.append(bench_table("sqlite", f"sqlite:///{scratch / 'bench.db'}", tables))
        if "postgresql" in args.backends:
            url = stack.enter_context(servers.postgres_database(prefix="astrid_bench"))
            results.append(bench_table("postgresql", url, tables))
            engine_for(url).dispose()
        if {"folder", "s3"} & set(args.backends):
            frames = fits_frames(args.frames, args.size, rng)
            if "folder" in args.backends:
                results.append(bench_objects("folder", LocalObjectStore(scratch / "objects"), frames))
            if "s3" in args.backends:
                os.environ.setdefault("AWS_ACCESS_KEY_ID", "astrid-bench")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "astrid-bench")
                os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
                os.environ["AWS_ENDPOINT_URL_S3"] = stack.enter_context(servers.s3_server(scratch / "servers"))
                boto3.client("s3").create_bucket(Bucket="astrid-bench")
                results.append(bench_objects("s3 (moto)", S3ObjectStore("s3://astrid-bench/astrid"), frames))
    if "unreachable" in args.backends:
        results.extend(bench_unreachable())
    print_table(results)
    report = {"environment": environment(), "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
