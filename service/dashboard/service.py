"""The dashboard's read queries: farm cards (with each phone's compute units), plot data, job progress,
predictor lists.

Read-only: nothing here writes. The latency pivot and its cache live in `service.dashboard.pivot`; the
plot data here reads the same pivot, so a plot shows exactly the rows of the table.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from profilers.adb.units import unit_kind
from service.bounds import INT32_MAX, Text
from service.dashboard.pivot import (
    OptionalInt,
    OptionalStr,
    PivotPage,
    PivotQuery,
    config_label,
    latency_pivot,
    unit_query_field,
)
from service.devices.models import Device
from service.devices.units import ComputeUnit, device_units
from service.jobs import service as jobs_service
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.measurements.models import Measurement
from service.predictors.models import Predictor
from service.problems import NotFoundError


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
    units: list[ComputeUnit]


def farm_cards(session: Session) -> list[DeviceCard]:
    """Every device with its compute units and the task it is running now (a leased task), by id."""
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
    return [DeviceCard(device, current.get(device.id), device_units(device)) for device in devices]


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


def predictors_with_devices(session: Session) -> list[tuple[Predictor, str]]:
    """Every predictor version (newest first within family and device) with its device's name."""
    rows = session.execute(
        select(Predictor, Device.name, Device.serial)
        .options(defer(Predictor.peer_models))  # a transfer predictor's peer models: never shown here
        .outerjoin(Device, Device.id == Predictor.device_id)
        .order_by(Predictor.family, Predictor.device_id, Predictor.version.desc())
    ).all()
    return [(p, (name or serial) if p.device_id is not None else "fleet") for p, name, serial in rows]


def scalar_metrics(metrics: object) -> list[tuple[str, str]]:
    """The flat numeric/text metrics of a predictor, formatted (nested breakdowns are left to the API).

    A stored value that is not a JSON object (a row written before snapshots were validated) is shown as
    such, never allowed to take the page down.
    """
    if not isinstance(metrics, dict):
        return [("metrics", f"malformed stored value ({type(metrics).__name__}, not an object)")]
    out: list[tuple[str, str]] = []
    for key, value in sorted(metrics.items()):
        if isinstance(value, bool) or value is None:
            out.append((key, str(value)))
        elif isinstance(value, int | float):
            out.append((key, f"{value:.4g}"))
        elif isinstance(value, str):
            out.append((key, value))
    return out


#: How the predictor page names the candidate models of a training run (`metrics["candidates"]`).
MODEL_LABELS = {
    "prior_xgboost": "physics-prior XGBoost",
    "plain_xgboost": "plain XGBoost",
    "transfer_xgboost": "transfer XGBoost (peers)",
    "blend": "blend",
}


def _model_label(kind: str) -> str:
    return MODEL_LABELS.get(kind, kind)


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
                label=_model_label(kind),
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
    """The plots page: device + family (+ unit and precision), configs for the frequency plot, the heatmap's
    frequency, and a predictor."""

    model_config = ConfigDict(extra="ignore")

    device: OptionalInt = Field(None, ge=1, le=INT32_MAX)
    family: OptionalStr = Field(None, max_length=64)
    unit: OptionalStr = unit_query_field("a CPU cluster, gpu or npu; default the first measured")
    precision: OptionalStr = Field(None, max_length=8, description="fp32, fp16 or int8; default fp32")
    config: list[Text] = Field(default_factory=list, max_length=50, description="config hashes to draw")
    frequency: OptionalInt = Field(
        None, ge=0, le=INT32_MAX, description="heatmap frequency (kHz); default the highest"
    )
    predictor: OptionalInt = Field(None, ge=1, le=INT32_MAX)


def _mhz(khz: int | None) -> float | None:
    return None if khz is None else khz / 1000


#: The frequency axis's title by unit kind: whose clock the lines are drawn against.
CLOCK_TITLES = {"cpu": "CPU frequency (MHz)", "gpu": "GPU clock (MHz)", "npu": "NPU clock (MHz)"}


def plot_data(session: Session, query: PlotQuery) -> dict[str, Any]:
    """Everything the plots page draws, as JSON-ready dicts (the page embeds it; plotly draws it)."""
    data: dict[str, Any] = {"configs": [], "lines": [], "heatmap": None, "predictor": None, "frequencies": []}
    if query.device is not None and query.family is not None:
        page = latency_pivot(
            session,
            PivotQuery(
                device=query.device,
                family=query.family,
                unit=query.unit,
                precision=query.precision,
                per_page=500,
            ),
            paginate=False,
        )
        data["unit"] = page.query.unit
        data["precision"] = page.query.precision
        data["units"] = page.units
        data["precisions"] = page.precisions
        data["virtual"] = page.virtual
        data["clock_title"] = CLOCK_TITLES[unit_kind(page.query.unit or "")]
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
                    # A point with a per-layer profile opens its chart when clicked (plots.js).
                    "measurement_ids": [
                        cell.measurement_id if cell.has_layers else None for _, cell in points
                    ],
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
