"""Docker's shell lexer: variable substitution and quote removal in Dockerfile words.

The builder expands ENV, LABEL, ARG, COPY, WORKDIR… words with this before it acts on them, and
the result must be what `docker build` gets, byte for byte: the rules are moby/buildkit's
`frontend/dockerfile/shell/lex.go` (which the legacy builder vendors), not POSIX sh's. Its quirks
are kept on purpose: `$1`/`$@` are never set, `${x:=y}` is an error, `\\` only escapes `"`, `$`
and itself inside double quotes, `${x#pattern}` supports `*` and `?` but no brackets.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from kapal.errors import InvalidArgument

__all__ = ["GO_SPACES", "ShellLex", "ShellError", "go_is_space", "go_quote", "words_used"]

#: Go's unicode.IsSpace characters (Python's `str.isspace` also counts \x1c-\x1f): for
#: `str.strip(GO_SPACES)` as Go's strings.TrimSpace, and usable inside a regex character class.
GO_SPACES = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_GO_SPACE_SET = frozenset(GO_SPACES)
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
# Characters that start something the lexer must look at; a word without any is returned as is.
_PLAIN_WORD = re.compile(r"[^$'\"<\\`]*\Z")


def go_is_space(ch: str) -> bool:
    """Go's `unicode.IsSpace`."""
    return ch in _GO_SPACE_SET


class ShellError(InvalidArgument):
    """A word could not be expanded: bad syntax or a `${VAR?message}` whose variable is unset."""


