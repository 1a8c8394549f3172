"""CPU microarchitectures: the reference changes nothing, kinds differ, cache and bandwidth laws, JSON errors.

The pricing tests use deterministic per-node host costs (a node's host time follows its MACs and bytes), so a
difference between profiles is the model's, never the host's noise.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import random
import struct
from array import array
from pathlib import Path
from typing import Any

import pytest
from adb_shell.adb_device import AdbDeviceTcp

from profilers.blocks import get_family
from profilers.virtual_phone import BENCHMARK_BINARY, ProfileError, VirtualPhone, list_profiles, load_profile
from profilers.virtual_phone.bench import BenchmarkOptions, _measure
from profilers.virtual_phone.faults import FaultControl
from profilers.virtual_phone.graph import read_graph
from profilers.virtual_phone.microarch import (
    COST_CACHE,
    KINDS,
    REFERENCE,
    Microarch,
    ModelPricing,
    NodeCost,
    RunPricer,
    node_costs,
)
from profilers.virtual_phone.profile import PROFILES_DIR, Profile, profile_from_dict
from profilers.virtual_phone.runtime import PhoneRuntime
from profilers.virtual_phone.soc import Soc
from tests.profilers.virtual_phone.phone_kit import BENCH_PATH, MODEL_PATH, run, tiny_model


def _sr_block() -> bytes:
    """Dense 3×3 convolutions (the seed's SR block)."""
    family = get_family("sr_block")
    return family.to_onnx(family.parse({"scale": 2, "height": 48, "width": 48, "widths": [24, 24, 24]}))


def _mbconv() -> bytes:
    """Pointwise expand, depthwise 3×3, pointwise project (MobileNetV2's block)."""
    family = get_family("mbconv")
    return family.to_onnx(family.parse({"cin": 24, "cout": 24, "height": 48, "width": 48, "expand_ratio": 6}))


def _costs(model: bytes) -> list[NodeCost]:
    """Deterministic host costs: 1 µs per 1000 MACs plus 1 µs per 4 kB moved, for every working node."""
    graph = read_graph(model)
    host = [
        (n.name, n.op_type, n.macs / 1000 + (n.in_elems + n.out_elems + n.weight_elems) * 4 / 4000)
        for n in graph.nodes
    ]
    return node_costs(graph, host)


def _scale_of(profile: Profile, cluster: int) -> Any:
    return functools.partial(Soc(profile).scale, cluster)


def _cluster(profile_name: str, cluster: str) -> tuple[Profile, int]:
    profile = load_profile(profile_name)
    return profile, [c.name for c in profile.clusters].index(cluster)


def _time(model: bytes, profile_name: str, cluster: str) -> float:
    """One run of `model` on `cluster` at its top frequency, from the deterministic host costs."""
    profile, index = _cluster(profile_name, cluster)
    spec = profile.clusters[index]
    costs = _costs(model)
    host = sum(c.host_s for c in costs)
    pricer = RunPricer(spec.microarch, costs, _scale_of(profile, index))
    return pricer.run_seconds(host, spec.frequencies_khz[-1])


# -- the reference -----------------------------------------------------------------------------------------


def test_the_flagship_keeps_the_reference_and_prices_by_frequency_scaling_bit_for_bit() -> None:
    profile = load_profile("virtual-flagship")
    soc = Soc(profile)
    rng = random.Random(7)
    for index, spec in enumerate(profile.clusters):
        assert spec.microarch == REFERENCE and spec.microarch.is_reference
        pricing = ModelPricing(spec.microarch, functools.partial(soc.scale, index), tiny_model(), 1)
        assert not pricing.needs_profile  # no host profile is measured for a reference cluster
        assert pricing.pricer is not None
        for _ in range(200):
            host, f = rng.uniform(1e-5, 0.5), rng.choice(spec.frequencies_khz)
            assert pricing.pricer.run_seconds(host, f) == soc.scale(index, host, f)  # exactly today's


def test_the_priced_path_with_unit_factors_reproduces_frequency_scaling() -> None:
    """The node-by-node formula itself (not the reference shortcut) sums back to today's number."""
    profile, index = _cluster("virtual-midrange", "big")
    scale = _scale_of(profile, index)
    unlimited = Microarch(name="unit factors", speed=dict.fromkeys(KINDS, 1.0), bandwidth_bytes_per_s=1e30)
    assert not unlimited.is_reference  # forces the priced path
    costs = _costs(_sr_block())
    pricer = RunPricer(unlimited, costs, scale)
    for host in (1e-4, 0.003, 0.25):
        for f in profile.clusters[index].frequencies_khz:
            assert pricer.run_seconds(host, f) == pytest.approx(scale(host, f), rel=1e-12)
            assert sum(pricer.node_seconds(host, f)) == pytest.approx(scale(host, f), rel=1e-12)


def test_at_least_four_profiles_differ_in_kind() -> None:
    names = list_profiles()
    assert {"virtual-lowend", "virtual-tablet"} <= set(names)
    archs = {n: load_profile(n).clusters[-1].microarch for n in names}
    assert archs["virtual-flagship"].is_reference
    distinct = {json.dumps(dict(a.speed), sort_keys=True) for a in archs.values() if not a.is_reference}
    assert len(distinct) >= 4


# -- kinds: narrow SIMD against wide SIMD ------------------------------------------------------------------


def test_the_two_models_have_the_kinds_the_comparison_relies_on() -> None:
    assert {c.kind for c in _costs(_sr_block())} >= {"dense_conv"}
    assert "depthwise_conv" not in {c.kind for c in _costs(_sr_block())}
    assert {c.kind for c in _costs(_mbconv())} >= {"depthwise_conv", "pointwise_conv"}


def test_narrow_simd_slows_dense_convolutions_more_than_depthwise_ones() -> None:
    """The ratio dense-model / depthwise-model time moves between phones: no frequency scaling can do that."""
    sr, mb = _sr_block(), _mbconv()

    def ratio(profile: str, cluster: str) -> float:
        return _time(sr, profile, cluster) / _time(mb, profile, cluster)

    flagship = ratio("virtual-flagship", "prime")
    narrow = ratio("virtual-lowend", "big")
    wide = ratio("virtual-tablet", "big")
    # Repeat noise of a real measurement is a few per cent; these differ by far more (1.27 and 0.89 here:
    # the block's pointwise convolutions are slow on narrow SIMD too, only its depthwise one is not).
    assert narrow / flagship > 1.2
    assert wide / flagship < 0.95
    # Frequency alone never changes the ratio: the flagship's clusters all agree.
    assert ratio("virtual-flagship", "little") == pytest.approx(flagship, rel=1e-12)


# -- the cache law and the bandwidth floor -----------------------------------------------------------------


def test_the_cache_law() -> None:
    arch = Microarch(cache_bytes=1000, miss_penalty=0.5)
    assert arch.cache_slowdown(10) == 1.0
    assert arch.cache_slowdown(1000) == 1.0  # continuous where the working set stops fitting
    assert arch.cache_slowdown(1001) == pytest.approx(1.0, abs=1e-3)
    assert arch.cache_slowdown(2000) == pytest.approx(1.25)
    assert arch.cache_slowdown(4000) == pytest.approx(1.375)
    assert arch.cache_slowdown(1e12) == pytest.approx(1.5, rel=1e-6)  # saturates at 1 + miss_penalty
    one = [NodeCost("conv", "Conv", "dense_conv", 1e-3, 2000.0)]
    pricer = RunPricer(arch, one, lambda host, _f: host)
    assert pricer.run_seconds(1e-3, 1) == pytest.approx(1.25e-3)


def test_the_bandwidth_floor_holds_whatever_the_clock() -> None:
    arch = Microarch(bandwidth_bytes_per_s=1e9)
    small = NodeCost("relu", "Relu", "elementwise", 1e-5, 1e6)  # 10 µs on the host, 1 ms of traffic
    big = NodeCost("conv", "Conv", "dense_conv", 4e-3, 1e5)  # 4 ms on the host, 0.1 ms of traffic
    pricer = RunPricer(arch, [small, big], lambda host, f: host * 1000 / f)
    host = small.host_s + big.host_s
    for f in (500, 1000, 2000):
        nodes = pricer.node_seconds(host, f)
        assert nodes[0] == pytest.approx(1e-3)  # floored: the clock does not speed it up
        assert nodes[1] == pytest.approx(4e-3 * 1000 / f)
        assert pricer.run_seconds(host, f) == pytest.approx(sum(nodes))


def test_the_sorted_pricing_matches_node_by_node_sums() -> None:
    rng = random.Random(3)
    kinds = list(KINDS)
    costs = [
        NodeCost(
            f"n{i}", "Op", rng.choice(kinds), rng.uniform(0, 2e-3), rng.choice([0.0, rng.uniform(0, 4e6)])
        )
        for i in range(60)
    ]
    arch = Microarch(
        speed={k: rng.uniform(0.3, 1.5) for k in kinds},
        cache_bytes=256 * 1024,
        miss_penalty=0.8,
        bandwidth_bytes_per_s=5e9,
    )
    pricer = RunPricer(arch, costs, lambda host, f: host * 2e6 / f)
    for _ in range(300):
        host, f = rng.uniform(1e-5, 1.0), rng.choice([300_000, 1_000_000, 2_000_000])
        assert pricer.run_seconds(host, f) == pytest.approx(sum(pricer.node_seconds(host, f)), rel=1e-9)


# -- profile JSON ------------------------------------------------------------------------------------------


def _raw(microarch: Any, cluster: int = 1) -> dict[str, Any]:
    raw = json.loads((PROFILES_DIR / "virtual-midrange.json").read_text())
    raw = copy.deepcopy(raw)
    raw["clusters"][cluster]["microarch"] = microarch
    return raw


@pytest.mark.parametrize(
    ("microarch", "field"),
    [
        ({"speed": {"dense_conv": 0}}, "clusters[1].microarch.speed.dense_conv must be positive"),
        ({"speed": {"dense_conv": "fast"}}, "clusters[1].microarch.speed.dense_conv must be a number"),
        ({"speed": {"winograd": 1.0}}, "clusters[1].microarch.speed.winograd is not an operator kind"),
        ({"speed": [1, 2]}, "clusters[1].microarch.speed must be an object"),
        ({"cache_kib": -1}, "clusters[1].microarch.cache_kib must be positive"),
        ({"miss_penalty": -0.1}, "clusters[1].microarch.miss_penalty must be zero or more"),
        ({"bandwidth_gb_s": True}, "clusters[1].microarch.bandwidth_gb_s must be a number"),
        ({"cache_mb": 2}, "clusters[1].microarch.cache_mb is not a field"),
        ("narrow", "clusters[1].microarch must be an object"),
    ],
)
def test_a_bad_microarch_names_its_field(microarch: Any, field: str) -> None:
    with pytest.raises(ProfileError) as info:
        profile_from_dict(_raw(microarch), source="mine.json")
    assert str(info.value).startswith(f"profile mine.json: {field}")


def test_a_partial_microarch_defaults_the_rest() -> None:
    profile = profile_from_dict(_raw({"speed": {"depthwise_conv": 2.0}}, cluster=0))
    arch = profile.clusters[0].microarch
    assert arch.speed_of("depthwise_conv") == 2.0 and arch.speed_of("dense_conv") == 1.0
    assert arch.cache_bytes is None and arch.bandwidth_bytes_per_s is None


# -- end to end: the benchmark program on a phone ----------------------------------------------------------


def _average_ms(out: str) -> float:
    line = next(ln for ln in out.splitlines() if ln.startswith("Average inference time cost total"))
    return float(line.split(":")[1].split()[0])


def test_a_midrange_benchmark_profiles_a_model_once_and_writes_priced_node_events(tmp_path: Path) -> None:
    model = tiny_model(channels=8, size=24)
    digest = COST_CACHE.digest(model)
    COST_CACHE.clear()
    with VirtualPhone(profile="virtual-midrange", state_dir=tmp_path / "phone") as phone:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10)
        assert dev.connect(read_timeout_s=10)
        try:
            dev.push(str(BENCHMARK_BINARY), BENCH_PATH, st_mode=0o100755)
            dev.push(io.BytesIO(model), MODEL_PATH, st_mode=0o100644)
            assert COST_CACHE.get(digest, 1) is None
            out, rc = run(dev, f"taskset 40 {BENCH_PATH} -m times -r 5 -p /data/local/tmp/prof {MODEL_PATH}")
            assert rc == 0, out
            assert _average_ms(out) > 0
            costs = COST_CACHE.get(digest, 1)
            assert costs is not None and {c.kind for c in costs} >= {"dense_conv", "elementwise"}
            listing, _ = run(dev, "ls /data/local/tmp/prof_*.json")
            events = json.loads(dev.shell(f"cat {listing.split()[0]}"))
            nodes = [e for e in events if e["cat"] == "Node"]
            assert {e["name"] for e in nodes} == {f"{c.name}_kernel_time" for c in costs}
            out, rc = run(dev, f"taskset 40 {BENCH_PATH} -m times -r 5 {MODEL_PATH}")
            assert rc == 0, out
            assert COST_CACHE.get(digest, 1) is costs  # the second run priced from the cache
        finally:
            dev.close()


