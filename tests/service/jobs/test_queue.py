"""The lease queue on both engines, no phones: leases, fairness, late results, retries, offline phones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from profilers.adb import MeasurementRecord, RuntimeSettings
from service.db import utcnow
from service.devices.models import Device, DeviceStatus
from service.devices.runner import DeviceTarget, NoopRunner
from service.jobs import queue
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.jobs.schemas import JobCreate
from service.jobs.service import cancel_job, create_job, settle_jobs
from service.jobs.worker import Worker
from service.measurements.models import Measurement
from service.settings import Settings
from tests.service.jobs.conftest import BIG


def _job(session: Session, settings: Settings, devices: list[int], n: int = 3, **extra: Any) -> Job:
    configs = [{"scale": 2, "height": 16, "width": 16, "widths": [w, w]} for w in range(1, n + 1)]
    body = {"family": "sr_block", "configs": configs, "devices": devices, **extra}
    return create_job(session, JobCreate.model_validate(body), settings, "test")


def _fresh(session: Session) -> None:
    """End the session's read snapshot (SQLite WAL keeps it) and forget loaded rows."""
    session.rollback()
    session.expire_all()


def _statuses(session: Session, job_id: int) -> dict[TaskStatus, int]:
    _fresh(session)
    rows = session.execute(
        select(Task.status, func.count()).where(Task.job_id == job_id).group_by(Task.status)
    )
    return dict(rows.all())


def _record(batch: queue.ClaimedBatch) -> MeasurementRecord:
    """The measurement record of the batch's first task as a runner reports it (the no-op runner's)."""
    target = DeviceTarget(batch.device_id, "10.0.0.1:5555", "tcp", None)
    return next(NoopRunner().measure(target, batch.runtime, batch.requests()[:1]))


