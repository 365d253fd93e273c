"""What every CLI command shares: argument parsing, the client, errors and exit codes.

Exit codes and messages are Docker's: usage errors exit 125, daemon errors
print ``Error response from daemon: …`` and exit 1.
"""

from __future__ import annotations

import sys

from kapal.cli.client import Client, ConnectError, DaemonError

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn


class UsageError(Exception):
    pass


class CommandError(Exception):
    """A failure the command already described; exits with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


_width: int | None = None


def _terminal_width() -> int:
    """As argparse measures it, once: argparse asks again (importing shutil) on every add_argument."""
    global _width
    if _width is None:
        import os

        try:
            columns = (
                int(os.environ.get("COLUMNS", "0")) or os.get_terminal_size(sys.__stdout__.fileno()).columns
            )
        except (AttributeError, ValueError, OSError):
            columns = 80
        _width = columns - 2
    return _width


_SIMPLE_ACTIONS = ("store", "store_true", "append", "help")
_REMAINDER = "..."


class _Argument:
    """One ``add_argument`` call, as the fast parser reads it."""

    def __init__(self, flags: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        self.positional = not flags[0].startswith("-")
        self.action = kwargs.get("action", "store")
        self.nargs = kwargs.get("nargs")
        self.type = kwargs.get("type")
        self.choices = kwargs.get("choices")
        self.default = kwargs.get("default", False if self.action == "store_true" else None)
        if self.positional:
            self.dest = flags[0]
        else:
            long = [flag for flag in flags if flag.startswith("--")]
            self.dest = kwargs.get("dest") or (long[0] if long else flags[0]).lstrip("-").replace("-", "_")

    def convert(self, text: str) -> Any:
        value = self.type(text) if self.type is not None else text
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not a choice")
        return value


class _Fallback(Exception):
    """The fast parser does not handle this command line: argparse parses it (or explains the error)."""


class Options:
    """Parsed arguments, named as argparse names them (``--cpu-shares`` → ``cpu_shares``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Options({self.__dict__!r})"


class Parser:
    """A command's arguments, declared as with argparse and parsed without importing it.

    argparse (and the ``re`` and ``gettext`` it imports) is a third of ``kapal run``'s
    start-up. The declarations are kept; a command line made only of known flags, their
    values and one run of positionals is parsed here, with argparse's exact results
    (tests/unit/test_cli_parser.py compares the two on generated command lines). Anything
    else (help, an error, an abbreviation, ``--``) goes to a real argparse parser built from
    the same declarations, so usage messages and errors stay argparse's.
    """

    def __init__(self, prog: str, usage: str, description: str) -> None:
        self.prog = prog
        self.usage = usage
        self.description = description
        self._calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        self._arguments: list[_Argument] = []
        self._options: dict[str, _Argument] = {}
        self._positionals: list[_Argument] = []
        self._simple = True

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        self._calls.append((flags, kwargs))
        argument = _Argument(flags, kwargs)
        self._arguments.append(argument)
        if argument.action not in _SIMPLE_ACTIONS:
            self._simple = False
        if argument.positional:
            if self._positionals and self._positionals[-1].nargs == _REMAINDER:
                self._simple = False
            if argument.nargs == _REMAINDER and (
                argument.type is not None or any(p.nargs is not None for p in self._positionals)
            ):
                self._simple = False
            self._positionals.append(argument)
        else:
            if argument.nargs is not None or any(len(f) > 2 and not f.startswith("--") for f in flags):
                self._simple = False
            for flag in flags:
                self._options[flag] = argument

    def parse_args(self, args: list[str]) -> Any:
        if self._simple:
            try:
                return self._parse(args)
            except _Fallback:
                pass
        return self.argparse_parser().parse_args(args)

    def argparse_parser(self) -> Any:
        """The same declarations as an argparse parser: for help and error messages."""
        import argparse

        class Formatter(argparse.HelpFormatter):
            def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24) -> None:
                super().__init__(prog, indent_increment, max_help_position, _terminal_width())

        class ArgumentParser(argparse.ArgumentParser):
            def error(self, message: str) -> NoReturn:
                raise UsageError(f"{message}\nSee '{self.prog} --help'.")

        p = ArgumentParser(
            prog=self.prog,
            usage=self.usage,
            description=self.description,
            add_help=False,
            formatter_class=Formatter,
        )
        for flags, kwargs in self._calls:
            p.add_argument(*flags, **kwargs)
        return p

    # -- the fast path --------------------------------------------------------------------------

    def _parse(self, args: list[str]) -> Options:
        values: dict[str, Any] = {}
        for argument in self._arguments:
            if not argument.positional and argument.action != "help":
                default = argument.default
                values[argument.dest] = list(default) if isinstance(default, list) else default
        given: set[str] = set()
        block: list[str] | None = None  # the positionals, which must come in one run
        block_ended = False
        i, count = 0, len(args)
        while i < count:
            arg = args[i]
            if arg == "--":
                raise _Fallback
            if not arg.startswith("-") or arg == "-":
                if block_ended:
                    raise _Fallback
                if block is None:
                    block = []
                    remainder = self._remainder_start()
                    if remainder is not None:
                        head, rest = args[i : i + remainder], args[i + remainder :]
                        if len(head) < remainder or any(a.startswith("-") and a != "-" for a in head):
                            raise _Fallback
                        if any(a == "--" or self._ambiguous(a) for a in rest):
                            raise _Fallback  # argparse rejects an ambiguous abbreviation even there
                        block = head + rest
                        break
                block.append(arg)
                i += 1
                continue
            if block is not None:
                block_ended = True
            i = self._option(args, i, values, given)
        for argument in self._arguments:
            if (
                not argument.positional
                and argument.type is not None
                and isinstance(argument.default, str)
                and argument.dest not in given
            ):
                values[argument.dest] = self._convert(argument, argument.default)
        self._assign(block or [], values)
        return Options(values)

    def _remainder_start(self) -> int | None:
        """How many positionals come before a ``nargs="..."`` one, if there is one."""
        if self._positionals and self._positionals[-1].nargs == _REMAINDER:
            return len(self._positionals) - 1
        return None

    def _ambiguous(self, arg: str) -> bool:
        """A ``--prefix`` of several long flags, which argparse refuses wherever it appears."""
        if not arg.startswith("--"):
            return False
        prefix = arg.partition("=")[0]
        return prefix not in self._options and sum(flag.startswith(prefix) for flag in self._options) > 1

    @staticmethod
    def _convert(argument: _Argument, text: str) -> Any:
        try:
            return argument.convert(text)
        except Exception:
            raise _Fallback from None

    def _option(self, args: list[str], i: int, values: dict[str, Any], given: set[str]) -> int:
        """Apply the option at ``args[i]`` (a flag, ``--flag=value`` or a cluster like ``-itp80``)."""
        arg = args[i]
        explicit: str | None = None
        name, equals, value = arg.partition("=")
        if arg in self._options:
            argument = self._options[arg]
        elif equals and name in self._options:
            argument, explicit = self._options[name], value
        elif not arg.startswith("--") and arg[:2] in self._options and " " not in arg:
            argument, explicit = self._options[arg[:2]], arg[2:]
        else:
            raise _Fallback
        short = not arg.startswith("--")  # only single-dash flags cluster (``-it``)
        while True:
            if argument.action == "help":
                raise _Fallback
            if argument.action == "store_true":
                values[argument.dest] = True
                given.add(argument.dest)
                if explicit is None:
                    return i + 1
                if not short or explicit == "" or "-" + explicit[0] not in self._options:
                    raise _Fallback
                argument, explicit = self._options["-" + explicit[0]], explicit[1:] or None
                continue
            if explicit is None:
                if i + 1 >= len(args) or (args[i + 1].startswith("-") and args[i + 1] != "-"):
                    raise _Fallback
                explicit, i = args[i + 1], i + 1
            elif explicit == "":
                raise _Fallback
            converted = self._convert(argument, explicit)
            if argument.action == "append":
                if values[argument.dest] is None:
                    values[argument.dest] = []
                values[argument.dest].append(converted)
            else:
                values[argument.dest] = converted
            given.add(argument.dest)
            return i + 1

    def _assign(self, block: list[str], values: dict[str, Any]) -> None:
        """Share the positionals out as argparse's greedy pattern match does."""
        counts = _greedy_counts([p.nargs for p in self._positionals], len(block))
        if counts is None or sum(counts) != len(block):
            raise _Fallback
        at = 0
        for argument, taken in zip(self._positionals, counts):
            strings = block[at : at + taken]
            at += taken
            if argument.nargs is None:
                values[argument.dest] = self._convert(argument, strings[0])
            elif argument.nargs == "?":
                if strings:
                    values[argument.dest] = self._convert(argument, strings[0])
                elif isinstance(argument.default, str):
                    values[argument.dest] = self._convert(argument, argument.default)
                else:
                    values[argument.dest] = argument.default
            elif argument.nargs == "*" and not strings and argument.default is not None:
                values[argument.dest] = argument.default
            elif argument.nargs == _REMAINDER:
                values[argument.dest] = strings
            else:
                values[argument.dest] = [self._convert(argument, text) for text in strings]


