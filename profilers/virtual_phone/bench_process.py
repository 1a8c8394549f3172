"""The benchmark's child process: one per benchmark command, confined, killed when its command ends.

Why a process. A benchmark is the one command of a virtual phone that burns real host CPU and memory; in a
thread of the phone it could not be stopped (onnxruntime does not check for cancellation), nor limited. So
each benchmark runs in a child forked from a `multiprocessing` forkserver that has onnxruntime and numpy
already imported (a start costs milliseconds, not an interpreter start-up). The child

- sets its own limits first: `RLIMIT_CPU` (CPU seconds, all threads together: SIGXCPU ends it),
  `RLIMIT_AS` (address space: allocations beyond it fail), no core files, no file it may grow (when a host
  profile is asked for: onnxruntime's profile file only, up to `profile_file_bytes`, deleted once read);
- runs with its working directory in an empty scratch directory of the phone (model_policy.py already refused
  models that name external files; this is the second wall);
- uses at most the phone's CPU count of intra-op threads.

Protocol (child → parent, over a one-way pipe, one `send_bytes` per message, a tag byte then the payload):

    b"S" <d session creation s>     the session is ready (host seconds)
    b"F" <d first run s>            the first (untimed-for-the-statistics) run
    b"P" <utf-8 JSON>               with `host_profile_runs` > 0: the per-node host profile, measured by a
                                    second session (graph optimisations off, so nodes keep the ONNX graph's
                                    names) with onnxruntime profiling over that many runs after a warm-up:
                                    {"nodes": [[node name, op type, mean µs per run], ...] in run order,
                                     "peak_bytes": the child's peak resident bytes}
    b"R" <d cpu s><d peak bytes><d run s>*   a batch of timed runs (~every 20 ms), with the child's CPU
                                    seconds since the first timed run and its peak resident bytes so far
    b"D"                            done (times mode; in duration mode the parent stops the child itself)
    b"E" <utf-8 message>            the model failed to load; b"X" <message>: a run failed

The parent (bench.py) scales each run to the phone's frequency as it arrives and decides when a duration-mode
benchmark has run long enough; whatever happens — the command's stream closed, the phone stopping, an error —
it kills the child (`kill`, idempotent), so no benchmark outlives its command.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.popen_forkserver
import multiprocessing.reduction
import multiprocessing.util
import os
import resource
import signal
import struct
import threading
import time
from array import array
from dataclasses import dataclass
from multiprocessing import spawn
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from profilers.virtual_phone.errors import one_line

BATCH_RUNS = 512
BATCH_SECONDS = 0.02
_DOUBLE = struct.Struct("<d")
_BATCH_HEAD = struct.Struct("<dd")
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_context: Any = None


@dataclass(frozen=True)
class BenchmarkLimits:
    """What one benchmark command may use on the host (each a hard limit of its child process)."""

    cpu_seconds: int = 300
    """CPU time of the child, all threads together; beyond it the benchmark fails ("CPU time limit")."""
    memory_bytes: int = 4 * 1024**3
    """Address space of the child (RLIMIT_AS); a model needing more fails to load or run."""
    max_runs: int = 100_000
    """Timed runs one benchmark records at most: `-r` above it is refused, a duration-mode run stops there."""
    profile_file_bytes: int = 64 * 1024**2
    """The largest file the child may write: onnxruntime's profile when a host profile is asked for."""


@dataclass(frozen=True)
class ChildSpec:
    """What the child runs: pickled to it by the forkserver."""

    model_bytes: bytes
    intra_threads: int
    inter_threads: int
    seed: int | None
    repeats: int | None  # None: duration mode, run until stopped; 0: no timed runs
    limits: BenchmarkLimits
    workdir: str
    host_profile_runs: int = 0


