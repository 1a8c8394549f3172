"""`VirtualPhone`: one virtual phone (state dir, SoC, filesystem, ADB server) served from its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from profilers.virtual_phone.bench_process import BenchmarkLimits
from profilers.virtual_phone.errors import PhoneStateError
from profilers.virtual_phone.faults import FaultControl, FaultSpec
from profilers.virtual_phone.profile import DEFAULT_PROFILE, Profile, load_profile, profile_from_dict
from profilers.virtual_phone.runtime import PhoneRuntime
from profilers.virtual_phone.services import open_service
from profilers.virtual_phone.soc import Soc
from profilers.virtual_phone.transport import AuthPolicy, DeviceServer, ServiceRunner, Stream


class VirtualPhone:
    """A virtual phone serving the device side of ADB on host:port from its own thread and event loop."""

    def __init__(
        self,
        profile: str | Path | Profile | dict[str, Any] = DEFAULT_PROFILE,
        state_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        authorized_keys: Path | None = None,
        insecure: bool = True,
        rooted: bool | None = None,
        faults: FaultSpec | None = None,
        quickack: bool = True,
        bench_limits: BenchmarkLimits | None = None,
    ) -> None:
        if isinstance(profile, Profile):
            self.profile = profile
        elif isinstance(profile, dict):
            self.profile = profile_from_dict(profile)
        else:
            self.profile = load_profile(profile)
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix=f"latfarm-{self.profile.name}-")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.fault_control = FaultControl(self.state_dir, faults or FaultSpec())
        self.runtime = PhoneRuntime(
            self.profile,
            self.state_dir,
            self.profile.rooted if rooted is None else rooted,
            self.fault_control,
            bench_limits,
        )
        self.auth = AuthPolicy(insecure=insecure, authorized_keys=authorized_keys)
        self.quickack = quickack
        self._server: DeviceServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> VirtualPhone:
        """Start serving in a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise PhoneStateError("phone already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"virtual-phone-{self.profile.name}", daemon=True
        )
        self._thread.start()
        rt = self.runtime

        def services(stream: Stream, service: str) -> ServiceRunner | None:
            return open_service(rt, stream, service)

        self._server = DeviceServer(services, rt.banner, self.auth, self.fault_control, self.quickack)
        try:
            self._port = asyncio.run_coroutine_threadsafe(
                self._server.start(self.host, self._requested_port), loop
            ).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close all connections and the server, and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._server is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._server.close(), loop)
            with contextlib.suppress(Exception):  # shutting down anyway
                fut.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> VirtualPhone:
        return self.start() if self._thread is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port (after `start()`)."""
        if self._port is None:
            raise PhoneStateError("phone not started: call start() first")
        return self._port

    @property
    def serial(self) -> str:
        """`host:port`, the serial adb and latfarm use for this phone."""
        return f"{self.host}:{self.port}"

    @property
    def soc(self) -> Soc:
        """The simulated SoC (frequencies, temperature)."""
        return self.runtime.soc

    @property
    def rootfs(self) -> Path:
        """Host directory behind the phone's `/`."""
        return self.runtime.fs.root

    # -- work in progress -----------------------------------------------------------------------------------
    @property
    def services_running(self) -> int:
        """Shell commands, file transfers and benchmarks running now (0 when the phone is idle)."""
        return self._server.services_running if self._server is not None else 0

    def wait_benchmark_pids(self, count: int, timeout: float = 10.0) -> set[int] | None:
        """Wait until exactly `count` benchmark child processes run; their pids (None on timeout)."""
        return self.runtime.wait_benchmark_pids(count, timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing runs on the phone (e.g. after a client left); False if busy at `timeout`."""
        return self._server.wait_idle(timeout) if self._server is not None else True

    # -- faults and heat ------------------------------------------------------------------------------------
    def set_fault(self, **changes: Any) -> FaultSpec:
        """Switch faults at run time (written to `state_dir/faults.json`), e.g. `set_fault(offline=True)`."""
        return self.fault_control.set(**changes)

    def clear_faults(self) -> None:
        """Back to the faults given to the constructor."""
        self.fault_control.clear()

    def set_temperature(self, celsius: float) -> None:
        """Force the die temperature, e.g. above the trip point to provoke throttling."""
        self.runtime.soc.set_temperature(celsius)

    def set_heat_rate(self, c_per_s: float) -> None:
        """How many °C per second full load adds (the profile's default keeps campaigns realistic)."""
        self.runtime.soc.set_heat_rate(c_per_s)

    # -- benchmark log --------------------------------------------------------------------------------------
    def benchmark_runs(self) -> list[dict[str, Any]]:
        """Every benchmark run recorded in this phone's state dir (also those of other processes)."""
        if not self.runtime.bench_log.exists():
            return []
        runs = []
        for line in self.runtime.bench_log.read_text().splitlines():
            if line.strip():
                try:
                    runs.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return runs

    def benchmark_intervals(self) -> list[tuple[float, float]]:
        """(start, end) wall-clock times (time.time()) of every benchmark run, in start order."""
        return sorted((float(r["start"]), float(r["end"])) for r in self.benchmark_runs())

    def count_overlapping_benchmarks(self) -> int:
        """Number of pairs of benchmark runs whose intervals overlap (0 when runs were serialised)."""
        return count_overlaps(self.benchmark_intervals())


def count_overlaps(intervals: list[tuple[float, float]]) -> int:
    """Pairs (i < j) of intervals with start_j < end_i, after sorting by start."""
    ordered = sorted(intervals)
    pairs = 0
    for i, (_s, e) in enumerate(ordered):
        for s2, _e2 in ordered[i + 1 :]:
            if s2 >= e:
                break
            pairs += 1
    return pairs
