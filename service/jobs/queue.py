"""The task queue in the database: device leases, task leases, completion, retries, expiry.

The one module with dialect-specific SQL. It runs past ~500 lines on purpose: every lease — device, task,
training — is taken, renewed and given back here, so the invariants below hold in one file a reader
can check against them, and no other module needs to know a dialect. Invariants it keeps, on both engines:

- **One benchmark per phone.** A worker first leases a *device* (`device.lease_owner/lease_expires_at`);
  only the holder of a live device lease claims that device's tasks. On PostgreSQL the device row is
  picked with `SELECT … FOR UPDATE SKIP LOCKED` (workers on other hosts skip it instead of queueing
  behind it); on SQLite every claim runs in a `BEGIN IMMEDIATE` transaction (`write_session`), so claims
  are serialised by the single writer lock. Either way the lease is then taken with a compare-and-set
  `UPDATE … WHERE lease expired`, so a stale read can never hand one phone to two workers.
- **A batch is one pin.** A claim takes up to `batch_size` queued tasks of the device that share the
  head task's cluster, frequency and runtime settings, by priority, then round-robin across jobs
  (`row_number() over (partition by job)`), then FIFO; every claim gets a fresh `lease_token`.
- **Results are accepted once.** Completion updates the task `WHERE lease_token = :token AND status =
  'leased'` and inserts the measurement in the same transaction; a worker whose lease expired (and
  whose task was requeued or re-claimed) matches no row and its result is discarded.
  `measurement.task_id` is UNIQUE as the last line of defence.
- **Nothing is stranded.** Expired task leases go back to the queue (or fail once attempts are used up);
  device errors retry with exponential backoff (`not_before`); a phone with repeated errors goes
  `offline` and is held (`lease_expires_at` in the future, no owner) until its next re-probe is due; each
  failed re-probe counts an attempt against its queued tasks, so a phone that never returns ends them
  `failed` with the reason and its jobs finish.
- **Training is leased work too.** A `training` predictor is claimed like a task (`claim_training`: the
  same skip-locked pick and compare-and-set on an expired lease, an attempt counted per claim); its
  trainer renews the lease while it fits and stores the result only while it still holds it
  (`lock_claimed_predictor`). A trainer that dies leaves a lease that lapses: the predictor is claimed
  and trained again, or — once `max_attempts` claims have lapsed — `failed` with the reason.
- **One runner per campaign.** A `running` bootstrap campaign is stepped only under its lease
  (`claim_campaign`: a compare-and-set on a free or lapsed lease); a step is short (it submits or reads a
  job, queues or scores a training), and a runner that dies mid-step leaves a lease that lapses, so the
  next runner repeats that step from the campaign's rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Result,
    Select,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from profilers.adb.profiler import ProfileRequest
from profilers.adb.records import MeasurementRecord
from profilers.adb.runtime import RUNTIME_FIELDS, RuntimeSettings
from service.campaigns.models import Campaign, CampaignStatus
from service.db import utcnow, write_scope, write_session
from service.devices.models import Device, DeviceStatus
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.measurements.models import Measurement, MeasurementSource, measured_values
from service.predictors.models import Predictor, PredictorStatus

#: First retry waits this long; each further attempt doubles it, up to `RETRY_BACKOFF_MAX_S`.
RETRY_BACKOFF_BASE_S = 1.0
RETRY_BACKOFF_MAX_S = 60.0

#: The measurement `Table` (`Measurement.__table__` is typed as a bare `FromClause`, which `insert` refuses).
_MEASUREMENT_TABLE = Measurement.metadata.tables[Measurement.__tablename__]


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """Rows an UPDATE matched. `Session.execute` is typed to return a `Result`, but a DML statement without
    RETURNING always yields a `CursorResult`, the class that has `rowcount`."""
    return cast("CursorResult[*tuple[Any, ...]]", result).rowcount


@dataclass(frozen=True)
class LeasedDevice:
    """A device this worker holds the lease of; `offline` ones are due for a re-probe."""

    id: int
    serial: str
    transport: str
    address: str | None
    offline: bool


@dataclass(frozen=True)
class ClaimedTask:
    """One task of a claimed batch."""

    id: int
    job_id: int
    family: str
    config: dict[str, Any]
    config_hash: str
    attempts: int


@dataclass(frozen=True)
class ClaimedBatch:
    """Tasks of one device sharing one pin (cluster, frequency) and runtime, under one lease token."""

    device_id: int
    token: str
    cluster: str
    frequency_khz: int | None
    runtime: RuntimeSettings
    tasks: list[ClaimedTask]

    def requests(self) -> list[ProfileRequest]:
        """The batch's tasks as the profiler's requests, in the batch's order."""
        # Built without validating again: each config was parsed and made canonical when its job was
        # submitted, and the runner gets exactly what the task row holds.
        return [
            ProfileRequest.model_construct(
                family=t.family, config=t.config, cluster=self.cluster, frequency_khz=self.frequency_khz
            )
            for t in self.tasks
        ]


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _skip_locked(session: Session, query: Select[Any], *of: Any) -> Select[Any]:
    """Row locks that other workers skip, on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises us."""
    if _is_postgres(session):
        return query.with_for_update(skip_locked=True, of=of or None)
    return query


