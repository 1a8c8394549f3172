"""The services a stream can open: `shell:` (v1, raw), `shell,v2,…:` (framed, exit status), `exec:`, `sync:`.

shell v2 framing: packets `<B id><I len>data`, ids 0 stdin, 1 stdout, 2 stderr, 3 exit (1 byte),
4 close-stdin, 5 window size; the device ends with an exit packet and CLSE. v1 has no exit status and
merges stderr into stdout.

sync is a byte stream of requests `<4s id><I len>arg` (clients pack several into one WRTE):
STAT path → "STAT"<I mode><I size><I mtime> (zeros when missing); LIST path → "DENT"<I mode><I size><I mtime>
<I namelen>name… then "DONE"+16 zero bytes; SEND "path,mode" followed by "DATA"<I n>bytes… "DONE"<I mtime> →
"OKAY"<I 0> or "FAIL"<I n>msg; RECV path → "DATA"<I n>bytes… "DONE"<I 0> or FAIL; QUIT ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import stat as stat_mod
import struct
import time
from functools import partial
from typing import TYPE_CHECKING

from profilers.virtual_phone.errors import one_line
from profilers.virtual_phone.filesystem import PUSH_TMP_MARKER, FsError
from profilers.virtual_phone.shell import Shell
from profilers.virtual_phone.shell_context import Output
from profilers.virtual_phone.transport import ServiceRunner, Stream

if TYPE_CHECKING:
    from profilers.virtual_phone.runtime import PhoneRuntime

log = logging.getLogger(__name__)

SYNC_DATA_MAX = 64 * 1024
SYNC_HEADER = struct.Struct("<4sI")
SHELL_V2_HEADER = struct.Struct("<BI")
V2_STDIN, V2_STDOUT, V2_STDERR, V2_EXIT, V2_CLOSE_STDIN = 0, 1, 2, 3, 4
STDIN_GRACE_S = 0.2
#: A push reserves storage this far ahead of its bytes, so the quota is not re-counted for every chunk.
PUSH_RESERVE_AHEAD = 1024 * 1024


def open_service(runtime: PhoneRuntime, stream: Stream, service: str) -> ServiceRunner | None:
    """The coroutine serving `service` on `stream`, or None to refuse the stream."""
    if service.startswith(("shell,", "shell:")) or service == "shell":
        options, _, command = service.partition(":")
        if "v2" in options.split(","):
            return partial(_shell_v2, runtime, stream, command)
        return partial(_shell_v1, runtime, stream, command)
    if service.startswith("exec:"):
        return partial(_shell_v1, runtime, stream, service[len("exec:") :])
    if service.startswith("sync:"):
        return partial(_sync, runtime, stream)
    return None


async def _run_command(
    runtime: PhoneRuntime, stream: Stream, command: str, stdin: bytes = b""
) -> tuple[Output, int] | None:
    """Run a shell command line; None when a 'hang' fault swallows it (it then never answers)."""
    if runtime.faults.current().hangs(command):
        await stream.closed.wait()
        return None
    output = Output()
    if not command.strip():
        output.write(2, b"sh: interactive shells are not supported by this virtual phone\n")
        return output, 1
    shell = Shell(runtime)
    try:
        status = await shell.run(command, output, stdin)
    except Exception as exc:  # a bug or an exhausted resource: one line back, one line in the log
        reason = one_line(exc)
        log.warning("shell command failed: %s (command: %s)", reason, one_line(command, 120))
        output.write(2, f"sh: {reason}\n".encode())
        status = 1
    return output, status


async def _shell_v1(runtime: PhoneRuntime, stream: Stream, command: str) -> None:
    result = await _run_command(runtime, stream, command)
    if result is None:
        return
    output, _status = result
    data = b"".join(d for _fd, d in output.events)
    if data:
        await stream.write(data)


async def _v2_stdin(stream: Stream) -> bytes:
    """Collect the host's stdin up to close-stdin (adb sends close-stdin at once when nothing is piped).

    A client that sends nothing within STDIN_GRACE_S gets an empty stdin rather than a hung command.
    """
    buf, data = bytearray(), bytearray()
    first = True
    while True:
        try:
            chunk = await (asyncio.wait_for(stream.read(), STDIN_GRACE_S) if first else stream.read())
        except TimeoutError:
            return b""
        first = False
        if chunk is None:
            return bytes(data)
        buf += chunk
        while len(buf) >= SHELL_V2_HEADER.size:
            kind, length = SHELL_V2_HEADER.unpack_from(buf)
            if len(buf) < SHELL_V2_HEADER.size + length:
                break
            payload = bytes(buf[SHELL_V2_HEADER.size : SHELL_V2_HEADER.size + length])
            del buf[: SHELL_V2_HEADER.size + length]
            if kind == V2_STDIN:
                data += payload
            elif kind == V2_CLOSE_STDIN:
                return bytes(data)


async def _shell_v2(runtime: PhoneRuntime, stream: Stream, command: str) -> None:
    stdin = await _v2_stdin(stream)
    # Later packets (window size...) are read and dropped so the host's flow control keeps moving.
    drain = asyncio.create_task(_drain(stream))
    try:
        result = await _run_command(runtime, stream, command, stdin)
        if result is None:
            return
        output, status = result
        packets = b"".join(SHELL_V2_HEADER.pack(fd, len(d)) + d for fd, d in output.events)
        packets += SHELL_V2_HEADER.pack(V2_EXIT, 1) + bytes([status & 0xFF])
        await stream.write(packets)
    finally:
        drain.cancel()


async def _drain(stream: Stream) -> None:
    while await stream.read() is not None:
        pass


class _SyncReader:
    """Byte-stream view over the WRTE payloads of a sync stream."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def read(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            chunk = await self.stream.read()
            if chunk is None:
                return None
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


