"""Fitting a latency predictor from measurement rows: pure numpy + XGBoost, no database.

Recipe (why each step):
- split by *configuration* (sha256 of the canonical config): a config's rows at several frequencies are
  near-duplicates, so letting one config sit in both train and holdout would flatter the metrics;
- target log(median ms): latency spans orders of magnitude and errors that matter are relative;
- a physics prior — the block as a sum of kernels, each kernel shape's work (conv MACs by GEMM depth and
  width, other ops' bytes, layer counts) over f and as it is, plus 1/f and a constant, mixed with
  non-negative weights fitted for least relative error (`prior.py`) — gives the base margin log(prior) the
  trees correct, so the trees learn a smooth residual and the model extrapolates sanely in size and
  frequency. Kernel-level costs are what published mobile predictors build on: a 12→16-channel conv does
  not cost what a 32→32 one costs per MAC. On virtual-phone data the kernel prior holds 91 % of unseen
  configs within ±10 % from 1,000 measurements, the former FLOPs/bytes/layers prior (`kernel_prior:
  false`, and predictors trained before it) 70 %; the log-log baseline `c0 + c1·log(FLOPs/MHz)` is still
  stored, and serves predictors trained before any prior;
- one predictor spans the device's compute units and precisions (features version 4: unit and precision
  one-hot, bits per value), and each (unit, precision) group may keep prior rates of its own
  (`prior.fit_group_priors`, kept where the validation rows say so): on a synthetic GPU one predictor over
  fp32 and fp16 equals one per precision where both are well measured and, where fp16 is measured for 16
  of 40 configs, is as close (1.0 % vs 1.2 % MAPE); with 6 fp16 configs, too few for a predictor of their
  own, it holds 99 % of unseen configs within ±10 % (bench/bench_precision_features.py);
- XGBoost with early stopping on a validation split of the training configs, fitted for least *absolute*
  log error (`reg:absoluteerror`, the median): a host hiccup makes a few measurements far slower, never
  faster, and squared error lets those drag every prediction up (on virtual-phone data the L1 model holds
  89 % of unseen configs within ±10 %, the L2 one 84 %); then p10/p90 models with `reg:quantileerror` on the
  same features for the uncertainty band;
- in the same run, on the same split, a plain XGBoost on the raw config fields and run conditions (no
  prior, no derived costs) is fitted too, and the holdout decides which serves (`metrics["serving"]`,
  both candidates' figures in `metrics["candidates"]`): the physics prior only serves where it beats the
  plain trees (ties go to the prior), so a family or device whose physics the prior misses is never served
  worse than a plain model;
- with peers (`fit_predictor(..., peers=...)`, transfer.py) a third candidate, the transfer trees over the
  features and the peers' predicted log latencies, is fitted on the same split; `metrics["transfer"]` names
  the peers (device, predictor id, version) and the margin it chose;
- which candidate serves: the holdout's figures decide, except in a transfer training (or with `selection:
  "cv"`) with fewer than `CV_BELOW_CONFIGS` configs, where a 10-config holdout is too noisy to choose on
  between the device's own models and the peers': then each candidate's median model is grown again
  (same rounds, same prior choices) on `CV_FOLDS` folds of the training and validation configs, and its
  out-of-fold predictions, pooled with its holdout predictions, decide (`metrics["selection"]`);
- metrics on the holdout configs: RMSE (ms), MAPE, share within ±5 / ±10 %, Spearman ρ, also per frequency.
"""

from __future__ import annotations

import hashlib
import platform
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy
import xgboost as xgb
from scipy.stats import spearmanr

from service.predictors.features import (
    FEATURES_VERSION,
    LEGACY_PRECISION,
    FeatureError,
    Featurizer,
    discover_kernels,
)
from service.predictors.inference import (
    PLAIN_MODEL,
    PRIOR_MODEL,
    TRANSFER_MODEL,
    LatencyModel,
    PeerModel,
    peer_log_latencies,
    transfer_inputs,
    transfer_margin,
)
from service.predictors.prior import (
    PhysicsPrior,
    fit_group_priors,
    fit_prior_choosing_kernel_terms,
    out_of_fold_log_ms,
    prior_entry,
)
from service.predictors.transfer import fit_margin

