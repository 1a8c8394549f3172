"""`/v1/measurements`: query (JSON pages, streamed CSV/Parquet) and import (thin: parse, call, shape)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from profilers.adb.units import BenchmarkProgram, Precision
from service.bounds import Cursor, PathId, QueryInt, Text, Timestamp
from service.deps import ProfileAccess, ReadAccess, SessionDep, SettingsDep
from service.measurements import service
from service.measurements.models import MeasurementSource
from service.measurements.schemas import ImportResult, MeasurementImport, MeasurementOut
from service.pagination import Page
from service.problems import InvalidInputError, problem_responses

router = APIRouter(
    prefix="/v1/measurements", tags=["measurements"], responses=problem_responses(401, 403, 404, 413, 422)
)

_MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
_EXPORT_SCHEMA = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "",
    response_model=Page[MeasurementOut],
    responses={
        200: {
            "description": "a page (`format=json`), or every match streamed as CSV or Parquet",
            "content": dict.fromkeys(_MEDIA.values(), _EXPORT_SCHEMA),
        }
    },
)
def list_measurements(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: ReadAccess,
    device: PathId | None = None,
    family: Text | None = None,
    job: PathId | None = None,
    unit: Annotated[Text | None, Query(description="compute unit: a CPU cluster's name, gpu or npu")] = None,
    cluster: Annotated[Text | None, Query(description="the unit (its former name)")] = None,
    precision: Precision | None = None,
    benchmark: BenchmarkProgram | None = None,
    accelerator: Text | None = None,
    frequency_khz: QueryInt | None = None,
    config_hash: Text | None = None,
    valid: bool | None = None,
    source: MeasurementSource | None = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
    format: Literal["json", "csv", "parquet"] = "json",
) -> Page[MeasurementOut] | StreamingResponse:
    if unit is not None and cluster is not None and unit != cluster:
        raise InvalidInputError.at(
            ["query", "unit"], f"unit {unit!r} and cluster {cluster!r} differ: give one"
        )
    filters = service.MeasurementFilter(
        device_id=device,
        family=family,
        job_id=job,
        cluster=unit if unit is not None else cluster,
        precision=precision,
        benchmark=benchmark,
        accelerator=accelerator,
        frequency_khz=frequency_khz,
        config_hash=config_hash,
        valid=valid,
        source=source,
        since=_aware(since),
        until=_aware(until),
    )
    if format != "json":
        return StreamingResponse(
            service.open_export(request.app.state.sessionmaker, filters, format),
            media_type=_MEDIA[format],
            headers={"Content-Disposition": f'attachment; filename="measurements.{format}"'},
        )
    rows, next_cursor = service.query_measurements(
        session, filters, cursor=cursor, limit=min(limit, settings.page_size_max)
    )
    return Page[MeasurementOut](
        items=[MeasurementOut.model_validate(m) for m in rows], next_cursor=next_cursor
    )


@router.post("/import", status_code=201, response_model=ImportResult)
def import_measurements(body: MeasurementImport, session: SessionDep, _: ProfileAccess) -> ImportResult:
    return service.import_measurements(session, body.rows)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """Query times without a zone are read as UTC."""
    return value if value is None or value.tzinfo else value.replace(tzinfo=dt.UTC)
