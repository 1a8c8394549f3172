"""Accelerator physics in the featuriser, and the plain XGBoost fitted beside the prior model.

`accelerator_costs` is checked against hand-counted layers; the training run is checked to serve whichever
candidate won its holdout (never one that lost to the plain baseline), and a plain-served predictor to
answer bit for bit through a snapshot.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from profilers.blocks import config_hash, get_family
from service.predictors.features import (
    ACCELERATOR_COLUMNS,
    ACCELERATOR_V5_COLUMNS,
    ACCELERATOR_V5_PRIOR_COLUMNS,
    CONCURRENT_WORKGROUPS,
    Featurizer,
    accelerator_costs,
    accelerator_v5_values,
    conv_variant,
    discover_kernels,
)
from service.predictors.inference import PLAIN_MODEL, PRIOR_MODEL, LatencyModel
from service.predictors.prior import PhysicsPrior, fit_prior_choosing_kernel_terms
from service.predictors.snapshot import Snapshot
from service.predictors.training import TrainingResult, TrainingRows, fit_predictor
from tests.service.predictors.archives import archive_of, assert_predicts_as_served
from tests.service.predictors.synthetic import FAST_PARAMS

CONV = get_family("conv")
KHZ = 600_000


def _costs(**config: int) -> dict[str, float]:
    return accelerator_costs(CONV.costs(CONV.parse(config)))


def test_a_pointwise_conv_is_counted_in_slices_tiles_and_workgroups() -> None:
    # 3 → 8 channels, 1×1, on 5×5: input padded to 1 slice of 4, output 2 slices; 2×2 pixel tiles → 3×3.
    acc = _costs(kernel=1, cin=3, cout=8, height=5, width=5)
    assert set(acc) == set(ACCELERATOR_COLUMNS)
    assert acc["gpu:pointwise#"] == 1 and acc["gpu:general#"] == 0 and acc["gpu:dispatches"] == 1
    assert acc["gpu:in_slices"] == 1 and acc["gpu:out_slices"] == 2
    assert acc["gpu:pointwise_macs"] == acc["gpu:padded_macs"] == 8 * 25 * 4  # c_in padded 3 → 4
    assert acc["gpu:slice_waste"] == pytest.approx(4 / 3)
    assert acc["gpu:invocations"] == 2 * 3 * 3
    assert acc["gpu:workgroups"] == 1  # ⌈3/4⌉·⌈3/4⌉·⌈2/4⌉
    assert acc["gpu:workgroup_waste"] == pytest.approx(64 / 18)
    assert acc["gpu:serial_depth"] == 1 * 4  # one input slice, 4 pixels a tile
    # fp16 texels of 4 channels: input 1 slice × 25 px, weights 2 × 1 × 1 texel-quads, output 2 × 25 px.
    assert acc["gpu:input_bytes"] == 25 * 8 and acc["gpu:output_bytes"] == 2 * 25 * 8
    assert acc["gpu:weight_bytes"] == 2 * 1 * 4 * 8
    assert acc["gpu:intensity"] == pytest.approx(acc["gpu:padded_macs"] / acc["gpu:bytes"])


def test_the_kernel_variant_follows_the_shape() -> None:
    assert conv_variant(1, 1, 16, 32) == "pointwise"
    assert conv_variant(3, 1, 16, 32) == "general"
    assert conv_variant(3, 32, 32, 32) == "depthwise_3x3"
    assert conv_variant(5, 32, 32, 32) == "depthwise_5x5"
    assert conv_variant(7, 32, 32, 32) == "depthwise"
    assert conv_variant(3, 4, 32, 32) == "grouped"
    dw = _costs(kernel=3, cin=32, cout=32, height=14, width=14, stride=2, groups=32)
    assert dw["gpu:depthwise_3x3#"] == 1 and dw["gpu:strided#"] == 1
    assert dw["gpu:depthwise_3x3_macs"] == 32 * 7 * 7 * 9  # one input channel per output channel
    assert dw["gpu:serial_depth"] == 9


def test_waves_grow_with_work_groups_over_the_concurrency_ladder() -> None:
    """A dispatch of W work-groups takes ⌈W/P⌉ waves of its serial loop at each P of the ladder."""
    acc = _costs(kernel=3, cin=64, cout=64, height=56, width=56)
    depth = 9 * 16  # k² · input slices
    workgroups = math.ceil(56 / 4) ** 2 * math.ceil(16 / 4)
    assert acc["gpu:serial_depth"] == depth and acc["gpu:workgroups"] == workgroups
    for p in CONCURRENT_WORKGROUPS:
        assert acc[f"gpu:general_waves/{p}"] == depth * math.ceil(workgroups / p)
        assert acc[f"gpu:pointwise_waves/{p}"] == 0


def test_multi_layer_blocks_sum_their_dispatches() -> None:
    sr = get_family("sr_block")
    config = sr.sample(random.Random(3))
    costs = sr.costs(config)
    acc = accelerator_costs(costs)
    assert acc["gpu:dispatches"] == len(costs.layers)
    convs = sum(acc[f"gpu:{v}#"] for v in ("pointwise", "general", "grouped", "depthwise"))
    convs += acc["gpu:depthwise_3x3#"] + acc["gpu:depthwise_5x5#"]
    assert convs == sum(layer.op == "Conv" for layer in costs.layers)
    assert acc["gpu:elementwise_waves/1"] > 0  # activations and the pixel shuffle are dispatches too


def test_version_3_adds_the_accelerator_columns_and_version_2_keeps_its_layout() -> None:
    v3 = Featurizer("conv", ["gpu"], ("Conv#",), version=3)
    v2 = Featurizer("conv", ["gpu"], ("Conv#",), version=2)
    assert [n for n in v3.names if n not in v2.names] == list(ACCELERATOR_COLUMNS)
    # Version 4 adds the precision columns after them, and nothing else.
    v4 = Featurizer("conv", ["gpu"], ("Conv#",), version=4)
    assert [n for n in v4.names if n not in v3.names] == ["precision=fp32", "precision_bits"]
    # Version 5 adds the quantisation columns after the accelerator ones, and their prior terms.
    v5 = Featurizer("conv", ["gpu"], ("Conv#",), version=5)
    assert [n for n in v5.names if n not in v4.names] == list(ACCELERATOR_V5_COLUMNS)
    v2_terms, v3_terms = PhysicsPrior(v2).terms, PhysicsPrior(v3).terms
    assert v2_terms == [t for t in v3_terms if not t.startswith("gpu:")]
    assert PhysicsPrior(v4).terms == v3_terms
    assert [t for t in PhysicsPrior(v5).terms if t not in v3_terms] == [
        n for c in ACCELERATOR_V5_PRIOR_COLUMNS for n in (f"{c}/MHz", c)
    ]
    config = {"kernel": 3, "cin": 16, "cout": 32, "height": 28, "width": 28}
    rows2, rows3 = v2.config_rows([config]), v3.config_rows([config])
    assert rows3.shape[1] == rows2.shape[1] + len(ACCELERATOR_COLUMNS)
    np.testing.assert_array_equal(rows3[:, : rows2.shape[1]], rows2)


# -- the plain baseline beside the prior model --------------------------------------------------------


def _conv_rows(law: str, n: int = 90, seed: int = 0) -> TrainingRows:
    """Conv configs of one GPU-like device: `gpu` follows an accelerator law (a fixed cost per dispatch,
    then waves of work-groups), `odd` a law of the raw fields that no cost term follows (latency falls
    as the channels grow), so plain trees on the raw fields beat the physics prior there."""
    rng = random.Random(seed)
    configs: dict[str, dict] = {}
    while len(configs) < n:
        side = rng.choice([7, 14, 28, 56])
        cin, cout = rng.choice([8, 16, 32, 64, 128]), rng.choice([8, 16, 32, 64, 128])
        kernel = rng.choice([1, 3])
        config = {"kernel": kernel, "cin": cin, "cout": cout, "height": side, "width": side, "stride": 1}
        configs.setdefault(config_hash("conv", config), config)
    values, ms = list(configs.values()), []
    for c in values:
        if law == "gpu":
            acc = _costs(**c)
            ms.append(0.01 + 2e-6 * acc["gpu:general_waves/16"] + 5e-6 * acc["gpu:pointwise_waves/16"])
        else:
            ms.append(1.0 + 50.0 / (c["cin"] + c["cout"]) + (0.3 if c["height"] == 14 else 0.0))
    hashes = [config_hash("conv", c) for c in values]
    ids = list(range(1, len(values) + 1))
    return TrainingRows("conv", ids, values, hashes, [KHZ] * n, [1] * n, ["gpu"] * n, ms)


@pytest.fixture(scope="module", params=["gpu", "odd"])
def fitted(request: pytest.FixtureRequest) -> tuple[str, TrainingResult]:
    return request.param, fit_predictor(_conv_rows(request.param), {**FAST_PARAMS, "refit": False})


def _figures(m: dict) -> tuple[float, float]:
    return m["within_10"], -m["mape"]


def test_a_predictor_never_serves_a_model_that_lost_to_the_plain_baseline(
    fitted: tuple[str, TrainingResult],
) -> None:
    law, result = fitted
    metrics = result.metrics
    candidates = metrics["candidates"]
    assert set(candidates) == {PRIOR_MODEL, PLAIN_MODEL}
    served, other = metrics["serving"], ({PRIOR_MODEL, PLAIN_MODEL} - {metrics["serving"]}).pop()
    assert _figures(candidates[served]) >= _figures(candidates[other])
    if served == PRIOR_MODEL:
        assert _figures(candidates[PRIOR_MODEL]) >= _figures(candidates[PLAIN_MODEL])
    # The laws pick opposite winners: physics where latency follows it, the plain trees where it does not.
    assert served == {"gpu": PRIOR_MODEL, "odd": PLAIN_MODEL}[law]
    # The figures at the top are the served model's, recomputed here from the bytes it serves with.
    model = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
    assert model.kind == served
    holdout = result.holdout
    configs = {config_hash("conv", c): c for c in _conv_rows(law).configs}
    predicted = model.predict([configs[h["config_hash"]] for h in holdout], [KHZ]).latency_ms
    assert predicted.tolist() == [h["predicted_ms"] for h in holdout]
    measured = np.array([h["measured_ms"] for h in holdout])
    hits = float(np.mean(np.abs(predicted / measured - 1) <= 0.10))
    assert hits == metrics["within_10"] == candidates[served]["within_10"]


def test_a_plain_served_snapshot_predicts_bit_for_bit_offline(fitted: tuple[str, TrainingResult]) -> None:
    law, result = fitted
    snapshot = Snapshot.from_bytes(archive_of(result, "conv"))
    served = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
    assert snapshot.model.kind == served.kind == result.metrics["serving"]
    if law == "odd":
        assert snapshot.model.kind == PLAIN_MODEL
        assert result.feature_schema["model"]["columns"][:5] == ["kernel", "cin", "cout", "height", "width"]
    want = assert_predicts_as_served(snapshot, served, _conv_rows(law, n=20, seed=77).configs, [KHZ])
    assert np.all(want.p10_ms <= want.latency_ms) and np.all(want.latency_ms <= want.p90_ms)


def test_an_unknown_model_kind_is_refused(fitted: tuple[str, TrainingResult]) -> None:
    _, result = fitted
    schema = result.feature_schema | {"model": {"kind": "mystery"}}
    with pytest.raises(ValueError, match="model kind 'mystery'"):
        LatencyModel(schema, result.model, result.model_p10, result.model_p90)


def test_version_5_counts_how_blocking_quantises_a_strided_pointwise_conv() -> None:
    # 12 → 20 channels, 1×1, stride 2 over 14×14: a 7×7 output, 49 pixels.
    family = get_family("conv")
    config = family.parse({"kernel": 1, "cin": 12, "cout": 20, "height": 14, "width": 14, "stride": 2})
    got = dict(zip(ACCELERATOR_V5_COLUMNS, accelerator_v5_values(family.costs(config)), strict=True))
    macs = 49 * 12 * 20
    # Padded to texel slices (20 and 12 are whole slices) at the input resolution: stride² the work.
    assert got["gpu:strided_macs"] == 49 * 20 * 12 * 4
    # Output channels 20 → 24 / 32 / 32, input channels 12 → 16 / 16 / 32.
    assert [got[f"gpu:blocked_macs/{b}"] for b in (8, 16, 32)] == [49 * 24 * 16, 49 * 32 * 16, 49 * 32 * 32]
    assert got["gpu:channel_fill/8"] == macs / (49 * 24 * 16)
    # 5 slices × 4 × 4 pointwise 2×2 tiles = 80 invocations: 80, 96 and 128 lanes at 16, 32 and 64.
    assert [got[f"gpu:simd_fill/{w}"] for w in (16, 32, 64)] == [1.0, 80 / 96, 80 / 128]
    assert got["gpu:pixel_tile_fill"] == 49 / 64
    # Unstrided, the strided work is none; the same conv in a version-4 layout has no such columns.
    plain = family.parse({"kernel": 1, "cin": 12, "cout": 20, "height": 14, "width": 14})
    assert accelerator_v5_values(family.costs(plain))[0] == 0.0
    assert not set(ACCELERATOR_V5_COLUMNS) & set(Featurizer("conv", ["gpu"], version=4).names)


def test_the_version_5_prior_learns_strided_convs_that_pay_for_their_input_resolution() -> None:
    """A GPU whose strided convs run over their input (stride² the output's work, as the iPhone's Metal
    kernels behave): the version-5 prior has the term and fits the law; version 4's cannot."""
    rng = random.Random(5)
    configs: dict[str, dict] = {}
    while len(configs) < 120:
        side, stride = rng.choice([14, 28, 56]), rng.choice([1, 2])
        cin, cout = rng.choice([16, 32, 64, 128]), rng.choice([16, 32, 64, 128])
        config = {"kernel": rng.choice([1, 3]), "cin": cin, "cout": cout, "height": side, "width": side}
        configs.setdefault(config_hash("conv", config | {"stride": stride}), config | {"stride": stride})
    values = list(configs.values())
    macs = np.array([CONV.costs(CONV.parse(c)).macs for c in values], dtype=np.float64)
    strides = np.array([c["stride"] for c in values], dtype=np.float64)
    measured = 0.02 + 4e-9 * macs * strides**2
    kernels = discover_kernels("conv", values)
    fit = np.arange(len(values)) < 90
    errors = {}
    for version in (4, 5):
        featurizer = Featurizer("conv", ["gpu"], kernels, version=version)
        x = featurizer.matrix(
            featurizer.config_rows(values), np.full(len(values), KHZ), 1, "gpu", broadcast=False
        )
        prior = PhysicsPrior(featurizer)
        coefficients, _ = fit_prior_choosing_kernel_terms(prior, x, measured, fit, ~fit, False)
        errors[version] = np.abs(np.exp(prior.log_ms(x[~fit], coefficients)) / measured[~fit] - 1)
    assert np.mean(errors[5] <= 0.05) >= 0.95
    assert np.median(errors[5]) < 0.25 * np.median(errors[4])
