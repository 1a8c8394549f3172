"""A small sandboxed shell: the phone's `sh`, interpreted in Python over `Filesystem` — never the host shell.

Grammar (a subset of mksh, enough for profiling scripts): command lists joined by `;`, `&`, newlines, `&&`
and `||`; pipelines with `|` and `!`; `for NAME in WORDS; do …; done`, `if …; then …; elif …; else …; fi`,
`while`/`until … do … done`; words with '…', "…" and backslash quoting, `$?`, `$VAR`, `${VAR}`, `$(…)`
(unquoted results are split into fields), `NAME=value` assignments, globs (`*`, `?`, `[…]`) on unquoted
words; redirections `>`, `>>`, `<`, `2>`, `2>>`, `2>&1`, `>&2`, `&>` on simple commands. Commands are builtins
(see `BUILTINS`) or files: an executable file starting with the benchmark marker runs the benchmark program,
a `#!…sh` script is interpreted, anything else fails as it would on a phone. Pipeline stages run one after
the other with a buffer in between, `&` does not background, and every command of a list sees the whole stdin.

Nesting is bounded: compound commands inside each other plus shells inside shells (`$(…)`, `sh -c`, `su -c`,
scripts) may go `MAX_NESTING` deep, counted together, so a hostile command line ends in one "too deeply
nested" line instead of a RecursionError (the interpreter is recursive, frames add up across both kinds).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import posixpath
import re
import shlex
import stat as stat_mod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from profilers.virtual_phone.filesystem import FsError

if TYPE_CHECKING:
    from profilers.virtual_phone.phone import PhoneRuntime

BENCHMARK_MARKER = b"#!latfarm-virtual-onnxruntime_perf_test"
MAX_SLEEP_S = 30.0
OPERATORS = ("&&", "||", ";", "|", "&", "\n")
REDIRECTS = ("2>&1", "1>&2", ">&2", "&>", "2>>", "2>", ">>", "1>", ">", "<")


class ShellSyntaxError(Exception):
    """The command line cannot be parsed (unterminated quote, dangling operator...)."""


class ExitShell(Exception):
    """`exit N` ends the whole command line."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# A word is kept as segments until execution, because `$?` must be expanded when its command runs.
# Segment kinds: "lit" (single-quoted or escaped: as is), "dq" (double-quoted: variables),
# "bare" (variables + glob).
Segment = tuple[str, str]


@dataclass
class Redirect:
    op: str
    target: list[Segment] | None


@dataclass
class Command:
    words: list[list[Segment]] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class ForLoop:
    var: str
    words: list[list[Segment]]
    body: CommandList


@dataclass
class IfClause:
    branches: list[tuple[CommandList, CommandList]]
    orelse: CommandList | None


@dataclass
class WhileLoop:
    cond: CommandList
    body: CommandList
    until: bool


Node = Command | ForLoop | IfClause | WhileLoop


@dataclass
class Pipeline:
    commands: list[Node]
    negate: bool = False


# An and-or list: (operator joining it to the previous pipeline, pipeline); a command list is several of them.
AndOr = list[tuple[str, Pipeline]]
CommandList = list[AndOr]
SEPARATORS = (";", "\n", "&")
RESERVED = ("then", "elif", "else", "fi", "do", "done")
MAX_LOOP_ITERATIONS = 10_000
#: Deepest nesting of compound commands and sub-shells together (well inside Python's recursion limit).
MAX_NESTING = 40


def _matching_paren(line: str, start: int) -> int:
    """Index of the `)` closing a `$(` whose body starts at `start` (quotes and nesting respected)."""
    depth, i = 1, start
    while i < len(line):
        ch = line[i]
        if ch == "'":
            end = line.find("'", i + 1)
            if end < 0:
                break
            i = end
        elif ch == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
        elif ch == "\\":
            i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ShellSyntaxError("unterminated $(")


