"""The physics prior under the trees: fitted on a known law, stored with the schema, absent from old ones.

Two priors: the generic one (FLOPs, bytes and layer terms; `kernel_prior: false` and features version 1)
and the kernel prior (those terms plus each kernel shape's own cost; the default).
"""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from profilers.blocks import config_hash, get_family
from service.predictors.features import (
    ACCELERATOR_PRIOR_COLUMNS,
    CPU_PRIOR_COLUMNS,
    UNSEEN_KERNEL_COLUMN,
    Featurizer,
    accelerator_prior_columns,
    cpu_prior_columns,
)
from service.predictors.inference import LatencyModel
from service.predictors.prior import (
    PRIOR_TERMS,
    PhysicsPrior,
    fit_prior,
    fit_prior_choosing_kernel_terms,
    out_of_fold_log_ms,
)
from service.predictors.snapshot import Snapshot, read_snapshot
from service.predictors.training import (
    TrainingResult,
    TrainingRows,
    fit_predictor,
)
from tests.service.predictors.archives import archive_of, assert_predicts_as_served
from tests.service.predictors.synthetic import (
    FAST_PARAMS,
    FREQUENCIES,
    law_ms,
    sample_configs,
    synthetic_rows,
)
from tests.service.predictors.test_old_snapshots import FIXTURES


@pytest.fixture(scope="module")
def result() -> TrainingResult:
    return fit_predictor(synthetic_rows(60, seed=7), {**FAST_PARAMS, "kernel_prior": False})


@pytest.fixture(scope="module")
def kernel_result() -> TrainingResult:
    return fit_predictor(synthetic_rows(60, seed=7), FAST_PARAMS)


def _features(featurizer: Featurizer, configs: list[dict], freqs: list[int]) -> np.ndarray:
    rows = featurizer.config_rows(configs)
    return featurizer.matrix(rows, np.asarray(freqs, dtype=np.float64), 1, "big", broadcast=True)


def test_generic_prior_recovers_the_known_law(result: TrainingResult) -> None:
    assert result.feature_schema["kernels"] == []
    prior = result.feature_schema["prior"]
    assert prior["terms"] == list(PRIOR_TERMS)
    coefficients = dict(zip(PRIOR_TERMS, prior["coefficients"], strict=True))
    assert all(c >= 0.0 for c in coefficients.values())
    # law_ms = FLOPs / (4 · kHz) + 0.5 = FLOPs/MHz · 2.5e-4 + 0.5 (1 % noise).
    assert coefficients["flops_per_mhz"] == pytest.approx(2.5e-4, rel=0.03)
    assert coefficients["constant"] == pytest.approx(0.5, rel=0.15)
    # On unseen configs the prior alone is already within ±3 % of the law.
    model = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
    configs = sample_configs(30, seed=99)
    x = _features(model.featurizer, configs, FREQUENCIES)
    law = np.array(
        [
            law_ms(float(row[model.featurizer.names.index("flops")]), f)
            for row, f in zip(x, np.tile(FREQUENCIES, len(configs)), strict=True)
        ]
    )
    prior_ms = np.exp(model.margins(x).astype(np.float64))
    assert np.max(np.abs(prior_ms - law) / law) < 0.03


def test_fit_prior_weighs_rows_by_relative_error() -> None:
    # Two rows of a pure constant-plus-compute law: both are matched exactly, whatever their scale.
    design = np.array([[1.0, 0, 0, 0, 0, 0, 1.0], [1000.0, 0, 0, 0, 0, 0, 1.0]])
    measured = np.array([0.3, 100.2])
    coefficients = fit_prior(design, measured)
    np.testing.assert_allclose(design @ coefficients, measured, rtol=1e-9)


def test_schema_without_prior_predicts_exactly_as_before(result: TrainingResult) -> None:
    old_schema = {k: v for k, v in result.feature_schema.items() if k != "prior"}
    old = LatencyModel(old_schema, result.model, result.model_p10, result.model_p90)
    new = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
    configs = sample_configs(20, seed=11)
    x = _features(old.featurizer, configs, FREQUENCIES)
    # The former computation, spelled out: margin c0 + c1·log(FLOPs/MHz), trees, exp.
    c0, c1 = result.feature_schema["baseline"]
    flops_per_mhz = x[:, old.featurizer.names.index("flops_per_mhz")].astype(np.float64)
    margin = (c0 + c1 * np.log(np.maximum(flops_per_mhz, 1.0))).astype(np.float32)
    booster = xgb.Booster()
    booster.load_model(bytearray(result.model))
    expected = np.exp(booster.inplace_predict(x, base_margin=margin).astype(np.float64))
    np.testing.assert_array_equal(old.predict(configs, FREQUENCIES).latency_ms, expected)
    # With the prior present it is the prior's margin that is used.
    assert not np.array_equal(new.predict(configs, FREQUENCIES).latency_ms, expected)