#: Defaults of `params`; a request may override any of them.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 800,
    # Shallow trees at a brisker rate: with the physics prior as base margin the residual is smooth, and
    # depth 4 / 0.1 beat depth 6 / 0.05 on measured data with fewer, cheaper trees to serve.
    "learning_rate": 0.1,
    "max_depth": 4,
    "min_child_weight": 1.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "reg_lambda": 1.0,
    "early_stopping_rounds": 50,
    # After scoring the holdout, grow the served models again on every config (holdout included).
    "refit": True,
    # The prior as a sum of per-kernel-shape costs (features version 2); false: the 7-term FLOPs/bytes prior.
    "kernel_prior": True,
    "holdout_fraction": 0.2,
    "validation_fraction": 0.15,
    "seed": 0,
    # How the serving candidate is chosen: "holdout"; "cv" (below `CV_BELOW_CONFIGS` configs, k-fold out-of-
    # fold predictions pooled with the holdout's); "auto": "cv" for a transfer training, else "holdout" —
    # the folds grow every candidate's median model five times more, 2-3x the time of a small training,
    # which buys little where the two candidates are the device's own prior and plain trees.
    "selection": "auto",
}

#: Threads of one XGBoost fit (see `_xgb_params`).
TRAIN_THREADS = 1

#: Fewest distinct configurations: at least one each for holdout and validation, the rest to train on.
MIN_CONFIGS = 5

#: Holdout rows kept with a predictor for the dashboard's predicted-vs-measured plot.
MAX_HOLDOUT_ROWS = 5000

#: Below this many distinct configs the candidates are chosen by cross-validation, not by the holdout alone.
CV_BELOW_CONFIGS = 200
CV_FOLDS = 5


class TrainingError(ValueError):
    """Training cannot proceed; the message says what to do about it."""


@dataclass(frozen=True)
class TrainingRows:
    """Measurement rows of one family (parallel sequences). `clusters` holds each row's compute unit;
    `precisions` each row's precision (empty: every row fp32, as all data before precisions was)."""

    family: str
    ids: Sequence[int]
    configs: Sequence[Mapping[str, Any]]
    config_hashes: Sequence[str]
    frequencies_khz: Sequence[int]
    threads: Sequence[int]
    clusters: Sequence[str]
    median_ms: Sequence[float]
    precisions: Sequence[str] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def precision_of_rows(self) -> list[str]:
        """Each row's precision (fp32 for all when none were given)."""
        return list(self.precisions) if self.precisions else [LEGACY_PRECISION] * len(self.ids)

    def data_hash(self) -> str:
        """sha256 over the rows (sorted by id): two predictors with the same hash saw the same data."""
        digest = hashlib.sha256()
        order = sorted(range(len(self.ids)), key=lambda i: self.ids[i])
        precisions = self.precision_of_rows()
        for i in order:
            # An fp32 row hashes as rows did before precisions: the same data keeps its hash.
            precision = "" if precisions[i] == LEGACY_PRECISION else f",{precisions[i]}"
            line = (
                f"{self.ids[i]},{self.config_hashes[i]},{self.clusters[i]},{self.frequencies_khz[i]},"
                f"{self.threads[i]},{float(self.median_ms[i])!r}{precision}\n"
            )
            digest.update(line.encode())
        return digest.hexdigest()


@dataclass
class TrainingResult:
    """Everything a predictor row stores, plus the split for inspection."""

    model: bytes
    model_p10: bytes
    model_p90: bytes
    feature_schema: dict[str, Any]
    metrics: dict[str, Any]
    holdout: list[dict[str, Any]]
    training_data_hash: str
    row_count: int
    library_versions: dict[str, str]
    params: dict[str, Any]
    train_config_hashes: set[str] = field(default_factory=set)
    validation_config_hashes: set[str] = field(default_factory=set)
    holdout_config_hashes: set[str] = field(default_factory=set)
    #: The peers a served transfer model predicts with (stored packed with it); empty for any other kind.
    peers: list[PeerModel] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    """Versions that shape a model's numbers (stored with each predictor and snapshot)."""
    return {
        "xgboost": xgb.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "features": str(FEATURES_VERSION),
    }


