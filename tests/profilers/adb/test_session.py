"""DeviceSession against a virtual phone: exit status, transfers, NODELAY, keys, faults, threads."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from profilers.adb import (
    DeviceConnectionError,
    DeviceSession,
    DeviceTimeoutError,
    PushRefusedError,
    ShellResult,
)
from profilers.adb.session import load_signer
from profilers.virtual_phone import FaultSpec, VirtualPhone


def _socket(session: DeviceSession) -> socket.socket:
    return session._device._io_manager._transport._connection  # type: ignore[union-attr]


def test_shell_carries_exit_status_and_output(session: DeviceSession) -> None:
    assert session.shell("echo hello").stdout == "hello\n"
    assert session.shell("echo hello").exit_code == 0
    failed = session.shell("echo partial; false")
    assert (failed.stdout, failed.exit_code) == ("partial\n", 1)
    missing = session.shell("cat /no/such/file")
    assert missing.exit_code != 0
    assert "No such file" in missing.stdout
    assert session.shell("sh -c 'echo a; exit 7'") == ShellResult("a\n", 7)
    # Output that does not end with a newline keeps its exact bytes.
    assert session.shell("printf abc").stdout == "abc"


def test_tcp_nodelay_is_set_after_connect(phone: VirtualPhone, connect: Callable[..., DeviceSession]) -> None:
    fast = connect(phone)
    fast.shell("true")
    assert _socket(fast).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    plain = connect(phone, tcp_nodelay=False)
    plain.shell("true")
    assert _socket(plain).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_key_is_created_once_and_reused(tmp_path: Path, phone: VirtualPhone) -> None:
    key = tmp_path / "state" / "adbkey"
    with DeviceSession.connect(f"127.0.0.1:{phone.port}", key_path=key):
        pass
    first = key.read_bytes()
    assert key.with_name("adbkey.pub").read_bytes().strip()
    with DeviceSession.connect(f"127.0.0.1:{phone.port}", key_path=key) as again:
        assert again.shell("true").exit_code == 0
    assert key.read_bytes() == first
    assert load_signer(key).GetPublicKey() == load_signer(key).GetPublicKey()


def test_push_pull_stat_round_trip(session: DeviceSession) -> None:
    payload = bytes(range(256)) * 1000
    path = "/data/local/tmp/roundtrip.bin"
    assert not session.stat(path).exists
    session.push(payload, path)
    stat = session.stat(path)
    assert stat.exists and stat.size == len(payload)
    assert session.pull(path) == payload


def test_push_refused_raises_push_refused(phone: VirtualPhone, session: DeviceSession) -> None:
    phone.set_fault(no_space=True)
    with pytest.raises(PushRefusedError, match=r"/data/local/tmp/x\.bin"):
        session.push(b"data", "/data/local/tmp/x.bin")
    phone.clear_faults()
    session.push(b"data", "/data/local/tmp/x.bin")  # the same connection still works
    assert session.pull("/data/local/tmp/x.bin") == b"data"


def test_hang_times_out_then_reconnects(phone: VirtualPhone, connect: Callable[..., DeviceSession]) -> None:
    session = connect(phone, command_timeout_s=1.0)
    assert session.connects == 1
    phone.set_fault(hang_commands=["sleep"])
    with pytest.raises(DeviceTimeoutError, match="timed out"):
        session.shell("sleep 5")
    phone.clear_faults()
    assert session.shell("echo back").stdout == "back\n"
    assert session.connects == 2


def test_dropped_connection_raises_and_next_call_reconnects(
    phone: VirtualPhone, connect: Callable[..., DeviceSession]
) -> None:
    session = connect(phone, command_timeout_s=5.0)
    session.shell("true")
    phone.set_fault(offline=True)
    with pytest.raises(DeviceConnectionError) as info:
        session.shell("echo lost")
    # A closed peer is reported at once, not after spinning until the command timeout.
    assert not isinstance(info.value, DeviceTimeoutError)
    phone.clear_faults()
    assert session.shell("echo back").stdout == "back\n"
    assert session.connects == 2


def test_connection_refused_and_bad_address(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeviceConnectionError, match="cannot connect"):
        DeviceSession.connect(f"127.0.0.1:{port}", key_path=tmp_path / "k", connect_timeout_s=2)
    with pytest.raises(DeviceConnectionError, match="HOST:PORT"):
        DeviceSession.connect("no-port", key_path=tmp_path / "k")


def test_threads_share_one_session_without_stalls(session: DeviceSession) -> None:
    errors: list[BaseException] = []
    outputs: list[str] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                outputs.append(session.shell(f"echo {n}-{i}").stdout.strip())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(outputs) == sorted(f"{n}-{i}" for n in range(4) for i in range(10))
    assert session.connects == 1


def test_drop_after_messages_fault_is_a_connection_error(
    start_phone: Callable[..., VirtualPhone], connect: Callable[..., DeviceSession]
) -> None:
    phone = start_phone(faults=FaultSpec(drop_after_messages=8))
    session = connect(phone, command_timeout_s=5.0)

    def keep_talking() -> None:
        for _ in range(20):
            session.shell("true")

    with pytest.raises(DeviceConnectionError):
        keep_talking()


def test_first_use_by_many_threads_makes_one_whole_key(tmp_path: Path) -> None:
    """Workers connecting at once on a fresh state directory all read the same, complete key pair."""
    key = tmp_path / "state" / "adbkey"
    with ThreadPoolExecutor(max_workers=6) as pool:
        public_keys = list(pool.map(lambda _: load_signer(key).GetPublicKey(), range(6)))
    assert len(set(public_keys)) == 1
    assert public_keys[0] == load_signer(key).GetPublicKey()
    assert sorted(p.name for p in key.parent.iterdir()) == ["adbkey", "adbkey.lock", "adbkey.pub"]
