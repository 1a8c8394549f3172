"""The benchmark programs' command lines, and their per-layer profiles turned into `LayerTime`s.

**onnxruntime_perf_test** (onnxruntime/test/perftest)::

    onnxruntime_perf_test -e <provider> [-i "key|value"] -m times -r N -x THREADS -s -I [-p PREFIX] \
        model [result_file]

`-e` picks the execution provider: `cpu`, `xnnpack`, `qnn` (with `-i "backend_type|gpu"` for QNN's GPU
backend, `-i "backend_type|htp"` for its NPU backend) or `nnapi`. `-p PREFIX` turns on onnxruntime's
profiler, which writes `PREFIX_<YYYY-MM-DD_HH-MM-SS>.json`: a chrome-trace list of events, one per node
and run with `"cat": "Node"`, `"name": "<node>_kernel_time"`, `"dur"` in µs and `"args"` holding
`op_name` and `provider` (plus `_fence_before`/`_fence_after` events and `"cat": "Session"` events such
as one `model_run` per run).

**benchmark_model** (tensorflow/lite/tools/benchmark)::

    benchmark_model --graph=PATH --num_runs=N --warmup_runs=W --num_threads=T --min_secs=0 \
        --warmup_min_secs=0 [--use_gpu=true --gpu_precision_loss_allowed=true|false] \
        [--use_nnapi=true --nnapi_allow_fp16=true] [--use_xnnpack=true|false] [--enable_op_profiling=true]

`--min_secs=0 --warmup_min_secs=0`: without them the program keeps running past N runs until a second
has passed, and the report would not be of the runs asked for. With op profiling it prints, after
"Operator-wise Profiling Info for Regular Benchmark Runs:", tensorflow's StatsCalculator tables; the
"Run Order" one has a row per node: `[node type] [start] [first] [avg ms] [%] [cdf%] [mem KB]
[times called] [Name]` (tab separated, possibly behind a log prefix; builds before ~2.4 lack `[start]`,
so columns are found by their header). A node's time per run is `avg ms × times called`.

Where a layer ran: a node of onnxruntime's CPU or XNNPACK provider, or a TFLite row named by a TFLite
builtin op (`CONV_2D`, upper case: the interpreter's own kernel, not a delegate's), ran on the CPU
(`unit="cpu"`, an accelerator's fallback); the rest ran on the measured unit.
On a CPU cluster every layer is the cluster's.
"""

from __future__ import annotations

import json
import math
import re
import shlex

from profilers.adb.errors import OutputParseError
from profilers.adb.units import LayerTime, unit_kind

#: onnxruntime's `-i` provider options that send a QNN run to the GPU or NPU backend.
QNN_BACKENDS: dict[str, str] = {"gpu": "backend_type|gpu", "npu": "backend_type|htp"}
_ORT_CPU_PROVIDERS = ("CPUExecutionProvider", "XnnpackExecutionProvider")


def onnxruntime_perf_test_args(
    binary: str,
    model_path: str,
    *,
    runs: int,
    threads: int,
    accelerator: str,
    unit: str,
    result_file: str | None = None,
    profile_prefix: str | None = None,
) -> list[str]:
    """onnxruntime_perf_test's argv for `runs` timed runs with `accelerator` (an execution provider)."""
    args = [binary, "-e", accelerator]
    if accelerator == "qnn":
        kind = unit_kind(unit)
        if kind not in QNN_BACKENDS:
            raise ValueError(f"onnxruntime's qnn provider has no backend for the {kind} unit {unit!r}")
        args += ["-i", QNN_BACKENDS[kind]]
    args += ["-m", "times", "-r", str(runs), "-x", str(threads), "-s", "-I"]
    if profile_prefix is not None:
        args += ["-p", profile_prefix]
    return [*args, model_path, *([result_file] if result_file else [])]


def benchmark_model_args(
    binary: str,
    model_path: str,
    *,
    runs: int,
    warmup: int,
    threads: int,
    accelerator: str,
    precision: str,
    op_profiling: bool = False,
) -> list[str]:
    """TFLite benchmark_model's argv for `runs` timed runs after `warmup` with `accelerator` (a delegate).

    fp16 on the GPU is `--gpu_precision_loss_allowed=true`, on NNAPI `--nnapi_allow_fp16=true`; int8 comes
    from the (QDQ) model itself.
    """
    args = [
        binary,
        f"--graph={model_path}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
        f"--num_threads={threads}",
        "--min_secs=0",
        "--warmup_min_secs=0",
    ]
    if accelerator == "gpu":
        args += ["--use_gpu=true", f"--gpu_precision_loss_allowed={_flag(precision == 'fp16')}"]
    elif accelerator == "nnapi":
        args += ["--use_nnapi=true"] + (["--nnapi_allow_fp16=true"] if precision == "fp16" else [])
    elif accelerator in ("xnnpack", "cpu"):
        args += [f"--use_xnnpack={_flag(accelerator == 'xnnpack')}"]
    else:
        raise ValueError(f"benchmark_model has no delegate {accelerator!r}")
    if op_profiling:
        args += ["--enable_op_profiling=true"]
    return args


def _flag(value: bool) -> str:
    return "true" if value else "false"


def shell_command(args: list[str], taskset_mask: str | None = None) -> str:
    """The argv as one shell line (stderr merged), under `taskset` when a CPU mask is given."""
    line = " ".join(shlex.quote(a) for a in args) + " 2>&1"
    return f"taskset {taskset_mask} {line}" if taskset_mask else line


def _where(unit: str, on_cpu: bool) -> str:
    if unit_kind(unit) == "cpu":
        return unit
    return "cpu" if on_cpu else unit


