"""The latency-constrained evolutionary search for a super-resolution block, driven by latfarm's predictor.

The search looks for the `sr_block` (depth and per-layer widths) with the most capacity — parameters, or a
score function of your own — whose predicted latency on one phone, at one CPU frequency, fits a budget
(33 ms: real-time 30 fps) for ×4 (or ×2) upscaling to 720p. Each generation asks the predictor once, with the
whole population in one batched call, so a generation costs milliseconds. `profile_candidates` then profiles
the best candidates on the phone for real, to print predicted latency beside measured latency.

The DVFS-aware variant keeps one population per frequency of the phone (one block per power state, as in the
DVFS pruning literature) and still asks the predictor once per generation, with `frequencies_khz`.

The GPU variant (`unit="gpu", precision="fp16"`; on the command line `--unit gpu --precision fp16`) searches
against the phone's GPU predictor instead — real-time SR on mobile runs on the GPU, in half precision —
with the GPU's clock table as the frequencies, and profiles the winners on the GPU at that precision. Any
unit and precision the service has a predictor for work the same way (`npu` at `int8`).

It ships in the package (the demo runs it from any directory and in the Docker image);
`examples/sr_search.py` is the command-line script a search author copies, built on these functions.

`evolve(predict_fn, space, budget_ms)` takes any `predict_fn(configs) -> latencies (ms)`;
`evolve_per_frequency(predict_fn, frequencies, space, budget_ms)` takes `predict_fn(configs) -> (n, F)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profilers.blocks import config_hash, get_family

FAMILY = "sr_block"
#: A batch of configs → predicted latency in ms per config.
PredictFn = Callable[[list[dict[str, Any]]], np.ndarray]
#: A config → the capacity the search maximises.
ScoreFn = Callable[[dict[str, Any]], float]


@dataclass(frozen=True)
class SearchSpace:
    """The part of `sr_block` the search explores; the input size follows from the output size and scale."""

    scale: int = 4
    output_height: int = 720
    output_width: int = 1280
    kernel: int = 3
    activation: str = "relu"
    min_depth: int = 1
    max_depth: int = 8
    width_choices: tuple[int, ...] = (8, 12, 16, 24, 32, 48, 64)

    @property
    def input_height(self) -> int:
        """Low-resolution input height (720 / scale)."""
        return self.output_height // self.scale

    @property
    def input_width(self) -> int:
        """Low-resolution input width (1280 / scale)."""
        return self.output_width // self.scale

    def config(self, widths: Sequence[int]) -> dict[str, Any]:
        """The full `sr_block` config of one candidate (head width + body widths)."""
        return {
            "scale": self.scale,
            "height": self.input_height,
            "width": self.input_width,
            "kernel": self.kernel,
            "widths": [int(w) for w in widths],
            "activation": self.activation,
            "residual": False,
        }


@dataclass(frozen=True)
class Candidate:
    """One evaluated block: its config, predicted latency and score."""

    config: dict[str, Any]
    latency_ms: float
    score: float
    feasible: bool


@dataclass
class SearchResult:
    """The best feasible candidates (best first) and the best score of every generation."""

    best: list[Candidate]
    history: list[float] = field(default_factory=list)
    predict_calls: int = 0
    evaluated: int = 0


def params_score(config: dict[str, Any]) -> float:
    """The default capacity proxy: the block's parameter count."""
    return float(get_family(FAMILY).costs(config).params)


def random_widths(space: SearchSpace, rng: random.Random) -> list[int]:
    """A random candidate: head width plus 1..max_depth body widths from the space's choices."""
    depth = rng.randint(space.min_depth, space.max_depth)
    return [rng.choice(space.width_choices) for _ in range(depth + 1)]


def mutate(widths: Sequence[int], space: SearchSpace, rng: random.Random) -> list[int]:
    """One edit of a candidate: move a width to a neighbouring choice, add a layer or drop one."""
    out = list(widths)
    depth = len(out) - 1
    moves = ["width", "width"]  # widths change twice as often as depth
    if depth < space.max_depth:
        moves.append("grow")
    if depth > space.min_depth:
        moves.append("shrink")
    move = rng.choice(moves)
    if move == "width":
        i = rng.randrange(len(out))
        choices = sorted(space.width_choices)
        j = choices.index(out[i]) if out[i] in choices else 0
        j = min(max(j + rng.choice((-1, 1)), 0), len(choices) - 1)
        out[i] = choices[j]
    elif move == "grow":
        i = rng.randrange(1, len(out) + 1)
        out.insert(i, out[i - 1])
    else:
        del out[rng.randrange(1, len(out))]
    return out


def _rank_key(c: Candidate) -> tuple[bool, float]:
    # Feasible blocks rank by score; infeasible ones below all of them, the least over budget first.
    return (c.feasible, c.score if c.feasible else -c.latency_ms)


