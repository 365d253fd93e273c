"""Dockerfile parser parity with moby/buildkit's frontend/dockerfile parser and instructions.

Cases follow buildkit's parser testfiles, parser_heredoc_test.go, instructions/parse_test.go and the
Dockerfile reference; error texts are what the legacy builder (`DOCKER_BUILDKIT=0`) answers.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kapal.build.dockerfile import DockerfileParseError, parse_dockerfile, parse_instruction, parse_mount
from kapal.build.instructions import (
    Arg,
    ArgDef,
    Cmd,
    Copy,
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
    StopSignal,
    User,
    Volume,
    Workdir,
)
from kapal.build.shell import ShellLex
from kapal.errors import InvalidArgument


def commands(text: str) -> list:
    """The commands of the only stage, after `FROM scratch`."""
    dockerfile = parse_dockerfile("FROM scratch\n" + text)
    assert len(dockerfile.stages) == 1
    return dockerfile.stages[0].commands


def only(text: str):
    found = commands(text)
    assert len(found) == 1, found
    return found[0]


def error_of(text: str | bytes, filename: str = "Dockerfile") -> DockerfileParseError:
    with pytest.raises(DockerfileParseError) as info:
        parse_dockerfile(text, filename)
    return info.value


# ---------------------------------------------------------------------------------------------
# instruction by instruction: text → the command the builder gets

SECONDS = 1_000_000_000
COPY_ALL_FLAGS = (
    "COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.tmp --exclude=.git ./x /y"
)
HEALTHCHECK_ALL_FLAGS = (
    "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --start-interval=500ms --retries=3 "
    "CMD curl -f http://x/ || exit 1"
)
NO_DESTINATION = (
    "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
)

CASES = [
    # RUN: shell form keeps the text as written, exec form is the JSON array
    ("RUN echo hi", Run("RUN", 2, "RUN echo hi", args=["echo hi"])),
    ("run   echo   'a  b'  ", Run("RUN", 2, "run   echo   'a  b'", args=["echo   'a  b'"])),
    ('RUN ["echo", "hi"]', Run("RUN", 2, 'RUN ["echo", "hi"]', args=["echo", "hi"], shell_form=False)),
    (
        'RUN [ "echo" , "a b" ]',
        Run("RUN", 2, 'RUN [ "echo" , "a b" ]', args=["echo", "a b"], shell_form=False),
    ),
    ("RUN []", Run("RUN", 2, "RUN []", args=[], shell_form=False)),
    # invalid JSON falls back to the shell form (buildkit's jeztah-invalid-json-* testfiles)
    ("RUN ['echo', 'hi']", Run("RUN", 2, "RUN ['echo', 'hi']", args=["['echo', 'hi']"])),
    ('RUN ["echo", "hi"', Run("RUN", 2, 'RUN ["echo", "hi"', args=['["echo", "hi"'])),
    ('RUN ["echo", "hi]', Run("RUN", 2, 'RUN ["echo", "hi]', args=['["echo", "hi]'])),
    ('RUN {"a": 1}', Run("RUN", 2, 'RUN {"a": 1}', args=['{"a": 1}'])),
    ('RUN ["a"] extra', Run("RUN", 2, 'RUN ["a"] extra', args=['["a"] extra'])),
    ("RUN [NaN]", Run("RUN", 2, "RUN [NaN]", args=["[NaN]"])),
    # flags
    (
        "RUN --network=none --security=insecure make",
        Run(
            "RUN",
            2,
            "RUN --network=none --security=insecure make",
            args=["make"],
            network="none",
            security="insecure",
        ),
    ),
    (
        "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked apt-get update",
        Run(
            "RUN",
            2,
            "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked apt-get update",
            args=["apt-get update"],
            mounts=[Mount("cache", {"target": "/var/cache/apt", "sharing": "locked", "readonly": "false"})],
            mount_specs=["type=cache,target=/var/cache/apt,sharing=locked"],
        ),
    ),
    (
        "RUN --mount=target=/src --mount=type=secret,id=tok,required cat /run/secrets/tok",
        Run(
            "RUN",
            2,
            "RUN --mount=target=/src --mount=type=secret,id=tok,required cat /run/secrets/tok",
            args=["cat /run/secrets/tok"],
            mounts=[
                Mount("bind", {"target": "/src", "readonly": "true"}),
                Mount("secret", {"id": "tok", "required": "true", "readonly": "true"}),
            ],
            mount_specs=["target=/src", "type=secret,id=tok,required"],
        ),
    ),
    ("RUN -- --not-a-flag", Run("RUN", 2, "RUN -- --not-a-flag", args=["--not-a-flag"])),
    ('RUN --network="host" x', Run("RUN", 2, 'RUN --network="host" x', args=["x"], network="host")),
    # CMD / ENTRYPOINT / SHELL
    ("CMD echo hi", Cmd("CMD", 2, "CMD echo hi", args=["echo hi"])),
    (
        'CMD ["sh", "-c", "x"]',
        Cmd("CMD", 2, 'CMD ["sh", "-c", "x"]', args=["sh", "-c", "x"], shell_form=False),
    ),
    ("CMD", Cmd("CMD", 2, "CMD", args=[])),
    (
        'ENTRYPOINT ["/bin/app"]',
        Entrypoint("ENTRYPOINT", 2, 'ENTRYPOINT ["/bin/app"]', args=["/bin/app"], shell_form=False),
    ),
    ("entrypoint exec app", Entrypoint("ENTRYPOINT", 2, "entrypoint exec app", args=["exec app"])),
    ('SHELL ["/bin/bash", "-c"]', Shell("SHELL", 2, 'SHELL ["/bin/bash", "-c"]', args=["/bin/bash", "-c"])),
    # ENV / LABEL: words as written (quotes stay, the builder's expansion removes them)
    ("ENV a=1", Env("ENV", 2, "ENV a=1", pairs=[KeyValue("a", "1")])),
    ("ENV a b c", Env("ENV", 2, "ENV a b c", pairs=[KeyValue("a", "b c")])),
    ("ENV a   b  c", Env("ENV", 2, "ENV a   b  c", pairs=[KeyValue("a", "b  c")])),
    (
        "ENV a=1 b=\"two words\" c=a\\ b d='x y' e=",
        Env(
            "ENV",
            2,
            "ENV a=1 b=\"two words\" c=a\\ b d='x y' e=",
            pairs=[
                KeyValue("a", "1"),
                KeyValue("b", '"two words"'),
                KeyValue("c", "a\\ b"),
                KeyValue("d", "'x y'"),
                KeyValue("e", ""),
            ],
        ),
    ),
    ('ENV x="a\\"b"', Env("ENV", 2, 'ENV x="a\\"b"', pairs=[KeyValue("x", '"a\\"b"')])),
    ("ENV x=a=b", Env("ENV", 2, "ENV x=a=b", pairs=[KeyValue("x", "a=b")])),
    (
        'LABEL "com.example.vendor"="ACME" version=1.0',
        Label(
            "LABEL",
            2,
            'LABEL "com.example.vendor"="ACME" version=1.0',
            pairs=[KeyValue('"com.example.vendor"', '"ACME"'), KeyValue("version", "1.0")],
        ),
    ),
    (
        "LABEL description this text",
        Label("LABEL", 2, "LABEL description this text", pairs=[KeyValue("description", "this text")]),
    ),
    # ARG
    ("ARG a", Arg("ARG", 2, "ARG a", args=[ArgDef("a")])),
    ("ARG a=1 b c=", Arg("ARG", 2, "ARG a=1 b c=", args=[ArgDef("a", "1"), ArgDef("b"), ArgDef("c", "")])),
    ('ARG v="1 2"', Arg("ARG", 2, 'ARG v="1 2"', args=[ArgDef("v", '"1 2"')])),
    (
        "ARG --ignored x",
        Arg("ARG", 2, "ARG --ignored x", args=[ArgDef("x")]),
    ),  # Docker never checks ARG flags
    # EXPOSE (sorted, as Docker sorts them), VOLUME, USER, WORKDIR, STOPSIGNAL, MAINTAINER
    (
        "EXPOSE 8080 80/udp 443",
        Expose("EXPOSE", 2, "EXPOSE 8080 80/udp 443", ports=["443", "80/udp", "8080"]),
    ),
    ("EXPOSE $PORT", Expose("EXPOSE", 2, "EXPOSE $PORT", ports=["$PORT"])),
    ("VOLUME /a /b", Volume("VOLUME", 2, "VOLUME /a /b", paths=["/a", "/b"])),
    ('VOLUME ["/a", " /b "]', Volume("VOLUME", 2, 'VOLUME ["/a", " /b "]', paths=["/a", "/b"])),
    ("USER app:app", User("USER", 2, "USER app:app", user="app:app")),
    ("USER a b", User("USER", 2, "USER a b", user="a b")),
    ("WORKDIR /srv/my app", Workdir("WORKDIR", 2, "WORKDIR /srv/my app", path="/srv/my app")),
    ("STOPSIGNAL SIGKILL", StopSignal("STOPSIGNAL", 2, "STOPSIGNAL SIGKILL", signal="SIGKILL")),
    ("MAINTAINER Jane <j@x>", Maintainer("MAINTAINER", 2, "MAINTAINER Jane <j@x>", name="Jane <j@x>")),
    # COPY / ADD
    ("COPY a b /dst/", Copy("COPY", 2, "COPY a b /dst/", sources=["a", "b"], dest="/dst/")),
    (
        'COPY ["a b", "/dst dir/"]',
        Copy("COPY", 2, 'COPY ["a b", "/dst dir/"]', sources=["a b"], dest="/dst dir/"),
    ),
    (
        COPY_ALL_FLAGS,
        Copy(
            "COPY",
            2,
            COPY_ALL_FLAGS,
            sources=["./x"],
            dest="/y",
            from_="build",
            chown="app:app",
            chmod="0755",
            link=True,
            parents=True,
            exclude=["*.tmp", ".git"],
        ),
    ),
    ("COPY --link=false a b", Copy("COPY", 2, "COPY --link=false a b", sources=["a"], dest="b")),
    (
        "ADD --checksum=sha256:abc --keep-git-dir https://x/y.tar /z",
        Copy(
            "ADD",
            2,
            "ADD --checksum=sha256:abc --keep-git-dir https://x/y.tar /z",
            sources=["https://x/y.tar"],
            dest="/z",
            checksum="sha256:abc",
            keep_git_dir=True,
        ),
    ),
    (
        "ADD --unpack=false a.tar /",
        Copy("ADD", 2, "ADD --unpack=false a.tar /", sources=["a.tar"], dest="/", unpack=False),
    ),
    ("ADD --chown=1:2 a /", Copy("ADD", 2, "ADD --chown=1:2 a /", sources=["a"], dest="/", chown="1:2")),
    # HEALTHCHECK
    ("HEALTHCHECK NONE", Healthcheck("HEALTHCHECK", 2, "HEALTHCHECK NONE", test=["NONE"])),
    ("HEALTHCHECK none", Healthcheck("HEALTHCHECK", 2, "HEALTHCHECK none", test=["NONE"])),
    (
        HEALTHCHECK_ALL_FLAGS,
        Healthcheck(
            "HEALTHCHECK",
            2,
            HEALTHCHECK_ALL_FLAGS,
            test=["CMD-SHELL", "curl -f http://x/ || exit 1"],
            interval=30 * SECONDS,
            timeout=90 * SECONDS,
            start_period=5 * SECONDS,
            start_interval=SECONDS // 2,
            retries=3,
        ),
    ),
    (
        'HEALTHCHECK CMD ["/bin/check", "-q"]',
        Healthcheck(
            "HEALTHCHECK", 2, 'HEALTHCHECK CMD ["/bin/check", "-q"]', test=["CMD", "/bin/check", "-q"]
        ),
    ),
    (
        "HEALTHCHECK --interval=0s cmd true",
        Healthcheck(
            "HEALTHCHECK", 2, "HEALTHCHECK --interval=0s cmd true", test=["CMD-SHELL", "true"], interval=0
        ),
    ),
    # ONBUILD keeps the trigger's text
    ("ONBUILD RUN echo hi", Onbuild("ONBUILD", 2, "ONBUILD RUN echo hi", trigger="RUN echo hi")),
    (
        "onbuild   copy --chown=1 a b",
        Onbuild("ONBUILD", 2, "onbuild   copy --chown=1 a b", trigger="copy --chown=1 a b"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[case[0][:60] for case in CASES])
def test_instruction(text: str, expected) -> None:
    assert only(text) == expected


def test_from_forms() -> None:
    dockerfile = parse_dockerfile(
        "ARG TAG=latest\nARG A B=2\nFROM --platform=$BUILDPLATFORM golang:${TAG} AS Build-Env\n"
        "FROM scratch as final\nFROM build-env\nFROM debian@sha256:abc\n"
    )
    assert dockerfile.meta_args == [
        Arg("ARG", 1, "ARG TAG=latest", args=[ArgDef("TAG", "latest")]),
        Arg("ARG", 2, "ARG A B=2", args=[ArgDef("A"), ArgDef("B", "2")]),
    ]
    bases = [stage.base for stage in dockerfile.stages]
    assert bases == [
        From(
            "FROM",
            3,
            "FROM --platform=$BUILDPLATFORM golang:${TAG} AS Build-Env",
            image="golang:${TAG}",
            stage_name="build-env",
            platform="$BUILDPLATFORM",
        ),
        From("FROM", 4, "FROM scratch as final", image="scratch", stage_name="final"),
        From("FROM", 5, "FROM build-env", image="build-env"),
        From("FROM", 6, "FROM debian@sha256:abc", image="debian@sha256:abc"),
    ]
    assert [stage.index for stage in dockerfile.stages] == [0, 1, 2, 3]
    assert dockerfile.stage("BUILD-ENV") is dockerfile.stages[0]
    assert dockerfile.stage("2") is dockerfile.stages[2]
    assert dockerfile.stage("nope") is None


def test_stages_collect_their_commands() -> None:
    dockerfile = parse_dockerfile("FROM a AS one\nRUN x\nENV A=1\nFROM b\nCOPY --from=one /x /x\n")
    assert [type(c) for c in dockerfile.stages[0].commands] == [Run, Env]
    assert [c.line for c in dockerfile.stages[1].commands] == [5]


# ---------------------------------------------------------------------------------------------
# line handling: comments, continuations, escapes, directives


def test_continuations_comments_and_empty_lines() -> None:
    text = (
        "FROM scratch\n"
        "# a comment\n"
        "   # an indented comment\n"
        "RUN apt-get update && \\\n"
        "    # a comment inside the continuation is dropped\n"
        "    apt-get install -y \\\n"
        "\n"
        "      curl\n"
        "\n"
        "RUN echo \\\\\n"  # an escaped escape char: not a continuation
        "ENV A=1 \\\n"
        "    B=2\n"
    )
    dockerfile = parse_dockerfile(text)
    first, second, third = dockerfile.stages[0].commands
    assert first.line == 4
    assert first.args == ["apt-get update &&     apt-get install -y       curl"]
    assert first.original == "RUN apt-get update &&     apt-get install -y       curl"
    assert second.args == ["echo \\\\"]
    assert third == Env("ENV", 11, "ENV A=1     B=2", pairs=[KeyValue("A", "1"), KeyValue("B", "2")])
    assert dockerfile.warnings == [
        "Empty continuation line found in: RUN apt-get update &&     apt-get install -y       curl"
    ]


def test_continuation_with_trailing_whitespace_and_at_eof() -> None:
    assert only("RUN a \\  \t\n  b").args == ["a   b"]
    assert only("RUN a \\").args == ["a"]  # buildkit's continue-at-eof testfile


def test_lone_escape_line_continues() -> None:
    assert only("RUN a \\\n\\\n b\n").args == ["a  b"]


def test_crlf_and_bom() -> None:
    dockerfile = parse_dockerfile(b"\xef\xbb\xbf# escape=`\r\nFROM scratch\r\nRUN a `\r\n b\r\n")
    assert dockerfile.escape == "`"
    assert dockerfile.stages[0].commands[0].args == ["a  b"]


def test_escape_directive_backtick() -> None:
    dockerfile = parse_dockerfile(
        "# escape=`\n\nFROM scratch\nRUN dir c:\\ `\n  && echo done\nCOPY a\\b c:\\dst\\\n"
    )
    run, copy = dockerfile.stages[0].commands
    assert run.args == ["dir c:\\   && echo done"]
    assert copy.sources == ["a\\b"]
    assert copy.dest == "c:\\dst\\"
    assert dockerfile.directives == {"escape": "`"}


def test_directives() -> None:
    dockerfile = parse_dockerfile(
        "# syntax = docker/dockerfile:1.7 // opts\n#CHECK=skip=all\n# EScape=\\\n# comment\nFROM scratch\n"
    )
    assert dockerfile.directives == {
        "syntax": "docker/dockerfile:1.7 // opts",
        "check": "skip=all",
        "escape": "\\",
    }


def test_directives_only_at_the_top() -> None:
    # after a comment, an empty line or an instruction, `# escape=` is just a comment
    for text in (
        "# hello\n# escape=`\nFROM scratch\nRUN a `\n",
        "\n# escape=`\nFROM scratch\nRUN a `\n",
        "FROM scratch\n# escape=`\nRUN a `\n",
        "# unknown=1\n# escape=`\nFROM scratch\nRUN a `\n",
    ):
        dockerfile = parse_dockerfile(text)
        assert dockerfile.escape == "\\"
        assert dockerfile.stages[0].commands[0].args == ["a `"]


def test_json_exec_form_with_escapes() -> None:
    run = only('RUN ["echo", "\\u2603 \\" \\\\ \\n"]')
    assert run.args == ["echo", '☃ " \\ \n']


def test_json_lone_surrogate_becomes_replacement_char() -> None:
    assert only('CMD ["a\\ud800b", "\\ud83d\\ude00"]').args == ["a\ufffdb", "\U0001f600"]


def test_deeply_nested_substitution_is_an_error_not_a_crash() -> None:
    word = "${a:-" * 2000 + "}" * 2000
    dockerfile = parse_dockerfile(f"FROM scratch\nRUN echo {word} <<EOF\n")
    assert dockerfile.stages[0].commands[0].heredocs == []  # a line too deep to lex opens no heredoc
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        ShellLex().process_word(word, {})


def test_flag_words_lose_quotes_and_escapes() -> None:
    copy = only('COPY --chown="app user" --chmod=07\\55 a b')
    assert copy.chown == "app user"
    assert copy.chmod == "0755"


def test_keywords_are_case_insensitive() -> None:
    dockerfile = parse_dockerfile("from scratch AS x\nRuN echo\nCoPy a b\nhealthcheck none\n")
    assert [c.keyword for c in dockerfile.stages[0].commands] == ["RUN", "COPY", "HEALTHCHECK"]
    assert dockerfile.stages[0].name == "x"


# ---------------------------------------------------------------------------------------------
# heredocs (buildkit parser_heredoc_test.go)

HEREDOC_TEXT = """FROM alpine
USER x
RUN <<EMPTY
EMPTY
RUN 3<<EMPTY2
EMPTY2
RUN "<<NOHEREDOC"
RUN <<INDENT
\tfoo
\tbar
INDENT
RUN <<-UNINDENT
\tbaz
\tquux
\tUNINDENT
RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND
RUN <<COMMENT
# internal comment
echo hello world # trailing comment
COMMENT
RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT
COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2
COPY <<X <<Y /dest
Y
X
X
Y
RUN <<COMPLEX python3
print('hello world')
COMPLEX
RUN <<eo'f'
echo foo
eof
RUN <<eo\\'f
echo foo
eo'f
RUN <<'e'o\\'f
echo foo
eo'f
RUN <<'one two'
echo bar
one two
RUN <<$EOF
$EOF
RUN <<  EOF  > foo
EOF
RUN ["<<EOF"]
RUN cat <<A && cat <<"B"
a $x
A
b $x
B
"""

HEREDOC_EXPECTED = [
    [],  # USER x
    [Heredoc("EMPTY", "")],
    [Heredoc("EMPTY2", "")],
    [],
    [Heredoc("INDENT", "\tfoo\n\tbar\n")],
    [Heredoc("UNINDENT", "baz\nquux\n")],
    [Heredoc("NOEXPAND", "don't expand $NAME\n", expand=False)],
    [Heredoc("COMMENT", "# internal comment\necho hello world # trailing comment\n")],
    [Heredoc("MOUNT", "echo hello\n")],
    [Heredoc("FILE1", "content 1\n"), Heredoc("FILE2", "content 2\n")],
    [Heredoc("X", "Y\n"), Heredoc("Y", "X\n")],
    [Heredoc("COMPLEX", "print('hello world')\n")],
    [Heredoc("eof", "echo foo\n", expand=False)],
    [Heredoc("eo'f", "echo foo\n")],
    [Heredoc("eo'f", "echo foo\n", expand=False)],
    [Heredoc("one two", "echo bar\n", expand=False)],
    [Heredoc("$EOF", "")],
    [Heredoc("EOF", "")],
    [],
    [Heredoc("A", "a $x\n"), Heredoc("B", "b $x\n", expand=False)],
]


def test_heredocs() -> None:
    dockerfile = parse_dockerfile(HEREDOC_TEXT)
    found = [getattr(c, "heredocs", []) for c in dockerfile.stages[0].commands]
    assert found == HEREDOC_EXPECTED
    commands_ = dockerfile.stages[0].commands
    assert commands_[8].mounts == [Mount("cache", {"target": "/foo", "readonly": "false"})]
    copy = commands_[9]
    assert copy.sources == [] and copy.dest == "/dest"
    assert commands_[11].args == ["<<COMPLEX python3"]
    assert commands_[18].args == ["<<EOF"] and not commands_[18].shell_form


def test_heredoc_only_for_run_copy_add() -> None:
    # USER takes no heredoc, so the would-be body is read as the next instruction
    error = error_of("FROM alpine\nUSER <<INVALID\nINVALID\n")
    assert str(error) == "dockerfile parse error on line 3: unknown instruction: INVALID"


def test_heredoc_lines_are_counted() -> None:
    dockerfile = parse_dockerfile("FROM scratch\nRUN <<EOF\na\nb\nEOF\nRUN x\n")
    assert [c.line for c in dockerfile.stages[0].commands] == [2, 6]


def test_copy_heredoc_mixed_with_files_and_chomp() -> None:
    copy = only("COPY --chmod=644 a <<-EOT b /dst/\n\t\tindented\n\tEOT\n")
    assert copy.sources == ["a", "b"]
    assert copy.heredocs == [Heredoc("EOT", "indented\n")]
    assert copy.chmod == "644"


def test_onbuild_heredoc_is_kept_in_the_trigger() -> None:
    onbuild = only("ONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert onbuild.trigger == "RUN <<EOF\necho hi\nEOF"
    run = parse_instruction(onbuild.trigger)
    assert run == Run("RUN", 1, "RUN <<EOF", args=["<<EOF"], heredocs=[Heredoc("EOF", "echo hi\n")])


def test_parse_instruction() -> None:
    assert parse_instruction("ENV a=1") == Env("ENV", 1, "ENV a=1", pairs=[KeyValue("a", "1")])
    assert parse_instruction("RUN a `\n b", escape="`").args == ["a  b"]
    with pytest.raises(InvalidArgument, match="single expression"):
        parse_instruction("RUN a\nRUN b")
    with pytest.raises(
        DockerfileParseError, match="^dockerfile parse error on line 1: unknown instruction: BOGUS$"
    ):
        parse_instruction("BOGUS bar")


# ---------------------------------------------------------------------------------------------
# errors: Docker's words, with the line

ERRORS = [
    # instruction-level (legacy builder: "dockerfile parse error on line N: …")
    ("FROM scratch\nBOGUS bar\n", 2, "unknown instruction: BOGUS"),
    ("FROM scratch\nFOO bar\n", 2, "unknown instruction: FOO (did you mean FROM?)"),
    ("FROM scratch\nfoo bar\n", 2, "unknown instruction: foo (did you mean from?)"),
    ("FROM scratch\nRUNN x\n", 2, "unknown instruction: RUNN (did you mean RUN?)"),
    ("FROM scratch\nCOPY --bogus a b\n", 2, "unknown flag: --bogus"),
    ("FROM scratch\nCOPY --foo a b\n", 2, "unknown flag: --foo (did you mean from?)"),
    ("FROM scratch\nCOPY --form=x a b\n", 2, "unknown flag: --form (did you mean from?)"),
    ("FROM scratch\nADD --from=x a b\n", 2, "unknown flag: --from"),
    ("FROM scratch\nMAINTAINER --boo joe\n", 2, "unknown flag: --boo"),
    ("FROM scratch\nCOPY --from=a --from=b a b\n", 2, "duplicate flag specified: --from"),
    ("FROM scratch\nCOPY --from a b\n", 2, "missing a value on flag: --from"),
    ("FROM scratch\nCOPY --link= a b\n", 2, "missing a value on flag: --link"),
    ("FROM scratch\nCOPY --link=yes a b\n", 2, "expecting boolean value for flag --link, not: yes"),
    (
        "FROM scratch\nCOPY a\n",
        2,
        NO_DESTINATION,
    ),
    (
        "FROM scratch\nADD\n",
        2,
        "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
    ),
    (
        "FROM scratch\nCOPY\t\n\t\tquux \\\n      bar\n",
        2,
        NO_DESTINATION,
    ),
    ("FROM scratch\nCOPY a <<EOF\nx\nEOF\n", 2, "COPY cannot accept a heredoc as a destination"),
    ("FROM\n", 1, "FROM requires either one or three arguments"),
    ("FROM a b\n", 1, "FROM requires either one or three arguments"),
    ("FROM a AS b c\n", 1, "FROM requires either one or three arguments"),
    (
        "FROM a AS 1st\n",
        1,
        'invalid name for build stage: "1st", name can\'t start with a number or contain symbols',
    ),
    (
        "FROM a AS b$c\n",
        1,
        'invalid name for build stage: "b$c", name can\'t start with a number or contain symbols',
    ),
    ("FROM --platfrom=x a\n", 1, "unknown flag: --platfrom (did you mean platform?)"),
    ("FROM a AS x\nFROM b AS X\n", 2, "x stage name already used"),
    ("RUN x\nFROM a\n", 1, "no build stage in current context"),
    ("ARG a\nENV b=c\nFROM a\n", 2, "no build stage in current context"),
    ("FROM scratch\nENV\n", 2, "ENV requires at least one argument"),
    ("FROM scratch\nLABEL\n", 2, "LABEL requires at least one argument"),
    ("FROM scratch\nEXPOSE\n", 2, "EXPOSE requires at least one argument"),
    ("FROM scratch\nVOLUME\n", 2, "VOLUME requires at least one argument"),
    ("FROM scratch\nONBUILD\n", 2, "ONBUILD requires at least one argument"),
    ("FROM scratch\nHEALTHCHECK\n", 2, "HEALTHCHECK requires at least one argument"),
    ("FROM scratch\nARG\n", 2, "ARG requires at least one argument"),
    ("FROM scratch\nSHELL\n", 2, "SHELL requires at least one argument"),
    ("FROM scratch\nSHELL []\n", 2, "SHELL requires at least one argument"),
    ("FROM scratch\nSHELL /bin/sh -c\n", 2, "SHELL requires the arguments to be in JSON form"),
    ("FROM scratch\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
    ("FROM scratch\nUSER\n", 2, "USER requires exactly one argument"),
    ("FROM scratch\nSTOPSIGNAL\n", 2, "STOPSIGNAL requires exactly one argument"),
    ("FROM scratch\nMAINTAINER\n", 2, "MAINTAINER requires exactly one argument"),
    ('FROM scratch\nVOLUME ["/a", " "]\n', 2, "VOLUME specified can not be an empty string"),
    ("FROM scratch\nENV =x\n", 2, "ENV names can not be blank"),
    ("FROM scratch\nLABEL =x\n", 2, "LABEL names can not be blank"),
    ("FROM scratch\nARG =x\n", 2, "ARG names can not be blank"),
    ("FROM scratch\nONBUILD ONBUILD RUN x\n", 2, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM scratch\nONBUILD FROM scratch\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM scratch\nonbuild maintainer me\n", 2, "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("FROM scratch\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK NONE takes no arguments"),
    ("FROM scratch\nHEALTHCHECK CMD\n", 2, "Missing command after HEALTHCHECK CMD"),
    ("FROM scratch\nHEALTHCHECK CMD []\n", 2, "Missing command after HEALTHCHECK CMD"),
    ("FROM scratch\nHEALTHCHECK RUN x\n", 2, 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
    ("FROM scratch\nHEALTHCHECK --interval=5 CMD x\n", 2, 'time: missing unit in duration "5"'),
    ("FROM scratch\nHEALTHCHECK --timeout=abc CMD x\n", 2, 'time: invalid duration "abc"'),
    ("FROM scratch\nHEALTHCHECK --timeout=1y CMD x\n", 2, 'time: unknown unit "y" in duration "1y"'),
    ("FROM scratch\nHEALTHCHECK --interval=50ns CMD x\n", 2, 'Interval "interval" cannot be less than 1ms'),
    (
        "FROM scratch\nHEALTHCHECK --start-period=-1s CMD x\n",
        2,
        'Interval "start-period" cannot be less than 1ms',
    ),
    ("FROM scratch\nHEALTHCHECK --retries=-1 CMD x\n", 2, "--retries cannot be negative (-1)"),
    ("FROM scratch\nHEALTHCHECK --retries=x CMD x\n", 2, 'strconv.ParseInt: parsing "x": invalid syntax'),
    (
        "FROM scratch\nHEALTHCHECK --retries=9999999999 CMD x\n",
        2,
        'strconv.ParseInt: parsing "9999999999": value out of range',
    ),
    ("FROM scratch\nHEALTHCHECK --foo=1 CMD x\n", 2, "unknown flag: --foo"),
    ("FROM scratch\nRUN --network=bridge x\n", 2, 'invalid network mode "bridge"'),
    ("FROM scratch\nRUN --security=root x\n", 2, 'security "root" is not valid'),
    ("FROM scratch\nRUN --mount=type=nfs x\n", 2, 'unsupported mount type "nfs"'),
    ("FROM scratch\nRUN --mount=type=bindd x\n", 2, 'unsupported mount type "bindd" (did you mean bind?)'),
    ("FROM scratch\nRUN --mount=type=cache,sharing=none x\n", 2, 'unsupported sharing value "none"'),
    (
        "FROM scratch\nRUN --mount=type=bind,trget=/x x\n",
        2,
        "unexpected key 'trget' in 'trget=/x' (did you mean target?)",
    ),
    ("FROM scratch\nRUN --mount=type=bind,foo x\n", 2, "invalid field 'foo' must be a key=value pair"),
    ("FROM scratch\nRUN --mount=type=bind,size=1m x\n", 2, "unexpected key 'size' for mount type 'bind'"),
    ("FROM scratch\nRUN --mount=type=bind,mode=0700 x\n", 2, 'mode not allowed for "bind" type mounts'),
    ("FROM scratch\nRUN --mount=type=cache,mode=9 x\n", 2, "invalid value 9 for mode"),
    ("FROM scratch\nRUN --mount=type=secret x\n", 2, "invalid secret mount. one of source, target required"),
    ("FROM scratch\nRUN --mount=type=secret,id=a,from=b x\n", 2, "secret mount should not have a from"),
    ("FROM scratch\nRUN --mount=type=bind,ro=maybe x\n", 2, "invalid value for ro: maybe"),
    (
        "FROM scratch\nRUN --mount=from=$STAGE,target=/x x\n",
        2,
        "'from' doesn't support variable expansion, define alias stage instead",
    ),
    (
        "FROM scratch\nRUN --mount=type=tmpfs,sharing=shared,target=/t x\n",
        2,
        "invalid cache sharing set for tmpfs mount",
    ),
    (
        "FROM scratch\nRUN --mount=type=bind,required x\n",
        2,
        "unexpected key 'required' for mount type 'bind'",
    ),
    ("FROM scratch\nRUN ['a'] --x\nRUN --x=1 y\n", 3, "unknown flag: --x"),
]


@pytest.mark.parametrize(("text", "line", "reason"), ERRORS, ids=[e[2][:50] for e in ERRORS])
def test_instruction_errors(text: str, line: int, reason: str) -> None:
    error = error_of(text)
    assert str(error) == f"dockerfile parse error on line {line}: {reason}"
    assert (error.line, error.reason, error.filename) == (line, reason, "Dockerfile")
    assert isinstance(error, InvalidArgument)


PARSER_ERRORS = [
    # line-level (legacy builder: "failed to parse Dockerfile: …")
    (
        'FROM scratch\nCMD [ "echo", [ "nested json" ] ]\n',
        2,
        "when using JSON array syntax, arrays must be comprised of strings only",
    ),
    (
        "FROM scratch\nRUN [1, 2]\n",
        2,
        "when using JSON array syntax, arrays must be comprised of strings only",
    ),
    ("FROM scratch\nENV x\n", 2, "ENV must have two arguments"),
    ("FROM scratch\nLABEL x\n", 2, "LABEL must have two arguments"),
    ("FROM scratch\nENV a=b c\n", 2, 'Syntax error - can\'t find = in "c". Must be of the form: name=value'),
    ("FROM scratch\nRUN <<EOF\nabc\n", 2, "unterminated heredoc"),
    ("FROM scratch\nCOPY <<A <<B /x\na\nA\n", 2, "unterminated heredoc"),
    ("# escape=x\nFROM scratch\n", 1, "invalid escape token 'x' does not match ` or \\"),
    ("# escape=`\n# escape=`\nFROM scratch\n", 2, "only one escape parser directive can be used"),
    ("# syntax=a\n# SYNTAX=b\nFROM scratch\n", 2, "only one syntax parser directive can be used"),
    ("# only a comment\n\n   \n", 3, "file with no instructions"),
    ("\n", 1, "file with no instructions"),
]


@pytest.mark.parametrize(("text", "line", "reason"), PARSER_ERRORS, ids=[e[2][:50] for e in PARSER_ERRORS])
def test_parser_errors(text: str, line: int, reason: str) -> None:
    error = error_of(text)
    assert str(error) == f"failed to parse Dockerfile: dockerfile parse error on line {line}: {reason}"
    assert (error.line, error.reason) == (line, reason)


def test_empty_and_fromless_dockerfiles() -> None:
    assert str(error_of(b"")) == "the Dockerfile (Dockerfile) cannot be empty"
    assert str(error_of("", "dev.Dockerfile")) == "the Dockerfile (dev.Dockerfile) cannot be empty"
    assert str(error_of("ARG a\n")) == "No image was generated. Is your Dockerfile empty?"


def test_other_file_names_are_named() -> None:
    error = error_of("FROM a\nBOGUS\n", "build/dev.Dockerfile")
    assert (
        str(error) == "failed to parse build/dev.Dockerfile: "
        "dockerfile parse error on line 2: unknown instruction: BOGUS"
    )
    assert error.filename == "build/dev.Dockerfile"


def test_overlong_line() -> None:
    error = error_of("FROM scratch\nLABEL a=" + "x" * 70000 + "\n")
    assert error.reason == "dockerfile line greater than max allowed size of 65535"


def test_deferred_mount_checks() -> None:
    run = only("RUN --mount=type=$T,target=/x x")
    assert run.mounts == [Mount("$T", {"target": "/x"})]
    assert run.mount_specs == ["type=$T,target=/x"]
    env = {"T": "cache"}
    expanded = parse_mount(run.mount_specs[0], lambda word: word.replace("$T", env["T"]))
    assert expanded == Mount("cache", {"target": "/x", "readonly": "false"})
    with pytest.raises(InvalidArgument, match='unsupported mount type "nfs"'):
        parse_mount(run.mount_specs[0], lambda word: word.replace("$T", "nfs"))


def test_mount_options_normalised() -> None:
    assert parse_mount("type=bind,src=a,dst=/b,rw") == Mount(
        "bind", {"source": "a", "target": "/b", "readonly": "false"}
    )
    assert parse_mount("type=tmpfs,destination=/t,size=64m") == Mount(
        "tmpfs", {"target": "/t", "size": "64m", "readonly": "false"}
    )
    assert parse_mount(
        'type=cache,id=x,target=/c,uid=1000,gid=1000,mode=0755,from=base,"source=a,b"'
    ) == Mount(
        "cache",
        {
            "id": "x",
            "target": "/c",
            "uid": "1000",
            "gid": "1000",
            "mode": "0755",
            "from": "base",
            "source": "a,b",
            "readonly": "false",
        },
    )
    assert parse_mount("type=ssh,required=false") == Mount("ssh", {"required": "false", "readonly": "true"})


# ---------------------------------------------------------------------------------------------
# properties

TEXT = st.text(
    alphabet=st.sampled_from(list("FROMRUNCOPYENVARGONBUILDHEALTHCHECK \t\n\\`#=<<-'\"[]{},$:/aE0!"))
    | st.characters(),
    max_size=200,
)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_parse_never_crashes(text: str) -> None:
    try:
        parse_dockerfile(text)
    except InvalidArgument:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_parse_never_crashes_after_from(text: str) -> None:
    try:
        parse_dockerfile("FROM scratch\n" + text)
    except InvalidArgument:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(max_size=20), min_size=1, max_size=6),
    st.sampled_from(["RUN", "CMD", "ENTRYPOINT", "SHELL"]),
)
def test_exec_form_round_trips(args: list[str], keyword: str) -> None:
    text = f"{keyword} {json.dumps(args)}"
    command = only(text)
    assert command.args == args
    if keyword != "SHELL":
        assert command.shell_form is False


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=15), min_size=2, max_size=5
    )
)
def test_copy_json_form_round_trips(paths: list[str]) -> None:
    assume(not any("<<" in path for path in paths))  # `<<name` is a heredoc source even in JSON form
    copy = only(f"COPY {json.dumps(paths)}")
    assert copy.sources == paths[:-1]
    assert copy.dest == paths[-1]


def test_hundred_line_dockerfile_parses_fast() -> None:
    lines = ["FROM debian:12 AS base", "ARG V=1"]
    for i in range(98):
        lines.append(
            [
                f"RUN --mount=type=cache,target=/c{i} apt-get install -y pkg{i} && \\\n    echo done",
                f'ENV K{i}="v {i}" L{i}=x',
                f"COPY --chown=1:1 src{i} /dst/{i}/",
                f'CMD ["run", "{i}"]',
            ][i % 4]
        )
    text = "\n".join(lines) + "\n"
    parse_dockerfile(text)
    start = time.perf_counter()
    for _ in range(20):
        dockerfile = parse_dockerfile(text)
    per_parse = (time.perf_counter() - start) / 20
    assert len(dockerfile.stages[0].commands) == 99
    # Not a timing assertion (those live in bench/): reported so a regression is visible with -s.
    print(f"100-line Dockerfile: {per_parse * 1000:.2f} ms")
