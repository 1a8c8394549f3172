"""The `device` table: a phone of the farm, its probed facts and its status."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, Enum, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, JSONType, UTCDateTime, utcnow


class Transport(enum.StrEnum):
    tcp = "tcp"
    usb = "usb"


class DeviceStatus(enum.StrEnum):
    online = "online"
    offline = "offline"
    busy = "busy"
    disabled = "disabled"


class Device(Base):
    __tablename__ = "device"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(200), unique=True)
    transport: Mapped[Transport] = mapped_column(Enum(Transport, native_enum=False, length=8))
    address: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    # Probed facts: filled by `POST /v1/devices/{id}/probe` through the profilers.
    model: Mapped[str | None] = mapped_column(String(200))
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    board: Mapped[str | None] = mapped_column(String(200))
    soc: Mapped[str | None] = mapped_column(String(200))
    abi: Mapped[str | None] = mapped_column(String(64))
    android_version: Mapped[str | None] = mapped_column(String(32))
    clusters: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    gpu_frequencies_khz: Mapped[list[int]] = mapped_column(JSONType, default=list)
    # The probed GPU / NPU (`profilers.adb.units.Accelerator`): clock tables, governors, precisions.
    accelerators: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    rooted: Mapped[bool | None] = mapped_column(Boolean)
    thermal_zones: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    is_virtual: Mapped[bool] = mapped_column(Boolean, default=False)
    probed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Live state, written by workers.
    status: Mapped[DeviceStatus] = mapped_column(
        Enum(DeviceStatus, native_enum=False, length=16), default=DeviceStatus.offline, index=True
    )
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    temperature_c: Mapped[float | None] = mapped_column()
    current_frequencies_khz: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    # The device lease: at most one worker benchmarks on a phone at a time, across processes and hosts.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def frequencies_of(self, cluster: str) -> list[int]:
        """The frequency table (kHz) of a probed cluster, empty when unknown."""
        for entry in self.clusters or []:
            if entry.get("name") == cluster:
                return list(entry.get("frequencies_khz") or [])
        return []
