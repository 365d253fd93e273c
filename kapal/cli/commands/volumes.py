"""Volume commands: ``volume create|ls|inspect|rm|prune``, printing what docker prints."""

from __future__ import annotations

from kapal.cli.common import (
    CommandError,
    Context,
    DaemonError,
    output_rows,
    parse_filter_flags,
    parser,
    print_error,
)
from kapal.cli.template import ContextRow

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

VOLUME_TABLE = "table {{.Driver}}\t{{.Name}}"
VOLUME_QUIET = "{{.Name}}"
VOLUME_HEADER = {
    "ID": "ID",
    "Name": "VOLUME NAME",
    "Group": "GROUP",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Availability": "AVAILABILITY",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
    "Status": "STATUS",
}
_WHITESPACE = " \t\n\v\f\r"


class VolumeRow(ContextRow):
    """A ``volume ls`` row: docker's volume context, with its ``{{.Label "key"}}`` method."""

    __slots__ = ("_labels",)

    def __init__(self, fields: dict[str, Any], labels: dict[str, str] | None) -> None:
        super().__init__(sorted(fields.items()))
        self._labels = labels or {}

    def Label(self, name: str) -> str:  # noqa: N802 - a Go template method name
        return self._labels.get(name, "")


class VolumeHeader(dict):  # type: ignore[type-arg]
    """Column titles; ``{{.Label "com.example.x"}}`` is titled ``x`` (docker's ``HeaderContext.Label``)."""

    def Label(self, name: str) -> str:  # noqa: N802 - a Go template method name
        return name.split(".")[-1].replace("-", " ").replace("_", " ")


def natural_less(a: str, b: str) -> bool:
    """``sortorder.NaturalLess``, which ``docker volume ls`` sorts by: ``v2`` before ``v10``."""
    i = j = 0
    while i < len(a) and j < len(b):
        digit_a, digit_b = a[i].isascii() and a[i].isdigit(), b[j].isascii() and b[j].isdigit()
        if digit_a != digit_b:
            return digit_a
        if not digit_a:
            if a[i] != b[j]:
                return a[i].encode() < b[j].encode()
            i += 1
            j += 1
            continue
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        start_a, start_b = i, j
        while i < len(a) and a[i].isascii() and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isascii() and b[j].isdigit():
            j += 1
        if i - start_a != j - start_b:
            return i - start_a < j - start_b
        if a[start_a:i] != b[start_b:j]:
            return a[start_a:i] < b[start_b:j]
        if start_a != start_b:
            return start_a < start_b
    return len(a) < len(b)


def _natural_sorted(names: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from functools import cmp_to_key

    def compare(x: dict[str, Any], y: dict[str, Any]) -> int:
        if natural_less(x["Name"], y["Name"]):
            return -1
        return 1 if natural_less(y["Name"], x["Name"]) else 0

    return sorted(names, key=cmp_to_key(compare))


def _labels(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        key, _, rest = value.partition("=")
        key = key.lstrip(_WHITESPACE)
        if not key:
            raise CommandError(
                f'invalid argument "{value}" for "--label" flag: invalid label \'{value}\': empty name', 125
            )
        if any(ch in key for ch in _WHITESPACE):
            raise CommandError(
                f'invalid argument "{value}" for "--label" flag: label \'{key}\' contains whitespaces', 125
            )
        out[key] = rest
    return out


def create(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] [VOLUME]", "Create a volume")
    p.add_argument("volume", nargs="?")
    p.add_argument("-d", "--driver", default="local", help="Specify volume driver name")
    p.add_argument("--name", default="", help="Specify volume name")
    p.add_argument("--label", action="append", default=[], help="Set metadata for a volume")
    p.add_argument("-o", "--opt", action="append", default=[], help="Set driver specific options")
    opts = p.parse_args(args)
    name = opts.name
    if opts.volume is not None:
        if name:
            raise CommandError(
                "conflicting options: cannot specify a volume-name through both --name "
                "and as a positional arg"
            )
        name = opts.volume
    driver_opts = {}
    for item in opts.opt:
        key, _, value = item.partition("=")
        driver_opts[key] = value
    # As docker's client: empty maps are left out (the daemon then reports null, not {}).
    body: dict[str, Any] = {"Driver": opts.driver, "Name": name}
    if driver_opts:
        body["DriverOpts"] = driver_opts
    labels = _labels(opts.label)
    if labels:
        body["Labels"] = labels
    result = ctx.client.json("POST", "/volumes/create", body=body)
    print(result["Name"])
    return 0


def volume_row(volume: dict[str, Any]) -> VolumeRow:
    usage = volume.get("UsageData")
    labels = volume.get("Labels") or {}
    from kapal.units import human_size_with_precision

    return VolumeRow(
        {
            "Availability": "N/A",
            "Driver": volume.get("Driver", ""),
            "Group": "N/A",
            "Labels": ",".join(sorted(f"{k}={v}" for k, v in labels.items())),
            "Links": "N/A" if usage is None else str(usage.get("RefCount", 0)),
            "Mountpoint": volume.get("Mountpoint", ""),
            "Name": volume.get("Name", ""),
            "Scope": volume.get("Scope", ""),
            "Size": "N/A" if usage is None else human_size_with_precision(usage.get("Size", 0), 4),
            "Status": "N/A",
        },
        labels,
    )


def ls(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "List volumes")
    p.add_argument(
        "-f", "--filter", action="append", default=[], help='Provide filter values (e.g. "dangling=true")'
    )
    p.add_argument("--format", help="Format output using a custom template")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display volume names")
    p.add_argument("--cluster", action="store_true", help="Display only cluster volumes")
    opts = p.parse_args(args)
    result = ctx.client.get("/volumes", {"filters": parse_filter_flags(opts.filter) or None})
    volumes = [] if opts.cluster else _natural_sorted(result.get("Volumes") or [])
    fmt = opts.format or "table"
    if fmt == "table":
        fmt = VOLUME_QUIET if opts.quiet else VOLUME_TABLE
    output_rows(fmt, VOLUME_TABLE, VolumeHeader(VOLUME_HEADER), [volume_row(v) for v in volumes])
    return 0


def inspect(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog, f"{prog} [OPTIONS] VOLUME [VOLUME...]", "Display detailed information on one or more volumes"
    )
    p.add_argument("volumes", nargs="+")
    p.add_argument("-f", "--format", help="Format output using a custom template")
    opts = p.parse_args(args)
    from kapal.cli.commands.images import print_inspect

    found, failed = [], []
    for name in opts.volumes:
        try:
            found.append(ctx.client.get(f"/volumes/{name}"))
        except DaemonError as error:
            failed.append(f"Error response from daemon: {error.message}")
    print_inspect(found, opts.format)
    if failed:
        print_error("\n".join(failed))
    return 1 if failed else 0


def rm(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] VOLUME [VOLUME...]", "Remove one or more volumes")
    p.add_argument("volumes", nargs="+")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of one or more volumes")
    opts = p.parse_args(args)
    failed = []
    for name in opts.volumes:
        try:
            ctx.client.json("DELETE", f"/volumes/{name}", {"force": opts.force})
        except DaemonError as error:
            failed.append(f"Error response from daemon: {error.message}")
            continue
        print(name)
    if failed:
        print_error("\n".join(failed))
    return 1 if failed else 0
