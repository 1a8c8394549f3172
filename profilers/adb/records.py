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


class MeasurementResult(BaseModel):
    """What was measured, under which conditions and settings, and what came out."""

    family: str
    config: dict[str, Any]
    config_hash: str
    cluster: str
    frequency_khz: int | None
    observed_frequency_khz: int | None
    pinned: bool
    runtime_name: str
    runtime_version: str | None
    threads: int
    runs: int
    warmup: int
    passes: int
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


class MeasurementRecord(MeasurementResult):
    """One measurement with the conditions it was taken under (the design sketch's *measurement*)."""

    started_at: datetime
    finished_at: datetime


__all__ = ["MeasurementRecord", "MeasurementResult"]
