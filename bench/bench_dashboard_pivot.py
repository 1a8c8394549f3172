"""Latency-table pivot: is 1,000 configs × 5 frequencies snappy, server-side?

Seeds a migrated SQLite database (and PostgreSQL with `--postgres URL`) with N configs × F frequencies of
`sr_block` measurements (two rows per point, so the newest-wins rule has work to do), then times:
- baseline: the bare SELECT of the rows of one (device, family) — the least any page must read;
- the pivot's first page cold (source cache emptied: the cost of the first view after new measurements),
  then with the cached source: first page, a frequency-sorted + filtered page, the last page, the CSV export;
- the whole `GET /dashboard/latency` request (render included) through the ASGI app.
Each figure is the median of `--rounds` runs, printed beside the baseline as a ratio.

Run: `.venv/bin/python bench/bench_dashboard_pivot.py [--configs 1000] [--frequencies 5] [--rounds 7]
     [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]`
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from profilers.blocks import config_hash  # noqa: E402
from service import migrate  # noqa: E402
from service.app import create_app  # noqa: E402
from service.auth.service import create_token  # noqa: E402
from service.dashboard.pivot import PivotQuery, clear_pivot_cache, latency_pivot, pivot_csv  # noqa: E402
from service.db import make_engine, make_sessionmaker, utcnow  # noqa: E402
from service.devices.models import Device, DeviceStatus, Transport  # noqa: E402
from service.measurements.models import Measurement  # noqa: E402
from service.settings import Settings  # noqa: E402

WIDTHS = (8, 12, 16, 24, 32, 48, 64)


def seed(session: Session, n_configs: int, n_freqs: int) -> int:
    """N distinct sr_block configs × F frequencies, each point measured twice; returns the device id."""
    device = Device(serial="bench:5555", transport=Transport.tcp, name="bench", status=DeviceStatus.online)
    session.add(device)
    session.flush()
    freqs = [600_000 + 350_000 * i for i in range(n_freqs)]
    rows = []
    for i in range(n_configs):
        depth = 1 + i % 8
        widths = [WIDTHS[(i // 8 + j) % len(WIDTHS)] for j in range(depth + 1)]
        # The input height makes every config distinct (and each a valid sr_block config).
        config = {
            "scale": 2,
            "height": 32 + i,
            "width": 640,
            "kernel": 3,
            "widths": widths,
            "activation": "relu",
            "residual": False,
        }
        digest = config_hash("sr_block", config)
        for khz in freqs:
            for repeat in range(2):
                median = (1 + i % 97) * 1e6 / khz + repeat
                rows.append(
                    Measurement(
                        device_id=device.id,
                        family="sr_block",
                        config=config,
                        config_hash=digest,
                        cluster="big",
                        frequency_khz=khz,
                        observed_frequency_khz=khz,
                        pinned=True,
                        runtime_name="onnxruntime",
                        threads=1,
                        runs=10,
                        warmup=2,
                        median_ms=median,
                        mean_ms=median,
                        std_ms=0.1,
                        min_ms=median * 0.9,
                        max_ms=median * 1.1,
                        p90_ms=median * 1.05,
                        raw_runs_ms=[],
                        valid=True,
                        measured_at=utcnow(),
                    )
                )
    session.add_all(rows)
    session.commit()
    return device.id


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Median wall time of `fn` in ms over `rounds` runs (after one warm-up)."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def bench(url: str, label: str, n_configs: int, n_freqs: int, rounds: int, state: Path) -> None:
    migrate.upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        device_id = seed(session, n_configs, n_freqs)
        _, secret = create_token(session, f"bench-{time.time_ns()}", ["read"])
    base = PivotQuery(device=device_id, family="sr_block")
    top_freq = f"f{600_000 + 350_000 * (n_freqs - 1)}"

    def select_rows() -> object:
        with sessions() as s:
            return s.execute(
                select(
                    Measurement.config_hash,
                    Measurement.config,
                    Measurement.frequency_khz,
                    Measurement.median_ms,
                ).where(Measurement.device_id == device_id, Measurement.family == "sr_block")
            ).all()

    def pivot(query: PivotQuery) -> Callable[[], object]:
        def run() -> object:
            with sessions() as s:
                return latency_pivot(s, query)

        return run

    def cold(query: PivotQuery) -> Callable[[], object]:
        def run() -> object:
            clear_pivot_cache()
            with sessions() as s:
                return latency_pivot(s, query)

        return run

    def csv_export() -> object:
        with sessions() as s:
            return pivot_csv(latency_pivot(s, base.model_copy(update={"per_page": 500})))

    last_page = (n_configs + base.per_page - 1) // base.per_page
    client = TestClient(create_app(Settings(database_url=url, state_dir=state)))
    client.cookies.set("latfarm_token", secret)

    def http_page() -> object:
        response = client.get(
            f"/dashboard/latency?device={device_id}&family=sr_block&sort=-{top_freq}&width_min=16"
        )
        assert response.status_code == 200, response.text[:300]
        return response

    baseline = timed(select_rows, rounds)
    cases = [
        ("SELECT rows (baseline)", baseline),
        ("pivot page 1, cold (first view of new data)", timed(cold(base), rounds)),
        ("pivot page 1, sort by config (cached source)", timed(pivot(base), rounds)),
        (
            f"pivot sort -{top_freq}, depth 2-5, width ≥ 16",
            timed(
                pivot(
                    base.model_copy(
                        update={"sort": f"-{top_freq}", "depth_min": 2, "depth_max": 5, "width_min": 16}
                    )
                ),
                rounds,
            ),
        ),
        (f"pivot last page ({last_page})", timed(pivot(base.model_copy(update={"page": last_page})), rounds)),
        ("CSV of a 500-row page", timed(csv_export, rounds)),
        ("GET /dashboard/latency (HTTP + render)", timed(http_page, rounds)),
    ]
    client.close()
    engine.dispose()
    print(
        f"\n{label}: {n_configs} configs × {n_freqs} frequencies ({2 * n_configs * n_freqs} rows), "
        f"median of {rounds} rounds"
    )
    print(f"{'case':<48} {'ms':>9} {'× baseline':>11}")
    for name, ms in cases:
        print(f"{name:<48} {ms:>9.1f} {ms / baseline:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--frequencies", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--postgres", help="also run on PostgreSQL: an admin URL; a scratch database is made and dropped"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{tmp}/bench.db", "SQLite", args.configs, args.frequencies, args.rounds, Path(tmp))
        if args.postgres:
            with scratch_postgres(args.postgres) as url:
                bench(url, "PostgreSQL", args.configs, args.frequencies, args.rounds, Path(tmp))


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database next to `admin_url`'s, dropped afterwards."""
    name = f"latfarm_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
