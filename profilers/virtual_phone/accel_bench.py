"""A benchmark on the phone's GPU or NPU: the child's host profile, priced run by run by the cost model.

Shared by both benchmark programs (bench.py's `onnxruntime_perf_test`, tflite_bench.py's `benchmark_model`).
The child (bench_process.py) creates the session, runs the model once and measures the per-node host profile
(message `P`); it does no timed runs. Then each run is priced by the plan (accelerator.py) at that run's unit
clock (its devfreq governor, pin and thermal cap: `Soc.unit_run_frequency`) and bus clock
(`Soc.bus_run_frequency`); CPU-fallback kernels at the big cluster's clock. The runs are paced in wall time —
the benchmark lasts as long as its simulated runs, so the die heats, the bus holds its level and the job
queue's overlap checks see it — and stop the moment the command ends.

Session creation on the unit = the host's creation scaled to the big cluster + shader compilation / graph
finalisation (`AcceleratorPlan.compile_seconds`); the first run is a run at 1.3× (cold caches).
"""

from __future__ import annotations

import json
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from profilers.virtual_phone.accelerator import AcceleratorPlan, Kernel, plan
from profilers.virtual_phone.bench_process import BenchmarkChild
from profilers.virtual_phone.graph import Graph

if TYPE_CHECKING:
    from profilers.virtual_phone.runtime import PhoneRuntime

HOST_PROFILE_RUNS = 3
FIRST_RUN_FACTOR = 1.3
DEFAULT_BUS_HZ = 2_000_000_000
"""The bus clock of a phone whose profile models no memory-bus devfreq."""
PACE_AHEAD_S = 0.005
DRIVER_CPU_PCT = 12.0
"""The CPU share reported for a run on a unit: the host thread mostly waits on the accelerator."""
_DOUBLE = struct.Struct("<d")


StopRule = Callable[[float, list[float], float], bool]
"""Asked before each timed run with (first run s, timed runs so far s, their sum s): True ends the runs."""


class UnitRefused(Exception):
    """The unit cannot run this model as asked (the runtime's own error line)."""


@dataclass(frozen=True)
class UnitChoice:
    """Where and how a benchmark runs: unit, precision, and the provider name its kernels report."""

    unit: str
    precision: str
    provider: str


def failure_line(child: BenchmarkChild, message: tuple[bytes, bytes] | None, model: str) -> str | None:
    """The benchmark's one-line error for a child message that ends the run: the child exited (None), the
    model failed to load (`E`) or a run failed (`X`); None for any other message."""
    if message is None:
        return f"Run failed: {child.exit_reason()}\n"
    tag, payload = message
    if tag == b"E":
        return f"Load model from {model} failed:{payload.decode(errors='replace')}\n"
    if tag == b"X":
        return f"Run failed: {payload.decode(errors='replace')}\n"
    return None


def unit_precision(runtime: PhoneRuntime, unit: str, model_precision: str, fp32_as_fp16: bool) -> str:
    """The precision `unit` runs a model of `model_precision` at, or UnitRefused with the runtime's reason.

    A GPU runs fp32 and fp16 graphs and refuses QDQ (int8) ones; an NPU runs int8 and fp16, and an fp32 graph
    only relaxed to fp16 when `fp32_as_fp16` (QNN HTP's fp16 precision, NNAPI's USE_FP16 / allow_fp16).
    """
    spec = runtime.profile.accelerator(unit)
    if spec is None:
        raise UnitRefused(f"this phone has no {unit.upper()}")
    precision = model_precision
    if precision == "fp32" and fp32_as_fp16 and "fp32" not in spec.precisions:
        precision = "fp16"
    if precision not in spec.precisions:
        raise UnitRefused(
            f"{precision} graphs are not supported by the {unit.upper()} ({spec.model}); it runs "
            f"{', '.join(spec.precisions)}"
        )
    return precision


