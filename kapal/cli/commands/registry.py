"""Registry commands: pull, push, login, logout.

Credentials come from the docker CLI's ``config.json`` (or its credential
helpers) and travel to the daemon in ``X-Registry-Auth``, as the docker CLI
sends them; the daemon never reads the user's files.
"""

from __future__ import annotations

import getpass
import sys

from kapal import reference
from kapal.cli.common import CommandError, Context, parser
from kapal.errors import InvalidArgument

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_HUB = "https://index.docker.io/v1/"
# States repeated with a byte count; without a terminal docker prints none of them.
_PROGRESS_STATES = {"Downloading", "Extracting", "Pushing"}
_DONE_STATES = {"Pull complete", "Already exists", "Pushed", "Layer already exists"}


def _parse(name: str, default_tag: bool) -> reference.Reference:
    try:
        return reference.parse(name, default_tag=default_tag)
    except InvalidArgument as error:
        raise CommandError(f"{error}") from None


def _auth_header(domain: str) -> dict[str, str]:
    from kapal.distribution.credentials import ConfigFile

    try:
        credentials = ConfigFile().get(domain)
    except InvalidArgument as error:
        raise CommandError(str(error)) from None
    return {"X-Registry-Auth": credentials.to_header()}


def _fail(message: dict[str, Any]) -> None:
    detail = message.get("errorDetail") or {}
    raise CommandError(detail.get("message") or message.get("error") or "unknown error")


def display(messages: Iterator[dict[str, Any]], quiet: bool) -> None:
    """Docker's progress: bars on a terminal, one line per state change otherwise, nothing when quiet."""
    if quiet:
        for message in messages:
            if "errorDetail" in message or "error" in message:
                _fail(message)
        return
    if sys.stdout.isatty():
        _display_bars(messages)
        return
    for message in messages:
        if "errorDetail" in message or "error" in message:
            _fail(message)
        line = status_line(message)
        if line is not None:
            print(line, flush=True)


def status_line(message: dict[str, Any]) -> str | None:
    """A progress message as docker prints it without a terminal (None: not printed)."""
    if "status" not in message or message["status"] in _PROGRESS_STATES:
        return None
    prefix = f"{message['id']}: " if message.get("id") else ""
    return f"{prefix}{message['status']}"


