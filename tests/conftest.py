"""Shared fixtures: both database engines, the app, tokens.

Every DB test runs twice, on SQLite and on PostgreSQL (`LATFARM_TEST_POSTGRES_URL`, default
`postgresql+psycopg://postgres@127.0.0.1:5432/test`). The schema is built once per engine by the Alembic
migrations (never `create_all`): SQLite tests get a copy of a migrated template file, PostgreSQL tests share
one database made for this test run and emptied before each test.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service import migrate
from service.app import create_app
from service.auth.service import create_token
from service.db import Base, make_engine, make_sessionmaker
from service.settings import Settings

POSTGRES_URL = os.environ.get(
    "LATFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test copies it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database of this test run, migrated to head, dropped at the end."""
    admin_url = make_url(POSTGRES_URL)
    name = f"latfarm_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the suite's contract is both engines: say what to do, don't skip
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} is not usable ({exc}); start it or set LATFARM_TEST_POSTGRES_URL"
        )
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _empty_postgres(url: str) -> None:
    engine = make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each engine in turn."""
    if request.param == "sqlite":
        path = tmp_path / "latfarm.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    _empty_postgres(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings of a test service: its own database and state directory, auth on."""
    return Settings(database_url=database_url, state_dir=tmp_path / "state", public_read=False)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def db_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def make_headers(db_session: Session) -> Callable[..., dict[str, str]]:
    """`make_headers("admin", "read")` → Authorization headers of a fresh token with those scopes."""

    def make(*scopes: str) -> dict[str, str]:
        _, secret = create_token(db_session, f"test-{uuid.uuid4().hex[:8]}", list(scopes))
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def admin_headers(make_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_headers("admin")


@pytest.fixture
def read_headers(make_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_headers("read")
