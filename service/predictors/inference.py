"""`LatencyModel`: a trained predictor in memory — three boosters, the featuriser and the training ranges.

The server's registry and the offline `Snapshot` both build a `LatencyModel` from the same bytes and call
the same `predict`, which is why an exported snapshot answers bit for bit like the service. Prediction:
features → margin = log(physics prior) + trees → exp; a predictor trained before the prior (no "prior" in
its schema) uses its log-log baseline of FLOPs/MHz as margin, exactly as it did. A predictor whose
training found the plain model better on its holdout (schema `"model": {"kind": "plain_xgboost"}`) serves
trees on the raw config columns with a constant margin instead. A transfer predictor (`"kind":
"transfer_xgboost"`, fitted by transfer.py) carries its peers' median models (`PeerModel`): each peer
predicts the config at the row's frequency mapped to its own clocks (`peer_frequency_khz`), and the trees
read the features plus those log latencies over a margin of the device's own prior or a linear map of the
peers' predictions (`transfer_margin`). Models are read from XGBoost's UBJSON, never pickled. No database
code here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import xgboost as xgb
from threadpoolctl import threadpool_limits

from profilers.blocks import batch
from service.predictors import accelerator_kernel, forest
from service.predictors.features import (
    ACCELERATOR_RATIO_COLUMNS,
    ACCELERATOR_V5_RATIO_COLUMNS,
    LEGACY_PRECISION,
    Featurizer,
)
from service.predictors.forest import Forest, UnsupportedForest
from service.predictors.prior import PhysicsPrior, read_group_priors, read_prior

#: What a predictor's median model is: trees over the physics prior, or plain trees on the raw fields.
PRIOR_MODEL = "prior_xgboost"
PLAIN_MODEL = "plain_xgboost"
#: Trees over the features and the peers' predicted log latencies (transfer.py).
TRANSFER_MODEL = "transfer_xgboost"
MODEL_KINDS = (PRIOR_MODEL, PLAIN_MODEL, TRANSFER_MODEL)
#: Where a transfer model's margin comes from: the device's own physics prior, the peers' predictions, or
#: one ridge-linear map of both (what trainings fit now; the other two are read from older predictors).
MARGIN_PRIOR = "prior"
MARGIN_PEERS = "peers"
MARGIN_STACKED = "stacked"


@dataclass(frozen=True)
class Predictions:
    """Arrays in request order (config-major when several frequencies): ms and the extrapolation flag."""

    latency_ms: np.ndarray
    p10_ms: np.ndarray
    p90_ms: np.ndarray
    extrapolated: np.ndarray

    def rows(self, start: int, stop: int) -> Predictions:
        """Rows `start` to `stop` (views, no copy)."""
        return Predictions(
            self.latency_ms[start:stop],
            self.p10_ms[start:stop],
            self.p90_ms[start:stop],
            self.extrapolated[start:stop],
        )

    def to_json(self, predictor_id: int) -> bytes:
        """The `/v1/predict` answer `{predictor_id, predictions: [...]}` as JSON bytes (one encoder call).

        msgspec structs encode ~2× faster than dicts through pydantic-core (a quarter of a millisecond per
        1,000 rows); floats are written shortest round-trip, so a client parses back exactly the float64
        computed, and non-finite values would become null.
        """
        rows = list(
            map(
                _PredictionOut,
                self.latency_ms.tolist(),
                self.p10_ms.tolist(),
                self.p90_ms.tolist(),
                self.extrapolated.tolist(),
            )
        )
        return _ENCODER.encode(_PredictResponse(predictor_id, rows))


class _PredictionOut(msgspec.Struct):
    latency_ms: float
    p10_ms: float
    p90_ms: float
    extrapolated: bool


class _PredictResponse(msgspec.Struct):
    predictor_id: int
    predictions: list[_PredictionOut]


_ENCODER = msgspec.json.Encoder()


#: Threads one prediction call uses. One: a request's batch (≤ 10⁵ rows of shallow trees) is too small to
#: repay OpenMP's fork/join, and on a shared machine a spinning second thread made 1,000-row calls 3–6×
#: slower; concurrent requests get their parallelism from the server's worker threads instead. Thread
#: count never changes a prediction (rows are split between threads, trees are summed in the same order).
PREDICT_THREADS = 1


def prepare_serving() -> None:
    """Ready this process to serve predictions.

    Compiles the serving path's numba kernels (or loads them from numba's disk cache, ~0.1 s) so that no
    request pays it; the first compile of a fresh checkout takes a few seconds. And holds BLAS to one
    thread, as `PREDICT_THREADS` holds the trees: the prior's matrix products on a large batch otherwise
    start OpenBLAS threads that spin after every call — a 10,000-config request cost twice its wall time in
    CPU, taken from the cores the other requests and processes need. One thread per product changes no
    result (each output is one dot product, summed by one thread either way).
    """
    threadpool_limits(PREDICT_THREADS, user_api="blas")
    forest.warm_up()
    accelerator_kernel.warm_up()
    batch.warm_up()


def load_booster(raw: bytes) -> xgb.Booster:
    """A booster from UBJSON (or JSON) bytes as saved by `Booster.save_raw`, set up for serving."""
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    booster.set_param({"nthread": PREDICT_THREADS})
    return booster


@dataclass(frozen=True)
class PeerModel:
    """Another device's predictor that a transfer predictor consults: who it is and its median model."""

    device_id: int
    predictor_id: int
    version: int
    model: LatencyModel
    #: The median booster's bytes, as stored with the transfer predictor (`transfer.pack_peers`).
    median_model: bytes

    def provenance(self) -> dict[str, int]:
        """The peer as a transfer predictor's metadata names it."""
        return {"device_id": self.device_id, "predictor_id": self.predictor_id, "version": self.version}


