"""The accelerator cost model: what a model's run costs on the virtual phone's GPU or NPU, kernel by kernel.

Input: the model's working nodes (graph.py: shapes, channels, kernel, groups, MACs, element counts), the
host's per-node time (onnxruntime's profile of the pushed model, measured in the benchmark child), the unit's
constants (`CostSpec` of the profile) and, per run, the unit's clock and the memory-bus clock. Output: the
dispatched kernels (name, ONNX op type, kernel variant, unit where it ran) with their times, and the run
total.

What is modelled — the structure mobile GPUs and NPUs show:
- **Dispatch.** Every dispatched kernel costs `launch_us` however small it is (the floor of a tiny layer).
  An NPU also pays `graph_us` per run (reported as a `graph_execute` kernel), and more per op at compile time.
- **Fusion.** An elementwise op (activation, bias/residual add, scale, batch norm) whose input is the sole
  output of a conv / matmul kernel is fused into it, as a GPU delegate does: no kernel of its own, only the
  extra operand it reads. Views (Reshape, Flatten…) cost nothing; Q/DQ and Cast vanish inside the graph.
- **Kernel variant by shape.** Conv: `conv2d_dw_3x3` (depthwise 3×3), `conv2d_dw` (other depthwise),
  `conv2d_pw_4x4` / `conv2d_pw_1x4` (1×1, stride 1, large / small map), `winograd` (3×3, stride 1, ≥32 in and
  out channels, ≥8×8 map: three kernels — input transform, a GEMM with 4× fewer MACs, output transform),
  `conv2d_gen` (the rest); `conv_transposed`; `fully_connected` / `matmul`; `pooling`, `reduce_mean`,
  `resize`, `concat`, `softmax`, `elementwise_<op>` and `<op>` for the rest.
- **Channel slices and workgroups.** Channels are processed in slices of 4 (ceil(C/4), in and out: C=5..8
  cost what 8 costs), activations are stored in that layout (bytes too), and the output grid (x, y, slice) is
  quantised up to whole workgroups (`workgroup`, e.g. 8×8×1 or 4×4×4; the 4×4 pointwise variant computes 4×4
  outputs per thread, so its x and y quantise to 4× the workgroup).
- **Compute vs memory.** A kernel takes max(compute, memory): compute = quantised MACs /
  (`macs_per_cycle[precision]` · unit clock), memory = bytes read and written / (`bus_bytes_per_cycle` · bus
  clock). fp16 has about twice fp32's rate (and half its bytes); an NPU's int8 about twice its fp16.
- **The host as anchor.** Analytic work misses what a kernel's real cost depends on beyond its shape. Each
  kernel's compute is multiplied by √a, a = (its share of the host's time) / (its share of the analytic
  work), clamped to [0.5, 2]: a node genuinely expensive on the host (relative to its MACs) is so on the
  accelerator too, while the accelerator's own structure (slices, tiles, launches, bandwidth) sets the
  result — it is not a scaled CPU time. A model whose host times follow its MACs gets a = 1 everywhere.
- **CPU fallback (NPU).** An op in `unsupported_ops` runs on the CPU: its host time scaled to the big
  cluster at its current clock, plus `transfer_us` and its tensors' round trip over the bus; unit `cpu`.
- **Noise.** Each run is scaled by 1 + N(0, 2 %) and each kernel by 1 + N(0, 1 %) (seeded per benchmark).

What is not modelled: caches and data reuse between kernels (every kernel streams its tensors from DRAM),
kernel concurrency, tuning of workgroup sizes, driver JIT variance, memory-allocation cost, power-saving
idle states between kernels, and the numeric effect of precision (outputs are the host's).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from profilers.virtual_phone.graph import ELEMENT_BYTES, ELEMENTWISE_OPS, FUSABLE_OPS, Graph, GraphNode
from profilers.virtual_phone.profile import AcceleratorSpec

HEAVY_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ANCHOR_CLAMP = (0.5, 2.0)
RUN_NOISE = 0.02
KERNEL_NOISE = 0.01
GPU_COMPILE_S_PER_KERNEL = 0.0015
"""Shader compilation at session creation (program cache cold), per kernel."""
NPU_COMPILE_S = 0.02
NPU_COMPILE_S_PER_OP = 0.0003
"""Graph finalisation of an NPU at session creation: a fixed part and a part per op."""


@dataclass(frozen=True)
class Kernel:
    """One dispatched kernel of the plan: its work before the clocks are known."""

    name: str
    op_type: str
    variant: str
    unit: str
    macs: float
    """Quantised MACs, anchored to the host (0 for a CPU fallback)."""
    bytes: float
    launches: int = 1
    host_s: float = 0.0
    """The host's time of a CPU-fallback kernel."""


@dataclass(frozen=True)
class KernelTime:
    """A kernel's time in one run."""

    kernel: Kernel
    seconds: float


