"""GPU and NPU runs through the phone: onnxruntime_perf_test -e qnn|nnapi, its -p profile, benchmark_model."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from adb_shell.adb_device import AdbDeviceTcp

from profilers.adb.parsers import parse_onnxruntime_perf_test, parse_tflite_benchmark_model
from profilers.virtual_phone import TFLITE_BENCHMARK_BINARY, VirtualPhone
from tests.profilers.virtual_phone.phone_kit import (
    BENCH_PATH,
    TFLITE_PATH,
    Layer,
    fp16_model,
    int8_model,
    net,
    run,
)

MODELS = "/data/local/tmp/latfarm/models"
GPU_DEVFREQ = "/sys/class/kgsl/kgsl-3d0/devfreq"
QNN_GPU = "-e qnn -i 'backend_type|gpu'"
COMPUTE_BOUND = net([Layer(cout=128, k=5)], cin=128, size=32)
HEAVY = net([Layer(cout=64, k=3), Layer("Relu"), Layer(cout=64, k=3), Layer("Relu")], cin=16, size=64)


def _push(device: AdbDeviceTcp, name: str, model: bytes) -> str:
    path = f"{MODELS}/{name}"
    device.push(io.BytesIO(model), path, st_mode=0o100644)
    return path


def _profile(device: AdbDeviceTcp, prefix: str) -> list[dict[str, Any]]:
    """The one profile file `-p PREFIX` wrote in /data/local/tmp, parsed."""
    names = run(device, "ls /data/local/tmp")[0].split()
    (name,) = [n for n in names if re.fullmatch(rf"{prefix}_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d\.json", n)]
    events: list[dict[str, Any]] = json.loads(run(device, f"cat /data/local/tmp/{name}")[0])
    return events


def _avg_ms(out: str) -> float:
    match = re.search(r"Average inference time cost total: ([\d.]+) ms", out)
    assert match, out
    return float(match.group(1))


def test_qnn_gpu_run_and_its_profile_file(installed: AdbDeviceTcp, phone: VirtualPhone) -> None:
    model = _push(installed, "heavy.onnx", HEAVY)
    out, rc = run(
        installed, f"cd /data/local/tmp && {BENCH_PATH} {QNN_GPU} -m times -r 20 -s -p prof {model}"
    )
    assert rc == 0, out
    stats = parse_onnxruntime_perf_test(out)
    assert stats.runs == 20
    events = _profile(installed, "prof")
    nodes = [e for e in events if e["cat"] == "Node"]
    runs = [e for e in events if e["name"] == "SequentialExecutor::Execute"]
    assert len(runs) == 20 and len(nodes) == 20 * 2
    assert {e["name"] for e in nodes} == {"Conv_0+Relu_1_kernel_time", "Conv_2+Relu_3_kernel_time"}
    assert {e["args"]["provider"] for e in nodes} == {"QNNExecutionProvider"}
    assert {e["args"]["unit"] for e in nodes} == {"gpu"} and {e["args"]["virtual"] for e in nodes} == {"1"}
    per_run_us = sum(e["dur"] for e in nodes) / 20
    assert per_run_us == pytest.approx(stats.mean_ms * 1000, rel=0.03, abs=3)
    assert phone.benchmark_runs()[-1]["cluster"] == "gpu"


def test_the_gpu_clock_pin_and_the_thermal_cap_move_gpu_times(
    installed: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    model = _push(installed, "conv5.onnx", COMPUTE_BOUND)

    def pinned(hz: int) -> float:
        cmd = (
            f"echo 818000000 > {GPU_DEVFREQ}/max_freq; echo {hz} > {GPU_DEVFREQ}/min_freq; "
            f"echo {hz} > {GPU_DEVFREQ}/max_freq; echo performance > {GPU_DEVFREQ}/governor"
        )
        assert run(installed, f'su -c "{cmd}"')[1] == 0
        assert run(installed, f"cat {GPU_DEVFREQ}/cur_freq")[0] == f"{hz}\n"
        out, rc = run(installed, f"{BENCH_PATH} {QNN_GPU} -m times -r 10 {model}")
        assert rc == 0, out
        return _avg_ms(out)

    fast, slow = pinned(818000000), pinned(220000000)
    assert slow > 3 * fast  # 818 / 220 MHz on a compute-bound conv
    pinned(818000000)
    phone.set_temperature(90.0)
    assert int(run(installed, f"cat {GPU_DEVFREQ}/cur_freq")[0]) < 818000000  # the pin reads back capped
    out, _rc = run(installed, f"{BENCH_PATH} {QNN_GPU} -m times -r 10 {model}")
    assert _avg_ms(out) > 1.3 * fast


def test_precision_follows_the_model(installed: AdbDeviceTcp, tmp_path: Path) -> None:
    fp32 = _push(installed, "fp32.onnx", HEAVY)
    fp16 = _push(installed, "fp16.onnx", fp16_model(HEAVY))
    int8 = _push(installed, "int8.onnx", int8_model(HEAVY, tmp_path))
    npu = "/sys/class/devfreq/19000000.npu"
    pin = f"echo performance > {GPU_DEVFREQ}/governor; echo performance > {npu}/governor"
    run(installed, f"su -c '{pin}'")
    times = {}
    for label, flags, path in (
        ("gpu32", QNN_GPU, fp32),
        ("gpu16", QNN_GPU, fp16),
        ("npu16", "-e qnn -i 'backend_path|libQnnHtp.so'", fp16),
        ("npu8", "-e nnapi", int8),
    ):
        out, rc = run(installed, f"{BENCH_PATH} {flags} -m times -r 10 {path}")
        assert rc == 0, (label, out)
        times[label] = _avg_ms(out)
    assert times["gpu16"] < 0.75 * times["gpu32"]
    assert times["npu8"] < times["npu16"]
    out, rc = run(installed, f"{BENCH_PATH} {QNN_GPU} -m times -r 3 {int8}")
    assert rc == 255 and out.count("\n") == 1 and "int8 graphs are not supported by the GPU" in out
    out, rc = run(installed, f"{BENCH_PATH} -e nnapi -m times -r 3 {fp32}")
    assert rc == 255 and "not supported by the NPU" in out
    out, rc = run(installed, f"{BENCH_PATH} -e nnapi -i NNAPI_FLAG_USE_FP16 -m times -r 3 {fp32}")
    assert rc == 0, out
    out, rc = run(installed, f"{BENCH_PATH} -e tensorrt -m times -r 3 {fp32}")
    assert rc == 255 and "tensorrt is not supported in this build" in out


def test_npu_fallback_ops_run_on_the_cpu(installed: AdbDeviceTcp) -> None:
    model = _push(
        installed, "prelu.onnx", fp16_model(net([Layer(cout=16, k=3), Layer("PRelu"), Layer(cout=16, k=3)]))
    )
    out, rc = run(installed, f"cd /data/local/tmp && {BENCH_PATH} -e nnapi -m times -r 5 -p fb {model}")
    assert rc == 0, out
    nodes = [e for e in _profile(installed, "fb") if e["cat"] == "Node"]
    providers = {e["name"]: (e["args"]["provider"], e["args"]["unit"]) for e in nodes}
    assert providers["PRelu_1_kernel_time"] == ("CPUExecutionProvider", "cpu")
    assert providers["Conv_0_kernel_time"] == ("NnapiExecutionProvider", "npu")


def test_cpu_runs_write_a_profile_too(installed: AdbDeviceTcp) -> None:
    out, rc = run(
        installed, f"cd /data/local/tmp && {BENCH_PATH} -e cpu -m times -r 4 -p cpu {MODELS}/tiny.onnx"
    )
    assert rc == 0, out
    nodes = [e for e in _profile(installed, "cpu") if e["cat"] == "Node"]
    assert len(nodes) == 4 * 6 and {e["args"]["provider"] for e in nodes} == {"CPUExecutionProvider"}


def test_qnn_needs_a_qualcomm_phone_and_nnapi_an_npu(
    start_midrange: Callable[[], AdbDeviceTcp],
) -> None:
    device = start_midrange()
    model = _push(device, "tiny.onnx", HEAVY)
    out, rc = run(device, f"{BENCH_PATH} {QNN_GPU} -m times -r 3 {model}")
    assert rc == 255 and "libQnnGpu.so" in out
    out, rc = run(device, f"{BENCH_PATH} -e nnapi -m times -r 3 {model}")
    assert rc == 255 and "no NNAPI accelerator" in out
    out, rc = run(
        device,
        f"{TFLITE_PATH} --graph={model} --use_gpu=true --num_runs=5 --min_secs=0 --warmup_min_secs=0 2>&1",
    )
    assert rc == 0 and "Mali" not in out, out  # the Mali GPU runs TFLite's GPU delegate
    assert parse_tflite_benchmark_model(out).runs == 5


def _tflite(device: AdbDeviceTcp, flags: str) -> tuple[str, int]:
    return run(device, f"{TFLITE_PATH} {flags} --min_secs=0 --warmup_min_secs=0 2>&1")


def test_benchmark_model_output_is_tflites(installed: AdbDeviceTcp, phone: VirtualPhone) -> None:
    installed.push(str(TFLITE_BENCHMARK_BINARY), TFLITE_PATH, st_mode=0o100755)
    model = _push(installed, "heavy.onnx", HEAVY)
    cpu, rc = _tflite(installed, f"--graph={model} --num_runs=8 --warmup_runs=2 --num_threads=1")
    assert rc == 0, cpu
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in cpu
    assert re.search(
        r"INFO: Inference timings in us: Init: \d+, First inference: \d+, "
        r"Warmup \(avg\): [\d.e+]+, Inference \(avg\): [\d.e+]+",
        cpu,
    )
    assert parse_tflite_benchmark_model(cpu).runs == 8
    gpu, rc = _tflite(
        installed, f"--graph={model} --num_runs=10 --use_gpu=true --gpu_precision_loss_allowed=false"
    )
    assert rc == 0, gpu
    gpu16, _rc = _tflite(installed, f"--graph={model} --num_runs=10 --use_gpu=true")
    assert "GPU timings at fp32" in gpu and "GPU timings at fp16" in gpu16  # marked virtual
    stats32, stats16 = parse_tflite_benchmark_model(gpu), parse_tflite_benchmark_model(gpu16)
    assert stats32.runs == stats16.runs == 10 and stats16.mean_ms < stats32.mean_ms
    assert phone.benchmark_runs()[-1]["cluster"] == "gpu"
    out, rc = _tflite(installed, f"--graph={model} --num_runs=10 --use_nnapi=true")
    assert rc == 1 and "ERROR: Failed to apply the delegate" in out
    out, rc = _tflite(installed, "--num_runs=10")
    assert rc == 1 and "ERROR: Please specify the name of your TF Lite input file with --graph" in out


def test_benchmark_model_op_profiling_tables(installed: AdbDeviceTcp) -> None:
    installed.push(str(TFLITE_BENCHMARK_BINARY), TFLITE_PATH, st_mode=0o100755)
    model = _push(installed, "heavy.onnx", HEAVY)
    out, rc = _tflite(installed, f"--graph={model} --num_runs=6 --use_gpu=true --enable_op_profiling=true")
    assert rc == 0, out
    profile = out.split("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n", 1)[1]
    run_order = profile.split("============================== Run Order ==============================\n")[1]
    rows = run_order.split("\n\n")[0].splitlines()[1:]
    assert len(rows) == 2
    cols = rows[0].split("\t")
    assert (
        cols[1].strip() == "conv2d_gen" and cols[-1] == "[Conv_0+Relu_1]:0" and cols[5].strip().endswith("%")
    )
    assert "Number of nodes executed: 2" in profile
    assert re.search(
        r"Timings \(microseconds\): count=6 first=\d+ curr=\d+ min=\d+ max=\d+ avg=[\d.]+ std=\d+\n", profile
    )


def test_parser_reads_benchmark_model_output_with_op_profiling(installed: AdbDeviceTcp) -> None:
    installed.push(str(TFLITE_BENCHMARK_BINARY), TFLITE_PATH, st_mode=0o100755)
    out, rc = _tflite(installed, f"--graph={MODELS}/tiny.onnx --num_runs=5 --enable_op_profiling=true")
    assert rc == 0
    assert parse_tflite_benchmark_model(out).runs == 5
