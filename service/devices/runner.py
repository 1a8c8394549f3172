"""The device side a worker drives: probe a phone, measure profile requests on it.

`DeviceRunner` is the seam between the service and the phones, typed in the profiler's own terms: a
batch goes in as `RuntimeSettings` and `ProfileRequest`s (which carry the pin: cluster and frequency),
results come out as `MeasurementRecord`s, which the measurements domain stores as they are.
`AdbRunner` speaks ADB through `profilers.adb` (one session per phone and one profiler — with its model
push cache — per phone and runtime settings, reconnecting after any error); `NoopRunner` answers at
once, so the queue can be benchmarked without phones. Errors of the device side reach the caller as one
type, `RunnerError`.

Routes get their runner from `service.deps.RunnerDep`, the worker from its constructor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

from profilers.adb.errors import ProfilerError
from profilers.adb.facts import DeviceFacts, probe
from profilers.adb.profiler import Profiler, ProfileRequest
from profilers.adb.records import MeasurementRecord
from profilers.adb.runtime import RuntimeSettings
from profilers.adb.session import DeviceSession, Transport
from service.db import utcnow
from service.settings import Settings

#: The probed facts as `device` column values (see `facts_to_columns`).
DeviceColumns = dict[str, object]


class RunnerError(Exception):
    """The phone failed a probe or a measurement (connection, timeout, benchmark error, refused push)."""


@dataclass(frozen=True)
class DeviceTarget:
    """Where a phone is: its id in the registry and how to reach it."""

    device_id: int
    serial: str
    transport: str
    address: str | None

    @property
    def adb_transport(self) -> Transport:
        """The transport in the ADB session's terms (`usb` or, by default, `tcp`)."""
        return "usb" if self.transport == "usb" else "tcp"


class DeviceRunner(Protocol):
    """Probe and measure on phones; both raise `RunnerError` when the phone fails."""

    def probe(self, target: DeviceTarget) -> DeviceColumns:
        """The phone's facts as `device` columns (model, clusters, rooted, thermal_zones, …)."""
        ...

    def measure(
        self, target: DeviceTarget, runtime: RuntimeSettings, requests: Sequence[ProfileRequest]
    ) -> Generator[MeasurementRecord, None, None]:
        """One record per request, in order, as each finishes; closing the iterator early restores the
        phone (the profiler's pin context exits)."""
        ...

    def forget(self, target: DeviceTarget) -> None:
        """Drop any connection to the phone (after an error, or when its lease is given back)."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


#: Probed facts the registry keeps elsewhere or not at all: a phone is registered under the serial it is
#: reached by (not the one it reports), and its Android version is kept rather than the SDK level.
FACTS_NOT_STORED = frozenset({"serial", "sdk"})


def facts_to_columns(facts: DeviceFacts) -> DeviceColumns:
    """The probed facts → the `device` columns of the same names (empty strings stored as NULL).

    Every other fact has a column of its name (a test holds them together), so a fact added to the
    profiler's `DeviceFacts` and to the device model is stored with no edit here.
    """
    data = facts.model_dump(mode="json", exclude=set(FACTS_NOT_STORED))
    return {name: None if value == "" else value for name, value in data.items()}


class AdbRunner:
    """Phones over ADB through `profilers.adb`, configured by the service settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: dict[int, DeviceSession] = {}
        # Keyed by phone and the (frozen, hashable) runtime settings the profiler runs with.
        self._profilers: dict[tuple[int, RuntimeSettings], Profiler] = {}

    def _session(self, target: DeviceTarget) -> DeviceSession:
        session = self._sessions.get(target.device_id)
        if session is None:
            session = DeviceSession.connect(
                target.address or target.serial,
                transport=target.adb_transport,
                key_path=self.settings.adb_key_path,
                connect_timeout_s=self.settings.adb_connect_timeout_s,
                command_timeout_s=self.settings.adb_command_timeout_s,
            )
            self._sessions[target.device_id] = session
        return session

    def probe(self, target: DeviceTarget) -> DeviceColumns:
        """Connect (if needed) and read the phone's facts."""
        try:
            return facts_to_columns(probe(self._session(target)))
        except ProfilerError as exc:
            self.forget(target)
            raise RunnerError(str(exc)) from exc

    def measure(
        self, target: DeviceTarget, runtime: RuntimeSettings, requests: Sequence[ProfileRequest]
    ) -> Generator[MeasurementRecord, None, None]:
        """Benchmark the requests (grouped by pin by the profiler); closing early restores the governor."""
        try:
            profiler = self._profiler(target, runtime)
            # closing(): when the worker stops early, the profiler's pin context exits and restores.
            with contextlib.closing(profiler.measure(requests)) as records:
                yield from records
        except ProfilerError as exc:
            self.forget(target)
            raise RunnerError(str(exc)) from exc

    def _profiler(self, target: DeviceTarget, runtime: RuntimeSettings) -> Profiler:
        key = (target.device_id, runtime)
        profiler = self._profilers.get(key)
        if profiler is None:
            profiler = Profiler(
                self._session(target),
                runtime=runtime,
                benchmark_binary=self.settings.benchmark_binary,
                tflite_benchmark_binary=self.settings.tflite_benchmark_binary,
                cooldown_celsius=self.settings.cooldown_celsius,
                cooldown_timeout_s=self.settings.cooldown_timeout_s,
            )
            self._profilers[key] = profiler
        return profiler

    def forget(self, target: DeviceTarget) -> None:
        """Close the phone's session; its profilers go too (they hold the session)."""
        session = self._sessions.pop(target.device_id, None)
        for key in [k for k in self._profilers if k[0] == target.device_id]:
            del self._profilers[key]
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def close(self) -> None:
        """Close every session."""
        for device_id in list(self._sessions):
            self.forget(DeviceTarget(device_id, "", "tcp", None))


