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
CAMPAIGN_FINAL_STATES = frozenset({"succeeded", "budget_exhausted", "cancelled", "failed"})
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


class Unit(_Result):
    """A compute unit of a phone (`GET /v1/devices/{id}` → `units`): a CPU cluster, the `gpu` or the `npu`,
    with the clocks it can be pinned to and the precisions it runs."""

    name: str
    kind: str = "cpu"
    model: str | None = None
    frequencies_khz: list[int] = Field(default_factory=list)
    precisions: list[str] = Field(default_factory=list)


class Accelerator(_Result):
    """A probed GPU or NPU (`GET /v1/devices/{id}` → `accelerators`): its model, clocks and precisions."""

    name: str
    model: str = ""
    frequencies_khz: list[int] = Field(default_factory=list)
    governors: list[str] = Field(default_factory=list)
    precisions: list[str] = Field(default_factory=list)


class Device(_Result):
    """A registered phone, with its probed facts, compute units and live status."""

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
    accelerators: list[Accelerator] = Field(default_factory=list)
    units: list[Unit] = Field(default_factory=list)
    rooted: bool | None = None
    is_virtual: bool = False
    last_error: str | None = None
    temperature_c: float | None = None
    probed_at: dt.datetime | None = None

    def unit(self, name: str) -> Unit:
        """The compute unit `name` (a CPU cluster, `gpu` or `npu`); LatfarmClientError naming the units the
        phone has when it lacks it. A server that lists no `units` yet is read from its clusters."""
        units = self.units or [
            Unit(name=c.name, kind="cpu", frequencies_khz=c.frequencies_khz, precisions=["fp32"])
            for c in self.clusters
        ]
        for unit in units:
            if unit.name == name:
                return unit
        have = ", ".join(u.name for u in units) or "none probed"
        raise LatfarmClientError(f"device {self.id} has no unit {name!r} (it has: {have})")

    def frequencies_khz(self, cluster: str | None = None) -> list[int]:
        """The frequencies of `cluster` — a CPU cluster, or the unit `gpu` / `npu` — (default: the cluster
        with the highest top frequency)."""
        if cluster in ("gpu", "npu"):
            return sorted(self.unit(cluster).frequencies_khz)
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
    transfer: dict[str, Any] | None = None
    row_count: int | None = None
    error: str | None = None
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    activated_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        """True once training succeeded or failed."""
        return self.status in PREDICTOR_FINAL_STATES


class CampaignRound(_Result):
    """One round of a bootstrap campaign: what it measured, how its predictor scored on the held-out set."""

    number: int
    phase: str = "measuring"
    job_id: int | None = None
    predictor_id: int | None = None
    picked: int = 0
    peers: list[int] = Field(default_factory=list)
    configs_measured: int = 0
    within_10: float | None = None
    mape: float | None = None
    minutes: float | None = None
    note: str | None = None


class Campaign(_Result):
    """A bootstrap campaign of a device: its rounds and, once over, its outcome and best predictor."""

    id: int
    device_id: int = 0
    family: str = ""
    unit: str = ""
    frequencies_khz: list[int] = Field(default_factory=list)
    status: str = "running"
    reason: str | None = None
    note: str | None = None
    holdout_size: int = 0
    best_predictor_id: int | None = None
    rounds: list[CampaignRound] = Field(default_factory=list)
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        """True once the campaign succeeded, ran out of budget, was cancelled or failed."""
        return self.status in CAMPAIGN_FINAL_STATES


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
