"""Thermal zones (``/sys/class/thermal/thermal_zoneN``) and waiting for a phone to cool down.

``temp`` is in millidegrees Celsius on every current kernel; a few old ones report whole degrees,
so values below 1000 in magnitude are taken as degrees. The trip point used for validity is the
lowest ``trip_point_*_temp`` of type ``passive`` (throttling starts there), or of any type if none.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from profilers.adb.errors import CooldownTimeoutError
from profilers.adb.session import DeviceSession
from profilers.adb.sysfs import list_dir, read_files

THERMAL_ROOT = "/sys/class/thermal"


class ThermalZone(BaseModel):
    """One thermal zone: its index and type (``cpu-0-0-usr``, ``battery``, …)."""

    index: int
    type: str


def _celsius(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    if value is None:
        return None
    return value / 1000.0 if abs(value) >= 1000 else value


def list_zones(session: DeviceSession) -> list[ThermalZone]:
    """The phone's thermal zones with their types."""
    indices = sorted(
        int(name[12:])
        for name in list_dir(session, THERMAL_ROOT)
        if name.startswith("thermal_zone") and name[12:].isdigit()
    )
    types = read_files(session, [f"{THERMAL_ROOT}/thermal_zone{i}/type" for i in indices])
    return [
        ThermalZone(index=i, type=types[f"{THERMAL_ROOT}/thermal_zone{i}/type"] or "unknown") for i in indices
    ]


def read_temperatures(session: DeviceSession, zones: list[ThermalZone]) -> dict[int, float]:
    """Temperature (°C) of each readable zone, in one round trip."""
    paths = {z.index: f"{THERMAL_ROOT}/thermal_zone{z.index}/temp" for z in zones}
    values = read_files(session, list(paths.values()))
    temps = {index: _celsius(values[path]) for index, path in paths.items()}
    return {index: t for index, t in temps.items() if t is not None}


def hottest_celsius(session: DeviceSession, zones: list[ThermalZone]) -> float | None:
    """The highest zone temperature now (None when no zone is readable)."""
    temps = read_temperatures(session, zones)
    return max(temps.values()) if temps else None


def trip_point_celsius(session: DeviceSession, zones: list[ThermalZone]) -> float | None:
    """The lowest passive trip point over the zones (throttling starts there); None when none is exposed."""
    paths = []
    for z in zones:
        for k in range(4):
            base = f"{THERMAL_ROOT}/thermal_zone{z.index}/trip_point_{k}"
            paths += [f"{base}_temp", f"{base}_type"]
    values = read_files(session, paths)
    passive: list[float] = []
    other: list[float] = []
    for i in range(0, len(paths), 2):
        t = _celsius(values[paths[i]])
        if t is None or t <= 0:
            continue
        (passive if values[paths[i + 1]] == "passive" else other).append(t)
    candidates = passive or other
    return min(candidates) if candidates else None


def cooldown(
    session: DeviceSession,
    max_celsius: float,
    timeout_s: float,
    *,
    zones: list[ThermalZone] | None = None,
    poll_s: float = 1.0,
) -> float | None:
    """Wait until the hottest zone is below ``max_celsius``; CooldownTimeoutError at the deadline."""
    zones = list_zones(session) if zones is None else zones
    deadline = time.monotonic() + timeout_s
    while True:
        hottest = hottest_celsius(session, zones)
        if hottest is None or hottest < max_celsius:
            return hottest
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CooldownTimeoutError(
                f"phone still at {hottest:.1f} °C after {timeout_s:g} s (limit {max_celsius:g} °C)"
            )
        # There is no event for "cooled down": poll the zones with a bounded deadline.
        time.sleep(min(poll_s, remaining))
