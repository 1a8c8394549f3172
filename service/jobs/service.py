"""Profiling jobs: expansion of a request into tasks, validation, status, counts, ETA and cancel.

A request is validated completely before anything is written: the family and every config, every device
(exists, enabled, probed), the compute unit (a CPU cluster, `gpu` or `npu`: `service.devices.units`), the
precision it runs, the accelerator option that reaches it, every frequency against its clock table (an
accelerator without one runs unpinned, frequency None), and the task
count against `max_tasks_per_job` (computed before a sampler draws anything). Tasks are device × config ×
frequency, inserted in bulk (an `uncertainty` sampler picks each device's configs with that device's
active predictor); a task whose identical valid measurement exists becomes `reused` unless `force`. The
lease machinery that runs the tasks is in `service.jobs.queue`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from profilers.adb.units import check_precision, resolve_accelerator
from profilers.blocks import BlockConfigError, BlockFamily, canonical_json, config_hash, get_family
from service.db import begin_write, utcnow
from service.devices.models import Device
from service.devices.units import device_units
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.jobs.queue import rowcount
from service.jobs.sampling import candidate_configs, parse_space, planned_count, sample_configs
from service.jobs.schemas import JobCreate, JobOut, SamplerSpec
from service.measurements.models import Measurement
from service.pagination import keyset_page
from service.predictors.service import select_uncertain
from service.problems import ConflictError, InvalidInputError, NotFoundError
from service.settings import Settings

_ACTIVE = (JobStatus.queued, JobStatus.running)
_OPEN_TASKS = (TaskStatus.queued, TaskStatus.leased)
_INSERT_CHUNK = 5_000
_LOOKUP_CHUNK = 500


def _family(name: str) -> BlockFamily:
    try:
        return get_family(name)
    except BlockConfigError as exc:
        raise InvalidInputError.at(["body", "family"], str(exc)) from None


def _listed_configs(family: BlockFamily, configs: list[dict[str, Any]]) -> list[BaseModel]:
    parsed: list[BaseModel] = []
    errors: list[dict[str, Any]] = []
    for i, raw in enumerate(configs):
        try:
            parsed.append(family.parse(raw))
        except ValidationError as exc:
            for err in exc.errors():
                errors.append({"loc": ["body", "configs", i, *err["loc"]], "msg": err["msg"]})
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(
            f"{len(errors)} invalid {family.name} config field(s); first at {where}: {first['msg']}",
            errors=errors[:100],
        )
    return parsed


def _select_devices(session: Session, data: JobCreate) -> list[tuple[Device, list[str | int]]]:
    """The job's devices, each with the request location that named it (for error messages)."""
    if data.devices is not None:
        chosen: list[tuple[Device, list[str | int]]] = []
        for i, device_id in enumerate(dict.fromkeys(data.devices)):
            loc: list[str | int] = ["body", "devices", i]
            device = session.get(Device, device_id)
            if device is None:
                raise InvalidInputError.at(loc, f"device {device_id} does not exist")
            if not device.enabled:
                raise InvalidInputError.at(loc, f"device {device_id} is disabled; enable it first")
            chosen.append((device, loc))
        return chosen
    selector = data.selector
    assert selector is not None  # the schema guarantees one of devices | selector
    wanted = set(selector.tags)
    query = select(Device).where(Device.enabled.is_(True)).order_by(Device.id)
    if selector.model is not None:
        query = query.where(Device.model == selector.model)
    found = [d for d in session.scalars(query) if wanted <= set(d.tags or [])]
    if not found:
        raise InvalidInputError.at(["body", "selector"], "no enabled device matches the selector")
    return [(d, ["body", "selector"]) for d in found]


def _fastest_cluster(device: Device) -> str:
    fastest: str = max(device.clusters, key=lambda c: max(c.get("frequencies_khz") or [0]))["name"]
    return fastest


