"""Image commands: images, tag, rmi, history, inspect, load, save, import, image prune."""

from __future__ import annotations

import os
import sys
import time

from kapal.cli.common import (
    CommandError,
    Context,
    DaemonError,
    output_rows,
    parse_filter_flags,
    parser,
    print_error,
    sorted_row,
)
from kapal.units import human_size, human_size_with_precision, time_ago

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_TABLE_DIGESTS = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_HEADER = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "ID": "IMAGE ID",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "VIRTUAL SIZE",
}


def short_id(image_id: str, no_trunc: bool = False) -> str:
    return image_id if no_trunc else image_id.partition(":")[2][:12]


def go_time(unix: float) -> str:
    """Go's ``time.Time.String()`` in local time: ``2006-01-02 15:04:05 -0700 MST``."""
    moment = time.localtime(unix)
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", moment)


def rfc3339_local(unix: float) -> str:
    """Go's ``time.RFC3339`` in local time, as ``docker history`` prints CreatedAt."""
    text = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(unix))
    if text.endswith("+0000"):
        return text[:-5] + "Z"
    return f"{text[:-2]}:{text[-2:]}"


def _split_name(name: str) -> tuple[str, str]:
    if "@" in name:
        repo, _, digest = name.partition("@")
        return repo, digest
    repo, _, tag = name.rpartition(":")
    if "/" in tag:  # a registry port, not a tag
        return name, "<none>"
    return repo, tag


def image_rows(images: list[dict[str, Any]], no_trunc: bool, digests: bool) -> list[dict[str, Any]]:
    """One row per repository:tag, as docker's image formatter makes them."""
    rows = []
    for image in images:
        repo_digests = image.get("RepoDigests") or []
        repo_tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        digest_by_repo: dict[str, list[str]] = {}
        for name in repo_digests:
            if name == "<none>@<none>":
                continue
            repo, digest = _split_name(name)
            digest_by_repo.setdefault(repo, []).append(digest)
        entries: list[tuple[str, str, str]] = []
        for name in repo_tags:
            repo, tag = _split_name(name)
            found = digest_by_repo.get(repo, [])
            if digests and found:
                entries += [(repo, tag, digest) for digest in found]
            else:
                entries.append((repo, tag, found[0] if found else "<none>"))
        tagged_repos = {_split_name(t)[0] for t in repo_tags}
        for repo, found in digest_by_repo.items():
            if repo not in tagged_repos:
                entries += [(repo, "<none>", digest) for digest in found]
        if not entries:
            entries.append(("<none>", "<none>", "<none>"))
        for repo, tag, digest in entries:
            size = image.get("Size", 0)
            shared = image.get("SharedSize", -1)
            containers = image.get("Containers", -1)
            # Sorted keys: docker's formatter contexts marshal to JSON as Go maps do.
            rows.append(
                sorted_row(
                    {
                        "Repository": repo,
                        "Tag": tag,
                        "ID": short_id(image["Id"], no_trunc),
                        "Digest": digest,
                        "CreatedSince": time_ago(image.get("Created", 0)),
                        "CreatedAt": go_time(image.get("Created", 0)),
                        "Size": human_size(size),
                        "VirtualSize": human_size_with_precision(image.get("VirtualSize", size), 4),
                        "SharedSize": "N/A" if shared == -1 else human_size(shared),
                        "UniqueSize": "N/A" if shared == -1 else human_size(size - shared),
                        "Containers": "N/A" if containers == -1 else str(containers),
                    }
                )
            )
    return rows


def images(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] [REPOSITORY[:TAG]]", "List images")
    p.add_argument("repository", nargs="?")
    p.add_argument("-a", "--all", action="store_true", help="Show all images")
    p.add_argument("--digests", action="store_true", help="Show digests")
    p.add_argument(
        "-f", "--filter", action="append", default=[], help="Filter output based on conditions provided"
    )
    p.add_argument("--format", help="Format output using a custom template")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    opts = p.parse_args(args)
    filters = parse_filter_flags(opts.filter)
    if opts.repository:
        filters.setdefault("reference", []).append(opts.repository)
    result = ctx.client.get("/images/json", {"all": opts.all, "filters": filters or None})
    if opts.quiet:
        seen = []
        for image in result:
            ident = short_id(image["Id"], opts.no_trunc)
            if ident not in seen:
                seen.append(ident)
        for ident in seen:
            print(ident)
        return 0
    rows = image_rows(result, opts.no_trunc, opts.digests)
    default = IMAGES_TABLE_DIGESTS if opts.digests else IMAGES_TABLE
    output_rows(opts.format, default, IMAGES_HEADER, rows)
    return 0


