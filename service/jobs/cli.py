"""`latfarm worker`: a worker process (many may share one PostgreSQL; one per SQLite file).

How a stop request is received: the first thing `run` does, before the slow imports and the database
check, is give SIGTERM and SIGINT a Python handler that does nothing and point `signal.set_wakeup_fd` at
a pipe. From then on the process-wide disposition is no longer "die" — whichever thread the kernel picks
(numpy's BLAS threads exist long before `run`), the interpreter's C-level handler writes the signal's
number into the pipe. The worker loop runs in a thread; the main thread only reads that pipe and turns
each stop signal into an ordinary `Worker.stop()` call. So a stop asked for while the worker is still
starting is honoured (graceful, exit 0) instead of killing it, and no Python code runs asynchronously
inside the loop: a signal can neither interrupt it inside a lock (`threading.Event.set` from a handler
can deadlock on the lock an interrupted `Event.wait` holds), nor re-enter a log write, nor break a
database or ADB call. The loop thread writes a 0 byte into the same pipe when it has ended.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
#: Written into the wakeup pipe by the loop thread when the loop has ended (`--once`, idle limit, error).
_LOOP_ENDED = 0


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """A stop signal's Python handler: nothing to do, the wakeup pipe carries it to the main thread."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `latfarm worker`."""
    parser.add_argument(
        "--device-tag",
        action="append",
        default=[],
        metavar="TAG",
        help="only use phones carrying this tag (repeat: all of them)",
    )
    parser.add_argument("--once", action="store_true", help="exit as soon as there is nothing left to do")
    parser.add_argument(
        "--max-idle-seconds", type=float, default=None, help="exit after idling this long (default: never)"
    )
    parser.add_argument("--name", default=None, help="lease owner name (default: host:pid:random)")


def run(args: argparse.Namespace) -> int:
    """Run a worker until SIGTERM/SIGINT (graceful: the running benchmark finishes, the rest is released).

    The stop signals keep their do-nothing handler on return: the process is ending, and a late signal
    must not kill it halfway through its exit.
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _noted)
    # Imported only now, with the signals caught: these imports are most of a worker's start-up time.
    import logging

    from service import migrate
    from service.db import make_engine, make_sessionmaker
    from service.jobs.worker import Worker
    from service.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("latfarm.worker")
    engine = make_engine(settings.database_url)
    try:
        try:
            migrate.check_current(engine)
        except migrate.SchemaNotCurrentError as exc:
            print(f"latfarm worker: {exc}", file=sys.stderr)
            return 2
        worker = Worker(
            make_sessionmaker(engine), settings, device_tags=args.device_tag, name=args.name, train=True
        )
        ended = threading.Event()
        failures: list[BaseException] = []

        def loop() -> None:
            try:
                worker.run(once=args.once, max_idle_seconds=args.max_idle_seconds)
            except BaseException as exc:  # re-raised by the main thread, which owns the exit status
                failures.append(exc)
            finally:
                ended.set()
                os.write(wake_write, bytes([_LOOP_ENDED]))

        thread = threading.Thread(target=loop, name="latfarm-worker-loop")
        thread.start()
        while not ended.is_set():
            for received in os.read(wake_read, 64):
                if received in _STOP_SIGNALS:
                    log.info("signal %d: finishing the running benchmark", received)
                    worker.stop()
        thread.join()
        if failures:
            raise failures[0]
    finally:
        engine.dispose()
    return 0
