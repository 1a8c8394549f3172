"""What verifying a snapshot costs now that the manifest is sealed and every JSON part schema-checked.

One predictor is trained on synthetic rows (tests/service/predictors/synthetic.py's law) and exported as a
format-2 archive. In the same run, interleaved, each way of reading it is timed `--repeat` times:

- baseline: what the reader did before (tar members, sha256 and size of each, JSON parsed, no schema),
- verified: `read_snapshot` now (the above + manifest seal and canonical form + pydantic schemas),
- loaded: `Snapshot.from_bytes` (verified + the three boosters and the featuriser loaded), which an
  import does anyway: the reference the added checks should be small against.

    .venv/bin/python bench/bench_snapshot.py [--configs 400 --repeat 30]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.predictors.snapshot import Snapshot, build_snapshot, read_snapshot
from service.predictors.training import fit_predictor
from tests.service.predictors.synthetic import FAST_PARAMS, synthetic_rows


def baseline_read(data: bytes) -> dict[str, Any]:
    """The former reader's work: members, their sha256 and size against the manifest, JSON parsed."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        members = {info.name: archive.extractfile(info).read() for info in archive}  # type: ignore[union-attr]
    manifest = json.loads(members["manifest.json"])
    for name, entry in manifest["members"].items():
        assert entry["sha256"] == hashlib.sha256(members[name]).hexdigest()
        assert entry["size"] == len(members[name])
    return {name: json.loads(raw) for name, raw in members.items() if name.endswith(".json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    result = fit_predictor(synthetic_rows(args.configs), FAST_PARAMS)
    archive = build_snapshot(
        manifest={"family": "sr_block", "library_versions": result.library_versions},
        model=result.model,
        model_p10=result.model_p10,
        model_p90=result.model_p90,
        feature_schema=result.feature_schema,
        metrics=result.metrics,
        holdout=result.holdout,
    )
    ways: dict[str, Callable[[bytes], Any]] = {
        "baseline (hashes + JSON)": baseline_read,
        "verified (read_snapshot)": read_snapshot,
        "loaded (Snapshot.from_bytes)": Snapshot.from_bytes,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeat):
        for name, read in ways.items():  # interleaved: every way meets the host in the same seconds
            started = time.perf_counter()
            read(archive)
            times[name].append((time.perf_counter() - started) * 1000)

    base = statistics.median(times["baseline (hashes + JSON)"])
    print(
        f"archive {len(archive) / 1024:.0f} KiB, {len(result.holdout)} holdout rows, "
        f"{args.repeat} reads each (median ms)"
    )
    print(f"{'way':<32} {'median ms':>10} {'vs baseline':>12}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<32} {median:>10.2f} {median - base:>+11.2f}")


if __name__ == "__main__":
    main()