def tag(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
        "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
    )
    p.add_argument("source")
    p.add_argument("target")
    opts = p.parse_args(args)
    from kapal import reference
    from kapal.errors import InvalidArgument

    try:
        ref = reference.parse(opts.target, default_tag=False)
    except InvalidArgument as error:
        raise CommandError(
            f'Error parsing reference: "{opts.target}" is not a valid repository/tag: {error}'
        ) from None
    if ref.digest:
        raise CommandError("refusing to create a tag with a digest reference")
    ctx.client.json(
        "POST", f"/images/{opts.source}/tag", {"repo": ref.familiar_repository, "tag": ref.tag or "latest"}
    )
    return 0


def rmi(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] IMAGE [IMAGE...]", "Remove one or more images")
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--force", action="store_true", help="Force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="Do not delete untagged parents")
    opts = p.parse_args(args)
    failed = False
    for name in opts.images:
        try:
            report = ctx.client.json(
                "DELETE", f"/images/{name}", {"force": opts.force, "noprune": opts.no_prune}
            )
        except DaemonError as error:
            print_error(f"Error response from daemon: {error.message}")
            failed = True
            continue
        for item in report or []:
            if "Untagged" in item:
                print(f"Untagged: {item['Untagged']}")
            if "Deleted" in item:
                print(f"Deleted: {item['Deleted']}")
    return 1 if failed else 0


HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_HEADER = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def history(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] IMAGE", "Show the history of an image")
    p.add_argument("image")
    p.add_argument("--format")
    p.add_argument("-H", "--human", default="true", help="Print sizes and dates in human readable format")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    opts = p.parse_args(args)
    entries = ctx.client.get(f"/images/{opts.image}/history")
    human = opts.human.lower() not in ("false", "0")
    rows = []
    for entry in entries:
        ident = entry["Id"] if entry["Id"] == "<missing>" else short_id(entry["Id"], opts.no_trunc)
        created_by = entry.get("CreatedBy", "").replace("\t", " ")
        if not opts.no_trunc:
            created_by = _ellipsis(created_by, 45)
        rows.append(
            sorted_row(
                {
                    "ID": ident,
                    "CreatedSince": time_ago(entry["Created"]) if human else go_time(entry["Created"]),
                    "CreatedAt": rfc3339_local(entry["Created"]),
                    "CreatedBy": created_by,
                    "Size": human_size(entry["Size"]) if human else str(entry["Size"]),
                    "Comment": entry.get("Comment", ""),
                }
            )
        )
    if opts.quiet:
        for row in rows:
            print(row["ID"])
        return 0
    output_rows(opts.format, HISTORY_TABLE, HISTORY_HEADER, rows)
    return 0


def print_inspect(objects: list[Any], fmt: str | None) -> None:
    if fmt:
        from kapal.cli import template

        compiled = template.parse(fmt if fmt != "json" else "{{json .}}")
        for obj in objects:
            print(compiled.render(obj))
        return
    import json

    print(json.dumps(objects, indent=4, ensure_ascii=False))


def inspect_each(
    ctx: Context,
    names: list[str],
    path_of: Callable[[str], str],
    missing: Callable[[str], str],
    fmt: str | None,
    query: dict[str, Any] | None = None,
) -> int:
    """docker's inspect loop: print what was found, then an error line per name that was not (exit 1)."""
    found, failed = [], []
    for name in names:
        try:
            found.append(ctx.client.get(path_of(name), query))
        except DaemonError as error:
            if error.status != 404:
                raise
            failed.append(missing(name))
    print_inspect(found, fmt)
    for message in failed:
        print_error(message)
    return 1 if failed else 0


def image_inspect(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog, f"{prog} [OPTIONS] IMAGE [IMAGE...]", "Display detailed information on one or more images"
    )
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--format")
    opts = p.parse_args(args)
    return inspect_each(
        ctx,
        opts.images,
        lambda name: f"/images/{name}/json",
        lambda name: f"Error: No such image: {name}",
        opts.format,
    )


