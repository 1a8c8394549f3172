"""The SR search example against a seeded stand-in predictor (latency from the block's real FLOP count)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from examples.sr_search import (
    SearchSpace,
    evolve,
    evolve_per_frequency,
    mutate,
    params_score,
    random_widths,
)
from profilers.blocks import get_family

FAMILY = get_family("sr_block")
SPACE = SearchSpace(scale=4, output_height=144, output_width=256, max_depth=6, width_choices=(4, 8, 16, 32))
#: The largest block of SPACE takes ~12.7 ms at 2 GHz under SeededPredictor, the smallest ~0.4 ms: this binds.
BUDGET = 6.0


class SeededPredictor:
    """Latency ∝ FLOPs / frequency with seeded per-config noise; records every batch it is asked."""

    def __init__(self, seed: int = 7, ms_per_gflop: float = 40.0) -> None:
        self.seed, self.ms_per_gflop = seed, ms_per_gflop
        self.batches: list[int] = []

    def latency(self, config: dict[str, Any], frequency_mhz: float = 2000.0) -> float:
        noise = random.Random(f"{self.seed}:{config['widths']}").uniform(0.95, 1.05)
        gflops = FAMILY.costs(config).flops / 1e9
        return gflops * self.ms_per_gflop * noise * 2000.0 / frequency_mhz

    def __call__(self, configs: list[dict[str, Any]]) -> np.ndarray:
        self.batches.append(len(configs))
        return np.array([self.latency(c) for c in configs])


def test_space_gives_720p_style_inputs_and_valid_configs() -> None:
    full = SearchSpace()
    assert (full.input_height, full.input_width) == (180, 320)
    assert SearchSpace(scale=2).config([8, 8])["height"] == 360
    rng = random.Random(0)
    for _ in range(50):
        widths = random_widths(SPACE, rng)
        assert SPACE.min_depth <= len(widths) - 1 <= SPACE.max_depth
        child = mutate(widths, SPACE, rng)
        assert SPACE.min_depth <= len(child) - 1 <= SPACE.max_depth
        assert set(child) <= set(SPACE.width_choices)
        FAMILY.parse(SPACE.config(child))  # every candidate is a valid sr_block


def test_one_batched_predict_call_per_generation_and_winners_fit_the_budget() -> None:
    predictor = SeededPredictor()
    budget = BUDGET
    result = evolve(predictor, SPACE, budget, population=20, generations=8, top_k=3, seed=1)
    assert predictor.batches == [20] * 8
    assert result.predict_calls == 8 and result.evaluated == 160
    assert len(result.best) == 3
    for cand in result.best:
        assert cand.feasible
        assert cand.latency_ms == pytest.approx(predictor.latency(cand.config))
        assert cand.latency_ms <= budget
        assert cand.score == params_score(cand.config)
    assert [c.score for c in result.best] == sorted((c.score for c in result.best), reverse=True)
    assert predictor.latency(SPACE.config([32] * 7)) > budget  # the budget does bind
    # Elitism: the best feasible score never drops from one generation to the next.
    assert result.history == sorted(result.history)


def test_search_is_seeded_and_beats_random_sampling_with_the_same_evaluations() -> None:
    budget = BUDGET
    a = evolve(SeededPredictor(), SPACE, budget, population=20, generations=10, seed=3)
    b = evolve(SeededPredictor(), SPACE, budget, population=20, generations=10, seed=3)
    assert [c.config for c in a.best] == [c.config for c in b.best]

    predictor = SeededPredictor()
    rng = random.Random(3)
    sampled = [SPACE.config(random_widths(SPACE, rng)) for _ in range(a.evaluated)]
    feasible = [params_score(c) for c, lat in zip(sampled, predictor(sampled), strict=True) if lat <= budget]
    assert a.best[0].score >= max(feasible)


def test_a_user_score_function_is_maximised() -> None:
    def depth(config: dict[str, Any]) -> float:
        return float(len(config["widths"]) - 1)

    result = evolve(SeededPredictor(), SPACE, BUDGET, score_fn=depth, population=16, generations=8, seed=0)
    assert result.best[0].score == SPACE.max_depth
    assert result.best[0].latency_ms <= BUDGET


def test_nothing_fits_an_impossible_budget() -> None:
    result = evolve(SeededPredictor(), SPACE, 1e-6, population=8, generations=3, seed=0)
    assert result.best == []


def test_dvfs_variant_best_block_per_frequency_in_one_call_per_generation() -> None:
    predictor = SeededPredictor()
    freqs = [600_000, 1_200_000, 2_400_000]
    calls: list[int] = []

    def multi(configs: list[dict[str, Any]]) -> np.ndarray:
        calls.append(len(configs))
        return np.array([[predictor.latency(c, f / 1000) for f in freqs] for c in configs])

    best = evolve_per_frequency(multi, freqs, SPACE, BUDGET, population=12, generations=6, seed=2)
    assert len(calls) == 6
    assert all(12 <= n <= 36 for n in calls)  # the union of the three populations, deduplicated
    assert list(best) == freqs
    for f, cand in best.items():
        assert cand is not None
        assert cand.latency_ms == pytest.approx(predictor.latency(cand.config, f / 1000))
        assert cand.latency_ms <= BUDGET
    # A slower power state affords less: the lowest frequency's block has the fewest parameters.
    scores = [best[f].score for f in freqs]
    assert scores[0] < scores[-1]


def test_main_searches_with_the_service_then_profiles_the_winner(
    settings, make_headers, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The script end to end: a served app with its worker, a virtual phone, an imported-data predictor."""
    from examples.sr_search import main
    from profilers.virtual_phone.phone import VirtualPhone
    from service.app import create_app
    from service.client import LatfarmClient
    from service.demo import ServerThread
    from service.jobs.worker import attach_background_worker

    token = make_headers("admin")["Authorization"].removeprefix("Bearer ")
    settings = settings.model_copy(update={"worker_poll_seconds": 0.1, "min_training_rows": 20})
    app = create_app(settings)
    attach_background_worker(app, settings)
    small = SearchSpace(scale=4, output_height=32, output_width=32, max_depth=3, width_choices=(4, 8))
    with (
        VirtualPhone(profile="virtual-midrange", state_dir=tmp_path / "phone") as phone,
        ServerThread(app) as server,
        LatfarmClient(server.url, token) as lf,
    ):
        device = lf.probe_device(lf.register_device(phone.serial).id)
        top = device.frequencies_khz()[-1]
        rng = random.Random(0)
        rows = []
        for _ in range(30):
            config = small.config(random_widths(small, rng))
            ms = 0.2 + FAMILY.costs(config).flops / 1e7
            rows.append(
                {"device_id": device.id, "family": "sr_block", "config": config, "cluster": "big",
                 "frequency_khz": top, "runtime_name": "onnxruntime", "runs": 3, "median_ms": ms,
                 "mean_ms": ms, "min_ms": ms, "max_ms": ms, "p90_ms": ms}
            )  # fmt: skip
        lf.import_measurements(rows)
        predictor = lf.wait_predictor(
            lf.train_predictor("sr_block", device.id).id, poll_s=0.05, timeout_s=120
        )
        lf.activate_predictor(predictor.id)
        status = main(
            ["--url", server.url, "--token", token, "--device", str(device.id), "--frequency", "max",
             "--budget-ms", "1000", "--generations", "2", "--population", "6", "--top", "1", "--runs", "2",
             "--output-size", "32x32", "--max-depth", "3"]
        )  # fmt: skip
        out = capsys.readouterr().out
        assert status == 0, out
        measured = lf.measurements(device=device.id, source="measured")
    assert "2 generations, 12 blocks predicted" in out
    assert len(measured) == 1  # the winner, profiled for real on the phone by the worker
    winner = measured.iloc[0]
    row = next(line for line in out.splitlines() if line.startswith("widths="))
    assert str(winner["config"]["widths"]) in row
    assert f"{winner['median_ms']:.2f}ms" in row
