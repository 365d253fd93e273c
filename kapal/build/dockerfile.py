"""Dockerfile text → `kapal.build.instructions` objects, by Docker's rules.

Two phases, as in moby/buildkit (which the legacy builder vendors): the line parser
(`frontend/dockerfile/parser`) turns text into one node per instruction — directives, comments,
continuations, heredocs, flags, JSON vs shell form — and the instruction parser
(`frontend/dockerfile/instructions`) checks each node's arguments and flags and builds the typed
command. The two phases are kept apart here too because their errors read differently in Docker:
"failed to parse Dockerfile: …" for the first, "dockerfile parse error on line N: …" for the second.
Words are left as written (quotes included); the builder expands them with `kapal.build.shell`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from kapal.build.instructions import (
    Arg,
    ArgDef,
    Cmd,
    Command,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Heredoc,
    KeyValue,
    Label,
    Maintainer,
    Mount,
    Onbuild,
    Run,
    Shell,
    Stage,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from kapal.build.shell import GO_SPACES, ShellError, ShellLex, go_is_space, go_quote
from kapal.errors import InvalidArgument

__all__ = ["DockerfileParseError", "parse_dockerfile", "parse_instruction", "parse_mount"]

_MAX_LINE = 64 * 1024  # bufio.Scanner's token limit, which Docker's parser inherits
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_LEADING_SPACES = re.compile(f"[{GO_SPACES}]*")
_GO_SPACE_RUN = re.compile(f"[{GO_SPACES}]+")
# A flag word with nothing to unquote or unescape, per escape character.
_PLAIN_FLAG = {
    escape: re.compile(f"--[^{GO_SPACES}'\"{re.escape(escape)}]*(?=[{GO_SPACES}]|\\Z)")
    for escape in ("\\", "`")
}
_HEREDOC = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_ONBUILD_PREFIX = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE)
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*\Z")
_DECIMAL = re.compile(r"[+-]?[0-9]+\Z")
_CONTINUATION = {
    "\\": re.compile(r"([^\\])\\[ \t]*\Z|^\\[ \t]*\Z"),
    "`": re.compile(r"([^`])`[ \t]*\Z|^`[ \t]*\Z"),
}
_VALID_DIRECTIVES = ("syntax", "escape", "check")
_INSTRUCTIONS = [
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
]  # fmt: skip
_HEREDOC_INSTRUCTIONS = ("add", "copy", "run")


class DockerfileParseError(InvalidArgument):
    """A Dockerfile Docker would refuse. The message is Docker's; `filename` and `line` (1-based,
    0 when the file has none) say where, `reason` is the bare "what is wrong"."""

    def __init__(self, message: str, *, filename: str, line: int, reason: str) -> None:
        super().__init__(message)
        self.filename = filename
        self.line = line
        self.reason = reason


class _Problem(Exception):
    """What is wrong, before the location is known."""


# ---------------------------------------------------------------------------------------------
# phase 1: lines → nodes (buildkit frontend/dockerfile/parser)


class _RawHeredoc:
    __slots__ = ("name", "expand", "chomp", "content")

    def __init__(self, name: str, expand: bool, chomp: bool) -> None:
        self.name = name
        self.expand = expand
        self.chomp = chomp
        self.content = ""


class _Node:
    """One instruction as the line parser sees it (buildkit's parser.Node, flattened)."""

    __slots__ = ("keyword", "flags", "args", "json", "original", "child", "heredocs", "start", "end")

    def __init__(
        self,
        keyword: str,
        flags: list[str],
        args: list[str],
        is_json: bool,
        original: str,
        child: _Node | None,
    ) -> None:
        self.keyword = keyword  # as written
        self.flags = flags
        self.args = args
        self.json = is_json
        self.original = original
        self.child = child  # ONBUILD's instruction
        self.heredocs: list[_RawHeredoc] = []
        self.start = 0
        self.end = 0

    def can_contain_heredoc(self) -> bool:
        node = self.child if self.keyword.lower() == "onbuild" and self.child is not None else self
        return node.keyword.lower() in _HEREDOC_INSTRUCTIONS and not node.json


class _LineParser:
    def __init__(self) -> None:
        self.escape = "\\"
        self.continuation = _CONTINUATION["\\"]
        self.directives: dict[str, str] = {}
        self.directives_done = False

    def possible_directive(self, line: str) -> None:
        """Parser directives: `# name=value` lines at the very top, each name once."""
        if self.directives_done:
            return
        if not line.startswith("#"):
            self.directives_done = True
            return
        match = _DIRECTIVE.match(line[1:].lstrip(GO_SPACES))
        if match is None or match.group(1).lower() not in _VALID_DIRECTIVES:
            self.directives_done = True
            return
        name = match.group(1).lower()
        if name in self.directives:
            raise _Problem(f"only one {name} parser directive can be used")
        value = match.group(2)
        if name == "escape":
            if value not in ("`", "\\"):
                raise _Problem(f"invalid escape token '{value}' does not match ` or \\")
            self.escape = value
            self.continuation = _CONTINUATION[value]
        self.directives[name] = value

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """The line without its trailing escape char, and whether the instruction ends here."""
        if line and line.rstrip(" \t").endswith(self.escape):
            match = self.continuation.search(line)
            if match is not None:
                return line[: match.start()] + (match.group(1) or ""), False
        return line, True

    # -- one instruction's text → node

    def node_from_line(self, line: str) -> _Node:
        stripped = line.strip(GO_SPACES)
        parts = _WHITESPACE.split(stripped, maxsplit=1)
        keyword = parts[0]
        flags: list[str] = []
        rest = ""
        if len(parts) == 2:
            rest, flags = self.extract_flags(parts[1])
            rest = rest.strip(GO_SPACES)
        kind = _LINE_KINDS.get(keyword.lower(), "ignore")
        child = None
        is_json = False
        if kind == "ignore":
            args: list[str] = []
        elif kind == "onbuild":
            args = []
            if rest:
                child = self.node_from_line(rest)
                args = [child.keyword, *child.args]
        elif kind == "words":
            args = self.parse_words(rest)
        elif kind == "keyvalue":
            args = self.parse_name_value(rest, "ENV" if keyword.lower() == "env" else "LABEL")
        elif kind == "whitespace":
            args = _WHITESPACE.split(rest) if rest else []
        elif kind == "string":
            args = [rest] if rest else []
        elif kind == "maybe_json":
            args, is_json = _maybe_json(rest)
        elif kind == "maybe_json_list":
            parsed = _json_array(rest)
            if parsed is not None:
                args, is_json = parsed, True
            else:
                args = _WHITESPACE.split(rest) if rest else []
        else:  # healthcheck: a type word, then a command like CMD's
            sep = 0
            while sep < len(rest) and not go_is_space(rest[sep]):
                sep += 1
            after = sep
            while after < len(rest) and go_is_space(rest[after]):
                after += 1
            if sep == 0:
                args = []
            else:
                command, is_json = _maybe_json(rest[after:])
                args = [rest[:sep], *command]
        return _Node(keyword, flags, args, is_json, line, child)

    def extract_flags(self, line: str) -> tuple[str, list[str]]:
        """Leading `--name[=value]` words (quotes and escapes removed), and the rest of the line."""
        words: list[str] = []
        escape = self.escape
        plain = _PLAIN_FLAG[escape]
        pos = 0
        n = len(line)
        while True:
            pos = _LEADING_SPACES.match(line, pos).end()  # type: ignore[union-attr]
            if pos == n:
                return "", words
            if not line.startswith("--", pos):
                return line[pos:], words
            simple = plain.match(line, pos)
            if simple is not None and simple.end() - pos > 2:
                words.append(simple.group())
                pos = simple.end()
                continue
            word: list[str] = []
            blank_ok = False
            quote = ""
            while pos < n:
                ch = line[pos]
                pos += 1
                if quote and ch == quote:
                    quote = ""
                    continue
                if not quote:
                    if go_is_space(ch):
                        pos -= 1
                        break
                    if ch in ("'", '"'):
                        quote = ch
                        blank_ok = True
                        continue
                if ch == escape:  # escapes the next character, in quotes too; dropped at the end
                    if pos == n:
                        quote = ""
                        continue
                    ch = line[pos]
                    pos += 1
                word.append(ch)
            text = "".join(word)
            if text == "--":
                if pos == n:
                    return "", words
                return line[pos:], words
            if blank_ok or text:
                words.append(text)
            if pos == n:
                return "", words

    def parse_words(self, rest: str) -> list[str]:
        """Split on unquoted whitespace, keeping quotes and escapes (ENV/LABEL/ARG words)."""
        escape = self.escape
        if "'" not in rest and '"' not in rest and escape not in rest:
            return [word for word in _GO_SPACE_RUN.split(rest) if word]
        words: list[str] = []
        word: list[str] = []
        in_word = False
        blank_ok = False
        quote = ""
        pos = 0
        n = len(rest)
        while pos < n:
            ch = rest[pos]
            if not in_word:
                if go_is_space(ch):
                    pos += 1
                    continue
                in_word = True
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == escape and quote != "'":
                    if pos + 1 == n:
                        pos += 1
                        continue  # an escape at the very end is dropped
                    word.append(ch)
                    pos += 1
                    ch = rest[pos]
                word.append(ch)
                pos += 1
                continue
            if go_is_space(ch):
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                in_word = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
        if in_word and (blank_ok or word):
            words.append("".join(word))
        return words

    def parse_name_value(self, rest: str, keyword: str) -> list[str]:
        """ENV/LABEL: `key=value …`, or the legacy `key value` (one pair, the rest is the value).
        Flattened as buildkit's nodes: key, value, separator ("=" or "" for the legacy form)."""
        words = self.parse_words(rest)
        if not words:
            return []
        if "=" not in words[0]:
            parts = _WHITESPACE.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise _Problem(f"{keyword} must have two arguments")
            return [parts[0], parts[1], ""]
        out: list[str] = []
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise _Problem(
                    f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
                )
            out += [key, value, "="]
        return out


_LINE_KINDS = {
    "add": "maybe_json_list",
    "arg": "words",
    "cmd": "maybe_json",
    "copy": "maybe_json_list",
    "entrypoint": "maybe_json",
    "env": "keyvalue",
    "expose": "whitespace",
    "from": "whitespace",
    "healthcheck": "healthcheck",
    "label": "keyvalue",
    "maintainer": "string",
    "onbuild": "onbuild",
    "run": "maybe_json",
    "shell": "maybe_json",
    "stopsignal": "string",
    "user": "string",
    "volume": "maybe_json_list",
    "workdir": "string",
}


def _reject_constant(name: str) -> object:
    raise ValueError(name)  # Go's JSON has no NaN/Infinity


_JSON = json.JSONDecoder(parse_constant=_reject_constant)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_array(rest: str) -> list[str] | None:
    """The exec form's array, None when `rest` is not JSON (then it is shell form).
    A JSON array of anything but strings is an error, as in Docker."""
    rest = rest.lstrip(GO_SPACES)
    if not rest.startswith("["):
        return None
    try:
        value = _JSON.decode(rest)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise _Problem("when using JSON array syntax, arrays must be comprised of strings only")
    if "\\u" in rest:  # Go decodes a lone surrogate escape to U+FFFD; Python would keep it
        value = [_LONE_SURROGATE.sub("\ufffd", item) for item in value]
    return value


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    parsed = _json_array(rest)
    if parsed is not None:
        return parsed, True
    return [rest], False


_HEREDOC_WORDS = ShellLex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
_HEREDOC_NAME = ShellLex("\\", skip_unset_env=True)
_HEREDOC_NAME_RAW = ShellLex("\\", raw_quotes=True, skip_unset_env=True)


def _parse_heredoc(word: str) -> _RawHeredoc | None:
    """`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF` → the heredoc it opens; None for any other word."""
    match = _HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    try:
        words = _HEREDOC_NAME.process_words(rest, {})
    except ShellError as error:
        raise _Problem(str(error)) from None
    if len(words) != 1:
        return None
    try:
        raw = _HEREDOC_NAME_RAW.process_words(rest, {})
    except ShellError as error:
        raise _Problem(str(error)) from None
    if len(raw) != 1:
        raise _Problem(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return _RawHeredoc(words[0], expand=quotes == raw_quotes, chomp=match.group(2) == "-")


def _heredocs_in(line: str) -> list[_RawHeredoc]:
    try:
        words = _HEREDOC_WORDS.process_words(line, {})
    except ShellError:
        return []
    return [doc for word in words if (doc := _parse_heredoc(word)) is not None]


def _split_lines(text: str) -> list[str]:
    """Lines with their "\\n" (bufio.Scanner with buildkit's scanLines); only "\\n" ends a line."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def _is_comment(line: str) -> bool:
    return line.lstrip(GO_SPACES)[:1] == "#"


class _Parsed:
    __slots__ = ("nodes", "escape", "directives", "warnings")

    def __init__(
        self, nodes: list[_Node], escape: str, directives: dict[str, str], warnings: list[str]
    ) -> None:
        self.nodes = nodes
        self.escape = escape
        self.directives = directives
        self.warnings = warnings


def _parse_nodes(text: str) -> _Parsed:
    """Phase 1 (buildkit's parser.Parse). Raises _Located problems."""
    parser = _LineParser()
    lines = _split_lines(text)
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    nodes: list[_Node] = []
    warnings: list[str] = []
    count = len(lines)
    index = 0
    current = 0  # lines consumed so far == 1-based number of the last line read
    while index < count:
        raw = lines[index]
        index += 1
        if len(raw) > _MAX_LINE and len(raw.encode("utf-8", "surrogatepass")) > _MAX_LINE:
            raise _Located(_Problem("dockerfile line greater than max allowed size of 65535"), current + 1)
        token = raw.rstrip("\r\n").lstrip(GO_SPACES)
        try:
            parser.possible_directive(token)
        except _Problem as problem:
            raise _Located(problem, current + 1) from None
        if _is_comment(token):
            token = ""
        current += 1
        start = current
        token, at_end = parser.trim_continuation(token)
        if at_end and not token:
            continue
        buf = [token]
        empty_continuation = False
        while not at_end and index < count:
            raw = lines[index]
            index += 1
            current += 1
            if len(raw) > _MAX_LINE and len(raw.encode("utf-8", "surrogatepass")) > _MAX_LINE:
                raise _Located(_Problem("dockerfile line greater than max allowed size of 65535"), current)
            if _is_comment(raw):
                continue
            token = raw.rstrip("\r\n")
            if not token.lstrip(GO_SPACES):
                empty_continuation = True
                continue
            token, at_end = parser.trim_continuation(token)
            buf.append(token)
        line = "".join(buf)
        if empty_continuation:
            warnings.append("Empty continuation line found in: " + line)
        try:
            node = parser.node_from_line(line)
        except _Problem as problem:
            raise _Located(problem, start, current) from None
        if node.can_contain_heredoc() and "<<" in line:
            try:
                heredocs = _heredocs_in(line)
            except _Problem as problem:
                raise _Located(problem, start, current) from None
            for heredoc in heredocs:
                content: list[str] = []
                terminated = False
                while index < count:
                    raw = lines[index]
                    index += 1
                    current += 1
                    candidate = raw.rstrip("\r\n")
                    if heredoc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == heredoc.name:
                        terminated = True
                        break
                    content.append(raw)
                if not terminated:
                    raise _Located(_Problem("unterminated heredoc"), start, current)
                heredoc.content = "".join(content)
                node.heredocs.append(heredoc)
        node.start, node.end = start, current
        nodes.append(node)
    if not nodes:
        raise _Located(_Problem("file with no instructions"), current)
    return _Parsed(nodes, parser.escape, parser.directives, warnings)


class _Located(Exception):
    def __init__(self, problem: _Problem, start: int, end: int = 0) -> None:
        super().__init__(str(problem))
        self.problem = problem
        self.start = start
        self.end = max(start, end)


# ---------------------------------------------------------------------------------------------
# phase 2: nodes → commands (buildkit frontend/dockerfile/instructions)


class _Flags:
    """An instruction's `--flags` (buildkit's BFlags): declared, then parsed and checked."""

    def __init__(self, given: list[str]) -> None:
        self.given = given
        self.kinds: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.used: set[str] = set()

    def declare(self, kind: str, *names: str) -> None:
        for name in names:
            self.kinds[name] = kind
            if kind == "strings":
                self.lists[name] = []

    def parse(self) -> None:
        for arg in self.given:
            if arg == "--":
                return
            if not arg.startswith("--"):
                raise _Problem(f"arg should start with -- : {arg}")
            flag_name, has_value, value = arg.partition("=")
            name = flag_name[2:]
            kind = self.kinds.get(name)
            if kind is None:
                raise _Problem(_suggest(f"unknown flag: {flag_name}", name, sorted(self.kinds), True))
            if name in self.used and kind != "strings":
                raise _Problem(f"duplicate flag specified: {flag_name}")
            self.used.add(name)
            if kind == "bool":
                if has_value and value == "":
                    raise _Problem(f"missing a value on flag: {flag_name}")
                lowered = value.lower()
                if lowered in ("true", ""):
                    self.values[name] = "true"
                elif lowered == "false":
                    self.values[name] = "false"
                else:
                    raise _Problem(f"expecting boolean value for flag {flag_name}, not: {value}")
            elif not has_value:
                raise _Problem(f"missing a value on flag: {flag_name}")
            elif kind == "string":
                self.values[name] = value
            else:
                self.lists[name].append(value)

    def string(self, name: str) -> str | None:
        """The value, None when not given (or given empty, which Docker treats the same)."""
        return self.values.get(name) or None

    def flag(self, name: str) -> bool:
        return self.values.get(name) == "true"


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _suggest(message: str, value: str, options: list[str], case_sensitive: bool) -> str:
    """buildkit's suggest.WrapError: "… (did you mean X?)" for a close (distance < 3) option."""
    wanted = value if case_sensitive else value.lower()
    best = ""
    best_distance = 3
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == wanted:
            return message
        distance = _levenshtein(wanted, candidate)
        if distance < best_distance:
            best, best_distance = candidate, distance
    if not best:
        return message
    if not case_sensitive:
        if value == value.lower():
            best = best.lower()
        elif value == value.upper():
            best = best.upper()
    return f"{message} (did you mean {best}?)"


def _at_least_one(keyword: str) -> _Problem:
    return _Problem(f"{keyword} requires at least one argument")


def _base(node: _Node) -> dict[str, object]:
    return {"keyword": node.keyword.upper(), "line": node.start, "original": node.original.strip(GO_SPACES)}


def _command_args(node: _Node) -> list[str]:
    """buildkit's handleJSONArgs: exec form as is, shell form as one string."""
    if not node.args:
        return []
    if node.json:
        return list(node.args)
    return [" ".join(node.args)]


def _heredocs(node: _Node) -> list[Heredoc]:
    return [
        Heredoc(doc.name, _LEADING_TABS.sub("", doc.content) if doc.chomp else doc.content, doc.expand)
        for doc in node.heredocs
    ]


def _key_values(node: _Node, keyword: str) -> list[KeyValue]:
    args = node.args
    if not args:
        raise _at_least_one(keyword)
    if len(args) % 3:
        raise _Problem(f"Bad input to {keyword}, too many arguments")
    pairs = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise _Problem(f"{keyword} names can not be blank")
        pairs.append(KeyValue(args[i], args[i + 1]))
    return pairs


def _parse_from(node: _Node) -> From:
    args = node.args
    stage_name = None
    if len(args) == 3 and args[1].lower() == "as":
        stage_name = args[2].lower()
        if not _STAGE_NAME.match(stage_name):
            raise _Problem(
                f"invalid name for build stage: {go_quote(args[2])}, "
                "name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise _Problem("FROM requires either one or three arguments")
    flags = _Flags(node.flags)
    flags.declare("string", "platform")
    flags.parse()
    return From(**_base(node), image=args[0], stage_name=stage_name, platform=flags.string("platform"))


def _parse_env(node: _Node) -> Env:
    flags = _Flags(node.flags)
    flags.parse()
    return Env(**_base(node), pairs=_key_values(node, "ENV"))


def _parse_label(node: _Node) -> Label:
    flags = _Flags(node.flags)
    flags.parse()
    return Label(**_base(node), pairs=_key_values(node, "LABEL"))


def _single_argument(node: _Node) -> str:
    """MAINTAINER, WORKDIR, USER: the rest of the line is the one argument; no flags."""
    if len(node.args) != 1:
        raise _Problem(f"{node.keyword.upper()} requires exactly one argument")
    _Flags(node.flags).parse()
    return node.args[0]


def _parse_maintainer(node: _Node) -> Maintainer:
    return Maintainer(**_base(node), name=_single_argument(node))


def _parse_copy(node: _Node) -> Copy:
    keyword = node.keyword.upper()
    if len(node.args) < 2:
        raise _Problem(
            f"{keyword} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )
    flags = _Flags(node.flags)
    flags.declare("string", "chown", "chmod")
    flags.declare("bool", "link")
    if keyword == "ADD":
        flags.declare("bool", "keep-git-dir", "unpack")
        flags.declare("string", "checksum")
    else:
        flags.declare("string", "from")
        flags.declare("bool", "parents")
    flags.declare("strings", "exclude")
    flags.parse()
    *sources, dest = node.args
    if _parse_heredoc_quietly(dest) is not None:
        raise _Problem(f"{keyword} cannot accept a heredoc as a destination")
    by_name = {doc.name: doc for doc in node.heredocs}
    paths: list[str] = []
    inline: list[Heredoc] = []
    for source in sources:
        doc = _parse_heredoc_quietly(source)
        if doc is None:
            paths.append(source)
            continue
        found = by_name.get(doc.name)
        content = found.content if found is not None else ""
        if doc.chomp:
            content = _LEADING_TABS.sub("", content)
        inline.append(Heredoc(doc.name, content, doc.expand))
    return Copy(
        **_base(node),
        sources=paths,
        dest=dest,
        heredocs=inline,
        from_=flags.string("from"),
        chown=flags.string("chown"),
        chmod=flags.string("chmod"),
        link=flags.flag("link"),
        parents=flags.flag("parents"),
        exclude=list(flags.lists["exclude"]),
        checksum=flags.string("checksum"),
        keep_git_dir=flags.flag("keep-git-dir"),
        unpack=(flags.flag("unpack") if "unpack" in flags.used else None),
    )


def _parse_heredoc_quietly(word: str) -> _RawHeredoc | None:
    try:
        return _parse_heredoc(word)
    except _Problem:
        return None


def _parse_onbuild(node: _Node) -> Onbuild:
    if not node.args:
        raise _at_least_one("ONBUILD")
    _Flags(node.flags).parse()
    trigger = node.args[0].strip(GO_SPACES).upper()
    if trigger == "ONBUILD":
        raise _Problem("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise _Problem(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", node.original, count=1)
    for doc in node.heredocs:
        expression += "\n" + doc.content + doc.name
    return Onbuild(**_base(node), trigger=expression)


def _parse_workdir(node: _Node) -> Workdir:
    return Workdir(**_base(node), path=_single_argument(node))


def _parse_run(node: _Node) -> Run:
    flags = _Flags(node.flags)
    flags.declare("strings", "mount")
    flags.declare("string", "network", "security")
    flags.parse()
    specs = list(flags.lists["mount"])
    mounts = [_parse_mount(spec) for spec in specs]
    network = flags.values.get("network") if "network" in flags.used else None
    if network is not None and network not in ("default", "none", "host"):
        raise _Problem(f"invalid network mode {go_quote(network)}")
    security = flags.values.get("security") if "security" in flags.used else None
    if security is not None and security not in ("sandbox", "insecure"):
        raise _Problem(f"security {go_quote(security)} is not valid")
    return Run(
        **_base(node),
        args=_command_args(node),
        shell_form=not node.json,
        heredocs=_heredocs(node),
        mounts=mounts,
        mount_specs=specs,
        network=network,
        security=security,
    )


def _parse_cmd(node: _Node) -> Cmd:
    _Flags(node.flags).parse()
    return Cmd(**_base(node), args=_command_args(node), shell_form=not node.json)


def _parse_entrypoint(node: _Node) -> Entrypoint:
    _Flags(node.flags).parse()
    return Entrypoint(**_base(node), args=_command_args(node), shell_form=not node.json)


def _interval(flags: _Flags, name: str) -> int | None:
    value = flags.values.get(name, "")
    if not value:
        return None
    from kapal.units import parse_go_duration

    try:
        duration = parse_go_duration(value)
    except ValueError as error:
        raise _Problem(str(error)) from None
    if duration == 0:
        return 0
    if duration < 1_000_000:
        raise _Problem(f"Interval {go_quote(name)} cannot be less than 1ms")
    return duration


def _parse_healthcheck(node: _Node) -> Healthcheck:
    if not node.args:
        raise _at_least_one("HEALTHCHECK")
    kind = node.args[0].upper()
    rest = node.args[1:]
    if kind == "NONE":
        if rest:
            raise _Problem("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(**_base(node), test=["NONE"])
    flags = _Flags(node.flags)
    flags.declare("string", "interval", "timeout", "start-period", "start-interval", "retries")
    flags.parse()
    if kind != "CMD":
        raise _Problem(f"Unknown type {go_quote(kind)} in HEALTHCHECK (try CMD)")
    command = list(rest) if node.json else ([" ".join(rest)] if rest else [])
    if not command:
        raise _Problem("Missing command after HEALTHCHECK CMD")
    test = ["CMD" if node.json else "CMD-SHELL", *command]
    interval = _interval(flags, "interval")
    timeout = _interval(flags, "timeout")
    start_period = _interval(flags, "start-period")
    start_interval = _interval(flags, "start-interval")
    retries = None
    text = flags.values.get("retries", "")
    if text:
        if not _DECIMAL.match(text):
            raise _Problem(f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
        retries = int(text)
        if not -(1 << 31) <= retries < (1 << 31):
            raise _Problem(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
        if retries < 0:
            raise _Problem(f"--retries cannot be negative ({retries})")
    return Healthcheck(
        **_base(node),
        test=test,
        interval=interval,
        timeout=timeout,
        start_period=start_period,
        start_interval=start_interval,
        retries=retries,
    )


def _parse_expose(node: _Node) -> Expose:
    if not node.args:
        raise _at_least_one("EXPOSE")
    _Flags(node.flags).parse()
    return Expose(**_base(node), ports=sorted(node.args))


def _parse_user(node: _Node) -> User:
    return User(**_base(node), user=_single_argument(node))


def _parse_volume(node: _Node) -> Volume:
    if not node.args:
        raise _at_least_one("VOLUME")
    _Flags(node.flags).parse()
    paths = []
    for path in node.args:
        path = path.strip(GO_SPACES)
        if not path:
            raise _Problem("VOLUME specified can not be an empty string")
        paths.append(path)
    return Volume(**_base(node), paths=paths)


def _parse_stopsignal(node: _Node) -> StopSignal:
    if len(node.args) != 1:
        raise _Problem("STOPSIGNAL requires exactly one argument")
    return StopSignal(**_base(node), signal=node.args[0])  # Docker does not check its flags


def _parse_arg(node: _Node) -> Arg:
    if not node.args:
        raise _at_least_one("ARG")
    definitions = []
    for word in node.args:  # Docker does not check ARG's flags either
        name, sep, default = word.partition("=")
        if sep and not name:
            raise _Problem("ARG names can not be blank")
        definitions.append(ArgDef(name, default if sep else None))
    return Arg(**_base(node), args=definitions)


def _parse_shell(node: _Node) -> Shell:
    _Flags(node.flags).parse()
    args = _command_args(node)
    if not args:
        raise _at_least_one("SHELL")
    if not node.json:
        raise _Problem("SHELL requires the arguments to be in JSON form")
    return Shell(**_base(node), args=args)


_COMMAND_PARSERS: dict[str, Callable[[_Node], Command]] = {
    "add": _parse_copy,
    "arg": _parse_arg,
    "cmd": _parse_cmd,
    "copy": _parse_copy,
    "entrypoint": _parse_entrypoint,
    "env": _parse_env,
    "expose": _parse_expose,
    "from": _parse_from,
    "healthcheck": _parse_healthcheck,
    "label": _parse_label,
    "maintainer": _parse_maintainer,
    "onbuild": _parse_onbuild,
    "run": _parse_run,
    "shell": _parse_shell,
    "stopsignal": _parse_stopsignal,
    "user": _parse_user,
    "volume": _parse_volume,
    "workdir": _parse_workdir,
}


def _command(node: _Node) -> Command:
    parse = _COMMAND_PARSERS.get(node.keyword.lower())
    if parse is None:
        raise _Problem(_suggest(f"unknown instruction: {node.keyword}", node.keyword, _INSTRUCTIONS, False))
    return parse(node)


# ---------------------------------------------------------------------------------------------
# RUN --mount


_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = {
    "type": "type",
    "from": "from",
    "source": "source",
    "src": "source",
    "target": "target",
    "dst": "target",
    "destination": "target",
    "readonly": "readonly",
    "ro": "readonly",
    "readwrite": "readwrite",
    "rw": "readwrite",
    "required": "required",
    "size": "size",
    "id": "id",
    "sharing": "sharing",
    "mode": "mode",
    "uid": "uid",
    "gid": "gid",
    "env": "env",
}
_ALL_MOUNT_KEYS = [
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode",
    "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
]  # fmt: skip


def _go_bool(value: str) -> bool | None:
    """strconv.ParseBool."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _mount_fields(spec: str) -> list[str]:
    """The comma-separated fields, read as CSV (so `"source=a,b"` is one field)."""
    if '"' not in spec:
        return spec.split(",") if spec else []
    import csv

    try:
        rows = list(csv.reader([spec], strict=True))
    except csv.Error as error:
        raise _Problem(f"failed to parse csv mounts: {error}") from None
    return rows[0] if rows else []


def _parse_mount(spec: str, expand_word: Callable[[str], str] | None = None) -> Mount:
    """One `--mount=` value, checked as buildkit checks it. Values with `$` are checked only
    once expanded (`expand_word` given), as Docker does; before that they are kept as written."""
    options: dict[str, str] = {}
    mount_type = "bind"
    read_only_given = False
    fields = _mount_fields(spec)
    deferred = expand_word is None and "$" in spec
    for item in fields:
        raw_key, has_value, value = item.partition("=")
        key = raw_key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                options["readonly"] = "true"
                read_only_given = True
            elif key in ("readwrite", "rw"):
                options["readonly"] = "false"
                read_only_given = True
            elif key == "required":
                if mount_type not in ("secret", "ssh") and not deferred:
                    raise _Problem(f"unexpected key '{key}' for mount type '{mount_type}'")
                options["required"] = "true"
            elif not deferred:
                raise _Problem(f"invalid field '{item}' must be a key=value pair")
            continue
        if expand_word is not None:
            try:
                value = expand_word(value)
            except InvalidArgument as error:
                raise _Problem(str(error)) from None
        elif key == "from" and "$" in value[:-1]:
            raise _Problem(f"'{key}' doesn't support variable expansion, define alias stage instead")
        canonical = _MOUNT_KEYS.get(key)
        if canonical is None:
            if deferred:
                options[key] = value
                continue
            raise _Problem(
                _suggest(f"unexpected key '{key}' in '{item}'", key, sorted(_ALL_MOUNT_KEYS), True)
            )
        if deferred and "$" in value:
            if canonical == "type":
                mount_type = value
            else:
                options[canonical] = value
            continue
        if canonical == "type":
            lowered = value.lower()
            if lowered not in _MOUNT_TYPES:
                raise _Problem(
                    _suggest(f"unsupported mount type {go_quote(value)}", value, sorted(_MOUNT_TYPES), True)
                )
            mount_type = lowered
        elif canonical in ("readonly", "readwrite"):
            parsed = _go_bool(value)
            if parsed is None:
                raise _Problem(f"invalid value for {key}: {value}")
            options["readonly"] = "true" if parsed == (canonical == "readonly") else "false"
            read_only_given = True
        elif canonical == "required":
            if mount_type not in ("secret", "ssh"):
                raise _Problem(f"unexpected key '{key}' for mount type '{mount_type}'")
            parsed = _go_bool(value)
            if parsed is None:
                raise _Problem(f"invalid value for {key}: {value}")
            options["required"] = "true" if parsed else "false"
        elif canonical == "size":
            if mount_type != "tmpfs":
                raise _Problem(f"unexpected key '{key}' for mount type '{mount_type}'")
            from kapal.units import parse_size

            try:
                parse_size(value)
            except ValueError:
                raise _Problem(f"invalid value for {key}: {value}") from None
            options["size"] = value
        elif canonical == "sharing":
            lowered = value.lower()
            if lowered not in ("shared", "private", "locked"):
                raise _Problem(
                    _suggest(
                        f"unsupported sharing value {go_quote(value)}",
                        value,
                        ["locked", "private", "shared"],
                        True,
                    )
                )
            options["sharing"] = lowered
        elif canonical == "mode":
            if not re.fullmatch(r"[+]?[0-7]+", value) or int(value, 8) >= 1 << 32:
                raise _Problem(f"invalid value {value} for mode")
            options["mode"] = value
        elif canonical in ("uid", "gid"):
            if not re.fullmatch(r"[+]?[0-9]+", value) or int(value) >= 1 << 32:
                raise _Problem(f"invalid value {value} for {canonical}")
            options[canonical] = value
        else:
            options[canonical] = value
    if deferred:
        return Mount(mount_type, options)
    if mount_type not in ("secret", "ssh", "cache"):
        for name in ("mode", "uid", "gid"):
            if name in options:
                raise _Problem(f'{name} not allowed for "{mount_type}" type mounts')
    if not read_only_given:
        options["readonly"] = "false" if mount_type in ("cache", "tmpfs") else "true"
    if mount_type == "secret":
        if "from" in options:
            raise _Problem("secret mount should not have a from")
        if "sharing" in options:
            raise _Problem("secret mount should not define sharing")
        if not options.get("source") and not options.get("target") and not options.get("id"):
            raise _Problem("invalid secret mount. one of source, target required")
        if options.get("source") and options.get("id"):
            raise _Problem("both source and id can't be set")
    if "sharing" in options and mount_type != "cache":
        raise _Problem(f"invalid cache sharing set for {mount_type} mount")
    return Mount(mount_type, options)


def parse_mount(spec: str, expand_word: Callable[[str], str] | None = None) -> Mount:
    """A `RUN --mount=` value as a Mount: keys normalised (src→source, dst/destination→target,
    ro/rw→readonly), `readonly` always set ("true"/"false", Docker's default per type), other
    values as written. The builder calls this again with `expand_word` for build-arg values."""
    try:
        return _parse_mount(spec, expand_word)
    except _Problem as problem:
        raise InvalidArgument(str(problem)) from None


# ---------------------------------------------------------------------------------------------
# entry points


def _decode(text: str | bytes) -> str:
    if isinstance(text, bytes):
        return text.decode("utf-8", "replace")
    return text


def _phase_one(text: str, filename: str) -> _Parsed:
    try:
        return _parse_nodes(text)
    except _Located as located:
        reason = str(located.problem)
        raise DockerfileParseError(
            f"failed to parse {filename}: dockerfile parse error on line {located.start}: {reason}",
            filename=filename,
            line=located.start,
            reason=reason,
        ) from None


def _instruction_error(filename: str, line: int, reason: str) -> DockerfileParseError:
    """Docker's wording; a Dockerfile not called "Dockerfile" is named, as Docker names it in
    its other parse errors."""
    message = f"dockerfile parse error on line {line}: {reason}"
    if filename != "Dockerfile":
        message = f"failed to parse {filename}: {message}"
    return DockerfileParseError(message, filename=filename, line=line, reason=reason)


def parse_dockerfile(text: str | bytes, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile. Raises DockerfileParseError (an InvalidArgument) with Docker's
    message for anything `docker build` would refuse before running a step."""
    text = _decode(text)
    if not text:
        raise DockerfileParseError(
            f"the Dockerfile ({filename}) cannot be empty", filename=filename, line=0, reason="empty"
        )
    parsed = _phase_one(text, filename)
    result = Dockerfile(escape=parsed.escape, directives=dict(parsed.directives), warnings=parsed.warnings)
    names: set[str] = set()
    for node in parsed.nodes:
        try:
            command = _command(node)
        except _Problem as problem:
            raise _instruction_error(filename, node.start, str(problem)) from None
        if isinstance(command, From):
            if command.stage_name is not None:
                if command.stage_name in names:
                    raise _instruction_error(
                        filename, node.start, f"{command.stage_name} stage name already used"
                    )
                names.add(command.stage_name)
            result.stages.append(Stage(len(result.stages), command))
        elif not result.stages:
            if not isinstance(command, Arg):
                raise _instruction_error(filename, node.start, "no build stage in current context")
            result.meta_args.append(command)
        else:
            result.stages[-1].commands.append(command)
    if not result.stages:
        last = parsed.nodes[-1].end
        raise DockerfileParseError(
            "No image was generated. Is your Dockerfile empty?",
            filename=filename,
            line=last,
            reason="no FROM instruction",
        )
    return result


def parse_instruction(text: str, escape: str = "\\") -> Command:
    """One instruction (an ONBUILD trigger, with its heredoc bodies on the following lines).
    `escape` is the escape character of the Dockerfile the trigger came from."""
    if escape not in ("\\", "`"):
        raise InvalidArgument(f"invalid escape token '{escape}' does not match ` or \\")
    source = text if escape == "\\" else f"# escape={escape}\n{text}"
    offset = 0 if escape == "\\" else 1
    try:
        parsed = _parse_nodes(source)
    except _Located as located:
        raise DockerfileParseError(
            f"dockerfile parse error on line {located.start - offset}: {located.problem}",
            filename="Dockerfile",
            line=located.start - offset,
            reason=str(located.problem),
        ) from None
    if len(parsed.nodes) != 1:
        raise InvalidArgument("onbuild trigger should be a single expression")
    node = parsed.nodes[0]
    node.start -= offset
    node.end -= offset
    try:
        return _command(node)
    except _Problem as problem:
        raise _instruction_error("Dockerfile", node.start, str(problem)) from None