class NoopRunner:
    """A device that answers at once with an empty measurement: measures the queue, not a phone.

    Its records say `runtime_name="noop"` and `valid=False`, so they can never pass for latencies.
    """

    def __init__(self, facts: DeviceColumns | None = None) -> None:
        self.facts = facts or {}

    def probe(self, target: DeviceTarget) -> DeviceColumns:
        """The facts given to the constructor."""
        return dict(self.facts)

    def measure(
        self, target: DeviceTarget, runtime: RuntimeSettings, requests: Sequence[ProfileRequest]
    ) -> Generator[MeasurementRecord, None, None]:
        """One placeholder record per request, taken with `runtime`."""
        for request in requests:
            now = utcnow()
            yield MeasurementRecord(
                family=request.family,
                config=request.config,
                config_hash=request.config_hash,
                cluster=request.cluster,
                frequency_khz=request.frequency_khz,
                observed_frequency_khz=request.frequency_khz,
                pinned=False,
                runtime_name="noop",
                runtime_version=None,
                **runtime.model_dump(),
                median_ms=0.0,
                mean_ms=0.0,
                std_ms=0.0,
                min_ms=0.0,
                max_ms=0.0,
                p90_ms=0.0,
                raw_runs_ms=[],
                temperature_before_c=None,
                temperature_after_c=None,
                valid=False,
                invalid_reason="no-op runner (queue benchmark)",
                virtual=True,
                started_at=now,
                finished_at=now,
            )

    def forget(self, target: DeviceTarget) -> None:
        """Nothing to close."""

    def close(self) -> None:
        """Nothing to close."""


def default_runner(settings: Settings) -> DeviceRunner:
    """The runner for real phones (and virtual ones)."""
    return AdbRunner(settings)


__all__ = [
    "FACTS_NOT_STORED",
    "AdbRunner",
    "DeviceColumns",
    "DeviceRunner",
    "DeviceTarget",
    "NoopRunner",
    "RunnerError",
    "default_runner",
    "facts_to_columns",
]
