"""The profiler: (config, cluster, frequency) requests in, trustworthy measurement records out.

For each group of requests sharing (cluster, frequency) the cluster is pinned once; for each request the
model is built, pushed through the on-device content-addressed cache
(``/data/local/tmp/latfarm/models/<sha256>.onnx``: already there → not pushed again), the phone is
cooled below ``cooldown_celsius``, frequency and temperature are read, the benchmark program runs under
``taskset`` (warm-up invocation, then the timed one), and frequency and temperature are read again.

Benchmark program: ``onnxruntime_perf_test -e cpu -m times -r N -x THREADS -s -I model result_file``
(stdout parsed by :func:`parse_onnxruntime_perf_test`; per-run times from the result file when the
program writes one). Warm-up is a separate invocation of ``-r warmup`` runs just before the timed one.

Passes: with ``RuntimeSettings.passes = P > 1`` the timed runs of every request are split into P
invocations, taken in P passes through the group of requests sharing a pin (A B C, A B C, …), and the
record's statistics are those of all its runs together. A disturbance of the phone (a background job, a
busy host under a virtual phone) lasting a few seconds then slows one pass of the records it meets, not
all their runs, so their medians barely move; the records of a group come after its last pass.

Validity: a record is kept but flagged ``valid=False`` with a reason when a pinned cluster was observed
at another frequency before or after the run (any of its passes), or when the hottest zone reached the
trip point. A phone
without root is measured unpinned (``pinned=False``) with the observed frequency recorded. Any error
raises a :class:`ProfilerError` before the record is built, so no partial record is ever yielded.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from profilers.adb.errors import CommandFailedError, OutputParseError
from profilers.adb.facts import DeviceFacts, probe
from profilers.adb.frequency import (
    Cluster,
    PinnedFrequency,
    pin_frequency,
    read_current_khz,
    resolve_cluster,
    root_mode,
)
from profilers.adb.parsers import BenchmarkStats, parse_onnxruntime_perf_test, stats_from_runs
from profilers.adb.records import MeasurementRecord
from profilers.adb.runtime import RuntimeSettings
from profilers.adb.session import DeviceSession
from profilers.adb.units import resolve_accelerator
from profilers.adb.thermal import cooldown, hottest_celsius, trip_point_celsius
from profilers.blocks import config_hash, get_family

DEVICE_ROOT = "/data/local/tmp/latfarm"
MODELS_DIR = f"{DEVICE_ROOT}/models"
BIN_PATH = f"{DEVICE_ROOT}/bin/onnxruntime_perf_test"
RESULT_PATH = f"{DEVICE_ROOT}/result.txt"
VIRTUAL_BENCHMARK_BINARY = (
    Path(__file__).resolve().parents[1] / "virtual_phone" / "bin" / "onnxruntime_perf_test"
)
RUNTIME_NAME = "onnxruntime"


class ProfileRequest(BaseModel):
    """One measurement to take; ``frequency_khz=None`` measures without pinning."""

    model_config = ConfigDict(extra="forbid")

    family: str
    config: dict[str, Any]
    cluster: str = "big"
    frequency_khz: int | None = Field(default=None, gt=0)

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        get_family(value)  # BlockConfigError (a ValueError) names the known families
        return value

    @field_validator("config")
    @classmethod
    def _valid_config(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        family = info.data.get("family")
        if family is None:
            return value
        try:
            return get_family(family).parse(value).model_dump(mode="json")
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"invalid {family} config: {details}") from None

    @property
    def config_hash(self) -> str:
        """The config identity (family + canonical JSON)."""
        return config_hash(self.family, self.config)


@dataclass(frozen=True)
class _Take:
    """One timed invocation of the benchmark for a request and the conditions read around it."""

    stats: BenchmarkStats
    freq_before: int | None
    freq_after: int | None
    temp_before: float | None
    temp_after: float | None
    started: datetime
    finished: datetime


class Profiler:
    """Measures block configs on one phone through a :class:`DeviceSession`."""

    def __init__(
        self,
        session: DeviceSession,
        runtime: RuntimeSettings | None = None,
        benchmark_binary: Path | None = None,
        cooldown_celsius: float | None = 45.0,
        cooldown_timeout_s: float = 120.0,
    ) -> None:
        self.session = session
        self.runtime = runtime or RuntimeSettings()
        self.benchmark_binary = Path(benchmark_binary or VIRTUAL_BENCHMARK_BINARY)
        self.cooldown_celsius = cooldown_celsius
        self.cooldown_timeout_s = cooldown_timeout_s
        self.pushes = 0
        self.cache_hits = 0
        self._facts: DeviceFacts | None = None
        self._trip_c: float | None = None
        self._root: str | None = None
        self._binary_ready = False
        self._runtime_version: str | None = None
        self._on_device: set[str] = set()  # model sha256s known to be in the device cache
        self._model_sha: dict[str, str] = {}  # config_hash → model sha256

    # -- setup ---------------------------------------------------------------------------------
    @property
    def facts(self) -> DeviceFacts:
        """The phone's probed facts (probed once, on first use)."""
        if self._facts is None:
            self._facts = probe(self.session)
            self._root = root_mode(self.session) if self._facts.rooted else None
            self._trip_c = trip_point_celsius(self.session, self._facts.thermal_zones)
        return self._facts

    def _ensure_binary(self) -> None:
        if self._binary_ready:
            return
        payload = self.benchmark_binary.read_bytes()
        self.session.run(f"mkdir -p {MODELS_DIR} {DEVICE_ROOT}/bin")
        current = self.session.stat(BIN_PATH)
        if not current.exists or current.size != len(payload):
            self.session.push(payload, BIN_PATH)
            self.session.run(f"chmod 755 {BIN_PATH}")
        self._runtime_version = "bin-sha256:" + hashlib.sha256(payload).hexdigest()[:16]
        self._binary_ready = True

    def _ensure_model(self, request: ProfileRequest) -> str:
        """Device path of the request's model, pushing it only when the device cache lacks it."""
        key = request.config_hash
        sha = self._model_sha.get(key)
        if sha is not None and sha in self._on_device:
            self.cache_hits += 1
            return f"{MODELS_DIR}/{sha}.onnx"
        model = get_family(request.family).to_onnx(request.config)
        sha = hashlib.sha256(model).hexdigest()
        self._model_sha[key] = sha
        path = f"{MODELS_DIR}/{sha}.onnx"
        current = self.session.stat(path)
        # The size check also catches a truncated entry left by a push that was cut off.
        if current.exists and current.size == len(model):
            self.cache_hits += 1
        else:
            self.session.push(model, path)
            self.pushes += 1
        self._on_device.add(sha)
        return path

    # -- measuring -----------------------------------------------------------------------------
    def measure(self, requests: Iterable[ProfileRequest]) -> Generator[MeasurementRecord, None, None]:
        """Measure every request, grouped by (cluster, frequency) so each pin is set once."""
        groups: dict[tuple[str, int | None], list[ProfileRequest]] = {}
        for request in requests:
            groups.setdefault((request.cluster, request.frequency_khz), []).append(request)
        facts = self.facts
        for (cluster_name, khz), group in groups.items():
            cluster = resolve_cluster(facts.clusters, cluster_name)
            if khz is not None and self._root is not None:
                with pin_frequency(self.session, cluster, khz, root=self._root) as pin:
                    yield from self._measure_group(group, pin)
            else:
                yield from self._measure_group(group, None)

    def _measure_group(
        self, group: list[ProfileRequest], pin: PinnedFrequency | None
    ) -> Iterator[MeasurementRecord]:
        if self.runtime.passes == 1:  # each record as soon as it is taken
            for request in group:
                yield self.measure_one(request, pin=pin)
            return
        takes: list[list[_Take]] = [[] for _ in group]
        for index in range(self.runtime.passes):
            runs = self.runtime.runs_of_pass(index)
            for request, taken in zip(group, takes, strict=True):
                taken.append(self._take(request, runs))
        for request, taken in zip(group, takes, strict=True):
            yield self._record(request, taken, pin)

    def measure_one(
        self, request: ProfileRequest, *, pin: PinnedFrequency | None = None
    ) -> MeasurementRecord:
        """One measurement; ``pin`` is the active pin of the request's cluster (None: unpinned).

        Its passes (if several) follow one another here; :meth:`measure` interleaves them across a group.
        """
        takes = [self._take(request, self.runtime.runs_of_pass(i)) for i in range(self.runtime.passes)]
        return self._record(request, takes, pin)

    def _take(self, request: ProfileRequest, runs: int) -> _Take:
        """One timed invocation of the benchmark for `request`, with the conditions read around it."""
        facts = self.facts
        cluster = resolve_cluster(facts.clusters, request.cluster)
        self._ensure_binary()
        model_path = self._ensure_model(request)
        if self.cooldown_celsius is not None:
            cooldown(self.session, self.cooldown_celsius, self.cooldown_timeout_s, zones=facts.thermal_zones)
        started = datetime.now(UTC)
        temp_before = hottest_celsius(self.session, facts.thermal_zones)
        freq_before = read_current_khz(self.session, cluster)
        stats = self._run_benchmark(cluster, model_path, runs)
        freq_after = read_current_khz(self.session, cluster)
        temp_after = hottest_celsius(self.session, facts.thermal_zones)
        return _Take(stats, freq_before, freq_after, temp_before, temp_after, started, datetime.now(UTC))

    def _record(
        self, request: ProfileRequest, takes: list[_Take], pin: PinnedFrequency | None
    ) -> MeasurementRecord:
        """The record of a request's passes: statistics of all their runs, validity from every pass."""
        if len(takes) == 1:
            stats = takes[0].stats
        else:
            runs_ms = [t for take in takes for t in take.stats.raw_runs_ms]
            if len(runs_ms) != sum(take.stats.runs for take in takes):
                raise OutputParseError(
                    "several passes need the per-run times of the result file; the benchmark wrote none"
                )
            stats = stats_from_runs(runs_ms)
        reasons: list[str] = []
        if pin is not None:
            pinned = pin.requested_khz
            for index, take in enumerate(takes):
                run = "the run" if len(takes) == 1 else f"pass {index + 1}"
                for when, observed in (("before", take.freq_before), ("after", take.freq_after)):
                    if observed != pinned:
                        reasons.append(f"observed {observed} kHz {when} {run}, pinned {pinned} kHz")
        if self._trip_c is not None:
            temperatures = [t for take in takes for t in (take.temp_before, take.temp_after) if t is not None]
            hottest = max(temperatures, default=None)
            if hottest is not None and hottest >= self._trip_c:
                reasons.append(f"temperature {hottest:.1f} °C reached the trip point {self._trip_c:.1f} °C")
        return MeasurementRecord(
            family=request.family,
            config=request.config,
            config_hash=request.config_hash,
            cluster=resolve_cluster(self.facts.clusters, request.cluster).name,
            frequency_khz=request.frequency_khz,
            observed_frequency_khz=takes[-1].freq_after,
            pinned=pin is not None,
            runtime_name=RUNTIME_NAME,
            runtime_version=self._runtime_version or "unknown",
            threads=self.runtime.threads,
            runs=stats.runs,
            warmup=self.runtime.warmup,
            passes=len(takes),
            benchmark=self.runtime.benchmark,
            precision=self.runtime.precision,
            accelerator=resolve_accelerator(self.runtime.benchmark, request.cluster, self.runtime.accelerator),
            layer_profile=self.runtime.layer_profile,
            median_ms=stats.median_ms,
            mean_ms=stats.mean_ms,
            std_ms=stats.std_ms,
            min_ms=stats.min_ms,
            max_ms=stats.max_ms,
            p90_ms=stats.p90_ms,
            raw_runs_ms=stats.raw_runs_ms,
            temperature_before_c=takes[0].temp_before,
            temperature_after_c=takes[-1].temp_after,
            valid=not reasons,
            invalid_reason="; ".join(reasons) or None,
            virtual=self.facts.is_virtual,
            started_at=takes[0].started,
            finished_at=takes[-1].finished,
        )

    def _benchmark_command(self, cluster: Cluster, model_path: str, runs: int, result: str | None) -> str:
        args = [
            BIN_PATH,
            "-e",
            "cpu",
            "-m",
            "times",
            "-r",
            str(runs),
            "-x",
            str(self.runtime.threads),
            "-s",
            "-I",
        ]
        args += [model_path] + ([result] if result else [])
        return f"taskset {cluster.taskset_mask} " + " ".join(shlex.quote(a) for a in args) + " 2>&1"

    def _run_benchmark(self, cluster: Cluster, model_path: str, runs: int) -> BenchmarkStats:
        timeout = self.session.command_timeout_s
        if self.runtime.warmup:
            self.session.run(self._benchmark_command(cluster, model_path, self.runtime.warmup, None), timeout)
        self.session.run(f"rm -f {RESULT_PATH}")
        command = self._benchmark_command(cluster, model_path, runs, RESULT_PATH)
        result = self.session.shell(command, timeout)
        if result.exit_code != 0:
            raise CommandFailedError(command, result.exit_code, result.stdout)
        per_run = self.session.shell(f"cat {RESULT_PATH} 2>&1")
        result_file = per_run.stdout if per_run.exit_code == 0 and per_run.stdout.strip() else None
        stats = parse_onnxruntime_perf_test(result.stdout, result_file)
        if stats.runs != runs:
            raise OutputParseError(f"benchmark reported {stats.runs} runs, {runs} were asked for")
        version = re.search(r"onnxruntime(?: version)?[:\s]+v?(\d+\.\d+\.\d+)", result.stdout, re.I)
        if version:
            self._runtime_version = version.group(1)
        return stats
