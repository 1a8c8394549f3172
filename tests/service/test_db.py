"""The database layer: SQLite's pragmas, UTC datetimes on both engines, the single-writer write path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.db import begin_write, make_engine
from service.devices.models import Device, Transport
from service.jobs.models import Job, Task


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_foreign_keys_are_enforced(db_session: Session) -> None:
    db_session.add(
        Task(
            job_id=999,
            device_id=999,
            family="conv",
            config={},
            config_hash="0" * 64,
            cluster="big",
            frequency_khz=1,
            runs=1,
            warmup=0,
            threads=1,
        )
    )
    with pytest.raises(IntegrityError):
        db_session.commit()


def test_datetimes_come_back_aware_and_in_utc(db_session: Session) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    job = Job(family="conv", spec={}, created_at=dt.datetime(2026, 1, 1, 12, 0, tzinfo=plus_two))
    db_session.add(job)
    db_session.commit()
    db_session.expire_all()
    stored = db_session.get(Job, job.id).created_at
    assert stored == dt.datetime(2026, 1, 1, 10, 0, tzinfo=dt.UTC) and stored.tzinfo is not None
    db_session.add(Job(family="conv", spec={}, created_at=dt.datetime(2026, 1, 1)))
    with pytest.raises(Exception, match="naive"):
        db_session.commit()


def test_begin_write_survives_a_commit_between_read_and_write(session_factory: sessionmaker[Session]) -> None:
    """The read-then-write path that a plain deferred SQLite transaction fails ("database is locked")."""
    with session_factory() as setup:
        setup.add(Device(serial="a:1", transport=Transport.tcp, address="a:1"))
        setup.commit()
    with session_factory() as request, session_factory() as other:
        request.execute(text("SELECT count(*) FROM device")).scalar()  # a read opens the request's snapshot
        other.add(Device(serial="b:2", transport=Transport.tcp, address="b:2"))
        other.commit()  # another connection commits in between
        begin_write(request)
        request.add(Device(serial="c:3", transport=Transport.tcp, address="c:3"))
        request.commit()
        assert request.execute(text("SELECT count(*) FROM device")).scalar() == 3
