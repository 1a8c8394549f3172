"""The programs' command lines and their per-layer profiles (onnxruntime's JSON, TFLite's op table)."""

from __future__ import annotations

import json

import pytest

from profilers.adb.benchmarks import (
    benchmark_model_args,
    onnxruntime_perf_test_args,
    parse_onnxruntime_profile,
    parse_tflite_op_profile,
    shell_command,
)
from profilers.adb.errors import OutputParseError
from profilers.adb.parsers import BenchmarkStats, parse_tflite_benchmark_model, pool_stats


def test_onnxruntime_cpu_command_is_unchanged() -> None:
    args = onnxruntime_perf_test_args("/bin/ort", "/m.onnx", runs=5, threads=2, accelerator="cpu", unit="big")
    assert shell_command(args, "f0") == "taskset f0 /bin/ort -e cpu -m times -r 5 -x 2 -s -I /m.onnx 2>&1"


@pytest.mark.parametrize(("unit", "backend"), [("gpu", "backend_type|gpu"), ("npu", "backend_type|htp")])
def test_onnxruntime_qnn_backend_and_profile_prefix(unit: str, backend: str) -> None:
    args = onnxruntime_perf_test_args(
        "ort", "m", runs=1, threads=1, accelerator="qnn", unit=unit, result_file="r", profile_prefix="/p"
    )
    assert args[:5] == ["ort", "-e", "qnn", "-i", backend]
    assert args[-4:] == ["-p", "/p", "m", "r"]
    assert shell_command(args).startswith(f"ort -e qnn -i '{backend}' ")


def test_onnxruntime_nnapi_has_no_provider_options() -> None:
    args = onnxruntime_perf_test_args("ort", "m", runs=1, threads=1, accelerator="nnapi", unit="npu")
    assert "-i" not in args and args[1:3] == ["-e", "nnapi"]


@pytest.mark.parametrize(
    ("accelerator", "precision", "flags"),
    [
        ("gpu", "fp16", ["--use_gpu=true", "--gpu_precision_loss_allowed=true"]),
        ("gpu", "fp32", ["--use_gpu=true", "--gpu_precision_loss_allowed=false"]),
        ("nnapi", "fp16", ["--use_nnapi=true", "--nnapi_allow_fp16=true"]),
        ("nnapi", "int8", ["--use_nnapi=true"]),
        ("xnnpack", "fp32", ["--use_xnnpack=true"]),
        ("cpu", "fp32", ["--use_xnnpack=false"]),
    ],
)
def test_benchmark_model_delegate_flags(accelerator: str, precision: str, flags: list[str]) -> None:
    args = benchmark_model_args(
        "bm", "/m.onnx", runs=7, warmup=2, threads=4, accelerator=accelerator, precision=precision
    )
    assert args[:5] == ["bm", "--graph=/m.onnx", "--num_runs=7", "--warmup_runs=2", "--num_threads=4"]
    assert "--min_secs=0" in args and "--warmup_min_secs=0" in args  # exactly the runs asked for
    assert args[7:] == flags
    op = benchmark_model_args(
        "bm", "m", runs=1, warmup=0, threads=1, accelerator="gpu", precision="fp32", op_profiling=True
    )
    assert op[-1] == "--enable_op_profiling=true"


def _ort_event(cat: str, name: str, ts: int, dur: int, **args: str) -> dict[str, object]:
    return {"cat": cat, "pid": 7, "tid": 8, "dur": dur, "ts": ts, "ph": "X", "name": name, "args": args}


