"""Faults on request: by constructor, by `set_fault`, and by editing the control file at run time."""

from __future__ import annotations

import io
import json
import socket
import time

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.exceptions import AdbTimeoutError, PushFailedError, TcpTimeoutException

from profilers.virtual_phone import FaultSpec, FaultSpecError, VirtualPhone


def connect(phone: VirtualPhone, timeout: float = 10) -> AdbDeviceTcp:
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=timeout)
    dev.connect(read_timeout_s=timeout)
    return dev


def test_drop_after_n_messages(tmp_path) -> None:
    with VirtualPhone(state_dir=tmp_path / "p", faults=FaultSpec(drop_after_messages=3)) as phone:
        dev = connect(phone, timeout=2)

        def keep_talking() -> None:
            for _ in range(3):
                dev.shell("echo hi", read_timeout_s=2)

        with pytest.raises((AdbTimeoutError, TcpTimeoutException, OSError)):
            keep_talking()
        dev.close()
        phone.set_fault(drop_after_messages=None)
        dev = connect(phone)
        assert [dev.shell("echo hi") for _ in range(5)] == ["hi\n"] * 5
        dev.close()


def test_a_hung_command_never_answers_but_others_do(phone: VirtualPhone) -> None:
    phone.set_fault(hang_commands=["cat /data/local/tmp/hang"])
    dev = connect(phone, timeout=1)
    with pytest.raises((AdbTimeoutError, TcpTimeoutException)):
        dev.shell("cat /data/local/tmp/hang", read_timeout_s=0.5, timeout_s=0.5)
    dev.close()
    dev = connect(phone)
    assert dev.shell("echo alive") == "alive\n"
    dev.close()


def test_offline_via_the_control_file_and_back(phone: VirtualPhone) -> None:
    control = phone.state_dir / "faults.json"
    control.write_text(json.dumps({"offline": True}))
    with socket.create_connection(("127.0.0.1", phone.port), timeout=5) as s:
        assert s.recv(1) == b"", "an offline phone closes new connections"
    control.write_text(json.dumps({"offline": False}))
    dev = connect(phone)
    assert dev.shell("echo back") == "back\n"
    # a live connection is dropped at its next message once the phone goes offline
    phone.set_fault(offline=True)
    with pytest.raises((AdbTimeoutError, TcpTimeoutException, OSError)):
        dev.shell("echo gone", read_timeout_s=1, timeout_s=1)
    dev.close()
    phone.clear_faults()
    assert connect(phone).shell("echo again") == "again\n"


def test_no_space_refuses_pushes(phone: VirtualPhone) -> None:
    phone.set_fault(no_space=True)
    dev = connect(phone)
    with pytest.raises(PushFailedError, match="No space left on device"):
        dev.push(io.BytesIO(b"x" * 1000), "/data/local/tmp/f.bin")
    assert dev.stat("/data/local/tmp/f.bin") == (0, 0, 0)
    phone.set_fault(no_space=False)
    dev.push(io.BytesIO(b"x" * 1000), "/data/local/tmp/f.bin")
    assert dev.stat("/data/local/tmp/f.bin")[1] == 1000
    dev.close()


def test_slow_transfers_still_deliver_the_bytes_at_the_limited_rate(phone: VirtualPhone) -> None:
    phone.set_fault(slow_transfer_bytes_per_s=1_000_000)
    dev = connect(phone)
    payload = bytes(range(256)) * 1000  # 256 kB: at least 0.25 s at 1 MB/s
    start = time.monotonic()
    dev.push(io.BytesIO(payload), "/data/local/tmp/slow.bin")
    elapsed = time.monotonic() - start
    back = io.BytesIO()
    dev.pull("/data/local/tmp/slow.bin", back)
    assert back.getvalue() == payload
    assert elapsed >= 0.25  # a lower bound set by the phone's own sleeps, not a performance claim
    dev.close()


def test_a_broken_control_file_is_ignored(phone: VirtualPhone) -> None:
    (phone.state_dir / "faults.json").write_text("{not json")
    assert connect(phone).shell("echo ok") == "ok\n"
    (phone.state_dir / "faults.json").write_text(json.dumps({"offlin": True}))
    assert connect(phone).shell("echo ok") == "ok\n"


def test_fault_spec_validation() -> None:
    with pytest.raises(FaultSpecError, match="unknown fault"):
        FaultSpec.from_dict({"explode": True})
    with pytest.raises(FaultSpecError, match="offline"):
        FaultSpec.from_dict({"offline": "yes"})
    with pytest.raises(FaultSpecError, match="slow_transfer_bytes_per_s"):
        FaultSpec.from_dict({"slow_transfer_bytes_per_s": -1})
    assert FaultSpec.from_dict({"hang_commands": ["*"]}).hangs("anything")
