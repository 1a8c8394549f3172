"""The dashboard's latency pivot (configs × frequencies of one device and family) and its cache.

A table is one compute unit (a CPU cluster, `gpu` or `npu`) at one precision (fp32, fp16, int8): the
pickers offer the units and precisions the (device, family) has measurements for. Each cell knows the
measurement behind it, so a cell with a per-layer profile links to that measurement's per-layer chart.

The pivot is built server-side — one SQL query for the device and family, then pandas for pivot, filter,
sort and slicing — so the browser only ever gets one page of rows; the CSV export goes through the same
function and therefore holds exactly the rows and columns shown. The measurement frame of a (device, family)
is kept in a small per-process LRU (`_pivot_source`) so paging and re-sorting do not re-read the table.
Read-only: nothing here writes.
"""

from __future__ import annotations

import csv
import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any

import pandas as pd
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from profilers.adb.units import ACCELERATOR_UNITS
from service.bounds import INT32_MAX, Text
from service.devices.models import Device
from service.measurements.models import Measurement
from service.problems import InvalidInputError


def _blank_to_none(value: Any) -> Any:
    # An HTML GET form submits empty inputs as `x=`; an empty box means "no filter", not a bad number.
    return None if isinstance(value, str) and not value.strip() else value


# Free of NUL, and each int field bounded to an INTEGER column, as every API input (service.bounds).
OptionalInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
OptionalStr = Annotated[Text | None, BeforeValidator(_blank_to_none)]

#: Sort keys of the pivot that are not frequency columns.
FIXED_SORT_KEYS = ("config", "depth", "width")
UNPINNED = "unpinned"
#: The precision a table shows when the query names none and the unit has it (what every CPU row holds).
DEFAULT_PRECISION = "fp32"


def unit_order(unit: str) -> tuple[int, str]:
    """Sort key of compute units: the CPU clusters by name, then `gpu`, then `npu`."""
    return (1 + ACCELERATOR_UNITS.index(unit), unit) if unit in ACCELERATOR_UNITS else (0, unit)


def unit_query_field(description: str) -> Any:
    """The `unit` field of a dashboard query; `cluster` (its name before accelerators) is read as well."""
    return Field(
        None, max_length=32, validation_alias=AliasChoices("unit", "cluster"), description=description
    )


class PivotQuery(BaseModel):
    """What the latency table shows: device, family, compute unit, precision, filters, sort (`-` =
    descending), page."""

    model_config = ConfigDict(extra="ignore")

    device: OptionalInt = Field(None, ge=1, le=INT32_MAX, description="device id")
    family: OptionalStr = Field(None, max_length=64)
    unit: OptionalStr = unit_query_field("a CPU cluster, gpu or npu; default the first measured")
    precision: OptionalStr = Field(None, max_length=8, description="fp32, fp16 or int8; default fp32")
    depth_min: OptionalInt = Field(None, ge=0, le=INT32_MAX)
    depth_max: OptionalInt = Field(None, ge=0, le=INT32_MAX)
    width_min: OptionalInt = Field(None, ge=0, le=INT32_MAX)
    width_max: OptionalInt = Field(None, ge=0, le=INT32_MAX)
    q: OptionalStr = Field(None, max_length=200, description="text the config label must contain")
    sort: OptionalStr = Field(None, max_length=40)
    page: int = Field(1, ge=1, le=INT32_MAX)
    per_page: int = Field(50, ge=1, le=500)

    def params(self, **changes: Any) -> dict[str, Any]:
        """The query string of this view with `changes` applied (None values left out)."""
        data = self.model_dump() | changes
        return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class FrequencyColumn:
    """One frequency column of the pivot: `key` is its sort key (`f<kHz>` or `unpinned`)."""

    key: str
    khz: int | None

    @property
    def label(self) -> str:
        """Column heading, in MHz as phones list them."""
        return "unpinned" if self.khz is None else f"{self.khz / 1000:g} MHz"