# -- the benchmark's own loop, with a scripted child -------------------------------------------------------


class _ScriptedChild:
    """A benchmark child that replays messages (creation, first run, host profile, two batches, done)."""

    pid = 1

    def __init__(self, messages: list[tuple[bytes, bytes]]) -> None:
        self._messages = list(messages)

    def start(self) -> bool:
        return True

    def receive(self) -> tuple[bytes, bytes] | None:
        return self._messages.pop(0) if self._messages else None

    def close(self) -> None:
        pass

    def kill(self) -> None:
        pass

    def exit_reason(self) -> str:
        return "done"


def _script(hosts: list[float]) -> list[tuple[bytes, bytes]]:
    nodes = [["conv0", "Conv", 120.5], ["relu0", "Relu", 10.25], ["conv1", "Conv", 300.0]]
    return [
        (b"S", struct.pack("<d", 0.0123)),
        (b"F", struct.pack("<d", 0.0042)),
        (b"P", json.dumps({"nodes": nodes, "peak_bytes": 1}).encode()),
        (b"R", struct.pack("<dd", 0.5, 1e6) + array("d", hosts[:50]).tobytes()),
        (b"R", struct.pack("<dd", 0.9, 2e6) + array("d", hosts[50:]).tobytes()),
        (b"D", b""),
    ]