class BenchmarkChild:
    """One benchmark child: `start` and `receive` from a worker thread, `kill` from anywhere, `close` last."""

    def __init__(self, spec: ChildSpec) -> None:
        self._spec = spec
        self._lock = threading.Lock()
        self._killed = False
        self._stopped = threading.Event()
        self._process: Any = None
        self._conn: Connection | None = None

    def start(self) -> bool:
        """Start the child; False when it was killed before it could start."""
        ctx = _forkserver()
        with self._lock:
            if self._killed:
                return False
            self._conn, child_end = ctx.Pipe(duplex=False)
            self._process = _ChildProcess(target=_child_main, args=(child_end, self._spec), daemon=True)
            self._process.start()
        child_end.close()  # the parent keeps only the read end: EOF once the child is gone
        return True

    @property
    def pid(self) -> int | None:
        """The child's process id (None before it started)."""
        return None if self._process is None else self._process.pid

    def receive(self) -> tuple[bytes, bytes] | None:
        """The next (tag, payload), or None once the child has exited or was killed."""
        if self._conn is None:
            return None
        try:
            message = self._conn.recv_bytes()
        except (EOFError, OSError):
            return None
        return message[:1], message[1:]

    def exit_reason(self) -> str:
        """Why the child ended without saying so itself (after `receive` returned None)."""
        if self._process is None or self._killed:
            return "benchmark stopped"
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code == -signal.SIGXCPU:  # RLIMIT_CPU reached
            return "CPU time limit exceeded"
        if code is not None and code < 0:
            return f"benchmark process killed by signal {-code}"
        return f"benchmark process exited with status {code}"

    def kill(self) -> None:
        """End the child now (no-op once it has exited); its reader then sees EOF. Safe from any thread."""
        self._stopped.set()
        with self._lock:
            self._killed = True
            if self._process is not None and self._process.exitcode is None:
                with contextlib.suppress(OSError):
                    self._process.kill()

    def wait_killed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True as soon as `kill` was called (a paced run must stop)."""
        return self._stopped.wait(timeout)

    def close(self) -> None:
        """Kill, reap and close the pipe (by the thread that reads it, when it is done)."""
        self.kill()
        if self._process is not None:
            self._process.join(timeout=5)
        if self._conn is not None:
            self._conn.close()


def _forkserver() -> Any:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "onnxruntime", __name__])
        _context = ctx
    return _context


class _ChildPopen(multiprocessing.popen_forkserver.Popen):
    """The forkserver's launch, minus re-importing the parent's main script in every child.

    multiprocessing re-runs the parent's `__main__` file (a console script, pytest, a bench script) in each
    child, so that functions defined there can be unpickled; the benchmark child needs nothing of it, and
    that import cost ~100 ms per benchmark. (Preloading "__main__" in the forkserver does not help on 3.11:
    it looks up a key `get_preparation_data` never sets.) The rest is `popen_forkserver.Popen._launch`.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        # The same objects popen_forkserver reaches through its own imports of these modules.
        multiprocessing.context.set_spawning_popen(self)
        try:
            multiprocessing.reduction.dump(prep_data, buf)
            multiprocessing.reduction.dump(process_obj, buf)
        finally:
            multiprocessing.context.set_spawning_popen(None)
        # `_fds` is set by popen_forkserver.Popen.__init__ (filled by duplicate_for_child); typeshed omits it.
        fds: list[int] = self._fds  # type: ignore[attr-defined]
        self.sentinel, w = multiprocessing.forkserver.connect_to_new_process(fds)
        parent_w = os.dup(w)  # the child's sentinel of this parent, as in the original
        self.finalizer = multiprocessing.util.Finalize(
            self,
            multiprocessing.util.close_fds,  # type: ignore[attr-defined]  # private helper; not in typeshed
            (parent_w, self.sentinel),
        )
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = int(multiprocessing.forkserver.read_signed(self.sentinel))


