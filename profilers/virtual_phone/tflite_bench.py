"""The virtual phone's stand-in for TFLite's `benchmark_model`: its flags, its phases and its output format.

Installed like the onnxruntime stand-in: push `bin/benchmark_model` (a marker file) and make it executable.
Flags (`--name=value`, as TFLite's flag parser takes them): `--graph=PATH` (required), `--num_runs=50`,
`--min_secs=1`, `--max_secs=150`, `--warmup_runs=1`, `--warmup_min_secs=0.5`, `--num_threads=N`,
`--use_gpu=true` (GPU; fp16 when `--gpu_precision_loss_allowed=true`, the default), `--use_nnapi=true` (NPU;
an fp32 graph needs `--nnapi_allow_fp16=true`, a QDQ graph runs int8), `--use_xnnpack=true|false` (accepted;
the CPU timing is the host's either way), `--enable_op_profiling=true`. Other flags are reported as
unconsumed and ignored, as the real tool does.

**The graph is an ONNX file.** A real phone needs a `.tflite` flatbuffer, which latfarm cannot produce; the
virtual phone runs the same ONNX models the onnxruntime stand-in runs, with the same child (bench_process.py),
CPU scaling (soc.py, and a cluster's microarchitecture: microarch.py) and accelerator cost model
(accel_bench.py). Only the program's face is TFLite's.

Phases, as benchmark_model: initialisation, a warm-up phase (at least `warmup_runs` runs and
`warmup_min_secs` seconds; its first run is the "First inference"), then the timed phase (at least
`num_runs` runs and `min_secs` seconds), each ending after `max_secs` at the latest; simulated seconds count.

Output (TFLite's log, which goes to stderr, `INFO: ` prefixed): the parameter lines, the delegate lines, the
phase lines with the statistics of each phase in microseconds (`count=… first=… curr=… min=… max=… avg=…
std=… p5=… median=… p95=…`, tsl's `StatWithPercentiles`: integer µs, average with 6 significant digits,
truncated population std, percentile = sorted[n·p/100]), "Inference timings in us: Init: …, First inference:
…, Warmup (avg): …, Inference (avg): …", the memory footprint, and with `--enable_op_profiling=true` the
profile summariser's "Operator-wise Profiling Info for Regular Benchmark Runs" tables (Run Order, Top by
Computation Time, Summary by node type, and the short summary whose run-total line is a plain `Stat`). On
the GPU/NPU the node rows are the dispatched kernels (node type = the kernel variant; a real delegate shows
its partitions as one node each), CPU fallbacks carry TFLite's builtin name.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from profilers.virtual_phone.accel_bench import (
    HOST_PROFILE_RUNS,
    UnitChoice,
    UnitRefused,
    measure_on_unit,
    unit_precision,
)
from profilers.virtual_phone.bench_process import BenchmarkChild, ChildSpec
from profilers.virtual_phone.errors import one_line
from profilers.virtual_phone.filesystem import FsError
from profilers.virtual_phone.graph import Graph, read_graph
from profilers.virtual_phone.microarch import ModelPricing
from profilers.virtual_phone.model_policy import ModelRefused, check_model

if TYPE_CHECKING:
    from profilers.virtual_phone.runtime import PhoneRuntime
    from profilers.virtual_phone.shell_context import Context

TFLITE_MARKER = b"#!latfarm-virtual-benchmark_model"
"""The first bytes of the file the shell runs as this program (see `bin/benchmark_model`)."""
EXIT_FAILURE = 1
_DOUBLE = struct.Struct("<d")
_BATCH_HEAD = struct.Struct("<dd")
_BOOL = {"true": True, "1": True, "false": False, "0": False}
_TFLITE_OPS = {
    "Conv": "CONV_2D",
    "ConvTranspose": "TRANSPOSE_CONV",
    "Relu": "RELU",
    "Clip": "RELU6",
    "PRelu": "PRELU",
    "LeakyRelu": "LEAKY_RELU",
    "Sigmoid": "LOGISTIC",
    "Tanh": "TANH",
    "HardSwish": "HARD_SWISH",
    "Add": "ADD",
    "Mul": "MUL",
    "Sub": "SUB",
    "Div": "DIV",
    "MatMul": "FULLY_CONNECTED",
    "Gemm": "FULLY_CONNECTED",
    "MaxPool": "MAX_POOL_2D",
    "AveragePool": "AVERAGE_POOL_2D",
    "GlobalAveragePool": "MEAN",
    "ReduceMean": "MEAN",
    "Resize": "RESIZE_BILINEAR",
    "Concat": "CONCATENATION",
    "Reshape": "RESHAPE",
    "Softmax": "SOFTMAX",
    "DepthToSpace": "DEPTH_TO_SPACE",
    "SpaceToDepth": "SPACE_TO_DEPTH",
    "Transpose": "TRANSPOSE",
    "Pad": "PAD",
}


class FlagError(Exception):
    """A flag the tool cannot parse (its value)."""


@dataclass
class TfliteOptions:
    """benchmark_model's flags that change what runs (defaults as the real tool's)."""

    graph: str = ""
    num_runs: int = 50
    min_secs: float = 1.0
    max_secs: float = 150.0
    warmup_runs: int = 1
    warmup_min_secs: float = 0.5
    num_threads: int = -1
    use_gpu: bool = False
    gpu_precision_loss_allowed: bool = True
    use_nnapi: bool = False
    nnapi_allow_fp16: bool = False
    use_xnnpack: bool = True
    enable_op_profiling: bool = False
    given: list[tuple[str, str]] = field(default_factory=list)
    unconsumed: list[str] = field(default_factory=list)


def parse_flags(argv: list[str]) -> TfliteOptions:
    """`--name=value` flags; unknown ones are kept as unconsumed (the real tool warns and goes on)."""
    opts = TfliteOptions()
    kinds = {name: type(value) for name, value in vars(TfliteOptions()).items() if name not in ("given",)}
    for arg in argv:
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or not eq or name not in kinds or name == "unconsumed":
            opts.unconsumed.append(arg)
            continue
        kind = kinds[name]
        try:
            if kind is bool:
                if value.lower() not in _BOOL:
                    raise ValueError(value)
                setattr(opts, name, _BOOL[value.lower()])
            else:
                setattr(opts, name, kind(value))
        except ValueError:
            raise FlagError(f"Failed to parse the value of --{name}: {value!r}") from None
        opts.given.append((name, value))
    return opts


@dataclass
class _Phases:
    """A benchmark's phases (seconds): init, warm-up runs (the first is the first inference), timed runs."""

    init_s: float
    warmup_s: list[float]
    timed_s: list[float]
    node_names: list[str] = field(default_factory=list)
    node_types: list[str] = field(default_factory=list)
    node_runs: list[list[float]] = field(default_factory=list)
    peak_bytes: int = 0


