"""The phone shell's builtins: `echo`, `cat`, `ls`, `test`, `taskset`, `su`, … (the `BUILTINS` table).

Each builtin is `async (shell, ctx, args) -> exit status`; it writes through `ctx` and reaches the phone's
filesystem and properties through the `ShellSession` it is given, never through the interpreter itself.

Why one module past 500 lines: it is ~35 small, independent commands and the one table naming them;
splitting them by theme would scatter the table's entries without separating any concept.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import re
import shlex
import stat as stat_mod

from profilers.virtual_phone.filesystem import FsError
from profilers.virtual_phone.shell_context import Builtin, Context, ExitShell, ShellSession

MAX_SLEEP_S = 30.0


def _fs_err(ctx: Context, target: str, exc: FsError) -> int:
    ctx.err(f"{ctx.name}: {target}: {exc}\n".encode())
    return 1


async def _true(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    return 0


async def _false(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    return 1


async def _echo(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    rest = args[1:]
    newline = True
    escapes = False
    while rest and rest[0] in ("-n", "-e", "-ne", "-en", "-E"):
        flag = rest.pop(0)
        newline = newline and "n" not in flag
        escapes = escapes or "e" in flag[1:]
    text = " ".join(rest)
    if escapes:
        text = text.encode().decode("unicode_escape")
    ctx.out((text + ("\n" if newline else "")).encode())
    return 0


async def _printf(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    if len(args) < 2:
        ctx.err(b"printf: missing format\n")
        return 1
    fmt = args[1].encode().decode("unicode_escape")
    try:
        ctx.out((fmt % tuple(_printf_args(fmt, args[2:]))).encode())
    except (TypeError, ValueError):
        ctx.out(fmt.encode())
    return 0


def _printf_args(fmt: str, values: list[str]) -> list[object]:
    specs = re.findall(r"%[-0-9.]*([sdif%])", fmt)
    specs = [s for s in specs if s != "%"]
    out: list[object] = []
    for i, s in enumerate(specs):
        v = values[i] if i < len(values) else ""
        out.append(v if s == "s" else (int(float(v or 0)) if s in "di" else float(v or 0)))
    return out


async def _cat(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    files = [a for a in args[1:] if a != "-"] if len(args) > 1 else []
    if len(args) == 1:
        ctx.out(ctx.stdin)
        return 0
    status = 0
    for f in files:
        try:
            ctx.out(sh.fs.read(sh.path(f)))
        except FsError as exc:
            status = _fs_err(ctx, f, exc)
    return status


async def _head_tail(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    n = 10
    files: list[str] = []
    rest = args[1:]
    while rest:
        a = rest.pop(0)
        if a == "-n" and rest:
            n = int(rest.pop(0))
        elif re.fullmatch(r"-n?\d+", a):
            n = int(a.lstrip("-n"))
        else:
            files.append(a)
    blobs = []
    if not files:
        blobs.append(ctx.stdin)
    for f in files:
        try:
            blobs.append(sh.fs.read(sh.path(f)))
        except FsError as exc:
            return _fs_err(ctx, f, exc)
    for b in blobs:
        lines = b.splitlines(keepends=True)
        ctx.out(b"".join(lines[:n] if args[0] == "head" else lines[-n:] if n else []))
    return 0


async def _wc(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    flags = "".join(a[1:] for a in args[1:] if a.startswith("-"))
    files = [a for a in args[1:] if not a.startswith("-")]
    items = [("", ctx.stdin)] if not files else []
    for f in files:
        try:
            items.append((f, sh.fs.read(sh.path(f))))
        except FsError as exc:
            return _fs_err(ctx, f, exc)
    for name, data in items:
        counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
        chosen = [str(counts[k]) for k in "lwc" if k in flags] or [str(counts[k]) for k in "lwc"]
        ctx.out((" ".join(chosen) + (f" {name}" if name else "") + "\n").encode())
    return 0


async def _ls(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    flags = "".join(a[1:] for a in args[1:] if a.startswith("-") and len(a) > 1)
    targets = [a for a in args[1:] if not a.startswith("-") or a == "-"] or ["."]
    status = 0
    for t in targets:
        vpath = sh.path(t)
        try:
            st = sh.fs.stat(vpath)
            names = sh.fs.listdir(vpath) if st.is_dir and "d" not in flags else [t]
        except FsError as exc:
            ctx.err(f"ls: {t}: {exc}\n".encode())
            status = 1
            continue
        if "a" not in flags:
            names = [n for n in names if not n.startswith(".")]
        if len(targets) > 1 and st.is_dir:
            ctx.out(f"{t}:\n".encode())
        for n in names:
            if "l" in flags:
                full = vpath if names == [t] else posixpath.join(vpath, n)
                try:
                    s = sh.fs.stat(full)
                except FsError:
                    continue
                perms = stat_mod.filemode(s.mode)
                ctx.out(f"{perms} 1 shell shell {s.size:>8} 2024-01-01 00:00 {n}\n".encode())
            else:
                ctx.out(f"{n}\n".encode())
    return status


async def _mkdir(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    parents = any(a.startswith("-") and "p" in a for a in args[1:])
    status = 0
    for d in (a for a in args[1:] if not a.startswith("-")):
        try:
            sh.fs.mkdir(sh.path(d), parents=parents, as_root=ctx.root)
        except FsError as exc:
            ctx.err(f"mkdir: '{d}': {exc}\n".encode())
            status = 1
    return status


async def _rm(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    flags = "".join(a[1:] for a in args[1:] if a.startswith("-"))
    force, recursive = "f" in flags, "r" in flags or "R" in flags
    status = 0
    for f in (a for a in args[1:] if not a.startswith("-")):
        try:
            sh.fs.remove(sh.path(f), recursive=recursive, as_root=ctx.root)
        except FsError as exc:
            if force and str(exc) == "No such file or directory":
                continue
            ctx.err(f"rm: {f}: {exc}\n".encode())
            status = 1
    return status


def _chmod_mode(spec: str, current: int) -> int:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    mode = current & 0o7777
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwx]*)", clause)
        if not m:
            raise ValueError(spec)
        who = m.group(1) or "a"
        bits = sum({"r": 4, "w": 2, "x": 1}[c] for c in m.group(3))
        mask = 0
        for w in "ugo" if "a" in who else who:
            mask |= bits << {"u": 6, "g": 3, "o": 0}[w]
        full = 0
        for w in "ugo" if "a" in who else who:
            full |= 7 << {"u": 6, "g": 3, "o": 0}[w]
        if m.group(2) == "+":
            mode |= mask
        elif m.group(2) == "-":
            mode &= ~mask
        else:
            mode = (mode & ~full) | mask
    return mode


async def _chmod(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    rest = [a for a in args[1:] if a not in ("-R",)]
    if len(rest) < 2:
        ctx.err(b"chmod: needs MODE FILE...\n")
        return 1
    status = 0
    for f in rest[1:]:
        vpath = sh.path(f)
        try:
            mode = _chmod_mode(rest[0], sh.fs.stat(vpath).mode)
            sh.fs.chmod(vpath, mode, as_root=ctx.root)
        except ValueError:
            ctx.err(f"chmod: bad mode '{rest[0]}'\n".encode())
            return 1
        except FsError as exc:
            ctx.err(f"chmod: {f}: {exc}\n".encode())
            status = 1
    return status


async def _touch(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    for f in args[1:]:
        vpath = sh.path(f)
        try:
            if not sh.fs.exists(vpath):
                sh.fs.write(vpath, b"", as_root=ctx.root)
        except FsError as exc:
            return _fs_err(ctx, f, exc)
    return 0


async def _id(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    if ctx.root:
        ctx.out(b"uid=0(root) gid=0(root) groups=0(root) context=u:r:su:s0\n")
    else:
        ctx.out(
            b"uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),1011(adb),"
            b"1015(sdcard_rw),1028(sdcard_r),3001(net_bt_admin),3002(net_bt),3003(inet),3006(net_bw_stats) "
            b"context=u:r:shell:s0\n"
        )
    return 0


async def _whoami(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    ctx.out(b"root\n" if ctx.root else b"shell\n")
    return 0


async def _nproc(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    ctx.out(f"{sh.rt.profile.cpu_count}\n".encode())
    return 0


async def _sleep(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    try:
        seconds = float(args[1].rstrip("s"))
    except (IndexError, ValueError):
        ctx.err(b"sleep: invalid number\n")
        return 1
    await asyncio.sleep(min(max(seconds, 0.0), MAX_SLEEP_S))
    return 0


async def _getprop(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    props = sh.rt.props()
    if len(args) == 1:
        ctx.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())).encode())
    else:
        ctx.out((props.get(args[1], args[2] if len(args) > 2 else "") + "\n").encode())
    return 0


async def _uname(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    if "-a" in args:
        ctx.out(b"Linux localhost 5.10.149-virtual #1 SMP PREEMPT aarch64 Toybox\n")
    elif "-m" in args:
        ctx.out(b"aarch64\n")
    elif "-r" in args:
        ctx.out(b"5.10.149-virtual\n")
    else:
        ctx.out(b"Linux\n")
    return 0


def _test_expr(sh: ShellSession, expr: list[str]) -> bool:
    if not expr:
        return False
    if expr[0] == "!":
        return not _test_expr(sh, expr[1:])
    if len(expr) == 1:
        return expr[0] != ""
    if len(expr) == 2:
        op, arg = expr
        if op == "-n":
            return arg != ""
        if op == "-z":
            return arg == ""
        vpath = sh.path(arg)
        try:
            st = sh.fs.stat(vpath)
        except FsError:
            return False
        return {
            "-e": True,
            "-f": not st.is_dir,
            "-d": st.is_dir,
            "-s": st.size > 0,
            "-x": bool(st.mode & 0o111),
            "-r": True,
            "-w": True,
        }.get(op, False)
    if len(expr) == 3:
        a, op, b = expr
        if op in ("=", "=="):
            return a == b
        if op == "!=":
            return a != b
        ints = {
            "-eq": "__eq__",
            "-ne": "__ne__",
            "-lt": "__lt__",
            "-le": "__le__",
            "-gt": "__gt__",
            "-ge": "__ge__",
        }
        if op in ints:
            return bool(getattr(int(a), ints[op])(int(b)))
    raise ValueError(" ".join(expr))


async def _test(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    expr = args[1:]
    if args[0] == "[":
        if not expr or expr[-1] != "]":
            ctx.err(b"[: missing ]\n")
            return 2
        expr = expr[:-1]
    try:
        return 0 if _test_expr(sh, expr) else 1
    except ValueError:
        ctx.err(f"{args[0]}: syntax error\n".encode())
        return 2


def _parse_cpu_list(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            cpus.update(range(int(a), int(b) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


async def _taskset(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    rest = args[1:]
    try:
        if rest and rest[0] == "-c":
            cpus = _parse_cpu_list(rest[1])
            rest = rest[2:]
        elif rest and not rest[0].startswith("-"):
            mask = int(rest[0], 16)
            cpus = {i for i in range(64) if mask >> i & 1}
            rest = rest[1:]
        else:
            raise ValueError
    except (ValueError, IndexError):
        ctx.err(b"usage: taskset [-c] MASK|LIST COMMAND...\n")
        return 1
    valid = cpus & set(range(sh.rt.profile.cpu_count))
    if not valid:
        ctx.err(b"taskset: sched_setaffinity: Invalid argument\n")
        return 1
    if not rest:
        ctx.err(b"taskset: needs a command\n")
        return 1
    sub = Context(ctx.stdin, ctx.out, ctx.err, ctx.root, valid, rest[0], ctx.cwd)
    return await sh.execute(sub, rest)


async def _su(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    rest = args[1:]
    if rest and rest[0] in ("0", "root"):
        rest = rest[1:]
    if rest and rest[0] == "-c":
        return await sh.run_nested(ctx, " ".join(rest[1:]), root=True)
    if not rest:
        ctx.err(b"su: interactive shells are not supported on this phone\n")
        return 1
    return await sh.run_nested(ctx, shlex.join(rest), root=True)


async def _sh(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    if len(args) >= 3 and args[1] == "-c":
        return await sh.run_nested(ctx, args[2], root=ctx.root)
    if len(args) == 1:
        return await sh.run_nested(ctx, ctx.stdin.decode(errors="replace"), root=ctx.root)
    ctx.err(b"sh: only 'sh -c CMD' is supported\n")
    return 2


async def _exit(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    try:
        status = int(args[1]) & 0xFF if len(args) > 1 else sh.status
    except ValueError:
        ctx.err(f"sh: exit: {args[1]}: bad number\n".encode())
        status = 2
    raise ExitShell(status)


async def _cd(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    target = sh.path(args[1] if len(args) > 1 else "/")
    try:
        if not sh.fs.stat(target).is_dir:
            raise FsError("Not a directory")
    except FsError as exc:
        ctx.err(f"sh: cd: {args[1] if len(args) > 1 else '/'}: {exc}\n".encode())
        return 2
    sh.cwd = target
    return 0


async def _pwd(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    ctx.out(f"{sh.cwd}\n".encode())
    return 0


async def _digest(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    algo = {"sha256sum": "sha256", "md5sum": "md5", "sha1sum": "sha1"}[args[0]]
    files = [a for a in args[1:] if not a.startswith("-")]
    if not files:
        ctx.out(f"{hashlib.new(algo, ctx.stdin).hexdigest()}  -\n".encode())
        return 0
    status = 0
    for f in files:
        try:
            ctx.out(f"{hashlib.new(algo, sh.fs.read(sh.path(f))).hexdigest()}  {f}\n".encode())
        except FsError as exc:
            status = _fs_err(ctx, f, exc)
    return status


async def _stat(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    fmt = None
    files = []
    rest = args[1:]
    while rest:
        a = rest.pop(0)
        if a == "-c" and rest:
            fmt = rest.pop(0)
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        else:
            files.append(a)
    status = 0
    for f in files:
        try:
            st = sh.fs.stat(sh.path(f))
        except FsError as exc:
            ctx.err(f"stat: '{f}': {exc}\n".encode())
            status = 1
            continue
        if fmt is None:
            ctx.out(f"  File: {f}\n  Size: {st.size}\n Access: ({st.mode & 0o7777:04o})\n".encode())
            continue
        fields = {
            "s": str(st.size),
            "a": f"{st.mode & 0o7777:o}",
            "A": stat_mod.filemode(st.mode),
            "n": f,
            "Y": str(st.mtime),
            "F": "directory" if st.is_dir else "regular file",
            "f": f"{st.mode:x}",
        }
        ctx.out((_expand_stat_format(fmt, fields) + "\n").encode())
    return status


def _expand_stat_format(fmt: str, fields: dict[str, str]) -> str:
    """`stat -c` format: each `%X` becomes its field (an unknown one stays as written)."""
    return re.sub(r"%(.)", lambda m: fields.get(m.group(1), m.group(0)), fmt)


async def _df(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    free_k = sh.fs.free_bytes() // 1024
    used_k = sh.fs.used_bytes() // 1024
    ctx.out(b"Filesystem      1K-blocks    Used Available Use% Mounted on\n")
    total = free_k + used_k
    pct = int(100 * used_k / total) if total else 0
    for mount in ("/data", "/sdcard"):
        ctx.out(f"/dev/block/dm-9 {total:>10} {used_k:>7} {free_k:>9} {pct:>3}% {mount}\n".encode())
    return 0


async def _grep(sh: ShellSession, ctx: Context, args: list[str]) -> int:
    flags = ""
    rest = args[1:]
    while rest and rest[0].startswith("-") and len(rest[0]) > 1:
        flags += rest.pop(0)[1:]
    if not rest:
        ctx.err(b"usage: grep [-cvqiEF] PATTERN [FILE...]\n")
        return 2
    pattern, files = rest[0], rest[1:]
    try:
        rx = re.compile(re.escape(pattern) if "F" in flags else pattern, re.IGNORECASE if "i" in flags else 0)
    except re.error:
        ctx.err(b"grep: bad regex\n")
        return 2
    blobs = [ctx.stdin] if not files else []
    for f in files:
        try:
            blobs.append(sh.fs.read(sh.path(f)))
        except FsError as exc:
            _fs_err(ctx, f, exc)
            return 2
    hits = [
        line
        for b in blobs
        for line in b.decode(errors="replace").splitlines()
        if bool(rx.search(line)) != ("v" in flags)
    ]
    if "q" not in flags:
        ctx.out((f"{len(hits)}\n" if "c" in flags else "".join(h + "\n" for h in hits)).encode())
    return 0 if hits else 1


BUILTINS: dict[str, Builtin] = {
    "true": _true,
    ":": _true,
    "false": _false,
    "echo": _echo,
    "printf": _printf,
    "cat": _cat,
    "head": _head_tail,
    "tail": _head_tail,
    "wc": _wc,
    "ls": _ls,
    "mkdir": _mkdir,
    "rm": _rm,
    "chmod": _chmod,
    "touch": _touch,
    "id": _id,
    "whoami": _whoami,
    "nproc": _nproc,
    "sleep": _sleep,
    "getprop": _getprop,
    "uname": _uname,
    "test": _test,
    "[": _test,
    "taskset": _taskset,
    "su": _su,
    "sh": _sh,
    "exit": _exit,
    "cd": _cd,
    "pwd": _pwd,
    "sha256sum": _digest,
    "sha1sum": _digest,
    "md5sum": _digest,
    "stat": _stat,
    "df": _df,
    "grep": _grep,
}
