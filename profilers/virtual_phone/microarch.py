"""The microarchitecture of a virtual phone's CPU cluster: what makes two phones differ in kind, not in clock.

Without it a virtual phone's CPU run is the host's real onnxruntime run scaled by frequency (soc.py:
`t = t_host · (c · f_ref / f + (1 − c))`), so any two phones are a constant factor apart. Real phones are not:
a core with narrow SIMD is slow on dense convolutions but not on depthwise ones, a small cache punishes large
working sets, and memory bandwidth caps small layers. A cluster's `Microarch` prices each node of the model
from its real host time (onnxruntime's per-node profile of the pushed model, measured by the benchmark child,
see bench_process.py) and the node's facts read from the graph (graph.py: op type, kernel, groups, element
counts).

The model of the hardware, per node i of a run (times in seconds on the phone):

    kind_i       = dense_conv | depthwise_conv | pointwise_conv | matmul | elementwise | other   (`op_kind`)
    W_i          = (weights + inputs + outputs) elements · element bytes of the graph's precision
    slowdown_i   = 1 + miss_penalty · max(0, 1 − cache_bytes / W_i)          (the cache law)
    compute_i    = ρ · g(f) · h_i · slowdown_i / speed[kind_i]
    node_i       = max(compute_i, W_i / bandwidth)                          (the bandwidth floor)
    run          = Σ_i node_i

with h_i the node's mean host time in the profile, ρ = (this run's host time) / Σ_i h_i (the run's own
host noise, so run-to-run variation stays the host's real one) and g(f) = c · f_ref / f + (1 − c) the
cluster's frequency scaling. The cache law: a working set that fits costs nothing extra; beyond the cache, the
fraction (1 − C/W) that does not fit streams from DRAM and slows the node by up to `miss_penalty` (reached
as W ≫ C), continuous at W = C. The floor: a node cannot take less than the time to move its working set
once at the cluster's sustained bandwidth, whatever the clock. `speed` is the throughput of the cluster on a
kind relative to the rest of its work (1 = as the host's proportions; 0.5 = that kind takes twice its share).

The reference microarchitecture (every speed 1, no cache limit, no bandwidth limit) gives node_i = ρ g h_i,
so run = g · t_host: exactly today's number; a cluster with the reference microarchitecture does not even go
through this module (bench.py keeps its `soc.scale` path, bit for bit).

Cost per measurement: the per-node profile is measured once per (model bytes, intra-op threads) and cached
in this process (`COST_CACHE`); every later run of that model on any phone is priced from it in O(log n)
(nodes sorted by the run gain at which their floor binds, with prefix sums).

What is NOT modelled: the host's own caches and bandwidth (the host is the reference, taken as unlimited);
cache sharing between the cores of a cluster or between threads; reuse of a tensor between consecutive
nodes (every node's working set is counted in full); prefetchers, TLBs, the cache hierarchy (one level);
bandwidth contention with other clusters or accelerators; the thread count's effect on any of these (the
profile is per thread count, the microarchitecture is not); the graph optimiser's fusions (the per-node
profile is taken with optimisations off, and its node shares price the optimised run); session creation
(scaled by frequency alone) and an NPU's CPU fallbacks (accelerator.py: the big cluster's frequency scaling);
and numeric differences (outputs are the host's). Numbers stay marked virtual as every virtual phone's are.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from profilers.virtual_phone.graph import ELEMENT_BYTES, ELEMENTWISE_OPS, Graph, GraphNode, read_graph

KINDS = ("dense_conv", "depthwise_conv", "pointwise_conv", "matmul", "elementwise", "other")
"""The operator kinds a microarchitecture gives a speed to."""
COST_CACHE_SIZE = 256
"""Models whose per-node costs this process keeps (per thread count)."""


class MicroarchError(ValueError):
    """A microarchitecture's JSON is invalid; the message names the field."""


@dataclass(frozen=True)
class Microarch:
    """A CPU cluster's microarchitecture (see the module docstring for how each constant enters)."""

    name: str = "reference"
    speed: Mapping[str, float] = field(default_factory=dict)
    """Relative throughput per kind (`KINDS`); a kind not listed runs at 1."""
    cache_bytes: int | None = None
    """The cache a node's working set must fit in; None: no limit."""
    miss_penalty: float = 0.0
    """The slowdown, beyond 1, of a working set far larger than the cache."""
    bandwidth_bytes_per_s: float | None = None
    """Sustained memory bandwidth: a node takes at least its working set over this; None: no floor."""

    @property
    def is_reference(self) -> bool:
        """True when this microarchitecture changes nothing (every speed 1, no cache or bandwidth limit)."""
        return (
            all(v == 1.0 for v in self.speed.values())
            and (self.cache_bytes is None or self.miss_penalty == 0.0)
            and self.bandwidth_bytes_per_s is None
        )

    def speed_of(self, kind: str) -> float:
        """The relative throughput on `kind`."""
        return self.speed.get(kind, 1.0)

    def cache_slowdown(self, working_set_bytes: float) -> float:
        """1 + miss_penalty · max(0, 1 − cache / W): 1 while W fits, up to 1 + miss_penalty as W ≫ cache."""
        if self.cache_bytes is None or working_set_bytes <= self.cache_bytes:
            return 1.0
        return 1.0 + self.miss_penalty * (1.0 - self.cache_bytes / working_set_bytes)

    def floor_seconds(self, working_set_bytes: float) -> float:
        """The least time a node moving `working_set_bytes` takes (0 without a bandwidth limit)."""
        if self.bandwidth_bytes_per_s is None:
            return 0.0
        return working_set_bytes / self.bandwidth_bytes_per_s