def _ort_profile(runs: int, first_run_extra_us: int = 0) -> str:
    """A profile of `runs` runs (conv 300 µs on the NPU, act 100 µs on the CPU); the first run slower."""
    events = [
        _ort_event("Session", "model_loading_uri", 0, 900),
        _ort_event("Session", "session_initialization", 900, 50),
    ]
    ts = 1000
    for index in range(runs):
        conv = 300 + (first_run_extra_us if index == 0 else 0)
        events += [
            _ort_event("Node", "conv_fence_before", ts, 0, op_name="Conv"),
            _ort_event("Node", "conv_kernel_time", ts, conv, op_name="Conv", provider="QNNExecutionProvider"),
            _ort_event("Node", "conv_fence_after", ts + conv, 0, op_name="Conv"),
            _ort_event(
                "Node", "act_kernel_time", ts + conv, 100, op_name="PRelu", provider="CPUExecutionProvider"
            ),
            _ort_event("Session", "model_run", ts, conv + 102),
        ]
        ts += conv + 110
    return json.dumps(events, indent=0)


def test_onnxruntime_profile_means_per_run_and_where_each_node_ran() -> None:
    conv, act = parse_onnxruntime_profile(_ort_profile(runs=3, first_run_extra_us=5000), "npu")
    # The first run (session's one-off costs) is left out of the mean when there are others.
    assert (conv.name, conv.op_type, conv.ms, conv.unit) == ("conv", "Conv", 0.3, "npu")
    assert (act.name, act.op_type, act.ms, act.unit) == ("act", "PRelu", 0.1, "cpu")  # the NPU's fallback
    [only_run, _] = parse_onnxruntime_profile(_ort_profile(runs=1, first_run_extra_us=200), "big")
    assert (
        only_run.ms == 0.5 and only_run.unit == "big"
    )  # one run: it is the profile; a CPU run is the cluster's


def test_onnxruntime_profile_garbage_is_refused() -> None:
    with pytest.raises(OutputParseError, match="not JSON"):
        parse_onnxruntime_profile("[{", "gpu")
    with pytest.raises(OutputParseError, match="no node"):
        parse_onnxruntime_profile(json.dumps([_ort_event("Session", "model_run", 0, 3)]), "gpu")


_HEADER = "\t".join(
    [
        "",
        f"{'[node type]':>24}",
        f"{'[start]':>17}",
        f"{'[first]':>9}",
        f"{'[avg ms]':>9}",
        f"{'[%]':>8}",
        f"{'[cdf%]':>8}",
        f"{'[mem KB]':>10}",
        f"{'[times called]':>9}",
        "[Name]",
    ]
)


def _row(op: str, avg: float, called: int, name: str) -> str:
    return "\t".join(
        [
            "",
            f"{op:>24}",
            f"{0.01:>17.3f}",
            f"{avg:>9.3f}",
            f"{avg:>9.3f}",
            f"{50.0:>7.3f}%",
            f"{50.0:>7.3f}%",
            f"{0.0:>10.3f}",
            f"{called:>9}",
            name,
        ]
    )


TFLITE_PROFILED = "\n".join(
    [
        "INFO: count=3 first=2210 curr=2140 min=2101 max=2533 avg=2166.3 std=71 p5=2101 median=2140 p95=2533",
        "INFO: Inference timings in us: Init: 1234, First inference: 2510, Warmup (avg): 2301, "
        "Inference (avg): 2166.3",
        "Profiling Info for Benchmark Initialization:",
        "============================== Run Order ==============================",
        _HEADER,
        _row("ModifyGraphWithDelegate", 5.0, 1, "ModifyGraphWithDelegate"),
        "",
        "Operator-wise Profiling Info for Regular Benchmark Runs:",
        "============================== Run Order ==============================",
        _HEADER,
        _row("TfLiteGpuDelegateV2", 1.8, 1, "[conv2d/relu]:0"),
        _row("RESIZE_BILINEAR", 0.2, 2, "[up]:1"),
        _row("conv2d_pw_1x1", 0.1, 1, "[proj]:2"),
        "",
        "============================== Top by Computation Time ==============================",
        _HEADER,
        _row("TfLiteGpuDelegateV2", 1.8, 1, "[conv2d/relu]:0"),
        "",
        "Number of nodes executed: 2",
    ]
)


