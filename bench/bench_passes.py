"""What splitting a record's runs into passes buys: repeatability of one protocol against another.

On a VIRTUAL phone (profile virtual-flagship: onnxruntime on this host, scaled to the pinned frequency) the
same N small sr_block configs are measured twice with each protocol, at the big cluster's lowest frequency:

- baseline: `runs` timed runs in one invocation per record (passes = 1),
- passes: the same number of runs split into `passes` invocations, one per pass through the N configs.

After an untimed sweep that pushes the models, the four sweeps run in the order baseline, passes, passes,
baseline, so both protocols see the host in the same minutes. A protocol's repeatability is how often its
two measurements of a config agree within ±10 % (and the median |log ratio| between them). Disturbances of
the host last from a fraction of a second to seconds and slow every run a record takes while they last;
passes spread a record's runs over the sweep, so one disturbance meets a fraction of them.

    .venv/bin/python bench/bench_passes.py [--configs 150 --runs 10 --passes 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_accuracy import PHONE_PROFILE, SMALL_SPACE

from profilers.adb import DeviceSession, Profiler, ProfileRequest, RuntimeSettings
from profilers.blocks import get_family
from profilers.virtual_phone import VirtualPhone


def _agreement(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """Share of configs whose two medians agree within ±10 %, and the median |log ratio|."""
    ratio = first / second
    return float(np.mean(np.abs(ratio - 1.0) <= 0.10)), float(np.median(np.abs(np.log(ratio))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=150)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args()

    family = get_family("sr_block")
    rng = random.Random(args.seed)
    configs = [family.sample(rng, SMALL_SPACE).model_dump(mode="json") for _ in range(args.configs)]
    protocols = {
        "baseline": RuntimeSettings(runs=args.runs, warmup=1, passes=1),
        "passes": RuntimeSettings(runs=args.runs, warmup=1, passes=args.passes),
    }
    medians: dict[str, list[np.ndarray]] = {name: [] for name in protocols}
    seconds: dict[str, float] = dict.fromkeys(protocols, 0.0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        VirtualPhone(PHONE_PROFILE, state_dir=Path(tmp) / "phone") as phone,
    ):
        phone.set_heat_rate(0.05)  # no throttling: every record stays valid
        with DeviceSession.connect(
            f"127.0.0.1:{phone.port}", key_path=Path(tmp) / "adbkey", command_timeout_s=600
        ) as session:
            profilers = {
                name: Profiler(session, runtime, cooldown_celsius=None) for name, runtime in protocols.items()
            }
            khz = profilers["baseline"].facts.clusters[-1].frequencies_khz[0]
            requests = [
                ProfileRequest(family="sr_block", config=c, cluster="big", frequency_khz=khz) for c in configs
            ]
            # One untimed sweep first: pushes every model and settles the host (the first sweep of a
            # fresh process runs slower), then A B B A so that a linear drift favours neither protocol.
            list(
                Profiler(session, RuntimeSettings(runs=1, warmup=0), cooldown_celsius=None).measure(requests)
            )
            for names in (list(protocols), list(protocols)[::-1]):
                for name in names:
                    profiler = profilers[name]
                    started = time.perf_counter()
                    records = list(profiler.measure(requests))
                    seconds[name] += time.perf_counter() - started
                    if not all(r.valid for r in records):
                        raise RuntimeError(f"{name}: invalid records: {[r.invalid_reason for r in records]}")
                    medians[name].append(np.array([r.median_ms for r in records]))

    print(
        f"\nRepeatability of {args.configs} sr_block configs measured twice per protocol on a VIRTUAL phone "
        f"({PHONE_PROFILE}, onnxruntime on this host; not a real device), big cluster at "
        f"{khz / 1e6:.2f} GHz, {args.runs} timed runs a record"
    )
    head = f"{'protocol':<9} {'passes':>6} | {'agree ±10%':>10} {'median |Δ|':>10} | {'wall s':>6}"
    print(head)
    print("-" * len(head))
    agreement = {}
    for name, runtime in protocols.items():
        agreement[name] = _agreement(*medians[name])
        share, spread = agreement[name]
        print(f"{name:<9} {runtime.passes:>6} | {share:>10.1%} {spread:>9.2%} | {seconds[name]:>6.1f}")
    disagree = {name: 1.0 - share for name, (share, _) in agreement.items()}
    print(
        f"disagreements, baseline / passes: {disagree['baseline'] / max(disagree['passes'], 1e-9):.2f}x; "
        f"median |Δ|, baseline / passes: {agreement['baseline'][1] / agreement['passes'][1]:.2f}x; "
        f"wall time, passes / baseline: {seconds['passes'] / seconds['baseline']:.2f}x"
    )


if __name__ == "__main__":
    main()
