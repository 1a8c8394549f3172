"""The device registry: plain functions over a `Session` (no HTTP here)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import begin_write
from service.devices.models import Device, DeviceStatus, Transport
from service.devices.schemas import DeviceCreate, DevicePatch
from service.jobs.models import Task, TaskStatus
from service.pagination import cut_page, keyset_page
from service.problems import ConflictError, NotFoundError


def register_device(session: Session, data: DeviceCreate) -> Device:
    """Add a phone to the farm (offline until probed); a serial already registered is a conflict."""
    begin_write(session)
    if session.scalar(select(Device.id).where(Device.serial == data.serial)) is not None:
        raise ConflictError(f"a device with serial {data.serial!r} is registered already")
    device = Device(
        serial=data.serial,
        transport=Transport(data.transport),
        address=data.address,
        name=data.name,
        tags=data.tags,
        status=DeviceStatus.offline,
    )
    session.add(device)
    try:
        session.commit()
    except IntegrityError:
        # Another request registered the same serial between our check and our insert.
        session.rollback()
        raise ConflictError(f"a device with serial {data.serial!r} is registered already") from None
    return device


def get_device(session: Session, device_id: int) -> Device:
    """The device with this id, or `NotFoundError`."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"device {device_id} does not exist")
    return device


def list_devices(
    session: Session,
    *,
    status: DeviceStatus | None = None,
    tag: str | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> tuple[list[Device], int | None]:
    """A page of devices by id, filtered by status and tag; returns the page and the next cursor."""
    query = select(Device)
    if status is not None:
        query = query.where(Device.status == status)
    if tag is None:
        return keyset_page(session, query, Device.id, cursor=cursor, limit=limit)
    # Tags are a JSON list; filtering in Python keeps one code path for both engines (farms are small).
    if cursor is not None:
        query = query.where(Device.id > cursor)
    tagged = [d for d in session.scalars(query.order_by(Device.id)) if tag in (d.tags or [])]
    return cut_page(tagged[: limit + 1], limit)


def update_device(session: Session, device_id: int, patch: DevicePatch) -> Device:
    """Rename, retag, enable or disable a device; disabling takes it out of scheduling."""
    begin_write(session)
    device = get_device(session, device_id)
    if patch.name is not None:
        device.name = patch.name
    if patch.tags is not None:
        device.tags = patch.tags
    if patch.enabled is not None and patch.enabled != device.enabled:
        device.enabled = patch.enabled
        # Re-enabled phones come back offline until a worker or a probe sees them answer.
        device.status = DeviceStatus.offline if patch.enabled else DeviceStatus.disabled
    session.commit()
    return device


def delete_device(session: Session, device_id: int) -> None:
    """Remove a device and its history; refused while a task is running on it."""
    begin_write(session)
    device = get_device(session, device_id)
    running = session.scalar(
        select(Task.id).where(Task.device_id == device_id, Task.status == TaskStatus.leased).limit(1)
    )
    if running is not None:
        raise ConflictError(
            f"device {device_id} is running task {running}; cancel its job or wait for it to finish"
        )
    session.delete(device)
    session.commit()