@pytest.mark.parametrize("profile_prefix", [None, "/data/local/tmp/p"])
def test_the_flagships_benchmark_loop_is_frequency_scaling_run_for_run(
    tmp_path: Path, profile_prefix: str | None
) -> None:
    """Every number of a flagship CPU benchmark is `Soc.scale` of the host run at that run's frequency."""
    profile = load_profile("virtual-flagship")
    rng = random.Random(5)
    hosts = [rng.uniform(1e-4, 5e-3) for _ in range(100)]
    for cluster in range(len(profile.clusters)):
        runtime = PhoneRuntime(profile, tmp_path / str(cluster), True, FaultControl(tmp_path / str(cluster)))
        runtime.soc = Soc(profile, rng=random.Random(cluster))
        twin = Soc(profile, rng=random.Random(cluster))  # draws the same frequencies in the same order
        opts = BenchmarkOptions(model="m.onnx", mode="times", repeats=100, profile_prefix=profile_prefix)
        pricing = ModelPricing(
            profile.clusters[cluster].microarch, functools.partial(runtime.soc.scale, cluster), b"m", 1
        )
        outcome = _measure(runtime, opts, _ScriptedChild(_script(hosts)), cluster, pricing)  # type: ignore[arg-type]
        assert not isinstance(outcome, str)
        result, node_runs = outcome
        expected = [twin.scale(cluster, h, twin.run_frequency(cluster)) for h in (0.0123, 0.0042, *hosts)]
        assert [result.creation_s, result.first_s, *result.costs_s] == expected
        if profile_prefix:
            assert [e.seconds for e in node_runs[0]] == [
                expected[2] * us / 430.75 for us in (120.5, 10.25, 300.0)
            ]


