"""The profiler: (config, unit, frequency) requests in, trustworthy measurement records out.

A request's unit (its `cluster` field) is a CPU cluster, the `gpu` or the `npu` (see `profilers.adb.units`).
For each group of requests sharing (unit, frequency) the unit is pinned once — a CPU cluster through
cpufreq (`pin_frequency`), an accelerator through devfreq (`pin_devfreq`); for each request the model is
built at the run's precision, pushed through the on-device content-addressed cache
(``/data/local/tmp/latfarm/models/<sha256>.onnx``: already there → not pushed again), the phone is cooled
below ``cooldown_celsius``, the unit's clock and the temperature are read, the benchmark program runs
(warm-up, then the timed runs), and clock (with the memory bus's, for an accelerator) and temperature are
read again.

Programs (command lines and per-layer parsers in `profilers.adb.benchmarks`):

- ``onnxruntime_perf_test -e <provider> [-i backend] -m times -r N -x THREADS -s -I model result_file``,
  on a CPU cluster under ``taskset`` (stdout parsed by :func:`parse_onnxruntime_perf_test`, per-run times
  from the result file). Warm-up is a separate invocation of ``-r warmup`` runs just before the timed one.
  It is given the model at the run's precision (fp32, fp16, int8 QDQ: `profilers.adb.precision`).
- ``benchmark_model --graph=… --num_runs=N --warmup_runs=W …`` (TFLite; parsed by
  :func:`parse_tflite_benchmark_model`): warm-ups run inside the timed invocation, as benchmark_model
  intends (a delegate's first runs compile its kernels). It is given the fp32 model with the delegate's
  fp16 switch for fp16 (``--gpu_precision_loss_allowed`` / ``--nnapi_allow_fp16``), the QDQ model for int8.
  It prints no per-run times: ``raw_runs_ms`` is empty, and several passes are pooled from their summaries
  (:func:`pool_stats`: exact runs, mean, min, max and std; the median of the pass medians; no p90).

Per-layer times (``layer_profile``): onnxruntime's warm-up invocation carries ``-p PREFIX`` (a 1-run
invocation when ``warmup`` is 0); benchmark_model gets one extra invocation of ``max(warmup, 1)`` runs with
``--enable_op_profiling=true``. The timed runs are never profiled. Taken in a request's first pass only.

Which programs run where (`profilers.adb.programs`): a phone that is not a latfarm virtual phone runs only
a program latfarm was given (``benchmark_binary`` / ``tflite_benchmark_binary``); the virtual phone's
stand-ins are never pushed to it; benchmark_model on a real phone is refused (it needs a .tflite model,
and latfarm builds ONNX). Everything a request asks for — its unit, precision, accelerator option, an
accelerator clock in the unit's table — is checked before anything runs (:class:`UnsupportedRunError`,
:class:`FrequencyPinError`).

Passes: with ``RuntimeSettings.passes = P > 1`` the timed runs of every request are split into P
invocations, taken in P passes through the group of requests sharing a pin (A B C, A B C, …), and the
record's statistics are those of all its runs together. A disturbance of the phone (a background job, a
busy host under a virtual phone) lasting a few seconds then slows one pass of the records it meets, not
all their runs, so their medians barely move; the records of a group come after its last pass.

Validity: a record is kept but flagged ``valid=False`` with a reason when a pinned unit was observed at
another clock before or after the run (any of its passes), or when the hottest zone reached the trip
point. A phone without root, or an accelerator without a devfreq node, is measured unpinned
(``pinned=False``, logged) with the observed clock recorded. Any error raises a :class:`ProfilerError`
before the record is built, so no partial record is ever yielded.

This module is past 500 lines on purpose: the measuring loop, the checks before it and the invocations
around each run share one run's state (pins, device cache, per-layer profiles). Everything that does not —
programs, command lines, parsers, pinning, model conversion — lives in its own module.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from profilers.adb.accelerators import (
    check_devfreq_khz,
    find_accelerator,
    pin_devfreq,
    read_clocks_khz,
)
from profilers.adb.benchmarks import (
    benchmark_model_args,
    onnxruntime_perf_test_args,
    parse_onnxruntime_profile,
    parse_tflite_op_profile,
    shell_command,
)
from profilers.adb.errors import CommandFailedError, OutputParseError, UnsupportedRunError
from profilers.adb.facts import DeviceFacts, probe
from profilers.adb.frequency import (
    Cluster,
    PinnedClock,
    pin_frequency,
    read_current_khz,
    resolve_cluster,
    root_mode,
)
from profilers.adb.parsers import (
    BenchmarkStats,
    parse_onnxruntime_perf_test,
    parse_tflite_benchmark_model,
    pool_stats,
    stats_from_runs,
)
from profilers.adb.precision import model_at_precision
from profilers.adb.programs import PROGRAMS, check_runnable, program_file
from profilers.adb.records import MeasurementRecord
from profilers.adb.runtime import RuntimeSettings
from profilers.adb.session import DeviceSession
from profilers.adb.thermal import cooldown, hottest_celsius, trip_point_celsius
from profilers.adb.units import (
    CPU_PRECISIONS,
    Accelerator,
    LayerTime,
    check_precision,
    resolve_accelerator,
    unit_kind,
)
from profilers.blocks import config_hash, get_family

log = logging.getLogger(__name__)

DEVICE_ROOT = "/data/local/tmp/latfarm"
MODELS_DIR = f"{DEVICE_ROOT}/models"
BIN_PATH = PROGRAMS["onnxruntime"].device_path
TFLITE_BIN_PATH = PROGRAMS["tflite"].device_path
RESULT_PATH = f"{DEVICE_ROOT}/result.txt"
PROFILE_PREFIX = f"{DEVICE_ROOT}/profile"


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
class _Unit:
    """Where a request runs, resolved against the probed phone: a CPU cluster or an accelerator."""

    name: str  # the record's `cluster`: the cluster's name, `gpu` or `npu`
    option: str  # the program's accelerator option (execution provider / delegate)
    cluster: Cluster | None = None
    accelerator: Accelerator | None = None


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
    bus_after: int | None = None
    layers: list[LayerTime] | None = None


class Profiler:
    """Measures block configs on one phone through a :class:`DeviceSession`."""

    def __init__(
        self,
        session: DeviceSession,
        runtime: RuntimeSettings | None = None,
        benchmark_binary: Path | None = None,
        cooldown_celsius: float | None = 45.0,
        cooldown_timeout_s: float = 120.0,
        tflite_benchmark_binary: Path | None = None,
    ) -> None:
        self.session = session
        self.runtime = runtime or RuntimeSettings()
        #: The programs latfarm was given (None: the virtual phone's stand-in, on a virtual phone only).
        self.benchmark_binary = Path(benchmark_binary) if benchmark_binary else None
        self.tflite_benchmark_binary = Path(tflite_benchmark_binary) if tflite_benchmark_binary else None
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
        self._model_sha: dict[tuple[str, str], str] = {}  # (config_hash, precision pushed) → model sha256
        self._layers: dict[tuple[str, str, int | None], list[LayerTime]] = {}  # per-layer profiles taken

    # -- setup ---------------------------------------------------------------------------------
    @property
    def facts(self) -> DeviceFacts:
        """The phone's probed facts (probed once, on first use)."""
        if self._facts is None:
            self._facts = probe(self.session)
            self._root = root_mode(self.session) if self._facts.rooted else None
            self._trip_c = trip_point_celsius(self.session, self._facts.thermal_zones)
        return self._facts

    @property
    def _tflite(self) -> bool:
        return self.runtime.benchmark == "tflite"

    @property
    def _device_binary(self) -> str:
        return PROGRAMS[self.runtime.benchmark].device_path

    @property
    def _configured_program(self) -> Path | None:
        return self.tflite_benchmark_binary if self._tflite else self.benchmark_binary

    def _ensure_binary(self) -> None:
        if self._binary_ready:
            return
        payload = program_file(self.facts, self.runtime.benchmark, self._configured_program).read_bytes()
        path = self._device_binary
        self.session.run(f"mkdir -p {MODELS_DIR} {DEVICE_ROOT}/bin")
        current = self.session.stat(path)
        if not current.exists or current.size != len(payload):
            self.session.push(payload, path)
            self.session.run(f"chmod 755 {path}")
        self._runtime_version = "bin-sha256:" + hashlib.sha256(payload).hexdigest()[:16]
        self._binary_ready = True

    @property
    def _pushed_precision(self) -> str:
        """The precision of the model file itself: TFLite's fp16 is a delegate switch on the fp32 model."""
        if self._tflite and self.runtime.precision == "fp16":
            return "fp32"
        return self.runtime.precision

    def _ensure_model(self, request: ProfileRequest) -> str:
        """Device path of the request's model, pushing it only when the device cache lacks it."""
        key = (request.config_hash, self._pushed_precision)
        sha = self._model_sha.get(key)
        if sha is not None and sha in self._on_device:
            self.cache_hits += 1
            return f"{MODELS_DIR}/{sha}.onnx"
        model = model_at_precision(get_family(request.family).to_onnx(request.config), key[1])
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

    # -- what runs where -----------------------------------------------------------------------
    def _unit(self, request: ProfileRequest) -> _Unit:
        """The request's unit on this phone, checked: present, at a precision it runs, with an option
        of the program that reaches it, at a clock of its table (accelerators; CPU clocks when pinned)."""
        facts = self.facts
        kind = unit_kind(request.cluster)
        try:
            option = resolve_accelerator(self.runtime.benchmark, request.cluster, self.runtime.accelerator)
        except ValueError as exc:
            raise UnsupportedRunError(str(exc)) from None
        if kind == "cpu":
            cluster = resolve_cluster(facts.clusters, request.cluster)
            supported: list[str] | tuple[str, ...] = CPU_PRECISIONS
            unit = _Unit(cluster.name, option, cluster=cluster)
        else:
            accelerator = find_accelerator(facts.accelerators, kind)
            supported = list(accelerator.precisions)
            if option == "qnn" and kind == "gpu" and not accelerator.model.lower().startswith("adreno"):
                # QNN's GPU backend drives Qualcomm's Adreno only.
                raise UnsupportedRunError(
                    f"onnxruntime reaches a GPU through QNN, which drives Adreno GPUs only; this phone's GPU "
                    f"is {accelerator.model}: measure it with the tflite benchmark (its GPU delegate)"
                )
            unit = _Unit(accelerator.name, option, accelerator=accelerator)
            if request.frequency_khz is not None:
                check_devfreq_khz(accelerator, request.frequency_khz)
        try:
            check_precision(unit.name, self.runtime.precision, supported)
        except ValueError as exc:
            raise UnsupportedRunError(str(exc)) from None
        return unit

    # -- measuring -----------------------------------------------------------------------------
    def measure(self, requests: Iterable[ProfileRequest]) -> Generator[MeasurementRecord, None, None]:
        """Measure every request, grouped by (unit, frequency) so each pin is set once.

        Every request is checked before the first runs, so a bad one stops the batch with nothing run.
        """
        groups: dict[tuple[str, int | None], list[ProfileRequest]] = {}
        for request in requests:
            groups.setdefault((request.cluster, request.frequency_khz), []).append(request)
        units = {key: self._unit(group[0]) for key, group in groups.items()}
        if groups:
            check_runnable(self.facts, self.runtime.benchmark, self._configured_program)
        for (_, khz), group in groups.items():
            unit = units[(group[0].cluster, khz)]
            if khz is None:
                yield from self._measure_group(group, None)
            elif unit.cluster is not None and self._root is not None:
                with pin_frequency(self.session, unit.cluster, khz, root=self._root) as pin:
                    yield from self._measure_group(group, pin)
            elif unit.accelerator is not None and self._root is not None and unit.accelerator.devfreq:
                with pin_devfreq(self.session, unit.accelerator, khz, root=self._root) as devfreq_pin:
                    yield from self._measure_group(group, devfreq_pin)
            else:
                why = "no root" if self._root is None else "no devfreq node to pin"
                log.warning("measuring %s unpinned at %s kHz requested: %s", unit.name, khz, why)
                yield from self._measure_group(group, None)

    def _measure_group(
        self, group: list[ProfileRequest], pin: PinnedClock | None
    ) -> Iterator[MeasurementRecord]:
        self._layers.clear()
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

    def measure_one(self, request: ProfileRequest, *, pin: PinnedClock | None = None) -> MeasurementRecord:
        """One measurement; ``pin`` is the active pin of the request's unit (None: unpinned).

        Its passes (if several) follow one another here; :meth:`measure` interleaves them across a group.
        """
        self._layers.pop(self._layer_key(request), None)
        takes = [self._take(request, self.runtime.runs_of_pass(i)) for i in range(self.runtime.passes)]
        return self._record(request, takes, pin)

    @staticmethod
    def _layer_key(request: ProfileRequest) -> tuple[str, str, int | None]:
        return (request.config_hash, request.cluster, request.frequency_khz)

    def _take(self, request: ProfileRequest, runs: int) -> _Take:
        """One timed invocation of the benchmark for `request`, with the conditions read around it.

        The request's first take (of a group) also takes its per-layer profile when one is asked for.
        """
        facts = self.facts
        unit = self._unit(request)
        self._ensure_binary()
        model_path = self._ensure_model(request)
        if self.cooldown_celsius is not None:
            cooldown(self.session, self.cooldown_celsius, self.cooldown_timeout_s, zones=facts.thermal_zones)
        started = datetime.now(UTC)
        temp_before = hottest_celsius(self.session, facts.thermal_zones)
        freq_before, _ = self._read_clocks(unit)
        key = self._layer_key(request)
        profile = self.runtime.layer_profile and key not in self._layers
        layers = self._warm_up(unit, model_path, profile)
        if layers is not None:
            self._layers[key] = layers
        stats = self._run_benchmark(unit, model_path, runs)
        freq_after, bus_after = self._read_clocks(unit)
        temp_after = hottest_celsius(self.session, facts.thermal_zones)
        return _Take(
            stats,
            freq_before,
            freq_after,
            temp_before,
            temp_after,
            started,
            datetime.now(UTC),
            bus_after,
            layers,
        )

    def _read_clocks(self, unit: _Unit) -> tuple[int | None, int | None]:
        """The unit's clock and (for an accelerator) the memory bus's, in kHz."""
        if unit.accelerator is not None:
            return read_clocks_khz(self.session, unit.accelerator)
        assert unit.cluster is not None
        return read_current_khz(self.session, unit.cluster), None

    def _record(
        self, request: ProfileRequest, takes: list[_Take], pin: PinnedClock | None
    ) -> MeasurementRecord:
        """The record of a request's passes: statistics of all their runs, validity from every pass."""
        unit = self._unit(request)
        if len(takes) == 1:
            stats = takes[0].stats
        elif all(len(take.stats.raw_runs_ms) == take.stats.runs for take in takes):
            stats = stats_from_runs([t for take in takes for t in take.stats.raw_runs_ms])
        elif self._tflite:
            stats = pool_stats([take.stats for take in takes])
        else:
            raise OutputParseError(
                "several passes need the per-run times of the result file; the benchmark wrote none"
            )
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
        layers = self._layers.get(self._layer_key(request)) if self.runtime.layer_profile else None
        return MeasurementRecord(
            family=request.family,
            config=request.config,
            config_hash=request.config_hash,
            cluster=unit.name,
            frequency_khz=request.frequency_khz,
            observed_frequency_khz=takes[-1].freq_after,
            pinned=pin is not None,
            bus_frequency_khz=takes[-1].bus_after,
            runtime_name=self.runtime.benchmark,
            runtime_version=self._runtime_version or "unknown",
            threads=self.runtime.threads,
            runs=stats.runs,
            warmup=self.runtime.warmup,
            passes=len(takes),
            benchmark=self.runtime.benchmark,
            precision=self.runtime.precision,
            accelerator=unit.option,
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
            layers=layers,
            started_at=takes[0].started,
            finished_at=takes[-1].finished,
        )

    # -- the benchmark program -----------------------------------------------------------------
    def _command(
        self,
        unit: _Unit,
        model_path: str,
        runs: int,
        *,
        warmup: int = 0,
        result: str | None = None,
        layers: bool = False,
    ) -> str:
        """The shell line of one invocation; CPU clusters run under `taskset`, accelerators wherever."""
        mask = unit.cluster.taskset_mask if unit.cluster is not None else None
        if self._tflite:
            args = benchmark_model_args(
                self._device_binary,
                model_path,
                runs=runs,
                warmup=warmup,
                threads=self.runtime.threads,
                accelerator=unit.option,
                precision=self.runtime.precision,
                op_profiling=layers,
            )
        else:
            args = onnxruntime_perf_test_args(
                self._device_binary,
                model_path,
                runs=runs,
                threads=self.runtime.threads,
                accelerator=unit.option,
                unit=unit.name,
                result_file=result,
                profile_prefix=PROFILE_PREFIX if layers else None,
            )
        return shell_command(args, mask)

    def _warm_up(self, unit: _Unit, model_path: str, profile: bool) -> list[LayerTime] | None:
        """onnxruntime's warm-up invocation (profiled when `profile`), or benchmark_model's profiling one.

        Returns the per-layer profile when one was taken.
        """
        timeout = self.session.command_timeout_s
        runs = max(self.runtime.warmup, 1) if profile else self.runtime.warmup
        if self._tflite:
            if not profile:
                return None  # benchmark_model warms up inside the timed invocation
            out = self.session.run(self._command(unit, model_path, runs, layers=True), timeout)
            return parse_tflite_op_profile(out, unit.name)
        if not runs:
            return None
        if not profile:
            self.session.run(self._command(unit, model_path, runs), timeout)
            return None
        self.session.run(f"rm -f {PROFILE_PREFIX}_*.json")
        self.session.run(self._command(unit, model_path, runs, layers=True), timeout)
        # onnxruntime names the file PREFIX_<YYYY-MM-DD_HH-MM-SS>.json; the only one, as the old were removed.
        listing = self.session.shell(f"ls {PROFILE_PREFIX}_*.json 2>&1")
        files = sorted(p for p in listing.stdout.split() if p.endswith(".json"))
        if listing.exit_code != 0 or not files:
            raise OutputParseError(f"onnxruntime_perf_test -p wrote no {PROFILE_PREFIX}_*.json profile")
        text = self.session.run(f"cat {shlex.quote(files[-1])}")
        self.session.run(f"rm -f {PROFILE_PREFIX}_*.json")
        return parse_onnxruntime_profile(text, unit.name)

    def _run_benchmark(self, unit: _Unit, model_path: str, runs: int) -> BenchmarkStats:
        """The timed invocation of `runs` runs, parsed (the warm-up has already run)."""
        timeout = self.session.command_timeout_s
        if self._tflite:
            command = self._command(unit, model_path, runs, warmup=self.runtime.warmup)
            result = self.session.shell(command, timeout)
            if result.exit_code != 0:
                raise CommandFailedError(command, result.exit_code, result.stdout)
            stats = parse_tflite_benchmark_model(result.stdout)
        else:
            self.session.run(f"rm -f {RESULT_PATH}")
            command = self._command(unit, model_path, runs, result=RESULT_PATH)
            result = self.session.shell(command, timeout)
            if result.exit_code != 0:
                raise CommandFailedError(command, result.exit_code, result.stdout)
            per_run = self.session.shell(f"cat {RESULT_PATH} 2>&1")
            result_file = per_run.stdout if per_run.exit_code == 0 and per_run.stdout.strip() else None
            stats = parse_onnxruntime_perf_test(result.stdout, result_file)
            version = re.search(r"onnxruntime(?: version)?[:\s]+v?(\d+\.\d+\.\d+)", result.stdout, re.I)
            if version:
                self._runtime_version = version.group(1)
        if stats.runs != runs:
            raise OutputParseError(f"benchmark reported {stats.runs} runs, {runs} were asked for")
        return stats