def accuracy_metrics(measured_ms: np.ndarray, predicted_ms: np.ndarray) -> dict[str, float | int]:
    """RMSE (ms), MAPE (%), share within ±5 % and ±10 %, Spearman ρ and the row count."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    predicted = np.asarray(predicted_ms, dtype=np.float64)
    rel = np.abs(predicted - measured) / measured
    if len(measured) > 1 and np.ptp(measured) > 0 and np.ptp(predicted) > 0:
        rho = float(spearmanr(measured, predicted).statistic)
    else:
        rho = float("nan")
    return {
        "rows": len(measured),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "mape": float(100.0 * np.mean(rel)),
        "within_5": float(np.mean(rel <= 0.05)),
        "within_10": float(np.mean(rel <= 0.10)),
        # NaN is not JSON: a constant series has no rank correlation.
        "spearman": rho if np.isfinite(rho) else None,  # type: ignore[dict-item]
    }


def _split_configs(
    hashes: Sequence[str], holdout_fraction: float, validation_fraction: float, seed: int
) -> tuple[set[str], set[str], set[str]]:
    unique = sorted(set(hashes))
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    n_hold = max(1, round(holdout_fraction * len(unique)))
    n_val = max(1, round(validation_fraction * len(unique)))
    if len(unique) - n_hold - n_val < 3:
        raise TrainingError(
            f"{len(unique)} distinct configs leave fewer than 3 to train on after holdout "
            f"({n_hold}) and validation ({n_val}); measure more configs or lower the fractions"
        )
    holdout = set(order[:n_hold])
    validation = set(order[n_hold : n_hold + n_val])
    return set(order[n_hold + n_val :]), validation, holdout


def _xgb_params(params: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "eta": params["learning_rate"],
        "max_depth": int(params["max_depth"]),
        "min_child_weight": params["min_child_weight"],
        "subsample": params["subsample"],
        "colsample_bytree": params["colsample_bytree"],
        "lambda": params["reg_lambda"],
        "seed": int(params["seed"]),
        "tree_method": "hist",
        # One thread, as serving: these matrices are small, and on a shared 2-core host (load ~10) two
        # OpenMP threads made a round ~10× slower (4 ms vs 43 ms, 1,350 rows × 30 columns).
        "nthread": TRAIN_THREADS,
        **extra,
    }


def _boost(
    params: Mapping[str, Any], dtrain: xgb.DMatrix, dval: xgb.DMatrix, **objective: Any
) -> tuple[bytes, int]:
    booster = xgb.train(
        _xgb_params(params, **objective),
        dtrain,
        num_boost_round=int(params["n_estimators"]),
        evals=[(dval, "validation")],
        early_stopping_rounds=int(params["early_stopping_rounds"]),
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    # Keep only the trees up to the best round, so every loader predicts with exactly those.
    return bytes(booster[: best + 1].save_raw("ubj")), best + 1


_OBJECTIVES: tuple[dict[str, Any], ...] = (
    {"objective": "reg:absoluteerror"},
    {"objective": "reg:quantileerror", "quantile_alpha": 0.1},
    {"objective": "reg:quantileerror", "quantile_alpha": 0.9},
)
#: The plain candidate's median model is the textbook one, squared log error: it is what "a plain XGBoost on
#: the raw fields" means, and without the absolute loss's per-round leaf refresh it costs a tenth a round
#: (it may take hundreds of rounds: nothing under it carries the scale).
_PLAIN_OBJECTIVES = ({"objective": "reg:squarederror"}, *_OBJECTIVES[1:])


def _fit_models(
    featurizer: Featurizer,
    rows: TrainingRows,
    x: np.ndarray,
    measured: np.ndarray,
    fit: np.ndarray,
    params: Mapping[str, Any],
    *,
    kind: str = PRIOR_MODEL,
    objectives: Sequence[int] = (0, 1, 2),
    validation: np.ndarray | None = None,
    rounds: Sequence[int] | None = None,
    kernel_terms: bool | None = None,
    prior: np.ndarray | None = None,
    condition_priors: Mapping[str, bool] | None = None,
    peer_logs: np.ndarray | None = None,
    transfer: Mapping[str, Any] | None = None,
) -> tuple[dict[int, bytes], dict[str, Any], dict[int, int]]:
    """Models of `kind` and their feature schema, fitted on the rows where `fit` is true.

    `objectives` index `_OBJECTIVES` (median, p10, p90); the answer maps each to its model bytes and
    rounds. Early stopping on the `validation` rows picks each model's rounds; a refit passes `rounds`
    (indexed like `_OBJECTIVES`) instead. A plain model sees only `Featurizer.plain_columns`, with the
    median log latency of the fitted rows as its constant margin. `kernel_terms` says whether the prior
    keeps its per-kernel-shape terms (None: the validation rows decide, see
    `prior.fit_prior_choosing_kernel_terms`); a given `prior` (coefficients) is stored as it is instead.
    `condition_priors` says likewise which (unit, precision) groups a prior fitted here gives coefficients of
    their own, and whether each keeps its kernel terms (None: the validation rows decide, see
    `prior.fit_group_priors`). A transfer model takes its peers' log latencies of the rows (`peer_logs`)
    and its model entry (`transfer`: peers, own top clock, and the margin once chosen, see
    `transfer.choose_margin`).
    """
    y = np.log(measured)
    z = featurizer.baseline_input(x)
    design = np.column_stack([np.ones(int(fit.sum())), z[fit]])
    (c0, c1), *_ = np.linalg.lstsq(design, y[fit], rcond=None)
    physics = PhysicsPrior(featurizer)
    kept: bool | None = None  # whether the kernel terms were kept, when the prior is fitted here
    groups: dict[str, np.ndarray] = {}
    group_kernels: dict[str, bool] = {}
    if prior is None:
        prior, kept = fit_prior_choosing_kernel_terms(physics, x, measured, fit, validation, kernel_terms)
        groups, group_kernels = fit_group_priors(
            physics, x, measured, fit, validation, prior, condition_priors
        )
    served: dict[str, Any] = {"kind": kind}
    if kind == PLAIN_MODEL:
        columns = featurizer.plain_columns()
        trees_in = x[:, columns]
        base = float(np.float32(np.median(y[fit])))
        margin = np.full(len(y), base, dtype=np.float32)
        served |= {"columns": [featurizer.names[c] for c in columns], "margin": base}
    elif kind == TRANSFER_MODEL:
        assert peer_logs is not None and transfer is not None
        own = physics.log_ms(x, prior, groups)
        # The map is fitted on the prior's out-of-fold log ms (each refit fits its own on its rows).
        assert kept is not None  # a transfer model's prior is always fitted here
        held_out = out_of_fold_log_ms(physics, x, measured, fit, kept, group_kernels)
        served |= {**transfer, **fit_margin(y, held_out, peer_logs, fit)}
        trees_in = transfer_inputs(x, own, peer_logs)
        margin = transfer_margin(served, own, peer_logs)
    else:
        trees_in = x
        margin = physics.log_ms(x, prior, groups).astype(np.float32)
    dfit = xgb.DMatrix(trees_in[fit], label=y[fit], base_margin=margin[fit])
    dval = None
    if rounds is None:
        assert validation is not None
        dval = xgb.DMatrix(trees_in[validation], label=y[validation], base_margin=margin[validation])
    models: dict[int, bytes] = {}
    used: dict[int, int] = {}
    losses = _PLAIN_OBJECTIVES if kind == PLAIN_MODEL else _OBJECTIVES
    for i in objectives:
        if dval is not None:
            models[i], used[i] = _boost(params, dfit, dval, **losses[i])
        else:
            assert rounds is not None
            booster = xgb.train(_xgb_params(params, **losses[i]), dfit, num_boost_round=int(rounds[i]))
            models[i], used[i] = bytes(booster.save_raw("ubj")), int(rounds[i])
    x_fit = x[fit]
    schema = {
        **featurizer.to_schema(),
        "baseline": [float(c0), float(c1)],
        "prior": prior_entry(physics, prior, kept, groups, group_kernels),
        "model": served,
        "ranges": {"min": x_fit.min(axis=0).tolist(), "max": x_fit.max(axis=0).tolist()},
        "frequencies_khz": sorted({int(f) for f in np.asarray(rows.frequencies_khz)[fit]}),
        "default_cluster": Counter(rows.clusters).most_common(1)[0][0],
        "default_precision": Counter(rows.precision_of_rows()).most_common(1)[0][0],
        "default_threads": int(Counter(rows.threads).most_common(1)[0][0]),
    }
    return models, schema, used


def _beats(candidate: Mapping[str, Any], incumbent: Mapping[str, Any]) -> bool:
    """Whether `candidate`'s holdout figures beat `incumbent`'s: more within ±10 %, then lower MAPE."""
    return (candidate["within_10"], -candidate["mape"]) > (incumbent["within_10"], -incumbent["mape"])


def choose_candidate(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """The candidate that serves: the prior's unless another beats it (`_beats`), the best of those; a tie
    keeps the earlier (prior, then plain, then transfer)."""
    best = PRIOR_MODEL
    for kind in (PLAIN_MODEL, TRANSFER_MODEL):
        if kind in scores and _beats(scores[kind], scores[best]):
            best = kind
    return best


def _cross_validated(
    featurizer: Featurizer,
    rows: TrainingRows,
    x: np.ndarray,
    measured: np.ndarray,
    is_hold: np.ndarray,
    held: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    refits: Mapping[str, tuple[int, Mapping[str, Any]]],
    peers: Sequence[PeerModel],
) -> dict[str, dict[str, float | int]]:
    """Each candidate's figures over every config: out-of-fold predictions on the training and validation
    configs (its median model grown again on the other folds with its rounds and prior choices, no early
    stopping on the fold) pooled with its holdout predictions `held`. `refits`: kind → (median rounds,
    `_fit_models` arguments)."""
    hashes = np.asarray(rows.config_hashes)
    pool = sorted(set(hashes[~is_hold]))
    order = [pool[i] for i in np.random.default_rng(int(params["seed"]) + 1).permutation(len(pool))]
    folds = [set(order[k::CV_FOLDS]) for k in range(CV_FOLDS) if order[k::CV_FOLDS]]
    scores = {}
    for kind, (median_rounds, arguments) in refits.items():
        out_of_fold = np.empty(len(rows))
        for fold in folds:
            test = np.isin(hashes, list(fold))
            fit = ~is_hold & ~test
            models, schema, _ = _fit_models(
                featurizer,
                rows,
                x,
                measured,
                fit,
                params,
                kind=kind,
                objectives=(0,),
                rounds=[median_rounds] * 3,
                **arguments,
            )
            peers_logs = arguments.get("peer_logs")
            model = LatencyModel(schema, models[0], models[0], models[0], peers)
            out_of_fold[test] = model.predict_matrix(
                x[test], None if peers_logs is None else peers_logs[test]
            ).latency_ms
        out_of_fold[is_hold] = held[kind]
        scores[kind] = accuracy_metrics(measured, out_of_fold)
    return scores


def fit_predictor(
    rows: TrainingRows,
    params: Mapping[str, Any] | None = None,
    *,
    min_rows: int = 40,
    peers: Sequence[PeerModel] = (),
) -> TrainingResult:
    """Train the median and quantile models on `rows` (with `peers`, a transfer candidate too); raises
    TrainingError with what to do when it can't."""
    merged = {**DEFAULT_PARAMS, **(params or {})}
    if len(rows) < min_rows:
        raise TrainingError(
            f"{len(rows)} valid measurements match; at least {min_rows} are needed "
            f"({min_rows - len(rows)} more) — run a profiling job (POST /v1/jobs) for this device and family"
        )
    n_configs = len(set(rows.config_hashes))
    if n_configs < MIN_CONFIGS:
        raise TrainingError(
            f"the measurements cover {n_configs} distinct configs; at least {MIN_CONFIGS} are needed "
            "so that whole configs can be held out"
        )
    train_h, val_h, hold_h = _split_configs(
        rows.config_hashes,
        float(merged["holdout_fraction"]),
        float(merged["validation_fraction"]),
        int(merged["seed"]),
    )

    # Featurise each distinct config once, then expand to its rows.
    first_index: dict[str, int] = {}
    for i, h in enumerate(rows.config_hashes):
        first_index.setdefault(h, i)
    unique_hashes = list(first_index)
    unique_configs = [rows.configs[first_index[h]] for h in unique_hashes]
    kernels = discover_kernels(rows.family, unique_configs) if merged["kernel_prior"] else ()
    precisions = rows.precision_of_rows()
    featurizer = Featurizer(
        rows.family, sorted(set(rows.clusters)), kernels, precisions=tuple(set(precisions))
    )
    try:
        config_rows = featurizer.config_rows(unique_configs)
    except FeatureError as exc:
        bad = rows.ids[first_index[unique_hashes[exc.index]]]
        raise TrainingError(
            f"measurement {bad} holds a config that is not a valid {rows.family}: {exc.msg}"
        ) from None
    position = {h: k for k, h in enumerate(unique_hashes)}
    row_of = np.fromiter((position[h] for h in rows.config_hashes), dtype=np.int64, count=len(rows))
    x = featurizer.matrix(
        config_rows[row_of],
        np.asarray(rows.frequencies_khz, dtype=np.float64),
        np.asarray(rows.threads, dtype=np.float64),
        np.asarray(rows.clusters),
        broadcast=False,
        precision=np.asarray(precisions),
    )
    measured = np.asarray(rows.median_ms, dtype=np.float64)
    if not np.all(measured > 0):
        raise TrainingError("every median_ms must be positive to take its logarithm")

    hashes = np.asarray(rows.config_hashes)
    is_train = np.isin(hashes, list(train_h))
    is_val = np.isin(hashes, list(val_h))
    is_hold = np.isin(hashes, list(hold_h))

    fitted, schema, rounds = _fit_models(featurizer, rows, x, measured, is_train, merged, validation=is_val)
    freqs = np.asarray(rows.frequencies_khz, dtype=np.int64)
    hold_measured = measured[is_hold]
    peer_logs: np.ndarray | None = None
    transfer: dict[str, Any] | None = None
    if peers:
        own_top = float(freqs.max())
        peer_logs = peer_log_latencies(
            peers, own_top, unique_configs, row_of, freqs.astype(np.float64), rows.clusters, precisions
        )
        transfer = {"peers": [p.provenance() for p in peers], "own_top_khz": own_top}

    # Score the holdout through the very object the server and snapshots use, for every candidate.
    predicted = LatencyModel(schema, fitted[0], fitted[1], fitted[2]).predict_matrix(x[is_hold]).latency_ms
    candidates = {PRIOR_MODEL: accuracy_metrics(hold_measured, predicted)}
    held = {PRIOR_MODEL: predicted}
    prior = np.asarray(schema["prior"]["coefficients"])  # the plain trees do not use it; stored as fitted
    refits: dict[str, dict[str, Any]] = {
        PRIOR_MODEL: {
            "kernel_terms": schema["prior"].get("kernel_terms"),
            "condition_priors": schema["prior"].get("group_kernel_terms", {}),
        },
        PLAIN_MODEL: {"prior": prior},
    }
    plain, plain_schema, plain_rounds = _fit_models(
        featurizer,
        rows,
        x,
        measured,
        is_train,
        merged,
        kind=PLAIN_MODEL,
        objectives=(0,),
        validation=is_val,
        prior=prior,
    )
    plain_predicted = LatencyModel(plain_schema, plain[0], plain[0], plain[0]).predict_matrix(x[is_hold])
    candidates[PLAIN_MODEL] = accuracy_metrics(hold_measured, plain_predicted.latency_ms)
    held[PLAIN_MODEL] = plain_predicted.latency_ms
    medians = {PRIOR_MODEL: (fitted, rounds), PLAIN_MODEL: (plain, plain_rounds)}
    if peer_logs is not None and transfer is not None:
        moved, moved_schema, moved_rounds = _fit_models(
            featurizer,
            rows,
            x,
            measured,
            is_train,
            merged,
            kind=TRANSFER_MODEL,
            objectives=(0,),
            validation=is_val,
            peer_logs=peer_logs,
            transfer=transfer,
        )
        transfer = {**transfer, "margin": moved_schema["model"]["margin"]}
        moved_model = LatencyModel(moved_schema, moved[0], moved[0], moved[0], peers)
        held[TRANSFER_MODEL] = moved_model.predict_matrix(x[is_hold], peer_logs[is_hold]).latency_ms
        candidates[TRANSFER_MODEL] = accuracy_metrics(hold_measured, held[TRANSFER_MODEL])
        medians[TRANSFER_MODEL] = (moved, moved_rounds)
        refits[TRANSFER_MODEL] = {**refits[PRIOR_MODEL], "peer_logs": peer_logs, "transfer": transfer}

    selection: dict[str, Any] = {"by": "holdout", "scores": candidates}
    by_folds = merged["selection"] == "cv" or (merged["selection"] == "auto" and TRANSFER_MODEL in candidates)
    if by_folds and len(train_h) + len(val_h) + len(hold_h) < CV_BELOW_CONFIGS:
        scores = _cross_validated(
            featurizer,
            rows,
            x,
            measured,
            is_hold,
            held,
            merged,
            {kind: (medians[kind][1][0], refits[kind]) for kind in candidates},
            peers,
        )
        selection = {"by": f"{CV_FOLDS}-fold cross-validation + holdout", "scores": scores}
    kind = choose_candidate(selection["scores"])
    if kind != PRIOR_MODEL:
        quantiles, schema, quantile_rounds = _fit_models(
            featurizer,
            rows,
            x,
            measured,
            is_train,
            merged,
            kind=kind,
            objectives=(1, 2),
            validation=is_val,
            **refits[kind],
        )
        median, median_rounds = medians[kind]
        fitted, rounds = {**median, **quantiles}, {**median_rounds, **quantile_rounds}
        predicted = held[kind]
    models = (fitted[0], fitted[1], fitted[2])
    hold_freqs = freqs[is_hold]
    metrics: dict[str, Any] = accuracy_metrics(hold_measured, predicted)
    metrics["serving"] = kind
    metrics["candidates"] = candidates
    metrics["selection"] = selection
    if transfer is not None:
        metrics["transfer"] = {**transfer, "serving": kind == TRANSFER_MODEL}
    metrics["per_frequency"] = {
        str(int(f)): accuracy_metrics(hold_measured[hold_freqs == f], predicted[hold_freqs == f])
        for f in np.unique(hold_freqs)
    }
    metrics["split"] = {
        "train_configs": len(train_h),
        "validation_configs": len(val_h),
        "holdout_configs": len(hold_h),
        "train_rows": int(is_train.sum()),
        "validation_rows": int(is_val.sum()),
        "holdout_rows": int(is_hold.sum()),
    }
    metrics["boost_rounds"] = {name: rounds[i] for i, name in enumerate(("median", "p10", "p90"))}
    hold_hashes = hashes[is_hold]
    holdout = [
        {
            "config_hash": str(h),
            "frequency_khz": int(f),
            "measured_ms": float(m),
            "predicted_ms": float(p),
        }
        for h, f, m, p in zip(hold_hashes, hold_freqs, hold_measured, predicted, strict=True)
    ][:MAX_HOLDOUT_ROWS]
    if merged["refit"]:
        # The learning curve is still steep at a thousand configs: serve trees grown on every config, with
        # the round counts early stopping chose; the metrics above then understate the served model.
        everything = np.ones(len(rows), dtype=bool)
        refitted, schema, _ = _fit_models(
            featurizer,
            rows,
            x,
            measured,
            everything,
            merged,
            kind=kind,
            rounds=[rounds[i] for i in range(3)],
            **refits[kind],
        )
        models = (refitted[0], refitted[1], refitted[2])
        metrics["refit_rows"] = len(rows)
    model, model_p10, model_p90 = models
    return TrainingResult(
        model=model,
        model_p10=model_p10,
        model_p90=model_p90,
        feature_schema=schema,
        metrics=metrics,
        holdout=holdout,
        training_data_hash=rows.data_hash(),
        row_count=len(rows),
        library_versions=library_versions(),
        params=merged,
        train_config_hashes=train_h,
        validation_config_hashes=val_h,
        holdout_config_hashes=hold_h,
        peers=list(peers) if kind == TRANSFER_MODEL else [],
    )
