"""Parsers for what real benchmark programs print, turned into one :class:`BenchmarkStats`.

``onnxruntime_perf_test`` (onnxruntime/test/perftest). Its stdout ends with a summary::

    Session creation time cost: 0.0123 s
    First inference time cost: 3 ms
    Total inference time cost: 0.0254 s
    Total inference requests: 10
    Average inference time cost total: 2.54 ms      ("Average inference time cost: 2.54 ms" before 1.20)
    Total inference run time: 0.0256 s
    ...
and, with ``-s`` (dump statistics), latency percentiles *in seconds*::

    Min Latency: 0.00241 s      ("Min Latency is 0.00241 sec" in releases before ~1.9)
    Max Latency: ... / P50 Latency: ... / P90 Latency: ... / P95 / P99 / P999

When given a result file argument it also appends one CSV line per run to that file:
``model_name,time_s,peak_workingset_bytes,avg_cpu_usage,run_index`` (a 6-column variant with a
submission time before the total time exists since late 2025). Per-run times therefore come from the
result file; with stdout only, median/p90/min/max come from the percentile lines (note: ORT's P50 is
``sorted[int(n * 0.5)]``, the upper median) and std is unknown.

TFLite ``benchmark_model`` (tensorflow/lite/tools/benchmark). It prints one stats line per phase
(warm-up, then the timed runs), in microseconds::

    INFO: count=50 first=2210 curr=2140 min=2101 max=2533 avg=2166.3 std=71 p5=2105 median=2150 p95=2340
    INFO: Inference timings in us: Init: 1234, First inference: 2510, Warmup (avg): 2301, \
          Inference (avg): 2166.3          (one line)

(`count=N curr=X(all same) …` when every run took X, `count=1 curr=X …` for one run.)

Per-run times are not printed; ``median=`` appears in TF ≥ 2.x builds (without it the output is
rejected rather than guessed); ``std=`` is the population std; p90 is not printed (``None``).
"""

from __future__ import annotations

import math
import re
import statistics

from pydantic import BaseModel, Field

from profilers.adb.errors import OutputParseError


class BenchmarkStats(BaseModel):
    """Latency statistics of one benchmark invocation, in milliseconds."""

    median_ms: float = Field(gt=0)
    mean_ms: float = Field(gt=0)
    std_ms: float | None = Field(default=None, ge=0)
    min_ms: float = Field(gt=0)
    max_ms: float = Field(gt=0)
    p90_ms: float | None = Field(default=None, gt=0)
    runs: int = Field(ge=1)
    raw_runs_ms: list[float] = Field(default_factory=list)


def stats_from_runs(runs_ms: list[float]) -> BenchmarkStats:
    """Statistics of per-run times: exact median, linear-interpolated p90, sample std (None for one run)."""
    if not runs_ms:
        raise OutputParseError("no per-run times to summarise")
    if any(not math.isfinite(t) or t <= 0 for t in runs_ms):
        raise OutputParseError(f"per-run times must be positive finite numbers, got {runs_ms[:5]}…")
    ordered = sorted(runs_ms)
    return BenchmarkStats(
        median_ms=statistics.median(ordered),
        mean_ms=statistics.fmean(ordered),
        std_ms=statistics.stdev(ordered) if len(ordered) > 1 else None,
        min_ms=ordered[0],
        max_ms=ordered[-1],
        p90_ms=_percentile(ordered, 0.9),
        runs=len(ordered),
        raw_runs_ms=list(runs_ms),
    )


