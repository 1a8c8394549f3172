"""The device side of the ADB wire protocol over TCP (what `adbd` speaks), on asyncio.

Wire protocol. Every message is a 24-byte little-endian header `<6I`: command, arg0, arg1, data_length,
data_check, magic, followed by `data_length` payload bytes. `magic == command ^ 0xFFFFFFFF`; `data_check` is
the plain byte sum of the payload (we always send it: adb_shell verifies it; we verify the client's unless a
≥0x01000001 client sends 0). Commands are four ASCII letters read as a little-endian word:

    CNXN(version, maxdata, "host::…")
        host → device. The device answers CNXN(min(version, 0x01000001), min(maxdata, 1 MiB),
        "device::ro.product.name=…;ro.product.model=…;ro.product.device=…;features=shell_v2,cmd").
    AUTH(1=TOKEN, 0, 20 random bytes)    device → host, when keys are checked (allow-list mode)
    AUTH(2=SIGNATURE, 0, sig)            host → device: RSA PKCS#1 v1.5 over the token (SHA-1 prefix)
    AUTH(3=RSAPUBLICKEY, 0, "b64 user")  host → device when none of its signatures was accepted
    OPEN(host_id, 0, "service\\0")        opens a stream: answered OKAY(dev_id, host_id) or CLSE(0, host_id)
    WRTE(my_id, peer_id, data)           stream data; each WRTE is answered with OKAY(its_id, peer_id)
    OKAY(my_id, peer_id)                 acknowledges one WRTE: one unacked WRTE per stream and direction
    CLSE(my_id, peer_id)                 closes a stream; a CLSE for a live stream is answered with CLSE

Latency: adb_shell writes header and payload in two `send()`s without TCP_NODELAY, so Nagle on its side meets
delayed ACK on ours and every message stalls ~40 ms. We therefore set TCP_QUICKACK after each header read,
TCP_NODELAY on the socket, and write each of our messages (header + payload) with a single `write()`.
`stat_v2`, `ls_v2` and `delayed_ack` are not advertised: adb 29 then keeps to STAT/LIST and plain OKAY flow
control.

A service runs as long as its stream is open: when the host closes the stream (CLSE) or the connection drops,
the service's task is cancelled at once, and with it the shell command or benchmark it runs (the benchmark's
process is killed, see bench.py). A service that fails is logged in one line, never with a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from profilers.virtual_phone.errors import ProtocolError, one_line
from profilers.virtual_phone.faults import FaultControl

log = logging.getLogger(__name__)

HEADER = struct.Struct("<6I")
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_WRTE = 0x45545257
A_CLSE = 0x45534C43
KNOWN_COMMANDS = {A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_WRTE, A_CLSE}
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
VERSION_MAX = 0x01000001
VERSION_SKIP_CHECKSUM = 0x01000001
MAX_PAYLOAD = 1024 * 1024
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)

# A service factory gets the stream and the service string; it returns what to run, or None to refuse.
# A callable, not a coroutine: a stream closed before its service starts leaves nothing un-awaited.
ServiceRunner = Callable[[], Awaitable[None]]
ServiceFactory = Callable[["Stream", str], ServiceRunner | None]


def checksum(data: bytes) -> int:
    """ADB's data_check: the byte sum of the payload (numpy: a Python `sum` costs ~8 ms per MiB)."""
    if len(data) < 4096:
        return sum(data) & 0xFFFFFFFF
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


def pack_message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """Header + payload of one message, checksum and magic filled in."""
    return HEADER.pack(command, arg0, arg1, len(data), checksum(data), command ^ 0xFFFFFFFF) + data


def parse_android_pubkey(text: str) -> rsa.RSAPublicKey:
    """The RSA key of an `adb_keys` line: base64 of <I words><I n0inv><modulus LE><rr LE><I exponent>."""
    blob = base64.b64decode(text.split()[0])
    words = struct.unpack_from("<I", blob, 0)[0]
    nbytes = words * 4
    modulus = int.from_bytes(blob[8 : 8 + nbytes], "little")
    exponent = struct.unpack_from("<I", blob, 8 + 2 * nbytes)[0]
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


@dataclass(frozen=True)
class AuthPolicy:
    """Insecure: answer CNXN at once. Otherwise only keys in `authorized_keys` (adb_keys format) get in."""

    insecure: bool = True
    authorized_keys: Path | None = None

    def allowed_lines(self) -> list[str]:
        """The base64 keys of the allow-list (re-read each time, so keys can be added while serving)."""
        if self.authorized_keys is None or not self.authorized_keys.exists():
            return []
        lines = self.authorized_keys.read_text().splitlines()
        return [ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]

    def verify(self, token: bytes, signature: bytes) -> bool:
        """True when one allowed key signed `token`."""
        for line in self.allowed_lines():
            try:
                key = parse_android_pubkey(line)
                key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
                return True
            except (InvalidSignature, ValueError, struct.error):
                continue
        return False


