"""Latency-constrained evolutionary search for a super-resolution block, driven by latfarm's predictor.

The search looks for the `sr_block` (depth and per-layer widths) with the most capacity — parameters, or a
score function of your own — whose predicted latency on one phone, at one CPU frequency, fits a budget
(33 ms: real-time 30 fps) for ×4 (or ×2) upscaling to 720p. Each generation asks the predictor once, with the
whole population in one batched call, so a generation costs milliseconds. At the end the best candidates are
profiled on the phone for real and predicted latency is printed beside measured latency.

The DVFS-aware variant keeps one population per frequency of the phone (one block per power state, as in the
DVFS pruning literature) and still asks the predictor once per generation, with `frequencies_khz`.

    python examples/sr_search.py --url http://127.0.0.1:8000 --token $LATFARM_TOKEN --device 1
    python examples/sr_search.py --device 1 --dvfs          # best block per frequency
    python examples/sr_search.py --device 1 --unit gpu --precision fp16   # against the GPU predictor

The GPU variant searches against the phone's GPU predictor at fp16 (one for that device, family, unit and
precision must be active), takes `--frequency` from the GPU's clock table and profiles the winners on the
GPU at fp16.

The search itself lives in `service.sr_search` (it ships with latfarm; the demo runs it too):
`evolve(predict_fn, space, budget_ms)` takes any `predict_fn(configs) -> latencies (ms)`,
`evolve_per_frequency(predict_fn, frequencies, space, budget_ms)` takes `predict_fn(configs) -> (n, F)`.
This script is its command line; copy it and change what you search for.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from service.sr_search import (
    CPU_DEFAULT,
    FAMILY,
    GPU_FP16,
    Candidate,
    PredictFn,
    ScoreFn,
    SearchResult,
    SearchSpace,
    Target,
    Verified,
    client_multi_predict_fn,
    client_predict_fn,
    evolve,
    evolve_per_frequency,
    format_verified,
    mutate,
    params_score,
    profile_candidates,
    random_widths,
)

__all__ = [
    "CPU_DEFAULT",
    "FAMILY",
    "GPU_FP16",
    "Candidate",
    "PredictFn",
    "ScoreFn",
    "SearchResult",
    "SearchSpace",
    "Target",
    "Verified",
    "client_multi_predict_fn",
    "client_predict_fn",
    "evolve",
    "evolve_per_frequency",
    "format_verified",
    "main",
    "mutate",
    "params_score",
    "profile_candidates",
    "random_widths",
    "search",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The script's arguments (`--unit gpu --precision fp16` for the GPU variant)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("LATFARM_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("LATFARM_TOKEN"))
    parser.add_argument("--device", required=True, help="device id or serial")
    parser.add_argument(
        "--frequency",
        default="max",
        help="kHz, or min|max of the unit's clocks (default unit: fastest cluster)",
    )
    parser.add_argument("--unit", default=None, help="a CPU cluster, gpu or npu (default: fastest cluster)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None, help="default fp32")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--output-size", default="1280x720", metavar="WxH", help="output resolution (720p)")
    parser.add_argument("--max-depth", type=int, default=8, help="most body layers")
    parser.add_argument("--budget-ms", type=float, default=33.0)
    parser.add_argument("--generations", type=int, default=12)
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--top", type=int, default=3, help="candidates to profile at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dvfs", action="store_true", help="best block per frequency of the device")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        args.out_w, args.out_h = (int(v) for v in args.output_size.lower().split("x"))
    except ValueError:
        parser.error(f"--output-size takes WIDTHxHEIGHT, got {args.output_size!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search against a latfarm service, profile the winners and print predicted vs measured."""
    from service.client import LatfarmClient, LatfarmClientError

    args = parse_args(argv)
    try:
        with LatfarmClient(args.url, args.token) as client:
            return search(client, args)
    except LatfarmClientError as exc:
        print(f"sr_search: {exc}", file=sys.stderr)
        return 1


def search(client: Any, args: argparse.Namespace) -> int:
    """The search with `client` (a `LatfarmClient`): predict on the target unit and precision, profile the
    winners there, print predicted beside measured. The exit status: 0, 1 when nothing fits, 2 unprobed."""
    from service.client_cli import JobProgressBar

    space = SearchSpace(
        scale=args.scale, output_height=args.out_h, output_width=args.out_w, max_depth=args.max_depth
    )
    target = Target(args.unit, args.precision)
    device = client.get_device(int(args.device) if args.device.isdigit() else _by_serial(client, args.device))
    freqs = device.frequencies_khz(args.unit)
    if not freqs:
        print(f"device {device.id} has no probed {target.label} clocks: probe it first", file=sys.stderr)
        return 2
    runtime = {"runs": args.runs, "warmup": 1}
    bar = JobProgressBar()
    if args.dvfs:
        picks_by_f = evolve_per_frequency(
            client_multi_predict_fn(client, device.id, freqs, target),
            freqs,
            space,
            args.budget_ms,
            seed=args.seed,
        )
        picks = [(c, f) for f, c in picks_by_f.items() if c is not None]
    else:
        freq = _pick_frequency(args.frequency, freqs)
        result = evolve(
            client_predict_fn(client, device.id, freq, target),
            space,
            args.budget_ms,
            population=args.population,
            generations=args.generations,
            top_k=args.top,
            seed=args.seed,
        )
        print(
            f"{result.predict_calls} generations, {result.evaluated} blocks predicted on {target.label}; "
            f"best params per generation: {[int(h) for h in result.history if h == h]}"
        )
        picks = [(c, freq) for c in result.best]
    if not picks:
        print(f"no block fits {args.budget_ms} ms on device {device.id} ({target.label})", file=sys.stderr)
        return 1
    verified = profile_candidates(client, device.id, picks, runtime, progress=bar, target=target)
    bar.close()
    print(format_verified(verified))
    return 0


def _by_serial(client: Any, serial: str) -> int:
    for device in client.list_devices():
        if device.serial == serial:
            return int(device.id)
    raise SystemExit(f"no device with serial {serial!r}")


def _pick_frequency(choice: str, freqs: Sequence[int]) -> int:
    if choice == "max":
        return max(freqs)
    if choice == "min":
        return min(freqs)
    value = int(choice)
    if value not in freqs:
        raise SystemExit(f"{value} kHz is not one of the device's frequencies: {list(freqs)}")
    return value


if __name__ == "__main__":
    sys.exit(main())
