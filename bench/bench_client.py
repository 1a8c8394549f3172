"""What a search loop pays per generation through `LatfarmClient`: one batched `predict` vs per-config.

Sets up a throw-away SQLite service under uvicorn on loopback, imports synthetic sr_block rows (a
FLOPs/frequency law: the client's cost does not depend on where the numbers came from), trains and activates a
predictor, then times one generation of `examples/sr_search.py` (a population of P configs) three ways:

- baseline: P single-config calls, a new connection each (`httpx` without keep-alive — the naive client);
- P single-config calls on one `LatfarmClient` (connection reuse);
- one batched call on one `LatfarmClient` (what `evolve` does);

and the DVFS variant's call (P configs × 3 frequencies in one request). Medians over `--rounds`.

    .venv/bin/python bench/bench_client.py [--population 32] [--rounds 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.blocks import get_family
from service import migrate
from service.app import create_app
from service.auth.service import create_token
from service.client import LatfarmClient
from service.db import make_engine, make_sessionmaker
from service.demo import ServerThread
from service.devices.models import Device, DeviceStatus, Transport
from service.settings import Settings
from service.sr_search import SearchSpace, random_widths

FREQS = [787_200, 1_996_800, 2_995_200]


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm: caches, connections
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="latfarm-bench-client-"))
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'bench.db'}", state_dir=tmp / "state", log_level="WARNING"
    )
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        _, token = create_token(session, "bench", ["admin"])
        device = Device(
            serial="127.0.0.1:1", transport=Transport.tcp, address="127.0.0.1:1", tags=[], model="bench",
            status=DeviceStatus.online,
            clusters=[{"name": "big", "cpus": [0], "frequencies_khz": FREQS}],
        )  # fmt: skip
        session.add(device)
        session.commit()
        device_id = device.id
    engine.dispose()

    space = SearchSpace(
        scale=4, output_height=216, output_width=384, max_depth=6, width_choices=(4, 8, 16, 32)
    )
    family = get_family("sr_block")
    rng = random.Random(0)
    rows = []
    for _ in range(200):
        config = space.config(random_widths(space, rng))
        gflops = family.costs(config).flops / 1e9
        for f in FREQS:
            ms = 0.3 + 40 * gflops * FREQS[-1] / f
            rows.append(
                {"device_id": device_id, "family": "sr_block", "config": config, "cluster": "big",
                 "frequency_khz": f, "runtime_name": "onnxruntime", "runs": 5, "median_ms": ms,
                 "mean_ms": ms, "min_ms": ms, "max_ms": ms, "p90_ms": ms}
            )  # fmt: skip
    population = [space.config(random_widths(space, rng)) for _ in range(args.population)]

    with ServerThread(create_app(settings)) as server, LatfarmClient(server.url, token) as lf:
        lf.import_measurements(rows)
        predictor = lf.wait_predictor(lf.train_predictor("sr_block", device_id).id, poll_s=0.1)
        lf.activate_predictor(predictor.id)
        top = FREQS[-1]

        def naive() -> None:
            for config in population:
                body = {"device": device_id, "family": "sr_block", "configs": [config], "frequency_khz": top}
                with httpx.Client(
                    headers={"Authorization": f"Bearer {token}", "Connection": "close"}
                ) as http:
                    http.post(f"{server.url}/v1/predict", json=body).raise_for_status()

        def reused() -> None:
            for config in population:
                lf.predict(device_id, "sr_block", [config], frequency_khz=top)

        def batched() -> None:
            lf.predict(device_id, "sr_block", population, frequency_khz=top)

        def batched_dvfs() -> None:
            lf.predict(device_id, "sr_block", population, frequencies_khz=FREQS)

        results = [
            (f"{args.population} calls, new connection each (baseline)", _median_ms(naive, args.rounds)),
            (f"{args.population} calls, one LatfarmClient", _median_ms(reused, args.rounds)),
            ("1 batched call, one LatfarmClient", _median_ms(batched, args.rounds)),
            (f"1 batched call × {len(FREQS)} frequencies (DVFS)", _median_ms(batched_dvfs, args.rounds)),
        ]
    base = results[0][1]
    print(f"one search generation: population {args.population}, median of {args.rounds} rounds")
    print(f"{'way':<52} {'ms':>9} {'vs baseline':>12}")
    for name, ms in results:
        print(f"{name:<52} {ms:>9.2f} {base / ms:>11.1f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
