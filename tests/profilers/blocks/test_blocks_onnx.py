"""ONNX export: deterministic bytes, valid models, runnable with onnxruntime."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from profilers.blocks import FAMILIES, canonical_json, config_hash, get_family

CASES = [
    (
        "sr_block",
        {"scale": 2, "height": 16, "width": 16, "widths": [8, 4, 8], "residual": True},
        (1, 3, 32, 32),
    ),
    (
        "sr_block",
        {"scale": 3, "height": 10, "width": 14, "widths": [6, 6], "activation": "prelu"},
        (1, 3, 30, 42),
    ),
    (
        "sr_block",
        {"scale": 4, "height": 8, "width": 8, "widths": [4], "activation": "leaky_relu"},
        (1, 3, 32, 32),
    ),
    (
        "conv",
        {"kernel": 3, "cin": 4, "cout": 8, "height": 16, "width": 16, "stride": 2, "groups": 2},
        (1, 8, 8, 8),
    ),
    (
        "mbconv",
        {"cin": 8, "cout": 8, "height": 16, "width": 16, "se": True, "activation": "hswish"},
        (1, 8, 16, 16),
    ),
    ("mbconv", {"cin": 8, "cout": 12, "height": 16, "width": 16, "kernel": 5, "stride": 2}, (1, 12, 8, 8)),
]


def _run(model: bytes) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random(inp.shape, dtype=np.float32)
    return session.run(None, {inp.name: x})[0]


@pytest.mark.parametrize(("family", "data", "out_shape"), CASES)
def test_model_checks_and_runs_with_expected_output_shape(family: str, data: dict, out_shape: tuple) -> None:
    model = get_family(family).to_onnx(data)
    onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    out = _run(model)
    assert out.shape == out_shape
    assert np.isfinite(out).all()


@pytest.mark.parametrize(("family", "data", "out_shape"), CASES[:1] + CASES[3:5])
def test_same_config_gives_same_bytes(family: str, data: dict, out_shape: tuple) -> None:
    fam = get_family(family)
    first = fam.to_onnx(data)
    assert fam.to_onnx(fam.parse(data)) == first
    assert fam.to_onnx(dict(reversed(list(data.items())))) == first


def test_bytes_are_identical_in_a_fresh_process() -> None:
    fam = get_family("mbconv")
    data = {"cin": 8, "cout": 8, "height": 8, "width": 8, "se": True}
    code = (
        "import hashlib, sys; from profilers.blocks import get_family; "
        f"sys.stdout.write(hashlib.sha256(get_family('mbconv').to_onnx({data!r})).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other == hashlib.sha256(fam.to_onnx(data)).hexdigest()


def test_different_configs_give_different_models_and_hashes() -> None:
    fam = get_family("sr_block")
    a = {"scale": 2, "height": 8, "width": 8, "widths": [4, 4]}
    b = {"scale": 2, "height": 8, "width": 8, "widths": [4, 5]}
    assert fam.to_onnx(a) != fam.to_onnx(b)
    assert config_hash("sr_block", a) != config_hash("sr_block", b)


def test_config_hash_is_canonical() -> None:
    explicit = {
        "scale": 2,
        "height": 8,
        "width": 8,
        "kernel": 3,
        "widths": [4],
        "activation": "relu",
        "residual": False,
    }
    implicit = {"widths": [4], "width": 8, "height": 8, "scale": 2}
    cfg = get_family("sr_block").parse(implicit)
    assert canonical_json("sr_block", implicit) == canonical_json("sr_block", explicit)
    assert config_hash("sr_block", implicit) == config_hash("sr_block", cfg)
    assert canonical_json("sr_block", cfg).startswith('{"activation":"relu","height":8')
    expected = hashlib.sha256(("sr_block:" + canonical_json("sr_block", cfg)).encode()).hexdigest()
    assert config_hash("sr_block", cfg) == expected
    # The family is part of the identity.
    conv = {"kernel": 3, "cin": 4, "cout": 4, "height": 8, "width": 8}
    assert config_hash("conv", conv) != hashlib.sha256(canonical_json("conv", conv).encode()).hexdigest()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sampler_draws_valid_distinct_configs(family: str) -> None:
    fam = get_family(family)
    rng = random.Random(7)
    configs = [fam.sample(rng) for _ in range(30)]
    assert all(isinstance(c, fam.config_model) for c in configs)
    assert len({config_hash(family, c) for c in configs}) > 5
    assert fam.max_depth >= 1
    assert set(fam.search_space_example()) <= set(fam.config_model.model_fields)
