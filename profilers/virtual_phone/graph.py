"""What the accelerator cost model needs to know of an ONNX graph: its nodes' shapes, work and traffic.

`read_graph(model_bytes)` runs ONNX shape inference and returns one `GraphNode` per node that does work on an
accelerator, in graph order, with the facts a mobile GPU/NPU kernel's cost follows: the output shape (NCHW,
padded to 4 dims), channels in and out, kernel size, stride, groups, multiply-accumulates, activation and
weight element counts, and which tensors it reads and writes (for fusion).

Precision is the pushed model's (`model_precision`): float16 initializers → fp16 (onnxruntime's
`convert_float_to_float16`), QuantizeLinear/DequantizeLinear nodes → int8 (`quantize_static`, QDQ), else
fp32. Such conversion nodes vanish on an accelerator — a delegate folds Q/DQ pairs into quantised kernels and
runs an fp16 graph natively — so inside the graph they are *transparent*: their output is an alias of their
input (a DQ of an initializer is a weight). At the graph's edge Q/DQ stay, as `quantize` / `dequantize`
kernels (an int8 unit quantises the float input and dequantises its output). A Cast at the edge (the
fp32 ↔ fp16 conversion of an fp16 model's inputs and outputs) is transparent too: a delegate converts the
input to its own layout at every precision — an fp32 graph's upload and readback are not charged either —
so charging only the fp16 graph's would make half precision pay an edge its fp32 twin does not.

Nodes are visited in topological order (a model's node list need not be sorted; float16 conversion appends
its input casts at the end). Node names are onnxruntime's: the node's name, or `<op_type>_<index>` for an
unnamed node (index over all nodes), so the host's per-node profile and the graph meet by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

CONVERSION_OPS = ("QuantizeLinear", "DequantizeLinear", "Cast")
VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant", "Shape")
"""Ops that move no data on an accelerator (a view of their input, or a constant folded at compile time)."""
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
"""Bytes of one tensor element at each precision."""
FUSABLE_OPS = (
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Add",
    "Mul",
    "Sub",
    "Div",
    "BatchNormalization",
)
ELEMENTWISE_OPS = (*FUSABLE_OPS, "Abs", "Neg", "Sqrt", "Exp", "Pow", "Max", "Min", "Erf", "Elu", "Selu")
"""Ops applying one function per element; a delegate fuses the `FUSABLE_OPS` into the kernel before them."""


@dataclass(frozen=True)
class GraphNode:
    """One node as a kernel sees it (element counts; bytes follow from the precision)."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    """Activation tensors read (weights excluded), after aliasing through transparent conversions."""
    outputs: tuple[str, ...]
    out_shape: tuple[int, int, int, int]
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    macs: int = 0
    in_elems: int = 0
    out_elems: int = 0
    weight_elems: int = 0
    boundary: str = ""
    """For a conversion at the graph's edge: `quantize`, `dequantize` or `convert`; empty otherwise."""


@dataclass
class Graph:
    """The working nodes of a model, its precision and who consumes each tensor."""

    nodes: list[GraphNode]
    precision: str
    consumers: dict[str, list[str]] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)


def node_names(model: onnx.ModelProto) -> list[str]:
    """onnxruntime's name of every node: its own, or `<op_type>_<index>`."""
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]


def model_precision(model: onnx.ModelProto) -> str:
    """`int8` for a QDQ model, `fp16` for one with float16 initializers, else `fp32`."""
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def _nchw(shape: list[int]) -> tuple[int, int, int, int]:
    dims = [d if d > 0 else 1 for d in shape] or [1]
    if len(dims) == 4:
        return dims[0], dims[1], dims[2], dims[3]
    if len(dims) == 3:  # (N, C, L) as C channels of a 1×L map
        return dims[0], dims[1], 1, dims[2]
    if len(dims) == 2:  # (M, K): M rows of K "channels"
        return 1, dims[1], 1, dims[0]
    return 1, math.prod(dims), 1, 1


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort: unknown shapes count as 1
        inferred = model
    shapes: dict[str, list[int]] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else [int(a.i)]
    return default


