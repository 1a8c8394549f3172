"""Request and response bodies of `/v1/devices`."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from profilers.adb.units import Accelerator
from service.bounds import REQUEST_BODY, Text
from service.devices.models import DeviceStatus
from service.devices.units import ComputeUnit, units_of

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:(?P<port>\d{1,5})$")
_TAG = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def _check_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not _TAG.match(tag):
            raise ValueError(f"tag {tag!r} must be 1-64 characters of letters, digits, _ . : -")
    return sorted(set(tags))


class DeviceCreate(BaseModel):
    """Register a phone: `serial` as adb names it (`host:port` for TCP); `address` defaults to the serial."""

    model_config = REQUEST_BODY

    serial: Text = Field(min_length=1, max_length=200)
    transport: Literal["tcp", "usb"]
    address: Text | None = Field(None, max_length=255)
    name: Text | None = Field(None, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50)

    _tags = field_validator("tags")(_check_tags)

    @model_validator(mode="after")
    def _tcp_needs_host_port(self) -> DeviceCreate:
        if self.transport == "tcp":
            address = self.address or self.serial
            match = _HOST_PORT.match(address)
            if not match:
                raise ValueError(f"a tcp device needs a host:port address, got {address!r}")
            if not 1 <= int(match["port"]) <= 65535:
                raise ValueError(f"the port of {address!r} must be 1-65535")
            self.address = address
        return self


class DevicePatch(BaseModel):
    """Fields an admin may change; absent fields stay as they are."""

    model_config = REQUEST_BODY

    name: Text | None = Field(None, max_length=200)
    tags: list[str] | None = Field(None, max_length=50)
    enabled: bool | None = None

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else _check_tags(tags)


class ClusterOut(BaseModel):
    name: str
    cpus: list[int] = Field(default_factory=list)
    frequencies_khz: list[int] = Field(default_factory=list)
    model_config = ConfigDict(extra="allow")


class DeviceOut(BaseModel):
    """A device with its probed facts and live status; `units` lists every compute unit a job may name
    (CPU clusters, then `gpu`, then `npu`) with its kind, clock table, precisions and governors."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    serial: str
    transport: str
    address: str | None
    name: str | None
    tags: list[str]
    enabled: bool
    status: DeviceStatus
    model: str | None
    manufacturer: str | None
    board: str | None
    soc: str | None
    abi: str | None
    android_version: str | None
    clusters: list[ClusterOut]
    gpu_frequencies_khz: list[int]
    accelerators: list[Accelerator] = Field(default_factory=list)
    rooted: bool | None
    thermal_zones: list[dict[str, Any]]
    is_virtual: bool
    probed_at: dt.datetime | None
    last_seen_at: dt.datetime | None
    last_error: str | None
    temperature_c: float | None
    current_frequencies_khz: dict[str, int]
    created_at: dt.datetime

    @field_validator("accelerators", mode="before")
    @classmethod
    def _parsable_accelerators(cls, value: Any) -> Any:
        # An entry written by hand or by an older build is left out rather than failing the whole device.
        if not isinstance(value, list):
            return []
        return [a for a in value if _parses(a)]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def units(self) -> list[ComputeUnit]:
        """Every compute unit: CPU clusters first, then `gpu`, then `npu`."""
        return units_of([c.model_dump() for c in self.clusters], self.accelerators)


def _parses(raw: Any) -> bool:
    try:
        Accelerator.model_validate(raw)
    except ValueError:
        return False
    return True
