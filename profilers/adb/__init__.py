"""Phones over ADB: a device session, probing, frequency pinning, cooldown and the profiler.

    from profilers.adb import DeviceSession, Profiler, ProfileRequest, RuntimeSettings
    session = DeviceSession.connect("127.0.0.1:5555", key_path=Path("~/.latfarm/adbkey").expanduser())
    facts = probe(session)                                   # DeviceFacts: clusters, root, thermal zones…
    profiler = Profiler(session, RuntimeSettings(runs=10, warmup=2, threads=1))
    for record in profiler.measure([ProfileRequest(family="conv", config={...}, cluster="big",
                                                   frequency_khz=1_996_800)]):
        print(record.model_dump_json())                     # MeasurementRecord

Lower level: ``session.shell(cmd) -> ShellResult(stdout, exit_code)``, ``session.push/pull/stat``;
``with pin_frequency(session, "big", khz) as pin: ...`` (restores governor/min/max on any exit);
``cooldown(session, max_celsius, timeout_s)``; parsers for onnxruntime_perf_test / TFLite benchmark_model.
Every error is a :class:`ProfilerError`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profilers.adb.errors import (
        CommandFailedError,
        CooldownTimeoutError,
        DeviceConnectionError,
        DeviceTimeoutError,
        FrequencyPinError,
        OutputParseError,
        ProfilerError,
        PushRefusedError,
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
    )
    from profilers.adb.profiler import Profiler, ProfileRequest
    from profilers.adb.records import MeasurementRecord, MeasurementResult
    from profilers.adb.runtime import RUNTIME_FIELDS, RuntimeSettings, check_passes
    from profilers.adb.session import DeviceSession, FileStat, ShellResult, default_key_path
    from profilers.adb.thermal import ThermalZone, cooldown, hottest_celsius, list_zones

# Exports are resolved on first access (PEP 562) so that `latfarm --help`, which imports
# `profilers.adb.cli` to build its parser, does not pay for importing onnx and adb_shell.
_EXPORTS = {
    "profilers.adb.errors": (
        "CommandFailedError CooldownTimeoutError DeviceConnectionError DeviceTimeoutError "
        "FrequencyPinError OutputParseError ProfilerError PushRefusedError"
    ),
    "profilers.adb.frequency": "Cluster PinnedFrequency discover_clusters pin_frequency resolve_cluster",
    "profilers.adb.parsers": "BenchmarkStats parse_onnxruntime_perf_test parse_tflite_benchmark_model",
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
    "MeasurementRecord",
    "MeasurementResult",
    "OutputParseError",
    "PinnedFrequency",
    "ProfileRequest",
    "Profiler",
    "ProfilerError",
    "PushRefusedError",
    "RuntimeSettings",
    "ShellResult",
    "ThermalZone",
    "check_passes",
    "cooldown",
    "default_key_path",
    "discover_clusters",
    "hottest_celsius",
    "list_zones",
    "parse_onnxruntime_perf_test",
    "parse_tflite_benchmark_model",
    "pin_frequency",
    "probe",
    "resolve_cluster",
]
