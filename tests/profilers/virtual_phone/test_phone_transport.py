"""The ADB transport: handshake and auth with adb_shell, streams, and malformed packets."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.exceptions import AdbTimeoutError, DeviceAuthError, TcpTimeoutException

from profilers.virtual_phone import VirtualPhone
from profilers.virtual_phone.transport import A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_WRTE, MAX_PAYLOAD
from tests.profilers.virtual_phone.phone_kit import RawAdb, run


def make_key(path: Path) -> PythonRSASigner:
    keygen(str(path))
    return PythonRSASigner.FromRSAKeyPath(str(path))


def test_insecure_mode_accepts_a_client_with_a_key_and_returns_output_and_status(
    phone: VirtualPhone, tmp_path: Path
) -> None:
    signer = make_key(tmp_path / "adbkey")
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10)
    assert dev.connect(rsa_keys=[signer], auth_timeout_s=2)
    assert dev.shell("echo hello phone") == "hello phone\n"
    assert run(dev, "getprop ro.product.model") == ("latfarm Virtual Flagship\n", 0)
    assert run(dev, "sh -c 'exit 3'")[1] == 3
    assert dev.shell("echo before; exit 4; echo after") == "before\n"
    assert run(dev, "false")[1] == 1
    dev.close()


def test_allow_list_mode_accepts_a_listed_key(tmp_path: Path) -> None:
    signer = make_key(tmp_path / "adbkey")
    keys = tmp_path / "adb_keys"
    keys.write_text((tmp_path / "adbkey.pub").read_text())
    with VirtualPhone(state_dir=tmp_path / "p", authorized_keys=keys, insecure=False) as phone:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10)
        assert dev.connect(rsa_keys=[signer], auth_timeout_s=2)
        assert dev.shell("id").startswith("uid=2000(shell)")
        dev.close()


def test_allow_list_mode_refuses_an_unknown_key(tmp_path: Path) -> None:
    make_key(tmp_path / "known")
    stranger = make_key(tmp_path / "stranger")
    keys = tmp_path / "adb_keys"
    keys.write_text((tmp_path / "known.pub").read_text())
    with VirtualPhone(state_dir=tmp_path / "p", authorized_keys=keys, insecure=False) as phone:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=1)
        with pytest.raises((DeviceAuthError, AdbTimeoutError, TcpTimeoutException)):
            dev.connect(rsa_keys=[stranger], auth_timeout_s=0.5, read_timeout_s=1)
        dev.close()
        # without any key the client cannot even try
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=1)
        with pytest.raises(DeviceAuthError):
            dev.connect(auth_timeout_s=0.5, read_timeout_s=1)
        dev.close()


def test_banner_advertises_identity_and_shell_v2_but_not_v2_sync(phone: VirtualPhone) -> None:
    raw = RawAdb(phone.port)
    banner = raw.handshake().decode()
    raw.close()
    assert banner.startswith("device::")
    assert "ro.product.model=latfarm Virtual Flagship" in banner
    features = banner.split("features=")[1].split(",")
    assert "shell_v2" in features
    assert not {"stat_v2", "ls_v2", "delayed_ack"} & set(features)


def read_stream(raw: RawAdb, streams: dict[int, bytearray], closed: set[int], order: list[int]) -> None:
    command, arg0, arg1, data = raw.recv()
    if command == A_WRTE:
        streams[arg1] += data
        order.append(arg1)
        raw.send(A_OKAY, arg1, arg0)
    elif command == A_CLSE:
        closed.add(arg1)


def test_two_streams_at_once_on_one_connection(phone: VirtualPhone) -> None:
    raw = RawAdb(phone.port)
    raw.handshake()
    raw.send(A_OPEN, 1, 0, b"shell:sleep 0.3; echo slow\0")
    raw.send(A_OPEN, 2, 0, b"shell:echo fast\0")
    ids = {}
    for _ in range(2):
        command, dev_id, host_id, _ = raw.recv()
        assert command == A_OKAY
        ids[host_id] = dev_id
    assert ids[1] != ids[2]
    streams: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    closed: set[int] = set()
    order: list[int] = []
    while closed != {1, 2}:
        read_stream(raw, streams, closed, order)
    assert streams == {1: bytearray(b"slow\n"), 2: bytearray(b"fast\n")}
    assert order == [2, 1], "the fast stream must not wait for the slow one"
    raw.close()


def test_shell_v2_frames_output_and_exit_status(phone: VirtualPhone) -> None:
    raw = RawAdb(phone.port)
    raw.handshake()
    raw.send(A_OPEN, 5, 0, b"shell,v2,raw:echo out; echo err >&2; exit 9\0")
    assert raw.recv()[0] == A_OKAY
    streams: dict[int, bytearray] = {5: bytearray()}
    closed: set[int] = set()
    while 5 not in closed:
        read_stream(raw, streams, closed, [])
    data, packets = bytes(streams[5]), []
    while data:
        kind, length = struct.unpack_from("<BI", data)
        packets.append((kind, data[5 : 5 + length]))
        data = data[5 + length :]
    assert packets == [(1, b"out\n"), (2, b"err\n"), (3, b"\x09")]
    raw.close()


def test_unknown_service_is_refused_with_clse(phone: VirtualPhone) -> None:
    raw = RawAdb(phone.port)
    raw.handshake()
    raw.send(A_OPEN, 7, 0, b"framebuffer:\0")
    assert raw.recv()[:3] == (A_CLSE, 0, 7)
    raw.close()


def bad_magic(raw: RawAdb) -> None:
    raw.sock.sendall(struct.pack("<6I", A_CNXN, 0x01000000, 4096, 0, 0, 0x12345678))


def over_max_payload(raw: RawAdb) -> None:
    raw.sock.sendall(struct.pack("<6I", A_CNXN, 0x01000000, 4096, MAX_PAYLOAD + 1, 0, A_CNXN ^ 0xFFFFFFFF))


def truncated_header(raw: RawAdb) -> None:
    raw.sock.sendall(b"CNXN\x00\x00")
    raw.sock.shutdown(1)  # half-close: the phone sees EOF in the middle of a header


def unknown_command(raw: RawAdb) -> None:
    raw.send(0x5A5A5A5A, 0, 0)


def bad_checksum(raw: RawAdb) -> None:
    raw.sock.sendall(struct.pack("<6I", A_CNXN, 0x01000000, 4096, 4, 999, A_CNXN ^ 0xFFFFFFFF) + b"host")


def open_before_cnxn(raw: RawAdb) -> None:
    raw.send(A_OPEN, 1, 0, b"shell:id\0")


@pytest.mark.parametrize(
    "attack", [bad_magic, over_max_payload, truncated_header, unknown_command, bad_checksum, open_before_cnxn]
)
def test_malformed_packets_close_that_connection_and_the_phone_keeps_serving(
    phone: VirtualPhone, attack
) -> None:
    raw = RawAdb(phone.port)
    attack(raw)
    assert raw.is_closed_by_peer()
    raw.close()
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10)
    assert dev.connect()
    assert dev.shell("echo still here") == "still here\n"
    dev.close()


def test_auth_messages_in_insecure_mode_are_ignored(phone: VirtualPhone) -> None:
    raw = RawAdb(phone.port)
    raw.handshake()
    raw.send(A_AUTH, 2, 0, b"x" * 256)
    raw.send(A_OPEN, 1, 0, b"shell:echo ok\0")
    assert raw.recv()[0] == A_OKAY
    assert raw.recv()[3] == b"ok\n"
    raw.close()
