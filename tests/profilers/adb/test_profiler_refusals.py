"""What the profiler refuses before anything runs: units, precisions, options, clocks, programs, formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from profilers.adb import DeviceSession, FrequencyPinError, Profiler, ProfileRequest, RuntimeSettings
from profilers.adb.errors import ProfilerError, UnsupportedRunError
from profilers.adb.profiler import BIN_PATH, TFLITE_BIN_PATH
from profilers.adb.programs import VIRTUAL_BENCHMARK_BINARY
from profilers.virtual_phone import VirtualPhone

CONV = {"kernel": 3, "cin": 8, "cout": 8, "height": 12, "width": 12}
Unsupported = UnsupportedRunError
PROFILES = Path(__file__).resolve().parents[3] / "profilers" / "virtual_phone" / "profiles"


def _refused(profiler: Profiler, request: ProfileRequest) -> ProfilerError:
    with pytest.raises(ProfilerError) as caught:
        list(profiler.measure([request]))
    assert profiler.pushes == 0
    assert not profiler.session.stat(BIN_PATH).exists and not profiler.session.stat(TFLITE_BIN_PATH).exists
    return caught.value


def _request(unit: str, khz: int | None = None) -> ProfileRequest:
    return ProfileRequest(family="conv", config=CONV, cluster=unit, frequency_khz=khz)


@pytest.mark.parametrize(
    ("runtime", "unit", "error", "text"),
    [
        (
            RuntimeSettings(precision="int8"),
            "gpu",
            Unsupported,
            "gpu unit does not run int8; it supports: fp32, fp16",
        ),
        (
            RuntimeSettings(precision="fp16"),
            "big",
            Unsupported,
            "big unit does not run fp16; it supports: fp32",
        ),
        (
            RuntimeSettings(accelerator="nnapi"),
            "gpu",
            Unsupported,
            "no accelerator option 'nnapi' for the gpu",
        ),
        (RuntimeSettings(benchmark="tflite", accelerator="qnn"), "npu", Unsupported, "it has: nnapi"),
        (RuntimeSettings(), "cluster9", FrequencyPinError, "unknown cluster 'cluster9'"),
    ],
)
def test_what_the_unit_does_not_run(
    session: DeviceSession, runtime: RuntimeSettings, unit: str, error: type[ProfilerError], text: str
) -> None:
    refusal = _refused(Profiler(session, runtime, cooldown_celsius=None), _request(unit))
    assert isinstance(refusal, error) and text in str(refusal)


def test_a_unit_the_phone_lacks(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    session = connect(start_phone("virtual-midrange"))
    error = _refused(Profiler(session, RuntimeSettings(precision="int8")), _request("npu"))
    assert isinstance(error, UnsupportedRunError) and "this phone has no npu" in str(error)


def test_onnxruntime_reaches_only_an_adreno_gpu(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    session = connect(start_phone("virtual-midrange"))
    error = _refused(Profiler(session, cooldown_celsius=None), _request("gpu"))
    assert isinstance(error, UnsupportedRunError)
    assert "Adreno GPUs only; this phone's GPU is Mali-G57 MC2" in str(error) and "tflite" in str(error)


def test_a_gpu_clock_off_its_table_names_the_table(session: DeviceSession) -> None:
    profiler = Profiler(session, cooldown_celsius=None)
    table = next(a for a in profiler.facts.accelerators if a.name == "gpu").frequencies_khz
    # The first request is fine: nothing of the batch runs when a later one is bad.
    with pytest.raises(FrequencyPinError, match=r"123 kHz is not a clock of the gpu") as caught:
        list(profiler.measure([_request("gpu", table[0]), _request("gpu", 123)]))
    assert str(table) in str(caught.value) and profiler.pushes == 0


@pytest.fixture
def real_phone(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> DeviceSession:
    """A flagship whose props do not say it is virtual: what a real phone looks like to the profiler."""
    profile = json.loads((PROFILES / "virtual-flagship.json").read_text())
    profile["props"] |= {"ro.hardware": "qcom", "ro.product.brand": "samsung", "ro.product.model": "SM-G991B"}
    return connect(start_phone(profile))


@pytest.mark.parametrize(
    ("runtime", "names"),
    [
        (RuntimeSettings(), ("LATFARM_BENCHMARK_BINARY", "--binary", "onnxruntime_perf_test")),
        (
            RuntimeSettings(benchmark="tflite"),
            ("LATFARM_TFLITE_BENCHMARK_BINARY", "--tflite-binary", "benchmark_model"),
        ),
    ],
)
def test_a_real_phone_without_a_configured_program(
    real_phone: DeviceSession, runtime: RuntimeSettings, names: tuple[str, ...]
) -> None:
    profiler = Profiler(real_phone, runtime, cooldown_celsius=None)
    assert profiler.facts.is_virtual is False
    error = _refused(profiler, _request("big"))
    assert isinstance(error, UnsupportedRunError) and "SM-G991B is not a virtual phone" in str(error)
    assert all(name in str(error) for name in names)


def test_the_stand_in_is_never_pushed_to_a_real_phone(real_phone: DeviceSession) -> None:
    profiler = Profiler(real_phone, benchmark_binary=VIRTUAL_BENCHMARK_BINARY, cooldown_celsius=None)
    error = _refused(profiler, _request("big"))
    assert "virtual phone's stand-in" in str(error) and "never pushed" in str(error)


def test_tflite_on_a_real_phone_needs_a_tflite_model(real_phone: DeviceSession, tmp_path: Path) -> None:
    program = tmp_path / "benchmark_model"
    program.write_bytes(b"\x7fELF a real build")
    profiler = Profiler(
        real_phone,
        RuntimeSettings(benchmark="tflite"),
        tflite_benchmark_binary=program,
        cooldown_celsius=None,
    )
    error = _refused(profiler, _request("gpu"))
    assert isinstance(error, UnsupportedRunError)
    assert ".tflite model" in str(error) and "ONNX→TFLite converter" in str(error)
