"""The batch layer table equals every config's `CostTracer` layers, and the batch checks never pass a config
the pydantic model refuses."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import numpy as np
import pytest
from pydantic import ValidationError

from profilers.blocks import get_family
from profilers.blocks.batch import OPS, ConfigBatch, batch_supported, config_struct, layer_table

#: Wide sampling spaces: every kernel, scale, activation, stride, group and depth the models allow.
SPACES: dict[str, dict[str, Any]] = {
    "sr_block": {
        "scale": {"choices": [2, 3, 4]},
        "height": {"choices": [1, 7, 64, 360, 2048]},
        "width": {"choices": [1, 9, 640, 2048]},
        "kernel": {"choices": [1, 3, 5, 7, 9]},
        "widths": {"length": {"min": 1, "max": 17}, "choices": [1, 3, 8, 12, 16, 24, 32, 48, 64, 512]},
        "activation": {"choices": ["relu", "prelu", "leaky_relu", "hardswish"]},
        "residual": {"choices": [False, True]},
    },
    "conv": {
        "kernel": {"choices": [1, 3, 5, 7, 11]},
        "cin": {"choices": [1, 3, 16, 32, 64, 2048]},
        "cout": {"choices": [1, 16, 32, 96, 2048]},
        "height": {"choices": [1, 7, 28, 56, 2048]},
        "width": {"choices": [1, 5, 28, 2048]},
        "stride": {"choices": [1, 2, 3, 4]},
        "groups": {"choices": [1, -1]},
    },
    "mbconv": {
        "cin": {"choices": [1, 3, 16, 24, 40, 1024]},
        "cout": {"choices": [1, 16, 24, 32, 1024]},
        "height": {"choices": [1, 7, 56, 1024]},
        "width": {"choices": [1, 9, 56, 1024]},
        "expand_ratio": {"choices": [1, 2, 3, 4, 6, 8]},
        "kernel": {"choices": [3, 5, 7]},
        "stride": {"choices": [1, 2]},
        "se": {"choices": [False, True]},
        "activation": {"choices": ["relu", "hswish"]},
    },
}


def random_configs(family: str, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` valid random configs of `family` from its wide space, as JSON-shaped dicts."""
    fam = get_family(family)
    rng = random.Random(seed)
    return [fam.sample(rng, SPACES[family]).model_dump(mode="json") for _ in range(n)]


def _batch(family: str, configs: list[dict[str, Any]]) -> ConfigBatch:
    struct = config_struct(family)
    return ConfigBatch.from_structs(family, [msgspec.convert(c, struct) for c in configs])


@pytest.mark.parametrize("family", sorted(SPACES))
def test_layer_table_equals_the_tracer_layer_by_layer(family: str) -> None:
    fam = get_family(family)
    configs = random_configs(family, 2000, seed=17)
    assert batch_supported(family)
    table = layer_table(_batch(family, configs))
    counts = table.counts()
    for i, config in enumerate(configs):
        layers = fam.costs(config).layers
        assert counts[i] == len(layers)
        rows = range(table.starts[i], table.starts[i] + counts[i])
        for row, layer in zip(rows, layers, strict=True):
            assert table.config[row] == i
            assert OPS[table.op[row]] == layer.op
            shape = (1, int(table.channels[row]), int(table.height[row]), int(table.width[row]))
            assert shape == layer.output_shape
            got = (table.macs[row], table.flops[row], table.params[row], table.activation_bytes[row])
            assert tuple(map(int, got)) == (layer.macs, layer.flops, layer.params, layer.activation_bytes)
            source = (1, int(table.in_channels[row]), int(table.in_height[row]), int(table.in_width[row]))
            assert source == layer.input_shape
            geometry = (int(table.kernel[row]), int(table.stride[row]), int(table.groups[row]))
            assert geometry == (layer.kernel, layer.stride, layer.groups)
    costs = [fam.costs(c) for c in configs]
    assert table.per_config(table.flops).tolist() == [c.flops for c in costs]
    assert table.per_config(table.params).tolist() == [c.params for c in costs]
    assert table.per_config(table.activation_bytes).tolist() == [c.activation_bytes for c in costs]


def _mutations(family: str) -> list[tuple[str, Any]]:
    common = [("height", 0), ("height", 5000), ("width", -1), ("kernel", 2), ("kernel", 13), ("kernel", 4)]
    if family == "sr_block":
        return [
            *common,
            ("widths", []),
            ("widths", [8] * 18),
            ("widths", [8, 0, 8]),
            ("widths", [8, 600]),
            ("widths", [8, 16]),  # with residual true below: last width differs from the head's
            ("scale", 5),
        ]
    if family == "conv":
        return [
            *common,
            ("groups", 3),
            ("groups", 0),
            ("groups", 7),
            ("cin", 0),
            ("cout", 4096),
            ("stride", 5),
        ]
    return [*common, ("expand_ratio", 0), ("expand_ratio", 9), ("cin", 2000), ("cout", 0)]


@pytest.mark.parametrize("family", sorted(SPACES))
def test_configs_the_batch_checks_pass_are_valid(family: str) -> None:
    """Mutated configs: wherever the batch checks see nothing suspect, pydantic accepts the config too."""
    fam = get_family(family)
    rng = random.Random(5)
    configs = random_configs(family, 600, seed=3)
    mutated = []
    for config in configs:
        name, value = rng.choice(_mutations(family))
        changed = {**config, name: value}
        if family == "sr_block" and name == "widths":
            changed["residual"] = rng.random() < 0.5
        mutated.append(changed)
    struct = config_struct(family)
    decodable = []
    for config in mutated:
        try:
            decodable.append((config, msgspec.convert(config, struct)))
        except msgspec.ValidationError:
            continue
    suspect = ConfigBatch.from_structs(family, [s for _, s in decodable]).suspect()
    flagged = 0
    for (config, _), is_suspect in zip(decodable, suspect, strict=True):
        try:
            fam.parse(config)
            valid = True
        except ValidationError:
            valid = False
        assert valid or is_suspect, config
        flagged += int(is_suspect)
    assert flagged > len(decodable) // 2
    assert not ConfigBatch.from_structs(family, [msgspec.convert(c, struct) for c in configs]).suspect().any()


def test_struct_decoding_is_stricter_than_pydantic() -> None:
    """Lax inputs (a string or float for an int) never take the batch path; pydantic decides them."""
    struct = config_struct("sr_block")
    huge = {"height": 2**63}, {"widths": [8, 2**64]}  # beyond int64: pydantic reports the bound instead
    for lax in ({"height": "360"}, {"height": 360.0}, {"residual": 1}, {"extra": 1}, *huge):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"scale": 2, "height": 360, "width": 640, "widths": [8], **lax}, struct)
    decoded = msgspec.convert({"scale": 2, "height": 360, "width": 640, "widths": [8]}, struct)
    assert (decoded.kernel, decoded.activation, decoded.residual) == (3, "relu", False)


def test_an_empty_batch_has_no_layers_and_an_unmirrored_validator_disables_the_batch() -> None:
    empty = ConfigBatch.from_structs("conv", [])
    assert empty.suspect().shape == (0,)
    assert not batch_supported("no_such_family")
    assert np.array_equal(layer_table(_batch("conv", random_configs("conv", 3, 1))).counts(), [1, 1, 1])
