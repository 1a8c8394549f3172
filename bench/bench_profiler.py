"""Profiler benchmarks against a virtual phone, printed as a table.

1. Overhead: N sr_block configs × 2 pinned frequencies × R runs through ``Profiler.measure``;
   overhead = wall time / sum of the device-reported timed runs (target ≤ 1.15). The wall time
   includes everything the profiler does per measurement: building the ONNX model, the push, the
   benchmark program's session creation and its built-in first inference, frequency/temperature reads.
2. Shell round trip through ``DeviceSession.shell`` (median of M calls), with TCP_NODELAY (ours) and
   without (adb_shell's default) as the baseline measured in the same run (target ≤ 2 ms).
3. Pushes saved by the content-addressed device cache (a second profiler pass measures the same
   configs again, as a re-run job or a second worker would).

The virtual phone's heat rate is lowered so thermal throttling does not invalidate the overhead run;
``--warmup`` defaults to 0 because warm-up runs are not part of the device-reported time.

    .venv/bin/python bench/bench_profiler.py [--configs 50 --runs 10 --height 180 --width 320]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.adb import DeviceSession, Profiler, ProfileRequest, RuntimeSettings
from profilers.blocks import get_family
from profilers.virtual_phone import VirtualPhone


def _configs(count: int, height: int, width: int, seed: int) -> list[dict]:
    fam = get_family("sr_block")
    space = fam.search_space_example()
    space["height"] = {"choices": [height]}
    space["width"] = {"choices": [width]}
    rng = random.Random(seed)
    seen: dict[str, dict] = {}
    while len(seen) < count:
        cfg = fam.sample(rng, space)
        seen.setdefault(cfg.model_dump_json(), cfg.model_dump(mode="json"))
    return list(seen.values())


def _round_trips(session: DeviceSession, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        session.shell("true")
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> int:
    """Run the three measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        VirtualPhone("virtual-flagship", state_dir=Path(tmp) / "phone") as phone,
    ):
        phone.set_heat_rate(0.05)
        address = f"127.0.0.1:{phone.port}"
        key = Path(tmp) / "adbkey"
        rows: list[tuple[str, str, str, str]] = []

        # 2. Shell round trip, NODELAY vs adb_shell's default, in the same run. Our virtual phone sets
        # TCP_QUICKACK itself, which hides the stall; a second phone without it behaves like adbd.
        trips: dict[tuple[bool, bool], float] = {}
        with VirtualPhone("virtual-flagship", state_dir=Path(tmp) / "adbd-like", quickack=False) as adbd_like:
            for quickack, port in ((True, phone.port), (False, adbd_like.port)):
                for nodelay in (False, True):
                    with DeviceSession.connect(f"127.0.0.1:{port}", key_path=key, tcp_nodelay=nodelay) as s:
                        trips[quickack, nodelay] = _round_trips(s, args.round_trips)

        # 1. Overhead of the profiler.
        configs = _configs(args.configs, args.height, args.width, args.seed)
        with DeviceSession.connect(address, key_path=key, command_timeout_s=600) as session:
            runtime = RuntimeSettings(runs=args.runs, warmup=args.warmup, threads=1)
            profiler = Profiler(session, runtime, cooldown_celsius=None)
            big = profiler.facts.clusters[-1]
            # The top frequency first, so it also carries every model build and push (the conservative
            # side). The virtual phone scales host time by c·f_ref/f + (1 − c), and f_ref is the big
            # cluster's top frequency: there device time equals host time, so that row is the honest one.
            freqs = [big.frequencies_khz[-1], big.frequencies_khz[len(big.frequencies_khz) // 2]]
            requests = [
                ProfileRequest(family="sr_block", config=cfg, cluster="big", frequency_khz=khz)
                for khz in freqs
                for cfg in configs
            ]
            records = []
            walls: dict[int, float] = {}
            for khz in freqs:
                t0 = time.perf_counter()
                records += list(profiler.measure([r for r in requests if r.frequency_khz == khz]))
                walls[khz] = time.perf_counter() - t0
            wall = sum(walls.values())
            device_s = sum(sum(r.raw_runs_ms) for r in records) / 1000.0
            invalid = sum(not r.valid for r in records)
            first_pushes, first_hits = profiler.pushes, profiler.cache_hits

            # 3. A second pass by a fresh profiler: every model is already in the device cache.
            again = Profiler(session, RuntimeSettings(runs=1, warmup=0), cooldown_celsius=None)
            list(again.measure(requests))
            pushes = first_pushes + again.pushes
            without_cache = 2 * len(requests)

        per_freq = []
        for khz in freqs:
            sel_s = sum(sum(r.raw_runs_ms) for r in records if r.frequency_khz == khz) / 1000.0
            per_freq.append((khz, walls[khz] / sel_s))
        rows.append(
            (
                f"profiler overhead ({len(configs)} cfg × 2 freq × {args.runs} runs, warmup {args.warmup})",
                f"{wall / device_s:.3f}",
                "≤ 1.15",
                f"wall {wall:.1f} s / device runs {device_s:.1f} s; {invalid} invalid records",
            )
        )
        for khz, ratio in per_freq:
            note = "device time = host time" if khz == freqs[0] else "device time > host time (scaled)"
            rows.append((f"  wall / device runs @ {khz} kHz", f"{ratio:.3f}", "≤ 1.15", note))
        for quickack, label in ((False, "adbd-like phone (no QUICKACK)"), (True, "virtual phone (QUICKACK)")):
            fast_ms, plain_ms = trips[quickack, True], trips[quickack, False]
            rows.append(
                (
                    f"shell round trip, median, TCP_NODELAY, {label}",
                    f"{fast_ms:.3f} ms",
                    "≤ 2 ms",
                    f"baseline without NODELAY {plain_ms:.3f} ms ({plain_ms / fast_ms:.1f}×)",
                )
            )
        rows.append(
            (
                "pushes with the device cache",
                f"{pushes}",
                f"{without_cache} without",
                f"saved {without_cache - pushes} ({first_hits} hits in pass 1, {again.cache_hits} in pass 2)",
            )
        )

    widths = [max(len(r[i]) for r in [*rows, ("measurement", "value", "target", "notes")]) for i in range(4)]
    header = ("measurement", "value", "target", "notes")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
