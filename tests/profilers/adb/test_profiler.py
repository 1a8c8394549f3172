"""The Profiler against virtual phones: pinning, cache, grouping, validity and every failure mode."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from profilers.adb import (
    DeviceConnectionError,
    DeviceSession,
    DeviceTimeoutError,
    FrequencyPinError,
    MeasurementRecord,
    OutputParseError,
    Profiler,
    ProfileRequest,
    RuntimeSettings,
)
from profilers.adb.frequency import Cluster
from profilers.adb.parsers import BenchmarkStats
from profilers.adb.profiler import _Take
from profilers.adb.sysfs import read_file
from profilers.blocks import config_hash
from profilers.virtual_phone import VirtualPhone

CONV_A = {"kernel": 3, "cin": 16, "cout": 16, "height": 24, "width": 24}
CONV_B = {"kernel": 1, "cin": 16, "cout": 32, "height": 24, "width": 24}
FAST = RuntimeSettings(runs=5, warmup=1, threads=1)


def _little(session: DeviceSession) -> tuple[int, int]:
    profiler = Profiler(session)
    table = next(c for c in profiler.facts.clusters if c.name == "little").frequencies_khz
    return table[0], table[-1]


def _governor(session: DeviceSession, policy: str = "policy0") -> str | None:
    return read_file(session, f"/sys/devices/system/cpu/cpufreq/{policy}/scaling_governor")


def _collect(profiler: Profiler, requests: list[ProfileRequest]) -> tuple[list[MeasurementRecord], Exception]:
    records: list[MeasurementRecord] = []
    try:
        for record in profiler.measure(requests):
            records.append(record)
    except Exception as exc:
        return records, exc
    raise AssertionError("measure() did not fail")


def test_lowest_frequency_is_slower_than_highest(session: DeviceSession) -> None:
    low, high = _little(session)
    profiler = Profiler(session, FAST, cooldown_celsius=None)
    requests = [
        ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=k) for k in (low, high)
    ]
    slow, fast = list(profiler.measure(requests))
    for record, khz in ((slow, low), (fast, high)):
        assert record.pinned and record.valid and record.invalid_reason is None
        assert record.frequency_khz == record.observed_frequency_khz == khz
        assert record.runs == 5 and len(record.raw_runs_ms) == 5 and record.warmup == 1
        assert record.min_ms <= record.median_ms <= record.max_ms
        assert record.virtual is True
        assert record.config_hash == config_hash("conv", CONV_A)
        assert record.config["stride"] == 1  # defaults are filled in
        assert record.started_at <= record.finished_at
    assert slow.median_ms > fast.median_ms
    assert _governor(session) == "schedutil"  # restored after the pins


def test_grouping_and_content_addressed_cache(session: DeviceSession) -> None:
    low, high = _little(session)
    profiler = Profiler(session, RuntimeSettings(runs=2, warmup=0), cooldown_celsius=None)
    requests = [
        ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=high),
        ProfileRequest(family="conv", config=CONV_B, cluster="little", frequency_khz=low),
        ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=low),
        ProfileRequest(family="conv", config=CONV_B, cluster="little", frequency_khz=high),
    ]
    records = list(profiler.measure(requests))
    assert [r.frequency_khz for r in records] == [high, high, low, low]
    assert profiler.pushes == 2 and profiler.cache_hits == 2
    # A fresh profiler (another process, say) finds the model in the device cache and does not push it.
    again = Profiler(session, RuntimeSettings(runs=2, warmup=0), cooldown_celsius=None)
    list(again.measure(requests[:1]))
    assert again.pushes == 0 and again.cache_hits == 1


def test_garbage_output_raises_and_emits_nothing(phone: VirtualPhone, session: DeviceSession) -> None:
    low, _ = _little(session)
    phone.set_fault(garbage_benchmark=True)
    profiler = Profiler(session, FAST, cooldown_celsius=None)
    records, error = _collect(
        profiler, [ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=low)]
    )
    assert records == []
    assert isinstance(error, OutputParseError)
    assert _governor(session) == "schedutil"


def test_hang_times_out_and_restores_the_governor(
    phone: VirtualPhone, connect: Callable[..., DeviceSession]
) -> None:
    session = connect(phone, command_timeout_s=1.0)
    low, _ = _little(session)
    phone.set_fault(hang_commands=["onnxruntime_perf_test -e"])
    profiler = Profiler(session, FAST, cooldown_celsius=None)
    records, error = _collect(
        profiler, [ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=low)]
    )
    assert records == []
    assert isinstance(error, DeviceTimeoutError)
    phone.clear_faults()
    assert _governor(session) == "schedutil"


def test_dropped_connection_raises_and_emits_nothing(phone: VirtualPhone, session: DeviceSession) -> None:
    profiler = Profiler(session, FAST, cooldown_celsius=None)
    assert profiler.facts.rooted
    phone.set_fault(offline=True)
    records, error = _collect(profiler, [ProfileRequest(family="conv", config=CONV_A, cluster="little")])
    assert records == []
    assert isinstance(error, DeviceConnectionError)


def test_unrooted_phone_is_measured_unpinned(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    session = connect(start_phone("virtual-midrange", rooted=False))
    profiler = Profiler(session, FAST, cooldown_celsius=None)
    big = profiler.facts.clusters[-1]
    [record] = profiler.measure(
        [ProfileRequest(family="conv", config=CONV_A, cluster="big", frequency_khz=big.frequencies_khz[0])]
    )
    assert record.pinned is False
    assert record.frequency_khz == big.frequencies_khz[0]
    assert record.observed_frequency_khz in big.frequencies_khz
    assert record.valid


def test_hot_phone_gives_an_invalid_record_with_reasons(phone: VirtualPhone, session: DeviceSession) -> None:
    _, high = _little(session)
    profiler = Profiler(session, FAST, cooldown_celsius=None)
    phone.set_temperature(95.0)
    [record] = profiler.measure(
        [ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=high)]
    )
    assert record.valid is False
    assert "trip point" in (record.invalid_reason or "")
    # Throttling caps the pinned frequency, which is a reason of its own.
    assert record.observed_frequency_khz is not None and record.observed_frequency_khz < high
    assert f"pinned {high} kHz" in (record.invalid_reason or "")


def test_passes_interleave_the_group_and_pool_the_runs(phone: VirtualPhone, session: DeviceSession) -> None:
    _, high = _little(session)
    profiler = Profiler(session, RuntimeSettings(runs=5, warmup=0, passes=2), cooldown_celsius=None)
    requests = [
        ProfileRequest(family="conv", config=config, cluster="little", frequency_khz=high)
        for config in (CONV_A, CONV_B)
    ]
    before = len(phone.benchmark_runs())
    records = list(profiler.measure(requests))
    invocations = [run["model"] for run in phone.benchmark_runs()[before:]]
    # A B A B: each request's runs are taken in two passes through the group, not back to back.
    assert len(invocations) == 4 and invocations[:2] == invocations[2:] and invocations[0] != invocations[1]
    for record, request in zip(records, requests, strict=True):
        assert record.config_hash == request.config_hash and record.valid
        assert record.passes == 2 and record.runs == 5 and len(record.raw_runs_ms) == 5
        assert record.median_ms == statistics.median(record.raw_runs_ms)
        assert record.min_ms == min(record.raw_runs_ms) and record.max_ms == max(record.raw_runs_ms)
    assert _governor(session) == "schedutil"


def test_a_disturbed_later_pass_invalidates_the_record(phone: VirtualPhone, session: DeviceSession) -> None:
    _, high = _little(session)

    class HeatsUpAfterFirstPass(Profiler):
        takes = 0

        def _take(self, request: ProfileRequest, runs: int) -> _Take:
            self.takes += 1
            if self.takes == 2:  # the phone overheats between the two passes
                phone.set_temperature(95.0)
            return super()._take(request, runs)

    profiler = HeatsUpAfterFirstPass(
        session, RuntimeSettings(runs=4, warmup=0, passes=2), cooldown_celsius=None
    )
    [record] = profiler.measure(
        [ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=high)]
    )
    assert record.valid is False and record.passes == 2
    reason = record.invalid_reason or ""
    assert "trip point" in reason and "pass 2" in reason and "pass 1" not in reason


def test_passes_without_per_run_times_raise_and_emit_nothing(session: DeviceSession) -> None:
    _, high = _little(session)

    class SummaryOnly(Profiler):  # a benchmark program that prints its summary but writes no result file
        def _run_benchmark(self, cluster: Cluster, model_path: str, runs: int) -> BenchmarkStats:
            return super()._run_benchmark(cluster, model_path, runs).model_copy(update={"raw_runs_ms": []})

    profiler = SummaryOnly(session, RuntimeSettings(runs=4, warmup=0, passes=2), cooldown_celsius=None)
    records, error = _collect(
        profiler, [ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=high)]
    )
    assert records == [] and isinstance(error, OutputParseError)
    assert "per-run times" in str(error)
    assert _governor(session) == "schedutil"


def test_runtime_passes_split_the_runs_and_cannot_exceed_them() -> None:
    settings = RuntimeSettings(runs=5, passes=2)
    assert [settings.runs_of_pass(i) for i in range(2)] == [3, 2]
    assert [RuntimeSettings(runs=10).runs_of_pass(0)] == [10]
    with pytest.raises(ValidationError, match=r"passes \(6\) must not exceed runs \(5\)"):
        RuntimeSettings(runs=5, passes=6)


def test_unknown_frequency_fails_before_measuring(session: DeviceSession) -> None:
    profiler = Profiler(session, FAST, cooldown_celsius=None)
    records, error = _collect(
        profiler, [ProfileRequest(family="conv", config=CONV_A, cluster="little", frequency_khz=999)]
    )
    assert records == [] and isinstance(error, FrequencyPinError)
    assert profiler.pushes == 0


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ({"family": "conv", "config": {**CONV_A, "kernel": 4}}, "config", "kernel"),
        ({"family": "conv", "config": {**CONV_A, "groups": 3}}, "config", "groups"),
        (
            {"family": "sr_block", "config": {"scale": 2, "height": 8, "width": 8, "widths": [0]}},
            "config",
            "widths",
        ),
        ({"family": "resnet", "config": {}}, "family", "known families"),
        ({"family": "conv", "config": CONV_A, "frequency_khz": -5}, "frequency_khz", ""),
    ],
)
def test_invalid_requests_name_the_field(data: dict, field: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        ProfileRequest(**data)
    [error] = info.value.errors()
    assert error["loc"] == (field,)
    assert text in error["msg"]
