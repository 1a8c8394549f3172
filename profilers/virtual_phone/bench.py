"""The benchmark program of the virtual phone: an `onnxruntime_perf_test`-compatible command line.

It is "installed" by pushing `profilers/virtual_phone/bin/onnxruntime_perf_test` (a marker file) anywhere on
the phone and making it executable; the shell then runs this module instead of an arm64 binary. Usage as the
real tool: `onnxruntime_perf_test [options...] model_path [result_file]` with `-m times|duration`, `-r N`,
`-t S`, `-x intra_op_threads` (default 1 here), `-y inter_op_threads`, `-e cpu|xnnpack|qnn|nnapi`,
`-i "key|value key|value"` (provider options), `-p PREFIX` (onnxruntime profiling: writes
`PREFIX_<date_time>.json`, see ort_profile.py), `-I` (random inputs of the model's shapes; inputs are always
generated, there is no test_data_set on a virtual phone), `-S seed`, `-s` (print the Min/Max/P50/P90/P95/P99/
P999 latency lines), and `-o`, `-A`, `-M`, `-P` and friends accepted and ignored. The output is that of
onnxruntime_perf_test ≥ 1.20 ("Average inference time cost total: … ms"); a `result_file` argument gets one
`model,seconds,peak_bytes,cpu_pct,index` line per run appended (and the latency block with `-s`), as the real
tool does. A bad command line, provider or model exits 255 (main returns -1) with the reason on stderr.

The compute unit follows the provider: `-e cpu` and `-e xnnpack` run on a CPU cluster; `-e qnn` on the GPU
with `-i "backend_type|gpu"` (or `backend_path|libQnnGpu.so`) and on the NPU with `backend_type|htp` /
`backend_path|libQnnHtp.so` (the default backend); `-e nnapi` on the NPU. QNN exists only on a
Qualcomm-style phone (an Adreno/kgsl GPU; HTP needs the NPU). The precision is the pushed model's (graph.py);
a GPU refuses an int8 (QDQ) graph, an NPU runs an fp32 graph relaxed to fp16 under QNN
(`enable_htp_fp16_precision`, on by default) or with `-i NNAPI_FLAG_USE_FP16` under NNAPI, and refuses it
otherwise.

CPU runs: each run is a real `InferenceSession.run` on the host, timed with `perf_counter`, then scaled to the
phone: `t = t_host · (c · f_ref / f + (1 − c))` with `f` the simulated frequency of the cluster the run lands
on for that run (governor + throttling, see `soc.py`) and `c`, `f_ref` from the profile. The cluster is the
one `taskset` allows (the fastest cluster among the mask's CPUs; without taskset the fastest cluster overall,
as EAS would place a busy single thread). A cluster with a microarchitecture other than the reference prices
each run node by node instead (microarch.py: speed per operator kind, cache, bandwidth floor), from the
model's per-node host profile — measured by the child the first time a model runs at a thread count, then
cached. With `-p` the child also measures the per-node host profile and each run's node events are the run's
time split in the host's per-node shares (the priced node times on a non-reference cluster).

GPU/NPU runs (accel_bench.py): the child measures the per-node host profile only, and each run is priced by
the accelerator cost model (accelerator.py) at that run's unit and bus clocks. The report prints the real
tool's lines either way, so one parser serves both; the bench log names the unit instead of the cluster.

Confinement (see model_policy.py and bench_process.py): a model that references external data is refused
before anything loads it; the runs happen in a child process with CPU-time and memory limits, at most the
phone's CPU count of threads and at most `BenchmarkLimits.max_runs` timed runs (a duration-mode benchmark
stops there too), and the child is killed the moment the command ends — also when its client disconnects.
Errors are one line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import posixpath
import random
import struct
import time
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from profilers.virtual_phone.accel_bench import (
    HOST_PROFILE_RUNS,
    UnitChoice,
    UnitRefused,
    failure_line,
    measure_on_unit,
    unit_precision,
)
from profilers.virtual_phone.bench_process import BenchmarkChild, ChildSpec
from profilers.virtual_phone.errors import one_line
from profilers.virtual_phone.filesystem import FsError
from profilers.virtual_phone.graph import Graph, read_graph
from profilers.virtual_phone.microarch import ModelPricing
from profilers.virtual_phone.model_policy import ModelRefused, check_model
from profilers.virtual_phone.ort_profile import NodeEvent, profile_json, profile_path

if TYPE_CHECKING:
    from profilers.virtual_phone.runtime import PhoneRuntime
    from profilers.virtual_phone.shell_context import Context

BENCHMARK_MARKER = b"#!latfarm-virtual-onnxruntime_perf_test"
"""The first bytes of the file the shell runs as this program (see `bin/onnxruntime_perf_test`)."""
OPTS_WITH_ARG = set("mrtxyeSopcdiCfFTRlu")
OPTS_FLAGS = set("IsAMPvnzDZqgh")
EXIT_FAILURE = 255  # the real tool returns -1 from main
PROVIDERS = ("cpu", "xnnpack", "qnn", "nnapi")
_PROVIDER_NAMES = {"qnn": "QNNExecutionProvider", "nnapi": "NnapiExecutionProvider"}
USAGE = (
    "usage: onnxruntime_perf_test [options...] model_path [result_file]\n"
    "  -m [test_mode]: 'duration' or 'times'. Default:'duration'.\n"
    "  -e [cpu|xnnpack|qnn|nnapi]: execution provider.\n"
    "  -i [provider options]: 'backend_type|gpu', 'backend_type|htp', 'NNAPI_FLAG_USE_FP16'.\n"
    "  -p [profile_file_prefix]: onnxruntime profiling, written to PREFIX_<date_time>.json.\n"
    "  -r [repeated_times]: repetitions in 'times' mode. Default:1000.\n"
    "  -t [seconds_to_run]: seconds to run in 'duration' mode. Default:600.\n"
    "  -x [intra_op_num_threads]: Default:1 on a virtual phone.\n"
    "  -I: generate tensor input binding (random data of the input shapes).\n"
)
_DOUBLE = struct.Struct("<d")
_BATCH_HEAD = struct.Struct("<dd")


class BenchmarkUsageError(Exception):
    """Bad command line for the benchmark program."""


@dataclass
class BenchmarkOptions:
    """The subset of onnxruntime_perf_test's options that changes what runs."""

    model: str
    mode: str = "duration"
    repeats: int = 1000
    seconds: float = 600.0
    intra_threads: int = 1
    inter_threads: int = 1
    provider: str = "cpu"
    seed: int | None = None
    threads_given: bool = False
    statistics: bool = False
    result_file: str | None = None
    provider_options: str = ""
    profile_prefix: str | None = None