def tokenize(line: str) -> list[str | list[Segment]]:
    """Split a command line into operator strings and words (lists of segments)."""
    tokens: list[str | list[Segment]] = []
    i, n = 0, len(line)
    word: list[Segment] = []
    in_word = False

    def flush() -> None:
        nonlocal word, in_word
        if in_word:
            tokens.append(word)
        word, in_word = [], False

    while i < n:
        ch = line[i]
        if ch in " \t\r":
            flush()
            i += 1
            continue
        if ch == "#" and not in_word:
            while i < n and line[i] != "\n":
                i += 1
            continue
        matched = next((r for r in REDIRECTS if line.startswith(r, i)), None)
        if matched and (not in_word or (matched[0].isdigit() and word == [("bare", "")])):
            # "2>" only counts as a redirection when the digit starts a word.
            flush()
            tokens.append(matched)
            i += len(matched)
            continue
        if matched and matched[0] in "<>&" and in_word:
            flush()
            tokens.append(matched)
            i += len(matched)
            continue
        op = next((o for o in OPERATORS if line.startswith(o, i)), None)
        if op:
            flush()
            tokens.append(op)
            i += len(op)
            continue
        in_word = True
        if ch == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated '")
            word.append(("lit", line[i + 1 : end]))
            i = end + 1
        elif ch == '"':
            j, buf = i + 1, []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n and line[j + 1] in '"\\$`':
                    buf.append(("lit", line[j + 1]))
                    j += 2
                elif line.startswith("$(", j):
                    end = _matching_paren(line, j + 2)
                    buf.append(("dqcmd", line[j + 2 : end]))
                    j = end + 1
                else:
                    buf.append(("dq", line[j]))
                    j += 1
            if j >= n:
                raise ShellSyntaxError('unterminated "')
            word.extend(_merge(buf) or [("lit", "")])
            i = j + 1
        elif ch == "\\":
            if i + 1 < n:
                if line[i + 1] != "\n":
                    word.append(("lit", line[i + 1]))
                i += 2
            else:
                i += 1
        elif line.startswith("$(", i):
            end = _matching_paren(line, i + 2)
            word.append(("cmd", line[i + 2 : end]))
            i = end + 1
        else:
            j = i
            while j < n and line[j] not in " \t\r'\"\\<>" and not line.startswith("$(", j):
                if any(line.startswith(o, j) for o in OPERATORS):
                    break
                j += 1
            if j == i:
                j = i + 1
            word.append(("bare", line[i:j]))
            i = j
    flush()
    return tokens


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for kind, text in segs:
        if out and out[-1][0] == kind and kind in ("lit", "dq", "bare"):
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))
    return out


def parse(line: str, max_nesting: int = MAX_NESTING) -> CommandList:
    """Parse a command line into and-or lists of pipelines of simple or compound commands."""
    return parse_nested(line, max_nesting)[0]


def parse_nested(line: str, max_nesting: int = MAX_NESTING) -> tuple[CommandList, int]:
    """The parsed command line and how deep its compound commands nest (more than `max_nesting`: refused)."""
    parser = _Parser(tokenize(line), max_nesting)
    program = parser.command_list(())
    if parser.peek() is not None:
        raise ShellSyntaxError(f"syntax error: '{parser.describe(parser.peek())}' unexpected")
    return program, parser.deepest


