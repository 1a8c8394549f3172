"""Property-based fuzzing of the whole API: ≥ 1,000 drawn requests per engine, and how many answered ≥ 500.

schemathesis draws requests from the app's own OpenAPI — valid ones and deliberately invalid ones — and
sends them in-process (tests/service/api_fuzz.py, the driver the suite's test uses too). Prints, per
engine: cases, responses ≥ 500 (target 0), those on routes other work owns (`/v1/predict`,
`/v1/predictors/import`: reported, not judged), contract violations (a 4xx not problem+json, an undocumented
status or content type, a body off its schema), and the wall time beside a same-run baseline: the same
number of plain `GET /healthz` calls through the same in-process transport.

Run: `.venv/bin/python bench/bench_api_fuzz.py [--per-operation 30] [--seed 0] [--sqlite-only]`
(PostgreSQL at LATFARM_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test; a
scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from service import migrate  # noqa: E402
from service.app import create_app  # noqa: E402
from service.auth.service import create_token  # noqa: E402
from service.db import make_engine, make_sessionmaker  # noqa: E402
from service.deps import get_runner  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.service.api_fuzz import fuzz, fuzz_runner, seed_resources  # noqa: E402

ADMIN_URL = os.environ.get("LATFARM_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres() -> tuple[str, Callable[[], None]]:
    admin_url = make_url(ADMIN_URL)
    name = f"latfarm_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(admin_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.set(database=name).render_as_string(hide_password=False), drop


def _run(engine_name: str, url: str, state: Path, per_operation: int, seed: int) -> list[str]:
    migrate.upgrade(url)
    app = create_app(Settings(database_url=url, state_dir=state))
    app.dependency_overrides[get_runner] = fuzz_runner  # drawn addresses reach no network
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        _, secret = create_token(session, "bench-fuzz", ["admin"])
    engine.dispose()
    headers = {"Authorization": f"Bearer {secret}"}
    seed_resources(app, headers)
    started = time.perf_counter()
    report = fuzz(app, headers, examples_per_operation=per_operation, seed=seed)
    fuzz_s = time.perf_counter() - started
    client = TestClient(app)
    started = time.perf_counter()
    for _ in range(report.cases):
        client.get("/healthz")
    baseline_s = time.perf_counter() - started
    for line in report.server_errors + report.report_only_server_errors + report.violations:
        print(f"  [{engine_name}] {line}")
    return [
        engine_name,
        f"{report.cases:,}",
        str(report.responses_5xx),
        str(len(report.report_only_server_errors)),
        str(len(report.violations)),
        f"{fuzz_s:.1f} s",
        f"{baseline_s:.1f} s",
        " ".join(f"{status}:{n}" for status, n in sorted(report.statuses.items())),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-operation", type=int, default=30, help="drawn cases per operation and mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # a 500's traceback would bury the table; the rows list them anyway
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(
            _run("sqlite", f"sqlite:///{tmp}/fuzz.db", Path(tmp) / "s1", args.per_operation, args.seed)
        )
        if not args.sqlite_only:
            url, drop = _postgres()
            try:
                rows.append(_run("postgresql", url, Path(tmp) / "s2", args.per_operation, args.seed))
            finally:
                drop()
    header = [
        "engine",
        "cases",
        ">= 500",
        "of which report-only",
        "violations",
        "fuzz wall",
        "baseline",
        "statuses",
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print("baseline: the same number of GET /healthz through the same in-process transport, same run")
    return 0 if all(row[2] == "0" and row[4] == "0" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