@dataclass
class AcceleratorRuns:
    """What a benchmark on a unit measured: creation, first run, each timed run and its kernels."""

    creation_s: float
    first_s: float
    costs_s: list[float]
    kernels: list[Kernel]
    per_run: list[list[float]]
    cpu_pct: float
    peak_bytes: int

    def kernel_means_s(self) -> list[float]:
        """Each kernel's mean time per run."""
        n = max(1, len(self.per_run))
        return [sum(run[i] for run in self.per_run) / n for i in range(len(self.kernels))]


def measure_on_unit(
    runtime: PhoneRuntime,
    child: BenchmarkChild,
    graph: Graph,
    choice: UnitChoice,
    stop: StopRule,
    seed: int | None,
    model_label: str,
) -> AcceleratorRuns | str:
    """Run the child for the host profile, then price runs until `stop` says so.

    Runs in a worker thread; returns an error line instead on failure or when the command ends early.
    """
    soc = runtime.soc
    spec = runtime.profile.accelerator(choice.unit)
    assert spec is not None
    start_wall = time.time()
    if not child.start():
        return "Run failed: benchmark stopped\n"
    pid = child.pid or 0
    runtime.benchmark_started(pid)
    soc.begin_unit_load(choice.unit)
    big = soc.cluster_for_cpus(None)

    def cpu_scale() -> Callable[[float], float]:
        f = soc.run_frequency(big)
        return lambda host_s: soc.scale(big, host_s, f)

    try:
        host_creation, host_profile, peak = 0.0, None, 0
        while True:
            message = child.receive()
            failure = failure_line(child, message, model_label)
            if failure is not None:
                return failure
            assert message is not None
            tag, payload = message
            if tag == b"S":
                host_creation = _DOUBLE.unpack(payload)[0]
            elif tag == b"P":
                message_p = json.loads(payload)
                host_profile = {str(n): float(us) for n, _op, us in message_p["nodes"]}
                peak = int(message_p.get("peak_bytes", 0))
            elif tag == b"D":
                break
        if host_profile is None:
            return "Run failed: no host profile\n"
        the_plan = plan(graph, host_profile, spec, choice.precision)
        rng = random.Random(seed)
        fallback = any(k.unit == "cpu" for k in the_plan.kernels)
        identity: Callable[[float], float] = lambda s: s  # noqa: E731  (no CPU kernel: never called)

        def one_run() -> list[float]:
            f = soc.unit_run_frequency(choice.unit)
            bus = soc.bus_run_frequency() or DEFAULT_BUS_HZ
            return [kt.seconds for kt in the_plan.run(f, bus, cpu_scale() if fallback else identity, rng)]

        creation = cpu_scale()(host_creation) + the_plan.compile_seconds()
        first = sum(one_run()) * FIRST_RUN_FACTOR
        if child.wait_killed(creation + first):
            return "Run failed: benchmark stopped\n"
        return _paced_runs(runtime, child, the_plan, one_run, stop, creation, first, peak)
    finally:
        child.close()
        runtime.benchmark_ended(pid)
        soc.end_unit_load(choice.unit)
        runtime.record_benchmark(start_wall, time.time(), model_label, choice.unit)


def _paced_runs(
    runtime: PhoneRuntime,
    child: BenchmarkChild,
    the_plan: AcceleratorPlan,
    one_run: Callable[[], list[float]],
    stop: StopRule,
    creation: float,
    first: float,
    peak: int,
) -> AcceleratorRuns | str:
    costs: list[float] = []
    per_run: list[list[float]] = []
    simulated = 0.0
    wall0 = time.monotonic()
    while not stop(first, costs, simulated) and len(costs) < runtime.bench_limits.max_runs:
        times = one_run()
        per_run.append(times)
        costs.append(sum(times))
        simulated += costs[-1]
        ahead = simulated - (time.monotonic() - wall0)
        if ahead > PACE_AHEAD_S and child.wait_killed(ahead):
            return "Run failed: benchmark stopped\n"
    if not costs:
        return "Run failed: no run completed\n"
    return AcceleratorRuns(creation, first, costs, the_plan.kernels, per_run, DRIVER_CPU_PCT, peak)
