"""Virtual phone performance: shell round trip, push throughput, benchmark-program overhead.

Prints a table with the baseline measured in the same run beside each figure:
- `shell('true')` through adb_shell, 200 calls: median and p99, with TCP_QUICKACK (target ≤ 2 ms) and
  without it (the Nagle/delayed-ACK stall, ~40 ms, that QUICKACK removes);
- push of a 20 MB file (MB/s), with a pull back to check the bytes (phone in its own process for both);
- benchmark-program overhead: the P50 that the virtual `onnxruntime_perf_test` reports with the prime
  cluster pinned at f = f_ref, divided by the P50 of the same model run directly with onnxruntime in this
  process (same session options, same input shapes) — target ≤ 1.05.

Run: `.venv/bin/python bench/bench_virtual_phone.py [--calls 200] [--push-mb 20] [--runs 100] [--rounds 5]`
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from adb_shell.adb_device import AdbDeviceTcp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profilers.blocks import get_family  # noqa: E402
from profilers.virtual_phone import BENCHMARK_BINARY, VirtualPhone  # noqa: E402

BENCH = "/data/local/tmp/latfarm/bin/onnxruntime_perf_test"
MODEL = "/data/local/tmp/latfarm/models/bench.onnx"
PRIME = "/sys/devices/system/cpu/cpufreq/policy7"


def sr_block_model() -> bytes:
    """A small block of the seed's `sr_block` family: a few milliseconds per run on one thread."""
    family = get_family("sr_block")
    return family.to_onnx(family.parse({"scale": 2, "height": 90, "width": 160, "widths": [16, 16, 16]}))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@contextlib.contextmanager
def phone_process(*extra: str) -> Iterator[int]:
    """A virtual phone in its own process (as `latfarm phone` runs it): the client keeps its own GIL."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "profilers.virtual_phone", "--port", "0", "--state-dir", tmp, *extra],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            line = proc.stdout.readline()
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if not match:
                raise RuntimeError(f"phone did not start: {line!r}")
            yield int(match.group(1))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def shell_round_trips(quickack: bool, calls: int) -> list[float]:
    with phone_process(*([] if quickack else ["--no-quickack"])) as port:
        dev = AdbDeviceTcp("127.0.0.1", port, default_transport_timeout_s=10)
        dev.connect()
        for _ in range(5):
            dev.shell("true")
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            dev.shell("true")
            times.append((time.perf_counter() - t0) * 1000)
        dev.close()
    return times


def push_throughput(megabytes: int) -> tuple[float, float, bool]:
    payload = os.urandom(megabytes * 1024 * 1024)
    with phone_process() as port:
        dev = AdbDeviceTcp("127.0.0.1", port, default_transport_timeout_s=30)
        dev.connect()
        t0 = time.perf_counter()
        dev.push(io.BytesIO(payload), "/data/local/tmp/big.bin")
        push_s = time.perf_counter() - t0
        back = io.BytesIO()
        t0 = time.perf_counter()
        dev.pull("/data/local/tmp/big.bin", back, read_timeout_s=30)
        pull_s = time.perf_counter() - t0
        dev.close()
    return megabytes / push_s, megabytes / pull_s, back.getvalue() == payload


def direct_onnxruntime_ms(model: bytes, runs: int) -> list[float]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    feed = {inp.name: np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def virtual_benchmark_ms(model: bytes, runs: int) -> tuple[float, float]:
    """(P50, Min) in ms as the virtual onnxruntime_perf_test reports them, prime cluster pinned at f_ref."""
    with tempfile.TemporaryDirectory() as tmp, VirtualPhone(state_dir=tmp) as phone:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=60)
        dev.connect()
        dev.push(str(BENCHMARK_BINARY), BENCH, st_mode=0o100755)
        dev.push(io.BytesIO(model), MODEL)
        f_ref = phone.profile.clusters[2].f_ref_khz
        dev.shell(
            f"su -c 'echo userspace > {PRIME}/scaling_governor; echo {f_ref} > {PRIME}/scaling_setspeed'"
        )
        assert dev.shell(f"cat {PRIME}/scaling_cur_freq").strip() == str(f_ref)
        out = dev.shell(f"taskset 80 {BENCH} -m times -r {runs} -x 1 -s -I {MODEL}", read_timeout_s=120)
        dev.close()
    p50 = re.search(r"P50 Latency: ([\d.e+-]+) s", out)
    low = re.search(r"Min Latency: ([\d.e+-]+) s", out)
    if not p50 or not low:
        raise RuntimeError(f"unexpected benchmark output: {out!r}")
    return float(p50.group(1)) * 1000, float(low.group(1)) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--push-mb", type=int, default=20)
    parser.add_argument("--runs", type=int, default=100, help="benchmark runs per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating direct/virtual rounds")
    args = parser.parse_args()

    fast = shell_round_trips(True, args.calls)
    slow = shell_round_trips(False, max(20, args.calls // 10))  # 40 ms each: fewer calls suffice
    push_mbs, pull_mbs, same = push_throughput(args.push_mb)
    model = sr_block_model()
    # Alternate direct and virtual rounds so drift on a shared machine hits both alike; median of the rounds.
    ratios, min_ratios, reported_all, direct_all = [], [], [], []
    for _ in range(args.rounds):
        before = direct_onnxruntime_ms(model, args.runs)
        reported_round, reported_min = virtual_benchmark_ms(model, args.runs)
        after = direct_onnxruntime_ms(model, args.runs)
        direct_round = (statistics.median(before) + statistics.median(after)) / 2
        ratios.append(reported_round / direct_round)
        min_ratios.append(reported_min / min(before + after))
        reported_all.append(reported_round)
        direct_all.append(direct_round)
    reported, direct = statistics.median(reported_all), statistics.median(direct_all)

    rows = [
        (
            "shell('true') median, QUICKACK (ms)",
            statistics.median(fast),
            "≤ 2",
            f"{statistics.median(slow):.2f} without QUICKACK",
        ),
        (
            "shell('true') p99, QUICKACK (ms)",
            percentile(fast, 0.99),
            "",
            f"{percentile(slow, 0.99):.2f} without QUICKACK",
        ),
        ("QUICKACK speed-up (median)", statistics.median(slow) / statistics.median(fast), "", "x"),
        (f"push {args.push_mb} MB (MB/s)", push_mbs, "", f"pull {pull_mbs:.0f} MB/s, bytes equal: {same}"),
        ("benchmark P50 reported at f_ref (ms)", reported, "", f"direct onnxruntime P50 {direct:.3f} ms"),
        (
            "benchmark overhead (reported / direct)",
            statistics.median(ratios),
            "≤ 1.05",
            f"P50s, median of {args.rounds} rounds",
        ),
        (
            "benchmark overhead, fastest runs",
            statistics.median(min_ratios),
            "≤ 1.05",
            "Min / min: least load noise",
        ),
    ]
    print(f"{'measure':42} {'value':>10} {'target':>8}  baseline / note")
    print("-" * 100)
    for name, value, target, note in rows:
        print(f"{name:42} {value:10.3f} {target:>8}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
