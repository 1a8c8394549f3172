"""The client's typed results: what the server's JSON answers become on the search job's side.

They are the client's own models, not the service's pydantic schemas: a search job imports them without the
database or the app, and an older client keeps fields a newer server adds (`extra="allow"`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from service.client.errors import LatfarmClientError

#: Job and predictor states after which nothing changes any more.
JOB_FINAL_STATES = frozenset({"done", "failed", "cancelled"})
PREDICTOR_FINAL_STATES = frozenset({"ready", "failed"})
#: Task states that count as finished in a job's progress.
TASK_FINAL_STATES = ("done", "reused", "failed", "cancelled")


class _Result(BaseModel):
    # Fields the server adds later are kept (extra="allow"), so an older client still sees them.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Cluster(_Result):
    """A CPU cluster of a phone and the frequencies it can be pinned to."""

    name: str
    cpus: list[int] = Field(default_factory=list)
    frequencies_khz: list[int] = Field(default_factory=list)


class Device(_Result):
    """A registered phone, with its probed facts and live status."""

    id: int
    serial: str
    transport: str = "tcp"
    address: str | None = None
    name: str | None = None
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    status: str = "offline"
    model: str | None = None
    soc: str | None = None
    abi: str | None = None
    android_version: str | None = None
    clusters: list[Cluster] = Field(default_factory=list)
    rooted: bool | None = None
    is_virtual: bool = False
    last_error: str | None = None
    temperature_c: float | None = None
    probed_at: dt.datetime | None = None

    def frequencies_khz(self, cluster: str | None = None) -> list[int]:
        """The frequencies of `cluster` (default: the cluster with the highest top frequency)."""
        if not self.clusters:
            return []
        if cluster is None:
            chosen = max(self.clusters, key=lambda c: max(c.frequencies_khz, default=0))
        else:
            matches = [c for c in self.clusters if c.name == cluster]
            if not matches:
                raise LatfarmClientError(f"device {self.id} has no cluster {cluster!r}")
            chosen = matches[0]
        return sorted(chosen.frequencies_khz)


class Job(_Result):
    """A profiling job: its status and how many of its tasks are in each state."""

    id: int
    family: str = ""
    status: str = "queued"
    priority: int = 0
    total_tasks: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    eta_seconds: float | None = None
    error: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    created_by: str | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.status in JOB_FINAL_STATES

    @property
    def completed_tasks(self) -> int:
        """Tasks that will not run again (measured, reused, failed or cancelled)."""
        return sum(int(self.counts.get(state, 0)) for state in TASK_FINAL_STATES)

    @property
    def tasks(self) -> int:
        """All the job's tasks (the total the server reports, else the sum of the counts)."""
        return self.total_tasks or sum(int(v) for v in self.counts.values())


class Predictor(_Result):
    """A trained (or training) latency predictor with its holdout metrics."""

    id: int
    family: str = ""
    device_id: int | None = None
    version: int = 0
    status: str = "training"
    active: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    filters: dict[str, Any] = Field(default_factory=dict)
    row_count: int | None = None
    error: str | None = None
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    activated_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        """True once training succeeded or failed."""
        return self.status in PREDICTOR_FINAL_STATES


@dataclass(frozen=True)
class Prediction:
    """Predicted latencies: shape `(n_configs,)` for one frequency, `(n_configs, n_frequencies)` for many."""

    predictor_id: int | None
    latency_ms: npt.NDArray[np.float64]
    p10_ms: npt.NDArray[np.float64]
    p90_ms: npt.NDArray[np.float64]
    extrapolated: npt.NDArray[np.bool_]
    frequencies_khz: list[int] | None = None
    raw: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return int(self.latency_ms.shape[0])