def parse_options(argv: list[str]) -> BenchmarkOptions:
    """Parse getopt-style arguments (`-r 10`, `-r10`, bundled flags `-sI`)."""
    values: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and len(a) > 1 and not a.startswith("--"):
            j = 1
            while j < len(a):
                opt = a[j]
                if opt in OPTS_WITH_ARG:
                    if j + 1 < len(a):
                        values[opt] = a[j + 1 :]
                    elif i + 1 < len(argv):
                        i += 1
                        values[opt] = argv[i]
                    else:
                        raise BenchmarkUsageError(f"option -{opt} requires an argument")
                    break
                if opt in OPTS_FLAGS:
                    if opt == "h":
                        raise BenchmarkUsageError("")
                    values.setdefault("flags", "")
                    values["flags"] += opt
                    j += 1
                    continue
                raise BenchmarkUsageError(f"unknown option -{opt}")
        elif a.startswith("--"):
            # long options of newer versions (e.g. --session_option k=v) take one argument
            i += 1
        else:
            positional.append(a)
        i += 1
    if not positional:
        raise BenchmarkUsageError("model_path is required")
    try:
        opts = BenchmarkOptions(model=positional[0])
        opts.statistics = "s" in values.get("flags", "")
        opts.result_file = positional[1] if len(positional) > 1 else None
        if "m" in values:
            if values["m"] not in ("times", "duration"):
                raise BenchmarkUsageError(f"invalid test mode {values['m']!r}")
            opts.mode = values["m"]
        if "r" in values:
            opts.repeats = int(values["r"])
        if "t" in values:
            opts.seconds = float(values["t"])
        if "x" in values:
            opts.intra_threads, opts.threads_given = int(values["x"]), True
        if "y" in values:
            opts.inter_threads = int(values["y"])
        if "e" in values:
            opts.provider = values["e"]
        if "S" in values:
            opts.seed = int(values["S"])
        opts.provider_options = values.get("i", "")
        opts.profile_prefix = values.get("p") or None
    except ValueError as exc:
        raise BenchmarkUsageError(f"invalid number: {exc}") from exc
    if opts.repeats <= 0 or opts.seconds <= 0:
        raise BenchmarkUsageError("repeated_times and seconds_to_run must be positive")
    return opts


