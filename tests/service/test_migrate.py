"""The Alembic migrations produce exactly the models' schema, and undo it, on both engines."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

import service.models  # noqa: F401
from service import migrate
from service.db import Base, make_engine
from tests.conftest import POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"latfarm_schema_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_one_head() -> None:
    heads = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"migrations have several heads {heads}: chain the newest on the other"


def test_upgrade_matches_models_and_downgrade_empties(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    engine = make_engine(empty_database)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)
        migrate.check_current(engine)

        migrate.downgrade(empty_database)
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert left == set()
        with pytest.raises(migrate.SchemaNotCurrentError, match="latfarm db upgrade"):
            migrate.check_current(engine)
    finally:
        engine.dispose()
