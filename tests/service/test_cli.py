"""The `latfarm` command line: db upgrade, token create, serve's refusal on an un-migrated database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from service.auth.models import ApiToken
from service.auth.service import hash_secret
from service.db import make_engine, make_sessionmaker

LATFARM = [sys.executable, "-m", "service.cli"]


def _run(args: list[str], database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LATFARM_DATABASE_URL": database_url, **env}
    return subprocess.run(
        [*LATFARM, *args], capture_output=True, text=True, env=environment, timeout=120, check=False
    )


def test_token_create_prints_the_secret_once_on_the_last_line(database_url: str) -> None:
    result = _run(["token", "create", "--name", "ci", "--scopes", "admin,read"], database_url)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("lf_") and len(secret) > 30
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
    engine.dispose()
    assert token is not None and token.scopes == ["admin", "read"]
    assert token.secret_sha256 == hash_secret(secret)
    listed = _run(["token", "list"], database_url)
    assert "ci" in listed.stdout and secret not in listed.stdout


def test_token_create_with_unknown_scope_fails_clearly(database_url: str) -> None:
    result = _run(["token", "create", "--name", "x", "--scopes", "root"], database_url)
    assert result.returncode == 2
    assert "unknown scope 'root'" in result.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = _run(["serve", "--port", "1"], url)
    assert result.returncode == 2
    assert "latfarm db upgrade" in result.stderr and "LATFARM_AUTO_MIGRATE" in result.stderr


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert _run(["db", "upgrade"], url).returncode == 0
    current = _run(["db", "current"], url).stdout
    revision = current.split()[1]
    assert revision != "None" and current.count(revision) == 2


def test_a_delegated_command_loads_only_its_own_module() -> None:
    probe = (
        "import sys; from service.cli import build_parser;"
        "build_parser('worker').parse_args(['worker', '--once']);"
        "print(sorted(m for m in ('service.client', 'service.demo', 'profilers.virtual_phone.cli',"
        " 'service.jobs.cli') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "['service.jobs.cli']"