async def run_benchmark(runtime: PhoneRuntime, ctx: Context, args: list[str]) -> int:
    """The shell entry point: parse, check the model, run it in a child process, print the report."""
    try:
        opts = parse_options(args[1:])
        if opts.mode == "times" and opts.repeats > runtime.bench_limits.max_runs:
            raise BenchmarkUsageError(
                f"repeated_times above this virtual phone's limit of {runtime.bench_limits.max_runs}"
            )
    except BenchmarkUsageError as exc:
        ctx.err(((f"{exc}\n" if str(exc) else "") + USAGE).encode())
        return EXIT_FAILURE
    if opts.provider not in PROVIDERS:
        ctx.err(f"{opts.provider} is not supported in this build.\n".encode())
        return EXIT_FAILURE
    vpath = runtime.fs.normalize(opts.model, ctx.cwd)
    try:
        model_bytes = runtime.fs.read(vpath)
        check_model(model_bytes)
    except (FsError, ModelRefused) as exc:
        ctx.err(f"Load model from {opts.model} failed:{exc}\n".encode())
        return EXIT_FAILURE
    choice: UnitChoice | None = None
    graph: Graph | None = None
    loop = asyncio.get_running_loop()
    if opts.provider in ("qnn", "nnapi"):
        try:
            graph = await loop.run_in_executor(None, read_graph, model_bytes)  # shape inference: not here
            choice = choose_unit(runtime, opts, graph.precision)
        except UnitRefused as exc:
            ctx.err(f"{_PROVIDER_NAMES[opts.provider]}: {exc}\n".encode())
            return EXIT_FAILURE
        except Exception as exc:  # onnx raises its own types for graphs it cannot read
            ctx.err(f"Load model from {opts.model} failed:{one_line(exc, 300)}\n".encode())
            return EXIT_FAILURE
    cluster = runtime.soc.cluster_for_cpus(ctx.affinity)
    if runtime.faults.current().garbage_benchmark:
        start = time.time()
        rng = random.Random()
        junk = bytes(rng.randrange(32, 127) for _ in range(200))
        ctx.out(b"Session creation time cost: ??? s\n" + junk + b"\nAverage inference time cost: nan ms\n")
        runtime.record_benchmark(start, time.time(), opts.model, cluster, garbage=True)
        return 0
    cpus = runtime.profile.cpu_count
    threads = min(max(1, opts.intra_threads), cpus)
    pricing = ModelPricing(
        runtime.profile.clusters[cluster].microarch,
        functools.partial(runtime.soc.scale, cluster),
        model_bytes,
        threads,
    )
    wants_host_profile = choice is not None or opts.profile_prefix is not None or pricing.needs_profile
    child = BenchmarkChild(
        ChildSpec(
            model_bytes=model_bytes,
            intra_threads=threads,
            inter_threads=min(max(1, opts.inter_threads), cpus),
            seed=opts.seed,
            repeats=0 if choice is not None else opts.repeats if opts.mode == "times" else None,
            limits=runtime.bench_limits,
            workdir=str(runtime.bench_workdir),
            host_profile_runs=HOST_PROFILE_RUNS if wants_host_profile else 0,
        )
    )
    try:
        if choice is not None and graph is not None:
            outcome = await loop.run_in_executor(None, _measure_unit, runtime, opts, child, graph, choice)
        else:
            outcome = await loop.run_in_executor(None, _measure, runtime, opts, child, cluster, pricing)
    finally:
        child.kill()  # done, failed, or cancelled because the client left: the child ends here
    if isinstance(outcome, str):
        ctx.err(outcome.encode())
        return EXIT_FAILURE
    result, node_runs = outcome
    if opts.threads_given:
        ctx.out(f"Setting intra_op_num_threads to {opts.intra_threads}\n".encode())
    ctx.out(result.summary().encode())
    if opts.statistics:
        ctx.out(result.statistics().encode())
    try:
        if opts.result_file:
            runtime.fs.write(
                runtime.fs.normalize(opts.result_file, ctx.cwd),
                result.result_file(
                    posixpath.splitext(posixpath.basename(opts.model))[0], opts.statistics
                ).encode(),
                append=True,
                as_root=ctx.root,
            )
    except FsError as exc:
        ctx.err(f"failed to open result file {opts.result_file}: {exc}\n".encode())
        return EXIT_FAILURE
    if opts.profile_prefix:
        path = profile_path(opts.profile_prefix)
        try:
            runtime.fs.write(
                runtime.fs.normalize(path, ctx.cwd),
                profile_json(result.creation_s, node_runs),
                as_root=ctx.root,
            )
        except FsError as exc:
            ctx.err(f"failed to write profile {path}: {exc}\n".encode())
            return EXIT_FAILURE
    return 0


