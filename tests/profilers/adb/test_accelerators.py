"""GPU and NPU probing and devfreq pinning: against the virtual phones and a phone without accelerators."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

import pytest

from profilers.adb import DeviceSession, FrequencyPinError, probe
from profilers.adb.accelerators import (
    devfreq_role,
    find_accelerator,
    pin_devfreq,
    probe_accelerators,
    read_bus_khz,
    read_devfreq_khz,
)
from profilers.adb.errors import UnsupportedRunError
from profilers.adb.session import ShellResult
from profilers.adb.sysfs import read_files
from profilers.adb.units import Accelerator
from profilers.virtual_phone import VirtualPhone


def _state(session: DeviceSession, accelerator: Accelerator) -> dict[str, str | None]:
    base = accelerator.devfreq
    values = read_files(session, [f"{base}/{name}" for name in ("governor", "min_freq", "max_freq")])
    return {path.rsplit("/", 1)[1]: value for path, value in values.items()}


def test_flagship_has_an_adreno_gpu_an_npu_and_a_ddr_bus(session: DeviceSession) -> None:
    facts = probe(session)
    gpu = find_accelerator(facts.accelerators, "gpu")
    npu = find_accelerator(facts.accelerators, "npu")
    assert gpu.model.startswith("Adreno") and gpu.devfreq == "/sys/class/kgsl/kgsl-3d0/devfreq"
    assert gpu.frequencies_khz == sorted(gpu.frequencies_khz) and len(gpu.frequencies_khz) > 2
    assert "performance" in gpu.governors and gpu.precisions == ["fp32", "fp16"]
    assert npu.devfreq is not None and "npu" in npu.devfreq and npu.precisions == ["int8", "fp16"]
    assert gpu.bus_devfreq == npu.bus_devfreq == "/sys/class/devfreq/ddrfreq"
    assert facts.gpu_frequencies_khz == gpu.frequencies_khz  # the old column stays filled
    assert read_bus_khz(session, gpu) is not None


def test_midrange_has_a_mali_gpu_on_a_mif_bus_and_no_npu(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    facts = probe(connect(start_phone("virtual-midrange")))
    [gpu] = facts.accelerators
    assert gpu.name == "gpu" and gpu.model == "Mali-G57 MC2"
    assert gpu.devfreq == "/sys/class/devfreq/13000000.mali"
    assert gpu.bus_devfreq == "/sys/class/devfreq/17000010.devfreq_mif"
    assert facts.gpu_frequencies_khz == gpu.frequencies_khz
    with pytest.raises(UnsupportedRunError, match=r"no npu; its accelerators: gpu \(Mali-G57 MC2\)"):
        find_accelerator(facts.accelerators, "npu")


class _SysfsOnly:
    """A phone shell that knows `ls` and the batched `cat` of `read_files`, over a dict of files."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.commands: list[str] = []

    def shell(self, command: str, timeout_s: float | None = None) -> ShellResult:
        self.commands.append(command)
        listing = re.fullmatch(r"ls '?([^' ]+)'? 2>&1", command)
        if listing:
            prefix = listing.group(1).rstrip("/") + "/"
            names = sorted({p[len(prefix) :].split("/")[0] for p in self.files if p.startswith(prefix)})
            return ShellResult("\n".join(names), 0 if names else 1)
        out = []
        for part in command.split("; "):
            if part.startswith("echo "):
                marker = part.split('"')[1]
                out.append(marker.replace("$?", str(self._status)) + "\n")
            elif part.startswith("cat "):
                path = part.split()[1].strip("'")
                self._status = 0 if path in self.files else 1
                out.append(self.files[path] + "\n" if path in self.files else "No such file\n")
        return ShellResult("".join(out), 0)

    _status = 0


def test_a_phone_without_accelerators_probes_none_in_two_round_trips() -> None:
    shell = _SysfsOnly({"/sys/class/devfreq/soc:qcom,cpubw/cur_freq": "762"})
    assert probe_accelerators(cast(DeviceSession, shell)) == []
    assert len(shell.commands) == 2


def test_generic_devfreq_names_and_bandwidth_voters() -> None:
    files = {
        "/sys/class/devfreq/soc:qcom,gpubw/available_frequencies": "762 1720",
        "/sys/class/devfreq/ff9a0000.gpu/available_frequencies": "200000000 400000000 800000000",
        "/sys/class/devfreq/ff9a0000.gpu/available_governors": "simple_ondemand performance",
        "/sys/class/devfreq/1a000000.mtk-apu/available_frequencies": "273000000 546000000",
        "/sys/class/devfreq/dmc/available_frequencies": "324000000 928000000",
        "/sys/class/devfreq/dmc/cur_freq": "928000000",
    }
    gpu, npu = probe_accelerators(cast(DeviceSession, _SysfsOnly(files)))
    assert (gpu.name, gpu.devfreq, gpu.frequencies_khz) == (
        "gpu",
        "/sys/class/devfreq/ff9a0000.gpu",
        [200000, 400000, 800000],
    )
    assert (npu.name, npu.frequencies_khz) == ("npu", [273000, 546000])
    assert gpu.bus_devfreq == npu.bus_devfreq == "/sys/class/devfreq/dmc"
    assert [devfreq_role(n) for n in ("soc:qcom,gpubw", "llcc", "17000010.devfreq_mif", "cpufreq")] == [
        None,
        "bus",
        "bus",
        None,
    ]


@pytest.mark.parametrize("unit", ["gpu", "npu"])
def test_pin_lowest_and_highest_then_restore(session: DeviceSession, unit: str) -> None:
    accelerator = find_accelerator(probe(session).accelerators, unit)
    before = _state(session, accelerator)
    for khz in (accelerator.frequencies_khz[0], accelerator.frequencies_khz[-1]):
        with pin_devfreq(session, accelerator, khz) as pin:
            assert pin.verified and pin.observed_khz == khz
            assert read_devfreq_khz(session, accelerator) == khz
            assert _state(session, accelerator)["governor"] == "performance"
        assert _state(session, accelerator) == before


@pytest.mark.parametrize("interrupt", [RuntimeError("run failed"), KeyboardInterrupt()])
def test_pin_restores_on_error_and_interrupt(session: DeviceSession, interrupt: BaseException) -> None:
    gpu = find_accelerator(probe(session).accelerators, "gpu")
    before = _state(session, gpu)
    with pytest.raises(type(interrupt)), pin_devfreq(session, gpu, gpu.frequencies_khz[1]):
        raise interrupt
    assert _state(session, gpu) == before


def test_a_clock_off_the_table_or_no_root_is_refused(
    session: DeviceSession, start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    gpu = find_accelerator(probe(session).accelerators, "gpu")
    table = re.escape(str(gpu.frequencies_khz))
    with (
        pytest.raises(FrequencyPinError, match=rf"123 kHz is not a clock of the gpu .*{table}"),
        pin_devfreq(session, gpu, 123),
    ):
        pass
    unrooted = connect(start_phone("virtual-midrange", rooted=False))
    mali = find_accelerator(probe(unrooted).accelerators, "gpu")
    with (
        pytest.raises(FrequencyPinError, match="needs root"),
        pin_devfreq(unrooted, mali, mali.frequencies_khz[0]),
    ):
        pass
