"""The benchmark program of the virtual phone: an `onnxruntime_perf_test`-compatible command line.

It is "installed" by pushing `profilers/virtual_phone/bin/onnxruntime_perf_test` (a marker file) anywhere on
the phone and making it executable; the shell then runs this module instead of an arm64 binary. Usage as the
real tool: `onnxruntime_perf_test [options...] model_path [result_file]` with `-m times|duration`, `-r N`,
`-t S`, `-x intra_op_threads` (default 1 here), `-y inter_op_threads`, `-e cpu`, `-I` (random inputs of the
model's shapes; inputs are always generated, there is no test_data_set on a virtual phone), `-S seed`, `-s`
(print the Min/Max/P50/P90/P95/P99/P999 latency lines), and `-o`, `-A`, `-M`, `-P` and friends accepted and
ignored. The output is that of onnxruntime_perf_test ≥ 1.20 ("Average inference time cost total: … ms"); a
`result_file` argument gets one `model,seconds,peak_bytes,cpu_pct,index` line per run appended (and the
latency block with `-s`), as the real tool does. A bad command line, provider or model exits 255 (main returns
-1) with the reason on stderr.

Each run is a real `InferenceSession.run` on the host, timed with `perf_counter`, then scaled to the phone:
`t = t_host · (c · f_ref / f + (1 − c))` with `f` the simulated frequency of the cluster the run lands on
for that run (governor + throttling, see `soc.py`) and `c`, `f_ref` from the profile. The cluster is the one
`taskset` allows (the fastest cluster among the mask's CPUs; without taskset the fastest cluster overall, as
EAS would place a busy single thread). The report prints the real tool's lines, so one parser serves both.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import random
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from profilers.virtual_phone.filesystem import FsError

if TYPE_CHECKING:
    import onnxruntime as ort

    from profilers.virtual_phone.phone import PhoneRuntime
    from profilers.virtual_phone.shell import Context

OPTS_WITH_ARG = set("mrtxyeSopcdiCfFTRlu")
OPTS_FLAGS = set("IsAMPvnzDZqgh")
EXIT_FAILURE = 255  # the real tool returns -1 from main
USAGE = (
    "usage: onnxruntime_perf_test [options...] model_path [result_file]\n"
    "  -m [test_mode]: 'duration' or 'times'. Default:'duration'.\n"
    "  -e [cpu]: execution provider (only cpu on a virtual phone).\n"
    "  -r [repeated_times]: repetitions in 'times' mode. Default:1000.\n"
    "  -t [seconds_to_run]: seconds to run in 'duration' mode. Default:600.\n"
    "  -x [intra_op_num_threads]: Default:1 on a virtual phone.\n"
    "  -I: generate tensor input binding (random data of the input shapes).\n"
)
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


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
    except ValueError as exc:
        raise BenchmarkUsageError(f"invalid number: {exc}") from exc
    if opts.repeats <= 0 or opts.seconds <= 0:
        raise BenchmarkUsageError("repeated_times and seconds_to_run must be positive")
    return opts


async def run_benchmark(runtime: PhoneRuntime, ctx: Context, args: list[str]) -> int:
    """The shell entry point: parse, run in a worker thread (the phone keeps serving), print the report."""
    try:
        opts = parse_options(args[1:])
    except BenchmarkUsageError as exc:
        ctx.err(((f"{exc}\n" if str(exc) else "") + USAGE).encode())
        return EXIT_FAILURE
    if opts.provider != "cpu":
        ctx.err(f"{opts.provider} is not supported in this build.\n".encode())
        return EXIT_FAILURE
    vpath = runtime.fs.normalize(opts.model, ctx.cwd)
    try:
        model_bytes = runtime.fs.read(vpath)
    except FsError as exc:
        ctx.err(f"Load model from {opts.model} failed:{exc}\n".encode())
        return EXIT_FAILURE
    cluster = runtime.soc.cluster_for_cpus(ctx.affinity)
    loop = asyncio.get_running_loop()
    if runtime.faults.current().garbage_benchmark:
        start = time.time()
        rng = random.Random()
        junk = bytes(rng.randrange(32, 127) for _ in range(200))
        ctx.out(b"Session creation time cost: ??? s\n" + junk + b"\nAverage inference time cost: nan ms\n")
        runtime.record_benchmark(start, time.time(), opts.model, cluster, garbage=True)
        return 0
    result = await loop.run_in_executor(None, _measure, runtime, opts, model_bytes, cluster)
    if isinstance(result, str):
        ctx.err(result.encode())
        return EXIT_FAILURE
    if opts.threads_given:
        ctx.out(f"Setting intra_op_num_threads to {opts.intra_threads}\n".encode())
    ctx.out(result.summary().encode())
    if opts.statistics:
        ctx.out(result.statistics().encode())
    if opts.result_file:
        try:
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
    return 0


def _inputs(session: ort.InferenceSession, seed: int | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name}: unsupported type {inp.type}")
        if dtype is np.bool_:
            feeds[inp.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[inp.name] = rng.integers(0, 8, size=shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _fmt(x: float) -> str:
    # C++ iostream default formatting (6 significant digits), as the real tool prints.
    return f"{x:g}"


def _measure(
    runtime: PhoneRuntime, opts: BenchmarkOptions, model_bytes: bytes, cluster: int
) -> _Result | str:
    """Run the benchmark in this (worker) thread; an error message instead of a result on failure."""
    import onnxruntime as ort

    soc = runtime.soc
    start_wall = time.time()
    soc.begin_load(cluster)
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, opts.intra_threads)
        so.inter_op_num_threads = max(1, opts.inter_threads)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        t0 = time.perf_counter()
        try:
            session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
            feeds = _inputs(session, opts.seed)
        except Exception as exc:  # onnxruntime raises its own exception types for invalid models
            return f"Load model from {opts.model} failed:{exc}\n"
        f = soc.run_frequency(cluster)
        creation = soc.scale(cluster, time.perf_counter() - t0, f)
        try:
            t0 = time.perf_counter()
            session.run(None, feeds)
            first = soc.scale(cluster, time.perf_counter() - t0, soc.run_frequency(cluster))
            costs: list[float] = []
            cpu0, total = time.process_time(), 0.0
            host_total = 0.0
            while True:
                f = soc.run_frequency(cluster)
                t0 = time.perf_counter()
                session.run(None, feeds)
                host = time.perf_counter() - t0
                host_total += host
                scaled = soc.scale(cluster, host, f)
                costs.append(scaled)
                total += scaled
                if opts.mode == "times" and len(costs) >= opts.repeats:
                    break
                if opts.mode == "duration" and total >= opts.seconds:
                    break
            cpu_pct = 100.0 * (time.process_time() - cpu0) / host_total if host_total > 0 else 0.0
        except Exception as exc:
            return f"Run failed: {exc}\n"
    finally:
        soc.end_load(cluster)
        runtime.record_benchmark(start_wall, time.time(), opts.model, cluster)
    return _Result(creation, first, costs, cpu_pct, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


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


def append_interval(path: os.PathLike[str] | str, record: dict[str, object]) -> None:
    """Append one JSON line with O_APPEND (one small write: atomic across processes)."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
