"""The worker's idle work: opt-in retraining policies, checked at most every `retrain_check_seconds`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.devices.runner import NoopRunner
from service.jobs.worker import Worker
from service.predictors.models import Predictor
from service.predictors.policy import set_retrain_policy
from service.settings import Settings
from tests.service.predictors.synthetic import FAST_PARAMS, add_device, insert_rows, synthetic_rows


def _versions(session: Session, device_id: int) -> list[Predictor]:
    session.rollback()
    query = select(Predictor).where(Predictor.device_id == device_id).order_by(Predictor.version)
    # Sessions keep objects across commits (expire_on_commit=False): read the rows as they are now.
    return list(session.scalars(query.execution_options(populate_existing=True)))


def test_idle_worker_retrains_when_a_policy_is_due_and_waits_out_the_interval(
    db_session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    settings.retrain_check_seconds = 3600.0
    device = add_device(db_session)
    set_retrain_policy(db_session, "sr_block", device, 30, params=FAST_PARAMS)
    worker = Worker(session_factory, settings, NoopRunner(), name="retrainer")

    # 20 rows: fewer than the policy's 30 new ones (and than training needs) — not due.
    insert_rows(db_session, device, synthetic_rows(10, frequencies=[800_000, 1_600_000], seed=1))
    worker.run(once=True)
    assert _versions(db_session, device) == []

    # The policy is due now, but this worker checked a moment ago: the interval holds it back ...
    insert_rows(db_session, device, synthetic_rows(40, seed=2))
    worker.run(once=True)
    assert _versions(db_session, device) == []

    # ... until the interval has passed (a new worker has never checked): one idle cycle trains and activates.
    fresh = Worker(session_factory, settings, NoopRunner(), name="retrainer-2")
    fresh.run(once=True)
    [first] = _versions(db_session, device)
    assert first.status.value == "ready" and first.active and first.created_by == "retrain-policy"
    assert first.row_count == 140

    # Nothing new since: a forced check trains nothing; 30 more rows: it trains version 2.
    assert fresh.check_retrain_policies(force=True) == []
    insert_rows(db_session, device, synthetic_rows(10, seed=3))
    [second_id] = fresh.check_retrain_policies(force=True)
    versions = _versions(db_session, device)
    assert [p.version for p in versions] == [1, 2] and versions[1].id == second_id
    assert sum(p.active for p in versions) == 1


def test_two_workers_checking_at_once_train_a_due_policy_once(
    db_session: Session, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    device = add_device(db_session)
    set_retrain_policy(db_session, "sr_block", device, 10, params=FAST_PARAMS)
    insert_rows(db_session, device, synthetic_rows(30, seed=4))
    a = Worker(session_factory, settings, NoopRunner(), name="a")
    b = Worker(session_factory, settings, NoopRunner(), name="b")
    trained = a.check_retrain_policies() + b.check_retrain_policies()
    assert len(trained) == 1 and [p.id for p in _versions(db_session, device)] == trained