async def _sync(runtime: PhoneRuntime, stream: Stream) -> None:
    reader = _SyncReader(stream)
    fs = runtime.fs
    while True:
        head = await reader.read(SYNC_HEADER.size)
        if head is None:
            return
        ident, length = SYNC_HEADER.unpack(head)
        if ident in (b"STAT", b"LIST", b"SEND", b"RECV") and length > 4096:
            await _fail(stream, "path too long")
            return
        arg = await reader.read(length) if ident != b"QUIT" else b""
        if arg is None:
            return
        if ident == b"QUIT":
            return
        if ident == b"STAT":
            path = fs.normalize(arg.decode(errors="replace"))
            try:
                st = fs.stat(path)
                reply = struct.pack("<4s3I", b"STAT", st.mode, min(st.size, 0xFFFFFFFF), st.mtime)
            except FsError:
                reply = struct.pack("<4s3I", b"STAT", 0, 0, 0)
            if not await stream.write(reply):
                return
        elif ident == b"LIST":
            if not await _list(runtime, stream, fs.normalize(arg.decode(errors="replace"))):
                return
        elif ident == b"SEND":
            if not await _receive_file(runtime, stream, reader, arg.decode(errors="replace")):
                return
        elif ident == b"RECV":
            if not await _send_file(runtime, stream, fs.normalize(arg.decode(errors="replace"))):
                return
        else:
            await _fail(stream, f"unknown sync request {ident!r}")
            return


async def _fail(stream: Stream, message: str) -> bool:
    data = message.encode()
    return await stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)


async def _list(runtime: PhoneRuntime, stream: Stream, path: str) -> bool:
    fs = runtime.fs
    out = bytearray()
    try:
        names = [".", "..", *fs.listdir(path)]
    except FsError:
        names = []
    for name in names:
        try:
            st = fs.stat(path if name == "." else fs.normalize(posixpath.join(path, name)))
        except FsError:
            continue
        raw = name.encode()
        out += struct.pack("<4s4I", b"DENT", st.mode, min(st.size, 0xFFFFFFFF), st.mtime, len(raw)) + raw
    out += struct.pack("<4s4I", b"DONE", 0, 0, 0, 0)
    return await stream.write(bytes(out))


async def _throttle(runtime: PhoneRuntime, nbytes: int) -> None:
    rate = runtime.faults.current().slow_transfer_bytes_per_s
    if rate:
        await asyncio.sleep(nbytes / rate)


