"""`/v1/predict` under load: bounded concurrent clients on loopback, each request 100 never-seen configs.

Trains an sr_block predictor on synthetic rows (as bench_predict.py), starts `latfarm serve --workers W`
as a subprocess on a SQLite file (W = 1, then one per core), and runs 1, 20 and 50 keep-alive clients
against it, each level for at most `--seconds` or `--max-requests`, whichever comes first, split into
`--rounds` turns taken in alternation with the other levels; every process is stopped at the end. The
clients are a minimal asyncio HTTP/1.1 loop with pre-encoded bodies, so the load generator takes little
of the CPU the server needs; a level's connections are opened before its clock starts (keep-alive clients
connect once; see `_level`).

Baselines in the same run: the service time of one request measured in process (parse the body,
featurise 100 new configs, three models, JSON answer; no HTTP), and from it the ceiling
cores ÷ service time; and the service time of one request over HTTP (the server's CPU per request with
one worker and one client: the same work plus the framework, the token check and the socket writes),
from which the ceiling the load levels are held to, min(workers, cores − the load generator's cores) ÷
that service time. Both ceilings are of requests answered one at a time: a server process answers the
requests it reads in one event-loop turn with one model call (`service/predictors/coalesce.py`), so with
many clients a request costs less than alone and the levels may pass both (server CPU/req shows it).

    .venv/bin/python bench/bench_load.py [--seconds 6] [--max-requests 10000] [--rounds 3]

Targets: throughput at 50 clients ≥ at 20 and close to cores ÷ service time; p99 ≤ 3 × p50; 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import (
    cpu_seconds,
    free_port,
    predict_request,
    seed_database,
    server_env,
    start_server,
    stop_server,
)

from profilers.blocks import get_family
from service import migrate
from service.db import make_engine, make_sessionmaker
from service.predictors import features
from service.predictors.registry import load_latency_model
from service.predictors.routes import parse_predict_body
from service.settings import Settings

CONFIGS_PER_REQUEST = 100
LEVELS = (1, 20, 50)


def fresh_bodies(device_id: int, count: int, rng: random.Random) -> list[bytes]:
    """`count` bodies of 100 random sr_block configs of the family's example space (valid by construction:
    a residual block's last width is its head width), practically never repeated."""
    space = get_family("sr_block").search_space_example()
    length = space["widths"]["length"]
    choices = {name: spec["choices"] for name, spec in space.items()}
    bodies = []
    for _ in range(count):
        configs = []
        for _ in range(CONFIGS_PER_REQUEST):
            widths = [rng.choice(choices["widths"]) for _ in range(rng.randint(length["min"], length["max"]))]
            residual = rng.choice(choices["residual"])
            if residual:
                widths[-1] = widths[0]
            configs.append(
                {
                    "scale": rng.choice(choices["scale"]),
                    "height": rng.choice(choices["height"]),
                    "width": rng.choice(choices["width"]),
                    "kernel": rng.choice(choices["kernel"]),
                    "widths": widths,
                    "activation": rng.choice(choices["activation"]),
                    "residual": residual,
                }
            )
        body = {"device": device_id, "family": "sr_block", "frequency_khz": 1_700_000, "configs": configs}
        bodies.append(json.dumps(body).encode())
    return bodies


async def _client(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    requests: list[bytes],
    next_index: list[int],
    deadline: float,
    latencies: list[float],
) -> int:
    """One keep-alive connection sending requests until the list or the time runs out; returns errors."""
    errors = 0
    reader, writer = connection
    try:
        while time.perf_counter() < deadline and next_index[0] < len(requests):
            request = requests[next_index[0]]
            next_index[0] += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000.0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
    except (OSError, asyncio.IncompleteReadError):
        errors += 1
    finally:
        writer.close()
    return errors


async def _level(
    port: int, requests: list[bytes], clients: int, seconds: float
) -> tuple[list[float], int, float]:
    """Run `clients` connections over `requests`: (latencies, errors, seconds from the first request sent
    to the last answer read). The connections are opened before the clock starts: a search job keeps its
    connection, and 50 connects inside a ~1 s round put the set-up of the connections, not the serving, in
    the 50-client figure."""
    connections = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(clients)))
    latencies: list[float] = []
    next_index = [0]
    started = time.perf_counter()
    deadline = started + seconds
    errors = await asyncio.gather(
        *(_client(c, requests, next_index, deadline, latencies) for c in connections)
    )
    return latencies, sum(errors), time.perf_counter() - started


