"""Serving latency of `/v1/predict` over HTTP beside its floors measured in the same run, warm and cold.

Trains a predictor (default parameters) on synthetic sr_block rows that follow a FLOPs/frequency law (the
serving path does not depend on where the numbers came from), starts `latfarm serve` as its own process
(as a search job meets it) and times requests over one keep-alive loopback connection with a minimal
client (`serving.KeepAliveClient`: what is timed is the service, not a client library; the httpx client
a search job would use is timed beside it for one config). Baselines in the same run, alternated with the
requests: `json.loads` of the same body and the three served models (`Booster.inplace_predict`, median,
p10, p90) on the already-featurised rows. The server's CPU time per request is read from /proc.

- cold: 1, 100, 1,000 and 10,000 configs never seen before in every request (a search job's new
  generation);
- warm: the same 1 or 1,000 configs every request (the feature cache holds them);
- the trees: the compiled walk the service runs (`service/predictors/forest.py`) against XGBoost's calls;
- in-process cold featurisation of 1,000 new configs: the tracer, the ONNX-graph path, the one-config
  featuriser and the batch featuriser.

    .venv/bin/python bench/bench_predict.py [--rounds 200]

Targets: 1 config ≤ 1 ms median and ≤ 3 ms p99; cold 1,000 configs ≤ 3 × (JSON decode + raw 3 models);
cold 10,000 ≈ 10 × cold 1,000; warm 1,000 configs ≤ 15 ms median.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import (
    KeepAliveClient,
    cpu_seconds,
    free_port,
    predict_request,
    sample_configs,
    seed_database,
    server_env,
    start_server,
    stop_server,
)

from profilers.blocks import get_family
from profilers.blocks.graph import GraphBuilder
from service import migrate
from service.db import make_engine, make_sessionmaker
from service.predictors import batch_features, features
from service.predictors.features import Featurizer
from service.predictors.inference import PREDICT_THREADS, LatencyModel
from service.predictors.registry import load_latency_model
from service.settings import Settings

JSON = {"content-type": "application/json"}
FREQUENCY = 1_700_000


def _time_alternated(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    blocks: int = 10,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """ms per call of each function; the functions take turns in `blocks` runs of back-to-back calls.

    Taking turns makes the ratios fair on a shared machine: a burst of someone else's load lands on the
    service and on its baseline alike instead of on whichever happened to run during it. Calls stay
    back-to-back within a run (as a search loop sends them), so each side is timed warm. With `cpu`, the
    process CPU time of each call is kept there too (server thread and client both count: one process).
    """
    for fn in fns.values():
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    per_block = max(1, rounds // blocks)
    for _ in range(blocks):
        for name, fn in fns.items():
            for _ in range(per_block):
                c = time.process_time()
                t = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t) * 1000.0)
                if cpu is not None:
                    cpu.setdefault(name, []).append((time.process_time() - c) * 1000.0)
    return samples


def _p99(samples: list[float]) -> float:
    return float(np.percentile(samples, 99))


def _onnx_graph_costs(family, config):
    """Cost counts read off a GraphBuilder walk (ONNX nodes made, no weights): the previous costs path."""
    builder = GraphBuilder(family.name, family.input_shape(config), with_weights=False)
    family.describe(config, builder)
    return builder.costs()


def cold_featurisation(rounds: int = 9) -> None:
    """Print the cold path: 1,000 new configs through the tracer, the ONNX-graph path and the featurisers."""
    family = get_family("sr_block")
    parsed = [family.parse(c) for c in sample_configs(1000, seed=4242)]
    tracer, graph, one_by_one, batch = [], [], [], []
    for r in range(rounds):  # alternated rounds, so load changes on the shared machine hit all alike
        t = time.process_time()
        tracer_costs = [family.costs(c) for c in parsed]
        tracer.append((time.process_time() - t) * 1000.0)
        t = time.process_time()
        graph_costs = [_onnx_graph_costs(family, c) for c in parsed]
        graph.append((time.process_time() - t) * 1000.0)
        assert tracer_costs == graph_costs
        for path, samples in ((10**9, one_by_one), (batch_features.BATCH_MIN, batch)):
            fresh = sample_configs(1000, seed=10_000 + r)  # never seen by the feature cache
            features._CACHES.clear()
            batch_features.BATCH_MIN, saved = path, batch_features.BATCH_MIN
            c = time.process_time()
            Featurizer("sr_block", ["big"]).config_rows(fresh)
            samples.append((time.process_time() - c) * 1000.0)
            batch_features.BATCH_MIN = saved
    med_t, med_g = statistics.median(tracer), statistics.median(graph)
    print(
        f"\nCold featurisation in process, 1,000 new sr_block configs (median CPU time of {rounds} "
        "alternated rounds: the shared machine's other tenants move wall time far more)"
    )
    head = f"{'step':<58} | {'1,000 configs':>13} | {'per config':>11} | {'vs ONNX path':>12}"
    print(head)
    print("-" * len(head))
    for label, ms in (
        ("costs via CostTracer (fam.costs, no ONNX)", med_t),
        ("costs via GraphBuilder (ONNX nodes, previous path)", med_g),
        ("featurise one config at a time (parse + tracer + row)", statistics.median(one_by_one)),
        ("featurise the batch as arrays (structs + layer table)", statistics.median(batch)),
    ):
        print(f"{label:<58} | {ms:>11.1f}ms | {ms:>8.1f} µs | {med_g / ms:>11.1f}x")


def _fresh_bodies(device_id: int, n: int, count: int, seen: set[str], rng: random.Random) -> list[bytes]:
    """`count` request bodies of `n` configs each, no config in two bodies (nor in `seen`)."""
    family = get_family("sr_block")
    bodies = []
    for _ in range(count):
        configs = []
        while len(configs) < n:
            text = json.dumps(family.sample(rng).model_dump(mode="json"))
            if text not in seen:
                seen.add(text)
                configs.append(text)
        bodies.append(
            b'{"device": %d, "family": "sr_block", "frequency_khz": %d, "configs": [%s]}'
            % (device_id, FREQUENCY, ", ".join(configs).encode())
        )
    return bodies


def _rows(model: LatencyModel, configs: list) -> np.ndarray:
    return model.featurizer.matrix(
        model.featurizer.config_rows(configs), np.array([float(FREQUENCY)]), 1, "big", broadcast=True
    )


def _raw_three(model: LatencyModel, x: np.ndarray) -> Callable[[], None]:
    margin = model.margins(x)

    def call() -> None:
        for booster in (model.booster, model.booster_p10, model.booster_p90):
            booster.inplace_predict(x, base_margin=margin)

    return call


def cold_http(
    client: KeepAliveClient,
    server_group: int,
    request: Callable[[bytes], bytes],
    model,
    device_id: int,
    rounds: int,
) -> None:
    """Print the cold table: every request carries configs never seen before, beside its baselines."""
    rng, seen = random.Random(99), set()
    rows = []
    for n, count in ((1, rounds), (100, max(20, rounds // 2)), (1000, max(10, rounds // 4)), (10_000, 10)):
        extra = min(count, 50)  # timed apart for the server's CPU time: /proc has 10 ms ticks
        bodies = _fresh_bodies(device_id, n, count + 3 + extra, seen, rng)  # 3 for the warm-up calls
        queue = iter(bodies[extra:])
        raw3 = _raw_three(model, _rows(model, json.loads(bodies[0])["configs"]))

        def call(queue: Iterator[bytes] = queue) -> None:
            client.send(request(next(queue)))

        timed = _time_alternated(
            {"cold": call, "json": lambda b=bodies[-1]: json.loads(b), "raw3": raw3},
            count,
            blocks=min(10, count),
        )
        before = cpu_seconds(server_group)
        for body in bodies[:extra]:
            client.send(request(body))
        server_cpu = (cpu_seconds(server_group) - before) * 1000.0 / extra
        rows.append((n, timed["cold"], timed["json"], timed["raw3"], server_cpu))
    print(
        "\n/v1/predict cold: every request holds configs never seen before (a search job's new generation); "
        "server in its own process, one keep-alive connection; baselines in the same run, alternated"
    )
    head = (
        f"{'configs':>7} | {'cold med':>9} {'cold p99':>9} | {'json.loads':>10} | {'raw 3 med':>9} | "
        f"{'cold/(json+raw3)':>16} | {'µs/config':>9} | {'server CPU':>10} | {'target':>16}"
    )
    print(head)
    print("-" * len(head))
    per_config_1000 = 0.0
    for n, cold, decode, raw3, cpu in rows:
        med, j, r3 = statistics.median(cold), statistics.median(decode), statistics.median(raw3)
        if n == 1000:
            per_config_1000 = med / n
        target = {1: "≤ 1 ms, p99 ≤ 3", 1000: "≤ 3×"}.get(n, "")
        if n == 10_000:
            target = f"{med / n / per_config_1000:.2f}× µs/cfg of 1k"
        print(
            f"{n:>7} | {med:>7.2f}ms {_p99(cold):>7.2f}ms | {j:>8.3f}ms | {r3:>7.3f}ms | "
            f"{med / (j + r3):>16.2f} | {1000 * med / n:>9.1f} | {cpu:>8.2f}ms | "
            f"{target:>16}"
        )
    print(
        "server CPU = CPU time of the server's processes over up to 50 more such requests (/proc, 10 ms "
        f"ticks), per request; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


def tree_walk(model: LatencyModel, rounds: int = 100) -> None:
    """Print the served trees on pre-built rows: the compiled walk the service uses against XGBoost."""
    forest = model.forest
    if forest is None:
        return
    print(
        f"\nThe three served models on pre-built rows ({forest.trees} trees in all): the compiled walk "
        f"(service/predictors/forest.py, what the service runs) against XGBoost's three inplace_predict "
        f"calls; medians of alternated calls"
    )
    head = f"{'rows':>6} | {'walk':>9} | {'XGBoost ×3':>10} | {'walk / XGBoost':>14}"
    print(head)
    print("-" * len(head))
    configs = sample_configs(10_000, seed=77)
    for n in (1, 100, 1000, 10_000):
        x = _rows(model, configs[:n])
        margin = model.margins(x)
        timed = _time_alternated(
            {"walk": lambda x=x, m=margin: forest.predict(x, m), "xgb": _raw_three(model, x)},
            rounds if n < 10_000 else 20,
        )
        walk, xgb = statistics.median(timed["walk"]), statistics.median(timed["xgb"])
        print(f"{n:>6} | {walk:>7.3f}ms | {xgb:>8.3f}ms | {walk / xgb:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--train-configs", type=int, default=500)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="latfarm-bench-"))
    settings = Settings(database_url=f"sqlite:///{tmp / 'bench.db'}", state_dir=tmp, log_level="WARNING")
    migrate.upgrade(settings.database_url)
    device_id, predictor_id, secret = seed_database(settings, args.train_configs)
    factory = make_sessionmaker(make_engine(settings.database_url))
    with factory() as session:
        model = load_latency_model(session, predictor_id)

    port = free_port()
    server = start_server(1, port, server_env(settings))
    client = KeepAliveClient(port)

    def request(body: bytes) -> bytes:
        return predict_request(port, secret, body)

    try:
        rows = []
        for n in (1, 1000):
            configs = sample_configs(n, seed=7)
            body = json.dumps(
                {"device": device_id, "family": "sr_block", "frequency_khz": FREQUENCY, "configs": configs}
            ).encode()
            x = _rows(model, configs)
            timed = _time_alternated(
                {
                    "http": lambda r=request(body): client.send(r),
                    "raw3": _raw_three(model, x),
                    "in_process": lambda c=configs: model.predict(c, [FREQUENCY]),
                },
                args.rounds,
            )
            rows.append((n, timed["http"], timed["raw3"], timed["in_process"]))
        cold_http(client, server.pid, request, model, device_id, args.rounds)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {secret}"}
        ) as search_client:
            rng, seen = random.Random(5), set()
            bodies = iter(_fresh_bodies(device_id, 1, args.rounds * 2 + 6, seen, rng))
            timed = _time_alternated(
                {
                    "httpx": lambda: search_client.post(
                        "/v1/predict", content=next(bodies), headers=JSON
                    ).raise_for_status(),
                    "raw": lambda: client.send(request(next(bodies))),
                },
                args.rounds,
            )
    finally:
        client.close()
        stop_server(server)

    print(
        "\nOne new config through the httpx client a search job uses, beside the minimal client, "
        "alternated: "
        f"httpx {statistics.median(timed['httpx']):.2f} ms median ({_p99(timed['httpx']):.2f} ms p99), "
        f"minimal {statistics.median(timed['raw']):.2f} ms ({_p99(timed['raw']):.2f} ms p99)"
    )
    print(
        f"\n/v1/predict warm (the same configs every request; the feature cache holds them) vs the served "
        f"models on pre-built rows; {args.rounds} rounds in 10 alternated blocks, "
        f"nthread={PREDICT_THREADS} (both sides)"
    )
    head = (
        f"{'configs':>7} | {'HTTP med':>9} {'HTTP p99':>9} | {'raw 3 med':>9} | {'in-proc med':>11} | "
        f"{'HTTP/raw3':>9} | {'target':>10}"
    )
    print(head)
    print("-" * len(head))
    for n, http, raw3, in_process in rows:
        med, r3 = statistics.median(http), statistics.median(raw3)
        target = "≤ 1 ms" if n == 1 else "≤ 15 ms"
        print(
            f"{n:>7} | {med:>7.2f}ms {_p99(http):>7.2f}ms | {r3:>7.3f}ms | "
            f"{statistics.median(in_process):>9.3f}ms | {med / r3:>9.2f} | {target:>10}"
        )
    print("raw 3 = median + p10 + p90 models through XGBoost's inplace_predict (the service walks the same")
    print("trees, compiled);")
    print("in-proc = LatencyModel.predict (featurise from cache + models + extrapolation check), no HTTP")
    tree_walk(model)
    cold_featurisation()


if __name__ == "__main__":
    main()
