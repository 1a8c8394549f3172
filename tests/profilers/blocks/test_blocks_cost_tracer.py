"""The ONNX-free cost path (`fam.costs`, a `CostTracer`) against costs read back from built ONNX models.

Seeded property-style check: for a spread of configs per family (the family's example space and a wider
one), every layer's name, op, output shape, MACs, params and output bytes from the tracer equal the ones
derived from the serialised model (shape inference for shapes, initializers for weights), and so do the
totals.
"""

from __future__ import annotations

import math
import random
from typing import Any

import onnx
import pytest
from onnx import numpy_helper, shape_inference

from profilers.blocks import Costs, get_family

#: Wider sampling spaces than the families' examples, small enough that building 30 models stays fast.
WIDE_SPACES: dict[str, dict[str, Any]] = {
    "sr_block": {
        "scale": {"choices": [2, 3, 4]},
        "height": {"choices": [5, 8, 13, 24]},
        "width": {"choices": [7, 16, 31]},
        "kernel": {"choices": [1, 3, 5, 7]},
        "widths": {"length": {"min": 1, "max": 7}, "choices": [1, 3, 4, 8, 17, 32]},
        "activation": {"choices": ["relu", "prelu", "leaky_relu", "hardswish"]},
        "residual": {"choices": [False, True]},
    },
    "conv": {
        "kernel": {"choices": [1, 3, 5, 7]},
        "cin": {"choices": [3, 8, 12]},
        "cout": {"choices": [4, 12, 24]},
        "height": {"choices": [5, 11, 20]},
        "width": {"choices": [6, 13, 20]},
        "stride": {"choices": [1, 2, 3]},
        "groups": {"choices": [1, -1]},
    },
    "mbconv": {
        "cin": {"choices": [4, 8, 16]},
        "cout": {"choices": [8, 16, 24]},
        "height": {"choices": [7, 14, 15]},
        "width": {"choices": [7, 10, 14]},
        "expand_ratio": {"choices": [1, 3, 6]},
        "kernel": {"choices": [3, 5, 7]},
        "stride": {"choices": [1, 2]},
        "se": {"choices": [False, True]},
        "activation": {"choices": ["relu", "hswish"]},
    },
}


def _costs_from_onnx(model_bytes: bytes) -> list[tuple[str, str, tuple[int, ...], int, int, int]]:
    """(name, op, output shape, MACs, params, output bytes) of every node of a built model."""
    model = shape_inference.infer_shapes(onnx.load_from_string(model_bytes), strict_mode=True)
    shapes = {
        vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        for vi in list(model.graph.value_info) + list(model.graph.output)
    }
    weights = {init.name: numpy_helper.to_array(init).shape for init in model.graph.initializer}
    rows = []
    for node in model.graph.node:
        out = shapes[node.output[0]]
        macs = math.prod(out) * math.prod(weights[node.input[1]][1:]) if node.op_type == "Conv" else 0
        params = sum(math.prod(weights[name]) for name in node.input if name in weights)
        rows.append((node.name, node.op_type, out, macs, params, 4 * math.prod(out)))
    return rows


def _sampled(family: str, seed: int, n: int) -> list[Any]:
    fam = get_family(family)
    rng = random.Random(seed)
    configs = [fam.sample(rng, WIDE_SPACES[family]) for _ in range(n)]
    if family != "sr_block":  # the sr_block example space is 640×360: a few are enough
        configs += [fam.sample(rng) for _ in range(n // 2)]
    else:
        configs += [fam.sample(rng) for _ in range(3)]
    return configs


@pytest.mark.parametrize("family", ["sr_block", "conv", "mbconv"])
def test_tracer_costs_equal_costs_read_from_built_models(family: str) -> None:
    fam = get_family(family)
    configs = _sampled(family, seed=sum(map(ord, family)), n=24)
    for config in configs:
        costs = fam.costs(config)
        expected = _costs_from_onnx(fam.to_onnx(config))
        got = [(c.name, c.op, c.output_shape, c.macs, c.params, c.activation_bytes) for c in costs.layers]
        assert got == expected, config
        assert costs.macs == sum(row[3] for row in expected)
        assert costs.flops == 2 * costs.macs
        assert costs.params == sum(row[4] for row in expected)
        assert costs.activation_bytes == sum(row[5] for row in expected)
        assert all(layer.flops == 2 * layer.macs for layer in costs.layers)
        assert costs == Costs.from_layers(costs.layers)


def test_sampled_spread_covers_the_layer_kinds() -> None:
    """The seeded sample is not degenerate: it exercises every op the tracer knows."""
    ops = {
        layer.op
        for family in ("sr_block", "conv", "mbconv")
        for config in _sampled(family, seed=sum(map(ord, family)), n=24)
        for layer in get_family(family).costs(config).layers
    }
    assert ops >= {"Conv", "Relu", "PRelu", "LeakyRelu", "HardSwish", "HardSigmoid", "Add", "Mul"} | {
        "GlobalAveragePool",
        "DepthToSpace",
    }
