"""The sandboxed shell, driven directly (no socket): grammar, builtins, permissions, escapes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from profilers.virtual_phone.faults import FaultControl
from profilers.virtual_phone.profile import load_profile
from profilers.virtual_phone.runtime import PhoneRuntime
from profilers.virtual_phone.shell import Shell
from profilers.virtual_phone.shell_context import Output


@pytest.fixture
def runtime(tmp_path: Path) -> PhoneRuntime:
    return PhoneRuntime(
        load_profile("virtual-flagship"), tmp_path, rooted=True, faults=FaultControl(tmp_path)
    )


def sh(runtime: PhoneRuntime, line: str) -> tuple[str, str, int]:
    """(stdout, stderr, status) of one command line in a fresh shell session."""
    out = Output()
    status = asyncio.run(Shell(runtime).run(line, out))
    text = lambda fd: b"".join(d for f, d in out.events if f == fd).decode()  # noqa: E731
    return text(1), text(2), status


@pytest.mark.parametrize(
    "line",
    [
        "cat ../../../etc/passwd",
        "cat /etc/passwd",
        "cat /data/local/tmp/../../../../etc/passwd",
        "cd /data/local/tmp; cat ../../../../../etc/passwd",
        "cat /data/local/tmp/link",
        "cat /data/local/tmp/dirlink/passwd",
        "ls /data/local/tmp/dirlink",
    ],
)
def test_no_path_escapes_the_sandbox(runtime: PhoneRuntime, line: str) -> None:
    tmp = runtime.fs.root / "data/local/tmp"
    os.symlink("/etc/passwd", tmp / "link")
    os.symlink("/etc", tmp / "dirlink")
    out, err, status = sh(runtime, line)
    assert status != 0
    assert "root:" not in out
    assert "No such file or directory" in err or "Permission denied" in err


def test_writes_through_an_escaping_symlink_are_refused(runtime: PhoneRuntime, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    os.symlink(outside, runtime.fs.root / "data/local/tmp/out")
    _out, err, status = sh(runtime, "echo pwned > /data/local/tmp/out")
    assert status != 0 and "Permission denied" in err
    assert not outside.exists()


def test_unknown_commands_fail_with_127(runtime: PhoneRuntime) -> None:
    assert sh(runtime, "frobnicate --now") == ("", "sh: frobnicate: not found\n", 127)
    assert sh(runtime, "frobnicate; echo $?") == ("127\n", "sh: frobnicate: not found\n", 0)


def test_lists_and_status(runtime: PhoneRuntime) -> None:
    assert sh(runtime, "true && echo a || echo b")[0] == "a\n"
    assert sh(runtime, "false && echo a || echo b")[0] == "b\n"
    assert sh(runtime, "false; echo $?; true; echo $?")[0] == "1\n0\n"
    assert sh(runtime, "echo one; exit 5; echo two") == ("one\n", "", 5)


def test_quoting_and_variables(runtime: PhoneRuntime) -> None:
    assert sh(runtime, "echo 'a  b' \"c  $HOME\" d\\ e")[0] == "a  b c  / d e\n"
    assert sh(runtime, "X=41; echo ${X}1 '$X'")[0] == "411 $X\n"
    assert sh(runtime, 'echo "it\'s" \'say "hi"\'')[0] == 'it\'s say "hi"\n'


def test_redirections(runtime: PhoneRuntime) -> None:
    assert (
        sh(runtime, "echo a > /data/local/tmp/f; echo b >> /data/local/tmp/f; cat /data/local/tmp/f")[0]
        == "a\nb\n"
    )
    assert sh(runtime, "cat /nope 2>/dev/null; echo $?") == ("1\n", "", 0)
    assert sh(runtime, "cat /nope 2>&1") == ("cat: /nope: No such file or directory\n", "", 1)
    assert sh(runtime, "echo x > /system/x") == ("", "sh: can't create /system/x: Read-only file system\n", 1)
    assert sh(runtime, "echo data > /data/local/tmp/g; wc -c < /data/local/tmp/g")[0] == "5\n"


def test_pipes_and_globs(runtime: PhoneRuntime) -> None:
    out, _err, status = sh(runtime, "cat /sys/class/thermal/thermal_zone*/type | grep cpu | wc -l")
    assert (out, status) == ("2\n", 0)
    assert sh(runtime, "ls /sys/devices/system/cpu/cpufreq/")[0] == "policy0\npolicy4\npolicy7\n"
    assert sh(runtime, "echo /sys/devices/system/cpu/cpufreq/policy*")[0].split() == [
        "/sys/devices/system/cpu/cpufreq/policy0",
        "/sys/devices/system/cpu/cpufreq/policy4",
        "/sys/devices/system/cpu/cpufreq/policy7",
    ]
    assert sh(runtime, "echo '*'")[0] == "*\n"


def test_file_commands(runtime: PhoneRuntime) -> None:
    d = "/data/local/tmp/x/y"
    assert sh(runtime, f"mkdir -p {d} && test -d {d} && echo ok")[0] == "ok\n"
    assert sh(runtime, f"echo hello > {d}/f; sha256sum {d}/f")[0] == (
        f"5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  {d}/f\n"
    )
    assert (
        sh(runtime, f"head -n 1 {d}/f; stat -c %s {d}/f; [ -f {d}/f ] && echo file")[0] == "hello\n6\nfile\n"
    )
    assert sh(runtime, "rm -rf /data/local/tmp/x; test -e /data/local/tmp/x; echo $?")[0] == "1\n"
    assert sh(runtime, "rm /data/local/tmp/none")[2] == 1
    assert sh(runtime, "rm -f /data/local/tmp/none")[2] == 0


def test_executables_need_the_x_bit(runtime: PhoneRuntime) -> None:
    sh(
        runtime,
        "echo '#!/system/bin/sh' > /data/local/tmp/s.sh; echo 'echo from script' >> /data/local/tmp/s.sh",
    )
    assert sh(runtime, "/data/local/tmp/s.sh") == ("", "sh: /data/local/tmp/s.sh: Permission denied\n", 126)
    assert sh(runtime, "chmod 755 /data/local/tmp/s.sh && /data/local/tmp/s.sh") == ("from script\n", "", 0)
    assert sh(runtime, "/data/local/tmp/missing")[2] == 127
    (runtime.fs.root / "data/local/tmp/elf").write_bytes(b"\x7fELF\x02\x01\x01")
    sh(runtime, "chmod +x /data/local/tmp/elf")
    assert sh(runtime, "/data/local/tmp/elf")[2] == 126


def test_identity_and_root(runtime: PhoneRuntime) -> None:
    assert sh(runtime, "id")[0].startswith("uid=2000(shell)")
    assert sh(runtime, "su -c id")[0].startswith("uid=0(root)")
    assert sh(runtime, "su 0 id")[0].startswith("uid=0(root)")
    assert sh(runtime, "su -c 'echo x > /system/x' && cat /system/x")[0] == "x\n"
    assert sh(runtime, "nproc")[0] == "8\n"
    assert sh(runtime, "getprop ro.product.cpu.abi; getprop ro.nothing")[0] == "arm64-v8a\n\n"
    assert "[ro.board.platform]: [virtual-taro]" in sh(runtime, "getprop")[0]


def test_unrooted_phone_has_no_su(tmp_path: Path) -> None:
    rt = PhoneRuntime(
        load_profile("virtual-budget-unrooted"), tmp_path, rooted=False, faults=FaultControl(tmp_path)
    )
    assert sh(rt, "su -c id") == ("", "sh: su: not found\n", 127)


def test_syntax_errors_are_reported(runtime: PhoneRuntime) -> None:
    assert sh(runtime, "echo 'unterminated")[2] == 2
    assert sh(runtime, "&& echo x")[2] == 2


def test_compound_commands(runtime: PhoneRuntime) -> None:
    policies = "/sys/devices/system/cpu/cpufreq/policy*"
    assert sh(runtime, f"for p in {policies}; do cat $p/related_cpus; done")[0] == "0 1 2 3\n4 5 6\n7\n"
    assert sh(runtime, "for x in a 'b c'; do echo \"<$x>\"; done")[0] == "<a>\n<b c>\n"
    assert sh(runtime, "if test -d /sdcard; then echo dir; else echo none; fi")[0] == "dir\n"
    assert sh(runtime, "if false; then echo 1; elif true; then echo 2; else echo 3; fi")[0] == "2\n"
    assert sh(runtime, "if false; then echo 1; fi; echo $?")[0] == "0\n"
    log = "/data/local/tmp/log"
    loop = (
        f"while [ ! -f {log}.stop ]; do echo x >> {log}; wc -l < {log} | grep -q 3 && touch {log}.stop; done"
    )
    assert sh(runtime, f"{loop}; wc -l < {log}")[0] == "3\n"
    assert sh(runtime, "until true; do echo never; done; echo $?")[0] == "0\n"
    assert sh(runtime, "! false && echo negated")[0] == "negated\n"
    assert sh(runtime, "for i in 1 2\ndo\n  echo $i\ndone")[0] == "1\n2\n"
    assert sh(runtime, "for; do echo; done")[2] == 2
    assert sh(runtime, "if true; then echo x")[2] == 2


def test_command_substitution_and_field_splitting(runtime: PhoneRuntime) -> None:
    assert sh(runtime, "echo $(getprop ro.product.cpu.abi)-x")[0] == "arm64-v8a-x\n"
    assert sh(runtime, "echo \"[$(printf 'a   b')]\" [$(printf 'a   b')]")[0] == "[a   b] [a b]\n"
    assert sh(
        runtime, "for c in $(cat /sys/devices/system/cpu/cpufreq/policy4/related_cpus); do echo cpu$c; done"
    )[0] == ("cpu4\ncpu5\ncpu6\n")
    assert sh(runtime, "X='1 2'; for v in $X; do echo $v; done; echo \"$X\"")[0] == "1\n2\n1 2\n"
    assert sh(runtime, "echo $UNSET end")[0] == "end\n"
    assert sh(runtime, 'echo "" x')[0] == " x\n"
    assert sh(runtime, "echo $(nosuch) ok") == ("ok\n", "sh: nosuch: not found\n", 0)
