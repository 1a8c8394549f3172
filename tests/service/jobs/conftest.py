"""Fixtures of the jobs tests: probed devices written straight into the database (no phone needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from service.devices.models import Device, DeviceStatus, Transport

BIG = [652800, 1478400, 2208000]
LITTLE = [300000, 1017600, 1804800]


@pytest.fixture
def make_device(db_session: Session) -> Callable[..., Device]:
    """`make_device(serial, tags=..., enabled=..., probed=...)` → a device row with two probed clusters."""

    def make(
        serial: str,
        *,
        tags: list[str] | None = None,
        enabled: bool = True,
        probed: bool = True,
        address: str | None = None,
        **extra: Any,
    ) -> Device:
        clusters = (
            [
                {"name": "little", "cpus": [0, 1, 2, 3], "frequencies_khz": LITTLE},
                {"name": "big", "cpus": [4, 5], "frequencies_khz": BIG},
            ]
            if probed
            else []
        )
        device = Device(
            serial=serial,
            transport=Transport.tcp,
            address=address or serial,
            tags=tags or [],
            enabled=enabled,
            clusters=clusters,
            model="Test Phone" if probed else None,
            status=DeviceStatus.online if enabled else DeviceStatus.disabled,
            **extra,
        )
        db_session.add(device)
        db_session.commit()
        return device

    return make
