"""Predictor accuracy vs number of measured configs, beside a FLOPs-only linear baseline, and training time.

Default data source: sr_block configs measured on a VIRTUAL phone (`profilers.virtual_phone`, profile
virtual-flagship) through the real profiler (`profilers.adb.Profiler` over `DeviceSession`): onnxruntime
runs on this host, reported at 3 pinned frequencies of the big cluster (lowest, middle, top). Small inputs
(×2 from 32×32 … 96×96, widths 4–32, 1–5 body layers) keep ~1,300 configs × 3 frequencies within minutes.
The measured rows are cached in `bench/data/sr_block_virtual_phone.csv` (its header says they come from a
virtual phone); a rerun reuses them and measures only what is missing (`--remeasure` starts afresh). Each
row of the curve trains on the first n configs of a 1,000-config pool × 3 frequencies and scores 300
unseen configs. Every test config is measured twice, at random moments of the campaign: the reference
latency a prediction is scored against is the geometric mean of the two (the "±10 %" columns), and the
score against the first measurement alone is printed beside it ("1×"). The two measurements' agreement
is printed as the data's repeatability: how often two noisy measurements of one config agree (a
predictor of the typical latency, compared with one noisy measurement, can do better than that).

`--synthetic`: the former source, a *synthetic* sr_block device — the latency is compute time at 4
FLOPs/cycle, plus memory traffic at 6 GB/s scaled with frequency (×0.5 + 0.5), plus 0.08 ms per layer, times
1 + 2 % Gaussian noise — with 4 frequencies, and the training time for 10,000 measurements.

Each record is the median of `--runs` timed runs taken in `--passes` passes through the configs of a
frequency (see `profilers.adb.profiler`; `bench_passes.py` measures what the passes buy).

    .venv/bin/python bench/bench_accuracy.py [--synthetic] [--remeasure] [--runs 10] [--passes 2] [--csv PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.adb import DeviceSession, Profiler, ProfileRequest, RuntimeSettings
from profilers.blocks import canonical_json, config_hash, get_family
from profilers.virtual_phone import VirtualPhone
from service.predictors.inference import LatencyModel
from service.predictors.training import TrainingRows, accuracy_metrics, fit_predictor

FREQUENCIES = [800_000, 1_400_000, 2_000_000, 2_600_000]
FAMILY = get_family("sr_block")


DATA_CSV = Path(__file__).resolve().parent / "data" / "sr_block_virtual_phone.csv"
PHONE_PROFILE = "virtual-flagship"
#: The virtual-phone sampling space: small inputs so a thousand configs measure in minutes.
SMALL_SPACE = {
    "scale": {"choices": [2]},
    "height": {"choices": [32, 48, 64, 96]},
    "width": {"choices": [32, 48, 64, 96]},
    "kernel": {"choices": [3]},
    "widths": {"length": {"min": 2, "max": 6}, "choices": [4, 8, 12, 16, 24, 32]},
    "activation": {"choices": ["relu", "prelu"]},
    "residual": {"choices": [False, True]},
}
POOL, TEST = 1000, 300
CURVE = (50, 100, 200, 333, 500, 1000)  # 333 configs × 3 frequencies: 1,000 measurements


def _configs(
    n: int,
    seed: int,
    exclude: set[str] = frozenset(),  # type: ignore[assignment]
    space: dict | None = None,
) -> list[dict]:
    rng = random.Random(seed)
    found: dict[str, dict] = {}
    while len(found) < n:
        c = FAMILY.sample(rng, space).model_dump(mode="json")
        h = config_hash("sr_block", c)
        if h not in exclude:
            found.setdefault(h, c)
    return list(found.values())


def _latency_ms(config: dict, khz: int, noise: float) -> float:
    costs = FAMILY.costs(config)
    compute = costs.flops / (4.0 * khz)  # ms: flops / (4 · kHz · 1e3) · 1e3
    memory = costs.activation_bytes / 6e9 * 1e3 / (0.5 + 0.5 * khz / 2_600_000)
    return (compute + memory + 0.08 * len(costs.layers)) * (1.0 + noise)


def _rows(configs: list[dict], rng: np.random.Generator) -> TrainingRows:
    ids, cs, hs, fs, ms = [], [], [], [], []
    for c in configs:
        h = config_hash("sr_block", c)
        for f in FREQUENCIES:
            ids.append(len(ids) + 1)
            cs.append(c)
            hs.append(h)
            fs.append(f)
            ms.append(_latency_ms(c, f, rng.normal(0.0, 0.02)))
    n = len(ids)
    return TrainingRows("sr_block", ids, cs, hs, fs, [1] * n, ["big"] * n, ms)


def _flops_baseline(train: TrainingRows, test: TrainingRows) -> np.ndarray:
    """Least squares ms = a · FLOPs/f + b on the training rows."""

    def x(rows: TrainingRows) -> np.ndarray:
        flops = {h: FAMILY.costs(c).flops for h, c in zip(rows.config_hashes, rows.configs, strict=True)}
        return np.array([flops[h] / f for h, f in zip(rows.config_hashes, rows.frequencies_khz, strict=True)])

    design = np.column_stack([x(train), np.ones(len(train))])
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(train.median_ms), rcond=None)
    return a * x(test) + b


def synthetic_main() -> None:
    """The learning curve and training time on the synthetic law."""
    rng = np.random.default_rng(0)
    test_configs = _configs(300, seed=12345)
    test = _rows(test_configs, rng)
    exclude = set(test.config_hashes)
    print(
        "\nLearning curve on SYNTHETIC sr_block data (compute + memory + per-layer law, 2 % noise; "
        "not a virtual phone), 4 frequencies, 300 unseen test configs"
    )
    head = (
        f"{'configs':>7} {'rows':>6} | {'XGB ±10%':>8} {'XGB RMSE':>9} {'XGB ρ':>6} | "
        f"{'FLOPs ±10%':>10} {'FLOPs RMSE':>10} {'FLOPs ρ':>7} | {'RMSE ratio':>10} | {'train s':>7}"
    )
    print(head)
    print("-" * len(head))
    for n in (50, 100, 200, 500, 1000):
        train = _rows(_configs(n, seed=n, exclude=exclude), rng)
        started = time.perf_counter()
        result = fit_predictor(train, {"holdout_fraction": 0.1})
        seconds = time.perf_counter() - started
        model = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
        # Config-major, as the `test` rows are.
        predicted = model.predict(test_configs, FREQUENCIES).latency_ms
        ours = accuracy_metrics(np.asarray(test.median_ms), predicted)
        base = accuracy_metrics(np.asarray(test.median_ms), _flops_baseline(train, test))
        print(
            f"{n:>7} {len(train):>6} | {ours['within_10']:>8.1%} {ours['rmse_ms']:>7.2f}ms "
            f"{ours['spearman']:>6.3f} | {base['within_10']:>10.1%} {base['rmse_ms']:>8.2f}ms "
            f"{base['spearman']:>7.3f} | {base['rmse_ms'] / ours['rmse_ms']:>9.1f}x | {seconds:>7.1f}"
        )
    print("RMSE ratio = FLOPs-only baseline RMSE / XGBoost RMSE (higher: XGBoost better)")

    big = _rows(_configs(2500, seed=99), rng)
    started = time.perf_counter()
    result = fit_predictor(big, {})
    seconds = time.perf_counter() - started
    print(
        f"\nTraining time for {len(big)} measurements ({len(set(big.config_hashes))} configs × "
        f"{len(FREQUENCIES)} frequencies, default params, median + p10 + p90 models fitted, scored and "
        f"refit): {seconds:.1f} s; "
        f"holdout within ±10 %: {result.metrics['within_10']:.1%}"
    )


# -- virtual phone ------------------------------------------------------------------------------------------
_CSV_FIELDS = [
    "set",
    "config_hash",
    "config",
    "cluster",
    "frequency_khz",
    "threads",
    "runs",
    "warmup",
    "passes",
]
_CSV_FIELDS += ["median_ms", "valid", "invalid_reason"]


def _csv_header(runs: int, warmup: int, passes: int) -> list[str]:
    return [
        f"# sr_block latencies measured on a VIRTUAL phone ({PHONE_PROFILE}: onnxruntime on the bench host,",
        "# scaled to the pinned frequency by profilers.virtual_phone), NOT a real device; written by",
        f"# bench/bench_accuracy.py (runs={runs} in {passes} passes, warmup={warmup}, threads=1,",
        f"# space={json.dumps(SMALL_SPACE)})",
    ]


def _read_csv(path: Path, runs: int, warmup: int, passes: int) -> list[dict]:
    """Cached rows taken with the same settings (rows of other settings are measured again)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    return [
        r
        for r in rows
        if (int(r["runs"]), int(r["warmup"]), int(r.get("passes") or 1)) == (runs, warmup, passes)
    ]


