"""Invalid configs and unknown families give errors that name what is wrong."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from profilers.blocks import BlockConfigError, get_family

SR = {"scale": 2, "height": 16, "width": 16, "widths": [8, 8]}
CONV = {"kernel": 3, "cin": 4, "cout": 8, "height": 16, "width": 16}
MB = {"cin": 8, "cout": 8, "height": 16, "width": 16}

BAD = [
    ("sr_block", {**SR, "kernel": 4}, "kernel", "odd"),
    ("sr_block", {**SR, "scale": 5}, "scale", ""),
    ("sr_block", {**SR, "widths": [8, 0]}, "widths", "widths[1]"),
    ("sr_block", {**SR, "widths": []}, "widths", ""),
    ("sr_block", {**SR, "widths": [8] * 18}, "widths", ""),
    ("sr_block", {**SR, "widths": [8, 4], "residual": True}, "residual", "widths[-1]"),
    ("sr_block", {**SR, "height": 0}, "height", ""),
    ("sr_block", {**SR, "width": 100_000}, "width", ""),
    ("sr_block", {**SR, "activation": "gelu"}, "activation", ""),
    ("sr_block", {**SR, "depth": 3}, "depth", "Extra"),
    ("conv", {**CONV, "groups": 3}, "groups", "divide cin"),
    ("conv", {**CONV, "cin": 4, "cout": 6, "groups": 4}, "groups", "divide cout"),
    ("conv", {**CONV, "kernel": 2}, "kernel", "odd"),
    ("conv", {**CONV, "cout": 0}, "cout", ""),
    ("mbconv", {**MB, "kernel": 4}, "kernel", ""),
    ("mbconv", {**MB, "stride": 3}, "stride", ""),
    ("mbconv", {**MB, "activation": "swish"}, "activation", ""),
    ("mbconv", {**MB, "expand_ratio": 0}, "expand_ratio", ""),
]


@pytest.mark.parametrize(("family", "data", "field", "text"), BAD)
def test_invalid_config_names_the_field(family: str, data: dict, field: str, text: str) -> None:
    fam = get_family(family)
    with pytest.raises(ValidationError) as info:
        fam.parse(data)
    errors = info.value.errors()
    assert any(err["loc"] and err["loc"][0] == field for err in errors), errors
    assert text in str(info.value)
    with pytest.raises(ValidationError):
        fam.to_onnx(data)


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(BlockConfigError, match=r"'resnet'.*conv, mbconv, sr_block"):
        get_family("resnet")
