"""The CPU columns of features version 6: roofline and cache-spill ladders and per-kind work, computed by
hand on small blocks; the batch featuriser's twin; their prior terms; a version-6 snapshot's round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest

from profilers.blocks import get_family
from profilers.blocks.graph import Costs, LayerCost
from service.predictors import batch_features
from service.predictors.columns import ROOFLINE_INTENSITIES, SPILL_CACHE_BYTES
from service.predictors.features import (
    CPU_COLUMNS,
    CPU_PRIOR_COLUMNS,
    Featurizer,
    cpu_values,
    discover_kernels,
)
from service.predictors.inference import LatencyModel
from service.predictors.prior import CPU_KERNEL_SHRINKAGE, KERNEL_SHRINKAGE, PhysicsPrior
from service.predictors.snapshot import Snapshot
from service.predictors.training import fit_predictor
from tests.service.predictors.archives import archive_of, assert_predicts_as_served
from tests.service.predictors.synthetic import FAST_PARAMS, FREQUENCIES, sample_configs, synthetic_rows

KIB = 1024


def _cpu(costs: Costs) -> dict[str, float]:
    return dict(zip(CPU_COLUMNS, cpu_values(costs), strict=True))


def test_the_ladders_are_the_documented_ones() -> None:
    assert ROOFLINE_INTENSITIES == (0.25, 1.0, 4.0, 16.0, 64.0)
    assert SPILL_CACHE_BYTES == (32 * KIB, 128 * KIB, 512 * KIB, 2048 * KIB)
    assert all(float(b * 4).is_integer() for b in ROOFLINE_INTENSITIES)  # the roofline sums stay integers
    assert CPU_COLUMNS[:9] == (
        "cpu:roofline/0.25",
        "cpu:roofline/1",
        "cpu:roofline/4",
        "cpu:roofline/16",
        "cpu:roofline/64",
        "cpu:spill/32KiB",
        "cpu:spill/128KiB",
        "cpu:spill/512KiB",
        "cpu:spill/2048KiB",
    )


def test_one_conv_by_hand() -> None:
    """3×3 conv 16 → 32 at 28×28: 3,612,672 MACs; working set 16·784 in + 4,640 weights + 32·784 out
    = 42,272 elements, W = 169,088 bytes: compute-bound below β = 3,612,672 / 169,088 ≈ 21.4, spilling
    caches of 32 and 128 KiB but not 512 KiB."""
    family = get_family("conv")
    got = _cpu(family.costs(family.parse({"kernel": 3, "cin": 16, "cout": 32, "height": 28, "width": 28})))
    macs, w = 3_612_672, 169_088
    assert [got[f"cpu:roofline/{b:g}"] for b in ROOFLINE_INTENSITIES] == [macs, macs, macs, macs, 64 * w]
    assert got["cpu:spill/32KiB"] == macs * ((w - 32 * KIB) / w)
    assert got["cpu:spill/128KiB"] == macs * ((w - 128 * KIB) / w)
    assert got["cpu:spill/512KiB"] == got["cpu:spill/2048KiB"] == 0.0
    assert got["cpu:macs/conv"] == macs and got["cpu:bytes/conv"] == w
    assert got["cpu:macs/pointwise"] == got["cpu:bytes/pointwise"] == 0.0
    assert got["cpu:macs/depthwise"] == got["cpu:bytes/elementwise"] == 0.0


def _layer(
    op: str, c_in: int, c_out: int, side: int, macs: int = 0, params: int = 0, **geometry: int
) -> LayerCost:
    out = (1, c_out, side, side) if op != "GlobalAveragePool" else (1, c_out, 1, 1)
    n_out = c_out * out[2] * out[3]
    return LayerCost(op, op, out, macs, 2 * macs, params, 4 * n_out, (1, c_in, side, side), **geometry)


def test_a_small_block_by_hand() -> None:
    """1×1 conv 8 → 64 at 32², ReLU, depthwise 3×3, squeeze-excite (pool, Mul), residual Add: each kind's
    MACs and bytes, an element-wise layer's β·W in every roofline rung and its elements as its spill work."""
    side, px = 32, 32 * 32
    layers = [
        _layer("Conv", 8, 64, side, macs=64 * px * 8, params=64 * 8 + 64),  # pointwise
        _layer("Relu", 64, 64, side),
        _layer("Conv", 64, 64, side, macs=64 * px * 9, params=64 * 9 + 64, kernel=3, groups=64),  # depthwise
        _layer("GlobalAveragePool", 64, 64, side),
        _layer("Mul", 64, 64, side),
        _layer("Add", 64, 64, side),
    ]
    costs = Costs.from_layers(layers)
    # Working sets in elements: input + weights + output (+ an Add's second operand, a Mul's per-channel one).
    pointwise = 8 * px + 576 + 64 * px
    relu = 64 * px * 2
    depthwise = 64 * px + 640 + 64 * px
    pool = 64 * px + 64
    mul = 64 * px + 64 + 64 * px
    add = 64 * px * 3
    ws = [pointwise, relu, depthwise, pool, mul, add]
    macs = [64 * px * 8, 0, 64 * px * 9, 0, 0, 0]
    got = _cpu(costs)
    for beta in ROOFLINE_INTENSITIES:
        want = sum(max(m, round(4 * beta) * e) for m, e in zip(macs, ws, strict=True))
        assert got[f"cpu:roofline/{beta:g}"] == want
    # β = 0.25: every layer's W/4 = its elements; the convs' MACs are larger; the rest count their elements.
    assert got["cpu:roofline/0.25"] == macs[0] + relu + macs[2] + pool + mul + add
    for cache in SPILL_CACHE_BYTES:
        want = 0.0
        for m, e in zip(macs, ws, strict=True):
            w = 4 * e
            if w > cache:
                want += (m if m else e) * ((w - cache) / w)
        assert got[f"cpu:spill/{cache // KIB}KiB"] == want
    assert got["cpu:spill/2048KiB"] == 0.0  # the largest working set, the Add's, is 768 KiB
    assert got["cpu:spill/512KiB"] > 0.0
    assert got["cpu:macs/pointwise"] == macs[0] and got["cpu:macs/depthwise"] == macs[2]
    assert got["cpu:macs/conv"] == 0.0
    assert got["cpu:bytes/pointwise"] == 4 * pointwise and got["cpu:bytes/depthwise"] == 4 * depthwise
    assert got["cpu:bytes/elementwise"] == 4 * (relu + pool + mul + add)