class _ChildProcess(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _ChildPopen:  # multiprocessing's hook name
        return _ChildPopen(process_obj)


# --- the child ------------------------------------------------------------------------------------------


def _confine(spec: ChildSpec) -> None:
    """Limits first, then the scratch directory: nothing of the model runs before them."""
    cpu = max(1, spec.limits.cpu_seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (spec.limits.memory_bytes, spec.limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    fsize = spec.limits.profile_file_bytes if spec.host_profile_runs > 0 else 0
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    os.chdir(spec.workdir)
    # Whatever onnxruntime prints goes nowhere (and can never hit RLIMIT_FSIZE on a redirected log file):
    # everything the parent needs comes over the pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _inputs(session: Any, seed: int | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = _DTYPES.get(inp.type)
        if dtype is None:
            raise ValueError(f"input {inp.name}: unsupported type {inp.type}")
        if dtype is np.bool_:
            feeds[inp.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[inp.name] = rng.integers(0, 8, size=shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _child_main(conn: Connection, spec: ChildSpec) -> None:
    try:
        _confine(spec)
        _run(conn, spec)
    except (BrokenPipeError, EOFError):
        pass  # the parent stopped listening: it is killing us anyway
    finally:
        conn.close()


def _run(conn: Connection, spec: ChildSpec) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = spec.intra_threads
    so.inter_op_num_threads = spec.inter_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.load_model_format", "ONNX")  # never the ORT flatbuffer format
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(spec.model_bytes, so, providers=["CPUExecutionProvider"])
        feeds = _inputs(session, spec.seed)
    except Exception as exc:  # onnxruntime raises its own exception types for invalid models
        conn.send_bytes(b"E" + one_line(exc, 500).encode())
        return
    conn.send_bytes(b"S" + _DOUBLE.pack(time.perf_counter() - t0))
    try:
        t0 = time.perf_counter()
        session.run(None, feeds)
        conn.send_bytes(b"F" + _DOUBLE.pack(time.perf_counter() - t0))
        if spec.host_profile_runs > 0:
            nodes = _host_profile(spec, feeds)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            conn.send_bytes(b"P" + json.dumps({"nodes": nodes, "peak_bytes": peak}).encode())
        cpu0 = time.process_time()
        done, batch, flushed = 0, array("d"), time.perf_counter()
        while spec.repeats is None or done < spec.repeats:
            t0 = time.perf_counter()
            session.run(None, feeds)
            now = time.perf_counter()
            batch.append(now - t0)
            done += 1
            if len(batch) >= BATCH_RUNS or now - flushed >= BATCH_SECONDS:
                _send_batch(conn, batch, cpu0)
                batch, flushed = array("d"), now
        if batch:
            _send_batch(conn, batch, cpu0)
    except Exception as exc:
        conn.send_bytes(b"X" + one_line(exc, 500).encode())
        return
    conn.send_bytes(b"D")


def _host_profile(spec: ChildSpec, feeds: dict[str, np.ndarray]) -> list[list[object]]:
    """Per-node mean host µs over `host_profile_runs` profiled runs (after one warm-up), in run order."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = spec.intra_threads
    so.inter_op_num_threads = spec.inter_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = f"host_profile_{os.getpid()}"
    session = ort.InferenceSession(spec.model_bytes, so, providers=["CPUExecutionProvider"])
    for _ in range(spec.host_profile_runs + 1):
        session.run(None, feeds)
    path = session.end_profiling()
    try:
        with open(path) as fh:
            events = json.load(fh)
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
    seen: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        seen.setdefault(node, []).append(float(event.get("dur", 0)))
        ops[node] = str(event.get("args", {}).get("op_name", ""))
    # the first occurrence of each node is the warm-up run
    return [[node, ops[node], sum(d[1:]) / len(d[1:]) if len(d) > 1 else d[0]] for node, d in seen.items()]


def _send_batch(conn: Connection, batch: array[float], cpu0: float) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    conn.send_bytes(b"R" + _BATCH_HEAD.pack(time.process_time() - cpu0, peak) + batch.tobytes())


def workdir_for(state_dir: Path) -> Path:
    """The empty scratch directory the benchmark children of a phone run in."""
    path = state_dir / "bench-cwd"
    path.mkdir(parents=True, exist_ok=True)
    return path
