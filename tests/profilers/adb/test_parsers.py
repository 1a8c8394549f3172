"""Parsers against recorded output of onnxruntime_perf_test and TFLite benchmark_model."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from profilers.adb import OutputParseError
from profilers.adb.parsers import (
    parse_onnxruntime_perf_test,
    parse_tflite_benchmark_model,
    stats_from_runs,
)

FIXTURES = Path(__file__).parents[2] / "fixtures"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_ort_with_result_file_gives_per_run_times_and_exact_stats() -> None:
    stats = parse_onnxruntime_perf_test(
        _read("onnxruntime_perf_test_1.20_stdout.txt"), _read("onnxruntime_perf_test_1.20_result.txt")
    )
    assert stats.runs == 10
    assert len(stats.raw_runs_ms) == 10
    assert stats.raw_runs_ms[0] == pytest.approx(2.4913)
    assert stats.min_ms == pytest.approx(2.3899)
    assert stats.max_ms == pytest.approx(3.1204)
    assert stats.median_ms == pytest.approx(statistics.median(stats.raw_runs_ms))
    assert stats.std_ms == pytest.approx(statistics.stdev(stats.raw_runs_ms))
    assert stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.max_ms


def test_ort_stdout_only_uses_percentile_lines() -> None:
    stats = parse_onnxruntime_perf_test(_read("onnxruntime_perf_test_1.20_stdout.txt"))
    assert stats.runs == 10
    assert stats.raw_runs_ms == []
    assert stats.std_ms is None
    assert stats.min_ms == pytest.approx(2.3899)
    assert stats.p90_ms == pytest.approx(3.1204)  # ORT's P90 of 10 runs is sorted[9]
    assert stats.mean_ms == pytest.approx(2.50745, rel=1e-4)


def test_ort_old_format_with_sec_units() -> None:
    stats = parse_onnxruntime_perf_test(_read("onnxruntime_perf_test_1.8_stdout.txt"))
    assert stats.runs == 100
    assert stats.mean_ms == pytest.approx(58.9321)
    assert stats.median_ms == pytest.approx(58.7722)
    assert stats.p90_ms == pytest.approx(60.1389)
    assert stats.max_ms == pytest.approx(63.7712)


def test_tflite_timed_runs_not_warmup() -> None:
    stats = parse_tflite_benchmark_model(_read("tflite_benchmark_model_2.x.txt"))
    assert stats.runs == 50
    assert stats.median_ms == pytest.approx(20.618)
    assert stats.mean_ms == pytest.approx(20.7446)
    assert stats.std_ms == pytest.approx(0.433)
    assert stats.min_ms == pytest.approx(20.311)
    assert stats.max_ms == pytest.approx(22.950)
    assert stats.p90_ms is None


def test_tflite_without_median_is_refused_not_guessed() -> None:
    with pytest.raises(OutputParseError, match="median"):
        parse_tflite_benchmark_model(_read("tflite_benchmark_model_1.15.txt"))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "Segmentation fault\n",
        "\x00\xff random bytes",
        "Total inference requests: 10\n",
        "P50 Latency: x s",
    ],
)
def test_garbage_raises_output_parse_error(garbage: str) -> None:
    with pytest.raises(OutputParseError):
        parse_onnxruntime_perf_test(garbage)
    with pytest.raises(OutputParseError):
        parse_tflite_benchmark_model(garbage)


def test_result_file_disagreeing_with_stdout_is_refused() -> None:
    lines = _read("onnxruntime_perf_test_1.20_result.txt").splitlines()[:7]
    with pytest.raises(OutputParseError, match="7 runs but stdout reports 10"):
        parse_onnxruntime_perf_test(_read("onnxruntime_perf_test_1.20_stdout.txt"), "\n".join(lines))


def test_stats_from_runs() -> None:
    stats = stats_from_runs([4.0, 1.0, 3.0, 2.0, 10.0])
    assert stats.median_ms == 3.0
    assert stats.mean_ms == 4.0
    assert stats.p90_ms == pytest.approx(4.0 + 0.6 * 6.0)
    assert stats.raw_runs_ms == [4.0, 1.0, 3.0, 2.0, 10.0]
    assert stats_from_runs([2.0]).std_ms is None
    with pytest.raises(OutputParseError):
        stats_from_runs([1.0, -2.0])