class _Words:
    """Word splitting of the expanded text (buildkit's wordsStruct)."""

    __slots__ = ("buf", "words", "in_word")

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if go_is_space(ch):
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf.clear()
                self.in_word = False
        else:
            self.buf.append(ch)
            self.in_word = True

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        if text:
            self.buf.append(text)
        self.in_word = True

    def result(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf.clear()
            self.in_word = False
        return self.words


class _Expansion:
    """One pass over one word."""

    def __init__(self, lex: ShellLex, text: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = lex.escape
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        if self.pos < len(self.text):
            self.pos += 1
            return self.text[self.pos - 1]
        return ""

    def get_env(self, name: str) -> tuple[str, bool]:
        value = self.env.get(name)
        if value is None:
            self.unmatched.add(name)
            return "", False
        self.matched.add(name)
        return value, True

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process_stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        text = self.text
        end = len(text)
        quotes = not self.lex.skip_process_quotes
        escape = self.escape
        while self.pos < end:
            ch = text[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), words.result()
            if ch == "$":
                value = self.process_dollar()
                result.append(value)
                words.add_string(value)
            elif ch == "<":
                value = self.process_possible_heredoc()
                result.append(value)
                words.add_raw_string(value)
            elif quotes and ch == "'":
                value = self.process_single_quote()
                result.append(value)
                words.add_raw_string(value)
            elif quotes and ch == '"':
                value = self.process_double_quote()
                result.append(value)
                words.add_raw_string(value)
            else:
                self.pos += 1
                if ch == escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    if self.pos >= end:
                        break  # an escape at the end of the word is dropped
                    ch = text[self.pos]
                    self.pos += 1
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise ShellError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def read_until(self, stop: str, raw_escapes: bool, missing: str) -> str:
        """One part of `${…}` up to `stop`; `missing` is the error when the word ends first."""
        try:
            return self.process_stop_on(stop, raw_escapes)[0]
        except ShellError:
            if not self.peek():
                raise ShellError(missing) from None
            raise

    def process_single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        raw = self.lex.raw_quotes
        self.pos += 1
        close = self.text.find("'", self.pos)
        if close < 0:
            raise ShellError("unexpected end of statement while looking for matching single-quote")
        body = self.text[self.pos : close]
        self.pos = close + 1
        return f"'{body}'" if raw else body

    def process_double_quote(self) -> str:
        raw = self.lex.raw_quotes
        result: list[str] = []
        self.pos += 1
        if raw:
            result.append('"')
        escape = self.escape
        while True:
            ch = self.peek()
            if not ch:
                raise ShellError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.pos += 1
                if raw:
                    result.append('"')
                return "".join(result)
            if ch == "$":
                result.append(self.process_dollar())
                continue
            self.pos += 1
            if ch == escape:
                if self.raw_escapes:
                    result.append(ch)
                following = self.peek()
                if not following:
                    continue  # dropped; the loop then reports the missing quote
                if following in ('"', "$", escape):
                    ch = self.next()
            result.append(ch)

    def process_name(self) -> str:
        text = self.text
        start = self.pos
        end = len(text)
        if start < end:
            first = text[start]
            if first.isdecimal():
                pos = start
                while pos < end and text[pos].isdecimal():
                    pos += 1
                self.pos = pos
                return text[start:pos]
            if first in _SPECIAL_PARAMS:
                self.pos += 1
                return first
        pos = start
        while pos < end:
            ch = text[pos]
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            pos += 1
        self.pos = pos
        return text[start:pos]

    def process_possible_heredoc(self) -> str:
        self.pos += 1
        if self.peek() != "<":
            return "<"
        self.pos += 1
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in "\t\r ":
            self.pos += 1
        return "<<" + self.text[start : self.pos]

    def process_dollar(self) -> str:
        self.pos += 1
        skip_unset = self.lex.skip_unset_env
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "$" + name
            return value

        self.pos += 1
        following = self.peek()
        if not following:
            raise ShellError("syntax error: missing '}'")
        if following in "{}:":
            raise ShellError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        modifier = ch
        if ch == "}":
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "${" + name + "}"
            return value
        if ch and ch in ":+-?#%":
            null_is_unset = False
            if ch == ":":
                null_is_unset = True
                ch = self.next()
                modifier += ch
            pattern_mode = ch in ("#", "%") and ch != ""
            if null_is_unset and pattern_mode:
                raise ShellError(f"unsupported modifier ({modifier}) in substitution")
            word = self.read_until("}", pattern_mode, "syntax error: missing '}'")
            value, found = self.get_env(name)
            if skip_unset and not found:
                return "${" + name + modifier + word + "}"
            if ch == "-":
                return word if not found or (null_is_unset and value == "") else value
            if ch == "+":
                return "" if not found or (null_is_unset and value == "") else word
            if ch == "?":
                if not found:
                    raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise ShellError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            if ch in ("#", "%"):
                greedy = False
                if word[:1] == ch:
                    greedy = True
                    word = word[1:]
                if ch == "%":
                    return _trim_suffix(word, value, greedy)
                return _trim_prefix(word, value, greedy)
            raise ShellError(f"unsupported modifier ({modifier}) in substitution")
        if ch == "/":
            replace_all = self.peek() == "/"
            if replace_all:
                self.pos += 1
            pattern = self.read_until("/", True, "syntax error: missing '/' in ${}")
            replacement = self.read_until("}", True, "syntax error: missing '}'")
            value, found = self.get_env(name)
            if skip_unset and not found:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            regex = _pattern_regex(pattern, True, False)
            return _replace(regex, value, replacement, replace_all)
        raise ShellError(f"unsupported modifier ({modifier}) in substitution")


class ShellLex:
    """Docker's lexer for one escape character (`\\` or the backtick of `# escape=\\``).

    `raw_quotes`/`raw_escapes` keep quotes/escape characters in the output, `skip_unset_env`
    leaves references to unset variables as written: the parser uses those to find heredocs.
    """

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """`word` with variables substituted and quotes removed; spaces inside are kept."""
        if _PLAIN_WORD.match(word) and self.escape not in word:
            return word
        return self._process(word, env)[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """`word` expanded, then split on unquoted whitespace (as `docker build` splits words)."""
        return self._process(word, env)[1]

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str], set[str]]:
        """The expansion, the variable names found in `env`, and those referenced but unset."""
        expansion = _Expansion(self, word, env)
        result, _ = _run(expansion, word)
        return result, expansion.matched, expansion.unmatched

    def _process(self, word: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
        return _run(_Expansion(self, word, env), word)


def _run(expansion: _Expansion, word: str) -> tuple[str, list[str]]:
    try:
        return expansion.process_stop_on("", expansion.lex.raw_escapes)
    except ShellError as error:
        raise ShellError(f"failed to process {go_quote(word)}: {error}") from None
    except RecursionError:  # hundreds of nested ${a:-${b:-…}}: Go's stack grows, Python's does not
        raise ShellError(f"failed to process {go_quote(word)}: substitutions nested too deeply") from None


def words_used(word: str, escape: str = "\\") -> set[str]:
    """The variable names `word` refers to (so the builder knows which build args a step uses).

    Names inside `${a:-$b}` count too. A word with a syntax error reports what was seen before it.
    """
    if "$" not in word:
        return set()
    expansion = _Expansion(ShellLex(escape, skip_unset_env=True), word, {})
    try:
        expansion.process_stop_on("", False)
    except (ShellError, RecursionError):
        pass
    return expansion.matched | expansion.unmatched


@functools.lru_cache(maxsize=256)
def _pattern_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell wildcard (`*`, `?`, `\\` escapes; no brackets) as a regex, as buildkit converts it."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            following = pattern[i] if i < n else ""
            if following in ("}", "/"):
                continue  # the escape protected `}`/`/` from ${}; it is not part of the pattern
            tok = following
            i += 1
            if tok not in ("*", "?", "\\"):
                raise ShellError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{tok}'")
            out.append("\\" + tok)
            continue
        out.append(re.escape(tok))
    try:
        return re.compile("".join(out))
    except re.error as error:  # pragma: no cover - every token is escaped
        raise ShellError(f"invalid pattern ({pattern}) in substitution: {error}") from None


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy, True).search(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern, keeping each `\\x` escape in front of its character."""
    tokens: list[str] = []
    i = 0
    last = len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            tokens.append(pattern[i : i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # Regexes find the leftmost match only: reverse pattern and value to find the rightmost.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


_GO_TEMPLATE = re.compile(r"\$(\$|\{([A-Za-z0-9_]+)\}|[A-Za-z0-9_]+)")


def _replace(regex: re.Pattern[str], value: str, replacement: str, replace_all: bool) -> str:
    if replace_all:
        # Go's ReplaceAllString: `$name` in the replacement is a (here always empty) group, `$$` is `$`,
        # and an empty match right after a previous match is skipped.
        replacement = _GO_TEMPLATE.sub(lambda m: "$" if m.group(1) == "$" else "", replacement)
        out: list[str] = []
        last = 0
        previous_end = -1
        for match in regex.finditer(value):
            start, end = match.span()
            if start == end and start == previous_end:
                continue
            out.append(value[last:start])
            out.append(replacement)
            last = end
            previous_end = end
        out.append(value[last:])
        return "".join(out)
    match = regex.search(value)
    if match is None:
        return value
    return value[: match.start()] + replacement + value[match.end() :]


def go_quote(text: str) -> str:
    """Go's `%q`; only error messages need it, so the module that has it is imported then."""
    from kapal.cli.template import go_quote

    return go_quote(text)
