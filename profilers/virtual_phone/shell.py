"""The phone's `sh`: a small sandboxed interpreter over `Filesystem` — never the host shell.

The grammar is in `shell_syntax`, the builtins in `shell_builtins`, the contract between them in
`shell_context`; this module evaluates the parsed tree: lists, pipelines, compound commands, word expansion
(variables, `$(…)`, field splitting, globs), redirections, and running files (the benchmark marker runs
`bench`, a `#!…sh` script is interpreted). Pipeline stages run one after the other with a buffer in between,
`&` does not background, and every command of a list sees the whole stdin.

Nesting is bounded: compound commands inside each other plus shells inside shells (`$(…)`, `sh -c`, `su -c`,
scripts) may go `MAX_NESTING` deep, counted together, so a hostile command line ends in one "too deeply
nested" line instead of a RecursionError (the interpreter is recursive, frames add up across both kinds).
"""

from __future__ import annotations

import asyncio
import fnmatch
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from profilers.virtual_phone import bench, tflite_bench
from profilers.virtual_phone.filesystem import FsError
from profilers.virtual_phone.shell_builtins import BUILTINS
from profilers.virtual_phone.shell_context import Context, ExitShell, Output
from profilers.virtual_phone.shell_syntax import (
    MAX_LOOP_ITERATIONS,
    MAX_NESTING,
    Command,
    CommandList,
    ForLoop,
    IfClause,
    Node,
    Pipeline,
    Segment,
    ShellSyntaxError,
    parse_nested,
)

if TYPE_CHECKING:
    from profilers.virtual_phone.runtime import PhoneRuntime

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|\?)\}|\$([A-Za-z_][A-Za-z0-9_]*|\?|\$)")


@dataclass
class _Field:
    """One field being built by word expansion: its text, its glob pattern, whether it exists at all."""

    text: str = ""
    pattern: str = ""
    real: bool = False
    glob: bool = False


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


