"""The `api_token` table: named bearer tokens, stored as sha256 of the secret only."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, JSONType, UTCDateTime, utcnow


class Scope(enum.StrEnum):
    admin = "admin"
    profile = "profile"
    predict = "predict"
    read = "read"


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
