"""Queue throughput and import ingest on PostgreSQL.

Prints a table with the baseline measured in the same run beside each figure:
- tasks claimed and completed per second by 1, 2 and 4 worker *processes* with the no-op device runner
  (the queue's own cost: device lease, batch claim, one transaction per result, release), and the ratio to
  1 worker. Workers start first and idle; the clock runs from the job's commit to its last task done.
- expansion of a 100,000-task job (validation, reuse lookup, bulk insert): seconds.
- `POST /v1/measurements/import` ingest rate in rows/s through the HTTP app (target ≥ 5,000 rows/s).

Run: `.venv/bin/python bench/bench_queue.py [--tasks 3000] [--devices 8] [--import-rows 20000]`
(PostgreSQL at LATFARM_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test;
a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from service import migrate  # noqa: E402
from service.db import make_engine, make_sessionmaker  # noqa: E402
from service.devices.models import Device, DeviceStatus, Transport  # noqa: E402
from service.jobs.models import Task, TaskStatus  # noqa: E402
from service.jobs.schemas import JobCreate  # noqa: E402
from service.jobs.service import create_job  # noqa: E402
from service.settings import Settings  # noqa: E402

ADMIN_URL = os.environ.get("LATFARM_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FREQS = [600_000, 1_200_000, 1_800_000]


def _scratch_database() -> tuple[str, callable]:
    admin_url = make_url(ADMIN_URL)
    name = f"latfarm_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(admin_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def _devices(url: str, n: int) -> list[int]:
    factory = make_sessionmaker(make_engine(url))
    with factory() as session:
        devices = [
            Device(
                serial=f"10.9.0.{i}:5555",
                transport=Transport.tcp,
                address=f"10.9.0.{i}:5555",
                status=DeviceStatus.online,
                clusters=[{"name": "big", "cpus": [0], "frequencies_khz": FREQS}],
            )
            for i in range(n)
        ]
        session.add_all(devices)
        session.commit()
        return [d.id for d in devices]


def _configs(n: int) -> list[dict]:
    return [{"scale": 2, "height": 8 + i // 64, "width": 8, "widths": [1 + i % 64]} for i in range(n)]


def _worker_main(url: str) -> None:
    """A bench worker process: the real worker loop with the no-op runner."""
    from service.devices.runner import NoopRunner
    from service.jobs.worker import Worker

    settings = Settings(database_url=url, worker_poll_seconds=0.02, worker_batch_size=32, lease_seconds=30)
    worker = Worker(make_sessionmaker(make_engine(url)), settings, NoopRunner())
    print("ready", flush=True)
    worker.run(max_idle_seconds=float(os.environ.get("BENCH_IDLE_S", "3")))


def _throughput(url: str, device_ids: list[int], workers: int, n_tasks: int) -> float:
    env = {**os.environ, "BENCH_IDLE_S": "3"}
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url], stdout=subprocess.PIPE, env=env, text=True
        )
        for _ in range(workers)
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    factory = make_sessionmaker(make_engine(url))
    per_device = max(1, n_tasks // len(device_ids))
    with factory() as session:
        body = {
            "family": "sr_block",
            "configs": _configs(per_device),
            "devices": device_ids,
            "frequencies": [FREQS[0]],
            "force": True,
        }
        job = create_job(session, JobCreate.model_validate(body), Settings(database_url=url), "bench")
        total = job.total_tasks
    started = time.perf_counter()
    while True:
        with factory() as session:
            done = session.scalar(
                select(func.count()).where(Task.job_id == job.id, Task.status == TaskStatus.done)
            )
        if done == total:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.wait(timeout=60)
    return total / elapsed


def _expansion_seconds(url: str, device_ids: list[int]) -> float:
    factory = make_sessionmaker(make_engine(url))
    n_configs = 100_000 // (len(device_ids) * len(FREQS)) + 1
    body = {"family": "sr_block", "configs": _configs(n_configs), "devices": device_ids, "frequencies": "all"}
    with factory() as session:
        started = time.perf_counter()
        job = create_job(session, JobCreate.model_validate(body), Settings(database_url=url), "bench")
        elapsed = time.perf_counter() - started
        session.execute(text("DELETE FROM task WHERE job_id = :j"), {"j": job.id})
        session.commit()
    print(f"  (expanded {job.total_tasks} tasks)")
    return elapsed


def _import_rate(url: str, device_id: int, rows: int) -> float:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.auth.service import create_token

    settings = Settings(database_url=url)
    app = create_app(settings)
    with make_sessionmaker(make_engine(url))() as session:
        _, secret = create_token(session, "bench", ["profile"])
    body = {
        "rows": [
            {
                "device_id": device_id,
                "family": "sr_block",
                "config": {"scale": 2, "height": 16, "width": 16, "widths": [1 + i % 32, 1 + i % 7]},
                "cluster": "big",
                "frequency_khz": FREQS[i % 3],
                "runtime_name": "onnxruntime",
                "runs": 3,
                "median_ms": 2.0,
                "mean_ms": 2.1,
                "std_ms": 0.1,
                "min_ms": 1.9,
                "max_ms": 2.5,
                "p90_ms": 2.4,
                "raw_runs_ms": [1.9, 2.0, 2.5],
            }
            for i in range(rows)
        ]
    }
    with TestClient(app) as client:
        started = time.perf_counter()
        r = client.post("/v1/measurements/import", json=body, headers={"Authorization": f"Bearer {secret}"})
        elapsed = time.perf_counter() - started
    assert r.status_code == 201 and r.json()["imported"] == rows, r.text
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--import-rows", type=int, default=20_000)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker_main(args.worker)
        return
    url, drop = _scratch_database()
    try:
        device_ids = _devices(url, args.devices)
        rates = {}
        for workers in (1, 2, 4):
            rates[workers] = _throughput(url, device_ids, workers, args.tasks)
        expansion = _expansion_seconds(url, device_ids)
        ingest = _import_rate(url, device_ids[0], args.import_rows)
    finally:
        drop()
    print(f"\nqueue on PostgreSQL, no-op devices: {args.devices} phones, {args.tasks} tasks per run")
    print(f"{'workers':>8} {'tasks/s':>10} {'vs 1 worker':>12}")
    for workers, rate in rates.items():
        print(f"{workers:>8} {rate:>10.0f} {rate / rates[1]:>11.2f}x")
    print(f"\n{'measure':<40} {'value':>12} {'target':>10}")
    print(f"{'expand a 100k-task job (s)':<40} {expansion:>12.1f} {'< 60':>10}")
    print(f"{'import ingest (rows/s)':<40} {ingest:>12.0f} {'>= 5000':>10}")


if __name__ == "__main__":
    main()