def _write_csv(path: Path, rows: list[dict], runs: int, warmup: int, passes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        f.write("\n".join(_csv_header(runs, warmup, passes)) + "\n")
        writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # all or nothing: an interrupted run leaves the previous cache intact


def _measure(
    wanted: list[tuple[str, dict]], runtime: RuntimeSettings, cached: list[dict]
) -> tuple[list[dict], list[int], float]:
    """Measure every (set, config) at the 3 frequencies that the cache lacks; returns all rows, the
    frequencies and the wall time spent measuring."""
    have = {(r["set"], r["config_hash"], int(r["frequency_khz"])) for r in cached}
    cached_freqs = sorted({int(r["frequency_khz"]) for r in cached})
    if len(cached_freqs) == 3 and all(
        (name, config_hash("sr_block", c), f) in have for name, c in wanted for f in cached_freqs
    ):
        return cached, cached_freqs, 0.0
    rows = list(cached)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        VirtualPhone(PHONE_PROFILE, state_dir=Path(tmp) / "phone") as phone,
    ):
        # Slow heating, no cooldown waits: thermal throttling would only add invalid (re-pinned) records.
        phone.set_heat_rate(0.05)
        with DeviceSession.connect(
            f"127.0.0.1:{phone.port}", key_path=Path(tmp) / "adbkey", command_timeout_s=600
        ) as session:
            profiler = Profiler(session, runtime, cooldown_celsius=None)
            big = profiler.facts.clusters[-1]
            levels = big.frequencies_khz
            freqs = sorted({levels[0], levels[len(levels) // 2], levels[-1]})
            # Frequency-major: the profiler measures its requests grouped by frequency, in this order.
            # Within a frequency the sets are interleaved at random: a host whose speed drifts over
            # minutes would otherwise shift the test set against the training set (a confound of set
            # and time), not just add noise to both.
            order = random.Random(7)
            todo = []
            for f in freqs:
                pending = [
                    (name, c, f) for name, c in wanted if (name, config_hash("sr_block", c), f) not in have
                ]
                order.shuffle(pending)
                todo += pending
            print(f"measuring {len(todo)} (config, frequency) pairs on the virtual phone …", flush=True)
            requests = [
                ProfileRequest(family="sr_block", config=c, cluster="big", frequency_khz=f)
                for _, c, f in todo
            ]
            for (name, c, f), record in zip(todo, profiler.measure(requests), strict=True):
                if (record.config_hash, record.frequency_khz) != (config_hash("sr_block", c), f):
                    raise RuntimeError("the profiler answered out of request order")
                rows.append(
                    {
                        "set": name,
                        "config_hash": record.config_hash,
                        "config": canonical_json("sr_block", record.config),
                        "cluster": record.cluster,
                        "frequency_khz": record.frequency_khz,
                        "threads": record.threads,
                        "runs": record.runs,
                        "warmup": record.warmup,
                        "passes": record.passes,
                        "median_ms": repr(record.median_ms),
                        "valid": int(record.valid),
                        "invalid_reason": record.invalid_reason or "",
                    }
                )
    return rows, freqs, time.perf_counter() - started


def _training_rows(rows: Sequence[dict]) -> TrainingRows:
    n = len(rows)
    return TrainingRows(
        "sr_block",
        list(range(1, n + 1)),
        [json.loads(r["config"]) for r in rows],
        [r["config_hash"] for r in rows],
        [int(r["frequency_khz"]) for r in rows],
        [int(r["threads"]) for r in rows],
        [r["cluster"] for r in rows],
        [float(r["median_ms"]) for r in rows],
    )


def virtual_phone_main(runtime: RuntimeSettings, remeasure: bool, data_csv: Path = DATA_CSV) -> None:
    """Measure (or reuse) the virtual-phone rows and print the learning curve."""
    test_configs = _configs(TEST, seed=12345, space=SMALL_SPACE)
    exclude = {config_hash("sr_block", c) for c in test_configs}
    pool = _configs(POOL, seed=1, exclude=exclude, space=SMALL_SPACE)
    wanted = [("train", c) for c in pool] + [("test", c) for c in test_configs]
    wanted += [("repeat", c) for c in test_configs]
    runs, warmup, passes = runtime.runs, runtime.warmup, runtime.passes
    cached = [] if remeasure else _read_csv(data_csv, runs, warmup, passes)
    rows, freqs, seconds = _measure(wanted, runtime, cached)
    if seconds:
        _write_csv(data_csv, rows, runs, warmup, passes)
        print(f"measured in {seconds / 60:.1f} min; cached in {data_csv}")
    else:
        print(f"all rows reused from {data_csv}")
    valid = [r for r in rows if r["valid"] in ("1", 1) and int(r["frequency_khz"]) in freqs]
    invalid = sum(1 for r in rows if r["valid"] not in ("1", 1))
    by_key = {(r["set"], r["config_hash"], int(r["frequency_khz"])): r for r in valid}

    # Scored only where both measurements of a test config are valid at every frequency, so both models
    # see the same rows.
    test_hashes = [
        h
        for h in (config_hash("sr_block", c) for c in test_configs)
        if all((name, h, f) in by_key for name in ("test", "repeat") for f in freqs)
    ]
    test = _training_rows([by_key["test", h, f] for h in test_hashes for f in freqs])
    first = np.asarray(test.median_ms)
    second = np.array([float(by_key["repeat", h, f]["median_ms"]) for h in test_hashes for f in freqs])
    reference = np.sqrt(first * second)
    pool_hashes = [config_hash("sr_block", c) for c in pool]
    noise = accuracy_metrics(first, second)

    print(
        f"\nLearning curve on sr_block data measured from a VIRTUAL phone ({PHONE_PROFILE}, onnxruntime on "
        f"this host; not a real device), big cluster at {', '.join(f'{f / 1e6:.2f}' for f in freqs)} GHz, "
        f"runs {runs} in {passes} passes, warmup {warmup}; {len(test_hashes)} unseen test configs; "
        f"{invalid} invalid records "
        "dropped"
    )
    head = (
        f"{'configs':>7} {'rows':>6} | {'XGB ±10%':>8} {'(1×)':>6} {'XGB RMSE':>9} {'XGB ρ':>6} | "
        f"{'FLOPs ±10%':>10} {'FLOPs RMSE':>10} {'FLOPs ρ':>7} | {'RMSE ratio':>10} | {'train s':>7}"
    )
    print(head)
    print("-" * len(head))
    for n in CURVE:
        train = _training_rows(
            [by_key[k] for h in pool_hashes[:n] for f in freqs if (k := ("train", h, f)) in by_key]
        )
        started = time.perf_counter()
        result = fit_predictor(train, {"holdout_fraction": 0.1})
        train_s = time.perf_counter() - started
        model = LatencyModel(result.feature_schema, result.model, result.model_p10, result.model_p90)
        configs = [json.loads(by_key["test", h, freqs[0]]["config"]) for h in test_hashes]
        predicted = model.predict(configs, freqs, cluster="big", threads=1).latency_ms  # config-major
        ours = accuracy_metrics(reference, predicted)
        single = accuracy_metrics(first, predicted)
        base = accuracy_metrics(reference, _flops_baseline(train, test))
        print(
            f"{n:>7} {len(train):>6} | {ours['within_10']:>8.1%} {single['within_10']:>6.1%} "
            f"{ours['rmse_ms']:>7.3f}ms "
            f"{ours['spearman']:>6.3f} | {base['within_10']:>10.1%} {base['rmse_ms']:>8.3f}ms "
            f"{base['spearman']:>7.3f} | {base['rmse_ms'] / ours['rmse_ms']:>9.1f}x | {train_s:>7.1f}"
        )
    print(
        "±10 %, RMSE, ρ: against the reference (geometric mean of a test config's two measurements); "
        "(1×): against its first measurement alone"
    )
    print("RMSE ratio = FLOPs-only baseline RMSE / XGBoost RMSE (higher: XGBoost better)")
    print(
        f"repeatability: the two measurements of {len(first)} test (config, frequency) pairs agree within "
        "±10 % in "
        f"{noise['within_10']:.1%} of cases (RMSE {noise['rmse_ms']:.3f} ms, ρ {noise['spearman']:.3f}); "
        f"test latencies {min(test.median_ms):.2f}–{max(test.median_ms):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--synthetic", action="store_true", help="the synthetic law instead of a virtual phone"
    )
    parser.add_argument("--remeasure", action="store_true", help="ignore the cached CSV and measure afresh")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--passes", type=int, default=2, help="passes the runs of a record are split into")
    parser.add_argument("--csv", type=Path, default=DATA_CSV, help="measured-rows cache")
    args = parser.parse_args()
    if args.synthetic:
        synthetic_main()
    else:
        runtime = RuntimeSettings(runs=args.runs, warmup=args.warmup, passes=args.passes)
        virtual_phone_main(runtime, args.remeasure, args.csv)


if __name__ == "__main__":
    main()
