"""The accelerator cost model: dispatch floor, channel slices, variants, precision, bus, NPU, fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from profilers.virtual_phone import load_profile
from profilers.virtual_phone.accelerator import AcceleratorPlan, plan
from profilers.virtual_phone.graph import read_graph
from profilers.virtual_phone.profile import AcceleratorSpec
from tests.profilers.virtual_phone.phone_kit import Layer, fp16_model, int8_model, net

FLAGSHIP = load_profile("virtual-flagship")
GPU: AcceleratorSpec = FLAGSHIP.gpu  # type: ignore[assignment]
NPU: AcceleratorSpec = FLAGSHIP.npu  # type: ignore[assignment]
GPU_HZ, NPU_HZ, BUS_HZ = 818e6, 1e9, 3196e6


def _cpu(seconds: float) -> float:
    return seconds * 1.5


def _plan(
    model: bytes, spec: AcceleratorSpec = GPU, precision: str = "fp32", host: dict[str, float] | None = None
) -> AcceleratorPlan:
    return plan(read_graph(model), host or {}, spec, precision)


def _total(p: AcceleratorPlan, unit_hz: float = GPU_HZ, bus_hz: float = BUS_HZ) -> float:
    return sum(p.kernel_seconds(unit_hz, bus_hz, _cpu))


def test_every_kernel_pays_the_dispatch_floor() -> None:
    tiny = _plan(net([Layer(cout=4, k=1)], cin=4, size=2))
    (seconds,) = tiny.kernel_seconds(GPU_HZ, BUS_HZ, _cpu)
    assert seconds == pytest.approx(GPU.cost.launch_us * 1e-6, rel=0.01)
    deep = _plan(net([Layer(cout=4, k=1) for _ in range(10)], cin=4, size=2))
    assert _total(deep) >= 10 * GPU.cost.launch_us * 1e-6


def test_channels_count_in_slices_of_four() -> None:
    times = {c: _total(_plan(net([Layer(cout=c, k=3)], cin=16, size=64))) for c in (4, 5, 6, 7, 8, 9, 12)}
    assert times[5] == times[6] == times[7] == times[8]
    assert times[4] < times[8] < times[9] == times[12]
    inputs = {c: _total(_plan(net([Layer(cout=16, k=3)], cin=c, size=64))) for c in (5, 8, 9)}
    assert inputs[5] == inputs[8] < inputs[9]


def test_output_tiles_quantise_to_workgroups() -> None:
    # the 8×8 workgroup: a 57×57 output map costs what 64×64 costs (compute-bound 3×3 conv, stride 1)
    at = {s: _plan(net([Layer(cout=64, k=5)], cin=64, size=s)) for s in (57, 64, 65)}
    compute = {s: p.kernels[0].macs for s, p in at.items()}
    assert compute[57] == compute[64] < compute[65]


def test_kernel_variants_follow_shapes_and_elementwise_ops_fuse() -> None:
    model = net(
        [
            Layer(cout=32, k=3),
            Layer("Relu"),
            Layer(cout=32, k=3, groups=32),
            Layer(cout=64, k=1),
            Layer("Relu"),
            Layer(cout=64, k=3),
            Layer(cout=64, k=5),
        ],
        size=32,
    )
    kernels = _plan(model).kernels
    assert [k.variant for k in kernels] == [
        "conv2d_gen",
        "conv2d_dw_3x3",
        "conv2d_pw_4x4",
        "winograd",
        "conv2d_gen",
    ]
    assert kernels[0].name == "Conv_0+Relu_1" and kernels[2].name == "Conv_3+Relu_4"
    assert kernels[3].launches == 3
    small = _plan(net([Layer(cout=64, k=1)], cin=64, size=8)).kernels
    assert small[0].variant == "conv2d_pw_1x4"


def test_fp16_is_about_twice_fp32_on_a_compute_bound_conv() -> None:
    model = net([Layer(cout=128, k=5)], cin=128, size=64)
    fp32 = _total(_plan(model, precision="fp32"))
    fp16 = _total(_plan(fp16_model(model), precision="fp16"))
    assert 1.8 < fp32 / fp16 < 2.1


def test_the_bus_clock_moves_memory_bound_layers_only() -> None:
    depthwise = _plan(net([Layer(cout=128, k=3, groups=128)], cin=128, size=128))
    slow_bus, fast_bus = _total(depthwise, bus_hz=547e6), _total(depthwise, bus_hz=3196e6)
    assert slow_bus > 3 * fast_bus
    heavy = _plan(net([Layer(cout=128, k=5)], cin=128, size=64))
    assert _total(heavy, bus_hz=1017e6) == _total(heavy, bus_hz=3196e6)
    assert _total(heavy, unit_hz=220e6) > 3 * _total(heavy, unit_hz=818e6)


def test_the_npu_favours_int8_and_pays_a_graph_cost(tmp_path: Path) -> None:
    model = net([Layer(cout=64, k=3), Layer("Relu"), Layer(cout=64, k=3), Layer("Relu")], cin=64, size=64)
    int8 = _plan(int8_model(model, tmp_path), NPU, "int8")
    fp16 = _plan(fp16_model(model), NPU, "fp16")
    assert int8.kernels[0].variant == "graph_execute"
    int8_s, fp16_s = _total(int8, NPU_HZ), _total(fp16, NPU_HZ)
    graph_s = NPU.cost.graph_us * 1e-6
    assert (fp16_s - graph_s) / (int8_s - graph_s) > 1.6
    assert int8_s > graph_s


def test_unsupported_ops_fall_back_to_the_cpu_on_the_npu() -> None:
    model = net([Layer(cout=16, k=3), Layer("PRelu"), Layer(cout=16, k=3)], cin=16, size=32)
    host = {"Conv_0": 100.0, "PRelu_1": 40.0, "Conv_2": 100.0}
    npu = _plan(model, NPU, "fp16", host)
    units = {k.name: k.unit for k in npu.kernels}
    assert units == {"graph_execute": "npu", "Conv_0": "npu", "PRelu_1": "cpu", "Conv_2": "npu"}
    seconds = dict(zip([k.name for k in npu.kernels], npu.kernel_seconds(NPU_HZ, BUS_HZ, _cpu), strict=True))
    assert seconds["PRelu_1"] > _cpu(40e-6) + NPU.cost.transfer_us * 1e-6
    gpu = _plan(model, GPU, "fp32", host)
    assert [k.name for k in gpu.kernels] == ["Conv_0+PRelu_1", "Conv_2"]  # a GPU fuses it


def test_the_host_profile_anchors_each_kernel_within_bounds() -> None:
    model = net([Layer(cout=32, k=3), Layer(cout=32, k=3)], cin=32, size=32)
    even = _plan(model, host={"Conv_0": 100.0, "Conv_1": 100.0})
    skewed = _plan(model, host={"Conv_0": 400.0, "Conv_1": 100.0})
    lopsided = _plan(model, host={"Conv_0": 1e6, "Conv_1": 1.0})
    base = even.kernels[0].macs
    assert skewed.kernels[0].macs == pytest.approx(base * (1.6**0.5))  # share 0.8 vs 0.5 of equal work
    assert lopsided.kernels[0].macs == pytest.approx(base * 2**0.5)  # clamped
    assert lopsided.kernels[1].macs == pytest.approx(base * 0.5**0.5)


def test_runs_carry_a_few_percent_of_noise() -> None:
    import random

    p = _plan(net([Layer(cout=64, k=3)], cin=64, size=64))
    rng = random.Random(7)
    totals = [sum(kt.seconds for kt in p.run(GPU_HZ, BUS_HZ, _cpu, rng)) for _ in range(200)]
    mean = sum(totals) / len(totals)
    assert mean == pytest.approx(_total(p), rel=0.02)
    assert 0.005 < (max(totals) - min(totals)) / mean < 0.25


def test_precision_and_boundaries_of_converted_models(tmp_path: Path) -> None:
    model = net([Layer(cout=16, k=3), Layer("Relu"), Layer(cout=16, k=1)], cin=3, size=16)
    assert read_graph(model).precision == "fp32"
    half = read_graph(fp16_model(model))
    assert half.precision == "fp16"
    # The fp32 <-> fp16 casts at the edges are as transparent as an fp32 graph's upload and readback:
    # the same working nodes, no edge kernels.
    assert [n.boundary for n in half.nodes if n.boundary] == []
    assert [n.op_type for n in half.nodes] == [n.op_type for n in read_graph(model).nodes]
    quant = read_graph(int8_model(model, tmp_path))
    assert quant.precision == "int8"
    assert quant.nodes[0].boundary == "quantize" and quant.nodes[-1].boundary == "dequantize"
    assert [n.op_type for n in quant.nodes if not n.boundary] == ["Conv", "Conv"]  # Q/DQ pairs vanish
