"""`/v1/jobs`: submit, list, inspect and cancel profiling jobs (thin: parse, call the domain, shape)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.bounds import Cursor, PathId
from service.deps import JobReader, ProfileAccess, SessionDep, SettingsDep
from service.jobs import service
from service.jobs.models import JobStatus
from service.jobs.schemas import JobCreate, JobOut, TaskOut
from service.pagination import Page
from service.problems import problem_responses

router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401, 403, 404, 409, 413, 422)
)


@router.post("", status_code=202, response_model=JobOut)
def submit_job(body: JobCreate, session: SessionDep, settings: SettingsDep, who: ProfileAccess) -> JobOut:
    job = service.create_job(session, body, settings, created_by=who.name)
    return service.job_out(session, job)


@router.get("", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep,
    settings: SettingsDep,
    owner: JobReader,
    status: JobStatus | None = None,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[JobOut]:
    rows, next_cursor = service.list_jobs(
        session, status=status, created_by=owner, cursor=cursor, limit=min(limit, settings.page_size_max)
    )
    return Page[JobOut](items=[service.job_out(session, j) for j in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: PathId, session: SessionDep, owner: JobReader) -> JobOut:
    return service.job_out(session, service.get_job(session, job_id, created_by=owner))


@router.get("/{job_id}/tasks", response_model=Page[TaskOut])
def list_tasks(
    job_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    owner: JobReader,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[TaskOut]:
    rows, next_cursor = service.list_tasks(
        session, job_id, created_by=owner, cursor=cursor, limit=min(limit, settings.page_size_max)
    )
    return Page[TaskOut](items=[TaskOut.model_validate(t) for t in rows], next_cursor=next_cursor)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: PathId, session: SessionDep, _: ProfileAccess) -> JobOut:
    return service.job_out(session, service.cancel_job(session, job_id))
