"""Measurements: filtered keyset queries, streaming CSV/Parquet export and all-or-nothing import.

Exports never hold the whole result: they walk the table by id in batches (`id > last ORDER BY id
LIMIT n`, the same keyset as the JSON pages) and emit each batch as a CSV chunk or a Parquet row group.
`open_export` reads the first batch before it returns, so a query that fails does so before the response
has started (a clean problem+json), never as a stream cut after its header.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError
from sqlalchemy import JSON, Boolean, Column, Float, Integer, String, insert, select
from sqlalchemy.orm import Session, sessionmaker

from profilers.adb.units import resolve_accelerator
from profilers.blocks import BlockConfigError, canonical_json, config_hash, get_family
from service.db import UTCDateTime, begin_write, utcnow
from service.devices.models import Device
from service.measurements.models import Measurement, MeasurementSource
from service.measurements.schemas import ImportResult, MeasurementImportRow
from service.pagination import keyset_page
from service.problems import InvalidInputError

EXPORT_BATCH_ROWS = 5_000
_INSERT_CHUNK = 5_000
_MAX_ERRORS = 100


def _arrow_type(column: Column[Any]) -> pa.DataType:
    """The Arrow type a measurement column is exported as (JSON-valued columns go out as JSON text)."""
    kind = column.type
    if column.foreign_keys or isinstance(kind, Integer):
        return pa.int64()
    if isinstance(kind, Boolean):
        return pa.bool_()
    if isinstance(kind, Float):
        return pa.float64()
    if isinstance(kind, UTCDateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, String | JSON):  # Text and Enum are Strings
        return pa.string()
    raise TypeError(f"measurement column {column.name} has no export type ({kind!r})")


#: The measurement `Table` (`Measurement.__table__` is typed as a bare `FromClause`: no Columns, no insert).
_TABLE = Measurement.metadata.tables[Measurement.__tablename__]
#: Export columns and their Arrow types: every column of the table, in its order, so a column added to the
#: model is exported too.
EXPORT_SCHEMA = pa.schema([(c.name, _arrow_type(c)) for c in _TABLE.columns])
_JSON_COLUMNS = tuple(c.name for c in _TABLE.columns if isinstance(c.type, JSON))


@dataclass(frozen=True)
class MeasurementFilter:
    """What `GET /v1/measurements` may filter on; None means any."""

    device_id: int | None = None
    family: str | None = None
    job_id: int | None = None
    cluster: str | None = None  # the compute unit
    precision: str | None = None
    benchmark: str | None = None
    accelerator: str | None = None
    frequency_khz: int | None = None
    config_hash: str | None = None
    valid: bool | None = None
    source: MeasurementSource | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def clauses(self) -> list[Any]:
        """SQL conditions of this filter (`since` inclusive, `until` exclusive, on `created_at`)."""
        m = Measurement
        pairs = [
            (self.device_id, m.device_id),
            (self.family, m.family),
            (self.job_id, m.job_id),
            (self.cluster, m.cluster),
            (self.precision, m.precision),
            (self.benchmark, m.benchmark),
            (self.accelerator, m.accelerator),
            (self.frequency_khz, m.frequency_khz),
            (self.config_hash, m.config_hash),
            (self.valid, m.valid),
            (self.source, m.source),
        ]
        out = [column == value for value, column in pairs if value is not None]
        if self.since is not None:
            out.append(m.created_at >= self.since)
        if self.until is not None:
            out.append(m.created_at < self.until)
        return out


def query_measurements(
    session: Session, filters: MeasurementFilter, *, cursor: int | None = None, limit: int = 100
) -> tuple[list[Measurement], int | None]:
    """A page of measurements by id; the cursor is the last id seen."""
    query = select(Measurement).where(*filters.clauses())
    return keyset_page(session, query, Measurement.id, cursor=cursor, limit=limit)


def iter_export_batches(
    factory: sessionmaker[Session], filters: MeasurementFilter, batch_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """The filtered measurements as DataFrames of at most `batch_rows` rows, walking the table by id."""
    batch_rows = batch_rows or EXPORT_BATCH_ROWS
    table = _TABLE
    columns = [table.c[name] for name in EXPORT_SCHEMA.names]
    last_id = 0
    with factory() as session:
        while True:
            rows = session.execute(
                select(*columns)
                .where(*filters.clauses(), table.c.id > last_id)
                .order_by(table.c.id)
                .limit(batch_rows)
            ).all()
            if not rows:
                return
            last_id = rows[-1][0]
            frame = pd.DataFrame.from_records([tuple(r) for r in rows], columns=EXPORT_SCHEMA.names)
            for name in _JSON_COLUMNS:
                # JSON text; a missing value (no per-layer profile) stays missing: an empty CSV cell, a null.
                frame[name] = [
                    None if v is None else json.dumps(v, sort_keys=True, separators=(",", ":"))
                    for v in frame[name]
                ]
            frame["source"] = [str(getattr(v, "value", v)) for v in frame["source"]]
            yield frame
            # Release the read snapshot between batches so a long download holds no transaction open.
            session.rollback()


def open_export(factory: sessionmaker[Session], filters: MeasurementFilter, format: str) -> Iterator[bytes]:
    """The filtered measurements as `csv` or `parquet` chunks; the first batch is read now, so errors of
    the query are raised here, before a response starts, and only the rest streams lazily."""
    batches = iter_export_batches(factory, filters)
    first = next(batches, None)
    frames = itertools.chain([] if first is None else [first], batches)
    return stream_csv(frames) if format == "csv" else stream_parquet(frames)


def stream_csv(frames: Iterable[pd.DataFrame]) -> Iterator[bytes]:
    """Export batches as CSV, one chunk per batch (header first, even when empty)."""
    yield (",".join(EXPORT_SCHEMA.names) + "\n").encode()
    for frame in frames:
        yield frame.to_csv(index=False, header=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z").encode()


class _ChunkSink(io.RawIOBase):
    """A write-only file that hands out what was written since the last `take()` (Parquet streaming)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def stream_parquet(frames: Iterable[pd.DataFrame]) -> Iterator[bytes]:
    """Export batches as one Parquet file, written and sent a row group per batch."""
    sink = _ChunkSink()
    writer = pq.ParquetWriter(sink, EXPORT_SCHEMA)
    try:
        for frame in frames:
            writer.write_table(pa.Table.from_pandas(frame, schema=EXPORT_SCHEMA, preserve_index=False))
            chunk = sink.take()
            if chunk:
                yield chunk
    finally:
        writer.close()
    yield sink.take()


