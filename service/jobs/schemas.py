"""Request and response bodies of `/v1/jobs`."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from profilers.adb.runtime import RuntimeSettings
from service.bounds import REQUEST_BODY, DbId, DbInt, JsonObject, StrictInt, Text, exactly_one_of
from service.jobs.models import JobStatus, TaskStatus

#: Hard ceiling on a sampler's `n` at parse time; the configurable per-job task cap is checked by the domain.
MAX_SAMPLER_N = 10_000_000


class SamplerSpec(BaseModel):
    """Draw configs instead of listing them: `space` maps config fields to value specs.

    A field's spec is a constant, `{"choices": [...]}` or an integer range `{"min", "max", "step"?}`; a list
    field (e.g. `widths`) adds `"length": {"min", "max"}` (or a constant length) to a choices/range spec.
    `uncertainty` draws `candidates` configs at random (seeded) and keeps, per device, the `n` whose p10–p90
    band under that device's active predictor is widest (at the first of the job's frequencies on it).
    """

    model_config = REQUEST_BODY

    strategy: Literal["grid", "random", "sobol", "uncertainty"]
    n: StrictInt | None = Field(
        None, ge=1, le=MAX_SAMPLER_N, description="configs to draw (grid: all when absent)"
    )
    space: JsonObject = Field(min_length=1)
    seed: DbInt = 0
    candidates: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_SAMPLER_N,
        description="uncertainty: random candidates the predictor ranks (default 10·n, at least n)",
    )

    @model_validator(mode="after")
    def _n_needed(self) -> SamplerSpec:
        if self.strategy != "grid" and self.n is None:
            raise ValueError(f"the {self.strategy} sampler needs n (how many configs to draw)")
        if self.candidates is not None:
            if self.strategy != "uncertainty":
                raise ValueError("candidates only applies to the uncertainty sampler")
            if self.n is not None and self.candidates < self.n:
                raise ValueError(f"candidates ({self.candidates}) must be at least n ({self.n})")
        return self

    @property
    def candidate_count(self) -> int:
        """How many random candidates an uncertainty sampler ranks: `candidates`, else 10·n."""
        return self.candidates if self.candidates is not None else 10 * int(self.n or 0)


class DeviceSelector(BaseModel):
    """Every enabled device carrying all of `tags` (and of `model`, when given)."""

    model_config = REQUEST_BODY

    tags: list[Text] = Field(default_factory=list, max_length=50)
    model: Text | None = Field(None, max_length=200)


class RuntimeSpec(RuntimeSettings):
    """How each config is benchmarked: the profiler's own `RuntimeSettings` (so a setting added there is
    a job field too) and the compute `unit` — a CPU cluster's name, `gpu` or `npu` — which defaults to
    each device's fastest CPU cluster. `cluster` is still read as the unit (clients older than accelerators
    send it); the job's stored spec names it `unit`."""

    # By name as well as by alias (the field's name is one of its aliases): what the type checker needs.
    model_config = ConfigDict(**REQUEST_BODY, validate_by_name=True)

    unit: Text | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        validation_alias=AliasChoices("unit", "cluster"),
        description="compute unit: a CPU cluster's name, gpu or npu (default: each device's fastest "
        "cluster); `cluster` is accepted as an alias",
    )


class JobCreate(BaseModel):
    """A profiling campaign: configs × devices × frequencies (exactly one of `configs`/`sampler`, and
    of `devices`/`selector`)."""

    model_config = ConfigDict(
        **REQUEST_BODY,
        json_schema_extra=exactly_one_of(
            {"configs": "array", "sampler": "object"}, {"devices": "array", "selector": "object"}
        ),
    )

    family: Text = Field(min_length=1, max_length=64)
    configs: list[JsonObject] | None = Field(None, min_length=1)
    sampler: SamplerSpec | None = None
    devices: list[DbId] | None = Field(None, min_length=1)
    selector: DeviceSelector | None = None
    frequencies: list[Annotated[DbInt, Field(gt=0)]] | Literal["all", "min-mid-max"] = "min-mid-max"
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    priority: StrictInt = Field(0, ge=-1000, le=1000)
    force: bool = False

    @model_validator(mode="after")
    def _exactly_one_source(self) -> JobCreate:
        if (self.configs is None) == (self.sampler is None):
            raise ValueError("give exactly one of configs (a list) or sampler")
        if (self.devices is None) == (self.selector is None):
            raise ValueError("give exactly one of devices (a list of ids) or selector")
        if isinstance(self.frequencies, list) and not self.frequencies:
            raise ValueError("frequencies must not be empty (or use 'all' / 'min-mid-max')")
        return self


class JobOut(BaseModel):
    """A job with its counts and, while it runs, an ETA from observed task durations."""

    id: int
    family: str
    status: JobStatus
    priority: int
    total_tasks: int
    counts: dict[str, int] = Field(description="tasks by status: queued running done reused failed cancelled")
    eta_seconds: float | None
    error: str | None
    spec: dict[str, Any]
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class TaskOut(BaseModel):
    """One task of a job."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int
    device_id: int
    config_hash: str
    config: dict[str, Any]
    cluster: str = Field(description="the compute unit: a CPU cluster's name, gpu or npu")
    frequency_khz: int | None = Field(description="the unit's pinned clock; None: unpinned")
    benchmark: str
    precision: str
    accelerator: str | None
    layer_profile: bool
    status: TaskStatus
    attempts: int
    last_error: str | None
    duration_s: float | None
    finished_at: dt.datetime | None