@pytest.mark.parametrize("with_prior", [True, False])
def test_snapshot_reproduces_the_prior_bit_for_bit(result: TrainingResult, with_prior: bool) -> None:
    schema = dict(result.feature_schema)
    if not with_prior:
        del schema["prior"]
    offline = Snapshot.from_bytes(archive_of(result, "sr_block", schema))
    served = LatencyModel(schema, result.model, result.model_p10, result.model_p90)
    assert_predicts_as_served(offline, served, sample_configs(25, seed=5), FREQUENCIES)


def test_schema_with_other_prior_terms_is_refused(result: TrainingResult) -> None:
    schema = dict(result.feature_schema)
    schema["prior"] = {"terms": ["flops"], "coefficients": [1.0]}
    with pytest.raises(ValueError, match="prior terms"):
        LatencyModel(schema, result.model, result.model_p10, result.model_p90)


def test_kernel_prior_keeps_the_generic_terms_first_and_fits_the_known_law(
    kernel_result: TrainingResult,
) -> None:
    schema = kernel_result.feature_schema
    model = LatencyModel(schema, kernel_result.model, kernel_result.model_p10, kernel_result.model_p90)
    kernels = schema["kernels"]
    assert any(k.startswith("Conv/") for k in kernels) and "Conv#" in kernels and "DepthToSpace" in kernels
    terms = schema["prior"]["terms"]
    assert terms == PhysicsPrior(model.featurizer).terms and terms[: len(PRIOR_TERMS)] == list(PRIOR_TERMS)
    # Then the accelerator terms (features version 3, then 5), the CPU terms (6), then each kernel's pair.
    version = model.featurizer.version
    cpu = cpu_prior_columns(version, model.featurizer.clusters)
    accelerator = accelerator_prior_columns(version) + cpu
    assert cpu == CPU_PRIOR_COLUMNS
    assert accelerator[: len(ACCELERATOR_PRIOR_COLUMNS)] == ACCELERATOR_PRIOR_COLUMNS
    n_acc = 2 * len(accelerator)
    assert terms[len(PRIOR_TERMS) : len(PRIOR_TERMS) + n_acc : 2] == [f"{c}/MHz" for c in accelerator]
    assert terms[len(PRIOR_TERMS) + n_acc :: 2] == [f"{k}/MHz" for k in kernels]
    assert len(terms) == len(PRIOR_TERMS) + n_acc + 2 * len(kernels)
    assert all(c >= 0.0 for c in schema["prior"]["coefficients"])
    configs = sample_configs(30, seed=99)
    x = _features(model.featurizer, configs, FREQUENCIES)
    flops = x[:, model.featurizer.names.index("flops")].astype(np.float64)
    law = np.array([law_ms(f, k) for f, k in zip(flops, np.tile(FREQUENCIES, len(configs)), strict=True)])
    prior_ms = np.exp(model.margins(x).astype(np.float64))
    assert np.median(np.abs(prior_ms - law) / law) < 0.03


def _kernel_law_rows(n_configs: int, seed: int) -> TrainingRows:
    """A device whose 3×3 convs into 12 channels cost 4× per MAC what every other conv costs."""
    family = get_family("sr_block")
    configs = sample_configs(n_configs, seed=seed)
    ids, cs, hashes, freqs, ms = [], [], [], [], []
    for config in configs:
        cycles = 0.0
        for layer in family.costs(config).layers:
            if layer.op == "Conv":
                cycles += layer.macs * (4.0 if layer.output_shape[1] == 12 else 1.0)
        for f in FREQUENCIES:
            ids.append(len(ids) + 1)
            cs.append(config)
            hashes.append(config_hash("sr_block", config))
            freqs.append(f)
            ms.append(cycles / (2.0 * f) + 0.5)
    n = len(ids)
    return TrainingRows("sr_block", ids, cs, hashes, freqs, [1] * n, ["big"] * n, ms)


