"""`MeasurementRecord`: one measurement with the conditions it was taken under.

What the profiler yields and what the service stores: the measurement table has a column for every field
here (`started_at` aside: a stored row keeps `finished_at` as `measured_at`), so a record is stored as it
is, with no field list kept by hand. `MeasurementResult` is the record without its clock — what the
service's answer about a stored measurement extends. pydantic only, like `profilers.adb.runtime`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from profilers.adb.units import LayerTime


class MeasurementResult(BaseModel):
    """What was measured, under which conditions and settings, and what came out.

    `cluster` is the compute unit (a CPU cluster's name, `gpu` or `npu`: see `profilers.adb.units`);
    `frequency_khz` / `observed_frequency_khz` are that unit's clock as requested and as read back;
    `bus_frequency_khz` the memory bus's clock read beside an accelerator's run (None where unreadable);
    `layers` the per-layer profile when `layer_profile` asked for one.
    """

    family: str
    config: dict[str, Any]
    config_hash: str
    cluster: str
    frequency_khz: int | None
    observed_frequency_khz: int | None
    pinned: bool
    bus_frequency_khz: int | None = None
    runtime_name: str
    runtime_version: str | None
    threads: int
    runs: int
    warmup: int
    passes: int
    benchmark: str
    precision: str
    accelerator: str | None
    layer_profile: bool
    median_ms: float
    mean_ms: float
    std_ms: float | None
    min_ms: float
    max_ms: float
    p90_ms: float | None
    raw_runs_ms: list[float]
    temperature_before_c: float | None
    temperature_after_c: float | None
    valid: bool
    invalid_reason: str | None
    virtual: bool
    layers: list[LayerTime] | None = None


class MeasurementRecord(MeasurementResult):
    """One measurement with the conditions it was taken under (the design sketch's *measurement*)."""

    started_at: datetime
    finished_at: datetime


__all__ = ["MeasurementRecord", "MeasurementResult"]
