"""A virtual phone: the device side of ADB over TCP, a sandboxed shell, a simulated SoC and a real benchmark.

from profilers.virtual_phone import VirtualPhone
with VirtualPhone(profile="virtual-flagship", state_dir=tmp) as phone:
    ...  # connect adb_shell / adb to phone.serial
"""

from __future__ import annotations

from pathlib import Path

from profilers.virtual_phone.bench import BENCHMARK_MARKER
from profilers.virtual_phone.errors import PhoneStateError, ProfileError, ProtocolError, VirtualPhoneError
from profilers.virtual_phone.faults import FaultSpec, FaultSpecError
from profilers.virtual_phone.phone import VirtualPhone, count_overlaps
from profilers.virtual_phone.profile import Profile, list_profiles, load_profile

BENCHMARK_BINARY = Path(__file__).parent / "bin" / "onnxruntime_perf_test"
"""The marker file to push as `onnxruntime_perf_test` onto a virtual phone."""
TFLITE_BENCHMARK_BINARY = Path(__file__).parent / "bin" / "benchmark_model"
"""The marker file to push as TFLite's `benchmark_model` onto a virtual phone."""

__all__ = [
    "BENCHMARK_BINARY",
    "BENCHMARK_MARKER",
    "TFLITE_BENCHMARK_BINARY",
    "FaultSpec",
    "FaultSpecError",
    "PhoneStateError",
    "Profile",
    "ProfileError",
    "ProtocolError",
    "VirtualPhone",
    "VirtualPhoneError",
    "count_overlaps",
    "list_profiles",
    "load_profile",
]
