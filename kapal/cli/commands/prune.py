"""The prune commands: container, image, network, volume and builder prune, and system prune.

Each kind has one pruner that calls its endpoint and returns the space reclaimed and
the text docker prints for it; a command is its warning, a confirmation, and that
text. ``system prune`` runs the pruners in docker's order and adds up the space.
"""

from __future__ import annotations

import sys

from kapal.cli.common import CommandError, Context, parse_filter_flags, parser
from kapal.units import human_size_with_precision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kapal.cli.client import Client

CONFIRM = "Are you sure you want to continue? [y/N] "


def _confirm(warning: str) -> bool:
    sys.stdout.write(f"{warning}\n{CONFIRM}")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _section(title: str, lines: list[str]) -> str:
    return f"{title}:\n" + "".join(f"{line}\n" for line in lines) if lines else ""


def _total(reclaimed: int) -> str:
    """docker's ``units.HumanSize``: four significant digits."""
    return f"Total reclaimed space: {human_size_with_precision(reclaimed, 4)}"


# -- one pruner per kind: (space reclaimed, docker's text) ------------------------------------


def prune_containers(client: Client, filters: dict[str, list[str]]) -> tuple[int, str]:
    result = client.json("POST", "/containers/prune", {"filters": filters or None})
    return result.get("SpaceReclaimed") or 0, _section(
        "Deleted Containers", result.get("ContainersDeleted") or []
    )


def prune_networks(client: Client, filters: dict[str, list[str]]) -> tuple[int, str]:
    result = client.json("POST", "/networks/prune", {"filters": filters or None})
    return 0, _section("Deleted Networks", result.get("NetworksDeleted") or [])


def prune_volumes(client: Client, filters: dict[str, list[str]]) -> tuple[int, str]:
    result = client.json("POST", "/volumes/prune", {"filters": filters or None})
    deleted = result.get("VolumesDeleted") or []
    return (result.get("SpaceReclaimed") or 0) if deleted else 0, _section("Deleted Volumes", deleted)


def prune_images(client: Client, filters: dict[str, list[str]], every: bool) -> tuple[int, str]:
    filters = {**filters, "dangling": filters.get("dangling", ["false" if every else "true"])}
    result = client.json("POST", "/images/prune", {"filters": filters})
    lines = []
    for item in result.get("ImagesDeleted") or []:
        if "Untagged" in item:
            lines.append(f"untagged: {item['Untagged']}")
        if "Deleted" in item:
            lines.append(f"deleted: {item['Deleted']}")
    return result.get("SpaceReclaimed") or 0, _section("Deleted Images", lines)


def prune_build_cache(client: Client, every: bool, keep_storage: int = 0) -> tuple[int, str]:
    result = client.json("POST", "/build/prune", {"keep-storage": keep_storage, "all": every})
    return result.get("SpaceReclaimed") or 0, _section(
        "Deleted build cache objects", result.get("CachesDeleted") or []
    )


def _report(*results: tuple[int, str]) -> int:
    """Print each kind's text (a blank line after each, as docker's Fprintln does) and the total."""
    for _, text in results:
        if text:
            print(text)
    print(_total(sum(reclaimed for reclaimed, _ in results)))
    return 0


def _prune_parser(prog: str, description: str, every: str | None) -> Any:
    p = parser(prog, f"{prog} [OPTIONS]", description)
    if every:
        p.add_argument("-a", "--all", action="store_true", help=every)
    p.add_argument(
        "--filter", action="append", default=[], help='Provide filter values (e.g. "until=<timestamp>")'
    )
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    return p


# -- the commands ---------------------------------------------------------------------------------


def containers(ctx: Context, prog: str, args: list[str]) -> int:
    opts = _prune_parser(prog, "Remove all stopped containers", None).parse_args(args)
    if not opts.force and not _confirm("WARNING! This will remove all stopped containers."):
        return 0
    return _report(prune_containers(ctx.client, parse_filter_flags(opts.filter)))


def networks(ctx: Context, prog: str, args: list[str]) -> int:
    opts = _prune_parser(prog, "Remove all unused networks", None).parse_args(args)
    if not opts.force and not _confirm(
        "WARNING! This will remove all custom networks not used by at least one container."
    ):
        return 0
    _, text = prune_networks(ctx.client, parse_filter_flags(opts.filter))
    if text:
        print(text)
    return 0


def volumes(ctx: Context, prog: str, args: list[str]) -> int:
    opts = _prune_parser(
        prog, "Remove unused local volumes", "Remove all unused volumes, not just anonymous ones"
    )
    opts = opts.parse_args(args)
    filters = parse_filter_flags(opts.filter)
    if opts.all:
        if "all" in filters:
            raise CommandError("conflicting options: cannot specify both --all and --filter all=1")
        filters["all"] = ["true"]
    warning = (
        "WARNING! This will remove all local volumes not used by at least one container."
        if opts.all
        else "WARNING! This will remove anonymous local volumes not used by at least one container."
    )
    if not opts.force and not _confirm(warning):
        return 0
    return _report(prune_volumes(ctx.client, filters))


def images(ctx: Context, prog: str, args: list[str]) -> int:
    p = _prune_parser(prog, "Remove unused images", "Remove all unused images, not just dangling ones")
    opts = p.parse_args(args)
    warning = (
        "WARNING! This will remove all images without at least one container associated to them."
        if opts.all
        else "WARNING! This will remove all dangling images."
    )
    if not opts.force and not _confirm(warning):
        return 0
    return _report(prune_images(ctx.client, parse_filter_flags(opts.filter), opts.all))


def build_cache(ctx: Context, prog: str, args: list[str]) -> int:
    p = _prune_parser(prog, "Remove build cache", "Remove all unused build cache, not just dangling ones")
    p.add_argument("--keep-storage", default="0", help="Amount of disk space to keep for cache")
    opts = p.parse_args(args)
    if not opts.force and not _confirm("WARNING! This will remove all dangling build cache."):
        return 0
    from kapal.units import from_human_size

    keep = from_human_size(opts.keep_storage) if opts.keep_storage not in ("", "0") else 0
    return _report(prune_build_cache(ctx.client, opts.all, keep))


def system(ctx: Context, prog: str, args: list[str]) -> int:
    """``docker system prune``: containers, networks, (volumes,) images and build cache, in that order."""
    p = _prune_parser(prog, "Remove unused data", "Remove all unused images not just dangling ones")
    p.add_argument("--volumes", action="store_true", help="Prune anonymous volumes")
    opts = p.parse_args(args)
    filters = parse_filter_flags(opts.filter)
    if not opts.force:
        items = ["all stopped containers", "all networks not used by at least one container"]
        if opts.volumes:
            items.append("all anonymous volumes not used by at least one container")
        if opts.all:
            items += ["all images without at least one container associated to them", "all build cache"]
        else:
            items += ["all dangling images", "unused build cache"]
        if not _confirm("WARNING! This will remove:\n" + "".join(f"  - {item}\n" for item in items)):
            return 0
    client = ctx.client
    results = [prune_containers(client, filters), prune_networks(client, filters)]
    if opts.volumes:
        results.append(prune_volumes(client, filters))
    results.append(prune_images(client, filters, opts.all))
    results.append(prune_build_cache(client, opts.all))
    return _report(*results)
