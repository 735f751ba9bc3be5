"""How the Dagster UI's partition queries scale with the number of nightly partitions.

Starts ``dagster-webserver`` on loopback (its own process group) once with ``ASTRID_FIRST_NIGHT``
at the demo's era and once at the archival default (2000-01-01, ≈ 9,800 nightly partitions), and
times the GraphQL queries the asset pages send: the asset's partition definition and keys, its
partition statistics and its partition-status ranges (what the partition bar draws). Medians of
five calls each; results in ``benchmarks/results/partitions.json``.

Run: ``.venv/bin/python benchmarks/bench_partitions.py``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from astrid_assets.cli.trigger import graphql
from astrid_assets.testing import servers

ROOT = Path(__file__).resolve().parents[1]
QUERIES = {
    "partition_keys": """{ assetNodes(assetKeys: [{path: ["raw_observations"]}]) {
        partitionDefinition { description } partitionKeysByDimension { partitionKeys } } }""",
    "partition_stats": """{ assetNodes { assetKey { path } partitionStats { numMaterialized numPartitions } } }""",
    "partition_status": """{ assetNodes(assetKeys: [{path: ["difference_images"]}]) {
        assetPartitionStatuses { ... on TimePartitionStatuses { ranges { startKey endKey status } } } } }""",
}


def measure(first_night: str) -> dict:
    port = servers.free_port()
    with tempfile.TemporaryDirectory() as work:
        env = {"ASTRID_FIRST_NIGHT": first_night, "ASTRID_HOME": f"{work}/astrid", "DAGSTER_HOME": f"{work}/dagster"}
        os.makedirs(env["DAGSTER_HOME"])
        command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                   "-m", "astrid_assets.definitions"]
        with servers.server_process(command, port, Path(work) / "webserver.log", timeout=180, env=env) as process:
            url = f"http://127.0.0.1:{port}"
            servers.wait_for_code_location(url, process=process)
            nodes = graphql(url, QUERIES["partition_keys"], {}, timeout_s=120)["assetNodes"]
            result = {"first_night": first_night,
                      "partitions": len(nodes[0]["partitionKeysByDimension"][0]["partitionKeys"])}
            for name, query in QUERIES.items():
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    graphql(url, query, {}, timeout_s=120)
                    times.append(time.perf_counter() - start)
                result[f"{name}_s"] = round(statistics.median(times), 4)
            return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "partitions.json")
    args = parser.parse_args(argv)
    results = [measure("2024-01-01"), measure("2000-01-01")]
    load = os.getloadavg()[0]
    for row in results:
        print(row)
    print(f"load average (1 min) during the run: {load:.2f} on {os.cpu_count()} cores")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"results": results, "load_1min": load}, indent=2))


if __name__ == "__main__":
    main()
