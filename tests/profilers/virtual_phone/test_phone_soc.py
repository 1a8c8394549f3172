"""The simulated SoC: cpufreq sysfs, root-only writes, pinning, the wandering governor, heat, throttling."""

from __future__ import annotations

import random

import pytest
from adb_shell.adb_device import AdbDeviceTcp

from profilers.virtual_phone import load_profile
from profilers.virtual_phone.soc import Soc, SysfsWriteError
from tests.profilers.virtual_phone.phone_kit import run

POLICY7 = "/sys/devices/system/cpu/cpufreq/policy7"


def test_cpufreq_files_per_policy_and_cpu_aliases(device: AdbDeviceTcp) -> None:
    assert run(device, f"cat {POLICY7}/related_cpus {POLICY7}/cpuinfo_max_freq") == ("7\n2995200\n", 0)
    assert run(device, "cat /sys/devices/system/cpu/cpufreq/policy4/affected_cpus")[0] == "4 5 6\n"
    assert run(device, "cat /sys/devices/system/cpu/cpu5/cpufreq/related_cpus")[0] == "4 5 6\n"
    governors = run(device, f"cat {POLICY7}/scaling_available_governors")[0].split()
    assert {"userspace", "performance", "schedutil", "powersave"} <= set(governors)
    assert run(device, f"cat {POLICY7}/scaling_governor")[0] == "schedutil\n"
    assert run(device, "cat /sys/class/kgsl/kgsl-3d0/gpu_available_frequencies")[0].split()[0] == "818000000"
    assert "processor\t: 7" in run(device, "cat /proc/cpuinfo")[0]


def test_frequency_writes_without_root_are_refused(device: AdbDeviceTcp) -> None:
    for name, value in (("scaling_governor", "performance"), ("scaling_max_freq", "787200")):
        out, rc = run(device, f"echo {value} > {POLICY7}/{name}")
        assert rc == 1 and "Permission denied" in out
    assert (
        run(device, f"cat {POLICY7}/scaling_governor {POLICY7}/scaling_max_freq")[0] == "schedutil\n2995200\n"
    )


def test_pinning_with_userspace_and_setspeed_as_root(device: AdbDeviceTcp) -> None:
    out, rc = run(
        device,
        f"su -c 'echo userspace > {POLICY7}/scaling_governor && echo 1036800 > {POLICY7}/scaling_setspeed'",
    )
    assert (out, rc) == ("", 0)
    assert (
        run(device, f"cat {POLICY7}/scaling_cur_freq {POLICY7}/scaling_setspeed")[0] == "1036800\n1036800\n"
    )


def test_pinning_with_performance_and_min_equal_max(device: AdbDeviceTcp) -> None:
    cmd = (
        f"echo performance > {POLICY7}/scaling_governor; echo 1420800 > {POLICY7}/scaling_max_freq; "
        f"echo 1420800 > {POLICY7}/scaling_min_freq"
    )
    assert run(device, f'su -c "{cmd}"')[1] == 0
    assert run(device, f"cat {POLICY7}/scaling_cur_freq")[0] == "1420800\n"


def test_invalid_writes_as_root_fail(device: AdbDeviceTcp) -> None:
    out, rc = run(device, f"su -c 'echo turbo > {POLICY7}/scaling_governor'")
    assert rc == 1 and "Invalid argument" in out
    # setspeed only exists for the userspace governor
    out, rc = run(device, f"su -c 'echo 1036800 > {POLICY7}/scaling_setspeed'")
    assert rc == 1 and "Invalid argument" in out


def test_the_default_governor_wanders_and_a_pinned_one_does_not() -> None:
    soc = Soc(load_profile("virtual-flagship"), rng=random.Random(1))
    wandering = {soc.run_frequency(2) for _ in range(50)}
    assert len(wandering) > 3
    soc.nodes[f"{POLICY7}/scaling_governor"].write("userspace")
    soc.nodes[f"{POLICY7}/scaling_setspeed"].write("1651200")
    assert {soc.run_frequency(2) for _ in range(50)} == {1651200}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_load_heats_idle_cools_exponentially_and_heat_throttles() -> None:
    profile = load_profile("virtual-flagship")
    clock = FakeClock()
    soc = Soc(profile, rng=random.Random(0), clock=clock)
    soc.nodes[f"{POLICY7}/scaling_governor"].write("performance")
    idle = soc.temperature_c()
    assert idle == pytest.approx(profile.thermal.ambient_c)
    soc.begin_load(2)
    soc.run_frequency(2)
    clock.now += 10
    hot = soc.temperature_c()
    assert hot > idle + 5
    soc.end_load(2)
    clock.now += profile.thermal.tau_s
    cooled = soc.temperature_c()
    # one time constant of cooling removes 1 - 1/e of the excess
    assert cooled - idle == pytest.approx((hot - idle) / 2.718281828, rel=1e-3)
    assert not soc.is_throttled(2)
    soc.set_temperature(profile.thermal.trip_c + 10)
    assert soc.is_throttled(2)
    assert soc.run_frequency(2) < 2995200
    assert int(soc.nodes[f"{POLICY7}/scaling_cur_freq"].read()) < 2995200
    zone0 = int(soc.nodes["/sys/class/thermal/thermal_zone0/temp"].read())
    assert zone0 == pytest.approx((profile.thermal.trip_c + 10) * 1000, abs=50)


def test_scaling_formula() -> None:
    soc = Soc(load_profile("virtual-flagship"))
    spec = soc.profile.clusters[2]
    assert soc.scale(2, 0.010, spec.f_ref_khz) == pytest.approx(0.010)
    half = soc.scale(2, 0.010, spec.f_ref_khz // 2)
    assert half == pytest.approx(0.010 * (spec.c * 2 + 1 - spec.c), rel=1e-4)


def test_cluster_choice_follows_the_affinity_mask() -> None:
    soc = Soc(load_profile("virtual-flagship"))
    assert soc.cluster_for_cpus({0, 1, 2, 3}) == 0
    assert soc.cluster_for_cpus({4}) == 1
    assert soc.cluster_for_cpus({0, 4}) == 1
    assert soc.cluster_for_cpus({3, 7}) == 2
    assert soc.cluster_for_cpus(None) == 2


def test_sysfs_write_validation() -> None:
    soc = Soc(load_profile("virtual-midrange"))
    with pytest.raises(SysfsWriteError):
        soc.nodes["/sys/devices/system/cpu/cpufreq/policy6/scaling_min_freq"].write("fast")
    soc.nodes["/sys/devices/system/cpu/cpufreq/policy6/scaling_max_freq"].write("99999999")
    assert soc.nodes["/sys/devices/system/cpu/cpufreq/policy6/scaling_max_freq"].read() == "2208000"