def _ready(now: dt.datetime) -> Any:
    """Queued tasks whose backoff has passed."""
    return and_(Task.status == TaskStatus.queued, or_(Task.not_before.is_(None), Task.not_before <= now))


def _active_job() -> Any:
    return Task.job_id.in_(select(Job.id).where(Job.status.in_((JobStatus.queued, JobStatus.running))))


def acquire_device(
    factory: sessionmaker[Session],
    owner: str,
    lease_seconds: float,
    device_ids: Collection[int] | None = None,
) -> LeasedDevice | None:
    """Lease one device that has ready tasks (or is offline and due for a re-probe); None when none is free.

    Least recently leased first, so a worker serving several phones visits each in turn.
    """
    now = utcnow()
    with write_session(factory) as session:
        has_work = select(Task.id).where(Task.device_id == Device.id, _ready(now), _active_job()).exists()
        query = (
            select(Device)
            .where(
                Device.enabled.is_(True),
                Device.status != DeviceStatus.disabled,
                or_(Device.lease_expires_at.is_(None), Device.lease_expires_at < now),
                or_(Device.status == DeviceStatus.offline, has_work),
            )
            .order_by(Device.lease_expires_at.asc().nulls_first(), Device.id)
            .limit(1)
        )
        if device_ids is not None:
            query = query.where(Device.id.in_(list(device_ids)))
        device = session.scalars(_skip_locked(session, query, Device)).first()
        if device is None:
            session.rollback()
            return None
        offline = device.status == DeviceStatus.offline
        taken = session.execute(
            update(Device)
            .where(
                Device.id == device.id,
                or_(Device.lease_expires_at.is_(None), Device.lease_expires_at < now),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                status=DeviceStatus.offline if offline else DeviceStatus.busy,
            )
            .execution_options(synchronize_session=False)
        )
        if rowcount(taken) != 1:
            session.rollback()
            return None
        leased = LeasedDevice(
            device.id, device.serial, device.transport.value, device.address, offline=offline
        )
        session.commit()
        return leased


def release_device(
    factory: sessionmaker[Session],
    device_id: int,
    owner: str,
    status: DeviceStatus = DeviceStatus.online,
    hold_seconds: float | None = None,
) -> None:
    """Give a device lease back; `hold_seconds` keeps anyone from leasing it until then (re-probe wait)."""
    now = utcnow()
    # An expired-now lease (rather than NULL) records when the phone was last used: the LRU order.
    until = now + dt.timedelta(seconds=hold_seconds) if hold_seconds else now
    with write_session(factory) as session:
        session.execute(
            update(Device)
            .where(Device.id == device_id, Device.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=until, status=status)
            .execution_options(synchronize_session=False)
        )
        session.commit()


