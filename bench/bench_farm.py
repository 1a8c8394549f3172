"""End-to-end farm efficiency on virtual phones: how much of the wall time the phones spend benchmarking.

efficiency = Σ device-reported benchmark time / (phones × wall time), target ≥ 0.85, where the
device-reported time is the sum of the virtual phones' own benchmark-run intervals (warm-up and timed
runs) and the wall time runs from the job's submission to its last task done. The rest is the farm's
overhead: claiming, pinning, model pushes, cooldown checks, temperature/frequency reads, storing results.
Beside it, the same job with one worker per phone on a single phone (the baseline of one pipeline).

Run: `.venv/bin/python bench/bench_farm.py [--phones 2] [--configs 12] [--runs 20] [--size 256]`
(PostgreSQL at LATFARM_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test;
a scratch database is created and dropped; worker processes are `latfarm worker`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_queue import _scratch_database  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from profilers.virtual_phone import VirtualPhone  # noqa: E402
from service.db import make_engine, make_sessionmaker  # noqa: E402
from service.devices.models import Device, Transport  # noqa: E402
from service.devices.probing import probe_device  # noqa: E402
from service.devices.runner import AdbRunner  # noqa: E402
from service.jobs.models import Task, TaskStatus  # noqa: E402
from service.jobs.schemas import JobCreate  # noqa: E402
from service.jobs.service import create_job  # noqa: E402
from service.settings import Settings  # noqa: E402

LATFARM = Path(sys.executable).with_name("latfarm")


def _run(url: str, state: Path, n_phones: int, n_configs: int, runs: int, size: int) -> tuple[float, float]:
    """(efficiency, wall seconds) of one job over `n_phones` phones with one worker process each."""
    settings = Settings(database_url=url, state_dir=state)
    factory = make_sessionmaker(make_engine(url))
    phones = [
        VirtualPhone(profile="virtual-midrange", state_dir=state / f"phone{n_phones}-{i}").start()
        for i in range(n_phones)
    ]
    env = {
        **os.environ,
        "LATFARM_DATABASE_URL": url,
        "LATFARM_STATE_DIR": str(state),
        "LATFARM_WORKER_POLL_SECONDS": "0.05",
        "LATFARM_WORKER_BATCH_SIZE": "8",
        "LATFARM_COOLDOWN_CELSIUS": "95",
    }
    workers: list[subprocess.Popen[bytes]] = []
    try:
        device_ids = []
        with factory() as session:
            for phone in phones:
                device = Device(serial=phone.serial, transport=Transport.tcp, address=phone.serial)
                session.add(device)
                session.commit()
                probe_device(session, device, AdbRunner(settings))
                device_ids.append(device.id)
        workers = [
            subprocess.Popen(
                [str(LATFARM), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for _ in phones
        ]
        time.sleep(3)  # let the workers import and connect before the clock starts
        configs = [
            {"scale": 2, "height": size, "width": size, "widths": [8 + 4 * (i % 6), 8 + 4 * (i // 6 % 4)]}
            for i in range(n_configs)
        ]
        body = {
            "family": "sr_block",
            "configs": configs,
            "devices": device_ids,
            "frequencies": "min-mid-max",
            "runtime": {"runs": runs, "warmup": 1},
            "force": True,
        }
        started_wall = time.time()
        with factory() as session:
            job = create_job(session, JobCreate.model_validate(body), settings, "bench")
        while True:
            with factory() as session:
                left = session.scalar(
                    select(func.count()).where(
                        Task.job_id == job.id, Task.status.in_((TaskStatus.queued, TaskStatus.leased))
                    )
                )
            if left == 0:
                break
            time.sleep(0.05)
        wall = time.time() - started_wall
        busy = sum(
            min(end, started_wall + wall) - max(start, started_wall)
            for phone in phones
            for start, end in phone.benchmark_intervals()
            if end > started_wall
        )
        overlaps = sum(phone.count_overlapping_benchmarks() for phone in phones)
        assert overlaps == 0, f"{overlaps} overlapping benchmarks"
        return busy / (n_phones * wall), wall
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(timeout=60)
        for phone in phones:
            phone.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phones", type=int, default=2)
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="input side of the sr_block configs")
    args = parser.parse_args()
    url, drop = _scratch_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one, wall_one = _run(url, Path(tmp), 1, args.configs, args.runs, args.size)
            many, wall_many = _run(url, Path(tmp), args.phones, args.configs, args.runs, args.size)
    finally:
        drop()
    tasks = args.configs * 3
    print(f"\nfarm efficiency, virtual phones (sr_block {args.size}², {args.runs} runs, 3 frequencies)")
    print(f"{'phones':>7} {'tasks':>7} {'wall s':>8} {'efficiency':>11} {'target':>8}")
    print(f"{1:>7} {tasks:>7} {wall_one:>8.1f} {one:>11.2f} {'':>8}")
    print(f"{args.phones:>7} {tasks * args.phones:>7} {wall_many:>8.1f} {many:>11.2f} {'>= 0.85':>8}")
    print(f"ratio {args.phones} phones / 1 phone: {many / one:.2f}")


if __name__ == "__main__":
    main()