def _provider_options(text: str) -> dict[str, str]:
    """`-i "k1|v1 k2|v2"` as a dict; a bare token (an NNAPI flag) maps to "1"."""
    options = {}
    for token in text.split():
        key, _, value = token.partition("|")
        options[key] = value if value else "1"
    return options


def choose_unit(runtime: PhoneRuntime, opts: BenchmarkOptions, model_precision: str) -> UnitChoice:
    """The unit and precision of an accelerator provider's run, or UnitRefused naming what is wrong."""
    options = _provider_options(opts.provider_options)
    if opts.provider == "nnapi":
        if runtime.profile.npu is None:
            raise UnitRefused("no NNAPI accelerator device on this phone")
        fp16 = "NNAPI_FLAG_USE_FP16" in options
        return UnitChoice(
            "npu", unit_precision(runtime, "npu", model_precision, fp16), "NnapiExecutionProvider"
        )
    backend = options.get("backend_type", "")
    path = options.get("backend_path", "")
    if not backend and path:
        backend = {"libQnnGpu.so": "gpu", "libQnnHtp.so": "htp"}.get(posixpath.basename(path), "")
        if not backend:
            raise UnitRefused(f"unknown backend_path {path!r} (libQnnGpu.so or libQnnHtp.so)")
    backend = backend or "htp"
    if backend not in ("gpu", "htp"):
        raise UnitRefused(f"backend_type {backend!r} is not available (gpu or htp)")
    unit = "gpu" if backend == "gpu" else "npu"
    spec = runtime.profile.accelerator(unit)
    if spec is None or (unit == "gpu" and spec.layout != "kgsl"):
        lib = "libQnnGpu.so" if unit == "gpu" else "libQnnHtp.so"
        raise UnitRefused(f'Failed to load {lib}: dlopen failed: library "{lib}" not found')
    fp16 = options.get("enable_htp_fp16_precision", "1") != "0"
    return UnitChoice(unit, unit_precision(runtime, unit, model_precision, fp16), "QNNExecutionProvider")


def _fmt(x: float) -> str:
    # C++ iostream default formatting (6 significant digits), as the real tool prints.
    return f"{x:g}"


def _measure(
    runtime: PhoneRuntime,
    opts: BenchmarkOptions,
    child: BenchmarkChild,
    cluster: int,
    pricing: ModelPricing,
) -> tuple[_Result, list[list[NodeEvent]]] | str:
    """Price the child's runs on the phone as they arrive (worker thread); an error line on failure.

    In duration mode this decides when enough simulated time has run and stops the child. The first run
    arrives before the host profile a non-reference cluster prices by, so it is priced once the loop ends.
    """
    soc = runtime.soc
    start_wall = time.time()
    if not child.start():
        return "Run failed: benchmark stopped\n"
    pid = child.pid or 0
    runtime.benchmark_started(pid)
    soc.begin_load(cluster)
    creation = 0.0
    first_run = (0.0, 0)
    priced_runs: list[tuple[float, int]] = []  # (host s, kHz) of each run, for a non-reference -p split
    split_priced = opts.profile_prefix is not None and not pricing.arch.is_reference
    costs = array("d")
    total = host_total = cpu_s = 0.0
    peak = 0
    host_nodes: list[tuple[str, str, float]] = []
    try:
        while True:
            message = child.receive()
            failure = failure_line(child, message, opts.model)
            if failure is not None:
                return failure
            assert message is not None
            tag, payload = message
            if tag == b"S":
                creation = soc.scale(cluster, _DOUBLE.unpack(payload)[0], soc.run_frequency(cluster))
            elif tag == b"F":
                first_run = (_DOUBLE.unpack(payload)[0], soc.run_frequency(cluster))
            elif tag == b"P":
                host_nodes = [(str(n), str(op), float(us)) for n, op, us in json.loads(payload)["nodes"]]
                pricing.profiled(host_nodes)
            elif tag == b"R":
                pricer = pricing.pricer
                if pricer is None:
                    return "Run failed: no host profile\n"
                cpu_s, peak_f = _BATCH_HEAD.unpack_from(payload)
                peak = max(peak, int(peak_f))
                for host in array("d", payload[_BATCH_HEAD.size :]):
                    f_khz = soc.run_frequency(cluster)
                    scaled = pricer.run_seconds(host, f_khz)
                    if split_priced:
                        priced_runs.append((host, f_khz))
                    costs.append(scaled)
                    total += scaled
                    host_total += host
                    if opts.mode == "duration" and (
                        total >= opts.seconds or len(costs) >= runtime.bench_limits.max_runs
                    ):
                        child.kill()
                        break
                else:
                    continue
                break
            elif tag == b"D":
                break
    finally:
        child.close()
        runtime.benchmark_ended(pid)
        soc.end_load(cluster)
        runtime.record_benchmark(start_wall, time.time(), opts.model, cluster)
    if not costs or pricing.pricer is None:
        return "Run failed: no run completed\n"
    first = pricing.pricer.run_seconds(*first_run)
    cpu_pct = 100.0 * cpu_s / host_total if host_total > 0 else 0.0
    provider = "XnnpackExecutionProvider" if opts.provider == "xnnpack" else "CPUExecutionProvider"
    if split_priced:
        nodes = pricing.pricer.costs
        node_runs = [
            [
                NodeEvent(c.name, c.op_type, provider, s)
                for c, s in zip(nodes, pricing.pricer.node_seconds(h, f), strict=True)
            ]
            for h, f in priced_runs
        ]
        return _Result(creation, first, list(costs), cpu_pct, peak), node_runs
    host_sum = sum(us for _n, _op, us in host_nodes) or 1.0
    node_runs = [
        [NodeEvent(n, op, provider, cost * us / host_sum) for n, op, us in host_nodes]
        for cost in (costs if opts.profile_prefix else [])
    ]
    return _Result(creation, first, list(costs), cpu_pct, peak), node_runs