async def _receive_file(runtime: PhoneRuntime, stream: Stream, reader: _SyncReader, spec: str) -> bool:
    """SEND: write to a temporary file, rename on DONE: a failed push never leaves a half-written file.

    Every chunk's bytes are reserved against the storage quota before they are written (see filesystem.py),
    so concurrent pushes cannot together overrun it.
    """
    fs = runtime.fs
    raw_path, _, mode_text = spec.rpartition(",")
    if not raw_path:
        raw_path, mode_text = spec, "33188"
    try:
        mode = int(mode_text)
    except ValueError:
        mode = 0o100644
    path = fs.normalize(raw_path)
    error: str | None = None
    tmp = None
    fh = None
    written = reserved = 0
    try:
        fs.check_writable(path, as_root=False)
        if fs.exists(path) and fs.stat(path).is_dir:
            raise FsError("Is a directory")
        parent = posixpath.dirname(path)
        if not fs.exists(parent):
            fs.mkdir(parent, parents=True)  # adbd creates the leading directories of a pushed file
        if runtime.faults.current().no_space:
            raise FsError("No space left on device")
        host = fs.host(path)
        tmp = host.with_name(f".{host.name[:64]}{PUSH_TMP_MARKER}{os.getpid()}-{id(stream)}")
        fs.begin_push(tmp)
        fh = open(tmp, "wb")  # noqa: SIM115 - closed in the finally below, across awaits
    except (FsError, OSError) as exc:
        error = f"couldn't create file: {_reason(exc)}"
    try:
        while True:
            head = await reader.read(SYNC_HEADER.size)
            if head is None:
                return False
            ident, length = SYNC_HEADER.unpack(head)
            if ident == b"DATA":
                if length > SYNC_DATA_MAX:
                    await _fail(stream, "data chunk too large")
                    return False
                chunk = await reader.read(length)
                if chunk is None:
                    return False
                await _throttle(runtime, length)
                if error is None:
                    try:
                        if runtime.faults.current().no_space:
                            raise FsError("No space left on device")
                        if written + length > reserved:
                            reserved += fs.reserve(written + length - reserved, ahead=PUSH_RESERVE_AHEAD)
                        assert fh is not None
                        fh.write(chunk)
                        written += length
                    except (FsError, OSError) as exc:
                        error = _reason(exc)
            elif ident == b"DONE":
                mtime = length or int(time.time())
                if error is not None:
                    return await _fail(stream, error)
                assert fh is not None and tmp is not None
                try:
                    fh.close()
                    fh = None
                    os.chmod(tmp, (stat_mod.S_IMODE(mode) or 0o644) | 0o600)
                    os.utime(tmp, (mtime, mtime))
                    fs.commit_push(tmp, path, reserved)
                except (FsError, OSError) as exc:
                    return await _fail(stream, _reason(exc))
                tmp, reserved = None, 0
                return await stream.write(b"OKAY" + struct.pack("<I", 0))
            else:
                await _fail(stream, f"invalid data message {ident!r}")
                return False
    finally:
        if fh is not None:
            fh.close()
        if tmp is not None:
            fs.end_push(tmp, reserved)


def _reason(exc: Exception) -> str:
    """The errno text of a filesystem error, for a one-line FAIL."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc)


async def _send_file(runtime: PhoneRuntime, stream: Stream, path: str) -> bool:
    fs = runtime.fs
    try:
        if fs.stat(path).is_dir:
            raise FsError("Is a directory")
        data = fs.read(path)
    except FsError as exc:
        return await _fail(stream, f"{path}: {exc}")
    out = bytearray()
    for start in range(0, len(data), SYNC_DATA_MAX):
        chunk = data[start : start + SYNC_DATA_MAX]
        out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
        if len(out) >= stream.maxdata:
            await _throttle(runtime, len(out))
            if not await stream.write(bytes(out)):
                return False
            out.clear()
    out += b"DONE" + struct.pack("<I", 0)
    await _throttle(runtime, len(out))
    return await stream.write(bytes(out))
