"""Request and response bodies of the bootstrap campaigns (`/v1/devices/{id}/bootstrap`, `/v1/campaigns`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from profilers.adb.runtime import RuntimeSettings
from service.bounds import REQUEST_BODY, DbInt, JsonObject, StrictInt, Text
from service.campaigns.models import CampaignStatus, RoundPhase
from service.predictors.schemas import TrainParams


class CampaignCreate(BaseModel):
    """Profile a device for `family` in rounds until its held-out accuracy reaches `target_accuracy`
    or a budget runs out; the best predictor is then active."""

    model_config = REQUEST_BODY

    family: Text = Field(min_length=1, max_length=64)
    unit: Text | None = Field(
        None, min_length=1, max_length=32, description="compute unit (default: the fastest CPU cluster)"
    )
    frequencies: list[Annotated[DbInt, Field(gt=0)]] | Literal["all", "min-mid-max"] = Field(
        "min-mid-max", description="the unit's clocks to measure at, as a job takes them"
    )
    target_accuracy: float = Field(
        0.9, gt=0, le=1, description="share of held-out measurements predicted within ±10 % that ends it"
    )
    max_configs: StrictInt = Field(
        200, ge=1, le=100_000, description="most configs measured, the held-out set included"
    )
    max_minutes: float = Field(60.0, ge=1, le=7 * 24 * 60, description="most wall-clock minutes")
    configs_per_round: StrictInt = Field(16, ge=1, le=1_000)
    holdout_size: StrictInt = Field(20, ge=1, le=1_000, description="held-out configs, measured in round 0")
    candidates: StrictInt = Field(
        400, ge=1, le=20_000, description="random configs drawn per round for the picker to choose from"
    )
    space: JsonObject | None = Field(
        None,
        min_length=1,
        description="a sampler space (as in a job's sampler); default: the family's example space",
    )
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    params: TrainParams = Field(default_factory=TrainParams)
    seed: DbInt = 0


class RoundOut(BaseModel):
    """One round as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    number: int
    phase: RoundPhase
    job_id: int | None
    predictor_id: int | None
    picked: int = Field(description="training configs this round picked")
    peers: list[int]
    configs_measured: int = Field(description="training configs measured so far (the held-out set apart)")
    within_10: float | None = Field(description="held-out share within ±10 % of the predictor trained")
    mape: float | None
    minutes: float | None = Field(description="wall-clock minutes since the campaign started")
    note: str | None


class CampaignOut(BaseModel):
    """A campaign, its rounds and its outcome."""

    id: int
    device_id: int
    family: str
    unit: str
    frequencies_khz: list[int]
    status: CampaignStatus
    reason: str | None
    note: str | None
    holdout_size: int
    best_predictor_id: int | None
    spec: dict[str, Any]
    rounds: list[RoundOut]
    created_by: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
