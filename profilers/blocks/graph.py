"""A small NCHW graph builder that emits ONNX and counts costs from the same walk.

Each family describes its block once, as calls on a builder. :class:`CostTracer` walks that
description with shapes and arithmetic only (no ONNX nodes, no weights: ~20× cheaper, which is what
the predictor's featuriser pays per new config); :class:`GraphBuilder` extends it to also emit the
ONNX nodes and weights. Both record costs through the same tracer code, so the counted costs and the
model stay in step (a seeded test compares the tracer with costs read back from built models).

What is counted (float32 everywhere):
- ``macs``: multiply-accumulates of Conv layers, ``Cout * Hout * Wout * (Cin / groups) * k * k``;
  element-wise ops (activations, Add, Mul, pooling, DepthToSpace) count 0 MACs.
- ``flops``: exactly ``2 * macs``.
- ``params``: weights + biases of Conv layers, slopes of PReLU.
- ``activation_bytes``: bytes of the tensor a layer writes (its output), 4 bytes per element;
  the block total is the sum over layers (the input tensor is not counted).

Determinism: weights come from ``numpy.random.default_rng(seed)`` drawn in layer order; the model
has fixed IR version, opset, producer name/version and no timestamps, so the same description gives
the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
PRODUCER_NAME = "latfarm.blocks"
PRODUCER_VERSION = "1"
WEIGHT_SEED = 20240601
FLOAT_BYTES = 4

Shape = tuple[int, int, int, int]


class LayerCost(NamedTuple):
    """Cost of one graph node: its op, output shape, MACs, FLOPs (2×MACs), params and output bytes, plus
    the geometry an accelerator's kernel choice depends on: the (first) input's shape and, for a Conv,
    its kernel side, stride and groups (1, 1, 1 for element-wise ops).

    A named tuple (immutable, hashable) rather than a frozen dataclass: a config has ~10–20 layers and the
    featuriser counts costs of every new config, where a frozen dataclass's __init__ alone cost ~25 %.
    """

    name: str
    op: str
    output_shape: tuple[int, ...]
    macs: int
    flops: int
    params: int
    activation_bytes: int
    input_shape: tuple[int, ...] = ()
    kernel: int = 1
    stride: int = 1
    groups: int = 1


@dataclass(frozen=True)
class Costs:
    """Totals over a block's layers plus the per-layer table."""

    flops: int
    macs: int
    params: int
    activation_bytes: int
    layers: list[LayerCost] = field(default_factory=list)

    @classmethod
    def from_layers(cls, layers: list[LayerCost]) -> Costs:
        """Sum a layer table into totals."""
        return cls(
            flops=sum(layer.flops for layer in layers),
            macs=sum(layer.macs for layer in layers),
            params=sum(layer.params for layer in layers),
            activation_bytes=sum(layer.activation_bytes for layer in layers),
            layers=list(layers),
        )


def conv_output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a conv with 'same' padding ``kernel // 2``."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