REFERENCE = Microarch()
"""The host's proportions, unlimited cache and bandwidth: today's frequency-scaled host time."""


def microarch_from_dict(raw: Any, where: str = "microarch") -> Microarch:
    """A `Microarch` from its JSON form; a MicroarchError names the offending field (`where`.field).

    Keys: `name`, `speed` ({kind: positive number}), `cache_kib` (positive), `miss_penalty` (≥ 0),
    `bandwidth_gb_s` (positive, 10⁹ bytes/s). Every key is optional; an unknown key is an error.
    """
    if not isinstance(raw, Mapping):
        raise MicroarchError(f"{where} must be an object")
    known = {"name", "speed", "cache_kib", "miss_penalty", "bandwidth_gb_s"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MicroarchError(f"{where}.{unknown[0]} is not a field (fields: {', '.join(sorted(known))})")
    speed_raw = raw.get("speed", {})
    if not isinstance(speed_raw, Mapping):
        raise MicroarchError(f"{where}.speed must be an object of kind: number")
    speed: dict[str, float] = {}
    for kind, value in speed_raw.items():
        if kind not in KINDS:
            raise MicroarchError(f"{where}.speed.{kind} is not an operator kind (kinds: {', '.join(KINDS)})")
        speed[kind] = _number(value, f"{where}.speed.{kind}", positive=True)
    cache = raw.get("cache_kib")
    bandwidth = raw.get("bandwidth_gb_s")
    return Microarch(
        name=str(raw.get("name", "custom")),
        speed=speed,
        cache_bytes=None if cache is None else int(_number(cache, f"{where}.cache_kib", True) * 1024),
        miss_penalty=_number(raw.get("miss_penalty", 0.0), f"{where}.miss_penalty", positive=False),
        bandwidth_bytes_per_s=(
            None if bandwidth is None else _number(bandwidth, f"{where}.bandwidth_gb_s", positive=True) * 1e9
        ),
    )


def _number(value: Any, where: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MicroarchError(f"{where} must be a number, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise MicroarchError(f"{where} must be {'positive' if positive else 'zero or more'}, not {value!r}")
    return float(value)


def op_kind(op_type: str, node: GraphNode | None) -> str:
    """The kind of a node: its op type, and for a Conv its kernel and groups (from the graph)."""
    if op_type in ("Conv", "ConvTranspose"):
        if node is None:
            return "dense_conv"
        if node.groups > 1 and node.groups == node.cin:
            return "depthwise_conv"
        if node.groups == 1 and node.kernel == (1, 1) and op_type == "Conv":
            return "pointwise_conv"
        return "dense_conv"
    if op_type in ("MatMul", "Gemm"):
        return "matmul"
    if op_type in ELEMENTWISE_OPS:
        return "elementwise"
    return "other"


@dataclass(frozen=True)
class NodeCost:
    """One node of the host's per-node profile with what the microarchitecture prices it by."""

    name: str
    op_type: str
    kind: str
    host_s: float
    working_set_bytes: float


def node_costs(graph: Graph | None, host_nodes: Sequence[tuple[str, str, float]]) -> list[NodeCost]:
    """The profile's nodes (name, op type, mean host µs) with their kind and working set from `graph`.

    A node the graph does not list as working (a view, a conversion inside the graph) keeps its host time
    as kind `other` with no working set: no cache or bandwidth effect.
    """
    by_name = {n.name: n for n in graph.nodes} if graph is not None else {}
    esize = ELEMENT_BYTES.get(graph.precision, 4) if graph is not None else 4
    costs = []
    for name, op, us in host_nodes:
        node = by_name.get(name)
        ws = (node.weight_elems + node.in_elems + node.out_elems) * esize if node is not None else 0.0
        costs.append(NodeCost(name, op, op_kind(op, node), us * 1e-6, float(ws)))
    return costs


class CostCache:
    """Per-node costs per (model digest, intra-op threads), least recently used first out; thread-safe."""

    def __init__(self, size: int = COST_CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int], list[NodeCost]] = OrderedDict()

    @staticmethod
    def digest(model_bytes: bytes) -> str:
        """The key of a model file: sha256 of its bytes."""
        return hashlib.sha256(model_bytes).hexdigest()

    def get(self, digest: str, threads: int) -> list[NodeCost] | None:
        """The cached costs of a model at `threads`, or None."""
        with self._lock:
            costs = self._entries.get((digest, threads))
            if costs is not None:
                self._entries.move_to_end((digest, threads))
            return costs

    def put(
        self, digest: str, threads: int, model_bytes: bytes, host_nodes: Sequence[tuple[str, str, float]]
    ) -> list[NodeCost]:
        """Read the graph, price the profile's nodes, keep and return them (the first profile wins)."""
        try:
            graph: Graph | None = read_graph(model_bytes)
        except Exception:  # onnx raises its own types; without the graph every node is priced by op type
            graph = None
        costs = node_costs(graph, host_nodes)
        with self._lock:
            kept = self._entries.setdefault((digest, threads), costs)
            self._entries.move_to_end((digest, threads))
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
            return kept

    def clear(self) -> None:
        """Forget every model (tests)."""
        with self._lock:
            self._entries.clear()


COST_CACHE = CostCache()
"""The process's per-node costs: one host profile per model file and thread count."""


class RunPricer:
    """A model's runs on one cluster: a host run's seconds → the phone's seconds (module docstring).

    `scale(host_s, f_khz)` is the cluster's frequency scaling (`Soc.scale` bound to the cluster); it is
    linear in host_s, so g(f) = scale(1, f).
    """

    def __init__(
        self, arch: Microarch, costs: Sequence[NodeCost], scale: Callable[[float, int], float]
    ) -> None:
        self.arch = arch
        self.costs = list(costs)
        self._scale = scale
        self._host_total = sum(c.host_s for c in self.costs)
        # a_i: priced host seconds at ρ·g = 1; m_i: floor seconds; threshold r_i = m_i / a_i, sorted.
        self._a = [c.host_s * arch.cache_slowdown(c.working_set_bytes) / arch.speed_of(c.kind) for c in costs]
        self._m = [arch.floor_seconds(c.working_set_bytes) for c in costs]
        order = sorted(range(len(self._a)), key=lambda i: self._threshold(i))
        self._thresholds = [self._threshold(i) for i in order]
        self._a_prefix = [0.0]
        for i in order:
            self._a_prefix.append(self._a_prefix[-1] + self._a[i])
        self._m_suffix = [0.0] * (len(order) + 1)
        for k in range(len(order) - 1, -1, -1):
            self._m_suffix[k] = self._m_suffix[k + 1] + self._m[order[k]]

    def _threshold(self, i: int) -> float:
        if self._m[i] <= 0.0:
            return 0.0
        return math.inf if self._a[i] <= 0.0 else self._m[i] / self._a[i]

    def _gain(self, host_s: float, f_khz: int) -> float:
        """ρ · g(f): the factor from a node's host time to its compute time on the phone in this run."""
        if self._host_total <= 0.0:
            return 0.0
        return host_s / self._host_total * self._scale(1.0, f_khz)

    def run_seconds(self, host_s: float, f_khz: int) -> float:
        """The phone's time of a run that took `host_s` on the host, at `f_khz` (Σ of the priced nodes)."""
        if self.arch.is_reference or self._host_total <= 0.0:
            return self._scale(host_s, f_khz)
        t = self._gain(host_s, f_khz)
        k = bisect.bisect_right(self._thresholds, t)  # nodes [0, k) compute-bound, [k, n) at their floor
        return t * self._a_prefix[k] + self._m_suffix[k]

    def node_seconds(self, host_s: float, f_khz: int) -> list[float]:
        """Each profiled node's time in that run (graph order); they add up to `run_seconds`."""
        t = self._gain(host_s, f_khz)
        return [max(t * a, m) for a, m in zip(self._a, self._m, strict=True)]


class ModelPricing:
    """How one CPU benchmark prices its runs on its cluster: the pricer, once the model's costs are known.

    With the reference microarchitecture the pricer is there from the start and is the cluster's frequency
    scaling itself. Otherwise it comes from `COST_CACHE` (a model already profiled at this thread count) or,
    the first time, from the host profile the benchmark child measures (`needs_profile`, then `profiled`).
    """

    def __init__(
        self, arch: Microarch, scale: Callable[[float, int], float], model_bytes: bytes, threads: int
    ) -> None:
        self.arch = arch
        self._scale = scale
        self._model_bytes = model_bytes
        self._threads = threads
        self._digest = "" if arch.is_reference else COST_CACHE.digest(model_bytes)
        costs = [] if arch.is_reference else COST_CACHE.get(self._digest, threads)
        self.pricer = None if costs is None else RunPricer(arch, costs, scale)

    @property
    def needs_profile(self) -> bool:
        """True while the model's per-node host profile is still to be measured."""
        return self.pricer is None

    def profiled(self, host_nodes: Sequence[tuple[str, str, float]]) -> None:
        """The child's per-node host profile arrived: cache the model's costs (first time), price by them."""
        if self.pricer is None:
            costs = COST_CACHE.put(self._digest, self._threads, self._model_bytes, host_nodes)
            self.pricer = RunPricer(self.arch, costs, self._scale)
