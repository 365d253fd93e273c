"""The CLI's fast argument parser gives argparse's results, or hands the command line to argparse.

Every command's real declarations are collected (each command builds its parser and
calls ``parse_args``, which is intercepted here), then command lines are generated
from those flags: wherever the fast path answers, argparse, given the same line, must
give the same values and no error.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kapal.cli.common import Parser, UsageError, _Fallback
from kapal.cli.main import COMMANDS, GROUPS


class _Captured(Exception):
    def __init__(self, parser: Parser) -> None:
        self.parser = parser


def _collect() -> dict[str, Parser]:
    targets = {name: target for name, target in COMMANDS.items()}
    for group, commands in GROUPS.items():
        targets.update({f"{group} {name}": target for name, target in commands.items()})
    parsers: dict[str, Parser] = {}
    original = Parser.parse_args

    def capture(self: Parser, args: list[str]) -> Any:
        raise _Captured(self)

    Parser.parse_args = capture  # type: ignore[method-assign]
    try:
        for name, (module, function) in sorted(targets.items()):
            try:
                getattr(import_module(module), function)(None, f"kapal {name}", [])
            except _Captured as captured:
                parsers[name] = captured.parser
    finally:
        Parser.parse_args = original  # type: ignore[method-assign]
    return parsers


PARSERS = _collect()
VALUES = ["x", "busybox", "a=b", "-", "-1", "--", "5", "", "sh", "-c", "x y", "=v", "ctrl-p"]


def _tokens(parser: Parser) -> list[str]:
    flags = sorted(parser._options)
    tokens = list(flags) + VALUES
    tokens += [f"{flag}=v" for flag in flags if flag.startswith("--")][:20]
    shorts = [flag for flag in flags if len(flag) == 2]
    tokens += [a + b[1:] for a in shorts[:6] for b in shorts[:6]]
    tokens += [flag + "7" for flag in shorts]
    tokens += ["--" + flag[2:5] for flag in flags if flag.startswith("--")][:5]  # abbreviations
    return tokens


def _argparse(parser: Parser, args: list[str]) -> dict[str, Any] | None:
    try:
        return vars(parser.argparse_parser().parse_args(args))
    except (UsageError, SystemExit):
        return None


def test_every_command_declares_a_parser() -> None:
    assert {"run", "create", "exec", "ps", "rm", "stop", "build", "pull", "network create"} <= set(PARSERS)
    assert PARSERS["run"]._simple and PARSERS["ps"]._simple


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("run", ["--rm", "--network", "none", "busybox", "true"]),
        ("run", ["-it", "--name=web", "-p8080:80", "-e", "A=1", "-eB=2", "busybox", "sh", "-c", "echo --rm"]),
        ("run", ["-d", "busybox"]),
        ("run", ["-itd", "-v", "/a:/b:ro", "--cpu-shares", "512", "busybox", "ls", "-l"]),
        ("create", ["--label", "a=b", "--restart=always", "busybox"]),
        ("exec", ["-it", "-u", "0", "web", "sh"]),
        ("stop", ["-t", "3", "a", "b"]),
        ("ps", ["-a", "-q", "--filter", "status=exited", "-n", "2"]),
        ("rm", ["-f", "a", "b", "c"]),
        ("tag", ["a", "b"]),
        ("logs", ["-f", "--tail", "10", "web"]),
    ],
)
def test_fast_path_matches_argparse(command: str, args: list[str]) -> None:
    parser = PARSERS[command]
    assert vars(parser._parse(args)) == _argparse(parser, args)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("run", ["--help"]),
        ("run", ["--nam", "x", "busybox"]),  # argparse's abbreviations
        ("run", ["--", "busybox"]),
        ("run", ["-e"]),
        ("run", []),
        ("stop", ["a", "-t", "3", "b"]),  # positionals split by an option
        ("stop", ["-t", "x", "a"]),  # not an int
        ("run", ["--rm=true", "busybox"]),
        ("ps", ["-n", "-1"]),
        ("create", ["busybox", "--cap"]),  # argparse refuses an ambiguous prefix even in the command
        ("network inspect", ["x", "--verbose=v"]),
    ],
)
def test_unusual_lines_go_to_argparse(command: str, args: list[str]) -> None:
    with pytest.raises(_Fallback):
        PARSERS[command]._parse(args)


def test_errors_are_argparse_errors() -> None:
    with pytest.raises(UsageError, match="the following arguments are required: image"):
        PARSERS["run"].parse_args(["--rm"])
    with pytest.raises(UsageError, match="argument -t/--time/--timeout: invalid int value: 'x'"):
        PARSERS["stop"].parse_args(["-t", "x", "a"])


def test_defaults_are_fresh_lists() -> None:
    first = PARSERS["run"]._parse(["-e", "A=1", "busybox"])
    second = PARSERS["run"]._parse(["busybox"])
    assert first.env == ["A=1"] and second.env == []


_ARGPARSE: dict[str, Any] = {}


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_fast_path_agrees_with_argparse(name: str, data: st.DataObject) -> None:
    parser = PARSERS[name]
    args = data.draw(st.lists(st.sampled_from(_tokens(parser)), max_size=8))
    try:
        fast = vars(parser._parse(args))
    except _Fallback:
        return
    if name not in _ARGPARSE:
        _ARGPARSE[name] = parser.argparse_parser()
    try:
        slow = vars(_ARGPARSE[name].parse_args(args))
    except (UsageError, SystemExit):
        slow = None
    assert fast == slow, (name, args)


def test_run_imports_no_argparse_re_socket_or_json() -> None:
    """What makes ``kapal run`` start fast: the whole command up to connecting to kapald."""
    import subprocess
    import sys

    code = (
        "import sys; from kapal.cli.main import main; "
        "status = main(['-H', 'unix:///nonexistent/kapal.sock', 'run', '--rm', '-eA=1', 'busybox', 'true']); "
        "print(status, sorted(m for m in ('argparse', 're', 'socket', 'json', 'enum') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split(None, 1) == ["1", "[]\n"]
    assert "Cannot connect to the kapal daemon" in result.stderr