class CostTracer:
    """Shapes and the cost table of a single-input NCHW network, computed without building anything."""

    def __init__(self, name: str, input_shape: Shape) -> None:
        self.name = name
        self._shapes: dict[str, Shape] = {"input": input_shape}
        self.layers: list[LayerCost] = []
        self.input = "input"
        # Running totals: summing the table again in costs() would cost as much as building it.
        self._macs = 0
        self._params = 0
        self._activation_bytes = 0

    def shape(self, tensor: str) -> Shape:
        """The NCHW shape of a tensor produced so far."""
        return self._shapes[tensor]

    # -- ops -----------------------------------------------------------------------------------
    def conv(
        self,
        x: str,
        name: str,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> str:
        """k×k convolution with 'same' padding ``kernel // 2``."""
        n, cin, h, w = self._shapes[x]
        ho, wo = conv_output_size(h, kernel, stride), conv_output_size(w, kernel, stride)
        per_output = (cin // groups) * kernel * kernel
        macs = cout * ho * wo * per_output * n
        params = cout * per_output + (cout if bias else 0)
        return self._record(
            name, "Conv", (n, cout, ho, wo), macs, params, x, kernel=kernel, stride=stride, groups=groups
        )

    def activation(self, x: str, name: str, kind: str) -> str:
        """Element-wise activation: relu, prelu (per-channel slope), leaky_relu, hardswish, sigmoid,
        hardsigmoid."""
        try:
            op = _ACTIVATION_OPS[kind]
        except KeyError:
            raise ValueError(f"unknown activation {kind!r}") from None
        shape = self._shapes[x]
        return self._record(name, op, shape, 0, shape[1] if kind == "prelu" else 0, x)

    def add(self, a: str, b: str, name: str) -> str:
        """Element-wise sum of two tensors of the same shape."""
        if self._shapes[a] != self._shapes[b]:
            raise ValueError(f"Add {name}: shapes {self._shapes[a]} and {self._shapes[b]} differ")
        return self._record(name, "Add", self._shapes[a], 0, 0, a)

    def mul(self, a: str, b: str, name: str) -> str:
        """Element-wise product; ``b`` may broadcast as N×C×1×1 (squeeze-excite scaling)."""
        return self._record(name, "Mul", self._shapes[a], 0, 0, a)

    def global_average_pool(self, x: str, name: str) -> str:
        """N×C×H×W → N×C×1×1."""
        n, c, _, _ = self._shapes[x]
        return self._record(name, "GlobalAveragePool", (n, c, 1, 1), 0, 0, x)

    def depth_to_space(self, x: str, name: str, block: int) -> str:
        """Pixel shuffle (CRD mode, as PyTorch's PixelShuffle): N×C·b²×H×W → N×C×bH×bW."""
        n, c, h, w = self._shapes[x]
        return self._record(name, "DepthToSpace", (n, c // (block * block), h * block, w * block), 0, 0, x)

    # -- output --------------------------------------------------------------------------------
    def costs(self) -> Costs:
        """The cost table of everything added so far."""
        return Costs(2 * self._macs, self._macs, self._params, self._activation_bytes, list(self.layers))

    def _record(
        self,
        name: str,
        op: str,
        shape: Shape,
        macs: int,
        params: int,
        source: str,
        *,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
    ) -> str:
        if name in self._shapes:
            raise ValueError(f"duplicate tensor name {name!r}")
        in_shape = self._shapes[source]
        self._shapes[name] = shape
        n, c, h, w = shape
        out_bytes = n * c * h * w * FLOAT_BYTES
        self.layers.append(
            LayerCost(name, op, shape, macs, 2 * macs, params, out_bytes, in_shape, kernel, stride, groups)
        )
        self._macs += macs
        self._params += params
        self._activation_bytes += out_bytes
        return name


#: ONNX op type of each activation kind (the tracer records it; the builder emits it).
_ACTIVATION_OPS = {
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "hardswish": "HardSwish",
    "sigmoid": "Sigmoid",
    "hardsigmoid": "HardSigmoid",
    "prelu": "PRelu",
}


class GraphBuilder(CostTracer):
    """A :class:`CostTracer` that also emits the ONNX nodes and (``with_weights``) the initializers."""

    def __init__(self, name: str, input_shape: Shape, *, with_weights: bool, seed: int = WEIGHT_SEED) -> None:
        super().__init__(name, input_shape)
        self.with_weights = with_weights
        self._rng = np.random.default_rng(seed)
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []

    # -- ops -----------------------------------------------------------------------------------
    def conv(
        self,
        x: str,
        name: str,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> str:
        """k×k convolution with 'same' padding; weights He-scaled so deep stacks stay finite."""
        cin = self._shapes[x][1]
        weight_shape = (cout, cin // groups, kernel, kernel)
        inputs = [x, f"{name}.weight"]
        if self.with_weights:
            fan_in = (cin // groups) * kernel * kernel
            std = math.sqrt(2.0 / fan_in)
            weight = (self._rng.standard_normal(weight_shape) * std).astype(np.float32)
            self._initializers.append(numpy_helper.from_array(weight, f"{name}.weight"))
        if bias:
            inputs.append(f"{name}.bias")
            if self.with_weights:
                b = (self._rng.standard_normal((cout,)) * 0.01).astype(np.float32)
                self._initializers.append(numpy_helper.from_array(b, f"{name}.bias"))
        pad = kernel // 2
        self._nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [name],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
        )
        return super().conv(x, name, cout, kernel, stride=stride, groups=groups, bias=bias)

    def activation(self, x: str, name: str, kind: str) -> str:
        """Element-wise activation (see :meth:`CostTracer.activation`), emitted as its ONNX op."""
        if kind == "relu":
            node = helper.make_node("Relu", [x], [name], name=name)
        elif kind == "leaky_relu":
            node = helper.make_node("LeakyRelu", [x], [name], name=name, alpha=0.1)
        elif kind == "hardswish":
            node = helper.make_node("HardSwish", [x], [name], name=name)
        elif kind == "sigmoid":
            node = helper.make_node("Sigmoid", [x], [name], name=name)
        elif kind == "hardsigmoid":
            node = helper.make_node("HardSigmoid", [x], [name], name=name, alpha=1.0 / 6.0, beta=0.5)
        elif kind == "prelu":
            if self.with_weights:
                slope = np.full((self._shapes[x][1], 1, 1), 0.25, dtype=np.float32)
                self._initializers.append(numpy_helper.from_array(slope, f"{name}.slope"))
            node = helper.make_node("PRelu", [x, f"{name}.slope"], [name], name=name)
        else:
            raise ValueError(f"unknown activation {kind!r}")
        self._nodes.append(node)
        return super().activation(x, name, kind)

    def add(self, a: str, b: str, name: str) -> str:
        """Element-wise sum of two tensors of the same shape."""
        if self._shapes[a] != self._shapes[b]:
            raise ValueError(f"Add {name}: shapes {self._shapes[a]} and {self._shapes[b]} differ")
        self._nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        return super().add(a, b, name)

    def mul(self, a: str, b: str, name: str) -> str:
        """Element-wise product; ``b`` may broadcast as N×C×1×1 (squeeze-excite scaling)."""
        self._nodes.append(helper.make_node("Mul", [a, b], [name], name=name))
        return super().mul(a, b, name)

    def global_average_pool(self, x: str, name: str) -> str:
        """N×C×H×W → N×C×1×1."""
        self._nodes.append(helper.make_node("GlobalAveragePool", [x], [name], name=name))
        return super().global_average_pool(x, name)

    def depth_to_space(self, x: str, name: str, block: int) -> str:
        """Pixel shuffle (CRD mode, as PyTorch's PixelShuffle): N×C·b²×H×W → N×C×bH×bW."""
        self._nodes.append(
            helper.make_node("DepthToSpace", [x], [name], name=name, blocksize=block, mode="CRD")
        )
        return super().depth_to_space(x, name, block)

    # -- output --------------------------------------------------------------------------------
    def to_bytes(self, output: str) -> bytes:
        """Serialise the graph with ``output`` as its single output (requires ``with_weights``)."""
        if not self.with_weights:
            raise ValueError("GraphBuilder was created without weights; cannot emit a model")
        graph = helper.make_graph(
            self._nodes,
            self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self._shapes["input"]))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(self._shapes[output]))],
            initializer=self._initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER_NAME,
            producer_version=PRODUCER_VERSION,
        )
        model.ir_version = IR_VERSION
        return bytes(model.SerializeToString(deterministic=True))
