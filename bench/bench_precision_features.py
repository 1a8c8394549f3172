"""One predictor over precisions (features version 4) vs one predictor per precision, on a synthetic GPU.

The claim: taking the precision as a feature (one-hot + bits per value) lets one predictor learn fp32 and
fp16 from all the measurements of a unit, and it is no worse — better where one precision is measured less
— than a predictor per precision trained on that precision's rows alone.

Synthetic GPU (sr_block): latency = 0.05 ms per layer (dispatch) + FLOPs / (R · f) + activation bytes · s /
(6 GB/s), R = 16 FLOPs/cycle at fp32 and 32 at fp16, s = 1 at fp32 and 0.5 at fp16 (half the bytes), times
1 + 2 % Gaussian noise, at the GPU clocks 315 / 540 / 840 MHz. The fp16 speed-up so depends on the config
(dispatch-, compute- or memory-bound), which is what the predictor has to learn. Both kinds train with the
service's defaults (`fit_predictor`), score 200 unseen configs at each precision (±10 %, MAPE), and see
the same rows: "balanced" measures every training config at both precisions, "scarce fp16" measures a
quarter of them (at least 16) at fp16, "few fp16" only 6 — too few for a predictor of their own (40 rows).

    .venv/bin/python bench/bench_precision_features.py [--sizes 40 120] [--test 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profilers.blocks import config_hash, get_family
from service.predictors.inference import LatencyModel
from service.predictors.training import TrainingError, TrainingRows, accuracy_metrics, fit_predictor
from tests.service.predictors.synthetic import sample_configs

FAMILY = get_family("sr_block")
CLOCKS = [315_000, 540_000, 840_000]
RATE = {"fp32": 16.0, "fp16": 32.0}
BYTES = {"fp32": 1.0, "fp16": 0.5}


def gpu_ms(config: dict, khz: int, precision: str) -> float:
    """The synthetic GPU's noiseless latency of `config` at `khz` and `precision`."""
    costs = FAMILY.costs(config)
    compute = costs.flops / (RATE[precision] * khz)
    memory = costs.activation_bytes * BYTES[precision] / 6e9 * 1e3
    return 0.05 * len(costs.layers) + compute + memory


def rows_of(plan: list[tuple[dict, str]], seed: int) -> TrainingRows:
    """Measurement rows of (config, precision) pairs at every clock, with 2 % noise."""
    rng = np.random.default_rng(seed)
    ids, configs, hashes, freqs, precisions, ms = [], [], [], [], [], []
    for config, precision in plan:
        for khz in CLOCKS:
            ids.append(len(ids) + 1)
            configs.append(config)
            hashes.append(config_hash("sr_block", config))
            freqs.append(khz)
            precisions.append(precision)
            ms.append(gpu_ms(config, khz, precision) * (1.0 + rng.normal(0.0, 0.02)))
    n = len(ids)
    return TrainingRows("sr_block", ids, configs, hashes, freqs, [1] * n, ["gpu"] * n, ms, precisions)


def subset(rows: TrainingRows, precision: str) -> TrainingRows:
    """The rows at one precision."""
    keep = [i for i, p in enumerate(rows.precisions) if p == precision]
    return TrainingRows(
        rows.family,
        [rows.ids[i] for i in keep],
        [rows.configs[i] for i in keep],
        [rows.config_hashes[i] for i in keep],
        [rows.frequencies_khz[i] for i in keep],
        [rows.threads[i] for i in keep],
        [rows.clusters[i] for i in keep],
        [rows.median_ms[i] for i in keep],
        [rows.precisions[i] for i in keep],
    )


def score(rows: TrainingRows, test: list[dict], precision: str) -> dict[str, float]:
    """A predictor trained on `rows`, scored on the noiseless latency of `test` at `precision`."""
    trained = fit_predictor(rows)
    model = LatencyModel(trained.feature_schema, trained.model, trained.model_p10, trained.model_p90)
    predicted = model.predict(test, CLOCKS, cluster="gpu", precision=precision).latency_ms
    truth = np.array([gpu_ms(c, k, precision) for c in test for k in CLOCKS])
    metrics = accuracy_metrics(truth, predicted)
    return {"within_10": float(metrics["within_10"]), "mape": float(metrics["mape"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 120], help="training configs")
    parser.add_argument("--test", type=int, default=200, help="unseen configs scored")
    args = parser.parse_args()
    pool = sample_configs(max(args.sizes) + args.test, seed=5)
    test = pool[max(args.sizes) :]
    print(
        f"{'scenario':<12} {'configs':>7} {'precision':>9} | {'mixed ±10%':>10} {'MAPE':>6} | "
        f"{'per-prec ±10%':>13} {'MAPE':>6}"
    )
    for size in args.sizes:
        train = pool[:size]
        for scenario, fp16_count in (
            ("balanced", size),
            ("scarce fp16", max(16, size // 4)),
            ("few fp16", 6),
        ):
            fp16 = train[:fp16_count]
            rows = rows_of([(c, "fp32") for c in train] + [(c, "fp16") for c in fp16], seed=size)
            for precision in ("fp32", "fp16"):
                mixed = score(rows, test, precision)
                try:
                    alone = score(subset(rows, precision), test, precision)
                    per_precision = f"{alone['within_10']:>13.1%} {alone['mape']:>5.1f}%"
                except TrainingError:
                    per_precision = f"{'too few rows':>20}"
                print(
                    f"{scenario:<12} {size:>7} {precision:>9} | {mixed['within_10']:>10.1%} "
                    f"{mixed['mape']:>5.1f}% | {per_precision}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
