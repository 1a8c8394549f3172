"""The profiler on the virtual phones' GPU and NPU: pinned clocks, precisions, per-layer times, TFLite."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from profilers.adb import (
    DeviceSession,
    MeasurementRecord,
    Profiler,
    ProfileRequest,
    RuntimeSettings,
    cli,
)
from profilers.adb.sysfs import read_file
from profilers.adb.units import Accelerator
from profilers.virtual_phone import VirtualPhone

CONV = {"kernel": 3, "cin": 16, "cout": 16, "height": 24, "width": 24}
# Compute-bound on a GPU (many MACs per byte moved), so the bus clock, which the GPU pin leaves to its
# governor, barely moves it.
HEAVY_CONV = {"kernel": 5, "cin": 128, "cout": 128, "height": 32, "width": 32}
FAST = {"runs": 3, "warmup": 1}


def _accelerator(profiler: Profiler, unit: str) -> Accelerator:
    return next(a for a in profiler.facts.accelerators if a.name == unit)


def _governor(session: DeviceSession, accelerator: Accelerator) -> str | None:
    return read_file(session, f"{accelerator.devfreq}/governor")


def _cli_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def _one(profiler: Profiler, unit: str, khz: int | None, config: dict[str, int] = CONV) -> MeasurementRecord:
    [record] = profiler.measure(
        [ProfileRequest(family="conv", config=config, cluster=unit, frequency_khz=khz)]
    )
    return record


def test_gpu_at_its_lowest_and_highest_clock_pinned_and_verified(session: DeviceSession) -> None:
    profiler = Profiler(session, RuntimeSettings(**FAST), cooldown_celsius=None)
    gpu = _accelerator(profiler, "gpu")
    governor = _governor(session, gpu)
    low, high = gpu.frequencies_khz[0], gpu.frequencies_khz[-1]
    requests = [
        ProfileRequest(family="conv", config=CONV, cluster="gpu", frequency_khz=k) for k in (low, high)
    ]
    slow, fast = profiler.measure(requests)
    for record, khz in ((slow, low), (fast, high)):
        assert record.cluster == "gpu" and record.pinned and record.valid, record.invalid_reason
        assert record.frequency_khz == record.observed_frequency_khz == khz
        assert record.bus_frequency_khz is not None and record.bus_frequency_khz > 0
        assert (record.benchmark, record.runtime_name, record.precision, record.accelerator) == (
            "onnxruntime",
            "onnxruntime",
            "fp32",
            "qnn",
        )
        assert record.runs == 3 and len(record.raw_runs_ms) == 3 and record.layers is None
    assert slow.median_ms > fast.median_ms
    assert _governor(session, gpu) == governor  # restored after the pins


def test_fp16_is_faster_than_fp32_on_a_compute_heavy_conv(session: DeviceSession) -> None:
    medians = {}
    for precision in ("fp32", "fp16"):
        profiler = Profiler(
            session, RuntimeSettings(runs=5, warmup=1, precision=precision), cooldown_celsius=None
        )
        top = _accelerator(profiler, "gpu").frequencies_khz[-1]
        record = _one(profiler, "gpu", top, HEAVY_CONV)
        assert record.valid and record.precision == precision
        medians[precision] = record.median_ms
    assert medians["fp16"] < 0.8 * medians["fp32"]


def test_npu_at_int8_with_layers_summing_to_about_the_run(session: DeviceSession) -> None:
    profiler = Profiler(
        session,
        RuntimeSettings(runs=5, warmup=3, precision="int8", layer_profile=True),
        cooldown_celsius=None,
    )
    npu = _accelerator(profiler, "npu")
    record = _one(profiler, "npu", npu.frequencies_khz[-1])
    assert record.cluster == "npu" and record.pinned and record.valid, record.invalid_reason
    assert (record.precision, record.accelerator, record.layer_profile) == ("int8", "nnapi", True)
    assert record.layers, "a per-layer profile was asked for"
    assert {layer.unit for layer in record.layers} <= {"npu", "cpu"}
    total = sum(layer.ms for layer in record.layers)
    assert 0.5 * record.median_ms <= total <= 2 * record.median_ms


def test_gpu_layers_without_warmup_take_one_extra_run(phone: VirtualPhone, session: DeviceSession) -> None:
    profiler = Profiler(
        session,
        RuntimeSettings(runs=2, warmup=0, precision="fp16", layer_profile=True),
        cooldown_celsius=None,
    )
    before = len(phone.benchmark_runs())
    record = _one(profiler, "gpu", None)
    assert len(phone.benchmark_runs()) - before == 2  # the 1-run profiled warm-up, then the timed runs
    assert record.layers and all(layer.unit in ("gpu", "cpu") for layer in record.layers)
    assert record.pinned is False and record.observed_frequency_khz is not None


def test_an_unrooted_phone_measures_its_gpu_unpinned(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    session = connect(start_phone("virtual-midrange", rooted=False))
    profiler = Profiler(session, RuntimeSettings(**FAST, benchmark="tflite"), cooldown_celsius=None)
    gpu = _accelerator(profiler, "gpu")
    record = _one(profiler, "gpu", gpu.frequencies_khz[0])
    assert record.pinned is False and record.valid
    assert record.frequency_khz == gpu.frequencies_khz[0]
    assert record.observed_frequency_khz in gpu.frequencies_khz


def test_tflite_passes_are_pooled_from_summaries(session: DeviceSession) -> None:
    profiler = Profiler(
        session, RuntimeSettings(runs=4, warmup=1, passes=2, benchmark="tflite"), cooldown_celsius=None
    )
    record = _one(profiler, "gpu", _accelerator(profiler, "gpu").frequencies_khz[-1])
    assert (record.runtime_name, record.accelerator, record.passes, record.runs) == ("tflite", "gpu", 2, 4)
    assert record.raw_runs_ms == [] and record.p90_ms is None and record.valid
    assert record.min_ms <= record.median_ms <= record.max_ms


def test_latfarm_profile_with_tflite_prints_parsed_records(
    phone: VirtualPhone, adb_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    top = max(phone.profile.gpu_frequencies_hz) // 1000
    args = _cli_args(
        [
            "--device", f"127.0.0.1:{phone.port}", "--key", str(adb_key), "--family", "conv",
            "--config", json.dumps(CONV), "--unit", "gpu", "--precision", "fp16", "--benchmark", "tflite",
            "--layers", "--frequency", str(top), "--runs", "3", "--warmup", "1", "--cooldown-celsius", "90",
        ]
    )  # fmt: skip
    assert cli.run(args) == 0, capsys.readouterr().err
    [line] = capsys.readouterr().out.splitlines()
    record = MeasurementRecord.model_validate_json(line)
    assert (record.cluster, record.benchmark, record.runtime_name, record.precision) == (
        "gpu",
        "tflite",
        "tflite",
        "fp16",
    )
    assert record.accelerator == "gpu" and record.pinned and record.observed_frequency_khz == top
    assert record.runs == 3 and record.raw_runs_ms == [] and record.layers


def test_latfarm_profile_refuses_a_unit_the_phone_lacks(
    start_phone: Callable[..., VirtualPhone], adb_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = start_phone("virtual-midrange")
    args = _cli_args(
        [
            "--device", f"127.0.0.1:{phone.port}", "--key", str(adb_key), "--family", "conv",
            "--config", json.dumps(CONV), "--unit", "npu", "--precision", "int8",
        ]
    )  # fmt: skip
    assert cli.run(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "this phone has no npu" in captured.err