def test_a_midrange_benchmark_loop_prices_every_run_and_the_first_after_the_profile(tmp_path: Path) -> None:
    profile = load_profile("virtual-midrange")
    cluster = 1
    COST_CACHE.clear()
    hosts = [0.002] * 100
    runtime = PhoneRuntime(profile, tmp_path, True, FaultControl(tmp_path))
    runtime.soc = Soc(profile, rng=random.Random(0))
    twin = Soc(profile, rng=random.Random(0))
    scale = functools.partial(runtime.soc.scale, cluster)
    pricing = ModelPricing(profile.clusters[cluster].microarch, scale, b"not a model", 1)
    assert pricing.needs_profile
    opts = BenchmarkOptions(model="m.onnx", mode="times", repeats=100, profile_prefix="/data/local/tmp/p")
    outcome = _measure(runtime, opts, _ScriptedChild(_script(hosts)), cluster, pricing)  # type: ignore[arg-type]
    assert not isinstance(outcome, str)
    result, node_runs = outcome
    pricer = pricing.pricer
    assert pricer is not None and [c.kind for c in pricer.costs] == [
        "dense_conv",
        "elementwise",
        "dense_conv",
    ]
    frequencies = [twin.run_frequency(cluster) for _ in range(102)]
    assert result.first_s == pricer.run_seconds(0.0042, frequencies[1])
    assert result.costs_s == [pricer.run_seconds(h, f) for h, f in zip(hosts, frequencies[2:], strict=True)]
    assert result.costs_s[0] != scale(hosts[0], frequencies[2])  # not frequency scaling alone
    assert sum(e.seconds for e in node_runs[0]) == pytest.approx(result.costs_s[0])