def test_tflite_op_profile_rows_of_the_regular_runs() -> None:
    delegate, resize, kernel = parse_tflite_op_profile(TFLITE_PROFILED, "gpu")
    assert (delegate.name, delegate.op_type, delegate.ms, delegate.unit) == (
        "[conv2d/relu]:0",
        "TfLiteGpuDelegateV2",
        1.8,
        "gpu",
    )
    assert (resize.op_type, resize.ms, resize.unit) == ("RESIZE_BILINEAR", 0.4, "cpu")  # 0.2 ms × 2 calls
    assert (kernel.op_type, kernel.unit) == ("conv2d_pw_1x1", "gpu")  # a delegate's kernel, not a builtin
    with pytest.raises(OutputParseError, match="--enable_op_profiling"):
        parse_tflite_op_profile(TFLITE_PROFILED.split("Operator-wise")[0], "gpu")


def test_tflite_passes_pool_their_summaries() -> None:
    a = BenchmarkStats(median_ms=2.0, mean_ms=2.0, std_ms=0.0, min_ms=2.0, max_ms=2.0, runs=2)
    b = BenchmarkStats(median_ms=4.0, mean_ms=4.0, std_ms=0.0, min_ms=4.0, max_ms=4.0, runs=2)
    c = BenchmarkStats(median_ms=3.0, mean_ms=3.0, std_ms=0.0, min_ms=3.0, max_ms=3.0, runs=4)
    pooled = pool_stats([a, b, c])
    assert pooled.runs == 8 and pooled.mean_ms == 3.0 and pooled.median_ms == 3.0
    assert (pooled.min_ms, pooled.max_ms, pooled.p90_ms, pooled.raw_runs_ms) == (2.0, 4.0, None, [])
    assert pooled.std_ms == pytest.approx(0.7071, abs=1e-4)  # population std of 2 2 4 4 3 3 3 3
    assert pool_stats([a]) is a


def test_tflite_op_profile_of_an_older_build_with_spaces_and_no_start_column() -> None:
    text = """INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
            [node type]  [first]  [avg ms]      [%]    [cdf%]  [mem KB] [times called] [Name]
    TfLiteNnapiDelegate    3.826     4.011  62.037%   62.037%     0.000         1      []:64
RESIZE_NEAREST_NEIGHBOR    2.450     2.454  37.963%  100.000%     0.000         1      [up sampled]:63

"""
    npu, resize = parse_tflite_op_profile(text, "npu")
    assert (npu.op_type, npu.ms, npu.unit, npu.name) == ("TfLiteNnapiDelegate", 4.011, "npu", "[]:64")
    assert (resize.ms, resize.unit, resize.name) == (2.454, "cpu", "[up sampled]:63")


def test_tflite_stats_come_from_the_timed_phase_not_the_op_profile_summary() -> None:
    text = TFLITE_PROFILED + "\nTimings (microseconds): count=3 first=20 curr=22 min=18 max=22 avg=20 std=1\n"
    stats = parse_tflite_benchmark_model(text)
    assert (stats.runs, stats.median_ms, stats.min_ms, stats.max_ms) == (3, 2.14, 2.101, 2.533)


@pytest.mark.parametrize(
    ("line", "runs"),
    [
        ("count=2 curr=1900(all same) p5=1900 median=1900 p95=1900", 2),
        ("count=1 curr=1900 p5=1900 median=1900 p95=1900", 1),
    ],
)
def test_tflite_stats_when_every_run_took_the_same_time(line: str, runs: int) -> None:
    warmup = "INFO: count=1 curr=2800 p5=2800 median=2800 p95=2800"
    text = f"{warmup}\n\nINFO: {line}\n\nINFO: Inference timings in us: Init: 1\n"
    stats = parse_tflite_benchmark_model(text)
    assert (stats.runs, stats.median_ms, stats.mean_ms, stats.min_ms, stats.max_ms, stats.std_ms) == (
        runs,
        1.9,
        1.9,
        1.9,
        1.9,
        0.0,
    )