class _PhaseClock:
    """Decides, run by run, when the warm-up and the timed phase are done (runs and simulated seconds)."""

    def __init__(self, opts: TfliteOptions) -> None:
        self.opts = opts
        self.warmup: list[float] = []
        self.timed: list[float] = []

    def add(self, seconds: float) -> bool:
        """Record one run; True once the timed phase is complete."""
        o = self.opts
        if not self._warm_done():
            self.warmup.append(seconds)
        else:
            self.timed.append(seconds)
        total = sum(self.timed)
        enough = len(self.timed) >= o.num_runs and total >= o.min_secs
        return self._warm_done() and (enough or total >= o.max_secs)

    def _warm_done(self) -> bool:
        o = self.opts
        total = sum(self.warmup)
        enough = len(self.warmup) >= max(1, o.warmup_runs) and total >= o.warmup_min_secs
        return enough or total >= o.max_secs


async def run_tflite_benchmark(runtime: PhoneRuntime, ctx: Context, args: list[str]) -> int:
    """The shell entry point: parse the flags, run the graph on the chosen unit, print TFLite's log."""
    log: list[str] = ["STARTING!"]

    def fail(message: str) -> int:
        ctx.err("".join(f"INFO: {line}\n" for line in log).encode() + f"ERROR: {message}\n".encode())
        return EXIT_FAILURE

    try:
        opts = parse_flags(args[1:])
    except FlagError as exc:
        return fail(str(exc))
    log += _parameter_lines(opts)
    if opts.unconsumed:
        log.append("Unconsumed cmdline flags: " + " ".join(opts.unconsumed))
    if not opts.graph:
        return fail("Please specify the name of your TF Lite input file with --graph")
    if opts.num_runs > runtime.bench_limits.max_runs:
        return fail(f"--num_runs above this virtual phone's limit of {runtime.bench_limits.max_runs}")
    loop = asyncio.get_running_loop()
    try:
        model_bytes = runtime.fs.read(runtime.fs.normalize(opts.graph, ctx.cwd))
        check_model(model_bytes)
        graph = await loop.run_in_executor(None, read_graph, model_bytes)  # shape inference: not here
    except (FsError, ModelRefused) as exc:
        return fail(f"Could not load model {opts.graph}: {exc}")
    except Exception as exc:  # onnx raises its own types for graphs it cannot read
        return fail(f"Failed to load model {opts.graph}: {one_line(exc, 300)}")
    log += [f"Loaded model {opts.graph}", "Initialized TensorFlow Lite runtime."]
    choice: UnitChoice | None = None
    try:
        if opts.use_gpu:
            precision = unit_precision(runtime, "gpu", graph.precision, False)
            if precision == "fp32" and opts.gpu_precision_loss_allowed:
                precision = "fp16"
            choice = UnitChoice("gpu", precision, "TfLiteGpuDelegateV2")
            log += ["Created TensorFlow Lite delegate for GPU.", "GPU delegate created."]
        elif opts.use_nnapi:
            if runtime.profile.npu is None:
                raise UnitRefused("no NNAPI accelerator device on this phone")
            precision = unit_precision(runtime, "npu", graph.precision, opts.nnapi_allow_fp16)
            choice = UnitChoice("npu", precision, "TfLiteNnapiDelegate")
            log += ["Created TensorFlow Lite delegate for NNAPI.", "NNAPI delegate created."]
        elif opts.use_xnnpack:
            log.append("Created TensorFlow Lite XNNPACK delegate for CPU.")
    except UnitRefused as exc:
        return fail(f"Failed to apply the delegate: {exc}")
    cluster = runtime.soc.cluster_for_cpus(ctx.affinity)
    cpus = runtime.profile.cpu_count
    threads = min(opts.num_threads if opts.num_threads > 0 else 1, cpus)
    pricing = ModelPricing(
        runtime.profile.clusters[cluster].microarch,
        functools.partial(runtime.soc.scale, cluster),
        model_bytes,
        threads,
    )
    profile_needed = choice is not None or opts.enable_op_profiling or pricing.needs_profile
    child = BenchmarkChild(
        ChildSpec(
            model_bytes=model_bytes,
            intra_threads=threads,
            inter_threads=1,
            seed=None,
            repeats=0 if choice is not None else None,
            limits=runtime.bench_limits,
            workdir=str(runtime.bench_workdir),
            host_profile_runs=HOST_PROFILE_RUNS if profile_needed else 0,
        )
    )
    try:
        if choice is not None:
            outcome = await loop.run_in_executor(None, _measure_unit, runtime, opts, child, graph, choice)
        else:
            outcome = await loop.run_in_executor(None, _measure_cpu, runtime, opts, child, cluster, pricing)
    finally:
        child.kill()
    if isinstance(outcome, str):
        return fail(outcome)
    if choice is not None:
        log.append(
            f"latfarm virtual phone: {choice.unit.upper()} timings at {choice.precision} come from the "
            "accelerator cost model (virtual)."
        )
        kernels = len(outcome.node_names)
        if choice.unit == "gpu":
            log += [
                "Initialized OpenCL-based API.",
                "Created 1 GPU delegate kernels.",
                "Explicitly applied GPU delegate, and the model graph will be completely executed by the "
                "delegate.",
            ]
        else:
            on_cpu = sum(1 for t in outcome.node_types if t in _TFLITE_OPS.values())
            log.append(
                f"Replacing {kernels - on_cpu} out of {kernels} node(s) with delegate (TfLiteNnapiDelegate) "
                f"node, yielding {on_cpu + 1 if on_cpu else 1} partitions for the whole graph."
            )
    size_mb = len(model_bytes) / 1024 / 1024
    log += _report(opts, outcome, size_mb)
    ctx.err("".join(f"INFO: {line}\n" for line in log).encode())
    if opts.enable_op_profiling:
        ctx.err(
            (
                "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n" + _op_profile(outcome)
            ).encode()
        )
    return 0


