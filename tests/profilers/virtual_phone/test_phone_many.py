"""Several phones at once (one process and several), each with its own state; the CLI entry point."""

from __future__ import annotations

import argparse
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from adb_shell.adb_device import AdbDeviceTcp

from profilers.virtual_phone import ProfileError, VirtualPhone, list_profiles, load_profile
from profilers.virtual_phone.cli import add_arguments, build_phones
from profilers.virtual_phone.cli import run as run_cli


def test_shipped_profiles() -> None:
    names = list_profiles()
    assert {"virtual-flagship", "virtual-midrange", "virtual-budget-unrooted"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert "Virtual" in profile.props["ro.product.model"]
    assert len(load_profile("virtual-flagship").clusters) == 3
    assert len(load_profile("virtual-midrange").clusters) == 2
    assert load_profile("virtual-budget-unrooted").rooted is False
    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile("pixel-9")


def test_two_phones_in_one_process_keep_separate_state(tmp_path: Path) -> None:
    with (
        VirtualPhone("virtual-flagship", state_dir=tmp_path / "a") as a,
        VirtualPhone("virtual-midrange", state_dir=tmp_path / "b") as b,
    ):
        assert a.port != b.port
        da, db = (AdbDeviceTcp("127.0.0.1", p.port) for p in (a, b))
        da.connect()
        db.connect()
        da.push(io.BytesIO(b"only on a"), "/data/local/tmp/f")
        assert da.shell("cat /data/local/tmp/f") == "only on a"
        assert "No such file" in db.shell("cat /data/local/tmp/f")
        assert db.shell("getprop ro.product.model") == "latfarm Virtual Midrange\n"
        assert da.shell("nproc") == db.shell("nproc") == "8\n"
        da.close()
        db.close()


def test_cli_builds_consecutive_phones_with_flags(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "6000",
            "--count",
            "3",
            "--state-dir",
            str(tmp_path),
            "--unrooted",
            "--hang-command",
            "sleep",
            "--bench-cpu-seconds",
            "30",
            "--bench-max-runs",
            "500",
        ]
    )
    phones = build_phones(args)
    assert phones[0].runtime.bench_limits.cpu_seconds == 30 and phones[0].runtime.bench_limits.max_runs == 500
    assert [p._requested_port for p in phones] == [6000, 6001, 6002]
    assert [p.state_dir for p in phones] == [tmp_path / f"phone-{i}" for i in range(3)]
    assert all(not p.runtime.rooted for p in phones)
    assert phones[0].fault_control.current().hang_commands == ("sleep",)


def test_phones_in_another_process_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "profilers.virtual_phone",
            "--port",
            "0",
            "--count",
            "2",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        ports = []
        for i, line in enumerate(lines):
            assert line.startswith("virtual phone virtual-flagship listening on 127.0.0.1:"), line
            assert f"(state: {tmp_path / f'phone-{i}'})" in line
            ports.append(int(line.split("127.0.0.1:")[1].split()[0]))
        for port in ports:
            dev = AdbDeviceTcp("127.0.0.1", port)
            dev.connect()
            assert dev.shell("echo up") == "up\n"
            dev.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_cli_reports_bad_input_and_busy_ports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run_cli(parser.parse_args(["--profile", "pixel-9", "--state-dir", str(tmp_path)])) == 2
    assert "unknown profile 'pixel-9'" in capsys.readouterr().out
    assert run_cli(parser.parse_args(["--secure", "--state-dir", str(tmp_path)])) == 2
    assert "--secure needs --authorized-keys" in capsys.readouterr().out
    with VirtualPhone(state_dir=tmp_path / "busy") as busy:
        args = parser.parse_args(["--port", str(busy.port), "--state-dir", str(tmp_path / "other")])
        assert run_cli(args) == 1
        assert f"cannot listen on 127.0.0.1:{busy.port}" in capsys.readouterr().out