@dataclass(frozen=True)
class DevicePlan:
    """What a job runs on one device: the compute unit, its clocks (None: unpinned) and the resolved
    accelerator option (the unit's default when the request names none, as the profiler records it)."""

    device: Device
    unit: str
    frequencies: tuple[int | None, ...]
    accelerator: str


def device_plan(data: JobCreate, device: Device, loc: list[str | int]) -> DevicePlan:
    """The unit, frequencies and accelerator option this job runs on `device`, checked against what the
    device was probed with: the unit exists there, runs the precision, is reached by the accelerator option,
    and has every requested frequency in its clock table."""
    if not device.clusters:
        raise InvalidInputError.at(
            loc,
            f"device {device.id} was never probed (no CPU clusters known); "
            f"probe it first: POST /v1/devices/{device.id}/probe",
        )
    runtime = data.runtime
    name = runtime.unit or _fastest_cluster(device)
    units = device_units(device)
    unit = next((u for u in units if u.name == name), None)
    if unit is None:
        names = ", ".join(u.name for u in units)
        raise InvalidInputError.at(
            ["body", "runtime", "unit"], f"device {device.id} has no unit {name!r} (it has: {names})"
        )
    try:
        check_precision(name, runtime.precision, unit.precisions)
    except ValueError as exc:
        raise InvalidInputError.at(["body", "runtime", "precision"], f"device {device.id}: {exc}") from None
    try:
        accelerator = resolve_accelerator(runtime.benchmark, name, runtime.accelerator)
    except ValueError as exc:
        raise InvalidInputError.at(["body", "runtime", "accelerator"], str(exc)) from None
    table = unit.frequencies_khz
    if not table and unit.kind == "cpu":
        raise InvalidInputError.at(loc, f"device {device.id} has no frequency table for cluster {name!r}")
    if not table:
        # An accelerator without a clock table cannot be pinned: it runs at its governor's choice.
        if isinstance(data.frequencies, list):
            raise InvalidInputError.at(
                ["body", "frequencies"],
                f"the {name} of device {device.id} has no clock table, so no clock of it can be pinned; "
                "leave frequencies out (it runs unpinned)",
            )
        return DevicePlan(device, name, (None,), accelerator)
    if data.frequencies == "all":
        return DevicePlan(device, name, tuple(table), accelerator)
    if data.frequencies == "min-mid-max":
        spread = sorted({table[0], table[len(table) // 2], table[-1]})
        return DevicePlan(device, name, tuple(spread), accelerator)
    for i, khz in enumerate(data.frequencies):
        if khz not in table:
            raise InvalidInputError.at(
                ["body", "frequencies", i],
                f"{khz} kHz is not a frequency of device {device.id}'s {name!r} unit; its table: {table}",
            )
    return DevicePlan(device, name, tuple(sorted(set(data.frequencies))), accelerator)


def _check_cap(n_configs: int, plans: list[DevicePlan], cap: int) -> None:
    total = n_configs * sum(len(plan.frequencies) for plan in plans)
    if total > cap:
        raise InvalidInputError.at(
            ["body"],
            f"the job expands to {total} tasks ({n_configs} configs × devices × frequencies); the limit is "
            f"{cap} tasks per job (LATFARM_MAX_TASKS_PER_JOB): split it into smaller jobs",
        )


def _runtime_columns(data: JobCreate, plan: DevicePlan) -> dict[str, Any]:
    """The runtime settings of the job on `plan`'s device, by field (the task and measurement columns
    holding them share the names); the accelerator option resolved for the plan's unit."""
    return {**data.runtime.as_settings().model_dump(), "accelerator": plan.accelerator}


def _existing_measurements(
    session: Session, family: str, hashes: list[str], plan: DevicePlan, data: JobCreate
) -> set[tuple[str, int | None]]:
    """(config hash, frequency) of valid measurements on the plan's device and unit taken with the job's
    runtime: every setting compared (benchmark, precision, accelerator, layer profile too), so a GPU fp16
    measurement never stands in for an fp32 one."""
    found: set[tuple[str, int | None]] = set()
    # Same settings, field by field (each runtime setting has a measurement column of its name).
    runtime = _runtime_columns(data, plan)
    same_runtime = [getattr(Measurement, n) == v for n, v in runtime.items() if n != "accelerator"]
    # A row without an accelerator option (measured before options were recorded) ran the default one.
    same_option = Measurement.accelerator == plan.accelerator
    if plan.accelerator == resolve_accelerator(data.runtime.benchmark, plan.unit, None):
        same_option = or_(same_option, Measurement.accelerator.is_(None))
    same_runtime.append(same_option)
    for start in range(0, len(hashes), _LOOKUP_CHUNK):
        chunk = hashes[start : start + _LOOKUP_CHUNK]
        rows = session.execute(
            select(Measurement.config_hash, Measurement.frequency_khz).where(
                Measurement.family == family,
                Measurement.device_id == plan.device.id,
                Measurement.cluster == plan.unit,
                Measurement.config_hash.in_(chunk),
                Measurement.valid.is_(True),
                *same_runtime,
            )
        )
        found.update((r[0], r[1]) for r in rows)
    return found


def _unique(family: BlockFamily, configs: list[BaseModel]) -> dict[str, dict[str, Any]]:
    """Config hash → canonical document, one per distinct config (repeats in a request count once)."""
    unique: dict[str, dict[str, Any]] = {}
    for config in configs:
        unique.setdefault(config_hash(family.name, config), _canonical(family.name, config))
    return unique


def _uncertain_configs(
    session: Session,
    family: BlockFamily,
    sampler: SamplerSpec,
    plans: list[DevicePlan],
    settings: Settings,
    precision: str,
) -> list[dict[str, dict[str, Any]]]:
    """Per device, the `n` random candidates with the widest p10–p90 band under its active predictor, on
    the job's unit and `precision`.

    The band is read at the first (lowest) of the job's frequencies on that device: one frequency keeps the
    ranking one predictor pass, and the relative band width barely moves with frequency. A device without
    an active predictor answers 409 before anything is written.
    """
    if sampler.candidate_count > settings.max_predict_configs:
        raise InvalidInputError.at(
            ["body", "sampler", "candidates"],
            f"{sampler.candidate_count} candidates to rank; at most {settings.max_predict_configs} "
            "(LATFARM_MAX_PREDICT_CONFIGS) — lower candidates or n",
        )
    for plan in plans:
        if plan.frequencies[0] is None:
            raise InvalidInputError.at(
                ["body", "sampler", "strategy"],
                f"the {plan.unit} of device {plan.device.id} runs unpinned (no clock table): the uncertainty "
                "sampler ranks at a clock; use another strategy",
            )
    candidates = _unique(family, candidate_configs(family, sampler))
    documents = list(candidates.values())
    chosen: list[dict[str, dict[str, Any]]] = []
    for plan in plans:
        lowest = plan.frequencies[0]
        assert lowest is not None
        # Ranked on the job's unit and precision: a GPU fp16 campaign asks where the GPU fp16 model is unsure.
        picked = select_uncertain(
            session,
            plan.device.id,
            family.name,
            documents,
            int(sampler.n or 0),
            lowest,
            unit=plan.unit,
            precision=precision,
        )
        chosen.append({config_hash(family.name, doc): doc for doc in picked})
    return chosen


def create_job(session: Session, data: JobCreate, settings: Settings, created_by: str | None) -> Job:
    """Validate a job request, expand it into tasks (bulk insert) and queue it; 4xx writes nothing."""
    begin_write(session)
    family = _family(data.family)
    plans = [device_plan(data, device, loc) for device, loc in _select_devices(session, data)]
    # The configs of each plan's device: the same for all, except under uncertainty sampling.
    per_device: list[dict[str, dict[str, Any]]]
    if data.configs is not None:
        _check_cap(len(data.configs), plans, settings.max_tasks_per_job)
        per_device = [_unique(family, _listed_configs(family, data.configs))] * len(plans)
    else:
        sampler = data.sampler
        assert sampler is not None
        planned = planned_count(sampler, parse_space(family, sampler.space))
        _check_cap(planned, plans, settings.max_tasks_per_job)
        if sampler.strategy == "uncertainty":
            per_device = _uncertain_configs(session, family, sampler, plans, settings, data.runtime.precision)
        else:
            per_device = [_unique(family, sample_configs(family, sampler))] * len(plans)

    reusable = [
        set() if data.force else _existing_measurements(session, family.name, list(unique), plan, data)
        for plan, unique in zip(plans, per_device, strict=True)
    ]

    now = utcnow()
    job = Job(
        family=family.name,
        spec=data.model_dump(mode="json"),
        status=JobStatus.queued,
        priority=data.priority,
        total_tasks=0,
        created_by=created_by,
        created_at=now,
    )
    session.add(job)
    session.flush()
    rows: list[dict[str, Any]] = []
    for plan, unique, found in zip(plans, per_device, reusable, strict=True):
        runtime = _runtime_columns(data, plan)
        # Grouped by frequency so a worker's batch (one pin) finds its tasks next to each other.
        for khz in plan.frequencies:
            for digest, config in unique.items():
                reused = (digest, khz) in found
                rows.append(
                    {
                        "job_id": job.id,
                        "device_id": plan.device.id,
                        "family": family.name,
                        "config": config,
                        "config_hash": digest,
                        "cluster": plan.unit,
                        "frequency_khz": khz,
                        **runtime,
                        "priority": data.priority,
                        "status": TaskStatus.reused if reused else TaskStatus.queued,
                        "attempts": 0,
                        "created_at": now,
                        "finished_at": now if reused else None,
                    }
                )
    job.total_tasks = len(rows)
    for start in range(0, len(rows), _INSERT_CHUNK):
        session.execute(insert(Task), rows[start : start + _INSERT_CHUNK])
    if all(r["status"] is TaskStatus.reused for r in rows):
        job.status, job.started_at, job.finished_at = JobStatus.done, now, now
    session.commit()
    return job


def _canonical(family: str, config: BaseModel) -> dict[str, Any]:
    canonical: dict[str, Any] = json.loads(canonical_json(family, config))
    return canonical


def get_job(session: Session, job_id: int, *, created_by: str | None = None) -> Job:
    """The job with this id (only if `created_by` submitted it, when given), or `NotFoundError`."""
    job = session.get(Job, job_id)
    if job is None or (created_by is not None and job.created_by != created_by):
        mine = f" among the jobs {created_by!r} submitted" if created_by is not None else ""
        raise NotFoundError(f"job {job_id} does not exist{mine}")
    return job


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    created_by: str | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> tuple[list[Job], int | None]:
    """A page of jobs (only those `created_by` submitted, when given), newest first; the cursor is the
    last id seen."""
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if created_by is not None:
        query = query.where(Job.created_by == created_by)
    return keyset_page(session, query, Job.id, cursor=cursor, limit=limit, newest_first=True)


def list_tasks(
    session: Session,
    job_id: int,
    *,
    created_by: str | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> tuple[list[Task], int | None]:
    """A page of a job's tasks by id; the cursor is the last id seen."""
    get_job(session, job_id, created_by=created_by)
    query = select(Task).where(Task.job_id == job_id)
    return keyset_page(session, query, Task.id, cursor=cursor, limit=limit)


def task_counts(session: Session, job_id: int) -> dict[str, int]:
    """Tasks of a job by status; `running` counts the leased ones."""
    counts = dict.fromkeys(("queued", "running", "done", "reused", "failed", "cancelled"), 0)
    for status, n in session.execute(
        select(Task.status, func.count()).where(Task.job_id == job_id).group_by(Task.status)
    ):
        key = "running" if status == TaskStatus.leased else str(status.value)
        counts[key] = int(n)
    return counts


def estimate_seconds(session: Session, job: Job) -> float | None:
    """Seconds left: mean task duration × the longest per-device backlog (devices run in parallel)."""
    if job.status not in _ACTIVE:
        return None
    backlog = Counter(
        dict(
            session.execute(
                select(Task.device_id, func.count())
                .where(Task.job_id == job.id, Task.status.in_(_OPEN_TASKS))
                .group_by(Task.device_id)
            ).all()
        )
    )
    if not backlog:
        return 0.0
    mean = session.scalar(
        select(func.avg(Task.duration_s)).where(Task.job_id == job.id, Task.duration_s.is_not(None))
    )
    if mean is None:
        # Nothing of this job has finished yet: borrow recent durations on the same devices.
        mean = session.scalar(
            select(func.avg(Task.duration_s)).where(
                Task.device_id.in_(list(backlog)), Task.duration_s.is_not(None)
            )
        )
    return None if mean is None else float(mean) * max(backlog.values())


def job_out(session: Session, job: Job) -> JobOut:
    """The response body of a job: its row, its counts by status and its ETA."""
    return JobOut(
        id=job.id,
        family=job.family,
        status=job.status,
        priority=job.priority,
        total_tasks=job.total_tasks,
        counts=task_counts(session, job.id),
        eta_seconds=estimate_seconds(session, job),
        error=job.error,
        spec=job.spec,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def cancel_job(session: Session, job_id: int) -> Job:
    """Cancel a job: queued tasks become `cancelled` at once, leased ones finish and keep their results."""
    begin_write(session)
    job = get_job(session, job_id)
    if job.status not in _ACTIVE:
        raise ConflictError(f"job {job_id} is {job.status.value} already; only queued or running jobs cancel")
    now = utcnow()
    session.execute(
        update(Task)
        .where(Task.job_id == job_id, Task.status == TaskStatus.queued)
        .values(status=TaskStatus.cancelled, finished_at=now, last_error="job cancelled")
    )
    job.status, job.finished_at = JobStatus.cancelled, now
    session.commit()
    return job


def settle_jobs(session: Session) -> int:
    """Close jobs whose tasks have all ended (`done`, or `failed` naming the first failure); returns how many.

    Also cancels tasks of cancelled jobs that a retry or an expired lease put back in the queue. Every
    update re-checks its condition, so workers running this at the same time cannot close a job twice.
    """
    now = utcnow()
    session.execute(
        update(Task)
        .where(
            Task.status == TaskStatus.queued,
            Task.job_id.in_(select(Job.id).where(Job.status == JobStatus.cancelled)),
        )
        .values(status=TaskStatus.cancelled, finished_at=now, last_error="job cancelled")
    )
    open_task = exists().where(Task.job_id == Job.id, Task.status.in_(_OPEN_TASKS))
    candidates = list(session.scalars(select(Job.id).where(Job.status.in_(_ACTIVE), ~open_task)))
    settled = 0
    for job_id in candidates:
        first_reason = session.scalar(
            select(Task.last_error)
            .where(Task.job_id == job_id, Task.status == TaskStatus.failed)
            .order_by(Task.id)
            .limit(1)
        )
        n_failed = session.scalar(
            select(func.count()).where(Task.job_id == job_id, Task.status == TaskStatus.failed)
        )
        values: dict[str, Any] = {"finished_at": now, "status": JobStatus.done}
        if n_failed:
            values["status"] = JobStatus.failed
            values["error"] = f"{n_failed} task(s) failed; first: {first_reason}"
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(_ACTIVE), ~open_task)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        settled += rowcount(result)
    session.commit()
    return settled