class AcceleratorPlan:
    """The kernels a model dispatches on one unit at one precision; `run` prices them at given clocks."""

    def __init__(self, spec: AcceleratorSpec, precision: str, kernels: list[Kernel]) -> None:
        self.spec = spec
        self.precision = precision
        self.kernels = kernels

    def kernel_seconds(
        self, unit_hz: float, bus_hz: float, cpu_scale: Callable[[float], float]
    ) -> list[float]:
        """Each kernel's noise-free time at the unit clock `unit_hz` and the bus clock `bus_hz`.

        `cpu_scale` turns a host time into the time on the phone's big cluster (for CPU fallbacks).
        """
        cost = self.spec.cost
        rate = cost.macs_per_cycle[self.precision] * unit_hz
        bandwidth = cost.bus_bytes_per_cycle * bus_hz
        out = []
        for k in self.kernels:
            memory = k.bytes / bandwidth
            if k.unit == "cpu":
                out.append(cpu_scale(k.host_s) + cost.transfer_us * 1e-6 + memory)
            elif k.variant == "graph_execute":
                out.append(cost.graph_us * 1e-6)
            else:
                out.append(k.launches * cost.launch_us * 1e-6 + max(k.macs / rate, memory))
        return out

    def run(
        self, unit_hz: float, bus_hz: float, cpu_scale: Callable[[float], float], rng: random.Random
    ) -> list[KernelTime]:
        """One run's kernel times, with run-to-run noise."""
        run_factor = max(0.9, rng.gauss(1.0, RUN_NOISE))
        base = self.kernel_seconds(unit_hz, bus_hz, cpu_scale)
        return [
            KernelTime(k, s * run_factor * max(0.95, rng.gauss(1.0, KERNEL_NOISE)))
            for k, s in zip(self.kernels, base, strict=True)
        ]

    def compile_seconds(self) -> float:
        """What session creation adds on this unit (shader compilation / graph finalisation)."""
        on_unit = sum(1 for k in self.kernels if k.unit == self.spec.unit)
        if self.spec.unit == "npu":
            return NPU_COMPILE_S + NPU_COMPILE_S_PER_OP * on_unit
        return GPU_COMPILE_S_PER_KERNEL * on_unit


def _slices(c: int) -> int:
    return max(1, math.ceil(c / 4))


def _quantise(value: int, step: int) -> int:
    return max(1, math.ceil(value / step)) * step


def _c4_elems(elems: int, channels: int) -> float:
    """Elements of a tensor stored in slices of 4 channels."""
    return elems * (_slices(channels) * 4) / max(1, channels)


@dataclass
class _Draft:
    """A kernel under construction: the nodes it covers and its analytic work."""

    names: list[str]
    head: GraphNode
    variant: str
    unit: str
    macs: float
    raw_macs: float
    bytes: float
    launches: int = 1


def _conv_variant(n: GraphNode) -> str:
    _, cout, h, w = n.out_shape
    depthwise = n.groups > 1 and n.groups == n.cin == cout
    if n.op_type == "ConvTranspose":
        return "conv_transposed"
    if depthwise:
        return "conv2d_dw_3x3" if n.kernel == (3, 3) and n.dilation == 1 else "conv2d_dw"
    if n.groups == 1 and n.kernel == (1, 1) and n.stride == 1:
        return "conv2d_pw_4x4" if h * w >= 1024 else "conv2d_pw_1x4"
    if (
        n.groups == 1
        and n.kernel == (3, 3)
        and n.stride == 1
        and n.dilation == 1
        and n.cin >= 32
        and cout >= 32
        and h >= 8
        and w >= 8
    ):
        return "winograd"
    return "conv2d_gen"


def _variant(n: GraphNode) -> str:
    if n.boundary:
        return n.boundary
    op = n.op_type
    if op in ("Conv", "ConvTranspose"):
        return _conv_variant(n)
    if op in ("MatMul", "Gemm"):
        return "fully_connected" if n.out_shape[3] == 1 and n.out_shape[2] == 1 else "matmul"
    named = {
        "MaxPool": "pooling",
        "AveragePool": "pooling",
        "GlobalAveragePool": "reduce_mean",
        "GlobalMaxPool": "reduce_max",
        "ReduceMean": "reduce_mean",
        "Resize": "resize",
        "Upsample": "resize",
        "Concat": "concat",
        "Softmax": "softmax",
        "Transpose": "transpose",
        "Pad": "padding",
        "DepthToSpace": "depth_to_space",
        "SpaceToDepth": "space_to_depth",
    }
    if op in named:
        return named[op]
    if op in ELEMENTWISE_OPS:
        return f"elementwise_{op.lower()}"
    return op.lower()


