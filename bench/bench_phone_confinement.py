"""What confining the virtual phone's work costs, and what it bounds.

Prints a table with the baseline measured in the same run beside each figure:
- a benchmark command (`-m times -r 10`, tiny model) through the phone, whose runs happen in a forked child
  process, vs. the same session creation + 11 runs done directly in this process (the cost of the child);
- the phone process's resident memory and thread count after a default (`-m duration -t 600`) benchmark on a
  tiny model, which stops at the run limit, vs. the same phone idle before it;
- how long after its client disconnects the phone is idle again, for a shell loop and for a duration-mode
  benchmark (without confinement neither ended: the loop ran on, the benchmark for its 600 s).

Run: `.venv/bin/python bench/bench_phone_confinement.py [--rounds 5]`
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort
from adb_shell.adb_device import AdbDeviceTcp
from onnx import TensorProto, helper, numpy_helper

from profilers.virtual_phone import BENCHMARK_BINARY, VirtualPhone
from profilers.virtual_phone.bench_process import BenchmarkLimits
from profilers.virtual_phone.transport import A_OPEN, pack_message

BENCH = "/data/local/tmp/latfarm/bin/onnxruntime_perf_test"
MODEL = "/data/local/tmp/latfarm/models/tiny.onnx"


def tiny_model() -> bytes:
    """One 3×3 conv over 3×16×16: microseconds per run, the worst case for per-run overheads."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w"
    )
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def direct(model: bytes) -> float:
    """Session creation + 11 runs in this process (the phone's child does the same, plus a fork)."""
    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    for _ in range(11):
        session.run(None, feeds)
    return time.perf_counter() - t0


def rss_and_threads() -> tuple[int, int]:
    """This process's resident bytes and thread count (the phone serves from a thread of this process)."""
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def idle_after_disconnect(phone: VirtualPhone, command: str, started: object) -> float:
    """Open `command` on a raw connection, wait until it runs, drop the connection: seconds until idle."""
    import socket

    sock = socket.create_connection(("127.0.0.1", phone.port))
    sock.sendall(pack_message(0x4E584E43, 0x01000000, 256 * 1024, b"host::bench\0"))
    sock.recv(4096)
    sock.sendall(pack_message(A_OPEN, 1, 0, command.encode() + b"\0"))
    sock.recv(24)
    if callable(started):
        started()
    t0 = time.perf_counter()
    sock.close()
    assert phone.wait_idle(timeout=60), "still busy after 60 s"
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = tiny_model()
    rows: list[tuple[str, str, str]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        VirtualPhone(state_dir=Path(tmp) / "phone", bench_limits=BenchmarkLimits(max_runs=100_000)) as phone,
    ):
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=120)
        dev.connect()
        dev.push(str(BENCHMARK_BINARY), BENCH, st_mode=0o100755)
        dev.push(io.BytesIO(model), MODEL, st_mode=0o100644)
        dev.shell(f"{BENCH} -m times -r 1 -I {MODEL}")  # starts the forkserver once
        through, straight = [], []
        for _ in range(args.rounds):
            straight.append(direct(model))
            t0 = time.perf_counter()
            dev.shell(f"{BENCH} -m times -r 10 -x 1 -I {MODEL}", read_timeout_s=120)
            through.append(time.perf_counter() - t0)
        rows.append(
            (
                "benchmark command -r 10, median wall (ms)",
                f"{1000 * statistics.median(through):.1f}",
                f"direct in-process session + 11 runs: {1000 * statistics.median(straight):.1f} ms",
            )
        )
        idle_rss, idle_threads = rss_and_threads()
        t0 = time.perf_counter()
        out = dev.shell(f"{BENCH} -I {MODEL}", read_timeout_s=600)  # the default: -m duration -t 600
        wall = time.perf_counter() - t0
        runs = next(line for line in out.splitlines() if line.startswith("Total inference requests"))
        rss, threads = rss_and_threads()
        rows.append(
            (
                "default duration benchmark, tiny model",
                f"{wall:.1f} s",
                f"{runs.split(': ')[1]} runs (the run limit), not 600 simulated s",
            )
        )
        rows.append(
            ("phone process RSS after it (MB)", f"{rss / 2**20:.0f}", f"idle before: {idle_rss / 2**20:.0f}")
        )
        rows.append(("phone process threads after it", str(threads), f"idle before: {idle_threads}"))
        dev.close()
        loop = idle_after_disconnect(phone, "shell:while true; do while true; do :; done; done", None)
        rows.append(
            (
                "shell loop: idle after disconnect (ms)",
                f"{1000 * loop:.1f}",
                "old code: ran on (issue 15: > 75 s)",
            )
        )
        bench = idle_after_disconnect(
            phone, f"shell:{BENCH} -m duration -t 600 -I {MODEL}", lambda: phone.wait_benchmark_pids(1, 30)
        )
        rows.append(
            ("benchmark: idle after disconnect (ms)", f"{1000 * bench:.1f}", "old code: its whole 600 s")
        )
    print(f"{'measure':<44} {'value':>10}  baseline / note")
    print("-" * 100)
    for name, value, note in rows:
        print(f"{name:<44} {value:>10}  {note}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
