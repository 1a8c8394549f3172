"""The phone shell's syntax: a command line → tokens → a tree of lists, pipelines and compound commands.

Grammar (a subset of mksh, enough for profiling scripts): command lists joined by `;`, `&`, newlines, `&&`
and `||`; pipelines with `|` and `!`; `for NAME in WORDS; do …; done`, `if …; then …; elif …; else …; fi`,
`while`/`until … do … done`; words with '…', "…" and backslash quoting, `$?`, `$VAR`, `${VAR}`, `$(…)`
(unquoted results are split into fields), `NAME=value` assignments, globs (`*`, `?`, `[…]`) on unquoted
words; redirections `>`, `>>`, `<`, `2>`, `2>>`, `2>&1`, `>&2`, `&>` on simple commands. Commands are builtins
(`shell_builtins.BUILTINS`) or files (see `shell`).

Nesting is bounded: compound commands inside each other plus shells inside shells (`$(…)`, `sh -c`, `su -c`,
scripts) may go `MAX_NESTING` deep, counted together, so a hostile command line ends in one "too deeply
nested" line instead of a RecursionError (the interpreter is recursive, frames add up across both kinds);
the parser counts the compound-command depth, the interpreter adds the shells around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OPERATORS = ("&&", "||", ";", "|", "&", "\n")
REDIRECTS = ("2>&1", "1>&2", ">&2", "&>", "2>>", "2>", ">>", "1>", ">", "<")


class ShellSyntaxError(Exception):
    """The command line cannot be parsed (unterminated quote, dangling operator...)."""


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