def _tournament(pool: Sequence[Candidate], k: int, rng: random.Random) -> Candidate:
    return max(rng.sample(list(pool), min(k, len(pool))), key=_rank_key)


def _next_population(
    ranked: Sequence[Candidate],
    space: SearchSpace,
    size: int,
    elite: int,
    tournament: int,
    rng: random.Random,
) -> list[list[int]]:
    population = [list(c.config["widths"]) for c in ranked[:elite]]
    seen = {tuple(w) for w in population}
    attempts = 0
    while len(population) < size:
        attempts += 1
        parent = _tournament(ranked, tournament, rng)
        child = mutate(parent.config["widths"], space, rng)
        if rng.random() < 0.3:
            child = mutate(child, space, rng)
        # Duplicates waste predictor rows; after many tries (a tiny space) fresh random blocks fill up.
        if tuple(child) in seen and attempts < 20 * size:
            continue
        if tuple(child) in seen:
            child = random_widths(space, rng)
        seen.add(tuple(child))
        population.append(child)
    return population


def _evaluate(
    population: Sequence[Sequence[int]],
    latencies: np.ndarray,
    space: SearchSpace,
    budget_ms: float,
    score_fn: ScoreFn,
    scores: dict[tuple[int, ...], float],
) -> list[Candidate]:
    out = []
    for widths, latency in zip(population, latencies, strict=True):
        key = tuple(widths)
        if key not in scores:
            scores[key] = float(score_fn(space.config(widths)))
        lat = float(latency)
        out.append(
            Candidate(space.config(widths), lat, scores[key], bool(np.isfinite(lat) and lat <= budget_ms))
        )
    return sorted(out, key=_rank_key, reverse=True)


def _merge_best(best: dict[tuple[int, ...], Candidate], ranked: Sequence[Candidate]) -> None:
    for c in ranked:
        if c.feasible:
            best[tuple(c.config["widths"])] = c


def evolve(
    predict_fn: PredictFn,
    space: SearchSpace | None = None,
    budget_ms: float = 33.0,
    score_fn: ScoreFn = params_score,
    population: int = 32,
    generations: int = 12,
    elite: int = 4,
    tournament: int = 3,
    top_k: int = 3,
    seed: int = 0,
) -> SearchResult:
    """Maximise `score_fn` under `predict_fn(configs) <= budget_ms`; one `predict_fn` call per generation.

    Seeded: the same predictor and arguments give the same result.
    """
    space = space or SearchSpace()
    rng = random.Random(seed)
    widths_pop = [random_widths(space, rng) for _ in range(population)]
    scores: dict[tuple[int, ...], float] = {}
    best: dict[tuple[int, ...], Candidate] = {}
    result = SearchResult(best=[])
    for _ in range(generations):
        latencies = np.asarray(predict_fn([space.config(w) for w in widths_pop]), dtype=float).reshape(-1)
        result.predict_calls += 1
        result.evaluated += len(widths_pop)
        ranked = _evaluate(widths_pop, latencies, space, budget_ms, score_fn, scores)
        _merge_best(best, ranked)
        result.history.append(max((c.score for c in best.values()), default=float("nan")))
        widths_pop = _next_population(ranked, space, population, elite, tournament, rng)
    result.best = sorted(best.values(), key=_rank_key, reverse=True)[:top_k]
    return result


def evolve_per_frequency(
    predict_fn: PredictFn,
    frequencies_khz: Sequence[int],
    space: SearchSpace | None = None,
    budget_ms: float = 33.0,
    score_fn: ScoreFn = params_score,
    population: int = 24,
    generations: int = 10,
    elite: int = 3,
    tournament: int = 3,
    seed: int = 0,
) -> dict[int, Candidate | None]:
    """The best block per frequency (None where nothing fits the budget).

    One population per frequency; every generation the union of all populations goes to the predictor in one
    call, and `predict_fn(configs)` returns an `(n_configs, n_frequencies)` array (the order of
    `frequencies_khz`), as `POST /v1/predict` with `frequencies_khz` does.
    """
    space = space or SearchSpace()
    rng = random.Random(seed)
    freqs = [int(f) for f in frequencies_khz]
    pops = {f: [random_widths(space, rng) for _ in range(population)] for f in freqs}
    scores: dict[tuple[int, ...], float] = {}
    best: dict[int, dict[tuple[int, ...], Candidate]] = {f: {} for f in freqs}
    for _ in range(generations):
        union = list(dict.fromkeys(tuple(w) for pop in pops.values() for w in pop))
        table = np.asarray(predict_fn([space.config(w) for w in union]), dtype=float)
        table = table.reshape(len(union), len(freqs))
        row = {w: i for i, w in enumerate(union)}
        for column, f in enumerate(freqs):
            latencies = np.array([table[row[tuple(w)], column] for w in pops[f]])
            ranked = _evaluate(pops[f], latencies, space, budget_ms, score_fn, scores)
            _merge_best(best[f], ranked)
            pops[f] = _next_population(ranked, space, population, elite, tournament, rng)
    return {f: max(best[f].values(), key=_rank_key) if best[f] else None for f in freqs}


