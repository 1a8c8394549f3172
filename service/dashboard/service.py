"""The dashboard's read queries: farm cards, the latency pivot, plot data, job progress, predictor lists.

Read-only: nothing here writes. The latency pivot is built server-side (one SQL query for the device and
family, then pandas for pivot, filter, sort and slicing), so the browser only ever gets one page of rows;
the CSV export goes through the same function and therefore holds exactly the rows and columns shown.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.bounds import INT32_MAX, Text
from service.devices.models import Device
from service.jobs import service as jobs_service
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.measurements.models import Measurement
from service.predictors.models import Predictor
from service.problems import InvalidInputError, NotFoundError


def _blank_to_none(value: Any) -> Any:
    # An HTML GET form submits empty inputs as `x=`; an empty box means "no filter", not a bad number.
    return None if isinstance(value, str) and not value.strip() else value


# Free of NUL, and each int field bounded to an INTEGER column, as every API input (service.bounds).
OptionalInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
OptionalStr = Annotated[Text | None, BeforeValidator(_blank_to_none)]

#: Sort keys of the pivot that are not frequency columns.
FIXED_SORT_KEYS = ("config", "depth", "width")
UNPINNED = "unpinned"


class PivotQuery(BaseModel):
    """What the latency table shows: device, family, cluster, filters, sort (`-` = descending), page."""

    model_config = ConfigDict(extra="ignore")

    device: OptionalInt = Field(None, ge=1, le=INT32_MAX, description="device id")
    family: OptionalStr = Field(None, max_length=64)
    cluster: OptionalStr = Field(None, max_length=32)
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
    """A median with its spread (shown on hover)."""

    median_ms: float
    std_ms: float | None
    min_ms: float
    max_ms: float
    p90_ms: float
    runs: int
    passes: int

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
    clusters: list[str] = field(default_factory=list)
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
        Measurement.frequency_khz,
        Measurement.median_ms,
        Measurement.std_ms,
        Measurement.min_ms,
        Measurement.max_ms,
        Measurement.p90_ms,
        Measurement.runs,
        Measurement.passes,
        Measurement.virtual,
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
    (config, cluster, frequency), and the label, depth and width of each config."""

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
    key = (session.get_bind().url.render_as_string(hide_password=True), device_id, family, *fingerprint)
    with _SOURCES_LOCK:
        cached = _SOURCES.get(key)
        if cached is not None:
            _SOURCES.move_to_end(key)
            return cached
    frame = _measurement_frame(session, device_id, family)
    if not frame.empty:
        # The newest valid measurement of a (config, cluster, frequency) is the one the table shows.
        frame = frame.sort_values("id")
        frame["fkey"] = [_freq_key(None if pd.isna(k) else int(k)) for k in frame["frequency_khz"]]
        frame = frame.drop_duplicates(["config_hash", "cluster", "fkey"], keep="last")
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
    """The configs × frequencies table of median ms for the query's device and family: filtered, sorted,
    one page of it (or all of it with `paginate=False`)."""
    if query.device is None or query.family is None:
        raise InvalidInputError.at(["query", "device" if query.device is None else "family"], "required")
    device = session.get(Device, query.device)
    if device is None:
        raise InvalidInputError.at(["query", "device"], f"device {query.device} does not exist")
    source = _pivot_source(session, query.device, query.family)
    frame = source.frame
    clusters = sorted(frame["cluster"].unique().tolist()) if len(frame) else []
    cluster = query.cluster or (clusters[0] if clusters else None)
    if query.cluster is not None and query.cluster not in clusters:
        known = ", ".join(clusters) or "none"
        raise InvalidInputError.at(["query", "cluster"], f"no measurements on {cluster!r} (have: {known})")
    frame = frame[frame["cluster"] == cluster] if cluster is not None else frame
    query = query.model_copy(update={"cluster": cluster})
    if frame.empty:
        return PivotPage(
            query=query, columns=[], rows=[], total=0, clusters=clusters, virtual=device.is_virtual
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
        clusters=clusters,
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


@dataclass(frozen=True)
class DeviceFamily:
    """A (device, family) pair that has measurements, for the pickers."""

    device_id: int
    device_name: str
    family: str
    count: int


def measured_pairs(session: Session) -> list[DeviceFamily]:
    """Every (device, family) with valid measurements, with how many."""
    rows = session.execute(
        select(Measurement.device_id, Device.name, Device.serial, Measurement.family, func.count())
        .join(Device, Device.id == Measurement.device_id)
        .where(Measurement.valid.is_(True))
        .group_by(Measurement.device_id, Device.name, Device.serial, Measurement.family)
        .order_by(Measurement.device_id, Measurement.family)
    ).all()
    return [DeviceFamily(r[0], r[1] or r[2], r[3], r[4]) for r in rows]


# --- farm --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentTask:
    task_id: int
    job_id: int
    family: str
    label: str
    cluster: str
    frequency_khz: int | None


@dataclass(frozen=True)
class DeviceCard:
    device: Device
    current_task: CurrentTask | None


def farm_cards(session: Session) -> list[DeviceCard]:
    """Every device with the task it is running now (a leased task), by id."""
    devices = list(session.scalars(select(Device).order_by(Device.id)))
    leased = session.scalars(
        select(Task).where(Task.status == TaskStatus.leased).order_by(Task.started_at.desc(), Task.id.desc())
    )
    current: dict[int, CurrentTask] = {}
    for task in leased:
        current.setdefault(
            task.device_id,
            CurrentTask(
                task.id,
                task.job_id,
                task.family,
                config_label(task.family, task.config),
                task.cluster,
                task.frequency_khz,
            ),
        )
    return [DeviceCard(device, current.get(device.id)) for device in devices]


# --- jobs --------------------------------------------------------------------------------------

#: Counts (as `service.jobs.service.task_counts` names them) of tasks that will not run again.
FINISHED_COUNTS = ("done", "reused", "failed", "cancelled")


class JobProgress(BaseModel):
    """A job's progress as the jobs page and its polling endpoint show it."""

    id: int
    family: str
    status: JobStatus
    created_by: str | None
    created_at: dt.datetime
    total: int
    counts: dict[str, int] = Field(description="tasks by status; `running` counts the leased ones")
    finished: int
    percent: float
    eta_seconds: float | None = Field(description="the jobs service's estimate; None while it cannot tell")
    error: str | None = None


class FailedTask(BaseModel):
    id: int
    job_id: int
    device_id: int
    label: str
    cluster: str
    frequency_khz: int | None
    attempts: int
    last_error: str | None


def job_progress(session: Session, *, limit: int = 50) -> list[JobProgress]:
    """Progress of the newest `limit` jobs: counts by task status, percent finished and the ETA, both
    from the jobs service (one definition of each)."""
    result = []
    for job in session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)):
        counts = jobs_service.task_counts(session, job.id)
        total = max(job.total_tasks or 0, sum(counts.values()))
        finished = sum(counts.get(name, 0) for name in FINISHED_COUNTS)
        result.append(
            JobProgress(
                id=job.id,
                family=job.family,
                status=job.status,
                created_by=job.created_by,
                created_at=job.created_at,
                total=total,
                counts=counts,
                finished=finished,
                percent=round(100.0 * finished / total, 1) if total else 0.0,
                eta_seconds=jobs_service.estimate_seconds(session, job),
                error=job.error,
            )
        )
    return result