class Stream:
    """One ADB stream on the device side: `read()` the host's data, `write()` ours with flow control."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.closed = asyncio.Event()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._acked = asyncio.Event()
        self._acked.set()

    @property
    def maxdata(self) -> int:
        """Largest payload of one WRTE on this connection."""
        return self.conn.maxdata

    async def read(self) -> bytes | None:
        """The next WRTE payload from the host, or None once the stream is closed.

        The host's WRTE is acknowledged (OKAY) only now that it is consumed: ADB's own flow control then
        holds a fast client back to the pace of the service (e.g. a throttled push) instead of buffering.
        """
        if self.closed.is_set() and self._inbox.empty():
            return None
        data = await self._inbox.get()
        if data is not None and not self.closed.is_set():
            with contextlib.suppress(ConnectionError):
                await self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return data

    async def write(self, data: bytes) -> bool:
        """Send `data` in WRTEs of at most maxdata bytes, each after the previous one was acknowledged.

        Returns False when the stream or connection closed before everything went out.
        """
        view = memoryview(data)
        for start in range(0, len(data), self.maxdata):
            if not await self._wait_ack():
                return False
            self._acked.clear()
            await self.conn.send(
                A_WRTE, self.local_id, self.remote_id, bytes(view[start : start + self.maxdata])
            )
        return not self.closed.is_set()

    async def _wait_ack(self) -> bool:
        if self._acked.is_set():
            return not self.closed.is_set()
        waiter = asyncio.ensure_future(self._acked.wait())
        closer = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closer.cancel()
        return not self.closed.is_set()

    async def close(self) -> None:
        """Close from the device side (sends CLSE once)."""
        if not self.closed.is_set():
            self._mark_closed()
            self.conn.streams.pop(self.local_id, None)
            with contextlib.suppress(ConnectionError):
                await self.conn.send(A_CLSE, self.local_id, self.remote_id)

    # called by the connection
    def _deliver(self, data: bytes) -> None:
        self._inbox.put_nowait(data)

    def _ack(self) -> None:
        self._acked.set()

    def _mark_closed(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._acked.set()
            self._inbox.put_nowait(None)


class Connection:
    """One client connection: handshake, auth, stream table and the read loop."""

    def __init__(
        self,
        server: DeviceServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.sock = writer.get_extra_info("socket")
        self.version = VERSION_MAX
        self.maxdata = MAX_PAYLOAD
        self.online = False
        self.streams: dict[int, Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._next_id = 1
        self._token = b""
        self._received = 0
        self._closing = False

    async def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        """Write one whole message with a single write (no Nagle split between header and payload)."""
        if self._closing or self.writer.is_closing():
            raise ConnectionResetError("connection closed")
        self.writer.write(pack_message(command, arg0, arg1, data))
        if self.writer.transport.get_write_buffer_size() > 4 * MAX_PAYLOAD:
            await self.writer.drain()

    def _quickack(self) -> None:
        if not self.server.quickack:
            return
        with contextlib.suppress(OSError, AttributeError):
            self.sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)

    async def serve(self) -> None:
        """Read and dispatch messages until the client leaves or breaks the protocol."""
        with contextlib.suppress(OSError, AttributeError):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                header = await self.reader.readexactly(HEADER.size)
                self._quickack()
                command, arg0, arg1, length, check, magic = HEADER.unpack(header)
                if magic != command ^ 0xFFFFFFFF:
                    raise ProtocolError(f"bad magic {magic:#x} for command {command:#x}")
                if command not in KNOWN_COMMANDS:
                    raise ProtocolError(f"unknown command {command:#x}")
                if length > (self.maxdata if self.online else MAX_PAYLOAD):
                    raise ProtocolError(f"payload of {length} bytes exceeds the maximum")
                data = await self.reader.readexactly(length) if length else b""
                checked = length and not (check == 0 and self.version >= VERSION_SKIP_CHECKSUM)
                if checked and checksum(data) != check:
                    raise ProtocolError("payload checksum mismatch")
                faults = self.server.faults.current()
                if faults.offline:
                    return
                await self._dispatch(command, arg0, arg1, data)
                self._received += 1
                if faults.drop_after_messages is not None and self._received >= faults.drop_after_messages:
                    log.info("fault: dropping connection after %d messages", self._received)
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except ProtocolError as exc:
            log.info("closing connection: %s", one_line(exc))
            return
        except Exception as exc:  # a bug must cost this connection only, and one log line
            log.warning("closing connection after an internal error: %s", one_line(exc))
            return
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Close every stream, stop their services, close the socket."""
        if self._closing:
            return
        self._closing = True
        for stream in list(self.streams.values()):
            stream._mark_closed()
        self.streams.clear()
        for task in list(self.tasks):
            task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            await self._on_cnxn(arg0, arg1)
        elif command == A_AUTH:
            await self._on_auth(arg0, data)
        elif not self.online:
            raise ProtocolError("stream message before the connection was established")
        elif command == A_OPEN:
            await self._on_open(arg0, data)
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                if stream.remote_id == 0:
                    stream.remote_id = arg0
                stream._ack()
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None:
                await self.send(A_CLSE, 0, arg0)
                return
            stream._deliver(data)  # acknowledged when the service reads it (Stream.read)
        elif command == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None and not stream.closed.is_set():
                stream._mark_closed()
                await self.send(A_CLSE, stream.local_id, stream.remote_id)

    async def _on_cnxn(self, version: int, maxdata: int) -> None:
        self.version = min(version, VERSION_MAX)
        self.maxdata = max(4096, min(maxdata, MAX_PAYLOAD))
        for stream in list(self.streams.values()):
            stream._mark_closed()
        self.streams.clear()
        if self.server.auth.insecure:
            await self._go_online()
        else:
            await self._send_token()

    async def _send_token(self) -> None:
        self._token = os.urandom(20)
        await self.send(A_AUTH, AUTH_TOKEN, 0, self._token)

    async def _on_auth(self, kind: int, data: bytes) -> None:
        if self.server.auth.insecure or self.online:
            return
        if kind == AUTH_SIGNATURE:
            if self._token and self.server.auth.verify(self._token, data):
                await self._go_online()
            else:
                await self._send_token()
        elif kind == AUTH_RSAPUBLICKEY:
            key = data.rstrip(b"\0").decode(errors="replace").split()
            if key and key[0] in self.server.auth.allowed_lines():
                await self._go_online()
            # An unknown key is never accepted: a real phone would show a dialog; nobody answers it here,
            # so the client waits for its auth timeout.

    async def _go_online(self) -> None:
        self.online = True
        await self.send(A_CNXN, self.version, self.maxdata, self.server.banner())

    async def _on_open(self, remote_id: int, data: bytes) -> None:
        service = data.rstrip(b"\0").decode(errors="replace")
        local_id = self._next_id
        self._next_id += 1
        stream = Stream(self, local_id, remote_id)
        runner = self.server.services(stream, service)
        if runner is None:
            await self.send(A_CLSE, 0, remote_id)
            return
        self.streams[local_id] = stream
        self.server.service_started()  # counted before the host hears OKAY (see wait_idle)
        try:
            await self.send(A_OKAY, local_id, remote_id)  # before the service can write its first WRTE
        except BaseException:
            self.server.service_ended()
            raise
        task = asyncio.create_task(self._run_service(stream, runner))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _task: self.server.service_ended())  # also when cancelled unstarted

    async def _run_service(self, stream: Stream, runner: ServiceRunner) -> None:
        """Run a stream's service until it ends or the host closes the stream (then it is cancelled)."""
        work = asyncio.ensure_future(runner())
        closed = asyncio.ensure_future(stream.closed.wait())
        try:
            await asyncio.wait({work, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client left: the work it asked for ends now
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                return
            exc = None if work.cancelled() else work.exception()
            if exc is not None and not isinstance(exc, ConnectionError):
                log.warning("service failed on stream %d: %s", stream.local_id, one_line(exc))
            if not isinstance(exc, ConnectionError):
                with contextlib.suppress(ConnectionError):
                    await stream.close()
        finally:
            closed.cancel()
            if not work.done():  # this task itself was cancelled (connection shutdown)
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work


class DeviceServer:
    """The listening socket: one `Connection` per client, all sharing the services and the fault control."""

    def __init__(
        self,
        services: ServiceFactory,
        banner: Callable[[], bytes],
        auth: AuthPolicy,
        faults: FaultControl,
        quickack: bool = True,
    ) -> None:
        self.quickack = quickack  # False only to measure the stall it prevents (bench/bench_virtual_phone.py)
        self.services = services
        self.banner = banner
        self.auth = auth
        self.faults = faults
        self.connections: set[Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._services_running = 0
        self._idle = threading.Condition()

    def service_started(self) -> None:
        """Count a service that starts (see `wait_idle`)."""
        with self._idle:
            self._services_running += 1

    def service_ended(self) -> None:
        """Count a service that ended, however it ended."""
        with self._idle:
            self._services_running -= 1
            self._idle.notify_all()

    @property
    def services_running(self) -> int:
        """Services (shell commands, syncs, benchmarks) running now, on every connection."""
        with self._idle:
            return self._services_running

    def wait_idle(self, timeout: float) -> bool:
        """Block (from another thread) until no service runs; False if some still run after `timeout` s."""
        with self._idle:
            return self._idle.wait_for(lambda: self._services_running == 0, timeout)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port) and return the bound port."""
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.faults.current().offline:
            writer.close()
            return
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            await conn.shutdown()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
