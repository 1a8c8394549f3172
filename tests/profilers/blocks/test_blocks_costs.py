"""Cost counts against hand-computed values and against ONNX shape inference."""

from __future__ import annotations

import math

import onnx
import pytest
from onnx import numpy_helper, shape_inference

from profilers.blocks import get_family

SMALL_CASES = [
    ("sr_block", {"scale": 2, "height": 16, "width": 16, "widths": [8, 4, 8], "residual": True}),
    ("sr_block", {"scale": 3, "height": 8, "width": 12, "kernel": 5, "widths": [4], "activation": "prelu"}),
    ("sr_block", {"scale": 4, "height": 6, "width": 6, "widths": [3, 5, 2], "activation": "hardswish"}),
    ("conv", {"kernel": 3, "cin": 4, "cout": 8, "height": 16, "width": 16, "stride": 2, "groups": 2}),
    ("conv", {"kernel": 5, "cin": 6, "cout": 6, "height": 9, "width": 7, "stride": 3, "groups": 6}),
    ("mbconv", {"cin": 8, "cout": 8, "height": 16, "width": 16, "se": True, "activation": "hswish"}),
    (
        "mbconv",
        {"cin": 8, "cout": 16, "height": 15, "width": 15, "expand_ratio": 1, "kernel": 7, "stride": 2},
    ),
]


def test_conv_costs_match_hand_count() -> None:
    costs = get_family("conv").costs(
        {"kernel": 3, "cin": 4, "cout": 8, "height": 16, "width": 16, "stride": 2, "groups": 2}
    )
    # out 8×8×8; each output sums (4/2)·3·3 products.
    assert costs.macs == 8 * 8 * 8 * 2 * 9 == 9216
    assert costs.flops == 2 * 9216
    assert costs.params == 8 * 2 * 9 + 8
    assert costs.activation_bytes == 8 * 8 * 8 * 4


def test_sr_block_costs_match_hand_count() -> None:
    costs = get_family("sr_block").costs(
        {"scale": 2, "height": 4, "width": 4, "kernel": 3, "widths": [2, 2], "activation": "relu"}
    )
    assert [layer.name for layer in costs.layers] == ["head", "body1.conv", "body1.act", "tail", "upsample"]
    assert [layer.macs for layer in costs.layers] == [2 * 16 * 3 * 9, 2 * 16 * 2 * 9, 0, 12 * 16 * 2 * 9, 0]
    assert costs.macs == 864 + 576 + 3456
    assert costs.flops == 2 * costs.macs
    assert costs.params == (2 * 3 * 9 + 2) + (2 * 2 * 9 + 2) + (12 * 2 * 9 + 12)
    assert costs.activation_bytes == 128 + 128 + 128 + 768 + 768
    assert costs.layers[-1].output_shape == (1, 3, 8, 8)


def test_mbconv_costs_match_hand_count() -> None:
    fam = get_family("mbconv")
    plain = fam.costs({"cin": 4, "cout": 4, "height": 4, "width": 4, "expand_ratio": 2, "kernel": 3})
    assert plain.macs == 8 * 16 * 4 + 8 * 16 * 9 + 4 * 16 * 8
    assert plain.params == (4 * 8 + 8) + (8 * 9 + 8) + (8 * 4 + 4)
    assert plain.activation_bytes == 4 * 512 + 2 * 256
    assert plain.layers[-1].name == "skip"

    with_se = fam.costs({"cin": 4, "cout": 4, "height": 4, "width": 4, "expand_ratio": 2, "se": True})
    # SE squeezes hidden=8 to make_divisible(8 // 4, 8) = 8 channels on a 1×1 map.
    assert with_se.macs - plain.macs == 8 * 8 + 8 * 8
    assert with_se.params - plain.params == 2 * (8 * 8 + 8)

    strided = fam.costs({"cin": 4, "cout": 4, "height": 4, "width": 4, "stride": 2})
    assert "skip" not in [layer.name for layer in strided.layers]


@pytest.mark.parametrize(("family", "data"), SMALL_CASES)
def test_costs_agree_with_onnx_shape_inference(family: str, data: dict) -> None:
    fam = get_family(family)
    costs = fam.costs(data)
    model = shape_inference.infer_shapes(onnx.load_from_string(fam.to_onnx(data)), strict_mode=True)
    shapes = {
        vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        for vi in list(model.graph.value_info) + list(model.graph.output)
    }
    weights = {init.name: numpy_helper.to_array(init).shape for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}

    assert [layer.name for layer in costs.layers] == [node.name for node in model.graph.node]
    for layer in costs.layers:
        node = nodes[layer.name]
        out_shape = shapes[node.output[0]]
        assert layer.output_shape == out_shape
        assert layer.activation_bytes == 4 * math.prod(out_shape)
        if node.op_type == "Conv":
            weight = weights[node.input[1]]
            assert layer.macs == math.prod(out_shape) * math.prod(weight[1:])
        else:
            assert layer.macs == 0
        assert layer.params == sum(math.prod(weights[name]) for name in node.input if name in weights)
    assert costs.params == sum(math.prod(shape) for shape in weights.values())
    assert costs.flops == 2 * costs.macs
