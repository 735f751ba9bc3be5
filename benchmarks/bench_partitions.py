"""How the Dagster UI's partition queries scale with the number of nightly partitions.

Starts ``dagster-webserver`` on loopback (its own process group) once with ``ASTRID_FIRST_NIGHT``
at the demo's era and once at the archival default (2000-01-01, ≈ 9,800 nightly partitions), and
times the GraphQL queries the asset pages send: the asset's partition definition and keys, its
partition statistics and its partition-status ranges (what the partition bar draws). Medians of
five calls each; results in ``benchmarks/results/partitions.json``.

Run: ``.venv/bin/python benchmarks/bench_partitions.py``
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
QUERIES = {
    "partition_keys": """{ assetNodes(assetKeys: [{path: ["raw_observations"]}]) {
        partitionDefinition { description } partitionKeysByDimension { partitionKeys } } }""",
    "partition_stats": """{ assetNodes { assetKey { path } partitionStats { numMaterialized numPartitions } } }""",
    "partition_status": """{ assetNodes(assetKeys: [{path: ["difference_images"]}]) {
        assetPartitionStatuses { ... on TimePartitionStatuses { ranges { startKey endKey status } } } } }""",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str) -> dict:
    answer = requests.post(f"{url}/graphql", json={"query": query}, timeout=120)
    answer.raise_for_status()
    body = answer.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


def measure(first_night: str) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "ASTRID_FIRST_NIGHT": first_night, "ASTRID_HOME": f"{work}/astrid",
               "DAGSTER_HOME": f"{work}/dagster"}
        os.makedirs(env["DAGSTER_HOME"])
        command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                   "-m", "astrid_assets.definitions"]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    graphql(url, "{ version }")
                    nodes = graphql(url, QUERIES["partition_keys"])["assetNodes"]
                    if nodes:
                        break
                except (requests.RequestException, RuntimeError):
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("dagster-webserver did not serve the code location")
                time.sleep(1)
            result = {"first_night": first_night,
                      "partitions": len(nodes[0]["partitionKeysByDimension"][0]["partitionKeys"])}
            for name, query in QUERIES.items():
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    graphql(url, query)
                    times.append(time.perf_counter() - start)
                result[f"{name}_s"] = round(statistics.median(times), 4)
            return result
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def main() -> None:
    results = [measure("2024-01-01"), measure("2000-01-01")]
    load = os.getloadavg()[0]
    for row in results:
        print(row)
    print(f"load average (1 min) during the run: {load:.2f} on {os.cpu_count()} cores")
    out = ROOT / "benchmarks" / "results" / "partitions.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"results": results, "load_1min": load}, indent=2))


if __name__ == "__main__":
    main()