def read_graph(model_bytes: bytes) -> Graph:
    """The working nodes of the model, aliased through transparent conversions."""
    model = onnx.load_model_from_string(model_bytes)
    names = node_names(model)
    shapes = _shapes(model)
    g = model.graph
    weights = {t.name for t in g.initializer}
    graph_inputs = {i.name for i in g.input} - weights
    graph_outputs = {o.name for o in g.output}
    alias: dict[str, str] = {}

    def real(tensor: str) -> str:
        while tensor in alias:
            tensor = alias[tensor]
        return tensor

    def elems(tensor: str) -> int:
        return math.prod(max(1, d) for d in shapes.get(tensor, [1]))

    nodes: list[GraphNode] = []
    for name, node in _topological(names, list(g.node), weights | graph_inputs):
        ins = [t for t in node.input if t]
        outs = [t for t in node.output if t]
        if node.op_type in ("Constant",):
            weights.update(outs)
            continue
        if node.op_type in CONVERSION_OPS and ins and outs:
            src = ins[0]
            if src in weights:
                weights.update(outs)
                continue
            at_input = real(src) in graph_inputs
            at_output = outs[0] in graph_outputs
            if node.op_type == "Cast" or (not at_input and not at_output):
                alias[outs[0]] = src
                continue
            kind = {"QuantizeLinear": "quantize", "DequantizeLinear": "dequantize"}.get(
                node.op_type, "convert"
            )
            nodes.append(_node(name, node, [real(src)], outs, shapes, elems, 0, boundary=kind))
            continue
        if node.op_type in VIEW_OPS and ins and outs:
            alias[outs[0]] = ins[0]
            continue
        acts = [real(t) for t in ins if t not in weights]
        weight_elems = sum(elems(t) for t in ins if t in weights)
        nodes.append(_node(name, node, acts, outs, shapes, elems, weight_elems))
    graph = Graph(nodes, model_precision(model), outputs={real(o) for o in graph_outputs})
    for n in nodes:
        for t in n.inputs:
            graph.consumers.setdefault(t, []).append(n.name)
    return graph


def _topological(
    names: list[str], nodes: list[onnx.NodeProto], available: set[str]
) -> list[tuple[str, onnx.NodeProto]]:
    """The nodes in an order where each runs after its producers (a model's list need not be sorted)."""
    ready = set(available)
    pending = list(zip(names, nodes, strict=True))
    ordered: list[tuple[str, onnx.NodeProto]] = []
    while pending:
        rest = []
        for name, node in pending:
            if all(not t or t in ready for t in node.input):
                ordered.append((name, node))
                ready.update(node.output)
            else:
                rest.append((name, node))
        if len(rest) == len(pending):  # a dangling input: keep the file's order for the rest
            ordered.extend(rest)
            break
        pending = rest
    return ordered


def _node(
    name: str,
    node: onnx.NodeProto,
    acts: list[str],
    outs: list[str],
    shapes: dict[str, list[int]],
    elems: Callable[[str], int],
    weight_elems: int,
    boundary: str = "",
) -> GraphNode:
    out_shape = _nchw(shapes.get(outs[0], [1])) if outs else (1, 1, 1, 1)
    in_shape = _nchw(shapes.get(acts[0], [1])) if acts else out_shape
    n, cout, h, w = out_shape
    cin = in_shape[1]
    in_elems = sum(elems(t) for t in acts)
    out_elems = sum(elems(t) for t in outs)
    op = node.op_type
    kernel, stride, dilation, groups, macs = (1, 1), 1, 1, 1, out_elems
    if op in ("Conv", "ConvTranspose"):
        wshape = shapes.get(node.input[1], [cout, cin, 1, 1]) if len(node.input) > 1 else [cout, cin, 1, 1]
        ks = _attr(node, "kernel_shape", [int(d) for d in wshape[2:]] or [1, 1])
        kernel = (ks[0], ks[-1])
        stride = _attr(node, "strides", [1])[0]
        dilation = _attr(node, "dilations", [1])[0]
        groups = _attr(node, "group", [1])[0]
        if op == "Conv":
            macs = n * cout * h * w * (cin // max(1, groups)) * kernel[0] * kernel[1]
        else:
            macs = in_elems * (cout // max(1, groups)) * kernel[0] * kernel[1]
    elif op in ("MatMul", "Gemm") and len(node.input) > 1:
        a = shapes.get(node.input[0], [1])
        k = a[-1] if a else 1
        if op == "Gemm" and _attr(node, "transA", [0])[0] == 1 and len(a) >= 2:
            k = a[-2]
        macs = out_elems * max(1, k)
    elif op in ("MaxPool", "AveragePool"):
        ks = _attr(node, "kernel_shape", [1, 1])
        kernel = (ks[0], ks[-1])
        macs = out_elems * kernel[0] * kernel[1]
    elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"):
        macs = in_elems
    elif op in ("Resize", "Upsample"):
        macs = out_elems * 4  # bilinear: four taps per output
    elif op in ("Softmax", "LayerNormalization", "InstanceNormalization"):
        macs = out_elems * 5
    return GraphNode(
        name=name,
        op_type=op,
        inputs=tuple(acts),
        outputs=tuple(outs),
        out_shape=out_shape,
        cin=cin,
        cout=cout,
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        groups=groups,
        macs=int(macs),
        in_elems=in_elems,
        out_elems=out_elems,
        weight_elems=weight_elems,
        boundary=boundary,
    )