@pytest.mark.parametrize("family", ["sr_block", "mbconv", "conv"])
def test_the_batch_featuriser_computes_the_cpu_columns_bit_for_bit(family: str) -> None:
    fam, rng = get_family(family), random.Random(6)
    configs = [fam.sample(rng).model_dump(mode="json") for _ in range(400)]
    featurizer = Featurizer(family, ["big"], discover_kernels(family, configs[:20]))
    done, rows, left = batch_features.fresh_rows(featurizer, configs, list(range(len(configs))))
    assert len(done) == len(configs) and not left
    one = np.array([featurizer._config_row(fam.parse(configs[i])) for i in done])
    columns = [featurizer.config_names.index(c) for c in CPU_COLUMNS]
    assert rows[:, columns].tobytes() == one[:, columns].tobytes()
    spill = rows[:, featurizer.config_names.index("cpu:spill/128KiB")]
    assert (spill > 0).any()  # the configs do reach past a cache
    assert rows.tobytes() == one.tobytes()


def test_version_6_adds_the_cpu_columns_and_prior_terms_and_version_5_keeps_its_own() -> None:
    kernels = ("Conv#",)
    v5, v6 = Featurizer("conv", ["big"], kernels, version=5), Featurizer("conv", ["big"], kernels, version=6)
    assert [n for n in v6.names if n not in v5.names] == list(CPU_COLUMNS)
    v5_terms, v6_terms = PhysicsPrior(v5).terms, PhysicsPrior(v6).terms
    assert [t for t in v6_terms if t not in v5_terms] == [
        n for c in CPU_PRIOR_COLUMNS for n in (f"{c}/MHz", c)
    ]
    assert PhysicsPrior(v6).shrunk_from == PhysicsPrior(v5).shrunk_from + 2 * len(CPU_PRIOR_COLUMNS)
    # An accelerator-only predictor keeps the version-5 terms (the trees still see the columns); one with a
    # CPU unit beside the GPU has them.
    gpu_only = Featurizer("conv", ["gpu"], kernels, version=6)
    assert set(CPU_COLUMNS) <= set(gpu_only.names)
    assert PhysicsPrior(gpu_only).terms == PhysicsPrior(Featurizer("conv", ["gpu"], kernels, version=5)).terms
    assert PhysicsPrior(Featurizer("conv", ["big", "gpu"], kernels, version=6)).terms == v6_terms
    # The kernel terms are pulled harder toward 0 beside the CPU terms only.
    assert PhysicsPrior(v6).shrinkage == CPU_KERNEL_SHRINKAGE > KERNEL_SHRINKAGE
    assert PhysicsPrior(v5).shrinkage == PhysicsPrior(gpu_only).shrinkage == KERNEL_SHRINKAGE
    # The generic prior (no kernels) stays the 7 generic terms.
    assert (
        PhysicsPrior(Featurizer("conv", ["big"], version=6)).terms
        == PhysicsPrior(Featurizer("conv", ["big"], version=5)).terms
    )


def test_a_version_6_snapshot_round_trips_bit_for_bit() -> None:
    rows = synthetic_rows(40, seed=7)
    result = fit_predictor(rows, FAST_PARAMS)
    schema = result.feature_schema
    assert schema["features_version"] == 6
    assert set(CPU_COLUMNS) <= set(schema["names"])
    assert [t for t in schema["prior"]["terms"] if t.startswith("cpu:")]
    snapshot = Snapshot.from_bytes(archive_of(result, rows.family))
    assert snapshot.manifest["features_version"] == 6
    served = LatencyModel(schema, result.model, result.model_p10, result.model_p90)
    assert_predicts_as_served(snapshot, served, sample_configs(12, seed=12), FREQUENCIES)


def test_an_accelerator_only_matrix_holds_the_cpu_columns_at_zero() -> None:
    configs = [{"kernel": 3, "cin": 16, "cout": 32, "height": 28, "width": 28}]
    columns = slice(len(Featurizer("conv", ["gpu"], version=5).config_names), None)
    for units, blank in ((["gpu"], True), (["big", "gpu"], False), (["big"], False)):
        featurizer = Featurizer("conv", units)
        rows = featurizer.config_rows(configs)
        assert (rows[:, columns] != 0).any()  # the config rows keep them
        n_config = len(featurizer.config_names)
        x = featurizer.matrix(rows, np.array([600_000]), 1, units[-1], broadcast=True)
        assert ((x[:, columns.start : n_config] == 0).all()) == blank