def failed_tasks(session: Session, job_ids: list[int], *, per_job: int = 20) -> dict[int, list[FailedTask]]:
    """Up to `per_job` failed tasks of each job, with the reason each failed."""
    out: dict[int, list[FailedTask]] = {i: [] for i in job_ids}
    if not job_ids:
        return out
    tasks = session.scalars(
        select(Task).where(Task.job_id.in_(job_ids), Task.status == TaskStatus.failed).order_by(Task.id)
    )
    for task in tasks:
        if len(out[task.job_id]) < per_job:
            out[task.job_id].append(
                FailedTask(
                    id=task.id,
                    job_id=task.job_id,
                    device_id=task.device_id,
                    label=config_label(task.family, task.config),
                    cluster=task.cluster,
                    frequency_khz=task.frequency_khz,
                    attempts=task.attempts,
                    last_error=task.last_error,
                )
            )
    return out


# --- predictors --------------------------------------------------------------------------------


def list_predictors(session: Session) -> list[tuple[Predictor, str]]:
    """Every predictor version (newest first within family and device) with its device's name."""
    rows = session.execute(
        select(Predictor, Device.name, Device.serial)
        .outerjoin(Device, Device.id == Predictor.device_id)
        .order_by(Predictor.family, Predictor.device_id, Predictor.version.desc())
    ).all()
    return [(p, (name or serial) if p.device_id is not None else "fleet") for p, name, serial in rows]


def scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The flat numeric/text metrics of a predictor, formatted (nested breakdowns are left to the API).

    A stored value that is not a JSON object (a row written before snapshots were validated) is shown as
    such, never allowed to take the page down.
    """
    if not isinstance(metrics, dict):
        return [("metrics", f"malformed stored value ({type(metrics).__name__}, not an object)")]
    out = []
    for key, value in sorted(metrics.items()):
        if isinstance(value, bool) or value is None:
            out.append((key, str(value)))
        elif isinstance(value, int | float):
            out.append((key, f"{value:.4g}"))
        elif isinstance(value, str):
            out.append((key, value))
    return out


#: How the predictor page names the candidate models of a training run (`metrics["candidates"]`).
MODEL_LABELS = {"prior_xgboost": "physics-prior XGBoost", "plain_xgboost": "plain XGBoost", "blend": "blend"}


@dataclass(frozen=True)
class CandidateFigures:
    """One candidate model's holdout figures, and whether it is the one that serves."""

    kind: str
    label: str
    serving: bool
    within_10: str
    within_5: str
    mape: str


def model_comparison(metrics: object) -> list[CandidateFigures]:
    """The served model and the plain baseline with their holdout figures (empty for predictors trained
    before both were fitted in one run, or whose stored metrics are malformed), the served one first."""
    if not isinstance(metrics, dict):
        return []
    candidates = metrics.get("candidates")
    if not isinstance(candidates, dict):
        return []
    serving = metrics.get("serving")
    out = []
    for kind, figures in sorted(candidates.items(), key=lambda kv: kv[0] != serving):
        if not isinstance(figures, dict):
            continue
        out.append(
            CandidateFigures(
                kind=kind,
                label=MODEL_LABELS.get(kind, kind),
                serving=kind == serving,
                within_10=_percent(figures.get("within_10")),
                within_5=_percent(figures.get("within_5")),
                mape=f"{figures['mape']:.1f} %" if isinstance(figures.get("mape"), int | float) else "–",
            )
        )
    return out


def _percent(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, int | float) else "–"


# --- plots -------------------------------------------------------------------------------------


class PlotQuery(BaseModel):
    """The plots page: device + family (+ cluster), configs for the frequency plot, the heatmap's
    frequency, and a predictor."""

    model_config = ConfigDict(extra="ignore")

    device: OptionalInt = Field(None, ge=1, le=INT32_MAX)
    family: OptionalStr = Field(None, max_length=64)
    cluster: OptionalStr = Field(None, max_length=32)
    config: list[Text] = Field(default_factory=list, max_length=50, description="config hashes to draw")
    frequency: OptionalInt = Field(
        None, ge=0, le=INT32_MAX, description="heatmap frequency (kHz); default the highest"
    )
    predictor: OptionalInt = Field(None, ge=1, le=INT32_MAX)


def _mhz(khz: int | None) -> float | None:
    return None if khz is None else khz / 1000


