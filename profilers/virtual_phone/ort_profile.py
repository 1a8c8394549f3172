"""onnxruntime's profile file, as `onnxruntime_perf_test -p PREFIX` writes it: `PREFIX_<date_time>.json`.

The format is onnxruntime's chrome-trace JSON: a list of complete events (`"ph": "X"`, `ts` and `dur` in µs
from the session's start). Session events (`model_loading_array`, `session_initialization`, then per run
`model_run` and `SequentialExecutor::Execute`) and one `"cat": "Node"` event per executed node per run, named
`<node name>_kernel_time`, with `args.op_name` and `args.provider`. The virtual phone's accelerator runs write
one Node event per *dispatched kernel* (a real QNN/NNAPI EP shows its whole partition as one node; the
per-kernel view is what a GPU profiler such as Snapdragon Profiler would show) and add `args.kernel` (the
kernel variant), `args.unit` and `args.virtual` = "1" (the numbers are the cost model's); a CPU fallback has
provider `CPUExecutionProvider`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodeEvent:
    """One node (or kernel) of one run."""

    name: str
    op_type: str
    provider: str
    seconds: float
    kernel: str = ""
    unit: str = ""


def profile_path(prefix: str, now: float | None = None) -> str:
    """`PREFIX_<YYYY-MM-DD_HH-MM-SS>.json` (onnxruntime's naming)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(time.time() if now is None else now))
    return f"{prefix}_{stamp}.json"


def profile_json(creation_s: float, runs: list[list[NodeEvent]]) -> bytes:
    """The profile file's bytes: session events, then each run's node events back to back."""
    pid = os.getpid()
    events: list[dict[str, Any]] = []

    def add(cat: str, name: str, ts: float, dur: float, args: dict[str, Any]) -> None:
        events.append(
            {
                "cat": cat,
                "pid": pid,
                "tid": pid,
                "dur": round(dur),
                "ts": round(ts),
                "ph": "X",
                "name": name,
                "args": args,
            }
        )

    creation_us = creation_s * 1e6
    add("Session", "model_loading_array", 3, creation_us * 0.1, {})
    add("Session", "session_initialization", 3 + creation_us * 0.1, creation_us * 0.9, {})
    ts = 3 + creation_us + 50
    for run in runs:
        total = sum(e.seconds for e in run) * 1e6
        add("Session", "SequentialExecutor::Execute", ts, total, {})
        node_ts = ts
        for index, e in enumerate(run):
            args: dict[str, Any] = {"op_name": e.op_type, "provider": e.provider, "node_index": str(index)}
            if e.kernel:
                args["kernel"] = e.kernel
            if e.unit:
                args["unit"] = e.unit
                args["virtual"] = "1"  # priced by the virtual phone's accelerator cost model
            add("Node", f"{e.name}_kernel_time", node_ts, e.seconds * 1e6, args)
            node_ts += e.seconds * 1e6
        add("Session", "model_run", ts, total + 2, {})
        ts += total + 10
    return ("[\n" + ",\n".join(json.dumps(e) for e in events) + "\n]\n").encode()
