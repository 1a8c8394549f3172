"""What a running shell command sees (`Context`), where it writes (`Output`), and what it may ask of the
shell that runs it (`ShellSession`) — the contract between the interpreter, its builtins and the benchmark
program, kept apart so that none of them imports another to learn it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from profilers.virtual_phone.filesystem import Filesystem
    from profilers.virtual_phone.runtime import PhoneRuntime


class ExitShell(Exception):
    """`exit N` ends the whole command line."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Output:
    """Where a command writes: ordered (fd, bytes) events, so v1 shells can merge and v2 can frame them."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bytes]] = []

    def write(self, fd: int, data: bytes) -> None:
        """Append `data` to stream `fd` (1 stdout, 2 stderr)."""
        if data:
            self.events.append((fd, data))

    def stdout(self) -> bytes:
        """Everything written to stdout."""
        return b"".join(d for fd, d in self.events if fd == 1)


@dataclass
class Context:
    """What a running command sees."""

    stdin: bytes
    out: Callable[[bytes], None]
    err: Callable[[bytes], None]
    root: bool
    affinity: set[int] | None
    name: str
    cwd: str = "/"


class ShellSession(Protocol):
    """The part of a shell session a builtin uses (`shell.Shell` is the one implementation)."""

    rt: PhoneRuntime
    fs: Filesystem
    cwd: str
    status: int

    def path(self, p: str) -> str:
        """`p` made absolute against the session's cwd (not checked to exist)."""
        ...

    async def execute(self, ctx: Context, args: list[str]) -> int:
        """Run one command (a builtin or a file) with already expanded arguments."""
        ...

    async def run_nested(self, ctx: Context, line: str, *, root: bool) -> int:
        """Run `line` in a child shell sharing this one's cwd."""
        ...


Builtin = Callable[[ShellSession, Context, list[str]], Awaitable[int]]
