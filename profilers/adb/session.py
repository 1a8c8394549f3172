"""A device session: one ADB connection to one phone, made safe and fast for profiling.

What this module relies on (adb_shell 0.4.4 against adbd or our virtual phone; see adb-notes.md):

- Messages are 24-byte headers (``<6I``: command, arg0, arg1, length, checksum, magic) plus payload.
  adb_shell writes header and payload with two ``send()`` calls and never sets TCP_NODELAY, so Nagle
  plus the peer's delayed ACK cost ~40 ms per message. We set TCP_NODELAY on its socket right after
  connecting (``dev._io_manager._transport._connection``): a shell round trip drops to ~1.5 ms.
- adb_shell only speaks the v1 ``shell:`` service: stdout and stderr merged, **no exit status**. Every
  command is sent as ``<cmd>; echo <marker>:$?`` with a per-call random marker, and the status is read
  from the last marker in the output; output without the marker means the stream was cut.
- One ``AdbDevice`` must not be shared between threads (a reader holds the transport lock others
  need to send; they stall until timeouts), so a session holds exactly one connection and serialises
  every call with a ``threading.Lock``.
- After a dead peer adb_shell spins on ``recv() == b''`` until its read timeout and the next call
  gets ``BrokenPipeError``; a late reply for an abandoned stream stays in its packet store. So after
  any timeout, broken pipe or OSError the connection is closed, and the next call reconnects.
- Auth: the device sends AUTH(TOKEN); we sign with a persistent RSA key (created on first use with
  ``adb_shell.auth.keygen.keygen``, kept at ``key_path`` and ``key_path.pub``), so a phone that was
  told "always allow" keeps trusting latfarm.
- Sync (``push``/``pull``/``stat``): ``stat`` of a missing path returns (0, 0, 0), not an error; a
  refused push raises ``PushFailedError``/``AdbCommandFailureException`` with the device's message.

USB (``transport="usb"``) uses ``AdbDeviceUsb`` (needs the ``libusb1`` extra of adb_shell); it is
imported only when asked for and is not exercised by the test suite (no USB phone here).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.transport.tcp_transport import TcpTransport

from profilers.adb.errors import (
    CommandFailedError,
    DeviceConnectionError,
    DeviceTimeoutError,
    PushRefusedError,
)

Transport = Literal["tcp", "usb"]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 120.0

# Errors after which the connection state is unknown: drop it, reconnect on the next call.
_TIMEOUTS = (adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException, socket.timeout, TimeoutError)
_BROKEN = (
    OSError,
    adb_exc.AdbConnectionError,
    adb_exc.InvalidResponseError,
    adb_exc.InvalidChecksumError,
    adb_exc.InvalidCommandError,
    adb_exc.DeviceAuthError,
)


def default_key_path() -> Path:
    """``$LATFARM_STATE_DIR/adbkey`` (default state dir ``~/.latfarm``)."""
    return Path(os.environ.get("LATFARM_STATE_DIR", "~/.latfarm")).expanduser() / "adbkey"


def load_signer(key_path: Path) -> PythonRSASigner:
    """The RSA signer for ``key_path``, generating the key pair on first use.

    The pair is generated beside its place and moved in, public key first, under a file lock, so a session
    opened meanwhile never reads half a key and every caller ends with the same pair.
    """
    key_path = Path(key_path)
    public_path = key_path.with_name(key_path.name + ".pub")
    if not key_path.exists() or not public_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        # Several threads or workers may connect first at once: one generates under an exclusive file lock
        # (threads and processes alike), into a draft renamed into place, public half first.
        with open(key_path.with_name(key_path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not key_path.exists() or not public_path.exists():
                draft = key_path.with_name(f".{key_path.name}.{uuid.uuid4().hex}")
                try:
                    keygen(str(draft))
                    draft.chmod(0o600)
                    os.replace(draft.with_name(draft.name + ".pub"), public_path)
                    os.replace(draft, key_path)
                finally:
                    for leftover in (draft, draft.with_name(draft.name + ".pub")):
                        leftover.unlink(missing_ok=True)
    return PythonRSASigner.FromRSAKeyPath(str(key_path))


@dataclass(frozen=True)
class ShellResult:
    """Output (stdout and stderr merged, as v1 shell delivers them) and the exit status of a command."""

    stdout: str
    exit_code: int

    def check(self, command: str) -> str:
        """The output, or CommandFailedError when the command exited non-zero."""
        if self.exit_code != 0:
            raise CommandFailedError(command, self.exit_code, self.stdout)
        return self.stdout


@dataclass(frozen=True)
class FileStat:
    """``stat`` of a device path; a missing path has ``exists == False``."""

    mode: int
    size: int
    mtime: int

    @property
    def exists(self) -> bool:
        """ADB sync STAT reports a missing path as all zeros."""
        return self.mode != 0


class DeviceSession:
    """One connection to one phone; every call is serialised, timed out and reconnects after failures."""

    def __init__(
        self,
        address: str,
        device_factory: Callable[[], AdbDevice],
        signer: PythonRSASigner | None,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        tcp_nodelay: bool = True,
    ) -> None:
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.tcp_nodelay = tcp_nodelay
        self.connects = 0
        self._factory = device_factory
        self._signer = signer
        self._lock = threading.Lock()
        self._device: AdbDevice | None = None

    @classmethod
    def connect(
        cls,
        address: str,
        transport: Transport = "tcp",
        key_path: Path | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        *,
        tcp_nodelay: bool = True,
    ) -> DeviceSession:
        """Open a session to ``host:port`` (tcp) or a USB serial, authenticating with ``key_path``."""
        signer = load_signer(key_path or default_key_path())
        if transport == "tcp":
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise DeviceConnectionError(f"TCP device address must be HOST:PORT, got {address!r}")

            def factory() -> AdbDevice:
                return AdbDevice(_EofAwareTcpTransport(host, int(port)), connect_timeout_s)

        elif transport == "usb":

            def factory() -> AdbDevice:
                # Imported here: USB needs libusb1 (adb_shell[usb]), optional for TCP-only farms.
                from adb_shell.adb_device import AdbDeviceUsb

                try:
                    return AdbDeviceUsb(serial=address, default_transport_timeout_s=connect_timeout_s)
                except adb_exc.InvalidTransportError as exc:
                    raise DeviceConnectionError(
                        f"USB transport needs adb_shell[usb] (libusb1): {exc}"
                    ) from exc

        else:
            raise DeviceConnectionError(f"transport must be 'tcp' or 'usb', got {transport!r}")
        session = cls(
            address,
            factory,
            signer,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
            tcp_nodelay=tcp_nodelay,
        )
        with session._lock:
            session._ensure()
        return session

    # -- connection ----------------------------------------------------------------------------
    def _ensure(self) -> AdbDevice:
        if self._device is not None:
            return self._device
        device = self._factory()
        try:
            device.connect(
                rsa_keys=[self._signer] if self._signer else None,
                transport_timeout_s=self.connect_timeout_s,
                auth_timeout_s=self.connect_timeout_s,
                read_timeout_s=self.connect_timeout_s,
            )
        except (*_TIMEOUTS, *_BROKEN) as exc:
            _quiet_close(device)
            raise DeviceConnectionError(f"cannot connect to {self.address}: {_describe(exc)}") from exc
        if self.tcp_nodelay:
            _set_nodelay(device)
        self._device = device
        self.connects += 1
        return device

    def _drop(self) -> None:
        if self._device is not None:
            _quiet_close(self._device)
            self._device = None

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> DeviceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, timeout_s: float, fn: Callable[[AdbDevice], Any]) -> Any:
        with self._lock:
            device = self._ensure()
            try:
                return fn(device)
            except _TIMEOUTS as exc:
                self._drop()
                raise DeviceTimeoutError(f"{what} on {self.address} timed out after {timeout_s:g} s") from exc
            except (adb_exc.PushFailedError, adb_exc.AdbCommandFailureException):
                raise
            except _BROKEN as exc:
                self._drop()
                raise DeviceConnectionError(
                    f"{what} on {self.address} failed, connection lost: {_describe(exc)}"
                ) from exc

    # -- commands ------------------------------------------------------------------------------
    def shell(self, command: str, timeout_s: float | None = None) -> ShellResult:
        """Run ``command`` in the device shell; returns its merged output and exit status.

        The command must not end the shell itself (``exit N``): the status marker would never print and
        the call would report a cut stream. Use ``sh -c '...; exit N'`` for that.
        """
        timeout = timeout_s or self.command_timeout_s
        marker = f"__latfarm_{uuid.uuid4().hex}__"
        wrapped = f'{command}; echo "{marker}:$?"'

        def run(device: AdbDevice) -> str:
            output = device.shell(
                wrapped, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout, decode=True
            )
            return str(output)

        raw = self._call(f"shell {command!r}", timeout, run)
        idx = raw.rfind(marker + ":")
        if idx < 0:
            with self._lock:
                self._drop()
            raise DeviceConnectionError(
                f"shell {command!r} on {self.address}: output ended before the exit marker "
                f"(stream cut); got {raw[-200:]!r}"
            )
        tail = raw[idx + len(marker) + 1 :].split()
        status = tail[0] if tail else ""
        if not status.lstrip("-").isdigit():
            raise DeviceConnectionError(f"shell {command!r}: unreadable exit status {status!r}")
        return ShellResult(stdout=raw[:idx], exit_code=int(status))

    def run(self, command: str, timeout_s: float | None = None) -> str:
        """Run ``command``; its output, or CommandFailedError on a non-zero exit."""
        return self.shell(command, timeout_s).check(command)

    def push(self, data: bytes | Path, device_path: str, timeout_s: float | None = None) -> None:
        """Write bytes (or a local file) to ``device_path``; PushRefusedError when the device says no."""
        timeout = timeout_s or self.command_timeout_s
        payload = Path(data).read_bytes() if isinstance(data, (str, Path)) else bytes(data)

        def push(device: AdbDevice) -> None:
            device.push(
                io.BytesIO(payload),
                device_path,
                st_mode=0o100755,
                transport_timeout_s=timeout,
                read_timeout_s=timeout,
            )

        try:
            self._call(f"push {device_path}", timeout, push)
        except (adb_exc.PushFailedError, adb_exc.AdbCommandFailureException) as exc:
            raise PushRefusedError(f"push of {len(payload)} bytes to {device_path} refused: {exc}") from exc

    def pull(self, device_path: str, timeout_s: float | None = None) -> bytes:
        """Read ``device_path`` from the device."""
        timeout = timeout_s or self.command_timeout_s
        buffer = io.BytesIO()

        def pull(device: AdbDevice) -> None:
            device.pull(device_path, buffer, transport_timeout_s=timeout, read_timeout_s=timeout)

        try:
            self._call(f"pull {device_path}", timeout, pull)
        except adb_exc.AdbCommandFailureException as exc:
            raise CommandFailedError(f"pull {device_path}", 1, str(exc)) from exc
        return buffer.getvalue()

    def stat(self, device_path: str, timeout_s: float | None = None) -> FileStat:
        """Mode, size and mtime of ``device_path`` (``exists`` is False when missing)."""
        timeout = timeout_s or self.command_timeout_s

        def stat(device: AdbDevice) -> tuple[int, int, int]:
            mode, size, mtime = device.stat(device_path, transport_timeout_s=timeout, read_timeout_s=timeout)
            return int(mode), int(size), int(mtime)

        mode, size, mtime = self._call(f"stat {device_path}", timeout, stat)
        return FileStat(mode=mode, size=size, mtime=mtime)


# adb_shell ships no type information, so its TcpTransport is Any to mypy.
class _EofAwareTcpTransport(TcpTransport):  # type: ignore[misc]
    """adb_shell's TCP transport, but a closed peer is an error at once instead of a busy loop.

    adb_shell treats ``recv() == b""`` as "no data yet" and spins until its read timeout (seconds of
    CPU for nothing); for a stream socket that select() reported readable, ``b""`` means EOF.
    """

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        data = bytes(super().bulk_read(numbytes, transport_timeout_s))
        if not data and numbytes > 0:
            raise ConnectionResetError("the device closed the connection")
        return data


def _set_nodelay(device: AdbDevice) -> None:
    # adb_shell hides the socket; reach it where adb_shell 0.4.x keeps it (USB has none).
    conn = getattr(getattr(getattr(device, "_io_manager", None), "_transport", None), "_connection", None)
    if isinstance(conn, socket.socket):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quiet_close(device: AdbDevice) -> None:
    # Closing a dead connection may fail in any way; there is nothing left to do about it.
    with contextlib.suppress(Exception):
        device.close()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
