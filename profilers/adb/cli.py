"""``latfarm profile``: measure configs on one phone without the service, one JSON line per measurement.

    latfarm profile --device 127.0.0.1:5555 --family conv \\
        --config '{"kernel": 3, "cin": 16, "cout": 16, "height": 56, "width": 56}' \\
        --frequency 787200 --frequency 2995200 --unit big --runs 10 --warmup 2
    latfarm profile --device 127.0.0.1:5555 --family conv --config '{…}' \
        --unit gpu --precision fp16 --benchmark tflite --layers --frequency 818000

`--unit` is a CPU cluster (little/mid/big, clusterN, policyN), `gpu` or `npu` (`--cluster` is its old
name); `--frequency` is that unit's clock in kHz. On a phone that is not virtual the programs must be given
(`--binary` onnxruntime_perf_test, `--tflite-binary` benchmark_model): the virtual phone's stand-ins are
never pushed to a real phone.

Exit status: 0 all measured; 2 bad arguments or a run the phone cannot make — a unit it lacks, a
precision or option the unit does not take, a program that is not configured (nothing measured); 1 a
device error (records already printed stay valid; the error goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from profilers.adb.units import BENCHMARK_PROGRAMS, PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``latfarm profile``."""
    parser.add_argument(
        "--device", required=True, help="HOST:PORT of an adb-over-TCP phone (or a USB serial)"
    )
    parser.add_argument("--transport", choices=["tcp", "usb"], default="tcp")
    parser.add_argument("--family", required=True, help="block family: sr_block, conv, mbconv")
    parser.add_argument(
        "--config", action="append", required=True, metavar="JSON", help="a config as JSON (repeatable)"
    )
    parser.add_argument(
        "--frequency",
        action="append",
        type=int,
        default=[],
        metavar="KHZ",
        help="pin the unit to this clock in kHz (repeatable; none: measure unpinned)",
    )
    parser.add_argument(
        "--unit",
        "--cluster",
        dest="unit",
        default="big",
        help="compute unit: a CPU cluster (little/mid/big, clusterN, policyN), gpu or npu (default big)",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="numeric precision (default fp32)"
    )
    parser.add_argument(
        "--benchmark",
        choices=BENCHMARK_PROGRAMS,
        default="onnxruntime",
        help="benchmark program: onnxruntime (onnxruntime_perf_test) or tflite (benchmark_model)",
    )
    parser.add_argument(
        "--accelerator",
        default=None,
        help="the program's accelerator option: an onnxruntime execution provider (cpu, xnnpack, qnn, "
        "nnapi) or a TFLite delegate (xnnpack, cpu, gpu, nnapi); default: the unit's first",
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="record per-layer times (taken in the warm-up, not the timed runs)",
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--passes",
        type=int,
        default=1,
        help="split the runs into this many passes through the configs of a frequency (default 1)",
    )
    parser.add_argument(
        "--key", type=Path, default=None, help="ADB RSA key (default $LATFARM_STATE_DIR/adbkey)"
    )
    parser.add_argument(
        "--binary",
        type=Path,
        default=None,
        help="onnxruntime_perf_test to push (default: the virtual phone's stand-in; virtual phones only)",
    )
    parser.add_argument(
        "--tflite-binary",
        type=Path,
        default=None,
        help="TFLite benchmark_model to push (default: the virtual phone's stand-in; virtual phones only)",
    )
    parser.add_argument("--cooldown-celsius", type=float, default=45.0)
    parser.add_argument("--cooldown-timeout", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="per-command timeout")


def run(args: argparse.Namespace) -> int:
    """Measure every (config, frequency) pair and print one JSON line per measurement."""
    from pydantic import ValidationError

    from profilers.adb.errors import ProfilerError, UnsupportedRunError
    from profilers.adb.profiler import Profiler, ProfileRequest
    from profilers.adb.runtime import RuntimeSettings
    from profilers.adb.session import DeviceSession

    try:
        configs = [json.loads(text) for text in args.config]
        runtime = RuntimeSettings(
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            passes=args.passes,
            benchmark=args.benchmark,
            precision=args.precision,
            accelerator=args.accelerator,
            layer_profile=args.layers,
        )
        frequencies = args.frequency or [None]
        requests = [
            ProfileRequest(family=args.family, config=config, cluster=args.unit, frequency_khz=khz)
            for config in configs
            for khz in frequencies
        ]
    except json.JSONDecodeError as exc:
        print(f"latfarm profile: --config is not valid JSON: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "request"
            print(f"latfarm profile: {where}: {err['msg']}", file=sys.stderr)
        return 2
    try:
        session = DeviceSession.connect(
            args.device,
            args.transport,
            key_path=args.key,
            command_timeout_s=args.timeout,
        )
        with session:
            profiler = Profiler(
                session,
                runtime,
                benchmark_binary=args.binary,
                tflite_benchmark_binary=args.tflite_binary,
                cooldown_celsius=args.cooldown_celsius,
                cooldown_timeout_s=args.cooldown_timeout,
            )
            for record in profiler.measure(requests):
                print(record.model_dump_json(), flush=True)
    except UnsupportedRunError as exc:  # refused before anything ran
        print(f"latfarm profile: {exc}", file=sys.stderr)
        return 2
    except ProfilerError as exc:
        print(f"latfarm profile: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
