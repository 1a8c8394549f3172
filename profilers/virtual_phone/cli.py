"""Command-line hooks for `latfarm phone`: serve one or several virtual phones until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from profilers.virtual_phone.bench_process import BenchmarkLimits
from profilers.virtual_phone.errors import VirtualPhoneError
from profilers.virtual_phone.faults import FaultSpec, FaultSpecError
from profilers.virtual_phone.phone import VirtualPhone
from profilers.virtual_phone.profile import DEFAULT_PROFILE, list_profiles


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `latfarm phone` options to `parser`."""
    parser.add_argument(
        "--port", type=int, default=5555, help="TCP port of the first phone (0 = any free port)"
    )
    parser.add_argument("--count", type=int, default=1, help="serve N phones on consecutive ports")
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"shipped profile ({', '.join(list_profiles())}) or a JSON path",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory (default: a fresh temp dir; with --count N, phone i uses DIR/phone-i)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--authorized-keys", type=Path, default=None, help="adb_keys-style allow-list of RSA keys"
    )
    sec = parser.add_mutually_exclusive_group()
    sec.add_argument(
        "--insecure",
        dest="insecure",
        action="store_true",
        default=None,
        help="accept any client (the default without --authorized-keys)",
    )
    sec.add_argument(
        "--secure", dest="insecure", action="store_false", help="only keys from --authorized-keys"
    )
    parser.add_argument("--unrooted", action="store_true", help="no su: frequencies cannot be pinned")
    parser.add_argument(
        "--no-quickack",
        action="store_true",
        help="do not set TCP_QUICKACK (only to measure the ~40 ms stall it avoids)",
    )
    limits = parser.add_argument_group("limits of one benchmark command (its child process)")
    defaults = BenchmarkLimits()
    limits.add_argument(
        "--bench-cpu-seconds",
        type=int,
        default=defaults.cpu_seconds,
        help=f"CPU seconds, all threads together (default {defaults.cpu_seconds})",
    )
    limits.add_argument(
        "--bench-memory-mb",
        type=int,
        default=defaults.memory_bytes // 2**20,
        help=f"address space in MiB (default {defaults.memory_bytes // 2**20})",
    )
    limits.add_argument(
        "--bench-max-runs",
        type=int,
        default=defaults.max_runs,
        help=f"timed runs per benchmark (default {defaults.max_runs})",
    )
    faults = parser.add_argument_group("faults (also switchable at run time via STATE_DIR/faults.json)")
    faults.add_argument("--offline", action="store_true", help="refuse connections")
    faults.add_argument(
        "--drop-after-messages",
        type=int,
        default=None,
        metavar="N",
        help="drop a connection after N messages",
    )
    faults.add_argument(
        "--hang-command",
        action="append",
        default=[],
        metavar="TEXT",
        help="commands containing TEXT never answer",
    )
    faults.add_argument("--garbage-benchmark", action="store_true", help="the benchmark prints garbage")
    faults.add_argument(
        "--slow-transfer", type=float, default=None, metavar="BYTES_PER_S", help="throttle push/pull"
    )
    faults.add_argument(
        "--no-space", action="store_true", help="every push fails with 'No space left on device'"
    )


def build_phones(args: argparse.Namespace) -> list[VirtualPhone]:
    """The phones described by parsed arguments (not started)."""
    if args.count < 1:
        raise VirtualPhoneError("--count must be at least 1")
    insecure = args.insecure if args.insecure is not None else args.authorized_keys is None
    if not insecure and args.authorized_keys is None:
        raise VirtualPhoneError("--secure needs --authorized-keys FILE")
    spec = FaultSpec(
        offline=args.offline,
        drop_after_messages=args.drop_after_messages,
        hang_commands=tuple(args.hang_command),
        garbage_benchmark=args.garbage_benchmark,
        slow_transfer_bytes_per_s=args.slow_transfer,
        no_space=args.no_space,
    )
    if min(args.bench_cpu_seconds, args.bench_memory_mb, args.bench_max_runs) < 1:
        raise VirtualPhoneError(
            "--bench-cpu-seconds, --bench-memory-mb and --bench-max-runs must be positive"
        )
    limits = BenchmarkLimits(
        cpu_seconds=args.bench_cpu_seconds,
        memory_bytes=args.bench_memory_mb * 2**20,
        max_runs=args.bench_max_runs,
    )
    phones = []
    for i in range(args.count):
        state = args.state_dir
        if state is not None and args.count > 1:
            state = state / f"phone-{i}"
        port = args.port + i if args.port else 0
        phones.append(
            VirtualPhone(
                profile=args.profile,
                state_dir=state,
                host=args.host,
                port=port,
                authorized_keys=args.authorized_keys,
                insecure=insecure,
                rooted=False if args.unrooted else None,
                faults=spec,
                quickack=not getattr(args, "no_quickack", False),
                bench_limits=limits,
            )
        )
    return phones


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; prints one line per phone once it listens."""
    try:
        phones = build_phones(args)
    except (VirtualPhoneError, FaultSpecError) as exc:
        print(f"error: {exc}")
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    started: list[VirtualPhone] = []
    try:
        for phone in phones:
            try:
                phone.start()
            except OSError as exc:
                print(f"error: cannot listen on {phone.host}:{phone._requested_port}: {exc}")
                return 1
            started.append(phone)
            print(
                f"virtual phone {phone.profile.name} listening on {phone.serial} (state: {phone.state_dir})",
                flush=True,
            )
        stop.wait()
    finally:
        for phone in started:
            phone.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m profilers.virtual_phone`: the same as `latfarm phone`."""
    parser = argparse.ArgumentParser(prog="python -m profilers.virtual_phone", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
