"""The `campaign` and `campaign_round` tables: a device's bootstrap campaign and each round it ran.

Invariant: everything a campaign needs to continue is in these rows, so a runner that dies loses at most
the step it was taking. A round is written when its job is submitted (`measuring`), gets its predictor
when the job has finished (`training`) and its held-out score when that predictor is ready (`scored`);
the runner reads the newest round's phase to know what to do next. A `running` campaign is stepped by
whoever holds its lease (`lease_owner`, `lease_expires_at`; see `service.jobs.queue.claim_campaign`).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, JSONType, UTCDateTime, utcnow


class CampaignStatus(enum.StrEnum):
    running = "running"
    succeeded = "succeeded"
    budget_exhausted = "budget_exhausted"
    cancelled = "cancelled"
    failed = "failed"


class RoundPhase(enum.StrEnum):
    measuring = "measuring"
    training = "training"
    scored = "scored"
    #: Measured, but too few rows to train on yet (or the training failed): the next round adds more.
    unscored = "unscored"


class Campaign(Base):
    """A bootstrap campaign: profile `device` for `family` in rounds until the held-out target or a budget."""

    __tablename__ = "campaign"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(64))
    unit: Mapped[str] = mapped_column(String(32))
    #: The request as validated (target, budgets, round size, runtime, space, training params).
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    frequencies_khz: Mapped[list[int]] = mapped_column(JSONType)
    #: The held-out configs (canonical documents): measured in round 0, never trained on.
    holdout: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    status: Mapped[CampaignStatus] = mapped_column(
        Enum(CampaignStatus, native_enum=False, length=20), default=CampaignStatus.running, index=True
    )
    reason: Mapped[str | None] = mapped_column(Text)
    #: What the campaign could not use, e.g. no peers of the family (configs spread by features alone).
    note: Mapped[str | None] = mapped_column(Text)
    best_predictor_id: Mapped[int | None] = mapped_column(ForeignKey("predictor.id", ondelete="SET NULL"))
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class CampaignRound(Base):
    """One round: the configs it measured (one profiling job), the predictor trained after it, its score."""

    __tablename__ = "campaign_round"
    __table_args__ = (UniqueConstraint("campaign_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    phase: Mapped[RoundPhase] = mapped_column(
        Enum(RoundPhase, native_enum=False, length=16), default=RoundPhase.measuring
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"))
    predictor_id: Mapped[int | None] = mapped_column(ForeignKey("predictor.id", ondelete="SET NULL"))
    #: The training configs this round picked (canonical documents; round 0's job also holds the holdout).
    configs: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    #: Devices whose active predictors shaped the pick (empty: features alone).
    peers: Mapped[list[int]] = mapped_column(JSONType, default=list)
    #: Distinct configs the campaign has measured for training after this round (the holdout apart).
    configs_measured: Mapped[int] = mapped_column(Integer, default=0)
    within_10: Mapped[float | None] = mapped_column()
    mape: Mapped[float | None] = mapped_column()
    minutes: Mapped[float | None] = mapped_column()
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