def _work(n: GraphNode, variant: str, spec: AcceleratorSpec, esize: int) -> tuple[float, float, int]:
    """(quantised MACs, bytes moved, launches) of a node run as `variant`."""
    wx, wy, wz = spec.cost.workgroup
    batch, cout, h, w = n.out_shape
    in_bytes = _c4_elems(n.in_elems, n.cin) * esize
    out_bytes = _c4_elems(n.out_elems, cout) * esize
    weight_bytes = n.weight_elems * esize
    if variant.startswith("conv2d_pw_4x4"):
        wx, wy = wx * 4, wy * 4
    xq, yq = _quantise(w, wx), _quantise(h, wy)
    sq = _quantise(_slices(cout), wz)
    kh, kw = n.kernel
    macs: float
    if variant.startswith("conv2d_dw"):
        macs = batch * xq * yq * sq * 4 * kh * kw
    elif variant == "winograd":
        tiles = _quantise(math.ceil(w / 4), wx) * _quantise(math.ceil(h / 4), wy)
        macs = batch * tiles * 36 * _slices(n.cin) * 4 * sq * 4
        transform = _c4_elems(n.in_elems, n.cin) * esize * 36 / 16
        moved = in_bytes + 2 * transform + weight_bytes + out_bytes + 36 / 16 * out_bytes * 2
        return macs, moved, 3
    elif n.op_type in ("Conv", "ConvTranspose"):
        cin_q = _slices(max(1, n.cin // max(1, n.groups))) * 4
        macs = batch * xq * yq * sq * 4 * cin_q * kh * kw
    elif n.op_type in ("MatMul", "Gemm"):
        k = n.macs / max(1, n.out_elems)
        macs = batch * xq * yq * sq * 4 * _slices(int(k)) * 4
    else:
        per_out = n.macs / max(1, n.out_elems)
        macs = batch * xq * yq * sq * 4 * max(1.0, per_out)
    return macs, in_bytes + weight_bytes + out_bytes, 1


def plan(graph: Graph, host_us: dict[str, float], spec: AcceleratorSpec, precision: str) -> AcceleratorPlan:
    """The kernels `graph` dispatches on `spec`'s unit at `precision`, anchored to the host's node times."""
    esize = ELEMENT_BYTES[precision]
    unsupported = set(spec.cost.unsupported_ops)
    produced_by: dict[str, _Draft] = {}
    drafts: list[_Draft] = []
    for n in graph.nodes:
        if n.op_type in unsupported:
            draft = _Draft([n.name], n, n.op_type.lower(), "cpu", 0.0, 0.0, 0.0)
            draft.bytes = (n.in_elems + n.out_elems) * 4.0  # the round trip of its fp32 tensors
            drafts.append(draft)
            for t in n.outputs:
                produced_by[t] = draft
            continue
        head = produced_by.get(n.inputs[0]) if n.inputs else None
        if (
            spec.cost.fuses_elementwise
            and n.op_type in FUSABLE_OPS
            and head is not None
            and head.unit != "cpu"
            and head.head.op_type in HEAVY_OPS
            and len(graph.consumers.get(n.inputs[0], [])) == 1
            and n.inputs[0] not in graph.outputs
        ):
            head.names.append(n.name)
            operands = (len(n.inputs) - 1) * _c4_elems(n.out_elems, n.cout)
            head.bytes += (operands + n.weight_elems) * esize
            for t in n.outputs:
                produced_by[t] = head
            continue
        variant = _variant(n)
        macs, moved, launches = _work(n, variant, spec, esize)
        draft = _Draft([n.name], n, variant, spec.unit, macs, float(max(1, n.macs)), moved, launches)
        drafts.append(draft)
        for t in n.outputs:
            produced_by[t] = draft
    kernels = _anchor(drafts, host_us)
    if spec.cost.graph_us > 0:
        kernels.insert(0, Kernel("graph_execute", "Graph", "graph_execute", spec.unit, 0.0, 0.0))
    return AcceleratorPlan(spec, precision, kernels)


def _anchor(drafts: Sequence[_Draft], host_us: dict[str, float]) -> list[Kernel]:
    """Kernels whose compute carries the host's relative cost of their nodes (see the module docstring)."""
    host = [sum(host_us.get(name, 0.0) for name in d.names) for d in drafts]
    on_unit = [i for i, d in enumerate(drafts) if d.unit != "cpu" and host[i] > 0]
    total_host = sum(host[i] for i in on_unit)
    total_work = sum(drafts[i].raw_macs for i in on_unit)
    kernels = []
    for i, d in enumerate(drafts):
        factor = 1.0
        if i in on_unit and total_host > 0 and total_work > 0:
            share = (host[i] / total_host) / (d.raw_macs / total_work)
            factor = math.sqrt(min(max(share, ANCHOR_CLAMP[0]), ANCHOR_CLAMP[1]))
        kernels.append(
            Kernel(
                name="+".join(d.names),
                op_type=d.head.op_type,
                variant=d.variant,
                unit=d.unit,
                macs=d.macs * factor,
                bytes=d.bytes,
                launches=d.launches,
                host_s=host[i] * 1e-6,
            )
        )
    return kernels