_KERNEL_SUFFIX = "_kernel_time"


def parse_onnxruntime_profile(text: str, unit: str) -> list[LayerTime]:
    """Per-node mean time per run from onnxruntime's profile JSON, in the graph's execution order.

    With two or more runs in the profile (`model_run` events) the first is left out: it carries the
    session's one-off costs (allocations, a GPU's kernel compilation) that the timed runs do not.
    """
    try:
        events = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputParseError(f"onnxruntime profile is not JSON: {exc}; starts with {text[:200]!r}") from exc
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise OutputParseError("onnxruntime profile is not a list of trace events")
    runs = sorted(
        (_number(e, "ts"), _number(e, "dur"))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    first_run_end = runs[0][0] + runs[0][1] if len(runs) >= 2 else -math.inf
    total_us: dict[str, float] = {}
    calls: dict[str, int] = {}
    ops: dict[str, tuple[str, str]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith(_KERNEL_SUFFIX):
            continue
        if "ts" in event and _number(event, "ts") < first_run_end:
            continue
        node = name[: -len(_KERNEL_SUFFIX)]
        raw_args = event.get("args")
        args: dict[str, object] = raw_args if isinstance(raw_args, dict) else {}
        total_us[node] = total_us.get(node, 0.0) + _number(event, "dur")
        calls[node] = calls.get(node, 0) + 1
        ops.setdefault(node, (str(args.get("op_name", "")), str(args.get("provider", ""))))
    if not total_us:
        raise OutputParseError('onnxruntime profile holds no node ("cat": "Node", *_kernel_time) events')
    counted_runs = len(runs) - 1 if len(runs) >= 2 else len(runs)
    layers = []
    for node, total in total_us.items():
        per = counted_runs or calls[node]  # one event per run and node; without model_run events, per call
        op_type, provider = ops[node]
        layers.append(
            LayerTime(
                name=node,
                op_type=op_type,
                ms=total / per / 1000.0,
                unit=_where(unit, provider in _ORT_CPU_PROVIDERS),
            )
        )
    return layers


def _number(event: dict[str, object], key: str) -> float:
    value = event.get(key)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OutputParseError(
            f"onnxruntime profile event {event.get('name')!r} has no numeric {key}"
        ) from None
    if not math.isfinite(number) or number < 0:
        raise OutputParseError(f"onnxruntime profile event {event.get('name')!r} has {key} {number}")
    return number


_TFLITE_PROFILE = re.compile(r"Operator-wise Profiling Info for Regular Benchmark Runs:?")
_TFLITE_TABLE = re.compile(r"^=+ (.+?) =+\s*$", re.M)
# The interpreter's own kernels carry TFLite's builtin names (CONV_2D, RESIZE_BILINEAR); a delegate's node
# (TfLiteGpuDelegateV2, TfLiteNnapiDelegate) or kernels (conv2d_gen) do not.
_TFLITE_BUILTIN = re.compile(r"[A-Z][A-Z0-9_]*")


def parse_tflite_op_profile(output: str, unit: str) -> list[LayerTime]:
    """Per-node time per run from benchmark_model's op-profiling "Run Order" table, in run order."""
    start = _TFLITE_PROFILE.search(output)
    if start is None:
        raise OutputParseError(
            "benchmark_model printed no 'Operator-wise Profiling Info for Regular Benchmark Runs' "
            "(was it run with --enable_op_profiling=true?)"
        )
    body = output[start.end() :]
    tables = list(_TFLITE_TABLE.finditer(body))
    run_order = next((i for i, m in enumerate(tables) if m.group(1).strip() == "Run Order"), None)
    if run_order is None:
        raise OutputParseError("benchmark_model's op profile has no 'Run Order' table")
    end = tables[run_order + 1].start() if run_order + 1 < len(tables) else len(body)
    lines = body[tables[run_order].end() : end].strip("\n").splitlines()
    if not lines:
        raise OutputParseError("benchmark_model's 'Run Order' table is empty")
    # Columns by their bracketed header ("[node type]" … "[Name]"); a row splits on whitespace into as
    # many cells, the name (last, it may hold spaces) taking the rest. Tabs or spaces alike.
    header = re.findall(r"\[[^\]]*\]", lines[0])
    try:
        type_col, avg_col = header.index("[node type]"), header.index("[avg ms]")
        called_col, name_col = header.index("[times called]"), header.index("[Name]")
    except ValueError:
        raise OutputParseError(
            f"benchmark_model's 'Run Order' header is not recognised: {lines[0]!r}"
        ) from None
    if name_col != len(header) - 1:
        raise OutputParseError(f"benchmark_model's 'Run Order' header does not end with [Name]: {lines[0]!r}")
    layers = []
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split(None, len(header) - 1)
        if len(cells) != len(header):
            raise OutputParseError(f"benchmark_model op-profile row has {len(cells)} cells: {line!r}")
        name, op_type = cells[name_col].strip(), cells[type_col]
        try:
            ms = float(cells[avg_col]) * max(int(cells[called_col]), 1)
        except ValueError:
            raise OutputParseError(f"benchmark_model op-profile row is not numeric: {line!r}") from None
        layers.append(
            LayerTime(
                name=name,
                op_type=op_type,
                ms=ms,
                unit=_where(unit, _TFLITE_BUILTIN.fullmatch(op_type) is not None),
            )
        )
    if not layers:
        raise OutputParseError("benchmark_model's 'Run Order' table has no rows")
    return layers


__all__ = [
    "QNN_BACKENDS",
    "benchmark_model_args",
    "onnxruntime_perf_test_args",
    "parse_onnxruntime_profile",
    "parse_tflite_op_profile",
    "shell_command",
]