def peer_frequency_khz(frequencies_khz: np.ndarray, own_top_khz: float, peer_top_khz: float) -> np.ndarray:
    """The row's frequency as the same fraction of the peer's top trained clock as of the device's own.

    Why the fraction of the top clock: two phones' tables share no values, but each phone's top clock is
    where it is fastest, and a row at 60 % of its own top is compared with the peer at 60 % of its top.
    Single-clock data (a GPU whose clock was not recorded) maps onto the peer's one clock.
    """
    return np.asarray(frequencies_khz, dtype=np.float64) * (peer_top_khz / own_top_khz)


def transfer_inputs(x: np.ndarray, own_margin: np.ndarray, peer_logs: np.ndarray) -> np.ndarray:
    """The transfer trees' input: the features, the peers' log latencies, and each peer's log latency less
    the device's own prior (where the peers disagree with the prior is what the trees may use)."""
    return np.column_stack([x, peer_logs, peer_logs - own_margin[:, None]]).astype(np.float32)


def transfer_margin(entry: Mapping[str, Any], own_margin: np.ndarray, peer_logs: np.ndarray) -> np.ndarray:
    """The transfer model's log margin per row: the own prior's; intercept + peers' logs · weights; or, when
    stacked, intercept + own prior · weight + peers' logs · weights."""
    if entry["margin"] == MARGIN_PRIOR:
        return own_margin.astype(np.float32)
    if entry["margin"] == MARGIN_STACKED:
        stacked = np.asarray(entry["stacked_coefficients"], dtype=np.float64)
        both: np.ndarray = stacked[0] + stacked[1] * own_margin + peer_logs @ stacked[2:]
        return both.astype(np.float32)
    coefficients = np.asarray(entry["peer_coefficients"], dtype=np.float64)
    mapped: np.ndarray = coefficients[0] + peer_logs @ coefficients[1:]
    return mapped.astype(np.float32)