def _display_bars(messages: Iterator[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, transient=False) as progress:
        tasks: dict[str, Any] = {}
        for message in messages:
            if "errorDetail" in message or "error" in message:
                _fail(message)
            status = message.get("status")
            layer = message.get("id")
            if not status:
                continue
            if not layer or status.startswith("Pulling from"):
                progress.console.print(
                    f"{layer}: {status}" if layer else status, highlight=False, markup=False
                )
                continue
            detail = message.get("progressDetail") or {}
            task = tasks.get(layer)
            if task is None:
                task = tasks[layer] = progress.add_task(escape(f"{layer}: {status}"), total=None)
            fields: dict[str, Any] = {"description": escape(f"{layer}: {status}")}
            if detail.get("total"):
                fields.update(completed=detail.get("current", 0), total=detail["total"])
            elif status in _DONE_STATES or status.startswith("Mounted from"):
                total = progress.tasks[task].total
                fields.update(completed=total or 1, total=total or 1)
            progress.update(task, **fields)


def pull(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry")
    p.add_argument("name")
    p.add_argument(
        "-a", "--all-tags", action="store_true", help="Download all tagged images in the repository"
    )
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("--disable-content-trust", action="store_true", help="Skip image verification (ignored)")
    opts = p.parse_args(args)
    ref = _parse(opts.name, default_tag=False)
    if opts.all_tags and (ref.tag or ref.digest):
        raise CommandError("tag can't be used with --all-tags/-a", 125)
    if not opts.all_tags and not ref.tag and not ref.digest:
        ref = ref.with_tag(reference.DEFAULT_TAG)
        if not opts.quiet:
            print("Using default tag: latest")
    query: list[tuple[str, Any]] = [("fromImage", ref.repository), ("tag", ref.digest or ref.tag or "")]
    if opts.platform:
        query.append(("platform", opts.platform))
    messages = ctx.client.stream("POST", "/images/create", query, headers=_auth_header(ref.domain))
    display(messages, opts.quiet)
    print(ref.repository if opts.all_tags else str(ref))
    return 0


def push(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] NAME[:TAG]", "Upload an image to a registry")
    p.add_argument("name")
    p.add_argument(
        "-a", "--all-tags", action="store_true", help="Push all tags of an image to the repository"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("--disable-content-trust", action="store_true", help="Skip image signing (ignored)")
    p.add_argument(
        "--platform", help="Push a platform-specific manifest (ignored: images are single-platform)"
    )
    opts = p.parse_args(args)
    ref = _parse(opts.name, default_tag=False)
    if ref.digest:
        raise CommandError("cannot push a digest reference", 125)
    if opts.all_tags and ref.tag:
        raise CommandError("tag can't be used with --all-tags/-a", 125)
    if not opts.all_tags and not ref.tag:
        ref = ref.with_tag(reference.DEFAULT_TAG)
        if not opts.quiet:
            print("Using default tag: latest")
    messages = ctx.client.stream(
        "POST",
        f"/images/{ref.repository}/push",
        {"tag": ref.tag or ""},
        headers=_auth_header(ref.domain),
    )
    display(messages, opts.quiet)
    if opts.quiet:
        print(str(ref) if ref.tag else ref.repository)
    return 0


def login(ctx: Context, prog: str, args: list[str]) -> int:
    from kapal.distribution.credentials import ConfigFile, Credentials, auth_key

    p = parser(prog, f"{prog} [OPTIONS] [SERVER]", "Authenticate to a registry")
    p.add_argument("server", nargs="?")
    p.add_argument("-u", "--username", help="Username")
    p.add_argument("-p", "--password", help="Password or Personal Access Token (PAT)")
    p.add_argument("--password-stdin", action="store_true", help="Take the Password or PAT from stdin")
    opts = p.parse_args(args)
    server = opts.server or _HUB
    password = opts.password
    if opts.password is not None and opts.password_stdin:
        raise CommandError("--password and --password-stdin are mutually exclusive", 125)
    if opts.password_stdin:
        if not opts.username:
            raise CommandError("Must provide --username with --password-stdin", 125)
        password = sys.stdin.read().rstrip("\r\n")
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    username = opts.username
    if not username:
        if not sys.stdin.isatty():
            raise CommandError("Error: Cannot perform an interactive login from a non TTY device")
        username = input("Username: ").strip()
    if password is None:
        if not sys.stdin.isatty():
            raise CommandError("Error: Cannot perform an interactive login from a non TTY device")
        password = getpass.getpass("Password: ")
    if not username:
        raise CommandError("Error: Non-null Username Required")
    key = auth_key(server)
    body = {"username": username, "password": password, "serveraddress": key}
    answer = ctx.client.json("POST", "/auth", body=body)
    token = (answer or {}).get("IdentityToken") or ""
    try:
        ConfigFile().store(
            key,
            Credentials(username=username, password="" if token else password, identity_token=token),
        )
    except (InvalidArgument, OSError) as error:
        raise CommandError(f"Error saving credentials: {error}") from None
    print("Login Succeeded")
    return 0


def logout(ctx: Context, prog: str, args: list[str]) -> int:
    from kapal.distribution.credentials import ConfigFile, auth_key

    p = parser(prog, f"{prog} [SERVER]", "Log out from a registry")
    p.add_argument("server", nargs="?")
    opts = p.parse_args(args)
    server = opts.server or _HUB
    try:
        removed = ConfigFile().erase(auth_key(server))
    except InvalidArgument as error:
        raise CommandError(str(error)) from None
    if not removed:
        print(f"Not logged in to {server}")
        return 0
    print(f"Removing login credentials for {server}")
    return 0
