"""Database migrations: Alembic driven from Python (upgrade, downgrade, the current and head revisions, the
start-up check), so the CLI, the app and the tests share one path. Named for what it does: the pydantic
`*/schemas.py` modules describe HTTP bodies; this module moves the database between revisions."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class SchemaNotCurrentError(RuntimeError):
    """The database is not at the migrations' head revision."""


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at latfarm's migrations and at `database_url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database up to `revision` (default: the newest)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Migrate the database down to `revision` (default: empty)."""
    command.downgrade(alembic_config(database_url), revision)


def head_revision(database_url: str) -> str | None:
    """The newest revision the migrations define."""
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None when it was never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_current(engine: Engine) -> None:
    """Raise `SchemaNotCurrentError` with the command to run when the database is behind the migrations."""
    url = engine.url.render_as_string(hide_password=False)
    current, head = current_revision(engine), head_revision(url)
    if current != head:
        raise SchemaNotCurrentError(
            f"the database at {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current or 'none (empty)'}, the code needs {head}: run `latfarm db upgrade` "
            "(or start with LATFARM_AUTO_MIGRATE=true)"
        )
