"""`PhoneRuntime`: the state one phone's services, shell and benchmark program share.

The runtime sits below everything that runs on the phone: services (shell, sync), the shell and the
benchmark program take it as an argument and it imports none of them, so the phone's parts form layers
(transport → services → shell → bench → runtime) instead of a circle.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from profilers.virtual_phone.bench_process import BenchmarkLimits, workdir_for
from profilers.virtual_phone.faults import FaultControl
from profilers.virtual_phone.filesystem import Filesystem
from profilers.virtual_phone.profile import Profile
from profilers.virtual_phone.soc import Soc

BENCH_LOG = "bench_log.jsonl"
ROOTFS = "rootfs"


class PhoneRuntime:
    """What the services and the shell of one phone share: profile, SoC, filesystem, faults, benchmark log."""

    def __init__(
        self,
        profile: Profile,
        state_dir: Path,
        rooted: bool,
        faults: FaultControl,
        bench_limits: BenchmarkLimits | None = None,
    ) -> None:
        self.profile = profile
        self.state_dir = state_dir
        self.rooted = rooted
        self.faults = faults
        self.soc = Soc(profile)
        self.fs = Filesystem(state_dir / ROOTFS, self.soc, profile.storage_free_bytes)
        self.serialno = "LF" + hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:10].upper()
        self.bench_log = state_dir / BENCH_LOG
        self.bench_limits = bench_limits or BenchmarkLimits()
        self.bench_workdir = workdir_for(state_dir)
        self._benchmarks = threading.Condition()
        self._benchmark_pids: set[int] = set()

    def benchmark_started(self, pid: int) -> None:
        """A benchmark child process runs (see `wait_benchmark_pids`)."""
        with self._benchmarks:
            self._benchmark_pids.add(pid)
            self._benchmarks.notify_all()

    def benchmark_ended(self, pid: int) -> None:
        """A benchmark child process is gone (killed or exited, and reaped)."""
        with self._benchmarks:
            self._benchmark_pids.discard(pid)
            self._benchmarks.notify_all()

    def wait_benchmark_pids(self, count: int, timeout: float) -> set[int] | None:
        """The pids of the benchmark children once exactly `count` run; None if not within `timeout`."""
        with self._benchmarks:
            if self._benchmarks.wait_for(lambda: len(self._benchmark_pids) == count, timeout):
                return set(self._benchmark_pids)
            return None

    def props(self) -> dict[str, str]:
        """System properties as `getprop` shows them."""
        props = dict(self.profile.props)
        props.update(
            {
                "ro.serialno": self.serialno,
                "ro.boot.serialno": self.serialno,
                "ro.debuggable": "1" if self.rooted else "0",
                "ro.secure": "1",
                "ro.latfarm.virtual": "1",
                "ro.latfarm.profile": self.profile.name,
            }
        )
        return props

    def banner(self) -> bytes:
        """The CNXN payload: device identity and features (no stat_v2/ls_v2/delayed_ack, see transport)."""
        p = self.profile.props
        return (
            f"device::ro.product.name={p.get('ro.product.name', self.profile.name)};"
            f"ro.product.model={p.get('ro.product.model', self.profile.name)};"
            f"ro.product.device={p.get('ro.product.device', self.profile.name)};"
            "features=shell_v2,cmd"
        ).encode()

    def record_benchmark(
        self, start: float, end: float, model: str, cluster: int | str, garbage: bool = False
    ) -> None:
        """Persist one benchmark's wall interval (for the job queue's overlap checks).

        `cluster` is a CPU cluster's index, or an accelerator unit's name (`gpu`, `npu`) logged as it is.
        """
        record: dict[str, Any] = {
            "start": start,
            "end": end,
            "model": model,
            "cluster": cluster if isinstance(cluster, str) else self.profile.clusters[cluster].name,
        }
        if garbage:
            record["garbage"] = True
        append_interval(self.bench_log, record)


def append_interval(path: os.PathLike[str] | str, record: dict[str, object]) -> None:
    """Append one JSON line with O_APPEND (one small write: atomic across processes)."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