@dataclass(frozen=True)
class Cell:
    """A median with its spread (shown on hover), and the measurement it comes from (`has_layers`: whether
    that run was asked for a per-layer profile, so the cell links to its chart)."""

    median_ms: float
    std_ms: float | None
    min_ms: float
    max_ms: float
    p90_ms: float
    runs: int
    passes: int
    measurement_id: int = 0
    has_layers: bool = False

    @property
    def text(self) -> str:
        """The median as the table and the CSV show it."""
        return format_ms(self.median_ms)

    @property
    def spread(self) -> str:
        """The hover text: spread of the runs behind the median."""
        std = "n/a" if self.std_ms is None else format_ms(self.std_ms)
        return (
            f"median {self.text} ms · std {std} ms · min–max {format_ms(self.min_ms)}–"
            f"{format_ms(self.max_ms)} ms · p90 {format_ms(self.p90_ms)} ms · {self.runs} runs"
            + (f" in {self.passes} passes" if self.passes > 1 else "")
        )


@dataclass(frozen=True)
class PivotRow:
    config_hash: str
    label: str
    depth: int | None
    width: int | None
    cells: list[Cell | None]


@dataclass
class PivotPage:
    """One page of the pivot plus what the page needs to draw its controls."""

    query: PivotQuery
    columns: list[FrequencyColumn]
    rows: list[PivotRow]
    total: int
    units: list[str] = field(default_factory=list)
    precisions: list[str] = field(default_factory=list)
    virtual: bool = False

    @property
    def pages(self) -> int:
        """Number of pages (at least 1)."""
        return max(1, math.ceil(self.total / self.query.per_page))

    @property
    def sort_keys(self) -> list[str]:
        """Every key the table may be sorted by."""
        return [*FIXED_SORT_KEYS, *(c.key for c in self.columns)]


def format_ms(value: float) -> str:
    """Milliseconds with three decimals: the one formatting of the table, its tooltips and its CSV."""
    return f"{value:.3f}"


def config_shape(config: dict[str, Any]) -> tuple[int | None, int | None]:
    """(depth, width) of a config: `sr_block` depth is len(widths)-1 and width its widest layer; single
    layers (conv, mbconv) have depth 1 and width `cout`."""
    widths = config.get("widths")
    if isinstance(widths, list) and widths:
        return len(widths) - 1, max(int(w) for w in widths)
    cout = config.get("cout")
    return (1, int(cout)) if isinstance(cout, int) else (None, None)


def config_label(family: str, config: dict[str, Any]) -> str:
    """A short human label of a config, the text the table's filter searches."""
    if family == "sr_block" and "widths" in config:
        parts = [
            f"x{config.get('scale')}",
            f"{config.get('width')}×{config.get('height')}",
            f"k{config.get('kernel', 3)}",
            "w" + "-".join(str(w) for w in config["widths"]),
            str(config.get("activation", "relu")),
        ]
        if config.get("residual"):
            parts.append("+res")
        return " ".join(parts)
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()))


def _freq_key(khz: int | None) -> str:
    return UNPINNED if khz is None else f"f{khz}"


def _measurement_frame(session: Session, device_id: int, family: str) -> pd.DataFrame:
    """The numbers of every valid measurement of (device, family), without the config documents."""
    columns = (
        Measurement.id,
        Measurement.config_hash,
        Measurement.cluster,
        Measurement.precision,
        Measurement.frequency_khz,
        Measurement.median_ms,
        Measurement.std_ms,
        Measurement.min_ms,
        Measurement.max_ms,
        Measurement.p90_ms,
        Measurement.runs,
        Measurement.passes,
        Measurement.virtual,
        Measurement.layer_profile,
    )
    # Core rows transposed into columns: ORM row objects and `from_records` cost more than the query itself.
    rows = (
        session.connection()
        .execute(
            select(*columns).where(
                Measurement.device_id == device_id, Measurement.family == family, Measurement.valid.is_(True)
            )
        )
        .fetchall()
    )
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    return pd.DataFrame({c.key: list(v) for c, v in zip(columns, values, strict=True)})


