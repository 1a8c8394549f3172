"""probe(), clusters, pin_frequency (restore on every exit) and cooldown against virtual phones."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from profilers.adb import (
    CooldownTimeoutError,
    DeviceSession,
    FrequencyPinError,
    cooldown,
    discover_clusters,
    pin_frequency,
    probe,
)
from profilers.adb.frequency import read_current_khz
from profilers.adb.sysfs import read_files
from profilers.virtual_phone import VirtualPhone


def _policy_state(session: DeviceSession, policy: str) -> dict[str, str | None]:
    base = f"/sys/devices/system/cpu/cpufreq/{policy}"
    files = ["scaling_governor", "scaling_min_freq", "scaling_max_freq"]
    values = read_files(session, [f"{base}/{f}" for f in files])
    return {f: values[f"{base}/{f}"] for f in files}


def test_probe_returns_the_profiles_clusters_and_tables(phone: VirtualPhone, session: DeviceSession) -> None:
    facts = probe(session)
    profile = phone.profile
    by_max = sorted(profile.clusters, key=lambda c: c.frequencies_khz[-1])
    assert [c.name for c in facts.clusters] == ["little", "mid", "big"]
    assert [c.cpus for c in facts.clusters] == [list(c.cpus) for c in by_max]
    assert [c.frequencies_khz for c in facts.clusters] == [list(c.frequencies_khz) for c in by_max]
    assert [c.policy for c in facts.clusters] == [f"policy{c.cpus[0]}" for c in by_max]
    assert "userspace" in facts.clusters[0].governors
    assert facts.model == profile.props["ro.product.model"]
    assert facts.abi == "arm64-v8a"
    assert facts.sdk == int(profile.props["ro.build.version.sdk"])
    assert facts.rooted is True
    assert facts.is_virtual is True
    assert [z.type for z in facts.thermal_zones] == [z.type for z in profile.thermal.zones]
    assert facts.gpu_frequencies_khz == sorted(f // 1000 for f in profile.gpu_frequencies_hz)
    assert facts.serial == session.run("getprop ro.serialno").strip() != ""


def test_probe_of_midrange_and_unrooted(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    facts = probe(connect(start_phone("virtual-midrange", rooted=False)))
    assert [c.name for c in facts.clusters] == ["little", "big"]
    assert facts.rooted is False


def test_pin_sets_and_restores(session: DeviceSession) -> None:
    big = discover_clusters(session)[-1]
    before = _policy_state(session, big.policy)
    low = big.frequencies_khz[0]
    with pin_frequency(session, "big", low) as pin:
        assert pin.verified and pin.observed_khz == low
        assert read_current_khz(session, big) == low
        assert _policy_state(session, big.policy)["scaling_governor"] == "userspace"
    assert _policy_state(session, big.policy) == before
    # policyN names the same cluster.
    with pin_frequency(session, big.policy, big.frequencies_khz[-1]) as pin:
        assert pin.observed_khz == big.frequencies_khz[-1]
    assert _policy_state(session, big.policy) == before


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_pin_restores_governor_after_exception(session: DeviceSession, error: BaseException) -> None:
    little = discover_clusters(session)[0]
    before = _policy_state(session, little.policy)

    def fail_while_pinned() -> None:
        with pin_frequency(session, "little", little.frequencies_khz[3]):
            assert _policy_state(session, little.policy)["scaling_governor"] == "userspace"
            raise error

    with pytest.raises(type(error)):
        fail_while_pinned()
    assert _policy_state(session, little.policy) == before


def test_pin_refuses_bad_requests(
    session: DeviceSession, start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    with (
        pytest.raises(FrequencyPinError, match="not a frequency of cluster big"),
        pin_frequency(session, "big", 1_234_567),
    ):
        pass
    with (
        pytest.raises(FrequencyPinError, match=r"unknown cluster 'huge'.*little"),
        pin_frequency(session, "huge", 1_000_000),
    ):
        pass
    unrooted = connect(start_phone(rooted=False))
    khz = discover_clusters(unrooted)[-1].frequencies_khz[0]
    with pytest.raises(FrequencyPinError, match="needs root"), pin_frequency(unrooted, "big", khz):
        pass


def test_cooldown_waits_with_a_deadline(phone: VirtualPhone, session: DeviceSession) -> None:
    assert cooldown(session, max_celsius=60.0, timeout_s=5.0) < 60.0
    phone.set_temperature(90.0)
    with pytest.raises(CooldownTimeoutError, match="still at"):
        cooldown(session, max_celsius=40.0, timeout_s=0.3, poll_s=0.1)
