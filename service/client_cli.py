"""`latfarm predict`, `latfarm jobs …` and `latfarm campaigns …`: the search-job client for shell users.

Both talk to a running service: `--url` (or `LATFARM_URL`, default http://127.0.0.1:8000) and `--token`
(or `LATFARM_TOKEN`). Configs are JSON: `--config '{…}'` (repeatable) or `--configs-file F` holding a JSON
list or JSON lines (`-` reads stdin). Both take the compute unit and precision (`--unit gpu --precision
fp16`); a job also takes the benchmark program, its accelerator option and `--layers` (per-layer times).
The choices offered are `profilers.adb.units`' own; whether a phone has the unit is the server's to say.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from profilers.adb.units import ACCELERATOR_OPTIONS, BENCHMARK_PROGRAMS, PRECISIONS
from service.client import (
    Campaign,
    Job,
    LatfarmClient,
    LatfarmClientError,
    LatfarmTimeoutError,
    Prediction,
)


class CommandLineError(Exception):
    """An argument that cannot be used; the message says which and why."""


class JobProgressBar:
    """A `wait(progress=…)` callback drawing a tqdm bar of a job's finished tasks (one bar per job)."""

    def __init__(self, file: TextIO | None = None, disable: bool | None = None) -> None:
        self._bar: Any = None
        self._job_id: int | None = None
        self._file = file or sys.stderr
        # tqdm's own rule: no bar when the stream is not a terminal, unless asked for.
        self._disable = disable

    def __call__(self, job: Job) -> None:
        if self._bar is None or self._job_id != job.id:
            self.close()
            self._bar = tqdm(
                total=job.tasks,
                desc=f"job {job.id}",
                unit="task",
                file=self._file,
                disable=self._disable,
                dynamic_ncols=True,
            )
            self._job_id = job.id
        counts = job.counts
        self._bar.total = job.tasks
        self._bar.n = job.completed_tasks
        postfix = f"{job.status}"
        if counts.get("reused"):
            postfix += f", {counts['reused']} reused"
        if counts.get("failed"):
            postfix += f", {counts['failed']} failed"
        if job.eta_seconds is not None and not job.finished:
            postfix += f", eta {job.eta_seconds:.0f}s"
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Close the current bar (leaves its last state on screen)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LATFARM_URL", "http://127.0.0.1:8000"),
        help="service base URL (env LATFARM_URL)",
    )
    parser.add_argument(
        "--token", default=os.environ.get("LATFARM_TOKEN"), help="API token (env LATFARM_TOKEN)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")


def _add_unit(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        "--unit",
        "--cluster",
        dest="unit",
        default=None,
        metavar="UNIT",
        help=f"compute unit: a CPU cluster name, gpu or npu (default: {default_help})",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="default fp32")


def _add_configs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", default=[], metavar="JSON", help="one config (repeatable)"
    )
    parser.add_argument(
        "--configs-file", metavar="FILE", help="a JSON list or JSON lines of configs; - is stdin"
    )


