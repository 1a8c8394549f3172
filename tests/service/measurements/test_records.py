"""The profiler's types and the tables that store them stay one shape: no field list kept by hand."""

from __future__ import annotations

import datetime as dt

from profilers.adb import RUNTIME_FIELDS, MeasurementRecord, ProfileRequest, RuntimeSettings
from service.devices.runner import DeviceTarget, NoopRunner
from service.jobs.models import Task
from service.jobs.schemas import RuntimeSpec
from service.measurements.models import Measurement, measured_values
from service.measurements.schemas import MeasurementOut
from service.measurements.service import EXPORT_SCHEMA

#: Columns a measurement row gets from where it is stored, not from the record.
PLACE_COLUMNS = {"id", "device_id", "source", "job_id", "task_id", "created_at"}


def _record() -> MeasurementRecord:
    request = ProfileRequest(
        family="conv", config={"kernel": 3, "cin": 8, "cout": 8, "height": 8, "width": 8}, frequency_khz=1000
    )
    runtime = RuntimeSettings(runs=3, warmup=1, threads=2, passes=3)
    record = next(NoopRunner().measure(DeviceTarget(1, "x:1", "tcp", None), runtime, [request]))
    later = record.started_at + dt.timedelta(seconds=2)
    return record.model_copy(update={"finished_at": later, "raw_runs_ms": [1.0, 2.0, 3.0], "p90_ms": 2.5})


def test_every_record_field_has_its_measurement_column() -> None:
    values = measured_values(_record())
    columns = set(Measurement.__table__.columns.keys())
    assert set(values) <= columns
    # Every column is either the record's or the row's place: a column added to both sides is stored.
    assert columns - set(values) == PLACE_COLUMNS
    # … answered by the API and exported, each of them.
    assert set(MeasurementOut.model_fields) == columns
    assert set(EXPORT_SCHEMA.names) == columns


def test_a_record_is_stored_as_it_is() -> None:
    record = _record()
    values = measured_values(record)
    assert values["measured_at"] == record.finished_at != record.started_at
    assert "started_at" not in values and "finished_at" not in values
    for name, value in values.items():
        if name != "measured_at":
            assert value == getattr(record, name), name
    assert (values["threads"], values["passes"], values["warmup"]) == (2, 3, 1)
    again = ProfileRequest(family="conv", config=record.config)
    assert values["config_hash"] == record.config_hash == again.config_hash


def test_runtime_settings_travel_by_field_name() -> None:
    # A job's runtime is the profiler's settings plus the unit; tasks and measurements hold each setting.
    assert set(RUNTIME_FIELDS) == set(RuntimeSettings.model_fields)
    assert set(RUNTIME_FIELDS) == set(RuntimeSpec.model_fields) - {"unit"}
    for name in RUNTIME_FIELDS:
        assert name in Task.__table__.columns and name in Measurement.__table__.columns
        assert name in MeasurementRecord.model_fields
    spec = RuntimeSpec(runs=4, warmup=0, threads=2, passes=2, unit="big")
    assert spec.as_settings() == RuntimeSettings(runs=4, warmup=0, threads=2, passes=2)
    assert type(spec.as_settings()) is RuntimeSettings
