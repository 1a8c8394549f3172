"""The benchmark program: onnxruntime_perf_test's output, frequency scaling, errors, the benchmark log."""

from __future__ import annotations

import io
import re

from adb_shell.adb_device import AdbDeviceTcp

from profilers.virtual_phone import VirtualPhone, count_overlaps
from tests.profilers.virtual_phone.phone_kit import BENCH_PATH, MODEL_PATH, run

POLICY7 = "/sys/devices/system/cpu/cpufreq/policy7"
SUMMARY = [
    r"Session creation time cost: [\d.e+-]+ s",
    r"First inference time cost: \d+ ms",
    r"Total inference time cost: [\d.e+-]+ s",
    r"Total inference requests: 5",
    r"Average inference time cost total: \d+\.\d{6} ms",
    r"Total inference run time: [\d.e+-]+ s",
    r"Number of inferences per second: [\d.e+-]+ ",
    r"Avg CPU usage: \d+ %",
    r"Peak working set size: \d+ bytes",
]
STATS = [rf"{name} Latency: [\d.e+-]+ s" for name in ("Min", "Max", "P50", "P90", "P95", "P99", "P999")]


def p50_ms(out: str) -> float:
    return float(re.search(r"P50 Latency: ([\d.e+-]+) s", out).group(1)) * 1000


def test_output_has_the_real_tools_format(installed: AdbDeviceTcp, phone: VirtualPhone) -> None:
    out, rc = run(
        installed, f"{BENCH_PATH} -m times -r 5 -x 1 -e cpu -I -s {MODEL_PATH} /data/local/tmp/r.txt"
    )
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0] == "Setting intra_op_num_threads to 1"
    for pattern, line in zip(SUMMARY + STATS, lines[1:], strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)
    result, rc = run(installed, "cat /data/local/tmp/r.txt")
    rows = [r for r in result.splitlines() if r.count(",") == 4]
    assert [r.split(",")[0] for r in rows] == ["tiny"] * 5
    assert [int(r.split(",")[4]) for r in rows] == list(range(5))
    assert "P50 Latency:" in result
    assert len(phone.benchmark_intervals()) == 1


def test_without_s_no_percentiles_are_printed(installed: AdbDeviceTcp) -> None:
    out, rc = run(installed, f"{BENCH_PATH} -m times -r 3 -I {MODEL_PATH}")
    assert rc == 0 and "Total inference requests: 3" in out and "Latency" not in out


def test_a_pinned_lower_frequency_reports_slower_times(installed: AdbDeviceTcp) -> None:
    pin = f"su -c 'echo userspace > {POLICY7}/scaling_governor; echo %d > {POLICY7}/scaling_setspeed'"
    bench = f"taskset 80 {BENCH_PATH} -m times -r 15 -s -I {MODEL_PATH}"
    run(installed, pin % 2995200)
    fast = p50_ms(run(installed, bench)[0])
    run(installed, pin % 787200)
    slow = p50_ms(run(installed, bench)[0])
    # 787 MHz vs f_ref = 2995 MHz with c = 0.85 scales by ~3.4; host noise cannot close that gap
    assert slow > 1.8 * fast