def test_kernel_prior_learns_what_one_kernel_shape_costs() -> None:
    """FLOPs cannot tell a slow kernel shape from a fast one; the kernel prior learns each shape's cost."""
    rows = _kernel_law_rows(80, seed=3)
    test = _kernel_law_rows(40, seed=1234)
    errors = {}
    for kernel_prior in (True, False):
        fitted = fit_predictor(rows, {**FAST_PARAMS, "kernel_prior": kernel_prior})
        model = LatencyModel(fitted.feature_schema, fitted.model, fitted.model_p10, fitted.model_p90)
        configs = test.configs[:: len(FREQUENCIES)]
        predicted = model.predict(configs, FREQUENCIES).latency_ms
        errors[kernel_prior] = np.abs(predicted / np.asarray(test.median_ms) - 1)
    assert np.mean(errors[True] <= 0.10) >= 0.95
    assert np.median(errors[True]) < 0.5 * np.median(errors[False])


def test_a_version_1_schema_reads_and_predicts_as_the_generic_prior(result: TrainingResult) -> None:
    # A generic (no-kernel) schema as the last version-2 build stored it, relabelled as version 1.
    stored = read_snapshot((FIXTURES / "sr_block_v2_generic.tar").read_bytes())
    current = dict(stored.feature_schema)
    stored_before_kernels = {k: v for k, v in current.items() if k != "kernels"} | {"features_version": 1}
    old = LatencyModel(stored_before_kernels, stored.model, stored.model_p10, stored.model_p90)
    new = LatencyModel(current, stored.model, stored.model_p10, stored.model_p90)
    configs = sample_configs(20, seed=12)
    got, want = old.predict(configs, FREQUENCIES), new.predict(configs, FREQUENCIES)
    for name in ("latency_ms", "p10_ms", "p90_ms", "extrapolated"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    latest = dict(result.feature_schema)
    with pytest.raises(ValueError, match="version 7"):
        LatencyModel(latest | {"features_version": 7}, result.model, result.model_p10, result.model_p90)


def test_a_kernel_shape_never_trained_on_is_flagged_extrapolated(kernel_result: TrainingResult) -> None:
    model = LatencyModel(
        kernel_result.feature_schema, kernel_result.model, kernel_result.model_p10, kernel_result.model_p90
    )
    known = sample_configs(1, seed=0)[0]  # a training config: every kernel listed
    # 40 channels: a width bucket (between 32 and 48) that no training config holds.
    novel = {**known, "widths": [40] * len(known["widths"])}
    rows = model.featurizer.config_rows([known, novel])
    unseen = model.featurizer.config_names.index(UNSEEN_KERNEL_COLUMN)
    assert rows[0, unseen] == 0.0 and rows[1, unseen] > 0.0
    flags = model.predict([known, novel], [FREQUENCIES[0]]).extrapolated
    assert flags.tolist() == [False, True]


def test_the_out_of_fold_prior_of_a_config_is_fitted_without_that_config() -> None:
    """Each fitted row's out-of-fold log ms equals a prior fitted on every other fold's configs (the folds
    group a config's frequencies), and rows outside `fit` are left at 0."""
    configs = sample_configs(12, seed=5)
    featurizer = Featurizer.from_schema(fit_predictor(synthetic_rows(30, seed=5), FAST_PARAMS).feature_schema)
    x = _features(featurizer, configs, FREQUENCIES)
    family = get_family("sr_block")
    noise = np.random.default_rng(5).lognormal(0.0, 0.1, len(x))  # so that configs pull the fit apart
    measured = np.array([law_ms(family.costs(c).flops, f) for c in configs for f in FREQUENCIES]) * noise
    physics = PhysicsPrior(featurizer)
    fit = np.ones(len(x), dtype=bool)
    fit[-len(FREQUENCIES) :] = False  # the last config is not fitted
    oof = out_of_fold_log_ms(physics, x, measured, fit, True, {}, folds=3)
    assert np.all(oof[~fit] == 0.0)
    in_sample, _ = fit_prior_choosing_kernel_terms(physics, x, measured, fit, None, True)
    assert not np.allclose(oof[fit], physics.log_ms(x[fit], in_sample))
    # The first config's fold: configs (in the order np.unique sorts their rows) 0, 3, 6, … of the fitted.
    config_of = np.unique(x[:, : len(featurizer.config_names)], axis=0, return_inverse=True)[1].ravel()
    fitted = np.unique(config_of[fit])
    fold_rows = fit & np.isin(config_of, fitted[0::3])
    alone, _ = fit_prior_choosing_kernel_terms(physics, x, measured, fit & ~fold_rows, None, True)
    assert oof[fold_rows] == pytest.approx(physics.log_ms(x[fold_rows], alone))