def test_noop_worker_runs_every_task_once(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    a, b = make_device("10.0.0.1:5555"), make_device("10.0.0.2:5555")
    job = _job(db_session, settings, [a.id, b.id], n=5)
    settings.worker_batch_size = 4
    worker = Worker(session_factory, settings, NoopRunner())
    worker.run(once=True)
    assert _statuses(db_session, job.id) == {TaskStatus.done: 30}
    assert worker.completed == 30
    assert db_session.scalar(select(func.count(func.distinct(Measurement.task_id)))) == 30
    _fresh(db_session)
    assert db_session.get(Job, job.id).status == JobStatus.done
    assert {d.status for d in db_session.scalars(select(Device))} == {DeviceStatus.online}


def test_a_jobs_runtime_settings_reach_the_runner_and_the_stored_measurement(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    device = make_device("10.0.0.1:5555")
    runtime = {"runs": 4, "warmup": 0, "threads": 2, "passes": 2}
    job = _job(db_session, settings, [device.id], n=2, frequencies=[BIG[0]], runtime=runtime)
    _job(db_session, settings, [device.id], n=2, frequencies=[BIG[0]])  # default settings: another batch
    assert queue.acquire_device(session_factory, "A", 60) is not None
    batch = queue.claim_batch(session_factory, device.id, "A", 10, 60)
    # The task stores the accelerator option resolved (the CPU cluster's default), as the profiler records it.
    assert batch is not None and batch.runtime == RuntimeSettings(**runtime, accelerator="cpu")
    assert {t.job_id for t in batch.tasks} == {job.id}  # one batch, one runtime
    assert [r.config_hash for r in batch.requests()] == [t.config_hash for t in batch.tasks]
    queue.release_tasks(session_factory, [t.id for t in batch.tasks], batch.token)
    queue.release_device(session_factory, device.id, "A")
    Worker(session_factory, settings, NoopRunner()).run(once=True)
    stored = db_session.scalars(select(Measurement).where(Measurement.job_id == job.id)).all()
    assert len(stored) == 2
    assert {(m.runs, m.warmup, m.threads, m.passes, m.cluster) for m in stored} == {(4, 0, 2, 2, "big")}


def test_device_lease_is_exclusive_until_released_or_expired(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    device = make_device("10.0.0.1:5555")
    _job(db_session, settings, [device.id])
    first = queue.acquire_device(session_factory, "A", 60)
    assert first is not None and first.id == device.id
    assert queue.acquire_device(session_factory, "B", 60) is None
    _fresh(db_session)
    assert db_session.get(Device, device.id).status == DeviceStatus.busy
    queue.release_device(session_factory, device.id, "A")
    assert queue.acquire_device(session_factory, "B", -1) is not None  # taken, but already expired
    assert queue.acquire_device(session_factory, "C", 60) is not None


def test_batch_shares_one_pin_and_alternates_jobs_by_priority(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    device = make_device("10.0.0.1:5555")
    old = _job(db_session, settings, [device.id], n=4)
    new = _job(db_session, settings, [device.id], n=4, force=True)
    urgent = _job(db_session, settings, [device.id], n=2, priority=5, frequencies=[BIG[1]])
    assert queue.acquire_device(session_factory, "A", 60) is not None
    batch = queue.claim_batch(session_factory, device.id, "A", 8, 60)
    assert batch is not None
    # Priority first and its pin; other jobs' tasks at that pin fill the batch, round-robin.
    assert batch.frequency_khz == BIG[1]
    assert [t.job_id for t in batch.tasks] == [urgent.id, urgent.id] + [old.id, new.id] * 3
    batch = queue.claim_batch(session_factory, device.id, "A", 6, 60)
    assert batch is not None and batch.frequency_khz == BIG[0]  # then FIFO: the oldest task's frequency
    assert [t.job_id for t in batch.tasks] == [old.id, new.id] * 3
    assert len({t.id for t in batch.tasks}) == 6


def test_late_result_of_an_expired_lease_is_discarded(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    device = make_device("10.0.0.1:5555")
    _job(db_session, settings, [device.id], n=1, frequencies=[BIG[0]])
    assert queue.acquire_device(session_factory, "A", -1) is not None
    stale = queue.claim_batch(session_factory, device.id, "A", 1, -1)  # its lease is already over
    assert stale is not None
    assert queue.requeue_expired(session_factory, max_attempts=3) == 1
    assert queue.acquire_device(session_factory, "B", 60) is not None
    fresh = queue.claim_batch(session_factory, device.id, "B", 1, 60)
    assert fresh is not None and fresh.tasks[0].id == stale.tasks[0].id and fresh.token != stale.token
    assert fresh.tasks[0].attempts == 2
    task_id = stale.tasks[0].id
    assert not queue.complete_task(session_factory, task_id, stale.token, _record(stale), 0.1)
    assert queue.complete_task(session_factory, task_id, fresh.token, _record(fresh), 0.1)
    assert not queue.complete_task(session_factory, task_id, fresh.token, _record(fresh), 0.1)
    assert db_session.scalar(select(func.count()).select_from(Measurement)) == 1


def test_retries_back_off_then_fail_with_the_reason(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    device = make_device("10.0.0.1:5555")
    job = _job(db_session, settings, [device.id], n=1, frequencies=[BIG[0]])
    queue.acquire_device(session_factory, "A", 60)
    batch = queue.claim_batch(session_factory, device.id, "A", 1, 60)
    assert batch is not None
    status = queue.fail_task(session_factory, batch.tasks[0].id, batch.token, "connection lost", 2)
    assert status is TaskStatus.queued
    assert queue.claim_batch(session_factory, device.id, "A", 1, 60) is None  # backing off
    db_session.execute(update(Task).values(not_before=utcnow() - dt.timedelta(seconds=1)))
    db_session.commit()
    batch = queue.claim_batch(session_factory, device.id, "A", 1, 60)
    assert batch is not None
    assert queue.fail_task(session_factory, batch.tasks[0].id, batch.token, "timeout", 2) is TaskStatus.failed
    with session_factory() as session:
        assert settle_jobs(session) == 1
    _fresh(db_session)
    task = db_session.scalars(select(Task)).one()
    assert task.status is TaskStatus.failed and "timeout" in task.last_error
    finished = db_session.get(Job, job.id)
    assert finished.status is JobStatus.failed and "timeout" in finished.error


def test_phone_with_repeated_errors_goes_offline_and_its_tasks_end(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    device = make_device("10.0.0.1:5555")
    job = _job(db_session, settings, [device.id], n=2, frequencies=[BIG[0]])
    assert not queue.record_device_failure(session_factory, device.id, "refused", 2)
    assert queue.record_device_failure(session_factory, device.id, "refused", 2)
    _fresh(db_session)
    assert db_session.get(Device, device.id).status is DeviceStatus.offline
    assert queue.charge_offline_device(session_factory, device.id, "refused", 2) == 0
    assert queue.charge_offline_device(session_factory, device.id, "refused", 2) == 2
    with session_factory() as session:
        settle_jobs(session)
    _fresh(db_session)
    assert db_session.get(Job, job.id).status is JobStatus.failed
    assert "device offline" in db_session.get(Job, job.id).error


def test_cancel_lets_leased_tasks_finish_and_never_requeues(
    session_factory: sessionmaker[Session], db_session: Session, settings: Settings, make_device: Callable
) -> None:
    device = make_device("10.0.0.1:5555")
    job = _job(db_session, settings, [device.id], n=4, frequencies=[BIG[0]])
    queue.acquire_device(session_factory, "A", 60)
    batch = queue.claim_batch(session_factory, device.id, "A", 2, 60)
    assert batch is not None
    with session_factory() as session:
        cancel_job(session, job.id)
    assert _statuses(db_session, job.id) == {TaskStatus.leased: 2, TaskStatus.cancelled: 2}
    assert queue.complete_task(session_factory, batch.tasks[0].id, batch.token, _record(batch), 0.1)
    queue.fail_task(session_factory, batch.tasks[1].id, batch.token, "dropped", 3)
    with session_factory() as session:
        settle_jobs(session)
    assert _statuses(db_session, job.id) == {TaskStatus.done: 1, TaskStatus.cancelled: 3}
    _fresh(db_session)
    assert db_session.get(Job, job.id).status is JobStatus.cancelled
