"""The device side a worker drives: probe a phone, measure a batch on one pin.

`DeviceRunner` is the seam between the queue and the phones: `AdbRunner` speaks ADB through
`profilers.adb` (one session and one profiler — with its model push cache — per phone and runtime,
reconnecting after any error); `NoopRunner` answers at once, so the queue can be benchmarked without
phones. Errors of the device side reach the worker as one type, `RunnerError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.db import utcnow
from service.settings import Settings


class RunnerError(Exception):
    """The phone failed a probe or a measurement (connection, timeout, benchmark error, refused push)."""


@dataclass(frozen=True)
class DeviceTarget:
    """Where a phone is: its id in the registry and how to reach it."""

    device_id: int
    serial: str
    transport: str
    address: str | None


@dataclass(frozen=True)
class BatchSpec:
    """What a batch shares: one pin and one runtime."""

    cluster: str
    frequency_khz: int | None
    runs: int
    warmup: int
    threads: int
    passes: int = 1


@dataclass(frozen=True)
class TaskRequest:
    """One config to measure."""

    task_id: int
    family: str
    config: dict[str, Any]


class DeviceRunner(Protocol):
    """Probe and measure on phones; both raise `RunnerError` when the phone fails."""

    def probe(self, target: DeviceTarget) -> dict[str, Any]:
        """The phone's facts as `device` columns (model, clusters, rooted, thermal_zones, …)."""
        ...

    def measure(
        self, target: DeviceTarget, batch: BatchSpec, tasks: Sequence[TaskRequest]
    ) -> Iterator[dict[str, Any]]:
        """One measurement record (dict of measurement fields) per task, in order, as each finishes."""
        ...

    def forget(self, target: DeviceTarget) -> None:
        """Drop any connection to the phone (after an error, or when its lease is given back)."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


def facts_to_columns(facts: Any) -> dict[str, Any]:
    """`profilers.adb.DeviceFacts` → the `device` columns that hold probed facts."""
    data = facts.model_dump(mode="json")
    return {
        "model": data["model"] or None,
        "manufacturer": data["manufacturer"] or None,
        "board": data["board"] or None,
        "soc": data["soc"] or None,
        "abi": data["abi"] or None,
        "android_version": data["android_version"] or None,
        "clusters": data["clusters"],
        "gpu_frequencies_khz": data["gpu_frequencies_khz"],
        "rooted": data["rooted"],
        "thermal_zones": data["thermal_zones"],
        "is_virtual": data["is_virtual"],
    }


class AdbRunner:
    """Phones over ADB through `profilers.adb`, configured by the service settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: dict[int, Any] = {}
        self._profilers: dict[tuple[int, int, int, int, int], Any] = {}

    def _session(self, target: DeviceTarget) -> Any:
        from profilers.adb import DeviceSession

        session = self._sessions.get(target.device_id)
        if session is None:
            session = DeviceSession.connect(
                target.address or target.serial,
                transport=target.transport,  # type: ignore[arg-type]
                key_path=self.settings.adb_key_path,
                connect_timeout_s=self.settings.adb_connect_timeout_s,
                command_timeout_s=self.settings.adb_command_timeout_s,
            )
            self._sessions[target.device_id] = session
        return session

    def probe(self, target: DeviceTarget) -> dict[str, Any]:
        """Connect (if needed) and read the phone's facts."""
        from profilers.adb import ProfilerError, probe

        try:
            return facts_to_columns(probe(self._session(target)))
        except ProfilerError as exc:
            self.forget(target)
            raise RunnerError(str(exc)) from exc

    def measure(
        self, target: DeviceTarget, batch: BatchSpec, tasks: Sequence[TaskRequest]
    ) -> Iterator[dict[str, Any]]:
        """Benchmark the batch under one pin; closing the iterator early restores the phone's governor."""
        from profilers.adb import ProfileRequest, ProfilerError

        try:
            profiler = self._profiler(target, batch)
            requests = [
                ProfileRequest(
                    family=t.family, config=t.config, cluster=batch.cluster, frequency_khz=batch.frequency_khz
                )
                for t in tasks
            ]
            # closing(): when the worker stops early, the profiler's pin context exits and restores.
            with contextlib.closing(profiler.measure(requests)) as records:
                for record in records:
                    yield record.model_dump()
        except ProfilerError as exc:
            self.forget(target)
            raise RunnerError(str(exc)) from exc

    def _profiler(self, target: DeviceTarget, batch: BatchSpec) -> Any:
        from profilers.adb import Profiler, RuntimeSettings

        key = (target.device_id, batch.runs, batch.warmup, batch.threads, batch.passes)
        profiler = self._profilers.get(key)
        if profiler is None:
            profiler = Profiler(
                self._session(target),
                runtime=RuntimeSettings(
                    runs=batch.runs, warmup=batch.warmup, threads=batch.threads, passes=batch.passes
                ),
                benchmark_binary=self.settings.benchmark_binary,
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

    def __init__(self, facts: dict[str, Any] | None = None) -> None:
        self.facts = facts or {}

    def probe(self, target: DeviceTarget) -> dict[str, Any]:
        """The facts given to the constructor."""
        return dict(self.facts)

    def measure(
        self, target: DeviceTarget, batch: BatchSpec, tasks: Sequence[TaskRequest]
    ) -> Iterator[dict[str, Any]]:
        """One placeholder record per task."""
        for _ in tasks:
            now = utcnow()
            yield {
                "observed_frequency_khz": batch.frequency_khz,
                "pinned": False,
                "runtime_name": "noop",
                "runtime_version": None,
                "runs": batch.runs,
                "median_ms": 0.0,
                "mean_ms": 0.0,
                "std_ms": 0.0,
                "min_ms": 0.0,
                "max_ms": 0.0,
                "p90_ms": 0.0,
                "raw_runs_ms": [],
                "valid": False,
                "invalid_reason": "no-op runner (queue benchmark)",
                "virtual": True,
                "started_at": now,
                "finished_at": now,
            }

    def forget(self, target: DeviceTarget) -> None:
        """Nothing to close."""

    def close(self) -> None:
        """Nothing to close."""


def default_runner(settings: Settings) -> DeviceRunner:
    """The runner a worker uses for real phones (and virtual ones)."""
    return AdbRunner(settings)


__all__ = [
    "AdbRunner",
    "BatchSpec",
    "DeviceRunner",
    "DeviceTarget",
    "NoopRunner",
    "RunnerError",
    "TaskRequest",
    "default_runner",
    "facts_to_columns",
]