class _Parser:
    """Recursive descent over the tokens: list, and-or, pipeline, command (simple, for, if, while/until)."""

    def __init__(self, tokens: list[str | list[Segment]], max_nesting: int = MAX_NESTING) -> None:
        self.tokens = tokens
        self.i = 0
        self.max_nesting = max_nesting
        self.depth = self.deepest = 0

    def peek(self) -> str | list[Segment] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    @staticmethod
    def keyword(tok: str | list[Segment] | None) -> str | None:
        if isinstance(tok, list) and len(tok) == 1 and tok[0][0] == "bare":
            return tok[0][1]
        return None

    @staticmethod
    def describe(tok: str | list[Segment] | None) -> str:
        if tok is None:
            return "end of line"
        if isinstance(tok, str):
            return "newline" if tok == "\n" else tok
        return "".join(text for _k, text in tok)

    def skip_newlines(self) -> None:
        while self.peek() == "\n":
            self.i += 1

    def expect(self, word: str) -> None:
        if self.keyword(self.peek()) != word:
            raise ShellSyntaxError(
                f"syntax error: '{self.describe(self.peek())}' unexpected (expecting '{word}')"
            )
        self.i += 1

    def command_list(self, terminators: tuple[str, ...]) -> CommandList:
        items: CommandList = []
        self.skip_newlines()
        while self.peek() is not None and self.keyword(self.peek()) not in terminators:
            items.append(self.and_or())
            if self.peek() in SEPARATORS:
                self.i += 1
                self.skip_newlines()
            else:
                break
        return items

    def and_or(self) -> AndOr:
        items: AndOr = [(";", self.pipeline())]
        while self.peek() in ("&&", "||"):
            op = self.peek()
            assert isinstance(op, str)
            self.i += 1
            self.skip_newlines()
            items.append((op, self.pipeline()))
        return items

    def pipeline(self) -> Pipeline:
        negate = self.keyword(self.peek()) == "!"
        if negate:
            self.i += 1
        commands = [self.command()]
        while self.peek() == "|":
            self.i += 1
            self.skip_newlines()
            commands.append(self.command())
        return Pipeline(commands, negate)

    def command(self) -> Node:
        tok = self.peek()
        kw = self.keyword(tok)
        if tok is None or (isinstance(tok, str) and tok not in REDIRECTS) or kw in RESERVED:
            raise ShellSyntaxError(f"syntax error: '{self.describe(tok)}' unexpected")
        if kw in ("for", "if", "while", "until"):
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)
            if self.depth > self.max_nesting:
                raise ShellSyntaxError("too deeply nested")
            try:
                return self.compound(kw)
            finally:
                self.depth -= 1
        cmd = Command()
        while (tok := self.peek()) is not None:
            if isinstance(tok, list):
                cmd.words.append(tok)
            elif tok in ("2>&1", "1>&2", ">&2"):
                cmd.redirects.append(Redirect(tok, None))
            elif tok in REDIRECTS:
                self.i += 1
                target = self.peek()
                if not isinstance(target, list):
                    raise ShellSyntaxError(f"syntax error: {tok} without a file")
                cmd.redirects.append(Redirect(tok, target))
            else:
                break
            self.i += 1
        return cmd

    def compound(self, kw: str) -> Node:
        if kw == "for":
            return self.for_loop()
        if kw == "if":
            return self.if_clause()
        self.i += 1
        cond = self.command_list(("do",))
        self.expect("do")
        body = self.command_list(("done",))
        self.expect("done")
        return WhileLoop(cond, body, until=kw == "until")

    def for_loop(self) -> ForLoop:
        self.i += 1
        name = self.keyword(self.peek())
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ShellSyntaxError(f"for: bad variable name '{self.describe(self.peek())}'")
        self.i += 1
        words: list[list[Segment]] = []
        if self.keyword(self.peek()) == "in":
            self.i += 1
            while isinstance(self.peek(), list):
                tok = self.peek()
                assert isinstance(tok, list)
                words.append(tok)
                self.i += 1
        if self.peek() in (";", "\n"):
            self.i += 1
        self.skip_newlines()
        self.expect("do")
        body = self.command_list(("done",))
        self.expect("done")
        return ForLoop(name, words, body)

    def if_clause(self) -> IfClause:
        self.i += 1
        branches: list[tuple[CommandList, CommandList]] = []
        orelse: CommandList | None = None
        while True:
            cond = self.command_list(("then",))
            self.expect("then")
            body = self.command_list(("elif", "else", "fi"))
            branches.append((cond, body))
            kw = self.keyword(self.peek())
            self.i += 1
            if kw == "elif":
                continue
            if kw == "else":
                orelse = self.command_list(("fi",))
                self.expect("fi")
            elif kw != "fi":
                raise ShellSyntaxError("syntax error: 'if' without 'fi'")
            return IfClause(branches, orelse)


