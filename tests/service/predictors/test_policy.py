"""Opt-in retraining and uncertainty sampling, on both engines."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.predictors.models import Predictor
from service.predictors.policy import no_worse, run_retrain_policies, set_retrain_policy
from service.predictors.registry import load_latency_model
from service.predictors.service import activate_predictor, select_uncertain
from service.problems import ConflictError
from service.settings import Settings
from tests.service.predictors.synthetic import FAST_PARAMS, insert_rows, sample_configs, synthetic_rows


def test_policy_retrains_after_enough_new_rows_and_activates_when_no_worse(
    db_session: Session, session_factory: sessionmaker[Session], settings: Settings, device_id: int
) -> None:
    insert_rows(db_session, device_id, synthetic_rows(60, seed=0))
    set_retrain_policy(db_session, "sr_block", device_id, 100, params=FAST_PARAMS)
    first = run_retrain_policies(session_factory, settings)
    assert len(first) == 1  # 180 rows since a count of 0: due
    assert run_retrain_policies(session_factory, settings) == []  # nothing new

    with session_factory() as session:
        v1 = session.get(Predictor, first[0])
        assert (
            v1 is not None and v1.status.value == "ready" and v1.active and v1.created_by == "retrain-policy"
        )

    insert_rows(db_session, device_id, synthetic_rows(40, seed=8))
    second = run_retrain_policies(session_factory, settings)
    assert len(second) == 1
    with session_factory() as session:
        v1 = session.get(Predictor, first[0])
        v2 = session.get(Predictor, second[0])
        assert v1 is not None and v2 is not None and v2.version == 2
        # Exactly one is active, and it is the new one only when its metrics are no worse.
        assert v2.active == no_worse(v2.metrics, v1.metrics) and v1.active != v2.active


def test_no_worse_compares_share_and_mape() -> None:
    assert no_worse({"within_10": 0.97, "mape": 3.0}, {"within_10": 0.96, "mape": 3.5})
    assert not no_worse({"within_10": 0.97, "mape": 4.0}, {"within_10": 0.96, "mape": 3.5})
    assert not no_worse({"within_10": 0.90, "mape": 3.0}, {"within_10": 0.96, "mape": 3.5})


def test_select_uncertain_keeps_the_widest_bands(
    db_session: Session, trained: Predictor, device_id: int
) -> None:
    candidates = sample_configs(40, seed=21)
    with pytest.raises(ConflictError, match="needs an active sr_block predictor"):
        select_uncertain(db_session, device_id, "sr_block", candidates, 5, 1_600_000)
    activate_predictor(db_session, trained.id)
    picked = select_uncertain(db_session, device_id, "sr_block", candidates, 5, 1_600_000)
    assert len(picked) == 5 and all(p in candidates for p in picked)
    model = load_latency_model(db_session, trained.id)
    result = model.predict(candidates, [1_600_000])
    width = (result.p90_ms - result.p10_ms) / result.latency_ms
    widest = sorted(width, reverse=True)[:5]
    got = [width[candidates.index(p)] for p in picked]
    assert np.allclose(got, widest)
    assert db_session.scalars(select(Predictor.id).where(Predictor.active.is_(True))).all() == [trained.id]
