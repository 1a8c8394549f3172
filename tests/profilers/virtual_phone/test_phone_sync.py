"""sync: push, pull, stat and list through adb_shell, with modes, refusals and no half-written files."""

from __future__ import annotations

import io
import os
import stat

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.exceptions import AdbCommandFailureException, PushFailedError

from profilers.virtual_phone import VirtualPhone, load_profile
from profilers.virtual_phone.profile import profile_from_dict
from tests.profilers.virtual_phone.phone_kit import run


def test_push_then_pull_of_5_mb_round_trips_the_bytes(device: AdbDeviceTcp) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    device.push(io.BytesIO(payload), "/data/local/tmp/big.bin", st_mode=0o100640)
    back = io.BytesIO()
    device.pull("/data/local/tmp/big.bin", back)
    assert back.getvalue() == payload
    mode, size, _mtime = device.stat("/data/local/tmp/big.bin")
    assert size == len(payload)
    assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o640
    out, rc = run(device, "stat -c %s /data/local/tmp/big.bin")
    assert (out, rc) == (f"{len(payload)}\n", 0)


def test_push_creates_parent_directories_and_list_shows_the_file(device: AdbDeviceTcp) -> None:
    device.push(io.BytesIO(b"abc"), "/data/local/tmp/a/b/c.txt")
    names = {bytes(f.filename).decode(): f for f in device.list("/data/local/tmp/a/b")}
    assert names["c.txt"].size == 3
    assert run(device, "cat /data/local/tmp/a/b/c.txt") == ("abc", 0)


def test_standard_directories_exist_from_the_start(device: AdbDeviceTcp) -> None:
    for path in ("/data/local/tmp", "/sdcard"):
        mode, _size, _mtime = device.stat(path)
        assert stat.S_ISDIR(mode), path
    assert device.stat("/no/such/path") == (0, 0, 0)


def test_pull_of_a_missing_file_fails(device: AdbDeviceTcp) -> None:
    with pytest.raises(AdbCommandFailureException):
        device.pull("/data/local/tmp/missing.bin", io.BytesIO())


def test_push_outside_the_shell_users_directories_is_refused(
    device: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    with pytest.raises(PushFailedError):
        device.push(io.BytesIO(b"x"), "/system/bin/evil")
    assert not (phone.rootfs / "system/bin/evil").exists()
    assert run(device, "echo still fine") == ("still fine\n", 0)


def test_push_beyond_free_space_fails_and_leaves_nothing(tmp_path) -> None:
    raw = load_profile("virtual-midrange")
    small = profile_from_dict(
        {
            "name": "tiny-disk",
            "props": raw.props,
            "clusters": [
                {"name": c.name, "cpus": list(c.cpus), "frequencies_khz": list(c.frequencies_khz)}
                for c in raw.clusters
            ],
            "storage_free_bytes": 100_000,
        }
    )
    with VirtualPhone(profile=small, state_dir=tmp_path / "p") as phone:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=10)
        dev.connect()
        with pytest.raises(PushFailedError, match="No space left on device"):
            dev.push(io.BytesIO(b"x" * 300_000), "/data/local/tmp/big.bin")
        assert dev.stat("/data/local/tmp/big.bin") == (0, 0, 0)
        assert list((phone.rootfs / "data/local/tmp").iterdir()) == []
        dev.push(io.BytesIO(b"x" * 1000), "/data/local/tmp/small.bin")
        assert dev.stat("/data/local/tmp/small.bin")[1] == 1000
        dev.close()


def test_pull_of_sysfs_files_works(device: AdbDeviceTcp) -> None:
    out = io.BytesIO()
    device.pull("/sys/devices/system/cpu/cpufreq/policy7/cpuinfo_max_freq", out)
    assert out.getvalue() == b"2995200\n"
