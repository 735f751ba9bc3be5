"""How fast the scanning page answers: the queue of 50 candidates and one candidate's triplet.

``astrid review`` runs as a real server on loopback over a generated window (``--nights`` nights of
``--candidates`` candidates each, champion scores, and labels by two other people on a tenth of them),
or over an existing AstrID home (``--home``, e.g. the demo's ``.astrid``). A signed-in HTTP client
times, over ``--repeats`` requests each:

* ``queue_cold`` — ``GET /queue`` with a filter never used before (the window read and ordered);
* ``queue`` — ``GET /queue`` again (50 candidates of the last 7 nights; the order is reused for 30 s,
  the person's own labels read fresh);
* ``triplet_cold`` — a candidate page and its three stamp PNGs, the stamps never asked for before
  (the frame's stack read from the object store and three PNGs made);
* ``triplet_warm`` — the same again (PNGs from the cache).

Targets (issue 22): queue ≤ 300 ms, triplet ≤ 100 ms. Writes ``benchmarks/results/review.json``.

    .venv/bin/python benchmarks/bench_review.py [--nights 7 --candidates 300 --repeats 20] [--home PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from astrid_assets.testing import servers

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "benchmark-password"


def generated_home(folder: Path, nights: int, candidates: int) -> tuple[str, str]:
    """A database and object folder holding ``nights`` generated nights; their URL and folder."""
    import numpy as np
    import pandas as pd

    from astrid_assets.labels import record_labels
    from astrid_assets.testing.review_data import write_candidates

    url, objects = f"sqlite:///{folder / 'astrid.db'}", str(folder / "objects")
    rng = np.random.default_rng(0)
    written = []
    for k in range(nights):
        night = f"2024-01-{k + 1:02d}"
        written.append(write_candidates(url, objects, night, candidates, frames=6, field=f"F{k % 3:02d}",
                                        probabilities=rng.beta(0.5, 0.5, candidates).tolist(), seed=k))
    rows = pd.concat(written).sample(frac=0.1, random_state=0)
    labels = [(cid, label, who) for cid in rows.candidate_id for who, label in
              (("ben", "real"), ("cai", "real" if rng.random() < 0.7 else "bogus"))]
    record_labels(url, pd.DataFrame(labels, columns=["candidate_id", "label", "labeller"]))
    return url, objects


def timed(client: httpx.Client, paths: list[str]) -> float:
    started = time.perf_counter()
    for path in paths:
        response = client.get(path)
        response.raise_for_status()
    return 1000 * (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--candidates", type=int, default=300, help="candidates per night")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--home", type=Path, help="an existing ASTRID_HOME (its astrid.db and objects/) instead")
    args = parser.parse_args()

    from astrid_assets.review.records import ReviewRecords

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.home:
            url, objects = f"sqlite:///{args.home.resolve() / 'astrid.db'}", str(args.home.resolve() / "objects")
            data = f"home {args.home}"
        else:
            url, objects = generated_home(scratch, args.nights, args.candidates)
            data = f"generated: {args.nights} nights x {args.candidates} candidates"
        ReviewRecords(url).add_person("bench", PASSWORD, "labeller")
        port = servers.free_port()
        command = [str(Path(sys.executable).parent / "astrid"), "review", "--port", str(port)]
        env = {"ASTRID_DATABASE_URL": url, "ASTRID_OBJECT_STORE": objects, "ASTRID_HOME": str(scratch),
               "ASTRID_REVIEW_SECRET": "benchmark-session-key"}
        with servers.server_process(command, port, scratch / "review.log", timeout=120, env=env), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True) as client:
            page = client.get("/signin").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            client.post("/signin", data={"name": "bench", "password": PASSWORD, "csrf_token": token})
            queue_page = client.get("/queue").text
            ids = re.findall(r'class="candidate-link">([^<]+)<', queue_page)
            assert len(ids) == 50, f"the queue shows {len(ids)} candidates, not 50"
            # a new filter (a p_min below every probability) is a queue never ordered before: no cached order
            queue_cold = [timed(client, [f"/queue?p_min=-{i + 1}"]) for i in range(args.repeats)]
            queue = [timed(client, ["/queue"]) for _ in range(args.repeats)]
            cold, warm = [], []
            for candidate in ids[: args.repeats]:
                paths = [f"/candidate/{candidate}"] + [f"/stamp/{candidate}/{c}.png"
                                                       for c in ("science", "reference", "difference")]
                cold.append(timed(client, paths))
                warm.append(timed(client, paths))
    figures = {
        name: {"median_ms": round(statistics.median(values), 1), "max_ms": round(max(values), 1), "n": len(values)}
        for name, values in (("queue_cold", queue_cold), ("queue", queue), ("triplet_cold", cold),
                               ("triplet_warm", warm))}
    result = {"data": data, "load_average": os.getloadavg(), "cpus": os.cpu_count(), **figures,
              "targets_ms": {"queue": 300, "triplet": 100}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "review.json").write_text(json.dumps(result, indent=2))
    print(f"{data}; load average {result['load_average'][0]:.1f} on {result['cpus']} CPUs")
    for name, figure in figures.items():
        print(f"{name:<13} median {figure['median_ms']:7.1f} ms   max {figure['max_ms']:7.1f} ms   (n={figure['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
