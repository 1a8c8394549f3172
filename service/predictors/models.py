"""The `predictor` and `retrain_policy` tables: versioned XGBoost latency models and when to retrain them."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, Enum, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, JSONType, UTCDateTime, utcnow


class PredictorStatus(enum.StrEnum):
    training = "training"
    ready = "ready"
    failed = "failed"


class Predictor(Base):
    """A predictor version. While `training` it is queued work: a trainer claims it with a lease
    (`lease_owner`, `lease_expires_at`, `attempts`; see `service.jobs.queue.claim_training`)."""

    __tablename__ = "predictor"
    __table_args__ = (UniqueConstraint("family", "device_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family: Mapped[str] = mapped_column(String(64))
    # None: a fleet predictor trained over several devices.
    device_id: Mapped[int | None] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[PredictorStatus] = mapped_column(
        Enum(PredictorStatus, native_enum=False, length=16), default=PredictorStatus.training
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    feature_schema: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    holdout: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    training_data_hash: Mapped[str | None] = mapped_column(String(64))
    row_count: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[bytes | None] = mapped_column(LargeBinary)
    model_p10: Mapped[bytes | None] = mapped_column(LargeBinary)
    model_p90: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Transfer training (service.predictors.transfer): the peer predictors asked for, resolved when the
    # training was requested ({"peers": [{device_id, predictor_id, version}]}); None: no transfer.
    transfer: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # The peers' packed median models (`transfer.pack_peers`) when the transfer model serves: it predicts
    # with them. Bytes, never in the JSON: listings and the schema stay small.
    peer_models: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    library_versions: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The training lease: who runs the training now and until when; a lapsed lease is claimed again.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RetrainPolicy(Base):
    """Opt-in: retrain (family, device) after `min_new_measurements` new valid rows; keep it if no worse."""

    __tablename__ = "retrain_policy"
    __table_args__ = (UniqueConstraint("family", "device_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    min_new_measurements: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    last_row_count: Mapped[int] = mapped_column(Integer, default=0)
    last_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