def _measure_unit(
    runtime: PhoneRuntime, opts: BenchmarkOptions, child: BenchmarkChild, graph: Graph, choice: UnitChoice
) -> tuple[_Result, list[list[NodeEvent]]] | str:
    """A GPU/NPU benchmark (worker thread): the runs priced by the cost model; an error line on failure."""

    def stop(_first_s: float, costs: list[float], simulated_s: float) -> bool:
        return len(costs) >= opts.repeats if opts.mode == "times" else simulated_s >= opts.seconds

    runs = measure_on_unit(runtime, child, graph, choice, stop, opts.seed, opts.model)
    if isinstance(runs, str):
        return runs
    node_runs = [
        [
            NodeEvent(
                k.name,
                k.op_type,
                "CPUExecutionProvider" if k.unit == "cpu" else choice.provider,
                seconds,
                kernel=k.variant,
                unit=k.unit,
            )
            for k, seconds in zip(runs.kernels, run, strict=True)
        ]
        for run in (runs.per_run if opts.profile_prefix else [])
    ]
    result = _Result(runs.creation_s, runs.first_s, runs.costs_s, runs.cpu_pct, runs.peak_bytes)
    return result, node_runs


@dataclass
class _Result:
    creation_s: float
    first_s: float
    costs_s: list[float]
    cpu_pct: float
    peak_bytes: int

    def _pct(self, p: float) -> float:
        ordered = sorted(self.costs_s)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]  # ORT: sorted[int(n * p)]

    def summary(self) -> str:
        """The summary block of onnxruntime_perf_test ≥ 1.20."""
        n, total = len(self.costs_s), sum(self.costs_s)
        return (
            f"Session creation time cost: {_fmt(self.creation_s)} s\n"
            f"First inference time cost: {int(self.first_s * 1000)} ms\n"
            f"Total inference time cost: {_fmt(total)} s\n"
            f"Total inference requests: {n}\n"
            f"Average inference time cost total: {total / n * 1000:f} ms\n"
            f"Total inference run time: {_fmt(total)} s\n"
            f"Number of inferences per second: {_fmt(n / total)} \n"
            f"Avg CPU usage: {int(self.cpu_pct)} %\n"
            f"Peak working set size: {self.peak_bytes} bytes\n"
        )

    def statistics(self) -> str:
        """The latency block printed with -s (seconds)."""
        rows = [("Min", min(self.costs_s)), ("Max", max(self.costs_s))]
        rows += [
            (f"P{label}", self._pct(p)) for label, p in (("50", 0.5), ("90", 0.9), ("95", 0.95), ("99", 0.99))
        ]
        rows.append(("P999", self._pct(0.999)))
        return "".join(f"{name} Latency: {_fmt(value)} s\n" for name, value in rows)

    def result_file(self, model_name: str, with_statistics: bool) -> str:
        """What the real tool appends to its result file: one CSV line per run (+ the statistics block)."""
        lines = "".join(
            f"{model_name},{_fmt(c)},{self.peak_bytes},{int(self.cpu_pct)},{i}\n"
            for i, c in enumerate(self.costs_s)
        )
        return lines + ("\n" + self.statistics() if with_statistics else "")
