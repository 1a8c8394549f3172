"""`/v1/devices`: the registry over HTTP (thin: parse, call the domain, shape the answer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.bounds import Cursor, PathId, Text
from service.deps import AdminAccess, ReadAccess, RunnerDep, SessionDep, SettingsDep
from service.devices import probing, service
from service.devices.models import DeviceStatus
from service.devices.schemas import DeviceCreate, DeviceOut, DevicePatch
from service.pagination import Page
from service.problems import problem_responses

router = APIRouter(
    prefix="/v1/devices", tags=["devices"], responses=problem_responses(401, 403, 404, 409, 413, 422)
)


@router.post("", status_code=201, response_model=DeviceOut)
def register_device(body: DeviceCreate, session: SessionDep, runner: RunnerDep, _: AdminAccess) -> DeviceOut:
    # Probed at once; a phone that does not answer stays registered, offline, with the reason.
    return DeviceOut.model_validate(probing.register_and_probe(session, body, runner))


@router.get("", response_model=Page[DeviceOut])
def list_devices(
    session: SessionDep,
    settings: SettingsDep,
    _: ReadAccess,
    status: DeviceStatus | None = None,
    tag: Text | None = None,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[DeviceOut]:
    rows, next_cursor = service.list_devices(
        session, status=status, tag=tag, cursor=cursor, limit=min(limit, settings.page_size_max)
    )
    return Page[DeviceOut](items=[DeviceOut.model_validate(d) for d in rows], next_cursor=next_cursor)


@router.get("/{device_id}", response_model=DeviceOut)
def get_device(device_id: PathId, session: SessionDep, _: ReadAccess) -> DeviceOut:
    return DeviceOut.model_validate(service.get_device(session, device_id))


@router.patch("/{device_id}", response_model=DeviceOut)
def update_device(device_id: PathId, body: DevicePatch, session: SessionDep, _: AdminAccess) -> DeviceOut:
    return DeviceOut.model_validate(service.update_device(session, device_id, body))


@router.post("/{device_id}/probe", response_model=DeviceOut)
def probe_device(device_id: PathId, session: SessionDep, runner: RunnerDep, _: AdminAccess) -> DeviceOut:
    device = service.get_device(session, device_id)
    return DeviceOut.model_validate(probing.probe_device(session, device, runner))


@router.delete("/{device_id}", status_code=204)
def delete_device(device_id: PathId, session: SessionDep, _: AdminAccess) -> Response:
    service.delete_device(session, device_id)
    return Response(status_code=204)
