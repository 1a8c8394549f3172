"""GPU, NPU and memory-bus devfreq of the virtual phone: nodes, root-only writes, governors, pins, heat."""

from __future__ import annotations

import random

import pytest
from adb_shell.adb_device import AdbDeviceTcp

from profilers.virtual_phone import load_profile
from profilers.virtual_phone.soc import Soc, SysfsWriteError
from tests.profilers.virtual_phone.phone_kit import run
from tests.profilers.virtual_phone.test_phone_soc import FakeClock

KGSL = "/sys/class/kgsl/kgsl-3d0"
KGSL_DEVFREQ = "/sys/class/devfreq/3d00000.qcom,kgsl-3d0"
NPU = "/sys/class/devfreq/19000000.npu"
DDR = "/sys/class/devfreq/ddrfreq"
MALI = "/sys/class/devfreq/13000000.mali"
GPU_TABLE = [220, 285, 350, 400, 525, 608, 676, 738, 818]  # MHz


def test_adreno_npu_and_bus_nodes_on_the_flagship(device: AdbDeviceTcp) -> None:
    assert run(device, f"cat {KGSL}/gpu_model")[0] == "Adreno660v1\n"
    assert run(device, f"cat {KGSL}/gpu_available_frequencies")[0].split()[0] == "818000000"
    assert run(device, f"cat {KGSL}/max_gpuclk")[0] == "818000000\n"
    for base in (f"{KGSL}/devfreq", KGSL_DEVFREQ):
        table = [int(f) // 1_000_000 for f in run(device, f"cat {base}/available_frequencies")[0].split()]
        assert table == GPU_TABLE
        assert run(device, f"cat {base}/available_governors")[0] == (
            "msm-adreno-tz performance powersave userspace simple_ondemand\n"
        )
        assert run(device, f"cat {base}/governor")[0] == "msm-adreno-tz\n"
        assert run(device, f"cat {base}/min_freq {base}/max_freq")[0] == "220000000\n818000000\n"
    idle = run(device, f"cat {KGSL}/gpuclk {KGSL_DEVFREQ}/cur_freq {KGSL_DEVFREQ}/target_freq")[0]
    assert idle == "220000000\n" * 3
    assert run(device, f"cat {NPU}/cur_freq")[0] == "300000000\n"
    assert run(device, f"cat {DDR}/cur_freq")[0] == "547000000\n"
    assert "ddrfreq" in run(device, "ls /sys/class/devfreq")[0].split()


def test_devfreq_writes_need_root_and_valid_values(device: AdbDeviceTcp) -> None:
    for name, value in (("governor", "performance"), ("min_freq", "818000000"), ("max_freq", "220000000")):
        out, rc = run(device, f"echo {value} > {KGSL_DEVFREQ}/{name}")
        assert rc == 1 and "Permission denied" in out
    out, rc = run(device, f"echo 1 > {KGSL_DEVFREQ}/cur_freq")
    assert rc == 1 and "Permission denied" in out
    assert run(device, f"cat {KGSL_DEVFREQ}/governor")[0] == "msm-adreno-tz\n"
    out, rc = run(device, f"su -c 'echo turbo > {KGSL_DEVFREQ}/governor'")
    assert rc == 1 and "Invalid argument" in out
    out, rc = run(device, f"su -c 'echo fast > {NPU}/max_freq'")
    assert rc == 1 and "Invalid argument" in out


def test_pinning_the_gpu_as_the_profiler_does(device: AdbDeviceTcp) -> None:
    base = f"{KGSL}/devfreq"
    cmd = (
        f"echo 818000000 > {base}/max_freq && echo 400000000 > {base}/min_freq && "
        f"echo 400000000 > {base}/max_freq && echo performance > {base}/governor"
    )
    assert run(device, f'su -c "{cmd}"') == ("", 0)
    assert run(device, f"cat {base}/cur_freq {KGSL}/gpuclk {KGSL_DEVFREQ}/governor")[0] == (
        "400000000\n400000000\nperformance\n"
    )


def test_min_and_max_clamp_to_the_table() -> None:
    soc = Soc(load_profile("virtual-flagship"))
    soc.nodes[f"{KGSL_DEVFREQ}/max_freq"].write("999999999999")
    assert soc.nodes[f"{KGSL_DEVFREQ}/max_freq"].read() == "818000000"
    soc.nodes[f"{KGSL_DEVFREQ}/max_freq"].write("500000000")  # rounds down to an OPP
    assert soc.nodes[f"{KGSL_DEVFREQ}/max_freq"].read() == "400000000"
    soc.nodes[f"{KGSL_DEVFREQ}/min_freq"].write("1")  # rounds up to the lowest OPP
    assert soc.nodes[f"{KGSL_DEVFREQ}/min_freq"].read() == "220000000"
    soc.nodes[f"{KGSL_DEVFREQ}/min_freq"].write("600000000")  # above max: accepted, max wins
    soc.nodes[f"{KGSL_DEVFREQ}/governor"].write("performance")
    assert soc.unit_run_frequency("gpu") == 400000000


def test_governors_wander_pin_powersave_and_userspace() -> None:
    soc = Soc(load_profile("virtual-flagship"), rng=random.Random(3))
    soc.begin_unit_load("gpu")
    wandering = {soc.unit_run_frequency("gpu") for _ in range(60)}
    assert len(wandering) > 2 and min(wandering) >= 525000000  # the upper half of the table
    soc.nodes[f"{KGSL_DEVFREQ}/governor"].write("powersave")
    assert {soc.unit_run_frequency("gpu") for _ in range(10)} == {220000000}
    soc.nodes[f"{KGSL_DEVFREQ}/governor"].write("performance")
    assert {soc.unit_run_frequency("gpu") for _ in range(10)} == {818000000}
    with pytest.raises(SysfsWriteError):
        soc.nodes[f"{NPU}/userspace/set_freq"].write("600000000")  # only under userspace
    soc.nodes[f"{NPU}/governor"].write("userspace")
    soc.nodes[f"{NPU}/userspace/set_freq"].write("600000000")
    soc.begin_unit_load("npu")
    assert soc.unit_run_frequency("npu") == 600000000
    assert soc.nodes[f"{NPU}/cur_freq"].read() == "600000000"


def test_heat_of_a_busy_gpu_and_its_thermal_cap() -> None:
    profile = load_profile("virtual-flagship")
    clock = FakeClock()
    soc = Soc(profile, rng=random.Random(0), clock=clock)
    soc.nodes[f"{KGSL_DEVFREQ}/governor"].write("performance")
    soc.begin_unit_load("gpu")
    assert soc.unit_run_frequency("gpu") == 818000000
    clock.now += 10
    assert soc.temperature_c() > profile.thermal.ambient_c + 5  # a busy GPU alone heats the die
    soc.end_unit_load("gpu")
    soc.set_temperature(profile.thermal.trip_c + 10)
    assert soc.is_unit_throttled("gpu")
    soc.begin_unit_load("gpu")
    capped = soc.unit_run_frequency("gpu")
    assert capped < 818000000
    assert int(soc.nodes[f"{KGSL}/devfreq/cur_freq"].read()) == capped  # a pin read back shows the cap


def test_bus_follows_accelerator_runs_and_holds_briefly() -> None:
    clock = FakeClock()
    soc = Soc(load_profile("virtual-flagship"), rng=random.Random(1), clock=clock)
    assert soc.bus_current_frequency() == 547000000
    soc.begin_unit_load("gpu")
    level = soc.bus_run_frequency()
    assert level is not None and level >= 1555000000
    assert soc.nodes[f"{DDR}/cur_freq"].read() == str(level)
    soc.end_unit_load("gpu")
    clock.now += 0.05
    assert soc.bus_current_frequency() == level  # held through devfreq polling
    clock.now += 0.2
    assert soc.bus_current_frequency() == 547000000
    soc.nodes[f"{DDR}/governor"].write("performance")
    assert soc.bus_run_frequency() == 3196000000


def test_mali_midrange_has_no_npu() -> None:
    soc = Soc(load_profile("virtual-midrange"))
    assert soc.units() == ["gpu"]
    assert soc.nodes["/sys/class/misc/mali0/device/gpuinfo"].read() == "Mali-G57 MC2 2 cores r1p0 0x9093"
    governors = soc.nodes[f"{MALI}/available_governors"].read()
    assert governors == "simple_ondemand performance powersave userspace"
    assert soc.nodes[f"{MALI}/governor"].read() == "simple_ondemand"
    assert "/sys/class/devfreq/17000010.devfreq_mif/cur_freq" in soc.nodes
    assert not any(p.startswith("/sys/class/kgsl") for p in soc.nodes)
    assert not any("npu" in p for p in soc.nodes)