def test_throttling_caps_the_frequency_the_benchmark_runs_at(
    installed: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    run(installed, f"su -c 'echo performance > {POLICY7}/scaling_governor'")
    assert run(installed, f"cat {POLICY7}/scaling_cur_freq")[0] == "2995200\n"
    phone.set_temperature(phone.profile.thermal.trip_c + 15)
    capped = int(run(installed, f"cat {POLICY7}/scaling_cur_freq")[0])
    assert capped < 2995200
    assert (
        int(run(installed, "cat /sys/class/thermal/thermal_zone0/temp")[0])
        > phone.profile.thermal.trip_c * 1000
    )


def test_sustained_load_raises_the_temperature(installed: AdbDeviceTcp, phone: VirtualPhone) -> None:
    idle = int(run(installed, "cat /sys/class/thermal/thermal_zone0/temp")[0])
    # A test-sized run lasts milliseconds: a huge heat rate makes it heat as much as a campaign would.
    phone.set_heat_rate(5000.0)
    assert run(installed, f"{BENCH_PATH} -m times -r 30 -I {MODEL_PATH}")[1] == 0
    hot = int(run(installed, "cat /sys/class/thermal/thermal_zone0/temp")[0])
    assert hot > idle + 500


def test_taskset_selects_the_cluster(installed: AdbDeviceTcp, phone: VirtualPhone) -> None:
    for mask in ("0f", "70", "80", "ff"):
        assert run(installed, f"taskset {mask} {BENCH_PATH} -m times -r 1 -I {MODEL_PATH}")[1] == 0
    assert run(installed, f"{BENCH_PATH} -m times -r 1 -I {MODEL_PATH}")[1] == 0
    assert [r["cluster"] for r in phone.benchmark_runs()] == ["little", "big", "prime", "prime", "prime"]


def test_an_invalid_model_fails_with_a_message(installed: AdbDeviceTcp) -> None:
    installed.push(io.BytesIO(b"this is not onnx"), "/data/local/tmp/bad.onnx")
    out, rc = run(installed, f"{BENCH_PATH} -m times -r 2 -I /data/local/tmp/bad.onnx")
    assert rc == 255 and "failed" in out and "Average" not in out
    out, rc = run(installed, f"{BENCH_PATH} -m times -r 2 -I /data/local/tmp/missing.onnx")
    assert rc == 255 and "No such file or directory" in out
    out, rc = run(installed, f"{BENCH_PATH} -m sometimes {MODEL_PATH}")
    assert rc == 255 and "usage" in out
    out, rc = run(installed, f"{BENCH_PATH} -e nnapi -I {MODEL_PATH}")
    assert rc == 255 and "not supported" in out


def test_not_executable_or_missing_program(installed: AdbDeviceTcp) -> None:
    assert run(installed, f"chmod 644 {BENCH_PATH}; {BENCH_PATH} {MODEL_PATH}")[1] == 126
    assert run(installed, f"/data/local/tmp/nothing {MODEL_PATH}")[1] == 127


def test_garbage_fault_prints_unparsable_output(installed: AdbDeviceTcp, phone: VirtualPhone) -> None:
    phone.set_fault(garbage_benchmark=True)
    out, rc = run(installed, f"{BENCH_PATH} -m times -r 3 -s -I {MODEL_PATH}")
    assert rc == 0
    assert not re.search(r"Average inference time cost total: \d", out)
    assert "Total inference requests: 3" not in out


def test_sequential_runs_never_overlap_and_other_processes_can_read_the_log(
    installed: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    for _ in range(3):
        assert run(installed, f"{BENCH_PATH} -m times -r 2 -I {MODEL_PATH}")[1] == 0
    assert phone.count_overlapping_benchmarks() == 0
    reader = VirtualPhone(state_dir=phone.state_dir)  # not started: reads the same state dir
    intervals = reader.benchmark_intervals()
    assert len(intervals) == 3 and all(start < end for start, end in intervals)


def test_count_overlaps() -> None:
    assert count_overlaps([]) == 0
    assert count_overlaps([(0, 1), (1, 2), (2, 3)]) == 0
    assert count_overlaps([(0, 5), (1, 2), (3, 4)]) == 2
    assert count_overlaps([(2, 3), (0, 10), (1, 4)]) == 3


def test_concurrent_benchmarks_are_counted_as_overlapping(
    installed: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    import threading
    import time

    other = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=30)
    other.connect()
    results: list[tuple[str, int]] = []
    long_run = threading.Thread(
        target=lambda: results.append(run(other, f"{BENCH_PATH} -m duration -t 1.5 -I {MODEL_PATH}"))
    )
    long_run.start()
    deadline = time.monotonic() + 30
    while not phone.soc.busy_clusters() and time.monotonic() < deadline:
        time.sleep(0.005)  # no event to await across the phone's thread: bounded polling
    assert phone.soc.busy_clusters() == ["prime"]
    assert run(installed, f"taskset 0f {BENCH_PATH} -m times -r 2 -I {MODEL_PATH}")[1] == 0
    long_run.join(timeout=60)
    other.close()
    assert results[0][1] == 0
    assert len(phone.benchmark_intervals()) == 2
    assert phone.count_overlapping_benchmarks() == 1