class Output:
    """Where a command writes: ordered (fd, bytes) events, so v1 shells can merge and v2 can frame them."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bytes]] = []

    def write(self, fd: int, data: bytes) -> None:
        """Append `data` to stream `fd` (1 stdout, 2 stderr)."""
        if data:
            self.events.append((fd, data))

    def stdout(self) -> bytes:
        """Everything written to stdout."""
        return b"".join(d for fd, d in self.events if fd == 1)


@dataclass
class Context:
    """What a running command sees."""

    stdin: bytes
    out: Callable[[bytes], None]
    err: Callable[[bytes], None]
    root: bool
    affinity: set[int] | None
    name: str
    cwd: str = "/"


Builtin = Callable[["Shell", Context, list[str]], Awaitable[int]]
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
            nxt = []
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
        if content.startswith(BENCHMARK_MARKER):
            return await self.rt.run_benchmark(ctx, args)
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


# ---- builtins ---------------------------------------------------------------------------------------------
def _fs_err(ctx: Context, target: str, exc: FsError) -> int:
    ctx.err(f"{ctx.name}: {target}: {exc}\n".encode())
    return 1


async def _true(sh: Shell, ctx: Context, args: list[str]) -> int:
    return 0


async def _false(sh: Shell, ctx: Context, args: list[str]) -> int:
    return 1


async def _echo(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _printf(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _cat(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _head_tail(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _wc(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _ls(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _mkdir(sh: Shell, ctx: Context, args: list[str]) -> int:
    parents = any(a.startswith("-") and "p" in a for a in args[1:])
    status = 0
    for d in (a for a in args[1:] if not a.startswith("-")):
        try:
            sh.fs.mkdir(sh.path(d), parents=parents, as_root=ctx.root)
        except FsError as exc:
            ctx.err(f"mkdir: '{d}': {exc}\n".encode())
            status = 1
    return status


async def _rm(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _chmod(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _touch(sh: Shell, ctx: Context, args: list[str]) -> int:
    for f in args[1:]:
        vpath = sh.path(f)
        try:
            if not sh.fs.exists(vpath):
                sh.fs.write(vpath, b"", as_root=ctx.root)
        except FsError as exc:
            return _fs_err(ctx, f, exc)
    return 0


async def _id(sh: Shell, ctx: Context, args: list[str]) -> int:
    if ctx.root:
        ctx.out(b"uid=0(root) gid=0(root) groups=0(root) context=u:r:su:s0\n")
    else:
        ctx.out(
            b"uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),1011(adb),"
            b"1015(sdcard_rw),1028(sdcard_r),3001(net_bt_admin),3002(net_bt),3003(inet),3006(net_bw_stats) "
            b"context=u:r:shell:s0\n"
        )
    return 0


async def _whoami(sh: Shell, ctx: Context, args: list[str]) -> int:
    ctx.out(b"root\n" if ctx.root else b"shell\n")
    return 0


async def _nproc(sh: Shell, ctx: Context, args: list[str]) -> int:
    ctx.out(f"{sh.rt.profile.cpu_count}\n".encode())
    return 0


async def _sleep(sh: Shell, ctx: Context, args: list[str]) -> int:
    try:
        seconds = float(args[1].rstrip("s"))
    except (IndexError, ValueError):
        ctx.err(b"sleep: invalid number\n")
        return 1
    await asyncio.sleep(min(max(seconds, 0.0), MAX_SLEEP_S))
    return 0


async def _getprop(sh: Shell, ctx: Context, args: list[str]) -> int:
    props = sh.rt.props()
    if len(args) == 1:
        ctx.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())).encode())
    else:
        ctx.out((props.get(args[1], args[2] if len(args) > 2 else "") + "\n").encode())
    return 0


async def _uname(sh: Shell, ctx: Context, args: list[str]) -> int:
    if "-a" in args:
        ctx.out(b"Linux localhost 5.10.149-virtual #1 SMP PREEMPT aarch64 Toybox\n")
    elif "-m" in args:
        ctx.out(b"aarch64\n")
    elif "-r" in args:
        ctx.out(b"5.10.149-virtual\n")
    else:
        ctx.out(b"Linux\n")
    return 0


def _test_expr(sh: Shell, expr: list[str]) -> bool:
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


async def _test(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _taskset(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _su(sh: Shell, ctx: Context, args: list[str]) -> int:
    rest = args[1:]
    if rest and rest[0] in ("0", "root"):
        rest = rest[1:]
    if rest and rest[0] == "-c":
        return await sh.run_nested(ctx, " ".join(rest[1:]), root=True)
    if not rest:
        ctx.err(b"su: interactive shells are not supported on this phone\n")
        return 1
    return await sh.run_nested(ctx, shlex.join(rest), root=True)


async def _sh(sh: Shell, ctx: Context, args: list[str]) -> int:
    if len(args) >= 3 and args[1] == "-c":
        return await sh.run_nested(ctx, args[2], root=ctx.root)
    if len(args) == 1:
        return await sh.run_nested(ctx, ctx.stdin.decode(errors="replace"), root=ctx.root)
    ctx.err(b"sh: only 'sh -c CMD' is supported\n")
    return 2


async def _exit(sh: Shell, ctx: Context, args: list[str]) -> int:
    try:
        status = int(args[1]) & 0xFF if len(args) > 1 else sh.status
    except ValueError:
        ctx.err(f"sh: exit: {args[1]}: bad number\n".encode())
        status = 2
    raise ExitShell(status)


async def _cd(sh: Shell, ctx: Context, args: list[str]) -> int:
    target = sh.path(args[1] if len(args) > 1 else "/")
    try:
        if not sh.fs.stat(target).is_dir:
            raise FsError("Not a directory")
    except FsError as exc:
        ctx.err(f"sh: cd: {args[1] if len(args) > 1 else '/'}: {exc}\n".encode())
        return 2
    sh.cwd = target
    return 0


async def _pwd(sh: Shell, ctx: Context, args: list[str]) -> int:
    ctx.out(f"{sh.cwd}\n".encode())
    return 0


async def _digest(sh: Shell, ctx: Context, args: list[str]) -> int:
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


async def _stat(sh: Shell, ctx: Context, args: list[str]) -> int:
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
        ctx.out(
            (
                re.sub(r"%(.)", lambda m, fields=fields: fields.get(m.group(1), m.group(0)), fmt) + "\n"
            ).encode()
        )
    return status


async def _df(sh: Shell, ctx: Context, args: list[str]) -> int:
    free_k = sh.fs.free_bytes() // 1024
    used_k = sh.fs.used_bytes() // 1024
    ctx.out(b"Filesystem      1K-blocks    Used Available Use% Mounted on\n")
    total = free_k + used_k
    pct = int(100 * used_k / total) if total else 0
    for mount in ("/data", "/sdcard"):
        ctx.out(f"/dev/block/dm-9 {total:>10} {used_k:>7} {free_k:>9} {pct:>3}% {mount}\n".encode())
    return 0


async def _grep(sh: Shell, ctx: Context, args: list[str]) -> int:
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