# --- against a latfarm service ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What the search predicts for and profiles on: a compute unit (a CPU cluster, `gpu`, `npu`; None is
    the server's default CPU cluster) at a precision (None: fp32). `Target("gpu", "fp16")` is the GPU
    variant."""

    unit: str | None = None
    precision: str | None = None

    @property
    def label(self) -> str:
        """How tables name it: `gpu fp16`, or `cpu` for the default."""
        return " ".join(part for part in (self.unit or "cpu", self.precision) if part)


CPU_DEFAULT = Target()
GPU_FP16 = Target("gpu", "fp16")


def client_predict_fn(
    client: Any, device: int | str, frequency_khz: int, target: Target = CPU_DEFAULT
) -> PredictFn:
    """A `predict_fn` backed by `LatfarmClient.predict` at one frequency of `target`'s unit."""
    return lambda configs: (
        client.predict(
            device,
            FAMILY,
            configs,
            frequency_khz=frequency_khz,
            unit=target.unit,
            precision=target.precision,
        ).latency_ms
    )


def client_multi_predict_fn(
    client: Any, device: int | str, frequencies_khz: Sequence[int], target: Target = CPU_DEFAULT
) -> PredictFn:
    """A `predict_fn` backed by one `LatfarmClient.predict(..., frequencies_khz=...)` call: shape (n, F)."""
    freqs = [int(f) for f in frequencies_khz]
    return lambda configs: (
        client.predict(
            device, FAMILY, configs, frequencies_khz=freqs, unit=target.unit, precision=target.precision
        ).latency_ms
    )


@dataclass(frozen=True)
class Verified:
    """A searched block with its predicted and measured latency."""

    config: dict[str, Any]
    frequency_khz: int
    predicted_ms: float
    measured_ms: float | None
    target: Target = CPU_DEFAULT

    @property
    def error_pct(self) -> float | None:
        """Signed prediction error relative to the measurement."""
        if self.measured_ms is None or self.measured_ms == 0:
            return None
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms


def profile_candidates(
    client: Any,
    device: int | str,
    picks: Sequence[tuple[Candidate, int]],
    runtime: dict[str, Any] | None = None,
    progress: Callable[[Any], None] | None = None,
    poll_s: float = 1.0,
    target: Target = CPU_DEFAULT,
) -> list[Verified]:
    """Measure `(candidate, frequency)` pairs on the phone's `target` unit at its precision, one job per
    frequency; predicted beside measured.

    Measurements already in the database for the same config, unit, precision and frequency are reused by
    the service.
    """
    device_id = device if isinstance(device, int) else client.get_device(device).id
    by_freq: dict[int, list[dict[str, Any]]] = {}
    for cand, freq in picks:
        by_freq.setdefault(freq, []).append(cand.config)
    # One job per frequency set keeps the job a plain configs × frequencies product.
    for freq, configs in by_freq.items():
        job = client.submit_job(
            FAMILY,
            configs=configs,
            devices=[device_id],
            frequencies=[freq],
            runtime=runtime,
            unit=target.unit,
            precision=target.precision,
        )
        client.wait(job.id, progress=progress, poll_s=poll_s)
    measured: dict[tuple[str, int], float] = {}
    # Only the target's rows: the same config at the same clock number on another unit is another thing.
    on_target = {k: v for k, v in (("unit", target.unit), ("precision", target.precision)) if v is not None}
    for freq in by_freq:
        rows = client.measurements(
            device=device_id, family=FAMILY, frequency_khz=freq, valid=True, **on_target
        )
        if len(rows):
            for h, m in zip(rows["config_hash"], rows["median_ms"], strict=True):
                measured[(str(h), freq)] = float(m)
    return [
        Verified(c.config, freq, c.latency_ms, measured.get((config_hash(FAMILY, c.config), freq)), target)
        for c, freq in picks
    ]


def _describe(config: dict[str, Any]) -> str:
    return f"widths={config['widths']}"


def format_verified(rows: Sequence[Verified]) -> str:
    """A table of predicted vs measured latency (with the unit and precision when not the CPU default)."""
    lines = [f"{'block':<44} {'MHz':>6} {'predicted':>10} {'measured':>10} {'error':>8}"]
    targets = {v.target for v in rows}
    if targets != {CPU_DEFAULT}:
        lines.insert(0, "on " + ", ".join(sorted(t.label for t in targets)))
    for v in rows:
        measured = f"{v.measured_ms:8.2f}ms" if v.measured_ms is not None else "   (none)"
        error = f"{v.error_pct:+7.1f}%" if v.error_pct is not None else "      -"
        mhz = v.frequency_khz / 1000
        lines.append(f"{_describe(v.config):<44} {mhz:6.0f} {v.predicted_ms:8.2f}ms {measured:>10} {error}")
    return "\n".join(lines)