def _config_table(session: Session, family: str, ids: list[int]) -> pd.DataFrame:
    """One row per config hash (label, depth, width), read from one measurement of each config: the JSON
    documents are the costly part of the read, so each config's is fetched and parsed once, not per row."""
    records = []
    for start in range(0, len(ids), 5000):  # bounded IN lists on both engines
        chunk = ids[start : start + 5000]
        for digest, config in session.execute(
            select(Measurement.config_hash, Measurement.config).where(Measurement.id.in_(chunk))
        ):
            depth, width = config_shape(config)
            records.append((digest, config_label(family, config), depth, width))
    table = pd.DataFrame.from_records(records, columns=["config_hash", "config", "depth", "width"])
    return table.drop_duplicates("config_hash").set_index("config_hash")


@dataclass(frozen=True)
class _PivotSource:
    """What every view of one (device, family) table is cut from: the newest valid measurement of each
    (config, unit, precision, frequency), and the label, depth and width of each config."""

    frame: pd.DataFrame
    configs: pd.DataFrame


_SOURCES: OrderedDict[tuple[Any, ...], _PivotSource] = OrderedDict()
_SOURCES_LOCK = threading.Lock()
_SOURCES_KEPT = 8


def _pivot_source(session: Session, device_id: int, family: str) -> _PivotSource:
    """The pivot's source for (device, family), cached under a fingerprint of its valid rows (count, newest
    id, sum of ids): paging, sorting and filtering re-read nothing, while any new, deleted or
    (in)validated measurement changes the fingerprint and so builds a fresh source."""
    fingerprint = session.execute(
        select(func.count(), func.max(Measurement.id), func.sum(Measurement.id)).where(
            Measurement.device_id == device_id, Measurement.family == family, Measurement.valid.is_(True)
        )
    ).one()
    database = session.get_bind().engine.url.render_as_string(hide_password=True)
    key = (database, device_id, family, *fingerprint)
    with _SOURCES_LOCK:
        cached = _SOURCES.get(key)
        if cached is not None:
            _SOURCES.move_to_end(key)
            return cached
    frame = _measurement_frame(session, device_id, family)
    if not frame.empty:
        # The newest valid measurement of a (config, unit, precision, frequency) is the one the table shows.
        frame = frame.sort_values("id")
        frame["fkey"] = [_freq_key(None if pd.isna(k) else int(k)) for k in frame["frequency_khz"]]
        frame = frame.drop_duplicates(["config_hash", "cluster", "precision", "fkey"], keep="last")
    firsts = frame.drop_duplicates("config_hash")["id"].astype(int).tolist() if not frame.empty else []
    source = _PivotSource(frame, _config_table(session, family, firsts))
    with _SOURCES_LOCK:
        _SOURCES[key] = source
        while len(_SOURCES) > _SOURCES_KEPT:
            _SOURCES.popitem(last=False)
    return source


def clear_pivot_cache() -> None:
    """Forget every cached pivot source (benchmarks measure the cold path with it)."""
    with _SOURCES_LOCK:
        _SOURCES.clear()