def _row_errors(index: int, row: MeasurementImportRow) -> list[dict[str, Any]]:
    loc: list[str | int] = ["body", "rows", index]
    errors = []
    if not row.min_ms <= row.median_ms <= row.max_ms:
        errors.append(
            {"loc": [*loc, "median_ms"], "msg": "statistics must satisfy min_ms <= median_ms <= max_ms"}
        )
    for name in ("mean_ms", "p90_ms"):
        if not row.min_ms <= getattr(row, name) <= row.max_ms:
            errors.append({"loc": [*loc, name], "msg": f"{name} must lie between min_ms and max_ms"})
    if row.raw_runs_ms and len(row.raw_runs_ms) != row.runs:
        errors.append(
            {"loc": [*loc, "raw_runs_ms"], "msg": f"holds {len(row.raw_runs_ms)} runs, runs says {row.runs}"}
        )
    if row.measured_at is not None and row.measured_at.tzinfo is None:
        errors.append({"loc": [*loc, "measured_at"], "msg": "needs a timezone (e.g. 2024-01-31T12:00:00Z)"})
    if not row.valid and not row.invalid_reason:
        errors.append({"loc": [*loc, "invalid_reason"], "msg": "an invalid row needs its reason"})
    if row.accelerator is not None:
        try:
            resolve_accelerator(row.benchmark, row.cluster, row.accelerator)
        except ValueError as exc:
            errors.append({"loc": [*loc, "accelerator"], "msg": str(exc)})
    if row.layer_profile is False and row.layers is not None:
        errors.append(
            {"loc": [*loc, "layers"], "msg": "layers given, but layer_profile says none were taken"}
        )
    return errors


