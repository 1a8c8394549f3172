"""Every table of the data model, imported in one place so `Base.metadata` is complete (Alembic, tests)."""

from __future__ import annotations

from service.auth.models import ApiToken, Scope
from service.campaigns.models import Campaign, CampaignRound, CampaignStatus, RoundPhase
from service.db import Base
from service.devices.models import Device, DeviceStatus, Transport
from service.jobs.models import Job, JobStatus, Task, TaskStatus
from service.measurements.models import Measurement, MeasurementSource
from service.predictors.models import Predictor, PredictorStatus, RetrainPolicy

__all__ = [
    "ApiToken",
    "Base",
    "Campaign",
    "CampaignRound",
    "CampaignStatus",
    "Device",
    "DeviceStatus",
    "Job",
    "JobStatus",
    "Measurement",
    "MeasurementSource",
    "Predictor",
    "PredictorStatus",
    "RetrainPolicy",
    "RoundPhase",
    "Scope",
    "Task",
    "TaskStatus",
    "Transport",
]