def inspect(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] NAME|ID [NAME|ID...]", "Return low-level information on objects")
    p.add_argument("names", nargs="+")
    p.add_argument("-f", "--format")
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("--type", choices=["container", "image"], help="Return JSON for specified type")
    opts = p.parse_args(args)
    found, failed = [], []
    kinds = [opts.type] if opts.type else ["container", "image"]
    for name in opts.names:
        for kind in kinds:
            path = f"/containers/{name}/json" if kind == "container" else f"/images/{name}/json"
            try:
                found.append(ctx.client.get(path, {"size": opts.size} if kind == "container" else None))
                break
            except DaemonError as error:
                if error.status != 404:
                    raise
        else:
            failed.append(f"Error: No such object: {name}")
    print_inspect(found, opts.format)
    for message in failed:
        print_error(message)
    return 1 if failed else 0


def _display_stream(messages: Any, quiet: bool = False) -> None:
    """Print a JSON message stream like docker's jsonmessage renderer (non-terminal form)."""
    for message in messages:
        if "errorDetail" in message or "error" in message:
            detail = message.get("errorDetail") or {}
            raise CommandError(detail.get("message") or message.get("error") or "unknown error")
        if "stream" in message:
            sys.stdout.write(message["stream"])
        elif "status" in message and not quiet:
            prefix = f"{message['id']}: " if message.get("id") else ""
            print(f"{prefix}{message['status']}")
    sys.stdout.flush()


def load(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "Load an image from a tar archive or STDIN")
    p.add_argument("-i", "--input", help="Read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the load output")
    opts = p.parse_args(args)
    if opts.input:
        try:
            source = open(opts.input, "rb")  # noqa: SIM115 - closed below
        except OSError as error:
            raise CommandError(f"open {opts.input}: {error.strerror.lower()}") from None
    else:
        if sys.stdin.isatty():
            raise CommandError("requested load from stdin, but stdin is empty")
        source = sys.stdin.buffer
    with source:
        _display_stream(ctx.client.stream("POST", "/images/load", {"quiet": True}, body=source), opts.quiet)
    return 0


def save(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] IMAGE [IMAGE...]", "Save one or more images to a tar archive")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", help="Write to a file, instead of STDOUT")
    opts = p.parse_args(args)
    if not opts.output and sys.stdout.isatty():
        raise CommandError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    response = ctx.client.request("GET", "/images/get", [("names", name) for name in opts.images])
    if not opts.output:
        out = sys.stdout.buffer
        while chunk := response.read(1 << 20):
            out.write(chunk)
        out.flush()
        return 0
    import tempfile

    # Written beside the target and renamed: a failed save never leaves half a file under its name.
    directory = os.path.dirname(os.path.abspath(opts.output))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kapal-save-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.chmod(tmp, 0o644)
        os.replace(tmp, opts.output)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


def import_(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} [OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
        "Import the contents from a tarball to create a filesystem image",
    )
    p.add_argument("source")
    p.add_argument("repository", nargs="?")
    p.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        help="Apply Dockerfile instruction to the created image",
    )
    p.add_argument("-m", "--message", default="", help="Set commit message for imported image")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    opts = p.parse_args(args)
    query: list[tuple[str, Any]] = [("fromSrc", "-"), ("message", opts.message)]
    if opts.repository:
        query.append(("repo", opts.repository))
    if opts.platform:
        query.append(("platform", opts.platform))
    query += [("changes", change) for change in opts.change]
    if opts.source == "-":
        source = sys.stdin.buffer
    elif "://" in opts.source:
        raise CommandError(
            "importing from a URL is not supported; download it and pipe it to `kapal import -`"
        )
    else:
        try:
            source = open(opts.source, "rb")  # noqa: SIM115 - closed below
        except OSError as error:
            raise CommandError(f"open {opts.source}: {error.strerror.lower()}") from None
    with source:
        for message in ctx.client.stream("POST", "/images/create", query, body=source):
            if "errorDetail" in message or "error" in message:
                raise CommandError((message.get("errorDetail") or {}).get("message") or message.get("error"))
            if "status" in message:
                print(message["status"])
    return 0
