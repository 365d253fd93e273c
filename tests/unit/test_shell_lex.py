"""Docker's shell lexer (buildkit frontend/dockerfile/shell): expansion and word splitting.

The tables restate buildkit's envVarTest / wordsTest / lex_test.go cases by meaning; the
environment is theirs: PWD=/home, SHELL=bash, KOREAN=한국어 and NULL set but empty.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapal.build.shell import ShellError, ShellLex, words_used
from kapal.errors import InvalidArgument

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}
ERROR = object()

WORD_CASES = [
    # quotes
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he'llo", ERROR),
    ("he\\'llo", "he'llo"),
    ("he\\\\'llo", ERROR),
    ("abc\\tdef", "abctdef"),
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ('"hello', ERROR),
    ('"hello\\"', ERROR),
    ('"hel\'lo"', "hel'lo"),
    ("'hello", ERROR),
    ("'hello\\'", "hello\\"),
    ("'hello\\there'", "hello\\there"),
    ("'hello\\\\there'", "hello\\\\there"),
    ("\"''\"", "''"),
    ("'\"hello\"'", '"hello"'),
    # $VAR
    ("$.", "$."),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),  # names are case-sensitive
    ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    ("'he\\$PWD'", "he\\$PWD"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ('"$PWD"', "/home"),
    ("'$PWD'", "$PWD"),
    ("'he${XX}'", "he${XX}"),
    ("$KOREAN", "한국어"),
    ("안녕$KOREAN", "안녕한국어"),
    ("안'녕'하세요", "안녕하세요"),
    ("안녕\\'하세요", "안녕'하세요"),
    # ${VAR}
    ("\\${}", "${}"),
    ("he\\${}xx", "he${}xx"),
    ("${}", ERROR),
    ("he${}xx", ERROR),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${.}", ERROR),
    ("he${PWD", ERROR),
    ("${{aaa}", ERROR),
    ("${aaa}}", "}"),
    ("${aaa", ERROR),
    ("${:}", ERROR),
    ("${:-bbb}", ERROR),
    # :- :+ - + (unset vs empty)
    ("he${UNSET:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${UNSET:-$PWD}xx", "he/homexx"),
    ("he${UNSET:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${UNSET:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${UNSET:+${PWD}}xx", "hexx"),
    ("he${PWD:+${UNSET}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${UNSET:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    ("he${UNSET:-\\$PWD:}xx", "he$PWD:xx"),
    ("he${UNSET:-\\${PWD}z}xx", "he${PWDz}xx"),
    ("${aaa:-bbb}}", "bbb}"),
    ("${aaa:-bbb", ERROR),
    ("${aaa:-bbb ${foo}", ERROR),
    ("${aaa:-bbb {foo}", "bbb {foo"),
    ("${NULL:-x}", "x"),
    ("${NULL-x}", ""),
    ("${NULL:+x}", ""),
    ("${NULL+x}", "x"),
    ("${UNSET-x}", "x"),
    ("${UNSET+x}", ""),
    # ? and unsupported modifiers
    ("he${UNSET:YYY}", ERROR),
    ("he${UNSET?}", ERROR),
    ("he${UNSET:?}", ERROR),
    ("he${PWD?}", "he/home"),
    ("he${PWD:?}", "he/home"),
    ("he${NULL?}", "he"),
    ("he${NULL:?}", ERROR),
    ("he${PWD:=000}xx", ERROR),
    ("${FOO:#}", ERROR),
    ("${FOO:%%}", ERROR),
    # positional and special parameters are never set
    ("$1", ""),
    ("${1:-bbb}", "bbb"),
    ("${1:+bbb}", ""),
    ("$999aaa", "aaa"),
    ("${001:-bbb}aaa", "bbbaaa"),
    ("$@@@", "@@"),
    ("${@:-bbb}aaa", "bbbaaa"),
    ("$*", ""),
    ("${#:-bbb}", "bbb"),
    ("$?", ""),
    ("$$", ""),
    ("${!:-bbb}", "bbb"),
    ("$0", ""),
    ("${-}", ""),
]


@pytest.mark.parametrize(("word", "expected"), WORD_CASES, ids=[case[0] for case in WORD_CASES])
def test_process_word(word: str, expected: object) -> None:
    _expect(lambda: ShellLex().process_word(word, ENV), expected)


def _expect(expand: Callable[[], object], expected: object) -> None:
    if expected is ERROR:
        with pytest.raises(ShellError):
            expand()
    else:
        assert expand() == expected


PATTERN_CASES = [
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO%y*}", {"FOO": "xxyy"}, "xxy"),
    ("${FOO%%y*}", {"FOO": "xxyy"}, "xx"),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#x}", {}, ""),
    (
        "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
        "/foo.*/*.txt - /foo..*.txt",
    ),
    (
        "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
        "/tmp/bar.txt - /bar.txt",
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
        {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"},
        "/foo/b/c.txt - /foo/c.txt",
    ),
    ("${FOO/$N/$R}", {"FOO": "http://google.de", "N": "http://", "R": "https://"}, "https://google.de"),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    ("${FOO//x*/R}", {"FOO": "axxb"}, "aR"),
    (
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
        {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
        "something-v1.2.3.linux-arm-v7.tar.gz",
    ),
    (
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
        {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm64", "TARGETVARIANT": ""},
        "something-v1.2.3.linux-arm64.tar.gz",
    ),
]


@pytest.mark.parametrize(("word", "env", "expected"), PATTERN_CASES, ids=[c[0] for c in PATTERN_CASES])
def test_patterns_and_substitution(word: str, env: dict[str, str], expected: str) -> None:
    assert ShellLex().process_word(word, env) == expected


@pytest.mark.parametrize(
    "word", ["${FOO=aaa}", "${FOO=:aaa}", "${FOO=}", "${FOO//ww}", "${FOO//}", "${FOO#\\x}", "${FOO/a"]
)
def test_substitution_errors(word: str) -> None:
    with pytest.raises(ShellError) as info:
        ShellLex().process_word(word, {"FOO": "xxyy"})
    assert str(info.value).startswith("failed to process ")
    assert isinstance(info.value, InvalidArgument)


def test_mandatory_variables() -> None:
    lex = ShellLex()
    assert lex.process_word("${VAR:?message here$ARG}", {"VAR": "plain", "ARG": "x"}) == "plain"
    with pytest.raises(ShellError, match="VAR: message herex"):
        lex.process_word("${VAR:?message here$ARG}", {"VAR": "", "ARG": "x"})
    with pytest.raises(ShellError, match="VAR: message herex"):
        lex.process_word("${VAR:?message here$ARG}", {"ARG": "x"})
    assert lex.process_word("${VAR?message here$ARG}", {"VAR": "", "ARG": "x"}) == ""
    with pytest.raises(ShellError, match="VAR: message herex"):
        lex.process_word("${VAR?message here$ARG}", {"ARG": "x"})
    with pytest.raises(ShellError, match='failed to process "\\$\\{X\\?\\}": X: is not allowed to be unset'):
        lex.process_word("${X?}", {})
    with pytest.raises(ShellError, match="X: is not allowed to be empty"):
        lex.process_word("${X:?}", {"X": ""})


WORDS_ENV = {"hi": "hi", "space": "abc  def", "leading": "  ab c", "trailing": "ab c   "}
WORDS_CASES = [
    ("hello", ["hello"]),
    ("hello${hi}bye", ["hellohibye"]),
    ("hello${space}bye", ["helloabc", "defbye"]),
    ('hello"${space}"bye', ["helloabc  defbye"]),
    ('hello "${space}"bye', ["hello", "abc  defbye"]),
    ("hello${leading}def", ["hello", "ab", "cdef"]),
    ('hello"${leading}" def', ["hello  ab c", "def"]),
    ('hello"${leading}"', ["hello  ab c"]),
    ("hello${leading}", ["hello", "ab", "c"]),
    ("hello${trailing}", ["helloab", "c"]),
    ("hello${trailing}d", ["helloab", "c", "d"]),
    ('hello"${trailing}"d', ["helloab c   d"]),
    ('hel"lo${trailing}"', ["helloab c   "]),
    ('hello" there  "', ["hello there  "]),
    ("hello there     ", ["hello", "there"]),
    ("hello\\ there", ["hello there"]),
    ('hello" there', ERROR),
    ('hello\\" there', ['hello"', "there"]),
    ('hello"\\\\there"', ["hello\\there"]),
    ('hello"\\there"', ["hello\\there"]),
    ("hello'\\\\there'", ["hello\\\\there"]),
    ("hello'\\there'", ["hello\\there"]),
    ("hello'$there'", ["hello$there"]),
    ('a "" b', ["a", "b"]),
    ("", []),
]


@pytest.mark.parametrize(("word", "expected"), WORDS_CASES, ids=[c[0] or "empty" for c in WORDS_CASES])
def test_process_words(word: str, expected: object) -> None:
    _expect(lambda: ShellLex().process_words(word, WORDS_ENV), expected)


def test_backtick_escape() -> None:
    lex = ShellLex("`")
    assert lex.process_word("c:\\dir\\$X", {"X": "x"}) == "c:\\dir\\x"
    assert lex.process_word('a`$X `"', {"X": "x"}) == 'a$X "'
    assert lex.process_word('"a`"b"', {}) == 'a"b'
    assert lex.process_words("a` b c", {}) == ["a b", "c"]


def test_raw_modes_used_for_heredoc_detection() -> None:
    lex = ShellLex(raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    assert lex.process_words("RUN <<'EOF' \"x\" $A ${B:-c} a\\ b", {}) == [
        "RUN",
        "<<'EOF'",
        '"x"',
        "$A",
        "${B:-c}",
        "a\\ b",
    ]
    assert lex.process_words("cat << EOF", {}) == ["cat", "<< EOF"]


def test_matches_and_words_used() -> None:
    lex = ShellLex()
    result, matched, unmatched = lex.process_word_with_matches(
        "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}
    )
    assert (result, matched, unmatched) == ("xxx bbb ccc", {"FOO", "BAR"}, {"BAZ"})
    assert words_used("plain") == set()
    assert words_used("$A-${B:-$C}/${D#x}${E/a/$F}'$G'") == {"A", "B", "C", "D", "E", "F"}
    assert words_used("\\$A $B") == {"B"}
    assert words_used("$A ${") == {"A"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="$'\"\\`<"), max_size=50))
def test_plain_words_are_identity(word: str) -> None:
    assert ShellLex().process_word(word, {"A": "1"}) == word
    assert ShellLex("`").process_word(word, {"A": "1"}) == word


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.dictionaries(st.text("ABC", min_size=1, max_size=2), st.text(max_size=5)))
def test_lexer_never_crashes(word: str, env: dict[str, str]) -> None:
    for lex in (ShellLex(), ShellLex("`"), ShellLex(raw_quotes=True, raw_escapes=True, skip_unset_env=True)):
        try:
            lex.process_word(word, env)
            lex.process_words(word, env)
        except ShellError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="'"), max_size=40))
def test_single_quotes_keep_everything(text: str) -> None:
    assert ShellLex().process_word(f"'{text}'", {"A": "x"}) == text