class Shell:
    """One shell session (one `shell:` stream): variables, cwd, `$?`, and whether it runs as root."""

    def __init__(self, runtime: PhoneRuntime, *, root: bool = False, depth: int = 0) -> None:
        self.rt = runtime
        self.fs = runtime.fs
        self.root = root
        self.depth = depth  # nesting used by the shells (and compound commands) around this one
        self._nesting = 0
        self.cwd = "/"
        self.status = 0
        self.env: dict[str, str] = {
            "PATH": "/sbin:/system/sbin:/system/bin:/system/xbin:/vendor/bin",
            "HOME": "/",
            "TMPDIR": "/data/local/tmp",
            "SHELL": "/system/bin/sh",
            "USER": "root" if root else "shell",
        }

    # -- entry points ---------------------------------------------------------------------------------------
    async def run(
        self, line: str, output: Output, stdin: bytes = b"", affinity: set[int] | None = None
    ) -> int:
        """Run a whole command line; returns its exit status."""
        try:
            if self.depth >= MAX_NESTING:
                raise ShellSyntaxError("too deeply nested")
            program, self._nesting = parse_nested(line, MAX_NESTING - self.depth - 1)
        except ShellSyntaxError as exc:
            output.write(2, f"sh: {exc}\n".encode())
            self.status = 2
            return 2
        try:
            await self._list(program, output, stdin, affinity)
        except ExitShell as ex:
            self.status = ex.status
        return self.status

    async def _list(
        self, program: CommandList, output: Output, stdin: bytes, affinity: set[int] | None
    ) -> int:
        for and_or in program:
            for joiner, pipeline in and_or:
                if joiner == "&&" and self.status != 0:
                    continue
                if joiner == "||" and self.status == 0:
                    continue
                self.status = await self._pipeline(pipeline, output, stdin, affinity)
        return self.status

    async def _pipeline(
        self, pipeline: Pipeline, output: Output, stdin: bytes, affinity: set[int] | None
    ) -> int:
        data = stdin
        status = 0
        for idx, node in enumerate(pipeline.commands):
            if idx == len(pipeline.commands) - 1:
                status = await self._node(node, output, data, affinity)
            else:
                # Stages run one after another with a buffer between them: enough for `cat f | wc -l`.
                stage = Output()
                await self._node(node, stage, data, affinity)
                data = stage.stdout()
                for fd, chunk in stage.events:
                    if fd == 2:
                        output.write(2, chunk)
        return (0 if status else 1) if pipeline.negate else status

    async def _node(self, node: Node, output: Output, stdin: bytes, affinity: set[int] | None) -> int:
        if isinstance(node, Command):
            return await self._command(node, output, stdin, affinity)
        if isinstance(node, ForLoop):
            values: list[str] = []
            for word in node.words:
                values.extend(await self.expand_word(word, output))
            self.status = 0
            for value in values:
                self.env[node.var] = value
                await self._list(node.body, output, stdin, affinity)
                await asyncio.sleep(0)  # a long loop must not starve the phone's other streams
            return self.status
        if isinstance(node, IfClause):
            for cond, body in node.branches:
                await self._list(cond, output, stdin, affinity)
                if self.status == 0:
                    return await self._list(body, output, stdin, affinity)
            self.status = 0
            if node.orelse is not None:
                return await self._list(node.orelse, output, stdin, affinity)
            return 0
        # while / until
        last = 0
        for _ in range(MAX_LOOP_ITERATIONS):
            await self._list(node.cond, output, stdin, affinity)
            if (self.status == 0) == node.until:
                self.status = last
                return last
            last = await self._list(node.body, output, stdin, affinity)
            await asyncio.sleep(0)
        output.write(2, b"sh: loop stopped after too many iterations\n")
        return 1

    # -- expansion ------------------------------------------------------------------------------------------
    def _var(self, name: str) -> str:
        if name == "?":
            return str(self.status)
        if name == "$":
            return "4242"
        return self.env.get(name, "")

    def _expand_vars(self, text: str) -> str:
        return _VAR.sub(lambda m: self._var(m.group(1) or m.group(2)), text)

    async def _substitute(self, line: str, output: Output) -> str:
        """`$(line)`: its stdout without trailing newlines; its stderr goes to the caller's stderr."""
        sub = self._child(root=self.root)
        sub.cwd, sub.env, sub.status = self.cwd, dict(self.env), self.status
        inner = Output()
        await sub.run(line, inner)
        for fd, chunk in inner.events:
            if fd == 2:
                output.write(2, chunk)
        return inner.stdout().decode(errors="replace").rstrip("\n")

    async def expand_word(self, segments: list[Segment], output: Output | None = None) -> list[str]:
        """Expand one word into fields: variables and `$(…)`, splitting of unquoted results, then globs."""
        sink = output or Output()
        fields: list[_Field] = [_Field()]

        def add(text: str, quoted: bool) -> None:
            f = fields[-1]
            f.text += text
            f.pattern += _escape_glob(text) if quoted else text
            f.real = f.real or quoted or bool(text)
            f.glob = f.glob or (not quoted and any(c in text for c in "*?["))

        def add_split(text: str) -> None:
            parts = text.split()
            if not parts:
                if text and fields[-1].real:
                    fields.append(_Field())
                return
            if text[0].isspace() and fields[-1].real:
                fields.append(_Field())
            add(parts[0], True)
            for part in parts[1:]:
                fields.append(_Field())
                add(part, True)
            if text[-1].isspace():
                fields.append(_Field())

        for kind, seg in segments:
            if kind == "lit":
                add(seg, True)
            elif kind == "dq":
                add(self._expand_vars(seg), True)
            elif kind == "dqcmd":
                add(await self._substitute(seg, sink), True)
            elif kind == "cmd":
                add_split(await self._substitute(seg, sink))
            else:  # bare: literal text (glob-able) and unquoted variables (split)
                pos = 0
                for m in _VAR.finditer(seg):
                    if m.start() > pos:
                        add(seg[pos : m.start()], False)
                    add_split(self._var(m.group(1) or m.group(2)))
                    pos = m.end()
                if pos < len(seg):
                    add(seg[pos:], False)
        result: list[str] = []
        for f in fields:
            if not f.real:
                continue
            matches = self._glob(f.pattern) if f.glob else []
            result.extend(matches or [f.text])
        return result

    def _glob(self, pattern: str) -> list[str]:
        absolute = pattern.startswith("/")
        parts = [p for p in pattern.split("/") if p]
        candidates = ["/"] if absolute else [self.cwd]
        for part in parts:
            nxt: list[str] = []
            for base in candidates:
                if any(c in part for c in "*?["):
                    try:
                        names = self.fs.listdir(base)
                    except FsError:
                        continue
                    nxt.extend(posixpath.join(base, n) for n in names if fnmatch.fnmatchcase(n, part))
                else:
                    nxt.append(posixpath.join(base, part))
            candidates = [c for c in nxt if self.fs.exists(c)]
        if not absolute:
            prefix = self.cwd.rstrip("/") + "/"
            candidates = [c[len(prefix) :] if c.startswith(prefix) else c for c in candidates]
        return sorted(candidates)

    def path(self, p: str) -> str:
        """Normalised absolute virtual path of `p` relative to the cwd."""
        return self.fs.normalize(p, self.cwd)

    # -- one command ----------------------------------------------------------------------------------------
    async def _command(
        self,
        cmd: Command,
        output: Output,
        stdin: bytes,
        affinity: set[int] | None,
    ) -> int:
        args: list[str] = []
        for w in cmd.words:
            args.extend(await self.expand_word(w, output))
        # Leading NAME=value words are assignments (to the session when nothing follows).
        assignments = {}
        while args and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", args[0]):
            k, v = args.pop(0).split("=", 1)
            assignments[k] = v
        errsink = output
        out_fd_file: list[tuple[str, bool]] = []  # (vpath, append) for stdout
        err_mode = "normal"  # normal | null | stdout | file
        err_file: tuple[str, bool] | None = None
        out_to_err = False
        for r in cmd.redirects:
            if r.op == "2>&1":
                err_mode = "stdout"
                continue
            if r.op in ("1>&2", ">&2"):
                out_to_err = True
                continue
            assert r.target is not None
            target = "".join(await self.expand_word(r.target, output))
            if r.op == "<":
                try:
                    stdin = self.fs.read(self.path(target))
                except FsError as exc:
                    errsink.write(2, f"sh: can't open {target}: {exc}\n".encode())
                    return 1
                continue
            if target == "/dev/null":
                if r.op.startswith("2"):
                    err_mode = "null"
                else:
                    out_fd_file = [("/dev/null", False)]
                    if r.op == "&>":
                        err_mode = "null"
                continue
            vpath = self.path(target)
            try:
                self.fs.check_writable(vpath, self.root)
                if not self.fs.node(vpath) and not self.fs.exists(posixpath.dirname(vpath)):
                    raise FsError("No such file or directory")
            except FsError as exc:
                errsink.write(2, f"sh: can't create {target}: {exc}\n".encode())
                return 1
            if r.op.startswith("2"):
                err_mode, err_file = "file", (vpath, r.op == "2>>")
            else:
                out_fd_file = [(vpath, r.op == ">>")]
                if r.op == "&>":
                    err_mode = "stdout"
        if not args:
            self.env.update(assignments)
            for vpath, append in out_fd_file:
                if vpath != "/dev/null" and not self.fs.node(vpath):
                    self.fs.write(vpath, b"", append=append, as_root=self.root)
            return 0

        out_buf: list[bytes] = []
        err_buf: list[bytes] = []

        def write_out(data: bytes) -> None:
            if out_to_err:
                write_err(data)
            elif out_fd_file:
                out_buf.append(data)
            else:
                output.write(1, data)

        def write_err(data: bytes) -> None:
            if err_mode == "null":
                return
            if err_mode == "stdout":
                if out_fd_file:
                    out_buf.append(data)
                else:
                    output.write(1, data)
            elif err_mode == "file":
                err_buf.append(data)
            else:
                errsink.write(2, data)

        ctx = Context(stdin, write_out, write_err, self.root, affinity, args[0], self.cwd)
        status = await self.execute(ctx, args)
        for (vpath, append), buf in ((f, out_buf) for f in out_fd_file):
            if vpath == "/dev/null":
                continue
            try:
                self.fs.write(vpath, b"".join(buf), append=append, as_root=self.root)
            except FsError as exc:
                errsink.write(2, f"sh: {args[0]}: write error: {exc}\n".encode())
                status = 1
        if err_file is not None:
            try:
                self.fs.write(err_file[0], b"".join(err_buf), append=err_file[1], as_root=self.root)
            except FsError as exc:
                errsink.write(2, f"sh: can't create {err_file[0]}: {exc}\n".encode())
        return status

    async def execute(self, ctx: Context, args: list[str]) -> int:
        """Run one simple command (already expanded)."""
        name = args[0]
        if "/" not in name:
            builtin = BUILTINS.get(name)
            if builtin is not None and not (name == "su" and not self.rt.rooted):
                return await builtin(self, ctx, args)
            for d in self.env.get("PATH", "").split(":"):
                candidate = posixpath.join(d, name)
                if d and self.fs.exists(candidate) and not self.fs.stat(candidate).is_dir:
                    return await self._exec_file(ctx, candidate, name, args)
            ctx.err(f"sh: {name}: not found\n".encode())
            return 127
        vpath = self.path(name)
        try:
            st = self.fs.stat(vpath)
        except FsError as exc:
            if str(exc) == "Permission denied":
                ctx.err(f"sh: {name}: Permission denied\n".encode())
                return 126
            ctx.err(f"sh: {name}: not found\n".encode())
            return 127
        if st.is_dir:
            ctx.err(f"sh: {name}: can't execute: Is a directory\n".encode())
            return 126
        return await self._exec_file(ctx, vpath, name, args)

    async def _exec_file(self, ctx: Context, vpath: str, name: str, args: list[str]) -> int:
        st = self.fs.stat(vpath)
        if not st.mode & 0o111:
            ctx.err(f"sh: {name}: Permission denied\n".encode())
            return 126
        content = self.fs.read(vpath)
        if content.startswith(bench.BENCHMARK_MARKER):
            return await bench.run_benchmark(self.rt, ctx, args)
        if content.startswith(tflite_bench.TFLITE_MARKER):
            return await tflite_bench.run_tflite_benchmark(self.rt, ctx, args)
        first = content.split(b"\n", 1)[0]
        if first.startswith(b"#!") and first.rstrip().endswith(b"sh"):
            sub = self._child(root=ctx.root)
            sub.cwd = self.cwd
            for i, a in enumerate(args):
                sub.env[str(i)] = a
            inner = Output()
            status = await sub.run(content.decode(errors="replace"), inner, ctx.stdin, ctx.affinity)
            for fd, data in inner.events:
                (ctx.out if fd == 1 else ctx.err)(data)
            return status
        ctx.err(f"sh: {name}: can't execute: Exec format error\n".encode())
        return 126

    def _child(self, *, root: bool) -> Shell:
        """A shell run from this one: it inherits the nesting used so far (this shell's and its program's)."""
        return Shell(self.rt, root=root, depth=self.depth + self._nesting + 1)

    async def run_nested(self, ctx: Context, line: str, *, root: bool) -> int:
        """Run `line` in a child shell (for `su -c`, `sh -c`) sharing this one's cwd."""
        sub = self._child(root=root)
        sub.cwd = self.cwd
        sub.env.update({k: v for k, v in self.env.items() if k != "USER"})
        inner = Output()
        status = await sub.run(line, inner, ctx.stdin, ctx.affinity)
        for fd, data in inner.events:
            (ctx.out if fd == 1 else ctx.err)(data)
        return status