class LatencyModel:
    """The median model and the p10/p90 quantile models of one predictor, ready to answer batches."""

    def __init__(
        self,
        schema: Mapping[str, Any],
        model: bytes,
        model_p10: bytes,
        model_p90: bytes,
        peers: Sequence[PeerModel] = (),
    ) -> None:
        self.schema = dict(schema)
        self.featurizer = Featurizer.from_schema(schema)
        self.family = self.featurizer.family
        self.booster = load_booster(model)
        self.booster_p10 = load_booster(model_p10)
        self.booster_p90 = load_booster(model_p90)
        # The same trees as arrays, walked by a compiled loop that answers as XGBoost does (forest.py).
        try:
            self.forest: Forest | None = Forest.of(self.booster, self.booster_p10, self.booster_p90)
        except UnsupportedForest:
            self.forest = None
        self.baseline = (float(schema["baseline"][0]), float(schema["baseline"][1]))
        # A predictor trained before the physics prior has none; it keeps its log-log baseline margin.
        self.physics = PhysicsPrior(self.featurizer)
        self.prior = read_prior(schema, self.physics)
        self.group_priors = read_group_priors(schema, self.physics)
        # Predictors trained before the plain candidate have no "model" entry: they serve the prior trees.
        served = schema.get("model") or {"kind": PRIOR_MODEL}
        self.kind = str(served["kind"])
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind {self.kind!r}; this build serves {', '.join(MODEL_KINDS)}")
        self.columns: np.ndarray | None = None
        self.plain_margin = 0.0
        if self.kind == PLAIN_MODEL:
            index = {name: i for i, name in enumerate(self.featurizer.names)}
            missing = [c for c in served["columns"] if c not in index]
            if missing:
                raise ValueError(f"the plain model's columns {missing} are not features of this schema")
            self.columns = np.asarray([index[c] for c in served["columns"]], dtype=np.int64)
            self.plain_margin = float(served["margin"])
        self.peers = tuple(peers)
        self.transfer: dict[str, Any] | None = None
        if self.kind == TRANSFER_MODEL:
            self.transfer = dict(served)
            named = [int(p["predictor_id"]) for p in served["peers"]]
            given = [p.predictor_id for p in self.peers]
            if named != given:
                raise ValueError(f"this transfer model needs the peer predictors {named}, given {given}")
        ranges = schema["ranges"]
        self.low = np.asarray(ranges["min"], dtype=np.float32)
        self.high = np.asarray(ranges["max"], dtype=np.float32)
        ratios = [
            i
            for i, name in enumerate(self.featurizer.names)
            if name in (*ACCELERATOR_RATIO_COLUMNS, *ACCELERATOR_V5_RATIO_COLUMNS)
        ]
        self.low[ratios], self.high[ratios] = -np.inf, np.inf  # never flag a config as extrapolated
        self.default_cluster = str(schema["default_cluster"])
        self.default_threads = int(schema["default_threads"])
        # Trained before precisions were recorded: every row was fp32.
        self.default_precision = str(schema.get("default_precision", LEGACY_PRECISION))

    def margins(self, x: np.ndarray, peer_logs: np.ndarray | None = None) -> np.ndarray:
        """Log-latency margin per row (float32, as XGBoost takes them): the prior's, or the plain constant,
        or a transfer model's (which needs the peers' log latencies of the rows)."""
        if self.transfer is not None:
            assert peer_logs is not None and self.prior is not None
            own = self.physics.log_ms(x, self.prior, self.group_priors)
            return transfer_margin(self.transfer, own, peer_logs)
        if self.columns is not None:
            return np.full(x.shape[0], self.plain_margin, dtype=np.float32)
        if self.prior is not None:
            return self.physics.log_ms(x, self.prior, self.group_priors).astype(np.float32)
        c0, c1 = self.baseline
        return (c0 + c1 * self.featurizer.baseline_input(x)).astype(np.float32)

    def predict_matrix(self, x: np.ndarray, peer_logs: np.ndarray | None = None) -> Predictions:
        """Predict featurised rows (a transfer model also takes its peers' log latencies of the rows)."""
        if self.transfer is not None:
            assert peer_logs is not None and self.prior is not None
            # The own prior feeds both the margin and the trees' inputs: computed once.
            own = self.physics.log_ms(x, self.prior, self.group_priors)
            margin = transfer_margin(self.transfer, own, peer_logs)
            trees_in = transfer_inputs(x, own, peer_logs)
        else:
            margin = self.margins(x)
            trees_in = x if self.columns is None else x[:, self.columns]
        if self.forest is not None:
            log_mean, log_p10, log_p90 = self.forest.predict(trees_in, margin)
        else:
            log_mean = self.booster.inplace_predict(trees_in, base_margin=margin)
            log_p10 = self.booster_p10.inplace_predict(trees_in, base_margin=margin)
            log_p90 = self.booster_p90.inplace_predict(trees_in, base_margin=margin)
        mean = np.exp(np.asarray(log_mean, dtype=np.float64))
        # Separately trained quantile models may cross the mean; the band is made to contain it.
        p10 = np.minimum(np.exp(np.asarray(log_p10, dtype=np.float64)), mean)
        p90 = np.maximum(np.exp(np.asarray(log_p90, dtype=np.float64)), mean)
        outside = np.asarray(((x < self.low) | (x > self.high)).any(axis=1), dtype=bool)
        return Predictions(mean, p10, p90, outside)

    def predict(
        self,
        configs: Sequence[Mapping[str, Any]],
        frequencies_khz: Sequence[int],
        *,
        cluster: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
    ) -> Predictions:
        """Every config at every frequency, config-major (row i·F + j: config i, frequency j), on the unit
        `cluster` at `precision` (each defaults to the training data's most common).

        `UnseenConditionError` (naming `unit` or `precision`) for a unit or precision the training data
        never held: the trees would answer, but for conditions they never saw.
        """
        unit = self.default_cluster if cluster is None else cluster
        precision = self.default_precision if precision is None else precision
        self.featurizer.check_conditions(unit, precision)
        rows = self.featurizer.config_rows(configs)
        x = self.featurizer.matrix(
            rows,
            np.asarray(frequencies_khz, dtype=np.float64),
            self.default_threads if threads is None else threads,
            unit,
            broadcast=True,
            precision=precision,
        )
        peer_logs = None
        if self.transfer is not None:
            n_freq = len(frequencies_khz)
            repeat = np.repeat(np.arange(len(rows)), n_freq)
            freqs = np.tile(np.asarray(frequencies_khz, dtype=np.float64), len(rows))
            own_top = float(self.transfer["own_top_khz"])
            peer_logs = peer_log_latencies(self.peers, own_top, configs, repeat, freqs, unit, precision)
        return self.predict_matrix(x, peer_logs)

    @property
    def top_frequency_khz(self) -> float:
        """The highest clock the training data held (the reference a peer's clocks are mapped by)."""
        return top_frequency_khz(self.schema)

    def log_latency_rows(
        self,
        config_rows: np.ndarray,
        frequencies_khz: np.ndarray,
        units: Sequence[str],
        precisions: Sequence[str],
    ) -> np.ndarray:
        """Log ms of per-row (config row, frequency, unit, precision) as a peer: a unit or precision this
        model never saw is replaced by its default (the peer's nearest stand-in), never refused."""
        known_units, known_precisions = set(self.featurizer.clusters), set(self.featurizer.precisions)
        unit = np.asarray([u if u in known_units else self.default_cluster for u in units])
        precision = np.asarray([p if p in known_precisions else self.default_precision for p in precisions])
        x = self.featurizer.matrix(
            config_rows, frequencies_khz, self.default_threads, unit, broadcast=False, precision=precision
        )
        logs: np.ndarray = np.log(self.predict_matrix(x).latency_ms)
        return logs