def plot_data(session: Session, query: PlotQuery) -> dict[str, Any]:
    """Everything the plots page draws, as JSON-ready dicts (the page embeds it; plotly draws it)."""
    data: dict[str, Any] = {"configs": [], "lines": [], "heatmap": None, "predictor": None, "frequencies": []}
    if query.device is not None and query.family is not None:
        page = latency_pivot(
            session,
            PivotQuery(device=query.device, family=query.family, cluster=query.cluster, per_page=500),
            paginate=False,
        )
        data["cluster"] = page.query.cluster
        data["frequencies"] = [{"khz": c.khz, "label": c.label} for c in page.columns]
        data["configs"] = [{"hash": r.config_hash, "label": r.label} for r in page.rows]
        chosen = [r for r in page.rows if r.config_hash in set(query.config)]
        if not chosen and page.rows:
            # No choice yet: five configs spread from fastest to slowest at the highest frequency.
            ranked = sorted(
                page.rows, key=lambda r: next((c.median_ms for c in reversed(r.cells) if c), math.inf)
            )
            step = max(1, (len(ranked) - 1) // 4) if len(ranked) > 1 else 1
            chosen = ranked[::step][:5]
        data["chosen"] = [r.config_hash for r in chosen]
        for row in chosen:
            points = [(c, cell) for c, cell in zip(page.columns, row.cells, strict=True) if cell and c.khz]
            data["lines"].append(
                {
                    "name": row.label,
                    "x": [_mhz(c.khz) for c, _ in points],
                    "y": [cell.median_ms for _, cell in points],
                    "std": [cell.std_ms or 0.0 for _, cell in points],
                }
            )
        data["heatmap"] = _heatmap(page, query.frequency)
    if query.predictor is not None:
        data["predictor"] = predictor_holdout(session, query.predictor)
    return data


def _heatmap(page: PivotPage, frequency: int | None) -> dict[str, Any] | None:
    """Mean median latency over (depth, width) cells at one frequency, for families with a depth."""
    pinned = [c for c in page.columns if c.khz is not None]
    if not pinned or not any(r.depth is not None and r.depth > 1 for r in page.rows):
        return None
    column = next((c for c in pinned if c.khz == frequency), pinned[-1])
    index = page.columns.index(column)
    cells: dict[tuple[int, int], list[float]] = {}
    for row in page.rows:
        cell = row.cells[index]
        if cell is not None and row.depth is not None and row.width is not None:
            cells.setdefault((row.depth, row.width), []).append(cell.median_ms)
    if not cells:
        return None
    depths = sorted({d for d, _ in cells})
    widths = sorted({w for _, w in cells})
    z = [[(sum(v) / len(v)) if (v := cells.get((d, w))) else None for w in widths] for d in depths]
    counts = [[len(cells.get((d, w), [])) for w in widths] for d in depths]
    return {
        "frequency_khz": column.khz,
        "label": column.label,
        "depths": depths,
        "widths": widths,
        "z": z,
        "counts": counts,
    }


def predictor_holdout(session: Session, predictor_id: int) -> dict[str, Any]:
    """A predictor's holdout: measured vs predicted ms and the percent errors (for the scatter, band and
    histogram)."""
    predictor = session.get(Predictor, predictor_id)
    if predictor is None:
        raise NotFoundError(f"predictor {predictor_id} does not exist")
    measured, predicted, errors = [], [], []
    for point in predictor.holdout or []:
        m, p = point.get("measured_ms"), point.get("predicted_ms")
        if isinstance(m, int | float) and isinstance(p, int | float) and m > 0:
            measured.append(float(m))
            predicted.append(float(p))
            errors.append(100.0 * (float(p) - float(m)) / float(m))
    within = sum(1 for e in errors if abs(e) <= 10.0)
    return {
        "id": predictor.id,
        "family": predictor.family,
        "version": predictor.version,
        "measured": measured,
        "predicted": predicted,
        "errors_pct": errors,
        "within_10_pct": (100.0 * within / len(errors)) if errors else None,
    }
