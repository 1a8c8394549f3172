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


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                children.append(int(entry.name))
    return children


def test_serve_with_several_workers_answers_from_several_processes(tmp_path: Path) -> None:
    """`--workers 2` on the SQLite default: two API processes behind one port, stopped by one SIGINT."""
    import signal
    import socket
    import time

    import httpx

    url = f"sqlite:///{tmp_path / 'multi.db'}"
    assert _run(["db", "upgrade"], url).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "LATFARM_DATABASE_URL": url,
        "LATFARM_STATE_DIR": str(tmp_path),
        "LATFARM_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([*LATFARM, "serve", "--workers", "2", "--port", str(port)], env=env)
    try:
        deadline, answered = time.monotonic() + 60, 0
        while time.monotonic() < deadline and answered < 5:
            try:
                answered += httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answered == 5
        api_processes = [
            pid
            for pid in _children(server.pid)
            if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(api_processes) >= 2
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0


def test_serve_refuses_zero_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert _run(["db", "upgrade"], url).returncode == 0
    result = _run(["serve", "--workers", "0", "--port", "1"], url)
    assert result.returncode == 2 and "--workers must be 1 or more" in result.stderr
