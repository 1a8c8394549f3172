"""Virtual-phone fixtures: a started phone on a free port, an adb_shell client, the installed benchmark."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from adb_shell.adb_device import AdbDeviceTcp

from profilers.virtual_phone import BENCHMARK_BINARY, TFLITE_BENCHMARK_BINARY, VirtualPhone
from tests.profilers.virtual_phone.phone_kit import BENCH_PATH, MODEL_PATH, TFLITE_PATH, tiny_model


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[VirtualPhone]:
    """A flagship virtual phone listening on a free port."""
    with VirtualPhone(profile="virtual-flagship", state_dir=tmp_path / "phone") as p:
        yield p


@pytest.fixture
def device(phone: VirtualPhone) -> Iterator[AdbDeviceTcp]:
    """adb_shell connected to `phone` (insecure mode, no key needed)."""
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10)
    assert dev.connect(read_timeout_s=10)
    yield dev
    dev.close()


@pytest.fixture
def installed(device: AdbDeviceTcp) -> AdbDeviceTcp:
    """`device` with the benchmark program and the tiny model pushed, as the profiler would."""
    device.push(str(BENCHMARK_BINARY), BENCH_PATH, st_mode=0o100755)
    device.push(io.BytesIO(tiny_model()), MODEL_PATH, st_mode=0o100644)
    return device


@pytest.fixture
def start_midrange(tmp_path: Path) -> Iterator[Callable[[], AdbDeviceTcp]]:
    """Start a mid-range phone (Mali GPU, no NPU) with both benchmark programs installed; connected."""
    stack = contextlib.ExitStack()

    def start() -> AdbDeviceTcp:
        phone = stack.enter_context(VirtualPhone(profile="virtual-midrange", state_dir=tmp_path / "midrange"))
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10)
        assert dev.connect(read_timeout_s=10)
        stack.callback(dev.close)
        dev.push(str(BENCHMARK_BINARY), BENCH_PATH, st_mode=0o100755)
        dev.push(str(TFLITE_BENCHMARK_BINARY), TFLITE_PATH, st_mode=0o100755)
        return dev

    with stack:
        yield start