def import_measurements(session: Session, rows: list[MeasurementImportRow]) -> ImportResult:
    """Validate every row (config against its family, statistics, device), then store all or none."""
    errors: list[dict[str, Any]] = []
    begin_write(session)
    known_devices = set(session.scalars(select(Device.id).where(Device.id.in_({r.device_id for r in rows}))))
    # Campaigns repeat configs across frequencies and devices: validate each distinct one once.
    identities: dict[tuple[str, str], tuple[dict[str, Any], str] | list[dict[str, Any]]] = {}
    now = utcnow()
    values: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        row_errors = _row_errors(i, row)
        if row.device_id not in known_devices:
            row_errors.append(
                {"loc": ["body", "rows", i, "device_id"], "msg": f"device {row.device_id} does not exist"}
            )
        key = (row.family, json.dumps(row.config, sort_keys=True))
        identity = identities.get(key)
        if identity is None:
            identity = identities[key] = _identity(row.family, row.config)
        if isinstance(identity, list):
            row_errors.extend({"loc": ["body", "rows", i, *e["loc"]], "msg": e["msg"]} for e in identity)
        if row_errors:
            errors.extend(row_errors)
            if len(errors) >= _MAX_ERRORS:
                break
            continue
        assert isinstance(identity, tuple)
        canonical, digest = identity
        values.append(
            {
                **row.model_dump(exclude={"config", "family"}),
                "layer_profile": row.layers is not None if row.layer_profile is None else row.layer_profile,
                "family": row.family,
                "config": canonical,
                "config_hash": digest,
                "source": MeasurementSource.imported,
                "created_at": now,
            }
        )
    if errors:
        first = errors[0]
        raise InvalidInputError(
            f"{len(errors)}{'+' if len(errors) >= _MAX_ERRORS else ''} invalid field(s), nothing imported; "
            f"first at {'.'.join(str(p) for p in first['loc'])}: {first['msg']}",
            errors=errors[:_MAX_ERRORS],
        )
    _bulk_insert(session, values)
    session.commit()
    return ImportResult(imported=len(values))


def _bulk_insert(session: Session, values: list[dict[str, Any]]) -> None:
    """Insert measurement rows in the session's transaction: COPY on PostgreSQL, executemany elsewhere.

    COPY because psycopg spends most of a multi-row INSERT converting its tens of thousands of
    parameters; COPY streams rows as they are (~10x the ingest rate).
    """
    table = _TABLE
    if session.get_bind().dialect.name != "postgresql":
        for start in range(0, len(values), _INSERT_CHUNK):
            session.execute(insert(table), values[start : start + _INSERT_CHUNK])
        return
    columns = list(values[0]) if values else []
    json_columns = set(_JSON_COLUMNS)
    driver = session.connection().connection.driver_connection
    if driver is None:  # only a connection invalidated mid-transaction has no DBAPI connection left
        raise RuntimeError("the database connection was lost during the import")
    statement = f"COPY measurement ({', '.join(columns)}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in values:
            copy.write_row(
                [
                    json.dumps(row[c]) if c in json_columns else getattr(row[c], "value", row[c])
                    for c in columns
                ]
            )


def _identity(family_name: str, config: dict[str, Any]) -> tuple[dict[str, Any], str] | list[dict[str, Any]]:
    """(canonical config, config hash), or the errors of an unknown family / invalid config."""
    try:
        family = get_family(family_name)
    except BlockConfigError as exc:
        return [{"loc": ["family"], "msg": str(exc)}]
    try:
        parsed: BaseModel = family.parse(config)
    except ValidationError as exc:
        return [{"loc": ["config", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
    return json.loads(canonical_json(family.name, parsed)), config_hash(family.name, parsed)
