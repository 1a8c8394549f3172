"""`latfarm` commands: thin wrappers over the domain functions (argparse, one sub-command each)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from service.settings import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service import migrate
    from service.app import create_app
    from service.db import make_engine

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        if settings.auto_migrate:
            migrate.upgrade(settings.database_url)
        migrate.check_current(engine)
    except migrate.SchemaNotCurrentError as exc:
        print(f"latfarm serve: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    host, port = args.host or settings.host, args.port or settings.port
    if args.workers < 1:
        print("latfarm serve: --workers must be 1 or more", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _serve_processes(args, host, port)
    app = create_app(settings, freeze_heap=True)
    if args.with_worker:
        from service.jobs.worker import attach_background_worker

        attach_background_worker(app, settings)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower())
    return 0


def _serve_processes(args: argparse.Namespace, host: str, port: int) -> int:
    """`--workers N`: N API processes on one port, each with its own listening socket (SO_REUSEPORT).

    Why not uvicorn's own workers: they share one listening socket, and under keep-alive whichever process
    wakes first accepts every waiting connection, so 20 clients could land 18 on one process and 2 on the
    other — throughput fell as clients were added and the tail grew. With a socket per process the kernel
    spreads new connections over the processes.

    The job worker (`--with-worker`) runs in this supervising process only, so phones are driven by one
    worker whatever N is. Several processes share a SQLite file safely: WAL lets readers run beside the
    one writer, writes wait for the lock (`busy_timeout`), and every lease is a `BEGIN IMMEDIATE`.
    SIGINT or SIGTERM stops every API process (each finishes its requests), then the worker.
    """
    import multiprocessing
    import signal
    import threading

    settings = get_settings()
    worker = thread = None
    if args.with_worker:
        from service.db import make_engine, make_sessionmaker
        from service.jobs.worker import Worker

        worker = Worker(make_sessionmaker(make_engine(settings.database_url)), settings)
        thread = threading.Thread(target=worker.run, name="latfarm-worker", daemon=True)
        thread.start()
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_api_process, args=(host, port, settings.log_level.lower()), name=f"api-{i}")
        for i in range(args.workers)
    ]
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGINT)  # uvicorn's graceful shutdown

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for process in processes:
            process.start()
        while not stopping.is_set() and all(p.is_alive() for p in processes):
            stopping.wait(0.5)
        if not stopping.is_set():  # one process died (the port taken, say): stop the others too
            stop(signal.SIGTERM, None)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if worker is not None and thread is not None:
            worker.stop()
            thread.join(timeout=settings.adb_command_timeout_s)
    failed = [p.exitcode for p in processes if p.exitcode not in (0, None)]
    return 1 if failed else 0


def _api_process(host: str, port: int, log_level: str) -> None:
    """One API process of `--workers N`: its own SO_REUSEPORT socket, its app built from the environment."""
    import socket

    import uvicorn

    from service.app import create_app

    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    config = uvicorn.Config(create_app(freeze_heap=True), log_level=log_level)
    # uvicorn re-raises the SIGINT it shut down on; the shutdown was clean, so the exit status is 0.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


def _db(args: argparse.Namespace) -> int:
    from service import migrate

    url = get_settings().database_url
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(url, args.revision or "base")
    else:
        from service.db import make_engine

        engine = make_engine(url)
        print(f"current: {migrate.current_revision(engine)}  head: {migrate.head_revision(url)}")
        engine.dispose()
    return 0


def _token(args: argparse.Namespace) -> int:
    from service.auth import service as tokens
    from service.db import make_engine, make_sessionmaker
    from service.problems import LatfarmError

    engine = make_engine(get_settings().database_url)
    try:
        with make_sessionmaker(engine)() as session:
            if args.action == "create":
                token, secret = tokens.create_token(session, args.name, args.scopes.split(","))
                print(f"created token {token.name!r} with scopes {','.join(token.scopes)}; its secret:")
                print(secret)
            elif args.action == "revoke":
                tokens.revoke_token(session, args.name)
                print(f"revoked {args.name!r}")
            else:
                for token in tokens.list_tokens(session):
                    state = "revoked" if token.revoked_at else "active"
                    print(f"{token.name}\t{','.join(token.scopes)}\t{state}\t{token.created_at:%Y-%m-%d}")
    except LatfarmError as exc:
        print(f"latfarm token: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


AddArguments = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]


# The commands whose options and body live with the code they drive. Each is imported only when its command
# runs (keeps `latfarm --help` fast, and a worker starts without loading the client, the phone or the demo).


def _worker_command() -> tuple[AddArguments, Handler]:
    from service.jobs import cli

    return cli.add_arguments, cli.run


def _phone_command() -> tuple[AddArguments, Handler]:
    from profilers.virtual_phone import cli

    return cli.add_arguments, cli.run


def _profile_command() -> tuple[AddArguments, Handler]:
    from profilers.adb import cli

    return cli.add_arguments, cli.run


def _demo_command() -> tuple[AddArguments, Handler]:
    from service import demo

    return demo.add_arguments, demo.run


def _predict_command() -> tuple[AddArguments, Handler]:
    from service import client_cli

    return client_cli.add_predict_arguments, client_cli.run_predict


def _jobs_command() -> tuple[AddArguments, Handler]:
    from service import client_cli

    return client_cli.add_jobs_arguments, client_cli.run_jobs


def _campaigns_command() -> tuple[AddArguments, Handler]:
    from service import client_cli

    return client_cli.add_campaigns_arguments, client_cli.run_campaigns


#: name → (help, the function that imports the command's module and names its options and its body).
IMPORTED_COMMANDS: dict[str, tuple[str, Callable[[], tuple[AddArguments, Handler]]]] = {
    "worker": ("a worker process that claims tasks and drives phones", _worker_command),
    "phone": ("virtual phones (ADB device servers) on 127.0.0.1", _phone_command),
    "profile": ("one-off profiling of configs on a device, JSON lines out", _profile_command),
    "demo": ("the whole loop on SQLite with virtual phones", _demo_command),
    "predict": ("ask the service's predictor for latencies", _predict_command),
    "jobs": ("list, submit, watch or cancel profiling jobs", _jobs_command),
    "campaigns": ("bootstrap a new device: start, show, watch or cancel campaigns", _campaigns_command),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `latfarm` argument parser with every sub-command.

    With `only`, the other imported commands are listed but their modules are not imported: a worker
    starts (and installs its signal handlers) without loading the client, the phone or the demo.
    """
    parser = argparse.ArgumentParser(prog="latfarm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--with-worker", action="store_true", help="run a worker in-process (SQLite)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes on the one socket (default 1; e.g. one per core)",
    )
    serve.set_defaults(handler=_serve)

    db = commands.add_parser("db", help="database schema migrations")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", default=None)
    db.set_defaults(handler=_db)

    token = commands.add_parser("token", help="API tokens (the secret is printed once, on the last line)")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("--name", required=False, default=None)
    token.add_argument("--scopes", default="read", help="comma-separated: admin,profile,predict,read")
    token.set_defaults(handler=_token)

    for name, (help_text, load) in IMPORTED_COMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        if only is None or name == only:
            add_arguments, handler = load()
            add_arguments(command)
            command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `latfarm` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command if command in IMPORTED_COMMANDS else None).parse_args(argv)
    if args.command == "token" and args.action in ("create", "revoke") and not args.name:
        print("latfarm token: --name is required", file=sys.stderr)
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
