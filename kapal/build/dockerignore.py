""".dockerignore: which context files a build never sees, by Docker's rules.

The rules are moby/patternmatcher's (and its ignorefile reader), which both the docker CLI and
BuildKit use: patterns are cleaned like Go's `filepath.Clean`, a leading `/` is dropped, `!`
re-includes, the last matching pattern wins, `**` crosses directories, and a pattern that matches
a directory also matches everything under it. Each pattern is compiled once, and `can_skip_dir`
lets a context walker prune whole directories.

Two ways of asking, as in Docker: `matches` (MatchesOrParentMatches, one path on its own, what the
daemon uses) and `matches_using_parent` (MatchesUsingParentResults, fed the parent directory's
answer, what the docker CLI's context tar and BuildKit use while walking). They differ in rare
orderings such as `src/*.go` then `!src`: walkers should use the second.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from kapal.build.shell import GO_SPACES
from kapal.errors import InvalidArgument
from kapal.gopath import clean

__all__ = ["IgnoreMatcher", "ignore_file_for", "load_ignore_file", "read_ignore_patterns", "keep_build_files"]

_REGEX_SPECIAL = frozenset(".+()|{}$")
_EXACT, _PREFIX, _SUFFIX, _REGEX = range(4)
_BAD_PATTERN = "syntax error in pattern"


def read_ignore_patterns(text: str | bytes) -> list[str]:
    """The patterns of an ignore file (ignorefile.ReadAll): `#` comments (only at column 0) and
    blank lines dropped, whitespace trimmed, each pattern cleaned, a leading `/` removed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    patterns = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if line.startswith("#"):
            continue
        pattern = line.strip(GO_SPACES)
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip(GO_SPACES)
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _check_syntax(pattern: str) -> None:
    """Go's filepath.Match error rules: a trailing `\\`, unclosed or malformed `[...]`."""
    i = 0
    n = len(pattern)

    def escaped_char(j: int) -> int:
        """Index after one (possibly escaped) class character at j; raises on a bad one."""
        if j >= n or pattern[j] in "-]":
            raise InvalidArgument(_BAD_PATTERN)
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                raise InvalidArgument(_BAD_PATTERN)
        j += 1
        if j >= n:
            raise InvalidArgument(_BAD_PATTERN)
        return j

    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise InvalidArgument(_BAD_PATTERN)
            i += 2
        elif ch == "[":
            i += 1
            if i >= n:
                raise InvalidArgument(_BAD_PATTERN)
            if pattern[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and pattern[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = escaped_char(i)
                if pattern[i] == "-":
                    i = escaped_char(i + 1)
                ranges += 1
        else:
            i += 1


class _Pattern:
    __slots__ = ("text", "exclusion", "kind", "regex", "dirs", "lineage")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        self.dirs = text.count("/") + 1
        self.kind, self.regex = _compile(text)
        # One regex for "the path or one of its parent directories matches": a match from the
        # start that ends where a path component ends.
        self.lineage: re.Pattern[str] | None = None
        if self.kind == _SUFFIX:
            suffix = text[2:]
            alternatives = "(?s:.*)" + re.escape(suffix)
            if suffix[:1] == "/":
                alternatives += "|" + re.escape(suffix[1:])
            self.lineage = re.compile(f"(?:{alternatives})(?=/|\\Z)")
        elif self.regex is not None:
            self.lineage = re.compile(f"(?:{self.regex.pattern})(?=/|\\Z)", re.ASCII)

    def match_or_parent(self, path: str) -> bool:
        """match() on the path or any of its parent directories."""
        kind = self.kind
        if kind == _EXACT:
            text = self.text
            return path == text or (path.startswith(text) and path[len(text) : len(text) + 1] == "/")
        if kind == _PREFIX:
            return path.startswith(self.text[:-2])
        return self.lineage.match(path) is not None  # type: ignore[union-attr]

    def match(self, path: str) -> bool:
        kind = self.kind
        if kind == _EXACT:
            return path == self.text
        if kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        return self.regex.fullmatch(path) is not None  # type: ignore[union-attr]


def _compile(pattern: str) -> tuple[int, re.Pattern[str] | None]:
    """patternmatcher's compile: most patterns need no regex (exact, `dir/**`, `**/name`)."""
    out: list[str] = []
    kind = _EXACT
    i = 0
    n = len(pattern)
    first = True
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        out.append(".*")
                        kind = _REGEX
                else:
                    out.append("(.*/)?")
                    kind = _REGEX
                if first:
                    kind = _SUFFIX
            else:
                out.append("[^/]*")
                kind = _REGEX
        elif ch == "?":
            out.append("[^/]")
            kind = _REGEX
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
                kind = _REGEX
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
            kind = _REGEX
        else:
            out.append(ch)  # `^` too: Go leaves it raw (an anchor that never matches mid-pattern)
        first = False
    if kind != _REGEX:
        return kind, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" on `[[]`
            return kind, re.compile("".join(out), re.ASCII)
    except re.error:
        raise InvalidArgument(_BAD_PATTERN) from None


class IgnoreMatcher:
    """Compiled ignore patterns (patternmatcher.New). `matches` is MatchesOrParentMatches."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[_Pattern] = []
        for text in patterns:
            text = text.strip(GO_SPACES)
            if not text:
                continue
            text = clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise InvalidArgument('illegal exclusion pattern: "!"')
                text = text[1:]
            _check_syntax(text)
            self.patterns.append(_Pattern(text, exclusion))
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str) -> bool:
        """Whether the context path (slash-separated, relative) is ignored: the last pattern
        matching it or one of its parent directories decides."""
        path = clean(path)
        if path == "." or not self.patterns:
            return False
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.match_or_parent(path):
                matched = not pattern.exclusion
        return matched

    def matches_using_parent(self, path: str, parent: list[bool] | None = None) -> tuple[bool, list[bool]]:
        """MatchesUsingParentResults, for walkers: pass the second value returned for a directory
        when asking about its entries, so each pattern is tried once per path."""
        matched = False
        info = [False] * len(self.patterns)
        for i, pattern in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit:
                if pattern.exclusion != matched:
                    continue
                hit = pattern.match(path) if parent else pattern.match_or_parent(path)
            info[i] = hit
            if hit:
                matched = not pattern.exclusion
        return matched, info

    def can_skip_dir(self, path: str, ignored: bool | None = None) -> bool:
        """True when `path` (a directory) is ignored and nothing under it can be re-included by
        a `!` pattern, so a walker need not descend into it. A walker using
        `matches_using_parent` passes its own answer for the directory as `ignored`."""
        path = clean(path)
        if not (self.matches(path) if ignored is None else ignored):
            return False
        if not self.has_exclusions:
            return True
        # If no `!` pattern can match a path below the directory, every path below is ignored
        # too (it matches at least the inclusions the directory matches, and the same exclusions),
        # whether matched with `matches` or walked with `matches_using_parent`.
        prefix = path + "/"
        return not any(p.exclusion and _may_match_below(p, prefix) for p in self.patterns)

    def legacy_matches(self, path: str) -> bool:
        """patternmatcher.Matches (deprecated there; only the parent at the pattern's depth is
        tried), which the docker CLI still uses to keep the Dockerfile and .dockerignore."""
        path = clean(path)
        if path == ".":
            return False
        parent_path = path.rpartition("/")[0] or "."
        parent_dirs = parent_path.split("/")
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit and parent_path != "." and pattern.dirs <= len(parent_dirs):
                hit = pattern.match("/".join(parent_dirs[: pattern.dirs]))
            if hit:
                matched = not pattern.exclusion
        return matched


def _may_match_below(pattern: _Pattern, prefix: str) -> bool:
    """Could `pattern` match some path starting with `prefix` ("dir/")? Conservative: True when unsure."""
    text = pattern.text
    if pattern.kind == _EXACT:
        return text.startswith(prefix)
    if pattern.kind == _PREFIX:
        head = text[:-2]
        return head.startswith(prefix) or prefix.startswith(head)
    if pattern.kind == _SUFFIX or "**" in text or "\\" in text:
        return True
    # Wildcards other than ** never cross a "/": compare component by component.
    wanted = prefix[:-1].split("/")
    parts = text.split("/")
    if len(parts) <= len(wanted):
        return False
    for part, name in zip(parts, wanted):
        kind, regex = _compile(part)
        if kind == _EXACT and part != name:
            return False
        if kind == _REGEX and regex is not None and regex.fullmatch(name) is None:
            return False
    return True


def ignore_file_for(context_dir: str | Path, dockerfile_path: str | Path | None = None) -> Path | None:
    """The ignore file a build uses: `<Dockerfile>.dockerignore` next to the Dockerfile (BuildKit's
    per-Dockerfile file) wins over the context's `.dockerignore`; None when there is neither."""
    context = Path(context_dir)
    dockerfile = Path(dockerfile_path) if dockerfile_path else Path("Dockerfile")
    if not dockerfile.is_absolute():
        dockerfile = context / dockerfile
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if specific.is_file():
        return specific
    default = context / ".dockerignore"
    return default if default.is_file() else None


def load_ignore_file(context_dir: str | Path, dockerfile_path: str | Path | None = None) -> IgnoreMatcher:
    """The matcher for a build context (empty when there is no ignore file)."""
    path = ignore_file_for(context_dir, dockerfile_path)
    if path is None:
        return IgnoreMatcher([])
    try:
        return IgnoreMatcher(read_ignore_patterns(path.read_bytes()))
    except InvalidArgument as error:
        raise InvalidArgument(f"error reading {path.name}: {error}") from None


def keep_build_files(patterns: list[str], dockerfile: str) -> list[str]:
    """The docker CLI's TrimBuildFilesFromExcludes: an ignored `.dockerignore` or Dockerfile is
    still sent (the daemon needs them), by appending `!` patterns for them."""
    matcher = IgnoreMatcher(patterns)
    out = list(patterns)
    if matcher.legacy_matches(".dockerignore"):
        out.append("!.dockerignore")
    if dockerfile and matcher.legacy_matches(dockerfile):
        out.append("!" + dockerfile)
    return out