def _parameter_lines(opts: TfliteOptions) -> list[str]:
    labels = {
        "num_runs": "Min num runs",
        "min_secs": "Min runs duration (seconds)",
        "max_secs": "Max runs duration (seconds)",
        "warmup_runs": "Min warmup runs",
        "warmup_min_secs": "Min warmup runs duration (seconds)",
        "graph": "Graph",
        "num_threads": "Num threads",
        "use_gpu": "Use gpu",
        "gpu_precision_loss_allowed": "Allow lower precision in gpu",
        "use_nnapi": "Use NNAPI",
        "nnapi_allow_fp16": "Allow fp16 in NNAPI",
        "use_xnnpack": "Use xnnpack",
        "enable_op_profiling": "Enable op profiling",
    }
    lines = ["Log parameter values verbosely: [0]"]
    for name, value in dict(opts.given).items():
        shown = str(int(_BOOL[value.lower()])) if isinstance(getattr(opts, name), bool) else value
        lines.append(f"{labels.get(name, name)}: [{shown}]")
    return lines


def _us(values: list[float]) -> list[int]:
    return [int(v * 1e6) for v in values]


def stat_line(values_us: list[int], percentiles: bool = True) -> str:
    """tsl's `Stat` / `StatWithPercentiles::OutputToStream` of integer microseconds."""
    n = len(values_us)
    if n == 0:
        return "count=0"
    if min(values_us) == max(values_us):
        line = f"count={n} curr={values_us[-1]}" + ("(all same)" if n > 1 else "")
    else:
        avg = sum(values_us) / n
        variance = sum(v * v for v in values_us) / n - avg * avg
        std = int(math.sqrt(max(0.0, variance)))
        line = (
            f"count={n} first={values_us[0]} curr={values_us[-1]} min={min(values_us)} max={max(values_us)} "
            f"avg={avg:g} std={std}"
        )
    if percentiles:
        ordered = sorted(values_us)
        p = [ordered[n * q // 100] for q in (5, 50, 95)]
        line += f" p5={p[0]} median={p[1]} p95={p[2]}"
    return line


def _fmt(x: float) -> str:
    return f"{x:g}"


def _report(opts: TfliteOptions, ph: _Phases, size_mb: float) -> list[str]:
    warm, timed = _us(ph.warmup_s), _us(ph.timed_s)
    init_us = int(ph.init_s * 1e6)
    mb = ph.peak_bytes / 1024 / 1024
    return [
        f"The input model file size (MB): {size_mb:g}",
        f"Initialized session in {ph.init_s * 1000:g}ms.",
        f"Running benchmark for at least {opts.warmup_runs} iterations and at least "
        f"{_fmt(opts.warmup_min_secs)} seconds but terminate if exceeding {_fmt(opts.max_secs)} seconds.",
        stat_line(warm) + "\n",
        f"Running benchmark for at least {opts.num_runs} iterations and at least {_fmt(opts.min_secs)} "
        f"seconds but terminate if exceeding {_fmt(opts.max_secs)} seconds.",
        stat_line(timed) + "\n",
        f"Inference timings in us: Init: {init_us}, First inference: {warm[0]}, "
        f"Warmup (avg): {sum(warm) / len(warm):g}, Inference (avg): {sum(timed) / len(timed):g}",
        "Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to "
        "the actual memory footprint of the model at runtime. Take the information at your discretion.",
        f"Memory footprint delta from the start of the tool (MB): init={mb * 0.8:g} overall={mb:g}",
    ]


def _field(width: int, value: str) -> str:
    return "\t" + value.rjust(width)


def _op_profile(ph: _Phases) -> str:
    """The profile summariser's tables (tensorflow/lite/profiling/profile_summarizer, tsl StatsCalculator)."""
    runs = ph.node_runs
    n_runs = max(1, len(runs))
    nodes = len(ph.node_names)
    per_node = [[int(run[i] * 1e6) for run in runs] for i in range(nodes)]
    sums = [sum(v) for v in per_node]
    run_totals = [sum(int(t * 1e6) for t in run) for run in runs]
    stat_sum = sum(run_totals) or 1
    starts = []
    for i in range(nodes):
        starts.append(sum(sum(run[:i]) * 1e6 for run in runs) / n_runs)

    def header(title: str) -> str:
        cols = [
            (24, "[node type]"),
            (17, "[start]"),
            (9, "[first]"),
            (9, "[avg ms]"),
            (8, "[%]"),
            (8, "[cdf%]"),
        ]
        cols += [(10, "[mem KB]"), (9, "[times called]")]
        return (
            f"============================== {title} ==============================\n"
            + "".join(_field(w, v) for w, v in cols)
            + "\t[Name]\n"
        )

    def row(i: int, cumulative: int) -> str:
        first = per_node[i][0] / 1000 if per_node[i] else 0.0
        avg = sums[i] / n_runs / 1000
        name = f"[{ph.node_names[i]}]:{i}"
        return (
            _field(24, ph.node_types[i])
            + _field(17, f"{starts[i] / 1000:.3f}")
            + _field(9, f"{first:.3f}")
            + _field(9, f"{avg:.3f}")
            + _field(7, f"{sums[i] * 100 / stat_sum:.3f}")
            + "%"
            + _field(7, f"{cumulative * 100 / stat_sum:.3f}")
            + "%"
            + _field(10, "0.000")
            + _field(9, "1")
            + f"\t{name}\n"
        )

    def table(title: str, order: list[int]) -> str:
        out, cumulative = header(title), 0
        for i in order:
            cumulative += sums[i]
            out += row(i, cumulative)
        return out + "\n"

    by_time = sorted(range(nodes), key=lambda i: -sums[i])[:10]
    text = table("Run Order", list(range(nodes))) + table("Top by Computation Time", by_time)
    text += f"Number of nodes executed: {nodes}\n"
    text += "============================== Summary by node type ==============================\n"
    text += "".join(
        _field(w, v)
        for w, v in [(24, "[Node type]"), (9, "[count]"), (10, "[avg ms]"), (11, "[avg %]"), (11, "[cdf %]")]
    )
    text += _field(10, "[mem KB]") + _field(10, "[times called]") + "\n"
    by_type: dict[str, list[int]] = {}
    for i in range(nodes):
        entry = by_type.setdefault(ph.node_types[i], [0, 0])
        entry[0] += 1
        entry[1] += sums[i] // n_runs
    accumulated = sum(t for _c, t in by_type.values()) or 1
    cdf = 0.0
    for kind, (count, total) in sorted(by_type.items(), key=lambda kv: (-kv[1][1], kv[0])):
        pct = total / accumulated * 100
        cdf += pct
        text += (
            _field(24, kind)
            + _field(9, str(count))
            + _field(10, f"{total / 1000:.3f}")
            + _field(10, f"{pct:.3f}")
            + "%"
            + _field(10, f"{cdf:.3f}")
            + "%"
            + _field(10, "0.000")
            + _field(9, str(count))
            + "\n"
        )
    text += "\n"
    text += f"Timings (microseconds): {stat_line(run_totals, percentiles=False)}\n"
    text += f"Memory (bytes): count=0\n{nodes} nodes observed\n\n\n"
    return text


def _tflite_type(op_type: str) -> str:
    return _TFLITE_OPS.get(op_type, op_type.upper())


def _measure_unit(
    runtime: PhoneRuntime, opts: TfliteOptions, child: BenchmarkChild, graph: Graph, choice: UnitChoice
) -> _Phases | str:
    """GPU/NPU runs (worker thread): accel_bench's runs, the cold first one opening the warm-up phase."""
    clock = _PhaseClock(opts)
    fed = [0]
    finished = [False]

    def stop(first_s: float, costs: list[float], _simulated_s: float) -> bool:
        if fed[0] == 0:
            finished[0] = clock.add(first_s)
            fed[0] = 1
        while fed[0] - 1 < len(costs):
            finished[0] = clock.add(costs[fed[0] - 1])
            fed[0] += 1
        return finished[0]

    runs = measure_on_unit(runtime, child, graph, choice, stop, None, opts.graph)
    if isinstance(runs, str):
        return runs.rstrip("\n")
    timed_from = len(clock.warmup) - 1  # the warm-up's first run is `first_s`, not one of `costs_s`
    return _Phases(
        init_s=runs.creation_s,
        warmup_s=clock.warmup,
        timed_s=runs.costs_s[timed_from:],
        node_names=[k.name for k in runs.kernels],
        node_types=[_tflite_type(k.op_type) if k.unit == "cpu" else k.variant for k in runs.kernels],
        node_runs=runs.per_run[timed_from:],
        peak_bytes=runs.peak_bytes,
    )


def _measure_cpu(
    runtime: PhoneRuntime, opts: TfliteOptions, child: BenchmarkChild, cluster: int, pricing: ModelPricing
) -> _Phases | str:
    """CPU runs (worker thread): the child's host runs priced on the cluster, split into the phases.

    The first run arrives before the host profile a non-reference cluster prices by (microarch.py); it
    joins the clock once the profile is there.
    """
    soc = runtime.soc
    start_wall = time.time()
    if not child.start():
        return "benchmark stopped"
    pid = child.pid or 0
    runtime.benchmark_started(pid)
    soc.begin_load(cluster)
    clock = _PhaseClock(opts)
    init = 0.0
    peak = 0
    host_nodes: list[tuple[str, str, float]] = []
    first_run: tuple[float, int] | None = None
    priced_runs: list[tuple[float, int]] = []  # (host s, kHz) of each run, for a non-reference op profile
    split_priced = opts.enable_op_profiling and not pricing.arch.is_reference
    try:
        finished = False
        while not finished:
            message = child.receive()
            if message is None:
                return child.exit_reason()
            tag, payload = message
            if tag in (b"E", b"X"):
                return payload.decode(errors="replace")
            if tag == b"S":
                init = soc.scale(cluster, _DOUBLE.unpack(payload)[0], soc.run_frequency(cluster))
            elif tag == b"F":
                first_run = (_DOUBLE.unpack(payload)[0], soc.run_frequency(cluster))
                if pricing.pricer is not None:
                    finished = clock.add(pricing.pricer.run_seconds(*first_run))
                    first_run = None
            elif tag == b"P":
                host_nodes = [(str(n), str(op), float(us)) for n, op, us in json.loads(payload)["nodes"]]
                pricing.profiled(host_nodes)
            elif tag == b"R":
                pricer = pricing.pricer
                if pricer is None:
                    return "no host profile"
                if first_run is not None:
                    finished = clock.add(pricer.run_seconds(*first_run))
                    first_run = None
                    if finished:
                        break
                peak = max(peak, int(_BATCH_HEAD.unpack_from(payload)[1]))
                for host in array("d", payload[_BATCH_HEAD.size :]):
                    f_khz = soc.run_frequency(cluster)
                    finished = clock.add(pricer.run_seconds(host, f_khz))
                    if split_priced:
                        priced_runs.append((host, f_khz))
                    total = len(clock.warmup) + len(clock.timed)
                    if finished or total >= runtime.bench_limits.max_runs:
                        finished = True
                        break
            elif tag == b"D":
                break
    finally:
        child.close()
        runtime.benchmark_ended(pid)
        soc.end_load(cluster)
        runtime.record_benchmark(start_wall, time.time(), opts.graph, cluster)
    if not clock.timed:
        return "no timed run completed"
    if split_priced and pricing.pricer is not None:
        pricer = pricing.pricer
        return _Phases(
            init_s=init,
            warmup_s=clock.warmup,
            timed_s=clock.timed,
            node_names=[c.name for c in pricer.costs],
            node_types=[_tflite_type(c.op_type) for c in pricer.costs],
            node_runs=[pricer.node_seconds(h, f) for h, f in priced_runs[-len(clock.timed) :]],
            peak_bytes=peak,
        )
    host_sum = sum(us for _n, _op, us in host_nodes) or 1.0
    return _Phases(
        init_s=init,
        warmup_s=clock.warmup,
        timed_s=clock.timed,
        node_names=[n for n, _op, _us in host_nodes],
        node_types=[_tflite_type(op) for _n, op, _us in host_nodes],
        node_runs=[[t * us / host_sum for _n, _op, us in host_nodes] for t in clock.timed],
        peak_bytes=peak,
    )