def read_configs(inline: Sequence[str], path: str | None) -> list[dict[str, Any]]:
    """Configs from `--config` strings and a `--configs-file` (JSON list or JSON lines)."""
    configs: list[dict[str, Any]] = []
    for i, text in enumerate(inline):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandLineError(f"--config #{i + 1} is not JSON: {exc}") from None
        configs.extend(_as_config_list(value, f"--config #{i + 1}"))
    if path:
        text = sys.stdin.read() if path == "-" else _read_file(path)
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                configs.extend(_as_config_list(json.loads(stripped), path))
            except json.JSONDecodeError as exc:
                raise CommandLineError(f"{path} is not a JSON list: {exc}") from None
        else:
            for n, line in enumerate(stripped.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    configs.extend(_as_config_list(json.loads(line), f"{path}:{n}"))
                except json.JSONDecodeError as exc:
                    raise CommandLineError(f"{path}:{n} is not JSON: {exc}") from None
    if not configs:
        raise CommandLineError("no configs: give --config JSON or --configs-file FILE")
    return configs


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CommandLineError(f"cannot read {path}: {exc.strerror}") from None


def _as_config_list(value: Any, where: str) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            raise CommandLineError(f"{where}: a config must be a JSON object, got {type(item).__name__}")
    return items


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandLineError(f"{flag} takes comma-separated integers, got {text!r}") from None


# --- latfarm predict ----------------------------------------------------------------------------------


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `latfarm predict`."""
    _add_connection(parser)
    parser.add_argument("--device", required=True, type=int, help="device id")
    parser.add_argument("--family", default="sr_block")
    parser.add_argument(
        "--frequency",
        required=True,
        metavar="KHZ[,KHZ…]",
        help="one frequency or several, comma-separated (the unit's clocks: a GPU clock for --unit gpu)",
    )
    _add_unit(parser, "the predictor's CPU cluster")
    _add_configs(parser)
    parser.add_argument("--json", action="store_true", help="JSON lines out instead of a table")


def predict_from_args(
    client: LatfarmClient, args: argparse.Namespace, configs: list[dict[str, Any]], freqs: list[int]
) -> Prediction:
    """The one `predict` call `latfarm predict` makes: its configs at its frequencies of `--unit` at
    `--precision`."""
    return client.predict(
        args.device, args.family, configs, frequencies_khz=freqs, unit=args.unit, precision=args.precision
    )


def run_predict(args: argparse.Namespace) -> int:
    """Predict the latencies of the configs and print them (a table, or JSON lines with --json)."""
    try:
        configs = read_configs(args.config, args.configs_file)
        freqs = _int_list(args.frequency, "--frequency")
        if not freqs:
            raise CommandLineError("--frequency needs at least one value")
        with LatfarmClient(args.url, args.token, timeout=args.timeout) as client:
            prediction = predict_from_args(client, args, configs, freqs)
    except (CommandLineError, LatfarmClientError) as exc:
        print(f"latfarm predict: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CommandLineError) else 1
    out = sys.stdout
    if not args.json:
        chosen = args.unit is not None or args.precision is not None
        on = f" on {args.unit or 'the default unit'} at {args.precision or 'fp32'}" if chosen else ""
        out.write(f"predictor {prediction.predictor_id}{on}\n")
        out.write(f"{'#':>4} {'MHz':>7} {'latency':>10} {'p10':>9} {'p90':>9}  note\n")
    for i, config in enumerate(configs):
        for j, freq in enumerate(freqs):
            row = {
                "config": config,
                "frequency_khz": freq,
                "latency_ms": float(prediction.latency_ms[i, j]),
                "p10_ms": float(prediction.p10_ms[i, j]),
                "p90_ms": float(prediction.p90_ms[i, j]),
                "extrapolated": bool(prediction.extrapolated[i, j]),
                "predictor_id": prediction.predictor_id,
                "unit": args.unit,
                "precision": args.precision,
            }
            if args.json:
                out.write(json.dumps(row) + "\n")
            else:
                note = "extrapolated" if row["extrapolated"] else ""
                out.write(
                    f"{i:>4} {freq / 1000:>7.0f} {row['latency_ms']:>8.2f}ms {row['p10_ms']:>7.2f}ms "
                    f"{row['p90_ms']:>7.2f}ms  {note}\n"
                )
    return 0


# --- latfarm jobs -------------------------------------------------------------------------------------


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `latfarm jobs list|show|submit|watch|cancel`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="jobs, newest first")
    _add_connection(listing)
    listing.add_argument("--status", choices=["queued", "running", "done", "failed", "cancelled"])

    show = actions.add_parser("show", help="one job as JSON")
    _add_connection(show)
    show.add_argument("job_id", type=int)

    submit = actions.add_parser("submit", help="submit a profiling job")
    _add_connection(submit)
    submit.add_argument("--family", default="sr_block")
    _add_configs(submit)
    submit.add_argument(
        "--sample", type=int, metavar="N", help="draw N configs from the family's example space"
    )
    submit.add_argument("--seed", type=int, default=0, help="seed of --sample")
    submit.add_argument("--devices", required=True, metavar="ID[,ID…]", help="device ids")
    submit.add_argument(
        "--frequencies",
        default="min-mid-max",
        metavar="all|min-mid-max|KHZ[,KHZ…]",
        help="default min-mid-max",
    )
    submit.add_argument("--runs", type=int, default=10)
    submit.add_argument("--warmup", type=int, default=2)
    submit.add_argument("--threads", type=int, default=1)
    submit.add_argument(
        "--passes", type=int, default=1, help="split each config's runs into passes through its batch"
    )
    _add_unit(submit, "each device's fastest CPU cluster; --frequencies are then that unit's clocks")
    submit.add_argument("--benchmark", choices=BENCHMARK_PROGRAMS, default=None, help="default onnxruntime")
    submit.add_argument(
        "--accelerator",
        choices=sorted({o for options in ACCELERATOR_OPTIONS.values() for o in options}),
        default=None,
        help="the benchmark's execution provider or delegate (default: the unit's first; see the README)",
    )
    submit.add_argument(
        "--layers", action="store_true", help="record per-layer times (runtime.layer_profile)"
    )
    submit.add_argument("--priority", type=int, default=0)
    submit.add_argument("--force", action="store_true", help="measure again even when measurements exist")
    submit.add_argument("--watch", action="store_true", help="then wait with a progress bar")

    watch = actions.add_parser("watch", help="a progress bar until the job finishes")
    _add_connection(watch)
    watch.add_argument("job_id", type=int)
    watch.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    watch.add_argument("--max-wait", type=float, default=None, metavar="S", help="give up after S seconds")

    cancel = actions.add_parser("cancel", help="cancel a job's remaining tasks")
    _add_connection(cancel)
    cancel.add_argument("job_id", type=int)


def _job_line(job: Job) -> str:
    counts = " ".join(f"{k}={v}" for k, v in sorted(job.counts.items()) if v)
    return f"{job.id:>5}  {job.status:<9} {job.family:<10} {job.completed_tasks:>6}/{job.tasks:<6} {counts}"


def _frequencies(text: str) -> list[int] | str:
    return text if text in ("all", "min-mid-max") else _int_list(text, "--frequencies")


def submit_from_args(client: LatfarmClient, args: argparse.Namespace) -> Job:
    """The job `latfarm jobs submit` sends: its configs (or a sample), devices, frequencies and runtime —
    runs, warm-up, threads, passes, and the unit, precision, benchmark, accelerator and `--layers`."""
    sampler = None
    configs = None
    if args.sample:
        if args.config or args.configs_file:
            raise CommandLineError("give configs (--config/--configs-file) or --sample, not both")
        from profilers.blocks import get_family

        space = get_family(args.family).search_space_example()
        sampler = {"strategy": "random", "n": args.sample, "space": space, "seed": args.seed}
    else:
        configs = read_configs(args.config, args.configs_file)
    runtime = {"runs": args.runs, "warmup": args.warmup, "threads": args.threads, "passes": args.passes}
    return client.submit_job(
        args.family,
        configs=configs,
        sampler=sampler,
        devices=_int_list(args.devices, "--devices"),
        frequencies=_frequencies(args.frequencies),
        runtime=runtime,
        priority=args.priority,
        force=args.force,
        unit=args.unit,
        precision=args.precision,
        benchmark=args.benchmark,
        accelerator=args.accelerator,
        layer_profile=True if args.layers else None,
    )


def _watch(client: LatfarmClient, job_id: int, poll_s: float, timeout_s: float | None) -> Job:
    bar = JobProgressBar()
    try:
        return client.wait(job_id, progress=bar, poll_s=poll_s, timeout_s=timeout_s)
    finally:
        bar.close()


def run_jobs(args: argparse.Namespace) -> int:
    """Run one `latfarm jobs` action; exit status 1 when a watched job did not finish `done`."""
    try:
        with LatfarmClient(args.url, args.token, timeout=args.timeout) as lf:
            if args.action == "list":
                for job in lf.list_jobs(status=args.status):
                    print(_job_line(job))
                return 0
            if args.action == "show":
                print(json.dumps(lf.get_job(args.job_id).model_dump(mode="json"), indent=2))
                return 0
            if args.action == "cancel":
                print(_job_line(lf.cancel_job(args.job_id)))
                return 0
            if args.action == "submit":
                job = submit_from_args(lf, args)
                print(_job_line(job))
                if not args.watch:
                    return 0
                job = _watch(lf, job.id, 1.0, None)
            else:
                job = _watch(lf, args.job_id, args.poll, args.max_wait)
            print(_job_line(job))
            return 0 if job.status == "done" else 1
    except CommandLineError as exc:
        print(f"latfarm jobs {args.action}: {exc}", file=sys.stderr)
        return 2
    except LatfarmTimeoutError as exc:
        print(f"latfarm jobs {args.action}: {exc}", file=sys.stderr)
        return 3
    except LatfarmClientError as exc:
        print(f"latfarm jobs {args.action}: {exc}", file=sys.stderr)
        return 1


# --- latfarm campaigns --------------------------------------------------------------------------------


def add_campaigns_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `latfarm campaigns start|show|list|watch|cancel`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    start = actions.add_parser("start", help="bootstrap a device: profile it in rounds until predictable")
    _add_connection(start)
    start.add_argument("--device", type=int, required=True, help="the device's id")
    start.add_argument("--family", default="sr_block")
    start.add_argument("--unit", default=None, help="compute unit (default: the fastest CPU cluster)")
    start.add_argument(
        "--frequencies",
        default="min-mid-max",
        metavar="all|min-mid-max|KHZ[,KHZ…]",
        help="default min-mid-max",
    )
    start.add_argument(
        "--target", type=float, default=None, help="held-out share within ±10 %% (default 0.9)"
    )
    start.add_argument("--max-configs", type=int, default=None, help="configs measured at most (default 200)")
    start.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock minutes at most (default 60)"
    )
    start.add_argument("--per-round", type=int, default=None, help="configs per round (default 16)")
    start.add_argument("--holdout", type=int, default=None, help="held-out configs (default 20)")
    start.add_argument("--runs", type=int, default=10)
    start.add_argument("--warmup", type=int, default=2)
    start.add_argument("--watch", action="store_true", help="then print each round as it ends")

    show = actions.add_parser("show", help="a campaign and its rounds table")
    _add_connection(show)
    show.add_argument("campaign_id", type=int)

    listing = actions.add_parser("list", help="campaigns, newest first")
    _add_connection(listing)
    listing.add_argument("--device", type=int, default=None)
    listing.add_argument(
        "--status", choices=["running", "succeeded", "budget_exhausted", "cancelled", "failed"], default=None
    )

    watch = actions.add_parser("watch", help="print each round as it ends, until the campaign is over")
    _add_connection(watch)
    watch.add_argument("campaign_id", type=int)
    watch.add_argument("--poll", type=float, default=2.0, help="seconds between polls")
    watch.add_argument("--max-wait", type=float, default=None, metavar="S", help="give up after S seconds")

    cancel = actions.add_parser("cancel", help="stop a running campaign")
    _add_connection(cancel)
    cancel.add_argument("campaign_id", type=int)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def campaign_line(campaign: Campaign) -> str:
    """One line of a campaign: id, status, device, family, unit, rounds and best predictor."""
    best = (
        f"best predictor {campaign.best_predictor_id}" if campaign.best_predictor_id else "no predictor yet"
    )
    return (
        f"{campaign.id:>5}  {campaign.status:<16} device {campaign.device_id} {campaign.family} on "
        f"{campaign.unit}  {len(campaign.rounds)} round(s), {best}"
    )


def rounds_table(campaign: Campaign) -> str:
    """The campaign's rounds as a table: configs measured, held-out share within ±10 %, MAPE, minutes."""
    lines = [
        f"{'round':>5}  {'phase':<9} {'picked':>6} {'measured':>8} {'±10 %':>8} {'MAPE':>8} {'minutes':>8}  "
        "peers  job  predictor  note"
    ]
    for r in campaign.rounds:
        mape = "—" if r.mape is None else f"{r.mape:.1f} %"
        minutes = "—" if r.minutes is None else f"{r.minutes:.1f}"
        peers = ",".join(map(str, r.peers)) or "—"
        lines.append(
            f"{r.number:>5}  {r.phase:<9} {r.picked:>6} {r.configs_measured:>8} {_percent(r.within_10):>8} "
            f"{mape:>8} {minutes:>8}  {peers:<5}  {r.job_id or '—'}  {r.predictor_id or '—'}  {r.note or ''}"
        )
    return "\n".join(line.rstrip() for line in lines)


def _show(campaign: Campaign) -> None:
    print(campaign_line(campaign))
    for text in (campaign.note, campaign.reason):
        if text:
            print(f"       {text}")
    print(rounds_table(campaign))


def _start_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "unit": args.unit,
        "frequencies": _frequencies(args.frequencies),
        "target_accuracy": args.target,
        "max_configs": args.max_configs,
        "max_minutes": args.max_minutes,
        "configs_per_round": args.per_round,
        "holdout_size": args.holdout,
        "runtime": {"runs": args.runs, "warmup": args.warmup},
    }
    return {k: v for k, v in options.items() if v is not None}


