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
    FAMILY,
    Candidate,
    PredictFn,
    ScoreFn,
    SearchResult,
    SearchSpace,
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
    "FAMILY",
    "Candidate",
    "PredictFn",
    "ScoreFn",
    "SearchResult",
    "SearchSpace",
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
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search against a latfarm service, profile the winners and print predicted vs measured."""
    from service.client import LatfarmClient, LatfarmClientError
    from service.client_cli import JobProgressBar

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("LATFARM_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("LATFARM_TOKEN"))
    parser.add_argument("--device", required=True, help="device id or serial")
    parser.add_argument("--frequency", default="max", help="kHz, or min|max of the device's fastest cluster")
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
        out_w, out_h = (int(v) for v in args.output_size.lower().split("x"))
    except ValueError:
        parser.error(f"--output-size takes WIDTHxHEIGHT, got {args.output_size!r}")
    space = SearchSpace(scale=args.scale, output_height=out_h, output_width=out_w, max_depth=args.max_depth)
    try:
        with LatfarmClient(args.url, args.token) as client:
            device = client.get_device(
                int(args.device) if args.device.isdigit() else _by_serial(client, args.device)
            )
            freqs = device.frequencies_khz()
            if not freqs:
                print(f"device {device.id} has no probed frequencies: probe it first", file=sys.stderr)
                return 2
            runtime = {"runs": args.runs, "warmup": 1}
            bar = JobProgressBar()
            if args.dvfs:
                picks_by_f = evolve_per_frequency(
                    client_multi_predict_fn(client, device.id, freqs),
                    freqs,
                    space,
                    args.budget_ms,
                    seed=args.seed,
                )
                picks = [(c, f) for f, c in picks_by_f.items() if c is not None]
            else:
                freq = _pick_frequency(args.frequency, freqs)
                result = evolve(
                    client_predict_fn(client, device.id, freq),
                    space,
                    args.budget_ms,
                    population=args.population,
                    generations=args.generations,
                    top_k=args.top,
                    seed=args.seed,
                )
                print(
                    f"{result.predict_calls} generations, {result.evaluated} blocks predicted; "
                    f"best params per generation: {[int(h) for h in result.history if h == h]}"
                )
                picks = [(c, freq) for c in result.best]
            if not picks:
                print(f"no block fits {args.budget_ms} ms on device {device.id}", file=sys.stderr)
                return 1
            verified = profile_candidates(client, device.id, picks, runtime, progress=bar)
            bar.close()
            print(format_verified(verified))
    except LatfarmClientError as exc:
        print(f"sr_search: {exc}", file=sys.stderr)
        return 1
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
