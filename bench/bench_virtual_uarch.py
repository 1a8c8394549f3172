"""Virtual phones that differ in kind: each profile's time relative to the flagship, config by config.

Claim (latfarm issue #14, item 1): with per-cluster microarchitectures (profilers/virtual_phone/microarch.py)
two virtual phones are no longer a constant factor apart. For a handful of real `sr_block` configs (kernel 1,
3 and 5, narrow and wide, small and large maps, PReLU, a residual) every shipped profile runs the real
`onnxruntime_perf_test` stand-in over adb on its fastest cluster, pinned at that cluster's top frequency (each
phone is started rooted so the governor can be pinned; the budget phone's microarchitecture is the same either
way). A time is the P50 of one benchmark's runs, and the median of that over `--rounds` interleaved rounds
(flagship, every other profile, flagship again: a burst of load from elsewhere on the host hits all alike).
The flagship (the reference microarchitecture) thus runs each config twice per round, before and after the
others, so its repeat noise is measured in the same run.

The table: per config, each profile's time / the flagship's first time, and the flagship's second / first.
Under it, per profile, the spread of that ratio across configs (max / min): a constant-factor phone shows the
flagship's repeat-noise spread; a phone that differs in kind shows more.

Run (niced on a shared machine):
`nice -n 19 .venv/bin/python bench/bench_virtual_uarch.py [--runs 200] [--rounds 3]`
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from adb_shell.adb_device import AdbDeviceTcp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profilers.blocks import get_family  # noqa: E402
from profilers.virtual_phone import BENCHMARK_BINARY, VirtualPhone, list_profiles, load_profile  # noqa: E402
from profilers.virtual_phone.microarch import COST_CACHE  # noqa: E402

BENCH = "/data/local/tmp/latfarm/bin/onnxruntime_perf_test"
MODEL_DIR = "/data/local/tmp/latfarm/models"
FLAGSHIP = "virtual-flagship"
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("k3 w16x3 64²", {"scale": 2, "height": 64, "width": 64, "widths": [16, 16, 16]}),
    ("k3 w32x4 96²", {"scale": 2, "height": 96, "width": 96, "widths": [32, 32, 32, 32]}),
    ("k1 w64x3 64²", {"scale": 2, "height": 64, "width": 64, "kernel": 1, "widths": [64, 64, 64]}),
    ("k5 w24x2 48² x3", {"scale": 3, "height": 48, "width": 48, "kernel": 5, "widths": [24, 24]}),
    ("k3 w8x6 32² x4", {"scale": 4, "height": 32, "width": 32, "widths": [8, 8, 8, 8, 8, 8]}),
    (
        "k3 w48x2 128² prelu res",
        {
            "scale": 2,
            "height": 128,
            "width": 128,
            "widths": [48, 48],
            "activation": "prelu",
            "residual": True,
        },
    ),
]


class Phone:
    """One virtual phone of a profile, its fastest cluster pinned at its top frequency."""

    def __init__(self, stack: contextlib.ExitStack, profile: str, state: Path) -> None:
        self.profile = profile
        spec = load_profile(profile)
        fastest = max(spec.clusters, key=lambda c: (c.frequencies_khz[-1] / c.f_ref_khz, c.cpus[0]))
        self.cluster = fastest.name
        self.cpu = fastest.cpus[0]
        self.microarch = fastest.microarch.name
        phone = stack.enter_context(VirtualPhone(profile=profile, state_dir=state / profile, rooted=True))
        self.dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=30)
        self.dev.connect(read_timeout_s=30)
        stack.callback(self.dev.close)
        self.dev.push(str(BENCHMARK_BINARY), BENCH, st_mode=0o100755)
        policy = f"/sys/devices/system/cpu/cpufreq/policy{self.cpu}"
        top = fastest.frequencies_khz[-1]
        self.dev.shell(
            f"su -c 'echo userspace > {policy}/scaling_governor; echo {top} > {policy}/scaling_setspeed'"
        )
        assert self.dev.shell(f"cat {policy}/scaling_cur_freq").strip() == str(top), profile

    def push(self, name: str, model: bytes) -> None:
        self.dev.push(io.BytesIO(model), f"{MODEL_DIR}/{name}.onnx", st_mode=0o100644)

    def p50(self, name: str, runs: int) -> float:
        """The P50 latency (s) of `runs` runs of model `name` on the pinned cluster."""
        mask = format(1 << self.cpu, "x")
        out = self.dev.shell(
            f"taskset {mask} {BENCH} -m times -r {runs} -x 1 -s -I {MODEL_DIR}/{name}.onnx",
            read_timeout_s=300,
        )
        match = re.search(r"^P50 Latency: ([0-9.e+-]+) s$", out, re.M)
        if not match:
            raise RuntimeError(f"{self.profile}: no P50 in {out!r}")
        return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per benchmark (P50 of them)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds per config (median of them)"
    )
    args = parser.parse_args()
    family = get_family("sr_block")
    models = {f"c{i}": family.to_onnx(family.parse(cfg)) for i, (_label, cfg) in enumerate(CONFIGS)}
    others = [p for p in list_profiles() if p != FLAGSHIP]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        phones = {p: Phone(stack, p, Path(tmp)) for p in [FLAGSHIP, *others]}
        for phone in phones.values():
            for name, model in models.items():
                phone.push(name, model)
        rows: list[tuple[str, dict[str, float], float]] = []
        for i, (label, _cfg) in enumerate(CONFIGS):
            name = f"c{i}"
            first: list[float] = []
            again: list[float] = []
            times: dict[str, list[float]] = {p: [] for p in others}
            for _round in range(args.rounds):  # interleaved, so a burst of host load hits every profile alike
                first.append(phones[FLAGSHIP].p50(name, args.runs))
                for p in others:
                    times[p].append(phones[p].p50(name, args.runs))
                again.append(phones[FLAGSHIP].p50(name, args.runs))
            reference = statistics.median(first)
            ratios = {p: statistics.median(times[p]) / reference for p in others}
            rows.append(
                (f"{label} ({reference * 1000:.2f} ms)", ratios, statistics.median(again) / reference)
            )
    wall = time.perf_counter() - t0

    print(
        f"sr_block configs × virtual profiles: P50 of {args.runs} runs, median of {args.rounds} interleaved "
        "rounds, fastest cluster at its top clock"
    )
    print("(virtual numbers; ratio = profile / flagship's first time, same config, same run)\n")
    for p in [FLAGSHIP, *others]:
        print(f"  {p:<24} {phones[p].cluster:<6} {phones[p].microarch}")
    print()
    width = max(len(r[0]) for r in rows) + 2
    head = "".join(f"{p.removeprefix('virtual-'):>17}" for p in others)
    print(f"{'config (flagship time)':<{width}}{head}{'flagship again':>17}")
    for label, ratios, repeat in rows:
        print(f"{label:<{width}}" + "".join(f"{ratios[p]:>17.3f}" for p in others) + f"{repeat:>17.3f}")

    def spread(values: list[float]) -> str:
        return f"{max(values) / min(values):.3f}"

    def cv(values: list[float]) -> str:
        return f"{statistics.pstdev(values) / statistics.mean(values) * 100:.1f} %"

    repeats = [r[2] for r in rows]
    print("-" * (width + 17 * (len(others) + 1)))
    print(
        f"{'spread max/min':<{width}}"
        + "".join(f"{spread([r[1][p] for r in rows]):>17}" for p in others)
        + f"{spread(repeats):>17}"
    )
    print(
        f"{'coefficient of variation':<{width}}"
        + "".join(f"{cv([r[1][p] for r in rows]):>17}" for p in others)
        + f"{cv(repeats):>17}"
    )
    print(
        f"\nper-node host profiles measured: {len(CONFIGS)} models, cached per (model, threads) — "
        f"{sum(1 for name in models if COST_CACHE.get(COST_CACHE.digest(models[name]), 1))} in the cache; "
        f"wall time {wall:.0f} s"
    )


if __name__ == "__main__":
    main()
