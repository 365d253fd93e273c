""".dockerignore parity with moby/patternmatcher and its ignorefile reader.

Pattern tables restate patternmatcher_test.go's cases by meaning; the walking tests check that
pruning with `can_skip_dir` never hides a file `matches` would keep.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapal.build.dockerignore import (
    IgnoreMatcher,
    ignore_file_for,
    keep_build_files,
    load_ignore_file,
    read_ignore_patterns,
)
from kapal.errors import InvalidArgument

SINGLE = [
    ("**", "file", True),
    ("**", "dir/file", True),
    ("**/", "file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    # filepath.Match's own table
    ("*", "abc", True),
    ("a*", "ab/c", True),  # the parent "ab" matches
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("ab[^e-g]", "abc", True),
    ("a?b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("a?b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[x\\-]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
    # directories match what is below them, `./` and `/` are dropped by cleaning
    ("docs", "docs/README.md", True),
    ("./docs/", "docs/a/b", True),
    ("/docs", "docs", True),
    ("docs/../src", "src/main.go", True),
    ("*.go", "a/b.go", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), SINGLE, ids=[f"{p} {t}" for p, t, _ in SINGLE])
def test_single_pattern(pattern: str, path: str, expected: bool) -> None:
    matcher = IgnoreMatcher(read_ignore_patterns(pattern))
    assert matcher.matches(path) is expected
    assert _walk_match(matcher, path) is expected


MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["docs", "  !docs/README.md  "], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["*", "!keep", "keep/drop"], "keep/drop/x", True),
    (["*.go"], ".", False),
]


@pytest.mark.parametrize(("patterns", "path", "expected"), MULTI, ids=[f"{p} {t}" for p, t, _ in MULTI])
def test_ordered_patterns(patterns: list[str], path: str, expected: bool) -> None:
    matcher = IgnoreMatcher(patterns)
    assert matcher.matches(path) is expected


@pytest.mark.parametrize(
    "pattern", ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "!"]
)
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(InvalidArgument):
        IgnoreMatcher([pattern])


def test_read_ignore_file() -> None:
    text = (
        b"\xef\xbb\xbf# comment\r\n"
        b"  # not a comment: only column 0 starts one\n"
        b"\n"
        b"   node_modules   \n"
        b"/abs/path\n"
        b"./rel/../other\n"
        b"! keep.txt \n"
        b"!/root.txt\n"
        b"/\n"
        b"**/*.tmp\n"
    )
    assert read_ignore_patterns(text) == [
        "# not a comment: only column 0 starts one",
        "node_modules",
        "abs/path",
        "other",
        "!keep.txt",
        "!root.txt",
        "/",
        "**/*.tmp",
    ]


def test_keep_build_files() -> None:
    assert keep_build_files(["*", "!src"], "Dockerfile") == ["*", "!src", "!.dockerignore", "!Dockerfile"]
    assert keep_build_files(["build"], "build/Dockerfile") == ["build", "!build/Dockerfile"]
    assert keep_build_files(["src"], "Dockerfile") == ["src"]


def test_ignore_file_for(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert ignore_file_for(tmp_path) is None
    (tmp_path / ".dockerignore").write_text("*.log\n")
    assert ignore_file_for(tmp_path) == tmp_path / ".dockerignore"
    assert ignore_file_for(tmp_path, "sub/app.Dockerfile") == tmp_path / ".dockerignore"
    (tmp_path / "sub" / "app.Dockerfile.dockerignore").write_text("*.txt\n")
    assert ignore_file_for(tmp_path, "sub/app.Dockerfile") == tmp_path / "sub" / "app.Dockerfile.dockerignore"
    assert ignore_file_for(tmp_path, tmp_path / "sub" / "app.Dockerfile") == (
        tmp_path / "sub" / "app.Dockerfile.dockerignore"
    )
    (tmp_path / "Dockerfile.dockerignore").write_text("*.md\n")
    assert ignore_file_for(tmp_path) == tmp_path / "Dockerfile.dockerignore"
    matcher = load_ignore_file(tmp_path, "sub/app.Dockerfile")
    assert matcher.matches("a.txt") and not matcher.matches("a.log")
    assert not load_ignore_file(tmp_path / "sub")  # no ignore file: nothing is ignored
    (tmp_path / ".dockerignore").write_text("[\n")
    with pytest.raises(InvalidArgument, match="error reading .dockerignore: syntax error in pattern"):
        load_ignore_file(tmp_path, "other/Dockerfile")


def test_can_skip_dir() -> None:
    matcher = IgnoreMatcher(["node_modules", "build", "!build/keep.txt", "dist/**", "!**/important", "cache"])
    assert matcher.can_skip_dir("node_modules") is False  # `!**/important` could match below
    plain = IgnoreMatcher(["node_modules", "*.log"])
    assert plain.can_skip_dir("node_modules")
    assert plain.can_skip_dir("node_modules/x")
    assert not plain.can_skip_dir("src")
    keep = IgnoreMatcher(["build", "!build/keep.txt", "vendor", "!docs/*.md", "!vendor/*/LICENSE"])
    assert not keep.can_skip_dir("build")
    assert not keep.can_skip_dir("vendor")
    assert keep.can_skip_dir("vendor/a/b")  # LICENSE sits directly in vendor/*/ only
    assert not keep.can_skip_dir("vendor/a")
    readded = IgnoreMatcher(["cache", "!cache"])
    assert not readded.can_skip_dir("cache")


def _walk_match(matcher: IgnoreMatcher, path: str) -> bool:
    """matches_using_parent, fed directory by directory as a context walker would."""
    parts = path.split("/")
    info = None
    for i in range(1, len(parts)):
        _, info = matcher.matches_using_parent("/".join(parts[:i]), info)
    return matcher.matches_using_parent(path, info)[0]


def _tree(root: Path) -> list[str]:
    paths = ["a/b/c.txt", "a/b/d.log", "a/keep.md", "node_modules/x/index.js", "node_modules/x/LICENSE",
             "src/main.go", "src/gen/out.go", "docs/README.md", "docs/sub/x.md", "important"]  # fmt: skip
    for path in paths:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path)
    return paths


def _walk(root: Path, matcher: IgnoreMatcher, using_parent: bool) -> set[str]:
    """Files kept by a pruning walk, asking `matches` or `matches_using_parent`."""
    kept = set()
    infos: dict[str, list[bool] | None] = {"": None}
    for directory, dirs, files in os.walk(root):
        rel = os.path.relpath(directory, root)
        prefix = "" if rel == "." else rel + "/"
        parent = infos[prefix]
        answers = {d: matcher.matches_using_parent(prefix + d, parent) for d in dirs}
        if using_parent:
            dirs[:] = [d for d in dirs if not matcher.can_skip_dir(prefix + d, answers[d][0])]
        else:
            dirs[:] = [d for d in dirs if not matcher.can_skip_dir(prefix + d)]
        for d in dirs:
            infos[prefix + d + "/"] = answers[d][1]
        for f in files:
            ignored = (
                matcher.matches_using_parent(prefix + f, parent)[0]
                if using_parent
                else matcher.matches(prefix + f)
            )
            if not ignored:
                kept.add(prefix + f)
    return kept


PATTERN_PARTS = st.sampled_from(
    ["a", "b", "src", "docs", "node_modules", "x", "*", "**", "?", "*.md", "*.go", "gen"]
)
PATTERNS = st.lists(
    st.tuples(st.booleans(), st.lists(PATTERN_PARTS, min_size=1, max_size=3)).map(
        lambda item: ("!" if item[0] else "") + "/".join(item[1])
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(PATTERNS)
def test_pruning_agrees_with_matching(tmp_path_factory: pytest.TempPathFactory, patterns: list[str]) -> None:
    root = tmp_path_factory.mktemp("ctx")
    paths = _tree(root)
    matcher = IgnoreMatcher(patterns)
    assert _walk(root, matcher, False) == {path for path in paths if not matcher.matches(path)}
    assert _walk(root, matcher, True) == {path for path in paths if not _walk_match(matcher, path)}


def test_walking_answer_differs_as_in_docker() -> None:
    # MatchesUsingParentResults does not look at parents again for `!src`; Docker's walkers
    # (CLI context tar, BuildKit) therefore drop src/main.go where MatchesOrParentMatches keeps it
    matcher = IgnoreMatcher(["src/*.go", "!src"])
    assert matcher.matches("src/main.go") is False
    assert _walk_match(matcher, "src/main.go") is True


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=5), st.text(max_size=20))
def test_matcher_never_crashes(patterns: list[str], path: str) -> None:
    try:
        matcher = IgnoreMatcher(patterns)
    except InvalidArgument:
        return
    matcher.matches(path)
    matcher.can_skip_dir(path or "x")


def _reference_matches(matcher: IgnoreMatcher, path: str) -> bool:
    """MatchesOrParentMatches as Go writes it: each pattern against the path, then each parent."""
    parts = path.split("/")
    parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
    matched = False
    for pattern in matcher.patterns:
        if pattern.exclusion != matched:
            continue
        if pattern.match(path) or any(pattern.match(parent) for parent in parents):
            matched = not pattern.exclusion
    return matched


PATH_PARTS = st.sampled_from(
    ["a", "b", "src", "docs", "x.md", "y.go", "gen", "node_modules", ".hidden", "a.b"]
)


@settings(max_examples=400, deadline=None)
@given(PATTERNS, st.lists(PATH_PARTS, min_size=1, max_size=5))
def test_lineage_regex_agrees_with_parent_loop(patterns: list[str], parts: list[str]) -> None:
    matcher = IgnoreMatcher(patterns)
    path = "/".join(parts)
    assert matcher.matches(path) is _reference_matches(matcher, path)