def _watch_campaign(
    client: LatfarmClient, campaign_id: int, poll_s: float, timeout_s: float | None
) -> Campaign:
    printed: set[int] = set()

    def progress(campaign: Campaign) -> None:
        for r in campaign.rounds:
            if r.number not in printed and r.phase in ("scored", "unscored"):
                printed.add(r.number)
                print(
                    f"round {r.number}: {r.configs_measured} configs measured, held-out within ±10 % "
                    f"{_percent(r.within_10)}",
                    flush=True,
                )

    return client.wait_campaign(campaign_id, progress=progress, poll_s=poll_s, timeout_s=timeout_s)


def run_campaigns(args: argparse.Namespace) -> int:
    """Run one `latfarm campaigns` action; exit status 1 when a watched campaign ended cancelled or failed."""
    try:
        with LatfarmClient(args.url, args.token, timeout=args.timeout) as lf:
            if args.action == "list":
                for campaign in lf.list_campaigns(device=args.device, status=args.status):
                    print(campaign_line(campaign))
                return 0
            if args.action == "show":
                _show(lf.get_campaign(args.campaign_id))
                return 0
            if args.action == "cancel":
                print(campaign_line(lf.cancel_campaign(args.campaign_id)))
                return 0
            if args.action == "start":
                campaign = lf.start_campaign(args.device, args.family, **_start_options(args))
                print(campaign_line(campaign))
                if campaign.note:
                    print(f"       {campaign.note}")
                if not args.watch:
                    return 0
                campaign = _watch_campaign(lf, campaign.id, 2.0, None)
            else:
                campaign = _watch_campaign(lf, args.campaign_id, args.poll, args.max_wait)
            _show(campaign)
            return 0 if campaign.status in ("succeeded", "budget_exhausted") else 1
    except CommandLineError as exc:
        print(f"latfarm campaigns {args.action}: {exc}", file=sys.stderr)
        return 2
    except LatfarmTimeoutError as exc:
        print(f"latfarm campaigns {args.action}: {exc}", file=sys.stderr)
        return 3
    except LatfarmClientError as exc:
        print(f"latfarm campaigns {args.action}: {exc}", file=sys.stderr)
        return 1
