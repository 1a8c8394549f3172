"""Engine, sessions and the declarative `Base`: the one place that knows which database engine is in use.

SQLite is the zero-set-up default: opened in WAL mode with foreign keys on, and with transactions begun
explicitly so that the job queue can ask for `BEGIN IMMEDIATE` (a single-writer lease path). PostgreSQL is
the scale-out engine; the queue's `FOR UPDATE SKIP LOCKED` lives in `service.jobs.queue`, nowhere else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON documents; JSONB on PostgreSQL so they can be indexed and compared.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")

SQLITE_BEGIN_MODE = "sqlite_begin_mode"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores no zone; we restore it on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    """Now, timezone-aware, in UTC: the only clock the data model uses."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of every table, with a constraint naming convention Alembic can follow."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`, configured for the engine it names (WAL + foreign keys on SQLite)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would defer BEGIN past our SELECTs; we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_MODE, "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """The session factory every request, worker loop and CLI command uses."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def write_session(factory: sessionmaker[Session]) -> Session:
    """A session whose first statement takes SQLite's write lock (`BEGIN IMMEDIATE`); plain elsewhere.

    Read-then-write paths (lease claims) use it so two SQLite writers cannot both read the same free rows.
    """
    session = factory()
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={SQLITE_BEGIN_MODE: "IMMEDIATE"})
    return session


@contextmanager
def write_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A `write_session` that commits on success and rolls back on any exception (nothing half-written).

    For code outside a request (training threads, workers) that reads, then writes.
    """
    session = write_session(factory)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def begin_write(session: Session) -> None:
    """On SQLite, end the session's reads and begin a write transaction at once (`BEGIN IMMEDIATE`).

    A deferred transaction that reads and then writes fails at once with "database is locked" when another
    connection committed in between (SQLite cannot upgrade a stale snapshot); PostgreSQL needs nothing.
    Request handlers that read, then write, call this first.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.commit()
        session.connection(execution_options={SQLITE_BEGIN_MODE: "IMMEDIATE"})
