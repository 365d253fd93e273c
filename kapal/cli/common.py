"""What every CLI command shares: argument parsing, the client, errors and exit codes.

Exit codes and messages are Docker's: usage errors exit 125, daemon errors
print ``Error response from daemon: …`` and exit 1.
"""

from __future__ import annotations

import argparse
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


class Formatter(argparse.HelpFormatter):
    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ):
        super().__init__(prog, indent_increment, max_help_position, width or _terminal_width())


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\nSee '{self.prog} --help'.")


def parser(prog: str, usage: str, description: str, short_help: bool = True) -> Parser:
    """A command's parser; ``run``/``create`` pass short_help=False because ``-h`` is ``--hostname`` there."""
    p = Parser(prog=prog, usage=usage, description=description, add_help=False, formatter_class=Formatter)
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
