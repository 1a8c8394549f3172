"""Phones over ADB: a device session, probing, CPU and accelerator clock pinning, cooldown and the profiler.

    from profilers.adb import DeviceSession, Profiler, ProfileRequest, RuntimeSettings
    session = DeviceSession.connect("127.0.0.1:5555", key_path=Path("~/.latfarm/adbkey").expanduser())
    facts = probe(session)                                   # DeviceFacts: clusters, root, thermal zones…
    profiler = Profiler(session, RuntimeSettings(runs=10, warmup=2, threads=1))
    for record in profiler.measure([ProfileRequest(family="conv", config={...}, cluster="big",
                                                   frequency_khz=1_996_800)]):
        print(record.model_dump_json())                     # MeasurementRecord

A request's unit (its `cluster` field) is a CPU cluster, `gpu` or `npu`; the runtime settings choose the
program (`benchmark="onnxruntime"|"tflite"`), the `precision` (fp32, fp16, int8), the `accelerator` option
and `layer_profile` (per-layer times in `record.layers`):

    gpu = Profiler(session, RuntimeSettings(precision="fp16", layer_profile=True))
    gpu.measure([ProfileRequest(family="conv", config={...}, cluster="gpu", frequency_khz=818_000)])

Lower level: ``session.shell(cmd) -> ShellResult(stdout, exit_code)``, ``session.push/pull/stat``;
``with pin_frequency(session, "big", khz) as pin: ...`` (restores governor/min/max on any exit);
``probe_accelerators(session)`` (the GPU/NPU as `Accelerator`s) and ``with pin_devfreq(session, gpu, khz)``;
``model_at_precision(onnx_bytes, "fp16")``; command lines and per-layer parsers in `profilers.adb.benchmarks`;
``cooldown(session, max_celsius, timeout_s)``; parsers for onnxruntime_perf_test / TFLite benchmark_model.
Every error is a :class:`ProfilerError`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profilers.adb.accelerators import (
        PinnedDevfreq,
        pin_devfreq,
        probe_accelerators,
        read_bus_khz,
        read_devfreq_khz,
    )
    from profilers.adb.benchmarks import parse_onnxruntime_profile, parse_tflite_op_profile
    from profilers.adb.errors import (
        CommandFailedError,
        CooldownTimeoutError,
        DeviceConnectionError,
        DeviceTimeoutError,
        FrequencyPinError,
        OutputParseError,
        PrecisionConversionError,
        ProfilerError,
        PushRefusedError,
        UnsupportedRunError,
    )
    from profilers.adb.facts import DeviceFacts, probe
    from profilers.adb.frequency import (
        Cluster,
        PinnedFrequency,
        discover_clusters,
        pin_frequency,
        resolve_cluster,
    )
    from profilers.adb.parsers import (
        BenchmarkStats,
        parse_onnxruntime_perf_test,
        parse_tflite_benchmark_model,
        pool_stats,
    )
    from profilers.adb.precision import model_at_precision
    from profilers.adb.profiler import Profiler, ProfileRequest
    from profilers.adb.records import MeasurementRecord, MeasurementResult
    from profilers.adb.runtime import RUNTIME_FIELDS, RuntimeSettings, check_passes
    from profilers.adb.session import DeviceSession, FileStat, ShellResult, default_key_path
    from profilers.adb.thermal import ThermalZone, cooldown, hottest_celsius, list_zones
    from profilers.adb.units import Accelerator, LayerTime

# Exports are resolved on first access (PEP 562) so that `latfarm --help`, which imports
# `profilers.adb.cli` to build its parser, does not pay for importing onnx and adb_shell.
_EXPORTS = {
    "profilers.adb.errors": (
        "CommandFailedError CooldownTimeoutError DeviceConnectionError DeviceTimeoutError "
        "FrequencyPinError OutputParseError PrecisionConversionError ProfilerError PushRefusedError "
        "UnsupportedRunError"
    ),
    "profilers.adb.accelerators": (
        "PinnedDevfreq pin_devfreq probe_accelerators read_bus_khz read_devfreq_khz"
    ),
    "profilers.adb.benchmarks": "parse_onnxruntime_profile parse_tflite_op_profile",
    "profilers.adb.precision": "model_at_precision",
    "profilers.adb.units": "Accelerator LayerTime",
    "profilers.adb.frequency": "Cluster PinnedFrequency discover_clusters pin_frequency resolve_cluster",
    "profilers.adb.parsers": (
        "BenchmarkStats parse_onnxruntime_perf_test parse_tflite_benchmark_model pool_stats"
    ),
    "profilers.adb.facts": "DeviceFacts probe",
    "profilers.adb.profiler": "ProfileRequest Profiler",
    "profilers.adb.records": "MeasurementRecord MeasurementResult",
    "profilers.adb.runtime": "RUNTIME_FIELDS RuntimeSettings check_passes",
    "profilers.adb.session": "DeviceSession FileStat ShellResult default_key_path",
    "profilers.adb.thermal": "ThermalZone cooldown hottest_celsius list_zones",
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names.split()}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'profilers.adb' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "RUNTIME_FIELDS",
    "Accelerator",
    "BenchmarkStats",
    "Cluster",
    "CommandFailedError",
    "CooldownTimeoutError",
    "DeviceConnectionError",
    "DeviceFacts",
    "DeviceSession",
    "DeviceTimeoutError",
    "FileStat",
    "FrequencyPinError",
    "LayerTime",
    "MeasurementRecord",
    "MeasurementResult",
    "OutputParseError",
    "PinnedDevfreq",
    "PinnedFrequency",
    "PrecisionConversionError",
    "ProfileRequest",
    "Profiler",
    "ProfilerError",
    "PushRefusedError",
    "RuntimeSettings",
    "ShellResult",
    "ThermalZone",
    "UnsupportedRunError",
    "check_passes",
    "cooldown",
    "default_key_path",
    "discover_clusters",
    "hottest_celsius",
    "list_zones",
    "model_at_precision",
    "parse_onnxruntime_perf_test",
    "parse_onnxruntime_profile",
    "parse_tflite_benchmark_model",
    "parse_tflite_op_profile",
    "pin_devfreq",
    "pin_frequency",
    "pool_stats",
    "probe",
    "probe_accelerators",
    "read_bus_khz",
    "read_devfreq_khz",
    "resolve_cluster",
]