def _greedy_counts(nargs: list[Any], available: int) -> list[int] | None:
    """How many strings each positional takes: the first match of argparse's regex, leftmost greediest."""
    if not nargs:
        return []
    kind, rest = nargs[0], nargs[1:]
    if kind is None:
        low, high = 1, 1
    elif kind == "?":
        low, high = 0, 1
    elif kind in ("*", _REMAINDER):
        low, high = 0, available
    elif kind == "+":
        low, high = 1, available
    else:
        low = high = int(kind)
    for taken in range(min(high, available), low - 1, -1):
        tail = _greedy_counts(rest, available - taken)
        if tail is not None:
            return [taken, *tail]
    return None


def parser(prog: str, usage: str, description: str, short_help: bool = True) -> Parser:
    """A command's parser; ``run``/``create`` pass short_help=False because ``-h`` is ``--hostname`` there."""
    p = Parser(prog, usage, description)
    flags = ["-h", "--help"] if short_help else ["--help"]
    p.add_argument(*flags, action="help", help="Print usage")
    return p


class Context:
    """A command's access to the daemon, created on first use."""

    def __init__(self, host: str | None) -> None:
        self._host = host
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self._host)
        return self._client


def run(
    function: Callable[[Context, str, list[str]], int], prog: str, args: list[str], host: str | None
) -> int:
    context = Context(host)
    try:
        return function(context, prog, args) or 0
    except UsageError as error:
        print(error, file=sys.stderr)
        return 125
    except DaemonError as error:
        print(f"Error response from daemon: {error.message}", file=sys.stderr)
        return 1
    except ConnectError as error:
        print(error, file=sys.stderr)
        return 1
    except CommandError as error:
        if str(error):
            print(error, file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def parse_filter_flags(values: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            raise CommandError(
                f'invalid argument "{value}" for "-f, --filter" flag: bad format of filter '
                "(expected name=value)",
                125,
            )
        filters.setdefault(key.strip().lower(), []).append(rest)
    return filters


def print_error(message: str) -> None:
    print(message, file=sys.stderr)


def for_each(names: list[str], action: Callable[[str], Any]) -> int:
    """Apply *action* to each name as docker's multi-object verbs do: print each name or error, go on."""
    failed = False
    for name in names:
        try:
            action(name)
        except DaemonError as error:
            print_error(f"Error response from daemon: {error.message}")
            failed = True
            continue
        print(name)
    return 1 if failed else 0


def sorted_row(row: dict[str, Any]) -> dict[str, Any]:
    """A formatter row: ``{{json .}}`` prints it with sorted keys and HTML escapes, as docker does."""
    from kapal.cli.template import ContextRow

    return ContextRow(sorted(row.items()))


def output_rows(fmt: str | None, default: str, header: dict[str, str], rows: list[Any]) -> None:
    """Print *rows* with a ``--format`` (table, json or a template) like docker's formatter."""
    from kapal.cli import template

    table, text = template.normalize_format(fmt or default)
    if table:
        if not text:
            text = template.normalize_format(default)[1]
        sys.stdout.write(template.render_table(header, rows, text))
        return
    compiled = template.parse(text)
    for row in rows:
        sys.stdout.write(compiled.render(row) + "\n")
