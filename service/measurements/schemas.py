"""Request and response bodies of `/v1/measurements`."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from profilers.adb.records import MeasurementResult
from profilers.adb.runtime import check_passes
from profilers.adb.units import BenchmarkProgram, LayerTime, Precision
from service.bounds import INT32_MAX, REQUEST_BODY, DbId, JsonObject, StrictInt, Text, Timestamp
from service.measurements.models import MeasurementSource

#: Rows one import request may carry (bigger sets: several requests, each all-or-nothing).
MAX_IMPORT_ROWS = 200_000
#: Layers one imported row's per-layer profile may list (a block has tens; a whole network a few hundred).
MAX_LAYERS_PER_ROW = 2_000


class ImportedLayer(LayerTime):
    """One layer of an imported per-layer profile: `LayerTime`, parsed as a request body (bounded text,
    finite numbers, no unknown fields)."""

    model_config = REQUEST_BODY

    name: Text = Field(min_length=1, max_length=256)
    op_type: Text = Field(min_length=1, max_length=64)
    unit: Text | None = Field(None, min_length=1, max_length=32)


class MeasurementOut(MeasurementResult):
    """One stored measurement: the profiler's result (every field of it, so a field added there is answered
    too) and where the row belongs."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: int
    source: MeasurementSource
    job_id: int | None
    task_id: int | None
    measured_at: dt.datetime | None
    created_at: dt.datetime


class MeasurementImportRow(BaseModel):
    """An externally measured row: the measurement schema without ids; `config_hash` is computed here."""

    model_config = REQUEST_BODY

    device_id: DbId
    family: Text = Field(min_length=1, max_length=64)
    config: JsonObject
    cluster: Text = Field(
        min_length=1, max_length=32, description="the compute unit: a CPU cluster's name, gpu or npu"
    )
    frequency_khz: StrictInt | None = Field(None, gt=0, le=INT32_MAX)
    observed_frequency_khz: StrictInt | None = Field(None, gt=0, le=INT32_MAX)
    pinned: bool = False
    bus_frequency_khz: StrictInt | None = Field(
        None, gt=0, le=INT32_MAX, description="the memory bus's clock beside the run, when read"
    )
    runtime_name: Text = Field(min_length=1, max_length=64)
    runtime_version: Text | None = Field(None, max_length=64)
    threads: StrictInt = Field(1, ge=1, le=64)
    runs: StrictInt = Field(ge=1, le=INT32_MAX)
    warmup: StrictInt = Field(0, ge=0, le=INT32_MAX)
    passes: StrictInt = Field(
        1, ge=1, le=INT32_MAX, description="invocations the runs were split into (at most `runs`)"
    )
    benchmark: BenchmarkProgram = "onnxruntime"
    precision: Precision = "fp32"
    accelerator: Text | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="the program's accelerator option (see profilers.adb.units.ACCELERATOR_OPTIONS); "
        "None: its default for the unit",
    )
    layer_profile: bool | None = Field(
        None, description="whether layers were recorded (default: `layers` given)"
    )
    layers: list[ImportedLayer] | None = Field(None, max_length=MAX_LAYERS_PER_ROW)
    median_ms: float = Field(gt=0)
    mean_ms: float = Field(gt=0)
    std_ms: float | None = Field(None, ge=0)
    min_ms: float = Field(gt=0)
    max_ms: float = Field(gt=0)
    p90_ms: float = Field(gt=0)
    raw_runs_ms: list[float] = Field(default_factory=list)
    temperature_before_c: float | None = None
    temperature_after_c: float | None = None
    valid: bool = True
    invalid_reason: Text | None = None
    virtual: bool = False
    measured_at: Timestamp | None = None

    @field_validator("passes")
    @classmethod
    def _a_run_per_pass(cls, value: int, info: ValidationInfo) -> int:
        return check_passes(value, info.data.get("runs"))


class MeasurementImport(BaseModel):
    """Rows to import, all or nothing."""

    model_config = REQUEST_BODY

    rows: list[MeasurementImportRow] = Field(min_length=1, max_length=MAX_IMPORT_ROWS)


class ImportResult(BaseModel):
    """How many rows were stored."""

    imported: int