def service_time_ms(settings: Settings, predictor_id: int, bodies: list[bytes]) -> float:
    """Median in-process time of one cold 100-config request: parse, featurise, three models, JSON."""
    factory = make_sessionmaker(make_engine(settings.database_url))
    with factory() as session:
        model = load_latency_model(session, predictor_id)
    samples = []
    for body in bodies:
        features._JSON_CACHES.clear()
        started = time.perf_counter()
        request = parse_predict_body(body)
        model.predict(request.configs, request.frequencies).to_json(predictor_id)
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="longest run of one level")
    parser.add_argument("--max-requests", type=int, default=10000, help="most requests of one level")
    parser.add_argument("--rounds", type=int, default=3, help="turns each level takes")
    parser.add_argument("--train-configs", type=int, default=300)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="latfarm-load-"))
    settings = Settings(database_url=f"sqlite:///{tmp / 'load.db'}", state_dir=tmp, log_level="WARNING")
    migrate.upgrade(settings.database_url)
    device_id, predictor_id, secret = seed_database(settings, args.train_configs)
    rng = random.Random(2026)
    cores = os.cpu_count() or 1
    service_ms = service_time_ms(settings, predictor_id, fresh_bodies(device_id, 60, rng))
    ceiling = cores * 1000.0 / service_ms

    env = server_env(settings)
    results = []
    for workers in sorted({1, cores}):
        port = free_port()
        server = start_server(workers, port, env)
        try:
            warm = [predict_request(port, secret, b) for b in fresh_bodies(device_id, 20 * workers, rng)]
            asyncio.run(
                _level(port, warm, min(workers * 2, len(warm)), 10.0)
            )  # every process loads the model
            # Levels take turns in short rounds (1, 20, 50, 1, 20, 50, …), so a burst of another tenant's
            # load on the shared machine lands on every level alike instead of on whichever ran during it.
            totals: dict[int, list] = {c: [[], 0, 0.0, 0.0, 0.0] for c in LEVELS}
            for _ in range(args.rounds):
                for clients in LEVELS:
                    count = args.max_requests // args.rounds
                    requests = [predict_request(port, secret, b) for b in fresh_bodies(device_id, count, rng)]
                    cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
                    latencies, errors, elapsed = asyncio.run(
                        _level(port, requests, clients, args.seconds / args.rounds)
                    )
                    total = totals[clients]
                    total[0] += latencies
                    total[1] += errors
                    total[2] += elapsed
                    total[3] += cpu_seconds(server.pid) - cpu
                    total[4] += time.process_time() - client_cpu
            for clients, (latencies, errors, elapsed, cpu, client_cpu) in totals.items():
                cpu_ms = cpu * 1000.0 / max(len(latencies), 1)
                results.append((workers, clients, latencies, errors, elapsed, cpu_ms, client_cpu / elapsed))
        finally:
            stop_server(server)

    print(
        f"\n/v1/predict under load: {CONFIGS_PER_REQUEST} never-seen sr_block configs a request, keep-alive "
        f"loopback clients, SQLite; each level ≤ {args.seconds:g} s or ≤ {args.max_requests} requests"
    )
    print(
        f"baseline (same run): service time of one request in process {service_ms:.2f} ms → "
        f"cores ÷ service time = {cores} ÷ {service_ms:.2f} ms = {ceiling:.0f} req/s (machine shared: noisy)"
    )
    http_ms = next(cpu for w, c, *_, cpu, _ in results if (w, c) == (1, 1))
    print(
        f"service time of one request over HTTP (server CPU, 1 worker, 1 client): {http_ms:.2f} ms → "
        f"HTTP ceiling {cores} ÷ {http_ms:.2f} ms = {cores * 1000.0 / http_ms:.0f} req/s less the load "
        "generator's share"
    )
    head = (
        f"{'workers':>7} | {'clients':>7} | {'requests':>8} | {'errors':>6} | {'req/s':>7} | "
        f"{'of ceiling':>10} | {'p50':>8} | {'p99':>8} | {'p99/p50':>7} | {'server CPU/req':>14} | "
        f"{'client cores':>12} | {'of HTTP ceiling':>15}"
    )
    print(head)
    print("-" * len(head))
    for workers, clients, latencies, errors, elapsed, cpu_ms, client_cores in results:
        rate = len(latencies) / elapsed
        p50, p99 = float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))
        # The load generator runs on the same cores: the server can use at most what it leaves.
        left = min(workers, cores - client_cores) * 1000.0 / http_ms
        print(
            f"{workers:>7} | {clients:>7} | {len(latencies):>8} | {errors:>6} | {rate:>7.0f} | "
            f"{rate / ceiling:>9.0%} | {p50:>6.2f}ms | {p99:>6.2f}ms | {p99 / p50:>7.2f} | "
            f"{cpu_ms:>12.2f}ms | {client_cores:>12.2f} | {rate / left:>14.0%}"
        )
    print("targets: req/s at 50 clients ≥ at 20 and near the ceiling; p99/p50 ≤ 3; 0 errors")
    print(
        "client cores: CPU the load generator (this process) used, in cores; of HTTP ceiling: req/s ÷ "
        "(min(workers, cores − client cores) ÷ service time over HTTP)"
    )
    print(
        "server CPU/req: CPU seconds of all server processes over the level ÷ requests: what a request costs,"
        " whatever share of the cores the other tenants of the machine left us; below the one-client figure"
        " where concurrent requests were answered together (one model call per event-loop turn)"
    )


if __name__ == "__main__":
    main()
