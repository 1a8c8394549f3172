"""Fixtures of the predictor tests: a device and a quickly trained predictor on synthetic data."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.predictors.models import Predictor
from service.settings import Settings
from tests.service.predictors.synthetic import add_device, insert_rows, synthetic_rows, train_now


@pytest.fixture
def device_id(db_session: Session) -> int:
    return add_device(db_session)


@pytest.fixture
def trained(
    session_factory: sessionmaker[Session], settings: Settings, db_session: Session, device_id: int
) -> Predictor:
    """A ready sr_block predictor of `device_id`, trained on 60 configs × 3 frequencies."""
    insert_rows(db_session, device_id, synthetic_rows(60))
    predictor = train_now(session_factory, settings, device_id)
    assert predictor.status.value == "ready", predictor.error
    return predictor
