"""Training on a known latency law: accuracy, split by config, metrics, failures."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from profilers.blocks import get_family
from service.predictors import trainer as predictor_trainer
from service.predictors.features import FEATURES_VERSION, Featurizer
from service.predictors.inference import LatencyModel
from service.predictors.models import Predictor, PredictorStatus
from service.predictors.schemas import PredictorCreate, TrainFilters
from service.predictors.service import create_predictor
from service.predictors.trainer import train_predictor
from service.predictors.training import TrainingError, fit_predictor
from service.problems import InvalidInputError
from service.settings import Settings
from tests.service.predictors.synthetic import (
    FAST_PARAMS,
    FREQUENCIES,
    add_device,
    insert_rows,
    law_ms,
    sample_configs,
    synthetic_rows,
    train_now,
)


def test_known_law_is_learnt_within_ten_percent() -> None:
    rows = synthetic_rows(200, seed=3)
    result = fit_predictor(rows, {"n_estimators": 300})
    metrics = result.metrics
    assert metrics["within_10"] >= 0.95, metrics
    assert metrics["spearman"] > 0.95
    assert set(metrics["per_frequency"]) == {str(f) for f in FREQUENCIES}
    for per in metrics["per_frequency"].values():
        assert per["rows"] > 0 and per["within_10"] >= 0.9
    # The stored holdout pairs are the ones the metrics were computed from.
    measured = np.array([h["measured_ms"] for h in result.holdout])
    predicted = np.array([h["predicted_ms"] for h in result.holdout])
    assert np.mean(np.abs(predicted - measured) / measured <= 0.10) == pytest.approx(metrics["within_10"])


def test_slow_outliers_do_not_drag_predictions_up() -> None:
    """A busy host makes some runs far slower, never faster: the point estimate must stay on the typical
    latency (the median), where a least-squares fit on log-latency is pulled up by every outlier."""
    rows = synthetic_rows(150, seed=7)
    rng = np.random.default_rng(7)
    slow = rng.random(len(rows)) < 0.15
    rows = dataclasses.replace(
        rows, median_ms=[ms * 1.6 if hit else ms for ms, hit in zip(rows.median_ms, slow, strict=True)]
    )
    result = fit_predictor(rows, {"n_estimators": 400})
    model = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
    fresh = sample_configs(60, seed=99)
    predicted = model.predict(fresh, FREQUENCIES).latency_ms
    family = get_family("sr_block")
    truth = np.array([law_ms(family.costs(c).flops, f) for c in fresh for f in FREQUENCIES])
    relative = predicted / truth - 1
    assert abs(float(np.median(relative))) < 0.02, np.median(relative)
    assert np.mean(np.abs(relative) <= 0.10) >= 0.95


def test_served_models_are_refit_on_every_config() -> None:
    rows = synthetic_rows(60, seed=4)
    scored_only = fit_predictor(rows, {**FAST_PARAMS, "refit": False})
    refit = fit_predictor(rows, FAST_PARAMS)
    # The holdout is scored before the refit, by the same models in both runs.
    assert refit.holdout == scored_only.holdout
    assert refit.metrics["within_10"] == scored_only.metrics["within_10"]
    assert refit.metrics["refit_rows"] == len(rows) and "refit_rows" not in scored_only.metrics
    assert refit.model != scored_only.model
    booster = xgb.Booster()
    booster.load_model(bytearray(refit.model))
    assert booster.num_boosted_rounds() == refit.metrics["boost_rounds"]["median"]
    # Ranges now span the held-out configs too.
    wider = np.array(refit.feature_schema["ranges"]["max"]) >= np.array(
        scored_only.feature_schema["ranges"]["max"]
    )
    assert wider.all()


def test_split_is_by_configuration() -> None:
    rows = synthetic_rows(40, seed=5)
    result = fit_predictor(rows, FAST_PARAMS)
    train, val, hold = (
        result.train_config_hashes,
        result.validation_config_hashes,
        result.holdout_config_hashes,
    )
    assert train and val and hold
    assert not (train & hold) and not (train & val) and not (val & hold)
    assert train | val | hold == set(rows.config_hashes)
    held_rows = {h["config_hash"] for h in result.holdout}
    assert held_rows == hold
    # Every frequency of a held-out config is held out with it.
    assert len(result.holdout) == len(hold) * len(FREQUENCIES)


def test_training_data_hash_tracks_the_rows() -> None:
    rows = synthetic_rows(10, seed=1)
    again = synthetic_rows(10, seed=1)
    other = synthetic_rows(10, seed=2)
    assert rows.data_hash() == again.data_hash() != other.data_hash()


def test_too_few_rows_says_how_many_are_needed() -> None:
    rows = synthetic_rows(5, frequencies=[1_000_000])
    with pytest.raises(
        TrainingError, match=r"5 valid measurements match; at least 40 are needed \(35 more\)"
    ):
        fit_predictor(rows, FAST_PARAMS, min_rows=40)


def test_features_are_broadcast_config_major() -> None:
    featurizer = Featurizer("sr_block", ["big", "little"])
    configs = synthetic_rows(3, frequencies=[1]).configs
    rows = featurizer.config_rows(configs)
    x = featurizer.matrix(rows, np.array([500_000, 1_000_000]), 2, "little", broadcast=True)
    names = featurizer.names
    assert x.shape == (6, len(names))
    mhz = x[:, names.index("frequency_mhz")]
    assert mhz.tolist() == [500.0, 1000.0] * 3
    flops = get_family("sr_block").costs(configs[1]).flops
    assert x[2, names.index("flops")] == np.float32(flops)
    assert x[3, names.index("flops_per_mhz")] == np.float32(flops / 1000.0)
    assert (x[:, names.index("cluster=little")] == 1).all() and (x[:, names.index("threads")] == 2).all()
    assert x[0, names.index("widths.len")] == len(configs[0]["widths"])


def test_service_refuses_too_few_measurements(
    db_session: Session, settings: Settings, device_id: int
) -> None:
    insert_rows(db_session, device_id, synthetic_rows(4, frequencies=[1_000_000]))
    with pytest.raises(InvalidInputError, match=r"4 valid sr_block measurements .* at least 40 are needed"):
        create_predictor(db_session, PredictorCreate(family="sr_block", device=device_id), settings)


def test_single_frequency_when_several_asked_fails_clearly(
    db_session: Session, session_factory: sessionmaker[Session], settings: Settings, device_id: int
) -> None:
    insert_rows(db_session, device_id, synthetic_rows(50, frequencies=[800_000]))
    data = PredictorCreate(
        family="sr_block",
        device=device_id,
        filters=TrainFilters(frequencies_khz=[800_000, 1_600_000]),
        params=FAST_PARAMS,
    )
    predictor_id = create_predictor(db_session, data, settings).id
    train_predictor(session_factory, predictor_id, settings)
    with session_factory() as session:
        from service.predictors.models import Predictor

        predictor = session.get(Predictor, predictor_id)
        assert predictor is not None
        assert predictor.status is PredictorStatus.failed
        assert "2 frequencies were asked for but the measurements hold only [800000]" in (
            predictor.error or ""
        )


def test_trained_predictor_is_stored_with_provenance(trained, device_id: int) -> None:
    assert trained.device_id == device_id and trained.version == 1 and not trained.active
    assert trained.row_count == 180 and len(trained.training_data_hash or "") == 64
    assert trained.model and trained.model_p10 and trained.model_p90
    assert trained.library_versions["xgboost"] and trained.library_versions["features"] == str(
        FEATURES_VERSION
    )
    assert set(trained.metrics["per_frequency"]) == {str(f) for f in FREQUENCIES}
    assert trained.feature_schema["default_cluster"] == "big"
    # Holdout rows follow the law closely (sanity of what the dashboard will plot).
    assert all(h["measured_ms"] > 0.5 and h["predicted_ms"] > 0 for h in trained.holdout)


def test_training_stores_its_model_when_another_writer_commits_meanwhile(
    db_session: Session, session_factory: sessionmaker[Session], settings: Settings, device_id: int
) -> None:
    """Another process (a worker storing measurements) commits between the store's read and its write.

    A deferred SQLite transaction fails there at once ("database is locked") and left the predictor
    `training` for ever; the store must take the write lock first, so the other writer simply waits.
    """
    insert_rows(db_session, device_id, synthetic_rows(40))
    engine = session_factory.kw["bind"]
    trained = threading.Event()
    other_writer: list[threading.Thread] = []
    other_device: list[int] = []

    def fit_then_flag(*args: Any, **kwargs: Any) -> Any:
        result = fit_predictor(*args, **kwargs)
        trained.set()
        return result

    def commit_elsewhere() -> None:
        with session_factory() as other:
            other_device.append(add_device(other))

    def after_store_read(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if trained.is_set() and not other_writer and "FROM predictor" in statement:
            writer = threading.Thread(target=commit_elsewhere)
            other_writer.append(writer)
            writer.start()
            writer.join(timeout=1.0)  # done at once when not locked out; else it waits for our commit

    event.listen(engine, "after_cursor_execute", after_store_read)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(predictor_trainer, "fit_predictor", fit_then_flag)
            predictor = train_now(session_factory, settings, device_id)
    finally:
        event.remove(engine, "after_cursor_execute", after_store_read)
    assert other_writer, "the store phase never read the predictor"
    other_writer[0].join(timeout=30)
    assert predictor.status is PredictorStatus.ready, predictor.error
    assert predictor.model and predictor.row_count == 120
    assert len(other_device) == 1  # the other writer's commit is not lost either


def test_a_failed_store_marks_the_predictor_failed(
    db_session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    device_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    insert_rows(db_session, device_id, synthetic_rows(40))

    def database_refuses(*_: Any) -> None:
        raise OperationalError("UPDATE predictor", {}, Exception("disk I/O error"))

    monkeypatch.setattr(predictor_trainer, "_store_trained", database_refuses)
    predictor = train_now(session_factory, settings, device_id)
    assert predictor.status is PredictorStatus.failed
    assert "storing the trained model failed" in (predictor.error or "")
    assert "disk I/O error" in (predictor.error or "")
    with session_factory() as session:
        assert session.get(Predictor, predictor.id).model is None
