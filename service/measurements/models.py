"""The `measurement` table: one benchmark of one configuration on one device at one frequency.

Every row keeps its statistics and the conditions it was taken under (compute unit in `cluster`: a CPU
cluster, `gpu` or `npu`; precision; observed and memory-bus clocks, pinning, temperatures, runtime), its
per-layer profile when one was taken, and says whether it came from a virtual phone, so no number is
mistaken for a real phone's.

The table has a column for every field of the profiler's `MeasurementRecord`, under the same name, so a
measured record is stored as it is (`measured_values`); a test holds the two together.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from profilers.adb.records import MeasurementRecord
from service.db import Base, JSONType, UTCDateTime, utcnow

#: Record fields stored under another name: the run's end is the row's `measured_at`; its start is not kept.
_RENAMED = {"finished_at": "measured_at"}
_NOT_STORED = frozenset({"started_at"})


class MeasurementSource(enum.StrEnum):
    measured = "measured"
    imported = "imported"


class Measurement(Base):
    __tablename__ = "measurement"
    __table_args__ = (
        # Reuse lookups and predictor training: one device, one family, by config and frequency.
        Index("ix_measurement_lookup", "device_id", "family", "config_hash", "cluster", "frequency_khz"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    config_hash: Mapped[str] = mapped_column(String(64))
    cluster: Mapped[str] = mapped_column(String(32))
    frequency_khz: Mapped[int | None] = mapped_column(Integer)
    observed_frequency_khz: Mapped[int | None] = mapped_column(Integer)
    pinned: Mapped[bool] = mapped_column(Boolean)
    bus_frequency_khz: Mapped[int | None] = mapped_column(Integer)
    runtime_name: Mapped[str] = mapped_column(String(64))
    runtime_version: Mapped[str | None] = mapped_column(String(64))
    threads: Mapped[int] = mapped_column(Integer)
    runs: Mapped[int] = mapped_column(Integer)
    warmup: Mapped[int] = mapped_column(Integer)
    passes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    benchmark: Mapped[str] = mapped_column(String(16), default="onnxruntime", server_default="onnxruntime")
    precision: Mapped[str] = mapped_column(String(8), default="fp32", server_default="fp32")
    accelerator: Mapped[str | None] = mapped_column(String(32))
    layer_profile: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    median_ms: Mapped[float] = mapped_column()
    mean_ms: Mapped[float] = mapped_column()
    std_ms: Mapped[float | None] = mapped_column()
    min_ms: Mapped[float] = mapped_column()
    max_ms: Mapped[float] = mapped_column()
    p90_ms: Mapped[float] = mapped_column()
    raw_runs_ms: Mapped[list[float]] = mapped_column(JSONType, default=list)
    temperature_before_c: Mapped[float | None] = mapped_column()
    temperature_after_c: Mapped[float | None] = mapped_column()
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    virtual: Mapped[bool] = mapped_column(Boolean, default=False)
    # Per-layer profile (a list of `profilers.adb.units.LayerTime`), when the run recorded one.
    layers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    source: Mapped[MeasurementSource] = mapped_column(
        Enum(MeasurementSource, native_enum=False, length=16), default=MeasurementSource.measured
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"), index=True)
    # Unique: a task yields at most one measurement, whatever happens to its leases.
    task_id: Mapped[int | None] = mapped_column(ForeignKey("task.id", ondelete="SET NULL"), unique=True)
    measured_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


def measured_values(record: MeasurementRecord) -> dict[str, Any]:
    """A profiler record as `measurement` column values: each field under its own name (see `_RENAMED`).

    The row's place — device, job, task, source, created_at — is the caller's to add.
    """
    values = record.model_dump(exclude=set(_NOT_STORED) | set(_RENAMED))
    for field, column in _RENAMED.items():
        values[column] = getattr(record, field)
    return values