def _renew_device_lease(session: Session, device_id: int, owner: str, expires: dt.datetime) -> bool:
    """Push our device lease to `expires`; False when `owner` no longer holds it (renewing proves holding)."""
    renewed = session.execute(
        update(Device)
        .where(Device.id == device_id, Device.lease_owner == owner)
        .values(lease_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    return rowcount(renewed) == 1


def claim_batch(
    factory: sessionmaker[Session], device_id: int, owner: str, batch_size: int, lease_seconds: float
) -> ClaimedBatch | None:
    """Lease up to `batch_size` ready tasks of a device this worker holds, sharing one pin and runtime."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=lease_seconds)
    with write_session(factory) as session:
        if not _renew_device_lease(session, device_id, owner, expires):
            session.rollback()
            return None
        eligible = (Task.device_id == device_id, _ready(now), _active_job())
        # Each runtime setting has a task column of its name: the batch follows the settings' fields.
        runtime_columns = [getattr(Task, name) for name in RUNTIME_FIELDS]
        head = session.execute(
            select(Task.cluster, Task.frequency_khz, *runtime_columns)
            .where(*eligible)
            .order_by(Task.priority.desc(), Task.id)
            .limit(1)
        ).first()
        if head is None:
            session.rollback()
            return None
        cluster, khz, *settings = head
        runtime = RuntimeSettings.model_validate(dict(zip(RUNTIME_FIELDS, settings, strict=True)))
        same_pin = (
            Task.cluster == cluster,
            Task.frequency_khz.is_(None) if khz is None else Task.frequency_khz == khz,
            *(column == value for column, value in zip(runtime_columns, settings, strict=True)),
        )
        turn = func.row_number().over(partition_by=Task.job_id, order_by=(Task.priority.desc(), Task.id))
        ranked = select(Task.id, Task.priority, turn.label("turn")).where(*eligible, *same_pin).subquery()
        ordered = list(
            session.scalars(
                select(ranked.c.id)
                .order_by(ranked.c.priority.desc(), ranked.c.turn, ranked.c.id)
                .limit(batch_size)
            )
        )
        # Rows a concurrent cancel holds are skipped rather than waited for.
        lockable = set(
            session.scalars(_skip_locked(session, select(Task.id).where(Task.id.in_(ordered)), Task))
        )
        ids = [task_id for task_id in ordered if task_id in lockable]
        token = uuid.uuid4().hex
        session.execute(
            update(Task)
            .where(Task.id.in_(ids), Task.status == TaskStatus.queued)
            .values(
                status=TaskStatus.leased,
                lease_owner=owner,
                lease_token=token,
                lease_expires_at=expires,
                attempts=Task.attempts + 1,
                started_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(Task.id, Task.job_id, Task.family, Task.config, Task.config_hash, Task.attempts)
            .where(Task.lease_token == token)
            .order_by(Task.priority.desc(), Task.id)
        ).all()
        if not rows:
            session.rollback()
            return None
        tasks = [ClaimedTask(*row) for row in rows]
        # Keep the fair interleaving chosen above.
        order = {task_id: i for i, task_id in enumerate(ids)}
        tasks.sort(key=lambda t: order[t.id])
        session.execute(
            update(Job)
            .where(Job.id.in_({t.job_id for t in tasks}), Job.status == JobStatus.queued)
            .values(status=JobStatus.running, started_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return ClaimedBatch(device_id, token, cluster, khz, runtime, tasks)


def extend_leases(
    factory: sessionmaker[Session], device_id: int, owner: str, token: str, lease_seconds: float
) -> bool:
    """Heartbeat: push the device lease and the batch's task leases forward; False when the device is lost."""
    expires = utcnow() + dt.timedelta(seconds=lease_seconds)
    with write_session(factory) as session:
        held = _renew_device_lease(session, device_id, owner, expires)
        session.execute(
            update(Task)
            .where(Task.lease_token == token, Task.status == TaskStatus.leased)
            .values(lease_expires_at=expires)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return held


def complete_task(
    factory: sessionmaker[Session], task_id: int, token: str, record: MeasurementRecord, duration_s: float
) -> bool:
    """Store a task's measurement and mark it done, atomically, if `token` still holds its lease.

    Returns False (and writes nothing) for a result that arrives after the lease moved on. The record is
    stored as it is (`measured_values`); the task adds where it belongs (device, job, task).
    """
    now = utcnow()
    with write_session(factory) as session:
        if _is_postgres(session):
            # Don't wait for the WAL flush (~7 ms here, most of a completion's cost). A PostgreSQL crash
            # can only lose the last completions whole (task row and measurement revert together): the
            # task is then leased with an expiring lease and simply measured again. Claims stay synchronous.
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        # One round trip marks the task done and returns what the measurement row needs.
        task = session.execute(
            update(Task)
            .where(Task.id == task_id, Task.lease_token == token, Task.status == TaskStatus.leased)
            .values(
                status=TaskStatus.done,
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                finished_at=now,
                duration_s=duration_s,
                last_error=None,
            )
            .returning(Task.device_id, Task.job_id, Task.config_hash)
            .execution_options(synchronize_session=False)
        ).first()
        if task is None:
            session.rollback()
            return False
        if task.config_hash != record.config_hash:
            session.rollback()
            raise ValueError(
                f"task {task_id} measures config {task.config_hash[:12]}…, "
                f"the record is of {record.config_hash[:12]}…"
            )
        session.execute(
            insert(_MEASUREMENT_TABLE).values(
                **measured_values(record),
                device_id=task.device_id,
                source=MeasurementSource.measured,
                job_id=task.job_id,
                task_id=task_id,
                created_at=now,
            )
        )
        observed = record.observed_frequency_khz
        session.execute(
            update(Device)
            .where(Device.id == task.device_id)
            .values(
                consecutive_failures=0,
                last_seen_at=now,
                last_error=None,
                temperature_c=record.temperature_after_c,
                current_frequencies_khz={record.cluster: observed} if observed else {},
            )
            .execution_options(synchronize_session=False)
        )
        try:
            session.commit()
        except IntegrityError:
            # measurement.task_id is unique: a second result for one task is never stored.
            session.rollback()
            return False
        return True


def retry_delay_s(attempts: int) -> float:
    """Backoff before attempt `attempts + 1`: 1 s, 2 s, 4 s … capped at a minute."""
    return min(RETRY_BACKOFF_BASE_S * 2.0 ** max(attempts - 1, 0), RETRY_BACKOFF_MAX_S)


def fail_task(
    factory: sessionmaker[Session], task_id: int, token: str, reason: str, max_attempts: int
) -> TaskStatus | None:
    """A task's attempt failed: back to the queue after a backoff, or `failed` once attempts are used up."""
    now = utcnow()
    with write_session(factory) as session:
        attempts = session.scalar(
            select(Task.attempts).where(
                Task.id == task_id, Task.lease_token == token, Task.status == TaskStatus.leased
            )
        )
        if attempts is None:
            session.rollback()
            return None
        final = attempts >= max_attempts
        status = TaskStatus.failed if final else TaskStatus.queued
        message = f"attempt {attempts} of {max_attempts}: {reason}"
        session.execute(
            update(Task)
            .where(Task.id == task_id, Task.lease_token == token)
            .values(
                status=status,
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                last_error=message,
                finished_at=now if final else None,
                not_before=None if final else now + dt.timedelta(seconds=retry_delay_s(attempts)),
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return status


def release_tasks(factory: sessionmaker[Session], task_ids: Sequence[int], token: str) -> int:
    """Put claimed tasks that never ran back in the queue, without counting an attempt."""
    if not task_ids:
        return 0
    with write_session(factory) as session:
        result = session.execute(
            update(Task)
            .where(Task.id.in_(list(task_ids)), Task.lease_token == token, Task.status == TaskStatus.leased)
            .values(
                status=TaskStatus.queued,
                attempts=Task.attempts - 1,
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return rowcount(result)


def requeue_expired(factory: sessionmaker[Session], max_attempts: int) -> int:
    """Return tasks whose lease expired (their worker died or hung) to the queue; returns how many."""
    now = utcnow()
    expired = (Task.status == TaskStatus.leased, Task.lease_expires_at < now)
    with write_session(factory) as session:
        failed = session.execute(
            update(Task)
            .where(*expired, Task.attempts >= max_attempts)
            .values(
                status=TaskStatus.failed,
                finished_at=now,
                last_error=func.coalesce(Task.last_error, "")
                + f" lease expired on attempt {max_attempts} of {max_attempts} (worker lost)",
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        requeued = session.execute(
            update(Task)
            .where(*expired)
            .values(
                status=TaskStatus.queued,
                last_error="the lease expired (worker lost); requeued",
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        # A phone whose worker vanished is not busy any more.
        session.execute(
            update(Device)
            .where(Device.status == DeviceStatus.busy, Device.lease_expires_at < now)
            .values(status=DeviceStatus.online, lease_owner=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return rowcount(failed) + rowcount(requeued)


def record_device_failure(
    factory: sessionmaker[Session], device_id: int, reason: str, failures_offline: int
) -> bool:
    """Count a device error; True when it reached `failures_offline` in a row and the phone is now offline."""
    with write_session(factory) as session:
        session.execute(
            update(Device)
            .where(Device.id == device_id)
            .values(consecutive_failures=Device.consecutive_failures + 1, last_error=reason)
            .execution_options(synchronize_session=False)
        )
        failures = session.scalar(select(Device.consecutive_failures).where(Device.id == device_id)) or 0
        offline = failures >= failures_offline
        if offline:
            session.execute(
                update(Device)
                .where(Device.id == device_id)
                .values(
                    status=DeviceStatus.offline,
                    last_error=f"{failures} failures in a row, marked offline; last: {reason}",
                )
                .execution_options(synchronize_session=False)
            )
        session.commit()
        return offline


def charge_offline_device(
    factory: sessionmaker[Session], device_id: int, reason: str, max_attempts: int
) -> int:
    """A re-probe of an offline phone failed: count an attempt on its queued tasks, failing exhausted ones.

    Returns how many tasks failed now. This is what ends the jobs of a phone that never comes back.
    """
    now = utcnow()
    queued = (Task.device_id == device_id, Task.status == TaskStatus.queued)
    with write_session(factory) as session:
        session.execute(
            update(Task)
            .where(*queued)
            .values(attempts=Task.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        failed = session.execute(
            update(Task)
            .where(*queued, Task.attempts >= max_attempts)
            .values(
                status=TaskStatus.failed,
                finished_at=now,
                last_error=f"device offline, gave up after {max_attempts} attempts: {reason}",
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return rowcount(failed)


# -- training leases ----------------------------------------------------------------------------------------
def training_lease(owner: str, lease_seconds: float) -> dict[str, Any]:
    """Column values of a fresh training lease held by `owner` (a claim, or a predictor created claimed)."""
    return {"lease_owner": owner, "lease_expires_at": utcnow() + dt.timedelta(seconds=lease_seconds)}


def _lease_free(now: dt.datetime) -> Any:
    return or_(Predictor.lease_expires_at.is_(None), Predictor.lease_expires_at < now)


def claim_training(
    factory: sessionmaker[Session],
    owner: str,
    lease_seconds: float,
    max_attempts: int,
    predictor_id: int | None = None,
) -> int | None:
    """Lease the oldest `training` predictor nobody holds (or `predictor_id`); its id, or None.

    First, predictors whose lease lapsed `max_attempts` times are failed with the reason: their trainers
    died each time (a process killed, a machine lost), so another run would likely die too.
    """
    now = utcnow()
    training = Predictor.status == PredictorStatus.training
    with factory() as session:
        # An idle poll is one read: SQLite's write lock is taken only when there is something to claim.
        if session.scalar(select(Predictor.id).where(training, _lease_free(now)).limit(1)) is None:
            return None
    with write_session(factory) as session:
        session.execute(
            update(Predictor)
            .where(training, Predictor.lease_expires_at < now, Predictor.attempts >= max_attempts)
            .values(
                status=PredictorStatus.failed,
                error=f"training was interrupted {max_attempts} time{'s' if max_attempts != 1 else ''} "
                "(its process died or lost the database before finishing); giving up — retrain with "
                "POST /v1/predictors",
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        query = select(Predictor.id).where(training, _lease_free(now)).order_by(Predictor.id).limit(1)
        if predictor_id is not None:
            query = query.where(Predictor.id == predictor_id)
        found = session.scalars(_skip_locked(session, query, Predictor)).first()
        if found is None:
            session.commit()  # the sweep above
            return None
        taken = session.execute(
            update(Predictor)
            .where(Predictor.id == found, training, _lease_free(now))
            .values(attempts=Predictor.attempts + 1, **training_lease(owner, lease_seconds))
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return found if rowcount(taken) == 1 else None


def _held_by(predictor_id: int, owner: str) -> tuple[ColumnElement[bool], ...]:
    """The rows of a `training` predictor whose lease `owner` still holds."""
    return (
        Predictor.id == predictor_id,
        Predictor.lease_owner == owner,
        Predictor.status == PredictorStatus.training,
    )


def _update_held_training(
    factory: sessionmaker[Session], predictor_id: int, owner: str, **values: Any
) -> bool:
    """Set `values` on the training if `owner` still holds its lease; False when it does not."""
    with write_session(factory) as session:
        updated = session.execute(
            update(Predictor)
            .where(*_held_by(predictor_id, owner))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return rowcount(updated) == 1


def extend_training_lease(
    factory: sessionmaker[Session], predictor_id: int, owner: str, lease_seconds: float
) -> bool:
    """Heartbeat of a training: push its lease forward; False when `owner` no longer holds it."""
    expires = utcnow() + dt.timedelta(seconds=lease_seconds)
    return _update_held_training(factory, predictor_id, owner, lease_expires_at=expires)


def release_training(factory: sessionmaker[Session], predictor_id: int, owner: str) -> bool:
    """Give a training back unfinished (a graceful stop), without counting the attempt: the next trainer
    claims it at once. Whatever the old run computes later is not stored (it no longer holds the lease)."""
    return _update_held_training(
        factory, predictor_id, owner, lease_owner=None, lease_expires_at=None, attempts=Predictor.attempts - 1
    )


def lock_claimed_predictor(session: Session, predictor_id: int, owner: str) -> Predictor | None:
    """Inside a write transaction: the `training` predictor if `owner` still holds its lease (row locked on
    PostgreSQL until commit, so no re-claim slips in between), else None — the result must be dropped."""
    predictor = session.scalars(
        select(Predictor).where(*_held_by(predictor_id, owner)).with_for_update()
    ).first()
    if predictor is not None:
        predictor.lease_owner = None
        predictor.lease_expires_at = None
    return predictor


# -- campaign leases ----------------------------------------------------------------------------------------
def _campaign_free(now: dt.datetime) -> Any:
    return or_(Campaign.lease_expires_at.is_(None), Campaign.lease_expires_at < now)


def steppable_campaigns(factory: sessionmaker[Session]) -> list[int]:
    """Ids of running campaigns nobody holds now (a read; each is then claimed with `claim_campaign`)."""
    with factory() as session:
        query = select(Campaign.id).where(Campaign.status == CampaignStatus.running, _campaign_free(utcnow()))
        return list(session.scalars(query.order_by(Campaign.id)))


def claim_campaign(
    factory: sessionmaker[Session], campaign_id: int, owner: str, lease_seconds: float
) -> bool:
    """Lease a running campaign for one step (compare-and-set on a free or lapsed lease); False when taken."""
    now = utcnow()
    with write_scope(factory) as session:
        taken = session.execute(
            update(Campaign)
            .where(
                Campaign.id == campaign_id,
                Campaign.status == CampaignStatus.running,
                _campaign_free(now),
            )
            .values(lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return rowcount(taken) == 1


def release_campaign(factory: sessionmaker[Session], campaign_id: int, owner: str) -> None:
    """Give a campaign's lease back after a step (if `owner` still holds it)."""
    with write_scope(factory) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