def top_frequency_khz(schema: Mapping[str, Any]) -> float:
    """The highest clock a predictor's training data held (the reference a peer's clocks are mapped by)."""
    return float(max(schema.get("frequencies_khz") or [1]))


def peer_log_latencies(
    peers: Sequence[PeerModel],
    own_top_khz: float,
    configs: Sequence[Mapping[str, Any]],
    row_of: np.ndarray,
    frequencies_khz: np.ndarray,
    units: Sequence[str] | str,
    precisions: Sequence[str] | str,
) -> np.ndarray:
    """Each peer's log latency (columns, in peer order) of rows: config `configs[row_of[i]]` at the device's
    `frequencies_khz[i]`, mapped to the peer's clocks (`peer_frequency_khz`)."""
    n = len(row_of)
    unit_of = [units] * n if isinstance(units, str) else list(units)
    precision_of = [precisions] * n if isinstance(precisions, str) else list(precisions)
    columns = []
    for peer in peers:
        rows = peer.model.featurizer.config_rows(configs)[row_of]
        freqs = peer_frequency_khz(frequencies_khz, own_top_khz, peer.model.top_frequency_khz)
        columns.append(peer.model.log_latency_rows(rows, freqs, unit_of, precision_of))
    return np.column_stack(columns) if columns else np.empty((n, 0))
