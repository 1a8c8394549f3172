"""Probing: connect to a phone through the profilers and store its facts and status.

A phone that does not answer is not an error of the request: the device is kept, `offline`, with the
reason in `last_error`, and a worker re-probes it later. `register_and_probe` is what registering means
to the API and the dashboard alike: the row is added, then the phone probed at once.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.db import begin_write, utcnow
from service.devices.models import Device, DeviceStatus
from service.devices.runner import DeviceColumns, DeviceRunner, DeviceTarget, RunnerError
from service.devices.schemas import DeviceCreate
from service.devices.service import register_device


def target_of(device: Device) -> DeviceTarget:
    """How the runner reaches `device`."""
    return DeviceTarget(device.id, device.serial, device.transport.value, device.address)


def apply_facts(device: Device, facts: DeviceColumns) -> None:
    """Write probed facts onto the device row and mark it seen."""
    now = utcnow()
    for name, value in facts.items():
        setattr(device, name, value)
    device.probed_at = now
    device.last_seen_at = now
    device.last_error = None
    device.consecutive_failures = 0


def probe_device(session: Session, device: Device, runner: DeviceRunner) -> Device:
    """Probe `device` now: facts and `online` when it answers, `offline` with the reason when not."""
    facts, error = None, None
    try:
        facts = runner.probe(target_of(device))
    except RunnerError as exc:
        error = exc
    finally:
        runner.forget(target_of(device))
    # The write lock is taken only now, after the phone answered: a probe can take seconds.
    begin_write(session)
    if facts is None:
        device.last_error = f"probe failed: {error}"
        if device.enabled:
            device.status = DeviceStatus.offline
    else:
        apply_facts(device, facts)
        if device.enabled and device.status != DeviceStatus.busy:
            device.status = DeviceStatus.online
        if device.lease_owner is None:
            # A re-probe hold (offline phone waiting) ends now that the phone answers.
            device.lease_expires_at = None
    session.commit()
    return device


def register_and_probe(session: Session, data: DeviceCreate, runner: DeviceRunner) -> Device:
    """Register a phone and probe it now; one that does not answer stays registered, offline, with the
    reason. A serial already registered is a `ConflictError` (nothing probed)."""
    return probe_device(session, register_device(session, data), runner)
