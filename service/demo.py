"""`latfarm demo`: the whole loop on one machine, from a fresh directory it names.

1. a SQLite database in that directory, migrated; an admin token;
2. two VIRTUAL phones (ADB device servers running real onnxruntime benchmarks on this host; profiles
   `virtual-flagship` and `virtual-midrange`), registered and probed through the API;
3. the API with an in-process worker (uvicorn in a thread), on 127.0.0.1;
4. a profiling campaign: N `sr_block` configs × 3 frequencies (min-mid-max) per phone, with a progress bar;
4b. on the flagship's (virtual) GPU: a few of those configs at the GPU's lowest and highest clock, at fp32 and
   at fp16, with per-layer profiles (the dashboard draws them);
5. a predictor trained and activated per phone, over every unit it was measured on (CPU and GPU);
6. the SR search (`service.sr_search`, which `examples/sr_search.py` runs) on each phone's predictor, its
   winners profiled for real;
7. a summary and the dashboard URL; the service keeps running until Ctrl-C (`--exit-after-summary`: exits).

Sizes are the demo's, chosen so the whole loop fits in minutes on 2 cores: ×4 blocks from a 96×54 input
(384×216 output, not 720p), 1–6 body layers of 4–32 channels, 10 runs after 1 warm-up. Ctrl-C stops every
thread this process started (API, worker, phones); the database only ever holds committed transactions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import uvicorn
from fastapi import FastAPI

DEMO_PROFILES = ("virtual-flagship", "virtual-midrange")
#: Runs in two passes through each batch: a host hiccup under a virtual phone slows half a record's runs.
DEMO_RUNTIME = {"runs": 10, "warmup": 1, "threads": 1, "passes": 2}
#: The demo's blocks: ×4 to this output (height, width), 9 % of 720p's pixels, so benchmarks are quick.
DEMO_OUTPUT = (216, 384)
DEMO_WIDTHS = (4, 8, 12, 16, 24, 32)
DEMO_MAX_DEPTH = 6
#: The GPU part of the demo: this many of the campaign's configs, at each precision, at the GPU's lowest and
#: highest clock, with per-layer profiles (one invocation: the warm-up carries the profile).
DEMO_GPU_CONFIGS = 12
DEMO_GPU_RUNTIME = {"runs": 10, "warmup": 1, "threads": 1, "layer_profile": True}
DEMO_GPU_PRECISIONS = ("fp32", "fp16")


class DemoError(Exception):
    """A step of the demo failed; the message says which and what the service answered."""


class ServerThread:
    """A uvicorn server for `app` on 127.0.0.1 in a background thread (port 0: a free one is chosen)."""

    def __init__(self, app: Any, port: int = 0, start_timeout_s: float = 30.0) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="latfarm-api", daemon=True)
        self._start_timeout_s = start_timeout_s
        self.port = port

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        """Start serving; returns once the socket listens (or raises when the server failed to start)."""
        self._thread.start()
        try:
            # uvicorn offers no start event across threads; poll its flag with a bounded deadline.
            deadline = time.monotonic() + self._start_timeout_s
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise DemoError("the API server did not start (see the log above)")
                time.sleep(0.02)
        except BaseException:  # Ctrl-C included: never leave a half-started server (and worker) behind
            self.stop()
            raise
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Ask uvicorn to finish in-flight requests and exit (running the app's shutdown); wait for it."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class PhoneProcess:
    """A virtual phone in its own process (`python -m profilers.virtual_phone`), so its benchmarks never wait
    for this process's GIL (the API, the worker and the other phone's ADB traffic are Python threads here).

    It runs in its own session: a terminal Ctrl-C reaches only the demo, which stops the worker first (it
    finishes the running benchmark) and the phones last. Stopping signals its whole process group (the phone,
    its benchmark forkserver and any benchmark child), so nothing of it outlives the demo. Its working
    directory is its own state directory, never the caller's (a checkout holds tokens and keys), and `-P`
    keeps that directory off its import path.
    """

    def __init__(self, profile: str, state_dir: Path, start_timeout_s: float = 60.0) -> None:
        self.profile = profile
        self.state_dir = state_dir
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self.serial = ""

    def start(self) -> PhoneProcess:
        """Start the phone; returns once it listens (its serial is then known)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-P", "-m", "profilers.virtual_phone", "--port", "0"]
        command += ["--profile", self.profile]
        command += ["--state-dir", str(self.state_dir)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.state_dir,
            )
        # The phone announces its port on its first line; poll the log with a bounded deadline.
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            match = re.search(r"listening on (\S+:\d+)", self.log_path.read_text(errors="replace"))
            if match:
                self.serial = match.group(1)
                return self
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DemoError(f"virtual phone {self.profile} did not start; see {self.log_path}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The phone's process id (also its process group's), while it runs."""
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        """SIGTERM to the phone's process group (it closes its connections and exits), SIGKILL to whatever of
        the group is left after 10 s."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        _signal_group(process.pid, signal.SIGKILL)  # a benchmark child or forkserver left behind


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# --- arguments ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `latfarm demo`."""
    parser.add_argument("--configs", type=int, default=300, help="sr_block configs profiled per phone")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="a new (or empty) directory for the database and phones (default: ./demo-<date-time>)",
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the campaign and of the search")
    parser.add_argument("--exit-after-summary", action="store_true", help="stop after the summary (CI)")


# --- the steps ----------------------------------------------------------------------------------------


@dataclass
class PhoneReport:
    """What the summary says about one phone."""

    profile: str
    device_id: int
    serial: str
    model: str | None
    clusters: list[str]
    frequencies_khz: list[int]
    measurements: int = 0
    predictor_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    verified: list[Any] = field(default_factory=list)
    dvfs: dict[int, Any] = field(default_factory=dict)
    budget_ms: float = 0.0
    gpu: GpuReport | None = None


@dataclass
class GpuReport:
    """What the summary says about a phone's GPU part: its clocks and fp16's speed-up over fp32."""

    model: str | None
    frequencies_khz: list[int]
    measurements: int
    fp16_over_fp32: float
    layered_measurement: int | None


def _fresh_dir(requested: Path | None) -> Path:
    path = requested or Path.cwd() / f"demo-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if path.exists() and any(path.iterdir()):
        raise DemoError(f"{path} is not empty: give --state-dir a new directory")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _demo_space() -> Any:
    from service import sr_search as search

    return search.SearchSpace(
        scale=4,
        output_height=DEMO_OUTPUT[0],
        output_width=DEMO_OUTPUT[1],
        max_depth=DEMO_MAX_DEPTH,
        width_choices=DEMO_WIDTHS,
    )


def campaign_configs(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` distinct sr_block configs of the demo's space, drawn with `seed`."""
    from service import sr_search as search

    space = _demo_space()
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    configs: list[dict[str, Any]] = []
    while len(configs) < n:
        widths = tuple(search.random_widths(space, rng))
        if widths in seen:
            continue
        seen.add(widths)
        configs.append(space.config(widths))
    return configs


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def _min_mid_max(freqs: list[int]) -> list[int]:
    ordered = sorted(freqs)
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]})


def _budget_from(predict_fn: Any, configs: list[dict[str, Any]]) -> float:
    """The demo's latency budget: the median predicted latency of the campaign, so the budget binds."""
    import numpy as np

    return float(np.round(np.median(predict_fn(configs)), 2))


@contextlib.contextmanager
def _running_service(settings: Any, port: int) -> Iterator[ServerThread]:
    from service.app import create_app
    from service.jobs.worker import attach_background_worker

    app: FastAPI = create_app(settings)
    attach_background_worker(app, settings)
    with ServerThread(app, port=port) as server:
        yield server


def run_demo(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Set everything up, run the loop, print the summary; returns the exit status."""
    from service import migrate
    from service import sr_search as search
    from service.auth.service import create_token
    from service.client import LatfarmClient
    from service.client_cli import JobProgressBar
    from service.db import make_engine, make_sessionmaker
    from service.settings import Settings

    if args.configs < 10:
        raise DemoError("--configs must be at least 10: the predictors need rows to train and to hold out")
    started = time.monotonic()
    state = _fresh_dir(args.state_dir)
    _say(out, f"latfarm demo: state in {state}")
    settings = Settings(
        database_url=f"sqlite:///{state / 'latfarm.db'}",
        state_dir=state / "service",
        public_read=True,  # the dashboard on 127.0.0.1 opens without a login
        log_level="WARNING",
        min_training_rows=20,
    )
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        _, admin = create_token(session, "demo-admin", ["admin"])
        _, reader = create_token(session, "demo-read", ["read"])
    engine.dispose()

    with contextlib.ExitStack() as stack:
        phones = []
        for profile in DEMO_PROFILES:
            phone = PhoneProcess(profile, state / "phones" / profile)
            stack.callback(phone.stop)  # registered first: a Ctrl-C while it starts still stops it
            phones.append(phone.start())
        server = stack.enter_context(_running_service(settings, args.port))
        client = stack.enter_context(LatfarmClient(server.url, admin, timeout=120.0))
        _say(
            out,
            f"API and worker on {server.url}; virtual phones on {', '.join(p.serial for p in phones)} "
            f"(pids {', '.join(str(p.pid) for p in phones)})",
        )

        reports = []
        for profile, phone in zip(DEMO_PROFILES, phones, strict=True):
            device = client.register_device(
                phone.serial, name=f"{profile} (virtual)", tags=["virtual", "demo"]
            )
            device = client.probe_device(device.id)
            cluster = max(device.clusters, key=lambda c: max(c.frequencies_khz, default=0))
            reports.append(
                PhoneReport(
                    profile=profile,
                    device_id=device.id,
                    serial=device.serial,
                    model=device.model,
                    clusters=[f"{c.name}×{len(c.cpus)}" for c in device.clusters],
                    frequencies_khz=_min_mid_max(cluster.frequencies_khz),
                )
            )
            _say(out, f"registered and probed {profile}: {device.model}, {len(device.clusters)} clusters")

        configs = campaign_configs(args.configs, args.seed)
        _say(
            out,
            f"campaign: {len(configs)} sr_block configs × 3 frequencies (min-mid-max) × {len(reports)} "
            "phones",
        )
        _run_job(
            client,
            "the campaign",
            configs=configs,
            devices=[r.device_id for r in reports],
            frequencies="min-mid-max",
            runtime=DEMO_RUNTIME,
        )

        for report in reports:
            report.gpu = _gpu_part(client, report, configs[:DEMO_GPU_CONFIGS], out)

        space = _demo_space()
        for report in reports:
            rows = client.measurements(device=report.device_id, family="sr_block")
            report.measurements = len(rows) - (report.gpu.measurements if report.gpu else 0)  # the CPU's
            predictor = client.train_predictor("sr_block", report.device_id)
            predictor = client.wait_predictor(predictor.id, poll_s=0.5)
            if predictor.status != "ready":
                raise DemoError(f"training for {report.profile} failed: {predictor.error}")
            client.activate_predictor(predictor.id)
            report.predictor_id, report.metrics = predictor.id, predictor.metrics
            _say(
                out, f"predictor {predictor.id} for {report.profile}: holdout {_accuracy(predictor.metrics)}"
            )

            top = max(report.frequencies_khz)
            predict_fn = search.client_predict_fn(client, report.device_id, top)
            report.budget_ms = _budget_from(predict_fn, configs)
            result = search.evolve(
                predict_fn, space, report.budget_ms, population=24, generations=8, top_k=2, seed=args.seed
            )
            report.dvfs = search.evolve_per_frequency(
                search.client_multi_predict_fn(client, report.device_id, report.frequencies_khz),
                report.frequencies_khz,
                space,
                report.budget_ms,
                population=16,
                generations=6,
                seed=args.seed,
            )
            picks = [(c, top) for c in result.best]
            bar = JobProgressBar()
            try:
                report.verified = search.profile_candidates(
                    client, report.device_id, picks, DEMO_RUNTIME, progress=bar, poll_s=0.5
                )
            finally:
                bar.close()

        dashboard = f"{server.url}/dashboard"
        _say(out, summary(reports, args.configs, time.monotonic() - started, dashboard, reader, state))
        if args.exit_after_summary:
            return 0
        _say(out, "the service keeps running for the dashboard; Ctrl-C stops it and the phones")
        threading.Event().wait()  # until Ctrl-C: KeyboardInterrupt unwinds the ExitStack
    return 0


def _run_job(client: Any, what: str, **job: Any) -> Any:
    """Submit an `sr_block` job, follow it with a progress bar, and return it done (else DemoError)."""
    from service.client_cli import JobProgressBar

    submitted = client.submit_job("sr_block", **job)
    bar = JobProgressBar()
    try:
        finished = client.wait(submitted.id, progress=bar, poll_s=1.0)
    finally:
        bar.close()
    if finished.status != "done":
        raise DemoError(f"{what} ended {finished.status}: {finished.error or finished.counts}")
    return finished


def _gpu_part(
    client: Any, report: PhoneReport, configs: list[dict[str, Any]], out: TextIO
) -> GpuReport | None:
    """Profile `configs` on the phone's GPU at its lowest and highest clock at each demo precision.

    None for a phone whose GPU onnxruntime cannot reach (only QNN drives a GPU, and only an Adreno's).
    """

    device = client.get_device(report.device_id)
    gpu = next((u for u in device.units if u.name == "gpu"), None)
    if gpu is None or not gpu.frequencies_khz or "Adreno" not in (gpu.model or ""):
        return None
    clocks = [gpu.frequencies_khz[0], gpu.frequencies_khz[-1]]
    _say(
        out,
        f"GPU of {report.profile} ({gpu.model}, virtual): {len(configs)} configs × {len(clocks)} clocks × "
        f"{'/'.join(DEMO_GPU_PRECISIONS)}, with per-layer profiles",
    )
    for precision in DEMO_GPU_PRECISIONS:
        _run_job(
            client,
            f"the GPU job ({precision})",
            configs=configs,
            devices=[report.device_id],
            frequencies=clocks,
            runtime=DEMO_GPU_RUNTIME,
            unit="gpu",
            precision=precision,
        )
    rows = client.measurements(device=report.device_id, family="sr_block", unit="gpu")
    median = {
        (p, h, int(f)): float(ms)
        for p, h, f, ms in zip(
            rows["precision"], rows["config_hash"], rows["frequency_khz"], rows["median_ms"], strict=True
        )
    }
    ratios = sorted(
        median[("fp16", h, f)] / ms
        for (p, h, f), ms in median.items()
        if p == "fp32" and ("fp16", h, f) in median
    )
    layered = next((int(i) for i, layers in zip(rows["id"], rows["layers"], strict=True) if layers), None)
    return GpuReport(
        model=gpu.model,
        frequencies_khz=clocks,
        measurements=len(rows),
        fp16_over_fp32=ratios[len(ratios) // 2] if ratios else float("nan"),
        layered_measurement=layered,
    )


def _accuracy(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "no metrics"
    parts = []
    if metrics.get("mape") is not None:
        parts.append(f"MAPE {metrics['mape']:.1f}%")
    if metrics.get("within_10") is not None:
        parts.append(f"{100 * metrics['within_10']:.0f}% within ±10%")
    if metrics.get("spearman") is not None:
        parts.append(f"Spearman {metrics['spearman']:.3f}")
    if metrics.get("rows") is not None:
        parts.append(f"{metrics['rows']} holdout rows")
    return ", ".join(parts) or "no metrics"


def summary(
    reports: list[PhoneReport], n_configs: int, elapsed_s: float, dashboard: str, reader: str, state: Path
) -> str:
    """The closing summary of the demo."""
    from service import sr_search as search

    out_h, out_w = DEMO_OUTPUT
    lines = ["", "=" * 78, "latfarm demo — summary", "=" * 78]
    lines.append(
        "Phones: these are VIRTUAL phones (ADB servers on this host running real onnxruntime benchmarks,"
    )
    lines.append("timings scaled by a simulated CPU frequency) — not real phones.")
    for r in reports:
        freqs = ", ".join(f"{f / 1000:.0f}" for f in r.frequencies_khz)
        lines.append(
            f"  [{r.device_id}] {r.profile:<17} {r.serial:<16} {r.model}  clusters {' '.join(r.clusters)}"
        )
        lines.append(f"       frequencies profiled: {freqs} MHz; {r.measurements} measurements")
    lines.append(
        f"Demo sizes: {n_configs} sr_block configs per phone, ×4 from {out_w // 4}×{out_h // 4} to "
        f"{out_w}×{out_h} (a real search targets 1280×720), 1-{DEMO_MAX_DEPTH} body layers of "
        f"{min(DEMO_WIDTHS)}-{max(DEMO_WIDTHS)} channels, {DEMO_RUNTIME['runs']} runs in "
        f"{DEMO_RUNTIME['passes']} passes after {DEMO_RUNTIME['warmup']} warm-up."
    )
    for r in reports:
        if r.gpu is None:
            continue
        clocks = " and ".join(f"{f / 1000:.0f}" for f in r.gpu.frequencies_khz)
        lines.append(
            f"  {r.profile} GPU ({r.gpu.model}, VIRTUAL: the accelerator cost model over real per-node host "
            f"costs): {r.gpu.measurements} measurements at {clocks} MHz; "
            f"fp16 takes {r.gpu.fp16_over_fp32:.2f}× fp32's median time"
        )
        if r.gpu.layered_measurement is not None:
            lines.append(f"       per-layer chart: {dashboard}/measurements/{r.gpu.layered_measurement}")
    lines.append("Predictors (XGBoost over every unit measured, accuracy on held-out configs):")
    for r in reports:
        lines.append(f"  {r.profile:<17} predictor {r.predictor_id}: {_accuracy(r.metrics)}")
    lines.append("Search (service.sr_search): most parameters under the budget, predicted vs measured:")
    for r in reports:
        top = max(r.frequencies_khz)
        lines.append(f"  {r.profile} at {top / 1000:.0f} MHz, budget {r.budget_ms:.2f} ms:")
        lines.extend("    " + line for line in search.format_verified(r.verified).splitlines())
        per_f = ", ".join(
            f"{f / 1000:.0f} MHz: {c.config['widths']} ({c.latency_ms:.2f} ms predicted)"
            if c is not None
            else f"{f / 1000:.0f} MHz: nothing fits"
            for f, c in r.dvfs.items()
        )
        lines.append(f"    DVFS-aware, best block per frequency: {per_f}")
    lines.append(f"Dashboard: {dashboard}  (public read on localhost; read token: {reader})")
    lines.append(f"State: {state}   elapsed: {elapsed_s:.0f} s")
    return "\n".join(lines)


class DemoStopped(KeyboardInterrupt):
    """SIGTERM or SIGINT reached the demo: unwinding stops the API, the worker and the phones."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> dict[int, Any]:
    """SIGTERM and SIGINT raise DemoStopped in the main thread, once; further ones wait for the clean-up."""

    def handler(signum: int, _frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # the clean-up is bounded; a second signal must not cut it
        raise DemoStopped(signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def run(args: argparse.Namespace) -> int:
    """`latfarm demo`: exit status 0 on success, 1 when a step failed, 128+N on signal N (130: Ctrl-C)."""
    from service.client import LatfarmClientError

    previous = _stop_on_signals()
    try:
        return run_demo(args)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, DemoStopped) else signal.SIGINT
        print("\nlatfarm demo: interrupted; the API, the worker and the phones are stopped", file=sys.stderr)
        return 128 + signum
    except (DemoError, LatfarmClientError) as exc:
        print(f"latfarm demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