def latency_pivot(session: Session, query: PivotQuery, *, paginate: bool = True) -> PivotPage:
    """The configs × frequencies table of median ms for the query's device, family, unit and precision:
    filtered, sorted, one page of it (or all of it with `paginate=False`)."""
    if query.device is None or query.family is None:
        raise InvalidInputError.at(["query", "device" if query.device is None else "family"], "required")
    device = session.get(Device, query.device)
    if device is None:
        raise InvalidInputError.at(["query", "device"], f"device {query.device} does not exist")
    source = _pivot_source(session, query.device, query.family)
    frame = source.frame
    units = sorted(frame["cluster"].unique().tolist(), key=unit_order) if len(frame) else []
    unit = query.unit or (units[0] if units else None)
    if query.unit is not None and query.unit not in units:
        known = ", ".join(units) or "none"
        raise InvalidInputError.at(["query", "unit"], f"no measurements on {unit!r} (have: {known})")
    frame = frame[frame["cluster"] == unit] if unit is not None else frame
    precisions = sorted(frame["precision"].unique().tolist()) if len(frame) else []
    precision = query.precision or (
        DEFAULT_PRECISION if DEFAULT_PRECISION in precisions or not precisions else precisions[0]
    )
    if query.precision is not None and query.precision not in precisions:
        known = ", ".join(precisions) or "none"
        raise InvalidInputError.at(
            ["query", "precision"], f"no {precision} measurements on {unit!r} (have: {known})"
        )
    frame = frame[frame["precision"] == precision] if len(frame) else frame
    query = query.model_copy(update={"unit": unit, "precision": precision})
    if frame.empty:
        return PivotPage(
            query=query,
            columns=[],
            rows=[],
            total=0,
            units=units,
            precisions=precisions,
            virtual=device.is_virtual,
        )
    khz_values = sorted(
        {None if pd.isna(k) else int(k) for k in frame["frequency_khz"]}, key=lambda k: k or 0
    )
    columns = [FrequencyColumn(_freq_key(k), k) for k in khz_values]
    table = source.configs.loc[frame["config_hash"].unique()]
    medians = frame.pivot(index="config_hash", columns="fkey", values="median_ms")
    table = table.join(medians, how="left")

    if query.depth_min is not None:
        table = table[table["depth"] >= query.depth_min]
    if query.depth_max is not None:
        table = table[table["depth"] <= query.depth_max]
    if query.width_min is not None:
        table = table[table["width"] >= query.width_min]
    if query.width_max is not None:
        table = table[table["width"] <= query.width_max]
    if query.q:
        table = table[table["config"].str.contains(query.q, case=False, regex=False)]

    sort = query.sort or "config"
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    valid_keys = [*FIXED_SORT_KEYS, *(c.key for c in columns)]
    if key not in valid_keys:
        raise InvalidInputError.at(
            ["query", "sort"], f"unknown column {key!r} (one of: {', '.join(valid_keys)})"
        )
    # The config hash breaks ties so that pages never overlap or skip rows.
    table = table.reset_index().sort_values(
        [key, "config_hash"], ascending=[not descending, True], na_position="last", kind="stable"
    )
    total = len(table)
    if paginate:
        start = (query.page - 1) * query.per_page
        table = table.iloc[start : start + query.per_page]

    shown = frame[frame["config_hash"].isin(table["config_hash"])]
    cells: dict[tuple[str, str], Cell] = {}
    for rec in shown.itertuples(index=False):
        std = None if rec.std_ms is None or pd.isna(rec.std_ms) else float(rec.std_ms)
        cells[(rec.config_hash, rec.fkey)] = Cell(
            float(rec.median_ms),
            std,
            float(rec.min_ms),
            float(rec.max_ms),
            float(rec.p90_ms),
            int(rec.runs),
            int(rec.passes),
            int(rec.id),
            bool(rec.layer_profile),
        )
    rows = [
        PivotRow(
            config_hash=rec["config_hash"],
            label=rec["config"],
            depth=None if pd.isna(rec["depth"]) else int(rec["depth"]),
            width=None if pd.isna(rec["width"]) else int(rec["width"]),
            cells=[cells.get((rec["config_hash"], c.key)) for c in columns],
        )
        for rec in table.to_dict("records")
    ]
    return PivotPage(
        query=query,
        columns=columns,
        rows=rows,
        total=total,
        units=units,
        precisions=precisions,
        virtual=bool(frame["virtual"].any()) or device.is_virtual,
    )


def pivot_csv(page: PivotPage) -> str:
    """The page as CSV: the same rows, columns and numbers as the table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["config", "config_hash", "depth", "width", *(f"{c.label} median ms" for c in page.columns)]
    )
    for row in page.rows:
        writer.writerow(
            [
                row.label,
                row.config_hash,
                "" if row.depth is None else row.depth,
                "" if row.width is None else row.width,
                *("" if cell is None else cell.text for cell in row.cells),
            ]
        )
    return out.getvalue()


# --- choices for the pickers -------------------------------------------------------------------