def _percentile(ordered: list[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default "linear" method).
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


_NUMBER = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
_ORT_LATENCY = re.compile(
    rf"^\s*(Min|Max|P50|P90|P95|P99|P999) Latency(?: is|:)\s*{_NUMBER}\s*(s|sec)\s*$", re.M
)
_ORT_REQUESTS = re.compile(rf"^Total inference requests:\s*{_NUMBER}\s*$", re.M)
_ORT_AVERAGE = re.compile(rf"^Average inference time cost(?: total)?:\s*{_NUMBER}\s*ms\s*$", re.M)


def parse_onnxruntime_perf_test(stdout: str, result_file: str | None = None) -> BenchmarkStats:
    """Stats from ``onnxruntime_perf_test`` stdout, with per-run times from its result file when given."""
    requests = _ORT_REQUESTS.search(stdout)
    average = _ORT_AVERAGE.search(stdout)
    if not requests or not average:
        raise OutputParseError(
            "not an onnxruntime_perf_test report: missing 'Total inference requests' or "
            f"'Average inference time cost' line; output starts with {stdout[:200]!r}"
        )
    n = int(float(requests.group(1)))
    if result_file is not None and result_file.strip():
        runs_ms = _ort_result_file_runs(result_file)
        if len(runs_ms) != n:
            raise OutputParseError(f"result file holds {len(runs_ms)} runs but stdout reports {n} requests")
        return stats_from_runs(runs_ms)
    latencies = {m.group(1): float(m.group(2)) * 1000.0 for m in _ORT_LATENCY.finditer(stdout)}
    missing = {"Min", "Max", "P50", "P90"} - set(latencies)
    if missing:
        raise OutputParseError(
            f"onnxruntime_perf_test printed no {sorted(missing)} latency lines (run it with -s) "
            "and no result file was given"
        )
    try:
        return BenchmarkStats(
            median_ms=latencies["P50"],
            mean_ms=float(average.group(1)),
            std_ms=None,
            min_ms=latencies["Min"],
            max_ms=latencies["Max"],
            p90_ms=latencies["P90"],
            runs=n,
        )
    except ValueError as exc:
        raise OutputParseError(f"onnxruntime_perf_test report has impossible values: {exc}") from exc


def _ort_result_file_runs(text: str) -> list[float]:
    runs: list[float] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or "Latency" in line:
            # The file may also hold the "-s" statistics block after a blank line.
            continue
        fields = line.split(",")
        if len(fields) not in (5, 6):
            raise OutputParseError(f"result file line {lineno} has {len(fields)} fields: {line!r}")
        seconds = fields[2] if len(fields) == 6 else fields[1]
        try:
            runs.append(float(seconds) * 1000.0)
        except ValueError:
            raise OutputParseError(f"result file line {lineno}: {seconds!r} is not a time") from None
    if not runs:
        raise OutputParseError("result file holds no runs")
    return runs


# A phase's stats line (tensorflow's Stat<int64>::OutputToStream plus benchmark_model's percentiles):
#   count=50 first=2210 curr=2140 min=2101 max=2533 avg=2166.3 std=71 p5=2105 median=2150 p95=2340
#   count=2 curr=19(all same) p5=19 median=19 p95=19        (every run took the same time)
#   count=1 curr=28 p5=28 median=28 p95=28                  (a single run)
# Not the op profile's "Timings (microseconds): count=…" summary of the same runs.
_TFLITE_STATS = re.compile(r"^(?!.*Timings \(microseconds\)).*?\bcount=(\d+)\s+(?P<rest>.*\bcurr=.*)$", re.M)
_TFLITE_KV = re.compile(rf"(\w+)={_NUMBER}")
_TFLITE_DONE = re.compile(r"[Ii]nference timings in us:")


def parse_tflite_benchmark_model(output: str) -> BenchmarkStats:
    """Stats of the timed runs from TFLite ``benchmark_model`` output (times printed in µs)."""
    done = _TFLITE_DONE.search(output)
    blocks = [m for m in _TFLITE_STATS.finditer(output) if done and m.start() < done.start()]
    if not done or not blocks:
        raise OutputParseError(
            "not a complete benchmark_model report: missing 'count=… curr=…' or "
            f"'Inference timings in us' line; output starts with {output[:200]!r}"
        )
    last = blocks[-1]  # the first block is the warm-up phase, the last the timed runs
    runs = int(last.group(1))
    rest = last.group("rest")
    values = {k: float(v) for k, v in _TFLITE_KV.findall(rest)}
    if runs == 1 or "(all same)" in rest:
        # Every run took `curr`: no first/min/max/avg/std printed, and none needed.
        curr = values.get("curr")
        if curr is None:
            raise OutputParseError(f"benchmark_model stats line lacks curr=: {last.group(0)!r}")
        values = {"median": curr, "avg": curr, "min": curr, "max": curr, "std": 0.0}
    if "median" not in values:
        raise OutputParseError("benchmark_model printed no median= (an old build); cannot report a median")
    for key in ("min", "max", "avg"):
        if key not in values:
            raise OutputParseError(f"benchmark_model stats line lacks {key}=: {last.group(0)!r}")
    try:
        return BenchmarkStats(
            median_ms=values["median"] / 1000.0,
            mean_ms=values["avg"] / 1000.0,
            std_ms=values["std"] / 1000.0 if "std" in values else None,
            min_ms=values["min"] / 1000.0,
            max_ms=values["max"] / 1000.0,
            p90_ms=None,
            runs=runs,
        )
    except ValueError as exc:
        raise OutputParseError(f"benchmark_model report has impossible values: {exc}") from exc


def pool_stats(passes: list[BenchmarkStats]) -> BenchmarkStats:
    """One summary of several passes that printed summaries only (TFLite prints no per-run times).

    Exact where the summaries allow it: runs, mean (run-weighted), min, max and std (the pooled population
    std: within-pass plus between-pass variance). The median is the median of the pass medians, a robust
    stand-in for the median of all runs, which no summary holds; p90 is unknown (None). With one pass it
    is that pass.
    """
    if not passes:
        raise OutputParseError("no passes to pool")
    if len(passes) == 1:
        return passes[0]
    runs = sum(p.runs for p in passes)
    mean = sum(p.mean_ms * p.runs for p in passes) / runs
    std: float | None = None
    if all(p.std_ms is not None for p in passes):
        variance = sum(p.runs * ((p.std_ms or 0.0) ** 2 + (p.mean_ms - mean) ** 2) for p in passes) / runs
        std = math.sqrt(variance)
    return BenchmarkStats(
        median_ms=statistics.median(p.median_ms for p in passes),
        mean_ms=mean,
        std_ms=std,
        min_ms=min(p.min_ms for p in passes),
        max_ms=max(p.max_ms for p in passes),
        p90_ms=None,
        runs=runs,
    )
